"""Every instruction form the table must recognise, per kind (AT&T text).

Used by the table tests (pads recomputed from patch shapes) and by the
annotator tests (annotate, assemble, verify each form).  A kind missing here
fails tests/test_isa.py::test_every_kind_has_forms.
"""

M = "0x12345678(%eax,%ebx,4)"  # the longest ModRM+SIB+disp32 memory operand
# A segment override; the test bench's FS has base 0x100, so this is (%eax)
# only if the override is honoured (Linux has `verw %ds:sym`, `lcall *%cs:sym`).
F = "%fs:-0x100(%eax)"

FORMS: dict[str, list[str]] = {
    "cli": ["cli"],
    "sti": ["sti"],
    "pushf": ["pushfl", "pushfw", "pushf"],
    "popf": ["popfl", "popfw", "popf"],
    "in": ["inb $0x60,%al", "inw $0x60,%ax", "inl $0x60,%eax", "inb %dx,%al", "inw %dx,%ax", "inl %dx,%eax", "in %dx,%al"],
    "out": ["outb %al,$0x80", "outw %ax,$0x80", "outl %eax,$0xf4", "outb %al,%dx", "outw %ax,%dx", "outl %eax,%dx"],
    "ins": ["insb", "insw", "insl", "rep insb", "rep insw", "rep insl"],
    "outs": ["outsb", "outsw", "outsl", "rep outsb", "rep outsw", "rep outsl"],
    "mov_to_cr": ["movl %eax,%cr0", "movl %ebx,%cr2", "movl %ecx,%cr3", "mov %edx,%cr4"],
    "mov_from_cr": ["movl %cr0,%eax", "movl %cr2,%esi", "movl %cr3,%edi", "mov %cr4,%ebp"],
    "mov_to_dr": ["movl %eax,%db0", "movl %ebx,%db7", "mov %ecx,%dr3"],
    "mov_from_dr": ["movl %db6,%eax", "movl %dr7,%ecx"],
    "mov_to_sreg": ["movw %ax,%ds", "movl %eax,%es", "mov %bx,%fs", "movw 4(%esp),%gs", f"movw {M},%ds", "movw %ax,%ss", f"movw {F},%ds"],
    "mov_from_sreg": ["movw %ds,%ax", "movl %es,%eax", "mov %fs,%ebx", f"movw %gs,{M}", "movw %ss,(%esp)", "movw %cs,%ax", f"movw %gs,{F}"],
    "push_sreg": ["pushl %ds", "pushl %es", "pushl %fs", "pushl %gs", "pushl %ss", "pushl %cs", "pushw %ds", "push %fs"],
    "pop_sreg": ["popl %ds", "popl %es", "popl %fs", "popl %gs", "popl %ss", "popw %es", "pop %gs"],
    "lgdt": ["lgdt (%eax)", "lgdtl 6(%esp)", f"lgdt {M}", "lgdtw (%eax)", f"lgdt {F}"],
    "lidt": ["lidt (%eax)", "lidtl 6(%esp)", f"lidt {M}", f"lidt {F}"],
    "lldt": ["lldt %ax", "lldt (%eax)", f"lldt {M}", f"lldt {F}"],
    "ltr": ["ltr %ax", "ltr (%eax)", f"ltr {M}", f"ltr {F}"],
    "sgdt": ["sgdt (%eax)", f"sgdtl {M}", f"sgdt {F}"],
    "sidt": ["sidt (%eax)", f"sidtl {M}", f"sidt {F}"],
    "sldt": ["sldt %eax", "sldt %ax", "sldt (%eax)", f"sldt {M}", f"sldt {F}"],
    "str": ["str %eax", "str %ax", "str (%eax)", f"str {M}", f"str {F}"],
    "smsw": ["smsw %eax", "smsw %ax", "smsw (%ebx)", f"smsw {M}", f"smsw {F}"],
    "lmsw": ["lmsw %ax", "lmsw (%ebx)", f"lmsw {M}", f"lmsw {F}"],
    "clts": ["clts"],
    "invlpg": ["invlpg (%eax)", f"invlpg {M}", f"invlpg {F}"],
    "invd": ["invd"],
    "wbinvd": ["wbinvd"],
    "hlt": ["hlt"],
    "iret": ["iret", "iretl", "iretw"],
    "lret": ["lret", "lret $4", "lretw"],
    "ljmp": ["ljmp $0x08,$0x1000", "ljmpw $0x08,$0x1000", "ljmp *(%eax)", f"ljmp *{M}", "jmp $0x10,$0x2000", f"ljmp *{F}"],
    "lcall": ["lcall $0x08,$0x1000", "lcall *(%eax)", f"lcall *{M}", "call $0x10,$0x2000", f"lcall *{F}"],
    "lds": ["lds (%eax),%ebx", f"lds {M},%ecx", "ldsw (%eax),%bx", f"lds {F},%ebx"],
    "les": ["les (%eax),%ebx", f"les {M},%ecx", f"les {F},%ebx"],
    "lfs": ["lfs (%eax),%ebx", f"lfs {M},%ecx", f"lfs {F},%ebx"],
    "lgs": ["lgs (%eax),%ebx", f"lgs {M},%ecx", f"lgs {F},%ebx"],
    "lss": ["lss (%eax),%esp", f"lss {M},%ecx", f"lss {F},%ecx"],
    "int": ["int $0x80", "int $0x20", "int $255"],
    "int3": ["int3", "int $3", "int $0x3"],
    "into": ["into"],
    "cpuid": ["cpuid"],
    "rdmsr": ["rdmsr"],
    "wrmsr": ["wrmsr"],
    "rdtsc": ["rdtsc"],
    "lar": ["lar %ax,%ebx", "lar (%eax),%ebx", f"lar {M},%ecx", f"lar {F},%ebx"],
    "lsl": ["lsl %ax,%ebx", "lsl (%eax),%ebx", f"lsl {M},%ecx", f"lsl {F},%ebx"],
    "verr": ["verr %ax", "verr (%eax)", f"verr {M}", f"verr {F}"],
    "verw": ["verw %ax", "verw (%eax)", f"verw {M}", f"verw {F}"],
    "arpl": ["arpl %ax,%bx", "arpl %ax,(%ebx)", f"arpl %cx,{M}", "arpl %ax,%fs:-0x100(%ebx)"],
    "rsm": ["rsm"],
    # issue 9: the wedge raises #UD for what the virtual CPU does not offer,
    # as the bench's emulator does for what it does not implement.
    "sysret": ["sysret"],
    "xsaves": ["xsaves (%eax)", f"xsaves {M}"],
    "xrstors": ["xrstors (%eax)", f"xrstors {M}"],
    "monitor": ["monitor"],
    "mwait": ["mwait"],
    "invpcid": ["invpcid (%eax),%ebx", f"invpcid {M},%ecx"],
    "clac": ["clac"],
    "stac": ["stac"],
    "wbnoinvd": ["wbnoinvd"],
    "rdpid": ["rdpid %eax"],
    "vmcall": ["vmcall"],
    "vmmcall": ["vmmcall"],
    "vmfunc": ["vmfunc"],
    "getsec": ["getsec"],
    "vmx": ["vmxon (%eax)", "vmxoff", "vmlaunch", "vmresume", "vmread %eax,%ebx", "vmwrite %eax,%ebx", "vmptrld (%eax)",
            "vmptrst (%eax)", "vmclear (%eax)", "invept (%eax),%ebx", "invvpid (%eax),%ebx"],
    "svm": ["vmrun", "vmload", "vmsave", "stgi", "clgi", "skinit", "invlpga"],
}

