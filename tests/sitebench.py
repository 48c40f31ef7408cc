"""A test bench for one instruction form: a tiny annotated multiboot kernel.

:func:`bench_source` writes a kernel that sets up a known world (GDT with
spare selectors, an LDT and a TSS in low memory, an IDT whose every vector
records the trap frame, landing pads at 0x1000 and 0x2000, a stack whose top
is copied out at the end), loads fixed values into every register, executes the one form,
then stores every register and exits through isa-debug-exit.  Everything the
form can change lands either in the final CPU state or in digested memory,
so two backends agree exactly when the patched site does what the native
instruction does.

The world is tailored per kind: the memory operand ``blob`` holds what the
instruction reads (a pseudo-descriptor, a far pointer, a selector), and
register operands hold selectors or values that make the form succeed, or
fault in an interesting way (``jmp $0x10,$0x2000`` jumps to a data segment).
"""
from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import assemble as assemble_text  # the bench assembles like every test
from tests.kernels import link  # and links like tests/kernels.py

M_DISP = 0x12345678  # displacement of the forms' long memory operand (tests/forms.py M)
FLAGS_IMAGE = 0x00243ED7  # what popf loads: CF PF AF ZF SF IF DF OF, IOPL 3, AC, ID

GDT = """    .quad 0
    .quad 0x00cf9a000000ffff      /* 0x08 code */
    .quad 0x00cf92000000ffff      /* 0x10 data */
    .quad 0x00cf92000000ffff      /* 0x18 data: a second flat selector */
    .quad 0x0000820030000017      /* 0x20 LDT at 0x3000, 3 entries */
    .quad 0x0000890031000067      /* 0x28 TSS at 0x3100, available */
    .quad 0x00cf9a000000ffff      /* 0x30 code: a second flat selector */
    .quad 0x00cf92000100ffff      /* 0x38 data, base 0x100: FS (segment-override forms) */
"""

ERR_VECTORS = {8, 10, 11, 12, 13, 14, 17}

# Register values before the form, unless the kind says otherwise.
DEFAULT_REGS = {"eax": "$blob", "ebx": "$blob", "ecx": "$3", "edx": "$0x80", "esi": "$blob", "edi": "$blob2",
                "ebp": "$0x5a5a5a5a"}  # fmt: skip

SELECTOR = {"mov_to_sreg": 0x18, "pop_sreg": 0x18, "lldt": 0x20, "ltr": 0x28, "lar": 0x30, "lsl": 0x18,
            "verr": 0x18, "verw": 0x18}  # fmt: skip


def _blob(kind: str) -> str:
    """What the memory operand holds for this kind."""
    if kind in ("lgdt",):
        return ".word gdt2_end - gdt2 - 1\n    .long gdt2"
    if kind in ("lidt",):
        return ".word 256*8 - 1\n    .long idt2"
    if kind in ("ljmp", "lcall"):
        return ".long 0x1000\n    .word 0x08"
    if kind in ("lds", "les", "lfs", "lgs", "lss"):
        return ".long hstack_alt\n    .word 0x18"
    if kind == "arpl":
        return ".word 0x18"
    if kind == "lmsw":
        return ".word 0x000b"
    if kind in SELECTOR:
        return f".word {SELECTOR[kind]:#x}"
    return ".long 0x11223344, 0x55667788"


def _regs(kind: str, form: str) -> dict[str, str]:
    regs = dict(DEFAULT_REGS)
    sel = SELECTOR.get(kind)
    if sel is not None and "(" not in form:
        regs.update(eax=f"${sel:#x}", ebx=f"${sel:#x}")
    if kind == "arpl":
        regs.update(eax="$0x1b", ecx="$0x1b")
        if "(" not in form:
            regs["ebx"] = "$0x18"
    if kind == "lmsw" and "(" not in form:
        regs["eax"] = "$0x000b"
    if kind == "mov_to_cr":
        regs.update(eax="$0x19", ebx="$0x12345678", ecx="$0x5000", edx="$0x10")  # TS; cr2; cr3; PSE
    if kind == "mov_to_dr":
        regs.update(eax="$0x1234", ebx="$0x400", ecx="$0x5678")
    if kind in ("rdmsr", "wrmsr"):
        regs.update(eax="$0x10", ecx="$0x174", edx="$0")  # IA32_SYSENTER_CS
    if kind == "cpuid":
        regs.update(eax="$0", ecx="$0")
    if "%eax,%ebx,4)" in form:  # the long memory operand: eax + 4*ebx + M_DISP == blob
        regs.update(eax=f"$(blob - {M_DISP:#x} - 16)", ebx="$4")
    return regs


