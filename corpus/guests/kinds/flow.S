/*
 * kinds/flow.S: control transfers and segment loads from far pointers:
 * iret and lret within ring 0, far jmp and far call (direct and through
 * memory) to another code selector, lds/les/lfs/lgs/lss.
 */
#include "kinds.h"

#define ARG(n) (4 + 4 * (n))(%esp)

	.section .text

/* uint32_t asm_iret_same_ring(void): iret to the next instruction with CF=1
 * set in the pushed EFLAGS image; returns EFLAGS after the iret. */
	.globl asm_iret_same_ring
asm_iret_same_ring:
	pushfl
	pushfl
	orl $1, (%esp)             /* CF=1 in the image */
	pushl %cs
	pushl $1f
	iret
1:	pushfl
	popl %eax
	popfl
	ret

/* uint32_t asm_lret(void): "lret" and "lret $8" back to the next
 * instruction; returns the ESP difference (0 when balanced) */
	.globl asm_lret
asm_lret:
	movl %esp, %edx
	pushl %cs
	pushl $1f
	lret
1:	pushl $0xDEAD0001          /* two parameters that lret $8 drops */
	pushl $0xDEAD0002
	pushl %cs
	pushl $2f
	lret $8
2:	movl %edx, %eax
	subl %esp, %eax
	ret

/* void asm_far(uint32_t out[6]) */
	.globl asm_far
asm_far:
	pushl %ebx
	movl 8(%esp), %ebx
	/* direct far jmp to the alias code selector and back */
	ljmp $SEL_CODE2, $1f
1:	xorl %eax, %eax
	movw %cs, %ax
	movl %eax, 0(%ebx)
	ljmp $0x08, $2f
2:	xorl %eax, %eax
	movw %cs, %ax
	movl %eax, 4(%ebx)
	/* direct far call: callee reports its CS and the CS it must return to */
	lcall $SEL_CODE2, $far_callee
	movl %eax, 8(%ebx)
	movl %edx, 12(%ebx)
	/* far jmp and far call through a far pointer in memory */
	movl $3f, far_ptr
	movw $SEL_CODE2, far_ptr + 4
	ljmp *far_ptr
3:	xorl %eax, %eax
	movw %cs, %ax
	movl %eax, 16(%ebx)
	movl $4f, far_ptr
	movw $0x08, far_ptr + 4
	ljmp *far_ptr
4:	movl $far_callee, far_ptr
	movw $SEL_CODE2, far_ptr + 4
	lcall *far_ptr
	movl %eax, 20(%ebx)
	popl %ebx
	ret

/* Far callee: EAX = its own CS, EDX = the caller's CS from the stack.
 * Also called from C inline asm in main.c. */
	.globl kinds_far_callee
kinds_far_callee:
far_callee:
	xorl %eax, %eax
	movw %cs, %ax
	movl 4(%esp), %edx
	andl $0xFFFF, %edx
	lret

/* void asm_lxs(uint32_t out[8]): lds, les, lfs, lgs, lss from memory */
	.globl asm_lxs
asm_lxs:
	pushl %ebx
	pushl %esi
	movl 12(%esp), %ebx
	/* lds: offset 4 into the based segment; read through it; restore ds */
	pushl %ds
	lds fp_segbuf, %esi
	movl (%esi), %ecx          /* ds:4 = seg_buf[1] */
	movw %ds, %ax
	popl %ds
	movl %ecx, 0(%ebx)
	andl $0xFFFF, %eax
	movl %eax, 4(%ebx)
	/* les with the flat selector, then check the offset landed too */
	pushl %es
	les fp_flat, %ecx
	movw %es, %ax
	popl %es
	andl $0xFFFF, %eax
	movl %eax, 8(%ebx)
	movl %ecx, 12(%ebx)
	/* lfs / lgs with the based segment */
	lfs fp_segbuf, %ecx
	movl %fs:(%ecx), %eax
	movl %eax, 16(%ebx)
	lgs fp_segbuf, %ecx
	movl %gs:-4(%ecx), %eax    /* gs:0 = seg_buf[0] */
	movl %eax, 20(%ebx)
	movw $0x10, %ax
	movw %ax, %fs
	movw %ax, %gs
	/* lss: switch to another stack, push there, switch back */
	movl %esp, fp_stack_back
	movw %ss, fp_stack_back + 4
	lss fp_alt_stack, %esp
	pushl $0xA175AC00
	movl %esp, %eax
	lss fp_stack_back, %esp
	movl %eax, 24(%ebx)
	movl alt_stack_top - 4, %eax
	movl %eax, 28(%ebx)
	popl %esi
	popl %ebx
	ret

	.section .data
	.balign 4
far_ptr:
	.long 0
	.word 0
	.balign 4
fp_segbuf:
	.long 4
	.word SEL_SEGBUF
	.balign 4
fp_flat:
	.long 0x00C0FFEE
	.word 0x10
	.balign 4
fp_alt_stack:
	.long alt_stack_top
	.word 0x10
	.balign 4
fp_stack_back:
	.long 0
	.word 0

	.section .bss
	.balign 16
	.globl alt_stack, alt_stack_top
alt_stack:
	.skip 1024
alt_stack_top:

	.section .note.GNU-stack, "", @progbits
