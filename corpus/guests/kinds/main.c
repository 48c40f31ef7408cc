/*
 * kinds: executes, at CPL0, the privileged and sensitive instructions a
 * pre-virtualization annotator has to find, each checked for its
 * architectural effect.  Most groups run twice: once as C inline asm
 * (this file) and once as hand-written assembly (ops.S, flow.S), so that
 * both paths of the annotator see them.  One line per group; values are
 * printed only where this guest chose them.
 */
#include "lib.h"
#include "kinds.h"

const char guest_name[] = "kinds";

/* ops.S */
uint32_t asm_cli_sti(void);
uint32_t asm_popf_roundtrip(uint32_t v);
void asm_port_io(uint32_t out[5]);
void asm_string_io(uint32_t out[4]);
uint32_t asm_cr0_rewrite(void);
uint32_t asm_cr2_rt(uint32_t v);
uint32_t asm_cr3_rt(uint32_t v);
uint32_t asm_cr4_rt(uint32_t v);
void asm_dr_rt(const uint32_t in[5], uint32_t out[5]);
void asm_seg_regs(uint32_t out[10]);
void asm_sgdt(struct dtr *d);
void asm_sidt(struct dtr *d);
void asm_lgdt(const struct dtr *d);
void asm_lidt(const struct dtr *d);
uint32_t asm_read_fs0(uint32_t sel);
void asm_ldt(uint32_t out[3]);
void asm_ltr(uint32_t sel);
uint32_t asm_str(void);
void asm_msw(uint32_t out[4]);
void asm_cache_ops(void);
void asm_hlt_wait(volatile uint32_t *ticks, uint32_t n);
void asm_soft_ints(uint32_t out[4]);
void asm_cpuid0(uint32_t out[4]);
uint32_t asm_msr_rt(uint32_t msr, uint32_t lo);
void asm_rdtsc2(uint32_t out[4]);
uint32_t asm_lar(uint32_t sel, uint32_t *zf);
uint32_t asm_lsl(uint32_t sel, uint32_t *zf);
uint32_t asm_verr(uint32_t sel);
uint32_t asm_verw(uint32_t sel);
uint32_t asm_arpl(uint32_t dst, uint32_t src);
/* flow.S */
uint32_t asm_iret_same_ring(void);
uint32_t asm_lret(void);
void asm_far(uint32_t out[6]);
void asm_lxs(uint32_t out[8]);
extern char alt_stack_top[];

static uint32_t seg_buf[64] __attribute__((aligned(16)));
static uint32_t seg_buf2[64] __attribute__((aligned(16)));
static uint32_t ldt_buf[16] __attribute__((aligned(16)));
static uint64_t ldt[2] __attribute__((aligned(8)));
static uint64_t gdt_copy[GDT_ENTRIES] __attribute__((aligned(8)));
static uint64_t idt_copy[256] __attribute__((aligned(8)));

/* Interrupt bookkeeping. */
static volatile uint32_t ticks, n_soft, n_soft2, n_bp, n_of;
static volatile uint32_t bp_eip, of_eip;

static void irq0_handler(struct frame *f)
{
	(void)f;
	ticks++;
	pic_eoi(0);
}

static void soft_handler(struct frame *f)
{
	n_soft++;
	f->eax += 1;
}

static void soft2_handler(struct frame *f)
{
	n_soft2++;
	f->eax += 2;
}

static void bp_handler(struct frame *f)
{
	n_bp++;
	bp_eip = f->eip;
}

static void of_handler(struct frame *f)
{
	n_of++;
	of_eip = f->eip;
}

static int all_ok;

/* One line per group: "<group>: <detail> ok", or FAIL. */
static void group(const char *name, int cond, const char *detail)
{
	if (!cond) {
		kprintf("%s: %s\n", name, detail);
		fail(name);
	}
	kprintf("%-14s%s ok\n", name, detail);
	all_ok++;
}

/* ------------------------------------------------------------------------ */

static void t_cli_sti(void)
{
	uint32_t a, b;

	cli();
	a = read_eflags() & EFLAGS_IF;
	sti();
	b = read_eflags() & EFLAGS_IF;
	cli();
	group("cli/sti", a == 0 && b == EFLAGS_IF && asm_cli_sti() == 2,
	      "IF=0 after cli, IF=1 after sti (C, asm)");
}

