"""Differential check against QEMU 7.2: one port-I/O script, two machines.

A tiny multiboot kernel generated from :data:`SCRIPT` runs the port writes
and reads on qemu-system-i386 (after SeaBIOS) and prints every value read;
the same script runs on our devices.  The script only reads things that do
not depend on timing (QEMU's clocks follow the host), and it reprograms
every device it reads, so SeaBIOS's leftovers do not matter.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from backends.pc.bus import PortBus
from backends.pc.clock import VirtualClock
from backends.pc.cmos import Cmos
from backends.pc.misc import DebugExit, PostPort
from backends.pc.pic import PicPair
from backends.pc.pit import Pit
from backends.pc.uart import Uart16550
from tests.conftest import require_tool

# ("out", port, value) | ("in", port, size[, mask])
Op = tuple

_PIC_INIT = [("out", 0x20, 0x11), ("out", 0xA0, 0x11), ("out", 0x21, 0x20), ("out", 0xA1, 0x28),
             ("out", 0x21, 0x04), ("out", 0xA1, 0x02), ("out", 0x21, 0x01), ("out", 0xA1, 0x01),
             ("out", 0x21, 0xFF), ("out", 0xA1, 0xFF)]

SCRIPT: list[Op] = [
    # Channel 0 in mode 1: one load edge, then IRQ0 stays quiet for good.
    ("out", 0x43, 0x32), ("out", 0x40, 0xFF), ("out", 0x40, 0xFF),
    *_PIC_INIT,
    ("in", 0x21, 1), ("in", 0xA1, 1), ("in", 0x20, 1),
    ("out", 0x20, 0x0B), ("in", 0x20, 1),
    # UART: THRE interrupt drives IRQ4 through the PIC.
    ("out", 0x3FA, 0x00), ("out", 0x3FB, 0x03), ("out", 0x3F9, 0x00), ("in", 0x3FA, 1),
    ("out", 0x3F9, 0x02),
    ("out", 0x20, 0x0A), ("in", 0x20, 1),
    ("out", 0x21, 0xEF), ("out", 0x20, 0x0C), ("in", 0x20, 1),          # poll: 0x84
    ("out", 0x20, 0x0B), ("in", 0x20, 1), ("in", 0x3FA, 1), ("in", 0x3FA, 1),
    ("out", 0x20, 0x20), ("in", 0x20, 1),
    ("out", 0x3FC, 0x1B), ("out", 0x3F8, 0x41),                          # loopback THR write
    ("out", 0x20, 0x0A), ("in", 0x20, 1), ("in", 0x3FD, 1), ("in", 0x3F8, 1), ("in", 0x3FD, 1),
    ("out", 0x21, 0xFF), ("out", 0x20, 0x0C), ("in", 0x20, 1),          # masked: poll gives 0
    ("in", 0x20, 1),
    ("out", 0x20, 0x11), ("in", 0x20, 1), ("in", 0x21, 1),              # ICW1 clears IRR, IMR
    *_PIC_INIT,
    ("out", 0x3F9, 0x00), ("out", 0x3FC, 0x0B), ("in", 0x3FE, 1), ("in", 0x3FC, 1),
    ("out", 0x3FB, 0x83), ("in", 0x3F8, 1), ("in", 0x3F9, 1), ("out", 0x3F8, 0x01), ("out", 0x3F9, 0x00),
    ("in", 0x3F8, 1), ("out", 0x3FB, 0x03), ("in", 0x3FB, 1),
    ("out", 0x3FF, 0x5A), ("in", 0x3FF, 1),
    # PIT read-back status bytes.
    ("out", 0x43, 0xB0), ("out", 0x42, 0xFF), ("out", 0x42, 0xFF), ("out", 0x43, 0xE8), ("in", 0x42, 1),
    ("out", 0x43, 0x74), ("out", 0x41, 0x00), ("out", 0x41, 0x80), ("out", 0x43, 0xE4), ("in", 0x41, 1),
    ("out", 0x43, 0x5A), ("out", 0x43, 0xE4), ("in", 0x41, 1),
    ("out", 0x43, 0x9D), ("out", 0x43, 0xE8), ("in", 0x42, 1),
    ("out", 0x43, 0xEE), ("in", 0x40, 1), ("in", 0x41, 1), ("in", 0x42, 1),
    ("in", 0x43, 1),
    # Port 0x61 (the refresh bit differs by design: QEMU flips it per read).
    ("out", 0x61, 0x00), ("in", 0x61, 1, 0xEF), ("out", 0x61, 0xFF), ("in", 0x61, 1, 0xEF),
    ("out", 0x61, 0x00),
    # CMOS: stop the clock, set 1999-12-31 23:58:59, read it all back.
    ("out", 0x70, 0x0B), ("out", 0x71, 0x82),
    *[op for reg, val in ((0x00, 0x58), (0x02, 0x59), (0x04, 0x23), (0x06, 0x06), (0x07, 0x31),
                          (0x08, 0x12), (0x09, 0x99), (0x32, 0x19))
      for op in (("out", 0x70, reg), ("out", 0x71, val))],
    ("out", 0x70, 0x0B), ("out", 0x71, 0x80),                            # 12 h while stopped
    *[op for reg in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32, 0x0A, 0x0B, 0x0D)
      for op in (("out", 0x70, reg), ("in", 0x71, 1))],
    ("out", 0x70, 0x37), ("in", 0x71, 1), ("in", 0x71, 1),
    ("out", 0x70, 0x50), ("out", 0x71, 0xA5), ("in", 0x71, 1),
    ("out", 0x70, 0x0D), ("out", 0x71, 0x00), ("in", 0x71, 1),
    ("out", 0x70, 0x0A), ("out", 0x71, 0xA3), ("in", 0x71, 1),
    *[op for reg in range(0x0E, 0x80) if reg != 0x50
      for op in (("out", 0x70, reg), ("in", 0x71, 1))],
    ("out", 0x70, 0x8F), ("in", 0x71, 1), ("in", 0x70, 1),
    ("out", 0x70, 0x0A), ("out", 0x71, 0x26), ("out", 0x70, 0x0B), ("out", 0x71, 0x02),
    # isa-debug-exit and port 0x80 reads at every width.
    ("in", 0xF4, 1), ("in", 0xF4, 2), ("in", 0xF4, 4), ("in", 0xF6, 1),
    ("in", 0x80, 1), ("in", 0x80, 2), ("in", 0x80, 4),
]


def _kernel_source(script: list[Op]) -> str:
    body = []
    for op in script:
        if op[0] == "out":
            body.append(f"outb({op[1]:#x}, {op[2]:#x});")
        else:
            fn = {1: "inb", 2: "inw", 4: "inl"}[op[2]]
            mask = op[3] if len(op) > 3 else (1 << (8 * op[2])) - 1
            body.append(f"r[n++] = {fn}({op[1]:#x}) & {mask:#x}u;")
    nreads = sum(op[0] == "in" for op in script)
    return r"""