def _stack_setup(kind: str, form: str) -> str:
    """Words the form pops or reads from the stack."""
    w16 = form.endswith("w") or re.match(r"\w+w\b", form) is not None
    lines = []
    if kind == "popf":
        lines.append(f"movl ${FLAGS_IMAGE:#x}, (%esp)" if not form.startswith("popfw") else
                     f"movw ${FLAGS_IMAGE & 0xFFFF:#x}, (%esp)")  # fmt: skip
    elif kind == "pop_sreg":
        lines.append("movl $0x18, (%esp)")
    elif kind == "iret":
        if form == "iretw":
            lines += ["movw $0x1000, (%esp)", "movw $0x08, 2(%esp)", f"movw ${FLAGS_IMAGE & 0xFFFF:#x}, 4(%esp)"]
        else:
            lines += ["movl $after_form, (%esp)", "movl $0x08, 4(%esp)", f"movl ${FLAGS_IMAGE:#x}, 8(%esp)"]
    elif kind == "lret":
        if w16:
            lines += ["movw $0x1000, (%esp)", "movw $0x30, 2(%esp)"]
        else:
            lines += ["movl $after_form, (%esp)", "movl $0x30, 4(%esp)"]
    m = re.search(r"(-?\d+)\(%esp\)", form)
    if m and kind not in ("mov_from_sreg",):
        disp = int(m.group(1))
        lines += ["movl blob, %ecx", f"movl %ecx, {disp}(%esp)", "movl blob+4, %ecx", f"movl %ecx, {disp + 4}(%esp)"]
    return "\n    ".join(lines)


def _stubs() -> str:
    out = []
    for v in range(256):
        target = "common_err" if v in ERR_VECTORS else "common"
        out.append(f"    .balign 16\n    pushl ${v}\n    jmp {target}")
    return "\n".join(out)


