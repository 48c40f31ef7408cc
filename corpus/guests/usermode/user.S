/* usermode/user.S: the user programs and the kernel's entry to ring 3. */

#define SEL_KCODE 0x08
#define SEL_UCODE 0x1B
#define SEL_UDATA 0x23
#define SEL_KDATA 0x10

	.macro REPORT tag		/* report ECX under this tag */
	movl $1, %eax
	movl $\tag, %ebx
	int $0x80
	.endm

	.macro FLAGS			/* ECX = EFLAGS */
	pushfl
	popl %ecx
	.endm

	.text

/* void enter_user(void (*entry)(void), uint32_t user_esp, uint32_t eflags) */
	.globl enter_user
	.type enter_user, @function
enter_user:
	movl 4(%esp), %ecx
	movl 8(%esp), %edx
	movl 12(%esp), %ebx
	movl $SEL_UDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	pushl $SEL_UDATA
	pushl %edx
	pushl %ebx
	pushl $SEL_UCODE
	pushl %ecx
	iret
	.size enter_user, . - enter_user

/* IF=0, IOPL=0 */
	.globl user_iopl0
	.type user_iopl0, @function
user_iopl0:
	FLAGS
	REPORT 1
	pushfl
	orl $0x200, (%esp)
	popfl				/* IF cannot change at IOPL 0 */
	FLAGS
	REPORT 2
	movw $SEL_KDATA, %ax
	movw %ax, %ds			/* #GP(0x10); the handler skips it */
	movw %ds, %cx
	movzwl %cx, %ecx
	REPORT 3
	movl $2, %eax
	int $0x80
1:	jmp 1b
	.size user_iopl0, . - user_iopl0

/* IF=1, IOPL=3 */
	.globl user_iopl3
	.type user_iopl3, @function
user_iopl3:
	cli
	FLAGS
	REPORT 4
	sti
	FLAGS
	REPORT 5
	pushfl
	andl $~0x200, (%esp)
	popfl
	FLAGS
	REPORT 6
	movl $2, %eax
	int $0x80
1:	jmp 1b
	.size user_iopl3, . - user_iopl3

/* void far_jump_through(uint16_t sel): run one instruction in code segment
 * sel, then come back to the kernel's code segment. */
	.globl far_jump_through
	.type far_jump_through, @function
far_jump_through:
	movzwl 4(%esp), %eax
	movl $1f, jump_target
	movw %ax, jump_target + 4
	ljmp *jump_target
1:	ljmp $SEL_KCODE, $2f
2:	ret
	.size far_jump_through, . - far_jump_through

	.data
jump_target: .long 0
	.word 0

	.section .note.GNU-stack, "", @progbits
