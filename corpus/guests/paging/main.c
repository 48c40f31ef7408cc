/*
 * paging: 4 KiB page tables with an identity map of the first 8 MiB, a high
 * alias, two page directories switched through CR3, a PTE change made
 * visible with invlpg, and a #PF handler that maps pages on demand.
 */
#include "lib.h"

const char guest_name[] = "paging";

void paging_enable(uint32_t pd);       /* paging_asm.S */
void paging_disable(void);
void flush_tlb(void);
void asm_invlpg(uint32_t va);
uint32_t rep_stosl(uint32_t *dst, uint32_t value, uint32_t count, uint32_t **end);

#define PTE_P 0x001u
#define PTE_W 0x002u
#define PTE_A 0x020u
#define PTE_D 0x040u
#define PAGE  4096u

#define VA_ALIAS 0xC0000000u /* -> frame[0], later frame[1] */
#define VA_SWAP  0xD0000000u /* pd_a: frame[2], pd_b: frame[3] */
#define VA_FAULT 0xE0000000u /* not mapped at first: #PF maps it */

#define PDX(va) ((va) >> 22)
#define PTX(va) (((va) >> 12) & 0x3FF)

typedef uint32_t table_t[1024] __attribute__((aligned(4096)));

static table_t pd_a, pd_b;
static table_t pt_ident[2];           /* 0 .. 8 MiB */
static table_t pt_alias, pt_swap_a, pt_swap_b, pt_fault;
static table_t frame[10];             /* data pages */

/* Set by the #PF handler. */
static volatile uint32_t pf_count;
static volatile uint32_t pf_cr2[8], pf_err[8];
static volatile uint32_t pf_limit;    /* fail past this many faults */

static inline uint32_t phys(const void *p)
{
	return (uint32_t)p; /* everything lives in the identity map */
}

/* Accesses through virtual addresses.  The asm (with a memory clobber) keeps
 * the compiler from moving page-table or buffer accesses across them. */
static inline uint32_t rd(uint32_t va)
{
	uint32_t v;

	__asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(va) : "memory");
	return v;
}

static inline void wr(uint32_t va, uint32_t v)
{
	__asm__ volatile("movl %1, (%0)" : : "r"(va), "r"(v) : "memory");
}

/*
 * Fault policy: a not-present fault in the VA_FAULT table maps the next
 * fresh frame (installing the page table on first use); a protection fault
 * (P=1, W=1) on a read-only page makes it writable and invalidates it.
 */
static uint32_t next_frame = 4;

static void pf_handler(struct frame *f)
{
	uint32_t cr2 = read_cr2();
	uint32_t n = pf_count;

	if (n < 8) {
		pf_cr2[n] = cr2;
		pf_err[n] = f->err;
	}
	pf_count = n + 1;
	if (pf_count > pf_limit || PDX(cr2) != PDX(VA_FAULT))
		fail("unexpected page fault");

	if (!(f->err & 1)) {
		if (!(pd_a[PDX(cr2)] & PTE_P))
			pd_a[PDX(cr2)] = phys(pt_fault) | PTE_P | PTE_W;
		pt_fault[PTX(cr2)] = phys(frame[next_frame++]) | PTE_P | PTE_W;
		/* not-present entries are never cached: no invlpg needed */
	} else {
		pt_fault[PTX(cr2)] |= PTE_W;
		invlpg((void *)cr2);
	}
}

static void build_tables(void)
{
	uint32_t i;

	for (i = 0; i < 2048; i++)
		pt_ident[i / 1024][i % 1024] = (i * PAGE) | PTE_P | PTE_W;
	for (i = 0; i < 2; i++) {
		pd_a[i] = phys(pt_ident[i]) | PTE_P | PTE_W;
		pd_b[i] = phys(pt_ident[i]) | PTE_P | PTE_W;
	}
	pt_alias[0] = phys(frame[0]) | PTE_P | PTE_W;
	pd_a[PDX(VA_ALIAS)] = phys(pt_alias) | PTE_P | PTE_W;
	pd_b[PDX(VA_ALIAS)] = phys(pt_alias) | PTE_P | PTE_W;

	pt_swap_a[0] = phys(frame[2]) | PTE_P | PTE_W;
	pt_swap_b[0] = phys(frame[3]) | PTE_P | PTE_W;
	pd_a[PDX(VA_SWAP)] = phys(pt_swap_a) | PTE_P | PTE_W;
	pd_b[PDX(VA_SWAP)] = phys(pt_swap_b) | PTE_P | PTE_W;
	/* VA_FAULT: no PDE at all. */
}

static void alias_tests(void)
{
	frame[0][0] = 0xA11A5001u;
	frame[0][1023] = 0xA11A5FFCu;
	check(rd(VA_ALIAS) == 0xA11A5001u && rd(VA_ALIAS + 0xFFC) == 0xA11A5FFCu,
	      "alias 0xc0000000 reads the buffer's data");
	wr(VA_ALIAS + 4, 0x5EED0004u);
	check(frame[0][1] == 0x5EED0004u, "write through alias seen in the buffer");
}

static void cr3_tests(void)
{
	frame[2][0] = 0xAAAA0002u;
	frame[3][0] = 0xBBBB0003u;
	check(rd(VA_SWAP) == 0xAAAA0002u, "pd_a maps 0xd0000000 to frame A");
	write_cr3(phys(pd_b));
	check(read_cr3() == phys(pd_b), "CR3 reads back pd_b");
	check(rd(VA_SWAP) == 0xBBBB0003u, "pd_b maps 0xd0000000 to frame B");
	wr(VA_SWAP + 8, 0xB0B0B0B0u);
	write_cr3(phys(pd_a));
	check(rd(VA_SWAP) == 0xAAAA0002u && rd(VA_SWAP + 8) == 0,
	      "back on pd_a: frame A again, B's write not visible");
	check(frame[3][2] == 0xB0B0B0B0u, "write under pd_b landed in frame B");
}

