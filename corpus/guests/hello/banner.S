/* hello/banner.S: a second source file in assembly, printing through the
 * C library to show that asm and C objects link together. */

	.section .rodata
msg:
	.asciz "greetings from assembly\n"

	.section .text
	.globl greet_banner
	.type greet_banner, @function
greet_banner:
	pushl $msg
	call print_str
	addl $4, %esp
	ret
	.size greet_banner, . - greet_banner

	.section .note.GNU-stack, "", @progbits
