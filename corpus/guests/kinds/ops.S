/*
 * kinds/ops.S: sensitive and privileged instructions in hand-written
 * assembly.  Every routine follows the cdecl convention (EBX, ESI, EDI, EBP
 * preserved) and returns what it observed; main.c checks the values.
 */
#include "kinds.h"

#define ARG(n) (4 + 4 * (n))(%esp)

	.section .text

/* ---- cli / sti --------------------------------------------------------- */
/* uint32_t asm_cli_sti(void): bit 0 = IF after cli, bit 1 = IF after sti */
	.globl asm_cli_sti
asm_cli_sti:
	cli
	pushfl
	popl %ecx
	shrl $9, %ecx
	andl $1, %ecx
	sti
	pushfl
	popl %eax
	cli
	shrl $8, %eax
	andl $2, %eax
	orl %ecx, %eax
	ret

/* ---- pushf / popf ------------------------------------------------------ */
/* uint32_t asm_popf_roundtrip(uint32_t v): popf v, return pushf; flags restored */
	.globl asm_popf_roundtrip
asm_popf_roundtrip:
	pushfl
	pushl 8(%esp)
	popfl
	pushfl
	popl %eax
	popfl
	ret

/* ---- in / out ---------------------------------------------------------- */
/* void asm_port_io(uint32_t out[5]) */
	.globl asm_port_io
asm_port_io:
	movl ARG(0), %ecx
	/* byte, imm8: master IMR */
	movb $0xA5, %al
	outb %al, $0x21
	xorl %eax, %eax
	inb $0x21, %al
	movl %eax, 0(%ecx)
	/* byte, dx: CMOS nvram 0x4f */
	movw $0x70, %dx
	movb $0x4F, %al
	outb %al, %dx
	movw $0x71, %dx
	movb $0x3C, %al
	outb %al, %dx
	movw $0x70, %dx
	movb $0x4F, %al
	outb %al, %dx
	movw $0x71, %dx
	xorl %eax, %eax
	inb %dx, %al
	movl %eax, 4(%ecx)
	/* word, imm8: OCW3 "read ISR" + master IMR */
	movw $0x960B, %ax
	outw %ax, $0x20
	xorl %eax, %eax
	inw $0x20, %ax
	movl %eax, 8(%ecx)
	/* word, dx: the same on the slave */
	movw $0xA0, %dx
	movw $0x690B, %ax
	outw %ax, %dx
	xorl %eax, %eax
	inw %dx, %ax
	movl %eax, 12(%ecx)
	/* dword, dx: COM1 with DLAB=1 is DLL, DLM, IIR/FCR, LCR */
	movw $0x3FB, %dx
	movb $0x83, %al
	outb %al, %dx
	movw $0x3F8, %dx
	inl %dx, %eax
	movl %eax, 16(%ecx)
	movl $0x03C70001, %eax
	outl %eax, %dx
	/* back to rest: all masked, OCW3 reads IRR */
	movb $0xFF, %al
	outb %al, $0x21
	outb %al, $0xA1
	movb $0x0A, %al
	outb %al, $0x20
	outb %al, $0xA0
	ret

/* ---- ins / outs -------------------------------------------------------- */
/* void asm_string_io(uint32_t out[4]) */
	.globl asm_string_io
asm_string_io:
	pushl %esi
	pushl %edi
	pushl %ebx
	movl 16(%esp), %ebx
	cld
	/* outsb / insb, no rep, master IMR */
	leal sio_src, %esi
	leal sio_dst, %edi
	movw $0x21, %dx
	outsb
	insb
	movzbl sio_dst, %eax
	movl %eax, 0(%ebx)
	/* rep outsb (3 bytes, last wins) / rep insb (4 bytes), slave IMR */
	leal sio_src, %esi
	leal sio_dst, %edi
	movw $0xA1, %dx
	movl $3, %ecx
	rep outsb
	movl $4, %ecx
	rep insb
	movl sio_dst, %eax
	movl %eax, 4(%ebx)
	/* outsw / insw at 0x20: OCW3 + IMR */
	leal sio_w, %esi
	leal sio_dst, %edi
	movw $0x20, %dx
	outsw
	insw
	movzwl sio_dst, %eax
	movl %eax, 8(%ebx)
	/* rep outsl / rep insl at 0x3f8 with DLAB=1 */
	movw $0x3FB, %dx
	movb $0x83, %al
	outb %al, %dx
	leal sio_l, %esi
	leal sio_dst, %edi
	movw $0x3F8, %dx
	movl $2, %ecx
	rep outsl
	movl $2, %ecx
	rep insl
	movl $0x03C70001, %eax
	outl %eax, %dx
	movl sio_dst + 4, %eax
	movl %eax, 12(%ebx)
	/* rest */
	movb $0xFF, %al
	outb %al, $0x21
	outb %al, $0xA1
	movb $0x0A, %al
	outb %al, $0x20
	popl %ebx
	popl %edi
	popl %esi
	ret

	.section .data
