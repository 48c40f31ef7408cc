/* paging/paging_asm.S: control-register sequences and a string store. */

	.section .text

/* void paging_enable(uint32_t pd_phys): load CR3, then set CR0.PG. */
	.globl paging_enable
	.type paging_enable, @function
paging_enable:
	movl 4(%esp), %eax
	movl %eax, %cr3
	movl %cr0, %eax
	orl $0x80000000, %eax
	movl %eax, %cr0
	jmp 1f                     /* serialize after the mode change */
1:	ret
	.size paging_enable, . - paging_enable

/* void paging_disable(void): clear CR0.PG (runs from identity-mapped code). */
	.globl paging_disable
	.type paging_disable, @function
paging_disable:
	movl %cr0, %eax
	andl $0x7FFFFFFF, %eax
	movl %eax, %cr0
	jmp 1f
1:	ret
	.size paging_disable, . - paging_disable

/* void flush_tlb(void): reload CR3 with its own value. */
	.globl flush_tlb
	.type flush_tlb, @function
flush_tlb:
	movl %cr3, %eax
	movl %eax, %cr3
	ret
	.size flush_tlb, . - flush_tlb

/* void asm_invlpg(uint32_t va) */
	.globl asm_invlpg
	.type asm_invlpg, @function
asm_invlpg:
	movl 4(%esp), %eax
	invlpg (%eax)
	ret
	.size asm_invlpg, . - asm_invlpg

/*
 * uint32_t rep_stosl(uint32_t *dst, uint32_t value, uint32_t count, uint32_t **end)
 * "rep stosl"; a #PF in the middle must resume with the remaining count.
 * Returns ECX after the instruction (0), stores the final EDI in *end.
 */
	.globl rep_stosl
	.type rep_stosl, @function
rep_stosl:
	pushl %edi
	movl 8(%esp), %edi
	movl 12(%esp), %eax
	movl 16(%esp), %ecx
	cld
	rep stosl
	movl 20(%esp), %edx
	movl %edi, (%edx)
	movl %ecx, %eax
	popl %edi
	ret
	.size rep_stosl, . - rep_stosl

	.section .note.GNU-stack, "", @progbits