static void t_pushf_popf(void)
{
	const uint32_t arith = 0xCD5; /* CF PF AF ZF SF DF OF */
	uint32_t saved = read_eflags(), v;
	int ok = 1;

	/* C inline: set and clear the arithmetic flags and DF */
	write_eflags(0x2 | arith);
	v = read_eflags();
	write_eflags(saved);
	ok &= v == (0x2 | arith);
	/* asm: the same, then IOPL, AC and ID (all writable at CPL0) */
	ok &= asm_popf_roundtrip(0x2 | arith) == (0x2 | arith);
	ok &= asm_popf_roundtrip(0x2 | EFLAGS_IOPL) == (0x2 | EFLAGS_IOPL);
	ok &= asm_popf_roundtrip(0x2 | 0x40000) == (0x2 | 0x40000);
	ok &= asm_popf_roundtrip(0x2 | EFLAGS_ID) == (0x2 | EFLAGS_ID);
	/* VM (bit 17) cannot be set by popf; RF (bit 16) is not kept either */
	ok &= asm_popf_roundtrip(0x2 | 0x20000) == 0x2;
	ok &= (read_eflags() & ~0x8D5u) == 0x2; /* IF=0, IOPL=0, DF=0 again */
	group("pushf/popf", ok, "CF PF AF ZF SF DF OF, IOPL=3, AC, ID round-trip; VM stays 0");
}

static void t_in_out(void)
{
	uint32_t o[5];
	uint8_t b;
	uint16_t w;
	uint32_t d;
	uint8_t save4e, save4f;
	int ok = 1;

	outb(0x70, 0x4E);
	save4e = inb(0x71);
	outb(0x70, 0x4F);
	save4f = inb(0x71);

	/* C inline: imm8 byte (PIC IMR), dx byte (CMOS), imm8 word, dx dword */
	outb(PIC1_DATA, 0x5A);
	ok &= inb(PIC1_DATA) == 0x5A;
	{
		uint16_t p70 = 0x70, p71 = 0x71;

		__asm__ volatile("outb %b0, %w1" : : "a"(0x4E), "d"(p70));
		__asm__ volatile("outb %b0, %w1" : : "a"(0x77), "d"(p71));
		__asm__ volatile("outb %b0, %w1" : : "a"(0x4E), "d"(p70));
		__asm__ volatile("inb %w1, %b0" : "=a"(b) : "d"(p71));
		ok &= b == 0x77;
	}
	outw(0x70, 0x994E); /* index 0x4e, data 0x99 */
	outb(0x70, 0x4E);
	ok &= inb(0x71) == 0x99;
	outw(PIC1_CMD, 0xC30B); /* OCW3 read-ISR + IMR 0xc3 */
	w = inw(PIC1_CMD);
	ok &= w == 0xC300;
	serial_flush();
	outb(COM1 + 3, 0x83);
	d = inl(COM1);
	outl(COM1, 0x03C70001u);
	ok &= (d & 0xFF00FFFFu) == 0x83000001u && inb(COM1 + 3) == 0x03;
	pic_set_masks(0xFF, 0xFF);
	outb(PIC1_CMD, 0x0A);

	serial_flush();
	asm_port_io(o);
	ok &= o[0] == 0xA5 && o[1] == 0x3C && o[2] == 0x9600 && o[3] == 0x6900;
	ok &= (o[4] & 0xFF00FFFFu) == 0x83000001u && inb(COM1 + 3) == 0x03;

	outb(0x70, 0x4E);
	outb(0x71, save4e);
	outb(0x70, 0x4F);
	outb(0x71, save4f);
	group("in/out", ok, "imm8 and dx forms, byte/word/dword (PIC, CMOS, COM1 DLAB)");
}

static void t_ins_outs(void)
{
	uint32_t o[4];
	uint8_t src[2] = {0x3C, 0x11}, dst[2] = {0, 0};
	uint32_t esi = (uint32_t)src, edi = (uint32_t)dst, ecx;
	int ok;

	/* C inline: outsb once, then rep insb twice, on the master IMR */
	__asm__ volatile("cld; outsb" : "+S"(esi) : "d"(PIC1_DATA) : "memory");
	ecx = 2;
	__asm__ volatile("cld; rep insb" : "+D"(edi), "+c"(ecx) : "d"(PIC1_DATA) : "memory");
	ok = dst[0] == 0x3C && dst[1] == 0x3C && esi == (uint32_t)src + 1 &&
	     edi == (uint32_t)dst + 2 && ecx == 0;
	pic_set_masks(0xFF, 0xFF);

	serial_flush();
	asm_string_io(o);
	ok &= o[0] == 0xE7 && o[1] == 0xBDBDBDBDu && o[2] == 0x5A00 &&
	      (o[3] & 0xFF00FFFFu) == 0x83000001u && inb(COM1 + 3) == 0x03;
	group("ins/outs", ok, "outsb/insb, rep outsb/insb, outsw/insw, rep outsl/insl");
}

