/* Multiboot v1 header and the common entry point of every guest. */

#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* page-align modules, want memory info; no a.out kludge */

	.section .multiboot, "a"
	.balign 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.section .bss
	.balign 16
	.globl boot_stack, boot_stack_top
boot_stack:
	.skip 16384
boot_stack_top:

	.section .data
	.balign 4
	.globl mb_magic, mb_info
mb_magic:
	.long 0
mb_info:
	.long 0

	.section .text
	.globl _start
	.type _start, @function
_start:
	cli
	movl $boot_stack_top, %esp
	movl %eax, mb_magic
	movl %ebx, mb_info
	pushl $0x00000002          /* known EFLAGS: IF=0, DF=0, IOPL=0, NT=0 */
	popfl
	xorl %ebp, %ebp
	xorl %edx, %edx
	cmpl $0x2BADB002, %eax
	sete %dl                   /* edx = 1 if the loader was multiboot */
	pushl %edx
	call lib_main              /* lib_main(magic_ok) never returns */
1:	cli
	hlt
	jmp 1b
	.size _start, . - _start

	.section .note.GNU-stack, "", @progbits
