/* Interrupt and exception entry stubs for all 256 vectors.
 * Each stub starts on a 16-byte boundary (isr_stubs + 16*vector); the
 * longest one is 12 bytes (push imm8, push imm32, jmp rel32).  Where the CPU pushes
 * no error code the stub pushes a dummy 0, so every frame looks the same. */

	.section .text
	.balign 16
	.globl isr_stubs
isr_stubs:
	.set vec, 0
	.rept 256
	.balign 16
	.if (vec != 8) && ((vec < 10) || (vec > 14)) && (vec != 17)
	pushl $0                   /* dummy error code */
	.endif
	pushl $vec
	jmp isr_common
	.set vec, vec + 1
	.endr
	.balign 16

	.globl isr_common
	.type isr_common, @function
isr_common:
	pushal
	pushl %ds
	pushl %es
	pushl %fs
	pushl %gs
	movl $0x10, %eax
	movl %eax, %ds
	movl %eax, %es
	cld
	pushl %esp                 /* struct frame * */
	call isr_dispatch
	addl $4, %esp
	popl %gs
	popl %fs
	popl %es
	popl %ds
	popal
	addl $8, %esp              /* vector number and error code */
	iret
	.size isr_common, . - isr_common

	.section .note.GNU-stack, "", @progbits