static void t_cr(void)
{
	uint32_t cr0 = read_cr0(), cr3 = read_cr3(), cr4 = read_cr4();
	int ok = 1;

	write_cr0(cr0);
	ok &= read_cr0() == cr0 && asm_cr0_rewrite() == cr0;
	write_cr2(0x12345678u);
	ok &= read_cr2() == 0x12345678u && asm_cr2_rt(0x0BADF00Du) == 0x0BADF00Du;
	write_cr2(0);
	write_cr3(0x00123000u); /* paging is off: any value is fine */
	ok &= read_cr3() == 0x00123000u && asm_cr3_rt(0x00456000u) == 0x00456000u;
	write_cr3(cr3);
	ok &= read_cr3() == cr3;
	write_cr4(cr4);
	ok &= read_cr4() == cr4;
	ok &= asm_cr4_rt(cr4 | 0x4) == (cr4 | 0x4); /* CR4.TSD */
	write_cr4(cr4);
	ok &= read_cr4() == cr4;
	group("mov cr", ok, "CR0 rewrite, CR2 0x12345678, CR3 0x00123000, CR4 TSD toggle");
}

static void t_dr(void)
{
	static const uint32_t in[5] = {0x00001000u, 0x00002000u, 0x00003000u, 0x00004000u,
				       0x000D0400u};
	static const uint32_t zero[5] = {0, 0, 0, 0, 0};
	uint32_t out[5], v[5], i;
	int ok = 1;

	__asm__ volatile("movl %0, %%dr0" : : "r"(0x00110000u));
	__asm__ volatile("movl %0, %%dr1" : : "r"(0x00220000u));
	__asm__ volatile("movl %0, %%dr2" : : "r"(0x00330000u));
	__asm__ volatile("movl %0, %%dr3" : : "r"(0x00440000u));
	__asm__ volatile("movl %0, %%dr7" : : "r"(0x000F0400u)); /* RW0/LEN0 set, L0/G0 off */
	__asm__ volatile("movl %%dr0, %0" : "=r"(v[0]));
	__asm__ volatile("movl %%dr1, %0" : "=r"(v[1]));
	__asm__ volatile("movl %%dr2, %0" : "=r"(v[2]));
	__asm__ volatile("movl %%dr3, %0" : "=r"(v[3]));
	__asm__ volatile("movl %%dr7, %0" : "=r"(v[4]));
	ok &= v[0] == 0x00110000u && v[1] == 0x00220000u && v[2] == 0x00330000u &&
	      v[3] == 0x00440000u && v[4] == 0x000F0400u;

	asm_dr_rt(in, out);
	for (i = 0; i < 5; i++)
		ok &= out[i] == in[i];
	asm_dr_rt(zero, out);
	ok &= out[0] == 0 && out[1] == 0 && out[2] == 0 && out[3] == 0;
	kprintf("mov dr7, 0 reads back 0x%08x\n", out[4]);
	ok &= out[4] == 0x400; /* bit 10 always reads 1 */
	group("mov dr", ok, "DR0-DR3 and DR7 (breakpoints disabled) written and read back");
}

