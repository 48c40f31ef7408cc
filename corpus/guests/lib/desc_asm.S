/* Loading descriptor tables. */

	.section .text
	.globl gdt_load
	.type gdt_load, @function
/* void gdt_load(const struct dtr *d): lgdt, then reload CS and data segments. */
gdt_load:
	movl 4(%esp), %eax
	lgdt (%eax)
	ljmp $0x08, $1f
1:	movl $0x10, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %fs
	movl %eax, %gs
	movl %eax, %ss
	ret
	.size gdt_load, . - gdt_load

	.globl idt_load
	.type idt_load, @function
idt_load:
	movl 4(%esp), %eax
	lidt (%eax)
	ret
	.size idt_load, . - idt_load

	.section .note.GNU-stack, "", @progbits
