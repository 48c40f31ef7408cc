/* timer/irq0.S: a dedicated IRQ0 entry (no common stub) that calls C. */

	.section .text
	.globl irq0_entry
	.type irq0_entry, @function
irq0_entry:
	pushal
	cld
	call timer_tick            /* counts the tick and sends the EOI */
	popal
	iret
	.size irq0_entry, . - irq0_entry

	.section .note.GNU-stack, "", @progbits