static void t_seg(void)
{
	uint32_t o[10];
	uint16_t ds, es, ss, cs, fs;
	uint32_t v;
	int ok = 1;

	seg_buf[0] = SEGBUF_MAGIC;
	seg_buf[1] = SEGBUF_MAGIC + 1;
	__asm__ volatile("movw %%ds, %0; movw %%es, %1; movw %%ss, %2; movw %%cs, %3"
			 : "=r"(ds), "=r"(es), "=r"(ss), "=r"(cs));
	ok &= ds == 0x10 && es == 0x10 && ss == 0x10 && cs == 0x08;
	__asm__ volatile("movw %w2, %%fs; movl %%fs:0, %0; movw %%fs, %1; movw %w3, %%fs"
			 : "=&r"(v), "=&r"(fs) : "r"(SEL_SEGBUF), "r"(0x10) : "memory");
	ok &= v == SEGBUF_MAGIC && fs == SEL_SEGBUF;
	group("mov sreg", ok, "read ds/es/ss/cs; fs=0x38 reads its own base (C)");

	asm_seg_regs(o);
	/* movw %gs, %ax leaves EAX[31:16] alone; movl %fs, %eax zero-extends */
	ok = o[0] == SEGBUF_MAGIC && o[1] == SEL_SEGBUF && o[2] == 0xFFFF0000u &&
	     o[3] == SEGBUF_MAGIC + 1;
	group("mov sreg", ok, "fs/ds based loads, 32-bit read 0x38, gs=null (asm)");
	ok = o[4] == 4 && o[5] == 0x10 && o[6] == 2 && o[7] == SEL_SEGBUF && o[8] == 0x10 &&
	     o[9] == 0x08;
	/* C inline: gs <- fs via the stack, then ss and es round trips */
	__asm__ volatile("movw %w1, %%fs; pushl %%fs; popl %%gs; movw %%gs, %w0;"
			 "pushl %%ss; popl %%ss; pushl %%ds; popl %%es;"
			 "movw %w2, %%fs; movw %w2, %%gs"
			 : "=&r"(v) : "r"(SEL_SEGBUF), "r"(0x10) : "memory");
	__asm__ volatile("movw %%es, %0; movw %%ss, %1" : "=r"(es), "=r"(ss));
	ok &= (v & 0xFFFF) == SEL_SEGBUF && es == 0x10 && ss == 0x10;
	group("push/pop sreg", ok, "pushl ds (4 bytes)/popl es, pushw fs (2)/popw gs, ss, cs");
}

static void t_tables(void)
{
	struct dtr g, i, g2, i2, c;
	uint32_t before, eax, ok = 1;

	/* C: sgdt/sidt equal what desc_init() loaded */
	__asm__ volatile("sgdt %0" : "=m"(g));
	__asm__ volatile("sidt %0" : "=m"(i));
	ok &= g.base == (uint32_t)gdt && g.limit == sizeof(gdt) - 1;
	ok &= i.base == (uint32_t)idt && i.limit == sizeof(idt) - 1;
	asm_sgdt(&c);
	ok &= c.base == g.base && c.limit == g.limit;
	asm_sidt(&c);
	ok &= c.base == i.base && c.limit == i.limit;

	/* A GDT copy whose 0x38 entry has another base: the copy is used. */
	memcpy(gdt_copy, gdt, sizeof(gdt));
	gdt_copy[SEL_SEGBUF >> 3] = gdt_make((uint32_t)seg_buf2, 0xFF, 0x93, 0x4);
	seg_buf2[0] = SEGBUF2_MAGIC;
	g2.limit = sizeof(gdt_copy) - 1;
	g2.base = (uint32_t)gdt_copy;
	asm_lgdt(&g2);
	asm_sgdt(&c);
	ok &= c.base == g2.base && c.limit == g2.limit;
	ok &= asm_read_fs0(SEL_SEGBUF) == SEGBUF2_MAGIC;
	__asm__ volatile("lgdt %0" : : "m"(g));
	ok &= asm_read_fs0(SEL_SEGBUF) == SEGBUF_MAGIC;

	/* An IDT copy where vector 0x40 enters through the 0x42 stub. */
	memcpy(idt_copy, idt, sizeof(idt));
	i2.limit = sizeof(idt_copy) - 1;
	i2.base = (uint32_t)idt_copy;
	idt_copy[VEC_SOFT] = idt[VEC_SOFT2];
	before = n_soft2;
	eax = 0x2000;
	__asm__ volatile("lidt %0" : : "m"(i2));
	asm_sidt(&c);
	ok &= c.base == i2.base && c.limit == i2.limit;
	__asm__ volatile("int $0x40" : "+a"(eax) : : "memory");
	asm_lidt(&i);
	__asm__ volatile("sidt %0" : "=m"(c));
	ok &= c.base == i.base && n_soft2 == before + 1 && eax == 0x2002;
	group("lgdt/sgdt", ok, "sgdt/sidt match; lgdt/lidt of copies take effect and restore");
}

