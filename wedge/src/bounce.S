/*
 * The default ways into the wedge from the hypervisor: a "bounce frame" on
 * the guest's stack, as Xen builds one.  These are weak symbols: a backend
 * whose traps arrive otherwise (an IPC message, a signal frame) defines its
 * own w_trap, w_upcall or wedge_start, and the linker takes those instead.
 *
 * w_trap: the hypervisor has pushed the guest-visible interrupt frame (EIP,
 * CS, EFLAGS[, ESP, SS]), an error code where the vector has one, and the
 * trap information word (wedge/layout.py: vector, TRAP_HAS_ERROR,
 * TRAP_SOFTWARE and the instruction length).  w_upcall: an event upcall,
 * with only the frame pushed.  Both end in wedge_trap_entry, which saves the
 * registers and calls wedge_trap(regs, info, frame); that delivers through
 * the guest's IDT and never returns.  A backend's own stubs build the same
 * frame and info word their own way, then jump to wedge_trap_entry.
 *
 * wedge_start: boot.  ESI points at the start info, ESP at boot_stack_top
 * (entry.S).
 */
#include "wedge_abi.h"

	.text

	.weak w_upcall
	.type w_upcall, @function
w_upcall:
	pushl $UPCALL_INFO
	/* fall through */
	.weak w_trap
	.type w_trap, @function
w_trap:
	.globl wedge_trap_entry
wedge_trap_entry:
	pushal
	pushl %ds
	pushl %es
	cld
	movl $HYP_DS, %eax
	movw %ax, %ds
	movw %ax, %es
	incl vcpu + VCPU_OFF_DEPTH
	leal REGS_SIZE + 4(%esp), %eax	/* the interrupt frame, above the info word */
	pushl %eax
	pushl REGS_SIZE + 4(%esp)	/* the info word */
	leal 8(%esp), %eax
	pushl %eax			/* the saved registers */
	call wedge_trap
	ud2
	.size w_trap, . - w_upcall

	.weak wedge_start
	.type wedge_start, @function
wedge_start:
	pushl %esi
	call wedge_boot
	ud2
	.size wedge_start, . - wedge_start

	.section .note.GNU-stack, "", @progbits
