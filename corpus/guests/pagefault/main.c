/*
 * pagefault: CR2 is what the guest's last page fault left there, for as long
 * as the guest runs.  Paging stays on to the end: a not-present fault and a
 * write-protection fault are each handled (the handler maps the page or
 * makes it writable), then CR2 is read again after a long computation, and
 * the run ends with it still holding the last fault's address.  Nothing a
 * monitor does on its own (probes, translations, slices) may show there.
 */
#include "lib.h"

const char guest_name[] = "pagefault";

#define PTE_P 0x001u
#define PTE_W 0x002u
#define VA_ABSENT 0x00C01234u /* page 0xC01: not present until the first fault */
#define VA_RO     0x00C02ABCu /* page 0xC02: read-only until the second fault */

typedef uint32_t table_t[1024] __attribute__((aligned(4096)));
static table_t pd, pt[4]; /* identity map of 0 .. 16 MiB */

static volatile uint32_t faults, fault_cr2[2], fault_err[2];

static uint32_t *pte(uint32_t va)
{
	return &pt[va >> 22][(va >> 12) & 0x3FF];
}

static void pf_handler(struct frame *f)
{
	uint32_t cr2 = read_cr2();

	if (faults >= 2)
		fail("more page faults than expected");
	fault_cr2[faults] = cr2;
	fault_err[faults] = f->err;
	faults++;
	*pte(cr2) |= PTE_P | PTE_W;
	invlpg((void *)cr2);
}

static uint32_t spin(uint32_t n)
{
	uint32_t x = 1;

	while (n--)
		x = x * 1103515245u + 12345u;
	return x;
}

void guest_main(void)
{
	uint32_t i, j;

	for (i = 0; i < 4; i++)
		for (j = 0; j < 1024; j++)
			pt[i][j] = ((i * 1024 + j) << 12) | PTE_P | PTE_W;
	for (i = 0; i < 4; i++)
		pd[i] = (uint32_t)pt[i] | PTE_P | PTE_W;
	*pte(VA_ABSENT) &= ~PTE_P;
	*pte(VA_RO) &= ~PTE_W;
	set_handler(14, pf_handler);
	write_cr3((uint32_t)pd);
	write_cr0(read_cr0() | 0x80010000u); /* PG, WP */

	*(volatile uint32_t *)VA_ABSENT = 1;
	kprintf("not-present fault: cr2 0x%x error 0x%x\n", fault_cr2[0], fault_err[0]);
	kprintf("cr2 after a long computation (%u): 0x%x\n", spin(300000) >> 31, read_cr2());
	*(volatile uint32_t *)VA_RO = 2;
	kprintf("write-protection fault: cr2 0x%x error 0x%x\n", fault_cr2[1], fault_err[1]);
	kprintf("cr2 after a long computation (%u): 0x%x\n", spin(300000) >> 31, read_cr2());
	check(faults == 2 && read_cr2() == VA_RO, "two faults handled, cr2 kept");
	pass(); /* with paging on and CR2 = VA_RO in the final state */
}
