/*
 * How the monitor brings the VM thread into the wedge: ExchangeRegisters
 * moves its IP here, leaving its stack where it was, and the shared page
 * holds the guest-visible frame of the interrupted context (EIP, CS,
 * EFLAGS), the trap information word and the error code
 * (backends/l4/abi.py SHARED).  These stubs push that frame as the default
 * bounce frame would be pushed, then take the common path.  They replace
 * the weak defaults of wedge/src/bounce.S.
 */
#include "wedge_abi.h"
#include "l4_abi.h"

#define S(field) %ss:(L4_SHARED + L4_SHARED_##field)

	.text

	.globl w_trap
	.type w_trap, @function
w_trap:
	pushl S(ENTRY_EFLAGS)
	pushl S(ENTRY_CS)
	pushl S(ENTRY_EIP)
	testl $TRAP_HAS_ERROR, S(ENTRY_INFO)	/* the frame holds the guest's flags */
	jz 1f
	pushl S(ENTRY_ERROR)
1:	pushl S(ENTRY_INFO)
	jmp wedge_trap_entry
	.size w_trap, . - w_trap

	.globl w_upcall
	.type w_upcall, @function
w_upcall:
	pushl S(ENTRY_EFLAGS)
	pushl S(ENTRY_CS)
	pushl S(ENTRY_EIP)
	pushl $UPCALL_INFO
	jmp wedge_trap_entry
	.size w_upcall, . - w_upcall

	.section .note.GNU-stack, "", @progbits