static void pte_tests(void)
{
	frame[1][0] = 0xC0C0C001u;
	(void)rd(VA_ALIAS); /* make sure the old translation is cached */
	pt_alias[0] = phys(frame[1]) | PTE_P | PTE_W;
	invlpg((void *)VA_ALIAS);
	check(rd(VA_ALIAS) == 0xC0C0C001u, "PTE change + invlpg (C) uses new frame");

	pt_alias[0] = phys(frame[0]) | PTE_P | PTE_W;
	asm_invlpg(VA_ALIAS);
	check(rd(VA_ALIAS) == 0xA11A5001u, "PTE change + invlpg (asm) uses new frame");

	pt_alias[0] = phys(frame[1]) | PTE_P | PTE_W;
	flush_tlb();
	check(rd(VA_ALIAS) == 0xC0C0C001u, "PTE change + CR3 reload uses new frame");

	/* Accessed and dirty bits, set by the CPU in the PTE it walks. */
	pt_alias[0] = phys(frame[0]) | PTE_P | PTE_W;
	invlpg((void *)VA_ALIAS);
	(void)rd(VA_ALIAS);
	check((pt_alias[0] & (PTE_A | PTE_D)) == PTE_A, "read sets A, not D, in the alias PTE");
	wr(VA_ALIAS + 8, 1);
	check((pt_alias[0] & (PTE_A | PTE_D)) == (PTE_A | PTE_D), "write sets D in the alias PTE");
}

static void expect_fault(uint32_t idx, uint32_t cr2, uint32_t err, const char *what)
{
	if (pf_count != idx + 1) {
		kprintf("%s: %u faults, wanted %u\n", what, pf_count, idx + 1);
		fail("wrong number of page faults");
	}
	if (pf_cr2[idx] != cr2)
		fail("CR2 does not match the faulting address");
	if (pf_err[idx] != err) {
		kprintf("%s: error code 0x%x, wanted 0x%x\n", what, pf_err[idx], err);
		fail("wrong #PF error code");
	}
	kprintf("#PF %u: %s: err=0x%x, CR2 matched, retried ok\n", idx + 1, what, err);
}

static void fault_tests(void)
{
	uint32_t v, rest, *end, i, good;

	set_handler(14, pf_handler);
	pf_limit = 5;

	/* 1: read, no page table at all */
	frame[4][4] = 0xFA017001u;
	v = rd(VA_FAULT + 0x10);
	expect_fault(0, VA_FAULT + 0x10, 0x0, "read, PDE not present");
	check(v == 0xFA017001u, "faulting read returned the new page's data");

	/* 2: write, page table present but PTE not */
	wr(VA_FAULT + 0x1008, 0xFA017002u);
	expect_fault(1, VA_FAULT + 0x1008, 0x2, "write, PTE not present");
	check(frame[5][2] == 0xFA017002u, "faulting write landed in the new page");

	/* 3: read-only page: supervisor writes pass with CR0.WP=0, fault with WP=1 */
	pt_fault[2] = phys(frame[6]) | PTE_P;
	wr(VA_FAULT + 0x2000, 0x11111111u);
	check(pf_count == 2 && frame[6][0] == 0x11111111u, "WP=0: supervisor write to RO page allowed");
	write_cr0(read_cr0() | CR0_WP);
	wr(VA_FAULT + 0x2004, 0xFA017003u);
	expect_fault(2, VA_FAULT + 0x2004, 0x3, "write to RO page with CR0.WP=1");
	check(frame[6][1] == 0xFA017003u, "write retried after the PTE became writable");
	write_cr0(read_cr0() & ~CR0_WP);

	/* 4: rep stosl running from a mapped page into an unmapped one */
	pt_fault[3] = phys(frame[7]) | PTE_P | PTE_W;
	next_frame = 8;
	rest = rep_stosl((uint32_t *)(VA_FAULT + 0x3F00), 0x5705D00Du, 128, &end);
	expect_fault(3, VA_FAULT + 0x4000, 0x2, "rep stosl crossing into an unmapped page");
	good = rest == 0 && end == (uint32_t *)(VA_FAULT + 0x4100);
	for (i = 0; i < 64; i++)
		good &= frame[7][960 + i] == 0x5705D00Du && frame[8][i] == 0x5705D00Du;
	good &= frame[8][64] == 0;
	check(good, "rep stosl resumed: all 128 dwords stored, ECX=0, EDI at end");

	check(pf_count == 4, "page fault handler ran 4 times");
	check((pd_a[PDX(VA_FAULT)] & PTE_A) != 0, "A set in the PDE used by the faults");
	check((pt_fault[0] & (PTE_A | PTE_D)) == PTE_A, "read-only use: A set, D clear");
	check((pt_fault[1] & (PTE_A | PTE_D)) == (PTE_A | PTE_D), "written page: A and D set");
}

void guest_main(void)
{
	build_tables();
	paging_enable(phys(pd_a));
	check((read_cr0() & CR0_PG) && read_cr3() == phys(pd_a), "paging on, CR3 = pd_a");
	alias_tests();
	cr3_tests();
	pte_tests();
	fault_tests();
	paging_disable();
	check(!(read_cr0() & CR0_PG), "paging off again");
	check(frame[0][0] == 0xA11A5001u, "identity data intact after paging off");
}
