"""Tiny multiboot kernels written in tests, for machine-level checks.

``build_kernel(tmp_path, body)`` assembles ``body`` (AT&T, 32-bit) after a
prelude that loads a GDT (0x08/0x10 ring-0 code/data, 0x1b/0x23 ring-3
code/data, 0x28 TSS) and an empty IDT, and links it at 1 MiB with a
multiboot header.  Macros available to the body:

* ``GATE vec, handler, type``: fill IDT entry ``vec`` (type 0x8E interrupt
  gate, 0x8F trap gate, 0xEE/0xEF the same with DPL 3);
* ``EXIT code``: write ``code`` to isa-debug-exit;
* ``PUTC ch``: write a character to COM1.

Handy symbols: ``idt`` (256 gates), ``tss`` (esp0 = ``kstack_top``),
``ustack_top``, ``scratch`` (64 dwords of zeroed memory), ``boot_eax`` and
``boot_ebx`` (the registers at entry).  All IRQs start masked at the PIC.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

PRELUDE = r"""
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002, 0, -0x1BADB002

    .macro GATE vec, handler, type
    movl $\handler, %eax
    movw %ax, idt + 8*\vec
    movw $0x08, idt + 8*\vec + 2
    movb $0, idt + 8*\vec + 4
    movb $\type, idt + 8*\vec + 5
    shrl $16, %eax
    movw %ax, idt + 8*\vec + 6
    .endm

    .macro EXIT code
    movl $\code, %eax
    outl %eax, $0xf4
    .endm

    .macro PUTC ch
    movb $\ch, %al
    movw $0x3f8, %dx
    outb %al, %dx
    .endm

    .data
    .align 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff      /* 0x08 ring-0 code */
    .quad 0x00cf92000000ffff      /* 0x10 ring-0 data */
    .quad 0x00cffa000000ffff      /* 0x18 ring-3 code */
    .quad 0x00cff2000000ffff      /* 0x20 ring-3 data */
tss_desc:
    .quad 0                       /* 0x28 TSS, filled at run time */
gdt_end:
boot_eax: .long 0
boot_ebx: .long 0
gdtr: .word gdt_end - gdt - 1
      .long gdt
idtr: .word 256*8 - 1
      .long idt
    .align 16
tss: .long 0, kstack_top, 0x10
    .fill 23, 4, 0
    .word 0, 104
    .bss
    .align 16
idt: .fill 256*8, 1, 0
scratch: .fill 64, 4, 0
    .fill 1024, 4, 0
kstack_top:
    .fill 1024, 4, 0
ustack_top:

    .text
    .globl _start
_start:
    movl %eax, boot_eax
    movl %ebx, boot_ebx
    movb $0xff, %al               /* mask every IRQ: SeaBIOS leaves the PIT ticking at vector 8 */
    outb %al, $0x21
    outb %al, $0xa1
    lgdt gdtr
    ljmp $0x08, $1f
1:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $kstack_top, %esp
    movl $tss, %eax               /* TSS descriptor: base eax, limit 103, type 9 */
    movw $103, tss_desc
    movw %ax, tss_desc + 2
    shrl $16, %eax
    movb %al, tss_desc + 4
    movb $0x89, tss_desc + 5
    movb $0, tss_desc + 6
    movb %ah, tss_desc + 7
    movw $0x28, %ax
    ltr %ax
    lidt idtr
"""

LINK = """ENTRY(_start)
SECTIONS {
  . = 0x100000;
  .text : { *(.multiboot) *(.text) }
  .data : { *(.data) }
  .bss : { *(.bss) *(COMMON) }
}
"""


def link(objs: list[Path], workdir: Path, name: str) -> Path:
    """Link objects at 1 MiB with :data:`LINK` into ``workdir/name.elf``."""
    script, elf = workdir / "link.ld", workdir / f"{name}.elf"
    script.write_text(LINK)
    r = subprocess.run(["ld", "-m", "elf_i386", "-T", str(script), "-o", str(elf), *map(str, objs)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return elf


def build_kernel(tmp_path: Path, body: str, name: str = "k") -> Path:
    from .conftest import assemble

    return link([assemble(PRELUDE + body + '\n    .section .note.GNU-stack,"",@progbits\n', tmp_path, name)],
                tmp_path, name)  # fmt: skip


def run_kernel(path: Path, backend: str | None = None, **limits):
    """Run in-process (on the reference backend by default); returns
    (observation, machine)."""
    from backends.pc.machine import Limits
    from backends.run import run

    r = run(path, backend, limits=Limits(**{"max_insns": 5_000_000, "timeout": 30, **limits}))
    return r.observation, r.machine


def read_u32(machine, symbol_addr: int, index: int = 0) -> int:
    return int.from_bytes(bytes(machine.uc.mem_read(symbol_addr + 4 * index, 4)), "little")


def symbol(path: Path, name: str) -> int:
    from afterburn.elf import Elf

    for s in Elf(path).symbols:
        if s.name == name:
            return s.value
    raise KeyError(name)
