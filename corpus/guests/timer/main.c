/*
 * timer: PIC remap, PIT channel 0 in modes 2 and 3 at ~1000 Hz, an IRQ0
 * handler that counts ticks, and IRQ-lock (pushf; cli ... popf) patterns.
 * Only facts are printed, never tick counts that depend on speed.
 */
#include "lib.h"

const char guest_name[] = "timer";

volatile uint32_t ticks;

void irq0_entry(void);                    /* irq0.S */
void irqsave_nest_asm(uint32_t obs[7]);   /* irqlock.S */
void sti_shadow_probe(uint32_t out[3]);
void popf_probe(uint32_t flags, uint32_t out[2]);

void timer_tick(void);
void timer_tick(void)
{
	ticks++;
	outb(PIC1_CMD, 0x20); /* non-specific EOI */
}

#define DIVISOR 1193 /* 1193182 / 1193 = ~1000 Hz */

static void wait_ticks(uint32_t n)
{
	uint32_t start = ticks;

	while (ticks - start < n)
		sti_hlt_cli();
}

static inline uint32_t irq_save(void)
{
	uint32_t f;

	__asm__ volatile("pushfl; popl %0; cli" : "=r"(f) : : "memory");
	return f;
}

static inline void irq_restore(uint32_t f)
{
	__asm__ volatile("pushl %0; popfl" : : "r"(f) : "memory", "cc");
}

static inline uint32_t if_now(void)
{
	return (read_eflags() & EFLAGS_IF) ? 1 : 0;
}

/* The same pattern as irqsave_nest_asm, in C with inline asm. */
static void irqsave_nest_c(uint32_t obs[7])
{
	uint32_t f1, f2, f3;

	obs[0] = if_now();
	f1 = irq_save();
	obs[1] = if_now();
	f2 = irq_save();
	obs[2] = if_now();
	f3 = irq_save();
	obs[3] = if_now();
	irq_restore(f3);
	obs[4] = if_now();
	irq_restore(f2);
	obs[5] = if_now();
	irq_restore(f1);
	obs[6] = if_now();
}

static void check_nest(const char *how, uint32_t start_if, void (*fn)(uint32_t *))
{
	uint32_t obs[7], i;
	int good = 1;

	if (start_if)
		sti();
	else
		cli();
	fn(obs);
	cli();
	for (i = 0; i < 7; i++) {
		uint32_t want = (i == 0 || i == 6) ? start_if : 0;

		if (obs[i] != want)
			good = 0;
	}
	kprintf("irqsave x3 %s from IF=%u: IF %u|%u %u %u|%u %u|%u\n", how, start_if,
		obs[0], obs[1], obs[2], obs[3], obs[4], obs[5], obs[6]);
	check(good, start_if ? "popf restored IF=1 exactly" : "popf restored IF=0 exactly");
}

/* With IF=0, spin on the PIC's IRR until IRQ0 is pending (bounded). */
static int wait_irq0_pending(void)
{
	uint32_t n;

	outb(PIC1_CMD, 0x0A); /* OCW3: reads of port 0x20 return the IRR */
	for (n = 0; n < 2000000u; n++)
		if (inb(PIC1_CMD) & 1)
			return 1;
	return 0;
}

static void run_phase(int mode)
{
	uint32_t before_if;

	kprintf("phase: PIT channel 0 mode %d, divisor %u\n", mode, DIVISOR);
	cli();
	pit_program(0, mode, DIVISOR);
	ticks = 0;
	before_if = read_eflags() & EFLAGS_IF;
	wait_ticks(10);
	check(ticks >= 10, mode == 2 ? "mode 2 ticks>=10" : "mode 3 ticks>=10");
	check(before_if == (read_eflags() & EFLAGS_IF), "IF restored after sti;hlt;cli waits");
}

static void pending_tests(void)
{
	uint32_t t0, out[3], f1, f2;

	/* A tick that arrives inside a two-level irqsave section is held while
	 * IF=0 (even across the inner popf) and taken right after the outer one. */
	sti();
	f1 = irq_save();
	f2 = irq_save();
	t0 = ticks;
	if (!wait_irq0_pending())
		fail("IRQ0 never became pending while IF=0");
	check(ticks == t0 && if_now() == 0, "pending tick held while IF=0");
	irq_restore(f2);
	check(ticks == t0 && if_now() == 0, "inner popf kept IF=0 and the tick pending");
	irq_restore(f1);
	t0 = ticks - t0; /* read by the first access after popf */
	cli();
	check(t0 != 0, "pending tick delivered right after outer popf (C)");

	/* The same through popf in assembly. */
	if (!wait_irq0_pending())
		fail("IRQ0 never became pending while IF=0");
	popf_probe(read_eflags() | EFLAGS_IF, out);
	check(out[1] != out[0], "pending tick delivered right after popf (asm)");

	/* sti: the instruction right after it runs before the interrupt. */
	if (!wait_irq0_pending())
		fail("IRQ0 never became pending while IF=0");
	sti_shadow_probe(out);
	check(out[1] == out[0], "sti shadow held the pending tick for one instruction");
	check(out[2] != out[1], "pending tick delivered after the sti shadow");
}

void guest_main(void)
{
	cli();
	pic_remap(0x20, 0x28);
	idt_set_gate(0x20, (uint32_t)irq0_entry, SEL_KCODE, GATE_INT32);
	pic_set_masks(0xFE, 0xFF); /* only IRQ0 */
	check((inb(PIC1_DATA) == 0xFE) && (inb(PIC2_DATA) == 0xFF), "PIC masks: IRQ0 only");

	run_phase(2);

	check_nest("C", 1, irqsave_nest_c);
	check_nest("C", 0, irqsave_nest_c);
	check_nest("asm", 1, irqsave_nest_asm);
	check_nest("asm", 0, irqsave_nest_asm);
	pending_tests();

	run_phase(3);
	pending_tests();

	cli();
	pic_set_masks(0xFF, 0xFF);
	check(if_now() == 0, "IF=0 at the end");
}