static void t_ldt_tr(void)
{
	uint32_t o[3], zf, v;
	uint16_t sel;
	int ok;

	ldt_buf[0] = LDTBUF_MAGIC;
	ldt[0] = gdt_make((uint32_t)ldt_buf, sizeof(ldt_buf) - 1, 0x93, 0x4);
	ldt[1] = 0;
	asm_ldt(o);
	ok = o[0] == SEL_LDT && o[1] == LDTBUF_MAGIC && o[2] == 0;
	__asm__ volatile("lldt %w0" : : "r"(SEL_LDT));
	__asm__ volatile("sldt %0" : "=r"(sel));
	ok &= sel == SEL_LDT;
	__asm__ volatile("lldt %w0" : : "r"(0));
	__asm__ volatile("sldt %0" : "=r"(sel));
	ok &= sel == 0;
	group("lldt/sldt", ok, "LDT 0x48 loaded, fs=0x04 reads through it, lldt 0");

	memset(&tss, 0, sizeof(tss));
	tss.ss0 = SEL_KDATA;
	tss.esp0 = (uint32_t)alt_stack_top;
	tss.iomap_base = sizeof(tss);
	gdt_set(5, (uint32_t)&tss, sizeof(tss) - 1, 0x89, 0x0);
	v = asm_lar(SEL_TSS, &zf);
	ok = zf && (v & 0x00F0FF00u) == 0x00008900u;
	asm_ltr(SEL_TSS);
	__asm__ volatile("str %0" : "=r"(sel));
	ok &= sel == SEL_TSS && asm_str() == SEL_TSS;
	v = asm_lar(SEL_TSS, &zf);
	ok &= zf && (v & 0x00F0FF00u) == 0x00008B00u;
	/* Mark it available again and load it from C inline asm. */
	gdt_set(5, (uint32_t)&tss, sizeof(tss) - 1, 0x89, 0x0);
	__asm__ volatile("ltr %w0" : : "r"(SEL_TSS) : "memory");
	v = asm_lar(SEL_TSS, &zf);
	ok &= zf && (v & 0x00F0FF00u) == 0x00008B00u && asm_str() == SEL_TSS;
	group("ltr/str", ok, "ltr 0x28 (asm, C), str = 0x28, TSS type 9 -> 0xb (busy)");
}

static void t_msw_clts(void)
{
	uint32_t o[4], cr0 = read_cr0();
	uint16_t msw;
	int ok;

	__asm__ volatile("smsw %0" : "=r"(msw));
	ok = msw == (uint16_t)cr0;
	__asm__ volatile("lmsw %0" : : "r"(msw));
	ok &= read_cr0() == cr0;
	asm_msw(o);
	ok &= (o[0] & 0xFFFF) == (cr0 & 0xFFFF) && o[1] == (cr0 & 0xFFFF);
	ok &= (o[2] & CR0_TS) && !(o[3] & CR0_TS) && read_cr0() == cr0;
	group("smsw/lmsw", ok, "smsw = CR0[15:0] (reg, mem), lmsw same value; lmsw sets TS");

	write_cr0(cr0 | CR0_TS);
	ok = (read_cr0() & CR0_TS) != 0;
	__asm__ volatile("clts");
	ok &= read_cr0() == cr0 && !(o[3] & CR0_TS);
	group("clts", ok, "clears CR0.TS (C, asm)");
}

static void t_cache(void)
{
	invlpg((void *)0x3000);
	__asm__ volatile("wbinvd; invd" : : : "memory"); /* invd only right after wbinvd */
	asm_cache_ops();
	group("invlpg/wbinvd", 1, "invlpg (paging off), wbinvd, invd ran without fault (C, asm)");
}

static void t_hlt(void)
{
	uint32_t t0;

	pit_program(0, 2, 1193); /* ~1000 Hz */
	pic_set_masks(0xFE, 0xFF);
	t0 = ticks;
	while (ticks == t0)
		sti_hlt_cli();
	asm_hlt_wait(&ticks, 2);
	pic_set_masks(0xFF, 0xFF);
	group("hlt", ticks >= t0 + 3 && !(read_eflags() & EFLAGS_IF),
	      "sti;hlt woken by PIT IRQ0 (C once, asm twice), IF=0 after");
}

