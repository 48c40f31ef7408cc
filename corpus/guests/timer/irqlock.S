/* timer/irqlock.S: spin_lock_irqsave-style patterns written in assembly. */

#define IF_BIT 9

/* Store (EFLAGS.IF ? 1 : 0) to 4*\slot(%ecx). */
.macro record slot
	pushfl
	popl %eax
	shrl $IF_BIT, %eax
	andl $1, %eax
	movl %eax, 4*\slot(%ecx)
.endm

	.section .text

/*
 * void irqsave_nest_asm(uint32_t obs[7])
 * Three nested "pushf; cli" ... "popf" levels; records IF before, inside
 * each level, and after each popf.  The caller's IF is what level 1 saves.
 */
	.globl irqsave_nest_asm
	.type irqsave_nest_asm, @function
irqsave_nest_asm:
	movl 4(%esp), %ecx
	record 0                   /* before */
	pushfl                     /* level 1: irqsave */
	cli
	record 1
	pushfl                     /* level 2 */
	cli
	record 2
	pushfl                     /* level 3 */
	cli
	record 3
	popfl                      /* level 3: irqrestore */
	record 4
	popfl                      /* level 2 */
	record 5
	popfl                      /* level 1 */
	record 6
	ret
	.size irqsave_nest_asm, . - irqsave_nest_asm

/*
 * void sti_shadow_probe(uint32_t out[3])
 * Called with IF=0 and IRQ0 already pending.  out[0] = ticks before sti,
 * out[1] = ticks read by the instruction in sti's interrupt shadow,
 * out[2] = ticks read by the instruction after that.
 */
	.globl sti_shadow_probe
	.type sti_shadow_probe, @function
sti_shadow_probe:
	movl 4(%esp), %ecx
	movl ticks, %eax
	movl %eax, 0(%ecx)
	sti
	movl ticks, %eax           /* in the shadow: the IRQ is still held */
	movl %eax, 4(%ecx)         /* the IRQ is taken before this one */
	movl ticks, %eax
	movl %eax, 8(%ecx)
	cli
	ret
	.size sti_shadow_probe, . - sti_shadow_probe

/*
 * void popf_probe(uint32_t flags, uint32_t out[2])
 * Called with IF=0 and IRQ0 pending; popf loads flags (IF=1).  popf has no
 * shadow, so the instruction right after it already sees the new tick.
 */
	.globl popf_probe
	.type popf_probe, @function
popf_probe:
	movl 8(%esp), %ecx
	movl ticks, %eax
	movl %eax, 0(%ecx)
	pushl 4(%esp)
	popfl
	movl ticks, %eax
	movl %eax, 4(%ecx)
	cli
	ret
	.size popf_probe, . - popf_probe

	.section .note.GNU-stack, "", @progbits