sio_src:
	.byte 0xE7, 0x42, 0xBD, 0x00
sio_w:
	.word 0x5A0B
	.balign 4
sio_l:
	.long 0x83C70001, 0x83C70001
sio_dst:
	.long 0, 0
	.section .text

/* ---- control registers ------------------------------------------------- */
/* uint32_t asm_cr0_rewrite(void): read CR0, write it back, read again */
	.globl asm_cr0_rewrite
asm_cr0_rewrite:
	movl %cr0, %eax
	movl %eax, %cr0
	movl %cr0, %eax
	ret

/* uint32_t asm_cr2_rt(uint32_t v) and friends: write v, return the read-back */
	.globl asm_cr2_rt
asm_cr2_rt:
	movl ARG(0), %eax
	movl %eax, %cr2
	xorl %eax, %eax
	movl %cr2, %eax
	ret

	.globl asm_cr3_rt
asm_cr3_rt:
	movl ARG(0), %eax
	movl %eax, %cr3
	xorl %eax, %eax
	movl %cr3, %eax
	ret

	.globl asm_cr4_rt
asm_cr4_rt:
	movl ARG(0), %eax
	movl %eax, %cr4
	xorl %eax, %eax
	movl %cr4, %eax
	ret

/* ---- debug registers --------------------------------------------------- */
/* void asm_dr_rt(const uint32_t in[5], uint32_t out[5]): DR0-3, DR7 */
	.globl asm_dr_rt
asm_dr_rt:
	movl ARG(0), %ecx
	movl ARG(1), %edx
	movl 0(%ecx), %eax
	movl %eax, %dr0
	movl 4(%ecx), %eax
	movl %eax, %dr1
	movl 8(%ecx), %eax
	movl %eax, %dr2
	movl 12(%ecx), %eax
	movl %eax, %dr3
	movl 16(%ecx), %eax
	movl %eax, %dr7
	movl %dr0, %eax
	movl %eax, 0(%edx)
	movl %dr1, %eax
	movl %eax, 4(%edx)
	movl %dr2, %eax
	movl %eax, 8(%edx)
	movl %dr3, %eax
	movl %eax, 12(%edx)
	movl %dr7, %eax
	movl %eax, 16(%edx)
	ret

/* ---- segment registers ------------------------------------------------- */
/* void asm_seg_regs(uint32_t out[10]) */
	.globl asm_seg_regs
asm_seg_regs:
	pushl %ebx
	movl 8(%esp), %ebx
	/* mov to/from: fs with a based segment, gs with the null selector */
	movw $SEL_SEGBUF, %ax
	movw %ax, %fs
	movl %fs:0, %eax
	movl %eax, 0(%ebx)
	xorl %eax, %eax
	movl %fs, %eax             /* 32-bit form: upper bits read as 0 */
	movl %eax, 4(%ebx)
	xorl %eax, %eax
	movw %ax, %gs
	movl $0xFFFFFFFF, %eax
	movw %gs, %ax
	movl %eax, 8(%ebx)
	/* ds through a based segment, briefly */
	pushl %ds
	movl $SEL_SEGBUF, %eax
	movl %eax, %ds
	movl 4, %ecx               /* ds:4 = seg_buf[1] */
	popl %ds
	movl %ecx, 12(%ebx)
	/* push/pop: pushl %ds; popl %es, and the ESP step of a 32-bit push */
	movl %esp, %edx
	pushl %ds
	subl %esp, %edx
	movl %edx, 16(%ebx)
	popl %es
	xorl %eax, %eax
	movw %es, %ax
	movl %eax, 20(%ebx)
	/* pushw/popw: 16-bit forms, ESP step 2 */
	movl %esp, %edx
	pushw %fs
	subl %esp, %edx
	popw %gs
	movl %edx, 24(%ebx)
	xorl %eax, %eax
	movw %gs, %ax
	movl %eax, 28(%ebx)
	/* ss: push/pop and mov, both the same selector */
	pushl %ss
	popl %ss
	movw %ss, %ax
	movw %ax, %ss
	xorl %eax, %eax
	movw %ss, %ax
	movl %eax, 32(%ebx)
	/* push %cs */
	pushl %cs
	popl %eax
	andl $0xFFFF, %eax
	movl %eax, 36(%ebx)
	/* back to the flat data selector */
	movw $0x10, %ax
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	popl %ebx
	ret