static void t_iret_lret_far(void)
{
	uint32_t o[6], f, esp_delta;
	uint16_t cs;
	int ok;

	f = asm_iret_same_ring();
	ok = (f & EFLAGS_CF) != 0;
	__asm__ volatile("pushfl; pushl %%cs; pushl $1f; iret; 1: pushfl; popl %0"
			 : "=r"(f) : : "memory", "cc");
	ok &= (f & EFLAGS_IF) == 0;
	group("iret", ok, "ring 0 -> ring 0 to the next instruction, EFLAGS image loaded");

	esp_delta = asm_lret();
	__asm__ volatile("pushl %%cs; pushl $1f; lret; 1: movw %%cs, %0" : "=r"(cs) : : "memory");
	group("lret", esp_delta == 0 && cs == 0x08, "lret and lret $8 to the next instruction");

	asm_far(o);
	ok = o[0] == SEL_CODE2 && o[1] == 0x08 && o[2] == SEL_CODE2 && o[3] == 0x08 &&
	     o[4] == SEL_CODE2 && o[5] == SEL_CODE2;
	__asm__ volatile("ljmp %1, $1f; 1: movw %%cs, %0; ljmp $0x08, $2f; 2:"
			 : "=r"(cs) : "i"(SEL_CODE2) : "memory");
	ok &= cs == SEL_CODE2;
	__asm__ volatile("movw %%cs, %0" : "=r"(cs));
	ok &= cs == 0x08;
	{
		uint32_t in_cs, ret_cs;

		__asm__ volatile("lcall %2, $kinds_far_callee"
				 : "=a"(in_cs), "=d"(ret_cs) : "i"(SEL_CODE2) : "memory");
		ok &= in_cs == SEL_CODE2 && ret_cs == 0x08;
	}
	group("ljmp/lcall", ok, "to selector 0x30 and back, direct and through memory (C, asm)");
}

static void t_lxs(void)
{
	uint32_t o[8];
	int ok;

	seg_buf[0] = SEGBUF_MAGIC;
	seg_buf[1] = SEGBUF_MAGIC + 1;
	asm_lxs(o);
	{
		struct {
			uint32_t off;
			uint16_t sel;
		} __attribute__((packed)) fp = {4, SEL_SEGBUF}, sp;
		uint32_t off, v1, v2, v3;
		uint16_t sel;

		/* lds/les inside one asm so compiled code never sees odd segments;
		 * no push/pop in there, since "m" operands may be ESP-relative */
		__asm__ volatile("lds %3, %0; movl (%0), %1; movw %%ds, %w2; movw %w4, %%ds"
				 : "=&r"(off), "=&r"(v1), "=&r"(sel) : "m"(fp), "r"(0x10)
				 : "memory");
		ok = v1 == SEGBUF_MAGIC + 1 && off == 4 && sel == SEL_SEGBUF;
		__asm__ volatile("les %2, %0; movl %%es:-4(%0), %1; movw %w3, %%es"
				 : "=&r"(off), "=&r"(v1) : "m"(fp), "r"(0x10) : "memory");
		ok &= v1 == SEGBUF_MAGIC;
		__asm__ volatile("lfs %2, %0; movl %%fs:(%0), %1" : "=&r"(off), "=&r"(v2) : "m"(fp));
		__asm__ volatile("lgs %2, %0; movl %%gs:-4(%0), %1; movw %w3, %%fs; movw %w3, %%gs"
				 : "=&r"(off), "=&r"(v3) : "m"(fp), "r"(0x10) : "memory");
		ok &= v2 == SEGBUF_MAGIC + 1 && v3 == SEGBUF_MAGIC;
		/* lss with the current SS:ESP */
		__asm__ volatile("movl %%esp, %0; movw %%ss, %1; lss %0, %%esp"
				 : "=m"(sp.off), "=m"(sp.sel) : : "memory");
		__asm__ volatile("movw %%ss, %0" : "=r"(sel));
		ok &= sel == 0x10;
	}
	ok &= o[0] == SEGBUF_MAGIC + 1 && o[1] == SEL_SEGBUF && o[2] == 0x10 &&
	     o[3] == 0x00C0FFEEu && o[4] == SEGBUF_MAGIC + 1 && o[5] == SEGBUF_MAGIC &&
	     o[6] == (uint32_t)alt_stack_top - 4 && o[7] == 0xA175AC00u;
	group("lds..lss", ok, "lds/les/lfs/lgs from far pointers, lss (C, asm)");
}

static void t_ints(void)
{
	uint32_t o[4], eax = 0x1000, bp_c;
	int ok;

	__asm__ volatile("int $0x40" : "+a"(eax) : : "memory");
	ok = eax == 0x1001 && n_soft == 1;
	__asm__ volatile("int3; 1: movl $1b, %0" : "=r"(bp_c) : : "memory");
	ok &= n_bp == 1 && bp_eip == bp_c;
	asm_soft_ints(o);
	ok &= o[0] == 0x4001 && n_soft == 2;
	group("int $n", ok, "int $0x40 handler ran twice and adjusted EAX in the frame");
	ok = n_bp == 3 && bp_eip == o[2];
	group("int3", ok && o[1] != o[2], "int3 and int $3: handler ran 3 times, EIP after the insn");
	ok = n_of == 1 && of_eip == o[3];
	__asm__ volatile("movl $0x7fffffff, %%eax; addl $1, %%eax; into" : : : "eax", "cc",
			 "memory");
	ok &= n_of == 2;
	__asm__ volatile("xorl %%eax, %%eax; into" : : : "eax", "cc", "memory");
	ok &= n_of == 2;
	group("into", ok, "traps (vector 4) with OF=1 only: 2 of 4 executions");
}

