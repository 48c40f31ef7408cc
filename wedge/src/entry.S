/*
 * Entry points of the wedge.
 *
 * Site entries.  A patched site does "call w_x" followed by argument bytes.
 * The stub saves everything the guest could see change (flags, every GPR,
 * DS and ES), switches DS/ES to the hypervisor's flat data segment (the
 * guest's may be based), and calls the C handler with a pointer to the
 * saved state (struct frame).  A handler that returns resumes the guest at
 * frame->ret (it skips the argument bytes it read); one that must change
 * the stack or CS leaves through wedge_exit instead.
 *
 * wedge_exit: vcpu.exit_frame holds ES, DS and a pushal image; vcpu.exit_esp
 * and exit_ss name the stack, where an iret frame (EIP, CS, EFLAGS, and ESP,
 * SS for a return to ring 3) has been written.  "lss; iret" switches stack
 * and jumps in one go, with every register exactly as the guest expects.
 *
 * How the hypervisor enters the wedge (traps, event upcalls, boot) is in
 * bounce.S, which a backend may replace.
 */
#include "wedge_abi.h"

#define EFL_IF 0x200
#define EFL_SYS 0x7000			/* IOPL and NT */
#define EFL_RF 0x10000
#define EFL_VM 0x20000

	.text

	.macro ENTRY name, handler, index
	.globl \name
	.type \name, @function
\name:
	pushfl
	pushal
	pushl %ds
	pushl %es
	cld				/* the C ABI wants DF=0; the guest's is saved */
	movl $HYP_DS, %eax
	movw %ax, %ds
	movw %ax, %es
	incl vcpu + VCPU_OFF_DEPTH
	incl vcpu + VCPU_OFF_COUNTERS + 4 * \index
	movl FRAME_OFF_RET(%esp), %eax
	movl %eax, vcpu + VCPU_OFF_SITE_RET
	movl %esp, vcpu + VCPU_OFF_FRAME
	pushl %esp
	call \handler
	addl $4, %esp
	decl vcpu + VCPU_OFF_DEPTH
	popl %es
	popl %ds
	popal
	popfl
	ret
	.size \name, . - \name
	.endm

	/* The last argument is the entry's slot in vcpu.counters: its index in
	 * wedge.ENTRY_POINTS (tests/test_wedge.py checks). */
	ENTRY w_pending,  h_pending,  0
	ENTRY w_io,       h_io,       3
	ENTRY w_movcr,    h_movcr,    4
	ENTRY w_sreg,     h_sreg,     5
	ENTRY w_sreg_m,   h_sreg_m,   6
	ENTRY w_pushseg,  h_pushseg,  7
	ENTRY w_popseg,   h_popseg,   8
	ENTRY w_dtr,      h_dtr,      9
	ENTRY w_sys,      h_sys,      10
	ENTRY w_sys_m,    h_sys_m,    11
	ENTRY w_lar,      h_lar,      12
	ENTRY w_lar_m,    h_lar_m,    13
	ENTRY w_arpl,     h_arpl,     14
	ENTRY w_arpl_m,   h_arpl_m,   15
	ENTRY w_misc,     h_misc,     16
	ENTRY w_invlpg,   h_invlpg,   17
	ENTRY w_iret,     h_iret,     18
	ENTRY w_lret,     h_lret,     19
	ENTRY w_far,      h_far,      20
	ENTRY w_far_m,    h_far_m,    21
	ENTRY w_lxs,      h_lxs,      22
	ENTRY w_int,      h_int,      23
	ENTRY w_int3,     h_int3,     24
	ENTRY w_into,     h_into,     25
	ENTRY w_pushf16,  h_pushf16,  26
	ENTRY w_popf16,   h_popf16,   27
	ENTRY w_popf_slow, h_popf,    2		/* w_popf with an interrupt to deliver */

/*
 * MEMCALL entries for instructions with a segment override: note that one
 * more argument byte follows the descriptor, then take the normal entry.
 */
	.macro SEGENTRY name
	.globl \name\()_seg
	.type \name\()_seg, @function
