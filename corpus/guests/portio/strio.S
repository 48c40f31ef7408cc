/* portio/strio.S: string port I/O helpers (ins/outs, with and without rep). */

	.section .text

/* Common prologue: port -> edx, buffer -> esi or edi, count -> ecx. */
.macro STRIO_OUT name, insn
	.globl \name
	.type \name, @function
/* void name(uint16_t port, const void *buf, uint32_t count) */
\name:
	pushl %esi
	movl 8(%esp), %edx
	movl 12(%esp), %esi
	movl 16(%esp), %ecx
	cld
	rep \insn
	popl %esi
	ret
	.size \name, . - \name
.endm

.macro STRIO_IN name, insn
	.globl \name
	.type \name, @function
/* void name(uint16_t port, void *buf, uint32_t count) */
\name:
	pushl %edi
	movl 8(%esp), %edx
	movl 12(%esp), %edi
	movl 16(%esp), %ecx
	cld
	rep \insn
	popl %edi
	ret
	.size \name, . - \name
.endm

	STRIO_OUT rep_outsb, outsb
	STRIO_OUT rep_outsw, outsw
	STRIO_OUT rep_outsl, outsl
	STRIO_IN  rep_insb, insb
	STRIO_IN  rep_insw, insw
	STRIO_IN  rep_insl, insl

/* uint32_t insb_down(uint16_t port, uint8_t *last, uint32_t count)
 * "std; rep insb": fills count bytes downwards ending at *last; returns the
 * final EDI (last - count). */
	.globl insb_down
	.type insb_down, @function
insb_down:
	pushl %edi
	movl 8(%esp), %edx
	movl 12(%esp), %edi
	movl 16(%esp), %ecx
	std
	rep insb
	cld
	movl %edi, %eax
	popl %edi
	ret
	.size insb_down, . - insb_down

/* uint32_t outsb_insb_once(uint16_t port, const uint8_t *src, uint8_t *dst)
 * One outsb and one insb without rep; returns (esi_advance << 8) | edi_advance. */
	.globl outsb_insb_once
	.type outsb_insb_once, @function
outsb_insb_once:
	pushl %esi
	pushl %edi
	movl 12(%esp), %edx
	movl 16(%esp), %esi
	movl 20(%esp), %edi
	cld
	outsb
	insb
	movl %esi, %eax
	subl 16(%esp), %eax
	shll $8, %eax
	movl %edi, %ecx
	subl 20(%esp), %ecx
	orl %ecx, %eax
	popl %edi
	popl %esi
	ret
	.size outsb_insb_once, . - outsb_insb_once

	.section .note.GNU-stack, "", @progbits