/* ---- descriptor-table registers ---------------------------------------- */
	.globl asm_sgdt, asm_sidt, asm_lgdt, asm_lidt
asm_sgdt:
	movl ARG(0), %eax
	sgdt (%eax)
	ret
asm_sidt:
	movl ARG(0), %eax
	sidt (%eax)
	ret
asm_lgdt:
	movl ARG(0), %eax
	lgdt (%eax)
	ret
asm_lidt:
	movl ARG(0), %eax
	lidt (%eax)
	ret

/* uint32_t asm_read_fs0(uint16_t sel): load fs, read fs:0, reload flat fs */
	.globl asm_read_fs0
asm_read_fs0:
	movl ARG(0), %eax
	movw %ax, %fs
	movl %fs:0, %eax
	movw $0x10, %cx
	movw %cx, %fs
	ret

/* void asm_ldt(uint32_t out[3]): lldt, sldt, a load through the LDT, lldt 0 */
	.globl asm_ldt
asm_ldt:
	movl ARG(0), %ecx
	movw $SEL_LDT, %ax
	lldt %ax
	xorl %eax, %eax
	sldt %ax
	movl %eax, 0(%ecx)
	movw $SEL_LDT_DATA, %ax
	movw %ax, %fs
	movl %fs:0, %eax
	movl %eax, 4(%ecx)
	movw $0x10, %ax
	movw %ax, %fs
	xorl %eax, %eax
	lldt %ax
	movl $0xFFFF, %eax
	sldt %ax
	movl %eax, 8(%ecx)
	ret

/* void asm_ltr(uint16_t sel) and uint32_t asm_str(void) */
	.globl asm_ltr, asm_str
asm_ltr:
	movl ARG(0), %eax
	ltr %ax
	ret
asm_str:
	xorl %eax, %eax
	str %ax
	ret

/* ---- machine status word, clts ---------------------------------------- */
/* void asm_msw(uint32_t out[4]) */
	.globl asm_msw
asm_msw:
	movl ARG(0), %ecx
	smsw %eax                  /* register form */
	lmsw %ax                   /* write back the same value */
	movl %eax, 0(%ecx)
	movl $0, 4(%ecx)
	smsw 4(%ecx)               /* memory form: 16 bits */
	orw $8, %ax                /* lmsw can set TS ... */
	lmsw %ax
	movl %cr0, %eax
	movl %eax, 8(%ecx)
	clts                       /* ... and clts clears it */
	movl %cr0, %eax
	movl %eax, 12(%ecx)
	ret

/* ---- cache and TLB ----------------------------------------------------- */
/* void asm_cache_ops(void): invlpg, wbinvd, then invd right after wbinvd so
 * no dirty line can be lost on real hardware. */
	.globl asm_cache_ops
asm_cache_ops:
	invlpg 0x1000
	movl $0x2000, %eax
	invlpg (%eax)
	wbinvd
	invd
	ret

/* ---- hlt --------------------------------------------------------------- */
/* void asm_hlt_wait(volatile uint32_t *ticks, uint32_t n): sti;hlt until n more */
	.globl asm_hlt_wait
asm_hlt_wait:
	movl ARG(0), %ecx
	movl (%ecx), %edx
	addl ARG(1), %edx