static int printable(uint32_t w)
{
	int i;

	for (i = 0; i < 4; i++, w >>= 8)
		if ((w & 0xFF) < 0x20 || (w & 0xFF) > 0x7E)
			return 0;
	return 1;
}

static void t_cpuid_msr_tsc(void)
{
	uint32_t a, b, c, d, o[4], lo, hi, orig_lo, orig_hi;
	uint32_t t1h, t1l, t2h, t2l;
	int ok;

	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
	asm_cpuid0(o);
	ok = printable(b) && printable(c) && printable(d) && o[1] == b && o[2] == d &&
	     o[3] == c;
	group("cpuid", ok, "leaf 0 returns a printable vendor string (not shown)");

	__asm__ volatile("rdmsr" : "=a"(orig_lo), "=d"(orig_hi) : "c"(0x174));
	__asm__ volatile("wrmsr" : : "a"(0x10), "d"(0), "c"(0x174));
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0x174));
	ok = lo == 0x10 && hi == 0 && asm_msr_rt(0x174, 0x08) == 0x08;
	__asm__ volatile("wrmsr" : : "a"(orig_lo), "d"(orig_hi), "c"(0x174));
	group("rdmsr/wrmsr", ok, "IA32_SYSENTER_CS: wrote 0x10 and 0x8, read them back");

	__asm__ volatile("rdtsc" : "=a"(t1l), "=d"(t1h));
	asm_rdtsc2(o);
	__asm__ volatile("rdtsc" : "=a"(t2l), "=d"(t2h));
	ok = (o[1] > t1h || (o[1] == t1h && o[0] >= t1l)) &&
	     (o[3] > o[1] || (o[3] == o[1] && o[2] >= o[0])) &&
	     (t2h > o[3] || (t2h == o[3] && t2l >= o[2]));
	group("rdtsc", ok, "4 reads, never decreasing (values not shown)");
}

static uint32_t c_lar(uint32_t sel, uint32_t *zf)
{
	uint32_t v = 0;
	uint8_t z;

	__asm__ volatile("larl %2, %0; setz %1" : "+r"(v), "=q"(z) : "r"(sel) : "cc");
	*zf = z;
	return v;
}

static uint32_t c_lsl(uint32_t sel, uint32_t *zf)
{
	uint32_t v = 0;
	uint8_t z;

	__asm__ volatile("lsll %2, %0; setz %1" : "+r"(v), "=q"(z) : "r"(sel) : "cc");
	*zf = z;
	return v;
}

static uint32_t c_verr(uint16_t sel)
{
	uint8_t z;

	__asm__ volatile("verr %1; setz %0" : "=q"(z) : "r"(sel) : "cc");
	return z;
}

static uint32_t c_verw(uint16_t sel)
{
	uint8_t z;

	__asm__ volatile("verw %1; setz %0" : "=q"(z) : "r"(sel) : "cc");
	return z;
}