\name\()_seg:
	movl $1, %ss:vcpu + VCPU_OFF_MEMCALL_SEG
	jmp \name
	.size \name\()_seg, . - \name\()_seg
	.endm

	SEGENTRY w_sreg_m
	SEGENTRY w_dtr
	SEGENTRY w_sys_m
	SEGENTRY w_lar_m
	SEGENTRY w_arpl_m
	SEGENTRY w_invlpg
	SEGENTRY w_far_m
	SEGENTRY w_lxs

/*
 * Fast paths for the commonest call sites, 32-bit pushf and popf (Linux's
 * irqsave/irqrestore): a dozen instructions on the guest's stack, no C
 * frame, no segment loads.  Everything the wedge owns is reached through
 * SS (the guest's DS may be based; its SS is flat).  The virtual IF's place
 * and values are the backend's (BE_VIF_* in wedge_abi.h).
 */
	.macro FAST name, index
	.globl \name
	.type \name, @function
	.set .Lcount_\name, vcpu + VCPU_OFF_COUNTERS + 4 * \index
\name:
	.endm

	/* pushf: push the virtual EFLAGS (the real ones with IF, IOPL and NT
	 * replaced by their virtual values).  [esp] = return address. */
	FAST w_pushf, 1
	pushl %eax
	pushfl				/* [esp] real flags, [esp+4] eax, [esp+8] return */
	incl %ss:.Lcount_w_pushf
	movl (%esp), %eax
	andl $~(EFL_IF | EFL_SYS), %eax
	orl %ss:vcpu + VCPU_OFF_EFLAGS_SYS, %eax
	cmpb $BE_VIF_OFF, %ss:BE_VIF_ADDR
	je 1f
	orl $EFL_IF, %eax
1:	xchgl %eax, 8(%esp)		/* the pushed word, where the return address was */
	xchgl %eax, 4(%esp)		/* the return address above the real flags; eax back */
	popfl
	ret
	.size w_pushf, . - w_pushf

	/* popf: the popped word's IF, IOPL and NT become virtual, the rest
	 * real.  If IF comes on with an interrupt waiting, the C path delivers
	 * it.  [esp] = return address, [esp+4] = the word to pop. */
	FAST w_popf, 2
	testl $EFL_IF, 4(%esp)		/* flags are free: popf replaces them all */
	jz 1f
	cmpl $w_ret, %ss:vcpu + VCPU_OFF_PENDING_ENTRY
	jne w_popf_slow
1:	pushl %eax
	incl %ss:.Lcount_w_popf
	movl 8(%esp), %eax
	andl $EFL_SYS, %eax
	movl %eax, %ss:vcpu + VCPU_OFF_EFLAGS_SYS
	movl 8(%esp), %eax
	testl $EFL_IF, %eax
	jz 2f
	movb $BE_VIF_ON, %ss:BE_VIF_ADDR
	jmp 3f
2:	movb $BE_VIF_OFF, %ss:BE_VIF_ADDR
3:	andl $~(EFL_IF | EFL_SYS | EFL_RF | EFL_VM), %eax
	orl $(EFL_IF | 2), %eax		/* the real IF stays on */
	xchgl %eax, 4(%esp)		/* real flags where the return address was */
	xchgl %eax, 8(%esp)		/* the return address where the word was */
	popl %eax
	popfl
	ret
	.size w_popf, . - w_popf

	/* What sti patches call while nothing is pending. */
	.globl w_ret
	.type w_ret, @function
w_ret:
	ret
	.size w_ret, . - w_ret

	.globl wedge_exit
	.type wedge_exit, @function
wedge_exit:
	movl $(vcpu + VCPU_OFF_EXIT_FRAME), %esp
	decl vcpu + VCPU_OFF_DEPTH
	popl %es
	popl %ds
	popal
	lss %ss:(vcpu + VCPU_OFF_EXIT_ESP), %esp
	iret
	.size wedge_exit, . - wedge_exit

	/* The stack the hypervisor boots the vCPU on. */
	.bss
	.align 16
	.globl boot_stack_top
boot_stack:
	.skip 8192
boot_stack_top:

	.section .note.GNU-stack, "", @progbits