typedef unsigned char u8; typedef unsigned short u16; typedef unsigned int u32;
static inline void outb(u16 p, u8 v){ __asm__ volatile("outb %0,%1"::"a"(v),"Nd"(p)); }
static inline u32 inb(u16 p){ u8 v; __asm__ volatile("inb %1,%0":"=a"(v):"Nd"(p)); return v; }
static inline u32 inw(u16 p){ u16 v; __asm__ volatile("inw %1,%0":"=a"(v):"Nd"(p)); return v; }
static inline u32 inl(u16 p){ u32 v; __asm__ volatile("inl %1,%0":"=a"(v):"Nd"(p)); return v; }
static void putc(char c){ while(!(inb(0x3fd)&0x20)); outb(0x3f8,c); }
static u32 r[%NREADS%];
void kmain(void){
  int n = 0;
  %BODY%
  putc('\n'); putc('@');
  for (int i = 0; i < n; i++) {
    for (int s = 28; s >= 0; s -= 4) putc("0123456789abcdef"[(r[i] >> s) & 15]);
    putc(' ');
  }
  putc('@'); putc('\n');
  outb(0xf4, 0);
}
""".replace("%NREADS%", str(nreads)).replace("%BODY%", "\n  ".join(body))


_BOOT_S = """
    .section .multiboot
    .align 4
    .long 0x1BADB002, 0, -0x1BADB002
    .text
    .globl _start
_start:
    cli
    mov $stack_top, %esp
    call kmain
1:  hlt
    jmp 1b
    .bss
    .align 16
    .space 8192
stack_top:
"""

_LINK_LD = """
ENTRY(_start)
SECTIONS { . = 1M; .text : { *(.multiboot) *(.text*) } .rodata : { *(.rodata*) }
           .data : { *(.data*) } .bss : { *(.bss*) *(COMMON) } }
"""


def run_on_qemu(script: list[Op], tmp: Path) -> list[int]:
    qemu = require_tool("qemu-system-i386")
    gcc = require_tool("gcc")
    ld = require_tool("ld")
    (tmp / "boot.S").write_text(_BOOT_S)
    (tmp / "k.c").write_text(_kernel_source(script))
    (tmp / "link.ld").write_text(_LINK_LD)
    cflags = ["-m32", "-ffreestanding", "-nostdlib", "-fno-pie", "-fno-pic", "-O1", "-c"]
    for src in ("boot.S", "k.c"):
        subprocess.run([gcc, *cflags, src, "-o", src.split(".")[0] + ".o"], cwd=tmp, check=True)
    subprocess.run([ld, "-m", "elf_i386", "-T", "link.ld", "-o", "k.elf", "boot.o", "k.o"],
                   cwd=tmp, check=True, capture_output=True)
    proc = subprocess.run(
        [qemu, "-kernel", "k.elf", "-nodefaults", "-m", "32", "-display", "none", "-serial", "stdio",
         "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"],
        cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False,
    )
    assert proc.returncode == 1, proc.stderr          # (0 << 1) | 1
    out = proc.stdout.decode("latin-1")
    return [int(x, 16) for x in out.split("@")[1].split()]


def run_on_model(script: list[Op]) -> list[int]:
    clock = VirtualClock()
    bus = PortBus()
    pic = bus.attach(PicPair())
    for dev in (Pit(clock, irq=lambda lvl: pic.set_irq(0, lvl)),
                Uart16550(clock, irq=lambda lvl: pic.set_irq(4, lvl)),
                Cmos(clock, irq=lambda lvl: pic.set_irq(8, lvl), ram_size=32 << 20)):
        bus.attach(dev)
        clock.register(dev)
    bus.attach(DebugExit())
    bus.attach(PostPort())
    reads = []
    for op in script:
        clock.advance_insns(10)
        clock.fire_due()
        if op[0] == "out":
            bus.write(op[1], 1, op[2])
        else:
            mask = op[3] if len(op) > 3 else (1 << (8 * op[2])) - 1
            reads.append(bus.read(op[1], op[2]) & mask)
    return reads


def test_port_script_matches_qemu(tmp_path: Path):
    want = run_on_qemu(SCRIPT, tmp_path)
    got = run_on_model(SCRIPT)
    reads = [op for op in SCRIPT if op[0] == "in"]
    assert len(want) == len(got) == len(reads)
    diffs = [(f"in {op[1]:#x}", f"qemu={w:#x}", f"model={g:#x}")
             for op, w, g in zip(reads, want, got) if w != g]
    assert not diffs, diffs