static void t_lar_lsl(void)
{
	static const struct {
		uint16_t sel;
		uint8_t lar_zf;
		uint32_t lar;  /* masked with 0x00f0ff00 */
		uint8_t lsl_zf;
		uint32_t lsl;
		uint8_t verr, verw;
	} t[] = {
		{0x00, 0, 0, 0, 0, 0, 0},                           /* null */
		{0x08, 1, 0x00C09B00u, 1, 0xFFFFFFFFu, 1, 0},       /* code */
		{0x10, 1, 0x00C09300u, 1, 0xFFFFFFFFu, 1, 1},       /* data */
		{0x13, 0, 0, 0, 0, 0, 0},                           /* DPL0 data, RPL3 */
		{0x1B, 1, 0x00C0FB00u, 1, 0xFFFFFFFFu, 1, 0},       /* user code */
		{SEL_TSS, 1, 0x00008B00u, 1, 0x67, 0, 0},           /* busy TSS */
		{SEL_SEGBUF, 1, 0x00409300u, 1, 0xFF, 1, 1},        /* byte limit */
		{SEL_UNUSED, 1, 0x00409200u, 1, 0x12345, 1, 1},     /* never loaded: A=0 */
		{SEL_LDT, 1, 0x00008200u, 1, 0x0F, 0, 0},           /* LDT */
		{SEL_DATA3, 1, 0x00C0F300u, 1, 0xFFFFFFFFu, 1, 1},  /* DPL3 data */
		{SEL_XONLY, 1, 0x00C09900u, 1, 0xFFFFFFFFu, 0, 0},  /* execute-only */
		{0x80, 0, 0, 0, 0, 0, 0},                           /* past the limit */
	};
	uint32_t i, zf, zf2, v, v2, l, l2, bad = 0;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		v = c_lar(t[i].sel, &zf);
		v2 = asm_lar(t[i].sel, &zf2);
		if (zf != t[i].lar_zf || zf2 != zf || (zf && ((v & 0x00F0FF00u) != t[i].lar ||
							    v2 != v)))
			bad |= 1;
		l = c_lsl(t[i].sel, &zf);
		l2 = asm_lsl(t[i].sel, &zf2);
		if (zf != t[i].lsl_zf || zf2 != zf || (zf && (l != t[i].lsl || l2 != l)))
			bad |= 2;
		if (c_verr(t[i].sel) != t[i].verr || asm_verr(t[i].sel) != t[i].verr)
			bad |= 4;
		if (c_verw(t[i].sel) != t[i].verw || asm_verw(t[i].sel) != t[i].verw)
			bad |= 8;
		kprintf("  sel 0x%02x: lar ZF=%u 0x%08x  lsl ZF=%u 0x%08x  verr %u verw %u\n",
			t[i].sel, zf2, zf2 ? v2 & 0x00F0FF00u : 0, zf, zf ? l : 0,
			c_verr(t[i].sel), c_verw(t[i].sel));
		if (bad) {
			kprintf("  (mismatch mask %u)\n", bad);
			break;
		}
	}
	group("lar/lsl/verr", bad == 0, "12 selectors: access rights, limits, ZF as expected");
}

static void t_arpl(void)
{
	uint16_t dst = 0x10;
	uint8_t z;
	int ok;

	__asm__ volatile("arpl %w2, %w0; setz %1" : "+r"(dst), "=q"(z) : "r"(0x1B) : "cc");
	ok = dst == 0x13 && z == 1;
	__asm__ volatile("arpl %w2, %w0; setz %1" : "+r"(dst), "=q"(z) : "r"(0x08) : "cc");
	ok &= dst == 0x13 && z == 0;
	ok &= asm_arpl(0x20, 0x1B) == 0x10023 && asm_arpl(0x23, 0x10) == 0x23;
	group("arpl", ok, "raises RPL 0->3 with ZF=1; leaves RPL 3 with ZF=0");
}

void guest_main(void)
{
	cli();
	pic_remap(0x20, 0x28);
	set_handler(0x20, irq0_handler);
	set_handler(VEC_SOFT, soft_handler);
	set_handler(VEC_SOFT2, soft2_handler);
	set_handler(3, bp_handler);
	set_handler(4, of_handler);

	gdt_set(6, 0, 0xFFFFF, 0x9B, 0xC);                          /* 0x30 */
	gdt_set(7, (uint32_t)seg_buf, 0xFF, 0x93, 0x4);             /* 0x38 */
	gdt_set(8, 0, 0x12345, 0x92, 0x4);                          /* 0x40 */
	gdt_set(9, (uint32_t)ldt, sizeof(ldt) - 1, 0x82, 0x0);      /* 0x48 */
	gdt_set(10, 0, 0xFFFFF, 0xF3, 0xC);                         /* 0x50 */
	gdt_set(11, 0, 0xFFFFF, 0x99, 0xC);                         /* 0x58 */

	t_cli_sti();
	t_pushf_popf();
	t_in_out();
	t_ins_outs();
	t_cr();
	t_dr();
	t_seg();
	t_tables();
	t_ldt_tr();
	t_msw_clts();
	t_cache();
	t_hlt();
	t_iret_lret_far();
	t_lxs();
	t_ints();
	t_cpuid_msr_tsc();
	t_lar_lsl();
	t_arpl();
	kprintf("%u groups ok; outl imm8 follows as the exit write to 0xf4\n", all_ok);
}