def bench_source(kind: str, form: str, flags_live: bool = True) -> str:
    """The bench kernel's assembler text for one form (not yet annotated)."""
    regs = "\n    ".join(f"movl {v}, %{r}" for r, v in _regs(kind, form).items())
    # After the form: read the flags (they stay live) or overwrite them first (dead).
    flags = ("seto flagbytes\n    setc flagbytes+1\n    setz flagbytes+2\n    sets flagbytes+3\n    setp flagbytes+4"
             if flags_live else "cmpl $0, flagbytes")  # fmt: skip
    scrub = "movl $0, %eax\n    movl $0, %edx" if kind == "rdtsc" else ""  # timing-dependent by nature
    return f"""
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002, 0, -0x1BADB002

    .data
    .align 8
gdt:
{GDT}gdt_end:
    .align 8
gdt2:
{GDT}gdt2_end:
gdtr: .word gdt_end - gdt - 1
    .long gdt
idtr: .word 256*8 - 1
    .long idt
    .align 8
blob:
    {_blob(kind)}
    .fill 16, 1, 0
blob2: .fill 32, 1, 0xee
save: .fill 8, 4, 0
flagbytes: .fill 8, 1, 0
fault: .long 0, 0, 0, 0, 0
stacktop: .fill 4, 4, 0

    /* Stacks are not digested: below ESP, a patched site's call into the
     * wedge leaves bytes the native instruction would not (on hardware an
     * interrupt may write there at any time).  What the form leaves on the
     * stack is copied to stacktop instead. */
    .bss
    .align 8
idt: .fill 256*8, 1, 0
idt2: .fill 256*8, 1, 0
    .fill 128, 4, 0
hstack_alt:
    .fill 128, 4, 0
hstack:
    .fill 16, 4, 0

    .text
    .globl _start
_start:
    movb $0xff, %al               /* every IRQ masked */
    outb %al, $0x21
    outb %al, $0xa1
    lgdt gdtr
    ljmp $0x08, $1f
1:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movw $0x38, %ax
    movw %ax, %fs
    movl $hstack, %esp
    movl $stubs, %eax             /* IDT: vector v enters stub v, interrupt gate */
    movl $idt, %edi
    movl $256, %ecx
2:  movw %ax, (%edi)
    movw $0x08, 2(%edi)
    movw $0x8e00, 4(%edi)
    movl %eax, %edx
    shrl $16, %edx
    movw %dx, 6(%edi)
    addl $16, %eax
    addl $8, %edi
    loop 2b
    lidt idtr
    movl $idt, %esi
    movl $idt2, %edi
    movl $512, %ecx
    cld
    rep movsl
    movl $0, 0x3000               /* LDT: null, flat data 0x0c, flat code 0x14 */
    movl $0, 0x3004
    movl $0x0000ffff, 0x3008
    movl $0x00cf9200, 0x300c
    movl $0x0000ffff, 0x3010
    movl $0x00cf9a00, 0x3014
    movl $0x3100, %edi            /* TSS: esp0 = hstack, ss0 = 0x10 */
    movl $26, %ecx
    xorl %eax, %eax
    rep stosl
    movl $hstack, 0x3104
    movl $0x10, 0x3108
    movb $0x68, 0x1000            /* landing pads: push $after_form; ret */
    movl $after_form, 0x1001
    movb $0xc3, 0x1005
    movb $0x68, 0x2000
    movl $after_form, 0x2001
    movb $0xc3, 0x2005
    {_stack_setup(kind, form)}
    movl $0x7fffffff, %ecx        /* flags: OF SF AF PF set, CF ZF clear */
    addl $1, %ecx
    {regs}
    .globl form
form:
    {form}
    .globl after_form
after_form:
    {flags}
    {scrub}
    movl %eax, save
    movl %ecx, save+4
    movl %edx, save+8
    movl %ebx, save+12
    movl %esp, save+16
    movl %ebp, save+20
    movl %esi, save+24
    movl %edi, save+28
    pushl (%esp)
    popl stacktop
    pushl 4(%esp)
    popl stacktop+4
    pushl 8(%esp)
    popl stacktop+8
    pushl 12(%esp)
    popl stacktop+12
    movb $0x42, %al
    outb %al, $0xf4
3:  jmp 3b

common_err:
    popl fault                    /* vector */
    popl fault+4                  /* error code */
    jmp 4f
common:
    popl fault
    movl $0xffffffff, fault+4
4:  pushl (%esp)                  /* the frame, register- and flags-neutral */
    popl fault+8
    pushl 4(%esp)
    popl fault+12
    pushl 8(%esp)
    popl fault+16
    jmp after_form

    .balign 16
stubs:
{_stubs()}
    .section .note.GNU-stack,"",@progbits
"""


def annotate(text: str, workdir: Path, name: str) -> str:
    from afterburn.annotate_asm import annotate_text

    counter = [0]

    def assemble(t: str) -> bytes:
        counter[0] += 1
        return assemble_text(t, workdir, f"{name}.pass{counter[0]}").read_bytes()

    return annotate_text(text, name=name, assemble=assemble).text


def build_bench(workdir: Path, name: str, text: str) -> Path:
    """Annotate, assemble and link a bench kernel."""
    annotated = annotate(text, workdir, name)
    return link([assemble_text(annotated, workdir, name)], workdir, name)


def run(kernel: Path, backend: str, digest_low: bool = True, max_insns: int = 2_000_000):
    """Run in-process with low memory (landing pads, LDT, TSS) digested too."""
    from backends.pc.machine import Limits
    from backends.run import run as run_kernel

    digests = ["0x1000:0x3000"] if digest_low else []
    return run_kernel(kernel, backend, limits=Limits(max_insns=max_insns, timeout=120), digests=digests).observation