# Kinds the template bench (tests/test_templates.py) cannot compare: its
# emulator, Unicorn, runs them otherwise than the CPU the wedge emulates,
# which does not offer their feature (#UD; rdpmc: no counters, #GP).  Every
# other test takes them.
UNBENCHED: dict[str, list[str]] = {
    "sysenter": ["sysenter"],  # Unicorn stops at it for a hook and runs nothing
    "syscall": ["syscall"],  # likewise
    "sysexit": ["sysexit"],  # #GP(0) with SYSENTER_CS 0; the virtual CPU has no SEP: #UD
    "xsetbv": ["xsetbv"],  # Unicorn: #GP; no XSAVE: #UD
    "xgetbv": ["xgetbv"],  # Unicorn reads XCR0; no XSAVE: #UD
    "rdpmc": ["rdpmc"],  # Unicorn: #UD (unimplemented); no counters: #GP(0)
    "rdtscp": ["rdtscp"],  # Unicorn reads the host clock (the bench machine makes only rdtsc deterministic)
}
ALL_FORMS: dict[str, list[str]] = {**FORMS, **UNBENCHED}

# Instructions that look close to sensitive ones but are not.
NOT_SENSITIVE = [
    "movl %eax,%ebx", "movw %ax,(%ebx)", "movl %fs:(%eax),%ebx", "pushl %eax", "popl %ebx", "push $4",
    "jmp 1f", "call 1f", "jmp *%eax", "call *(%eax)", "ret", "ret $4", "nop", "movl %eax,%fs:4",
    "leal 4(%esp),%eax", "addl $1,%eax", "movsb", "rep movsl", "lodsb", "stosl", "lock incl (%eax)",
]  # fmt: skip