1:	movl (%ecx), %eax
	cmpl %edx, %eax
	jae 2f
	sti
	hlt
	cli
	jmp 1b
2:	ret

/* ---- software interrupts ----------------------------------------------- */
/* void asm_soft_ints(uint32_t out[6]) */
	.globl asm_soft_ints
asm_soft_ints:
	movl ARG(0), %ecx
	movl $0x4000, %eax
	int $VEC_SOFT              /* the handler adds 1 to the saved EAX */
	movl %eax, 0(%ecx)
	int3
.Lafter_int3:
	movl $.Lafter_int3, 4(%ecx)
	int $3
.Lafter_int_3:
	movl $.Lafter_int_3, 8(%ecx)
	movl $0x7FFFFFFF, %eax
	addl $1, %eax              /* OF=1 */
	into
.Lafter_into:
	movl $.Lafter_into, 12(%ecx)
	xorl %eax, %eax            /* OF=0: into does nothing */
	into
	ret

/* ---- cpuid, msr, tsc ----------------------------------------------------- */
/* void asm_cpuid0(uint32_t out[4]): eax, ebx, edx, ecx of leaf 0 */
	.globl asm_cpuid0
asm_cpuid0:
	pushl %ebx
	pushl %edi
	movl 12(%esp), %edi
	xorl %eax, %eax
	xorl %ecx, %ecx
	cpuid
	movl %eax, 0(%edi)
	movl %ebx, 4(%edi)
	movl %edx, 8(%edi)
	movl %ecx, 12(%edi)
	popl %edi
	popl %ebx
	ret

/* uint32_t asm_msr_rt(uint32_t msr, uint32_t lo): wrmsr lo:0, return rdmsr lo
 * (0xFFFFFFFF if the high half did not read back as 0) */
	.globl asm_msr_rt
asm_msr_rt:
	movl ARG(0), %ecx
	movl ARG(1), %eax
	xorl %edx, %edx
	wrmsr
	xorl %eax, %eax
	movl $0x1234, %edx
	rdmsr
	testl %edx, %edx
	jz 1f
	movl $0xFFFFFFFF, %eax
1:	ret

/* void asm_rdtsc2(uint32_t out[4]): two rdtsc results, lo/hi each */
	.globl asm_rdtsc2
asm_rdtsc2:
	movl ARG(0), %ecx
	pushl %ecx
	rdtsc
	popl %ecx
	movl %eax, 0(%ecx)
	movl %edx, 4(%ecx)
	pushl %ecx
	rdtsc
	popl %ecx
	movl %eax, 8(%ecx)
	movl %edx, 12(%ecx)
	ret

/* ---- lar, lsl, verr, verw, arpl ----------------------------------------- */
/* uint32_t asm_lar(uint32_t sel, uint32_t *zf) */
	.globl asm_lar
asm_lar:
	movl ARG(0), %ecx
	xorl %eax, %eax
	lar %ecx, %eax
	setz %cl
	movzbl %cl, %ecx
	movl ARG(1), %edx
	movl %ecx, (%edx)
	ret

/* uint32_t asm_lsl(uint32_t sel, uint32_t *zf) */
	.globl asm_lsl
asm_lsl:
	movl ARG(0), %ecx
	xorl %eax, %eax
	lsl %ecx, %eax
	setz %cl
	movzbl %cl, %ecx
	movl ARG(1), %edx
	movl %ecx, (%edx)
	ret

/* uint32_t asm_verr(uint16_t sel), asm_verw(uint16_t sel): ZF as 0/1 */
	.globl asm_verr, asm_verw
asm_verr:
	xorl %eax, %eax
	verr ARG(0)
	setz %al
	ret
asm_verw:
	movl ARG(0), %ecx
	xorl %eax, %eax
	verw %cx
	setz %al
	ret

/* uint32_t asm_arpl(uint16_t dst, uint16_t src): (ZF << 16) | adjusted dst */
	.globl asm_arpl
asm_arpl:
	movl ARG(0), %eax
	movl ARG(1), %ecx
	arpl %cx, %ax
	setz %dl
	andl $0xFFFF, %eax
	movzbl %dl, %edx
	shll $16, %edx
	orl %edx, %eax
	ret

	.section .note.GNU-stack, "", @progbits
