/* ring3/entry.S: the drop to CPL3 and the user side's assembly pieces. */

#define SEL_UCODE 0x1B
#define SEL_UDATA 0x23

	.section .text

/* void enter_user(void (*entry)(void), uint32_t user_esp)
 * Builds an inter-privilege iret frame: SS, ESP, EFLAGS (IF=1, IOPL=0), CS, EIP. */
	.globl enter_user
	.type enter_user, @function
enter_user:
	movl 4(%esp), %ecx         /* entry */
	movl 8(%esp), %edx         /* user stack */
	movl $SEL_UDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	pushl $SEL_UDATA           /* SS */
	pushl %edx                 /* ESP */
	pushl $0x00000202          /* EFLAGS: IF=1, IOPL=0 */
	pushl $SEL_UCODE           /* CS */
	pushl %ecx                 /* EIP */
	iret
	.size enter_user, . - enter_user

/* First user-mode instructions: clear the frame pointer and run user_main.
 * If it ever returns, exit with code 99. */
	.globl user_start
	.type user_start, @function
user_start:
	xorl %ebp, %ebp
	call user_main
	movl $2, %eax
	movl $99, %ebx
	int $0x80
1:	jmp 1b
	.size user_start, . - user_start

/* uint32_t sys_write_asm(const char *s): the write syscall from assembly. */
	.globl sys_write_asm
	.type sys_write_asm, @function
sys_write_asm:
	pushl %ebx
	movl $1, %eax
	movl 8(%esp), %ebx
	int $0x80
	popl %ebx
	ret
	.size sys_write_asm, . - sys_write_asm

	.section .note.GNU-stack, "", @progbits
