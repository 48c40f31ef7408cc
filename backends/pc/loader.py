"""Multiboot v1 kernels: the image a backend runs, and the boot state.

The loader turns a kernel ELF into an :class:`Image` (segments at physical
addresses, the entry point, the ELF for symbols and site records) and builds
what a multiboot loader hands over (Multiboot spec 0.6.96, section 3.2):
EAX=0x2BADB002, EBX=the info block, flat 4 GiB code and data segments,
protected mode without paging, IF=0.  Where the spec leaves freedom (which
selectors, where the info block lives, the memory map, the BIOS data area),
we copy what QEMU 7.2 + SeaBIOS hands a kernel, measured, because QEMU is the
oracle every guest is compared with.  Only the boot loader name is ours.
"""
from __future__ import annotations

import struct
from pathlib import Path

from afterburn.elf import EM_386, PT_LOAD, Elf
from afterburn.errors import FormatError
from afterburn.image import Image, Segment, read_rewrite_info
from wedge.layout import HOLE_BASE

MB1_MAGIC = 0x1BADB002
MB1_BOOT_MAGIC = 0x2BADB002
MB_AOUT_KLUDGE = 1 << 16
MB_SUPPORTED_REQUIRED = 0x7  # page-align modules, memory info, video mode (ignored: no display)

# Low-memory layout of what the loader itself places.
BOOT_GDT = 0x500
MBI_ADDR = 0x9500  # where QEMU 7.2 puts it (measured)
MMAP_ADDR = 0x9600
CMDLINE_ADDR = 0x9800
LOADER_NAME_ADDR = 0x9C00
BOOT_STACK = 0x7C00
BOOT_CS, BOOT_DS = 0x08, 0x10  # the selectors QEMU's multiboot entry leaves loaded (measured)
BIOS_HIGH_RESERVED = 0x20000  # SeaBIOS keeps the top 128 KiB of RAM for its tables (measured with -m 32)


def find_multiboot_header(raw: bytes) -> tuple[int, tuple[int, ...]] | None:
    """(offset, header words) of a valid multiboot v1 header in the first 8 KiB."""
    for off in range(0, min(len(raw), 8192) - 11, 4):
        magic, flags, csum = struct.unpack_from("<III", raw, off)
        if magic == MB1_MAGIC and (magic + flags + csum) & 0xFFFFFFFF == 0:
            words = struct.unpack_from("<8I", raw + b"\0" * 32, off)
            return off, words
    return None


def load_image(path: str | Path) -> Image:
    """Read a multiboot v1 ELF kernel; bad input raises FormatError."""
    elf = Elf(path)
    if elf.machine != EM_386 or elf.bits != 32:
        raise FormatError(f"{path}: not a 32-bit x86 kernel")
    if elf.type != "ET_EXEC":
        raise FormatError(f"{path}: not an executable ELF (type {elf.type}); link the kernel first")
    found = find_multiboot_header(elf.raw)
    if found is None:
        raise FormatError(f"{path}: no multiboot v1 header in the first 8 KiB")
    _, words = found
    flags = words[1]
    if flags & 0xFFFF & ~MB_SUPPORTED_REQUIRED:
        raise FormatError(f"{path}: multiboot header requires unsupported features (flags {flags:#x})")
    segments = _elf_segments(elf)
    entry = elf.entry
    if flags & MB_AOUT_KLUDGE:
        header_addr, load_addr, load_end, bss_end, entry = words[3:8]
        hdr_off = found[0]
        file_start = hdr_off - (header_addr - load_addr)
        end = load_end or (load_addr + len(elf.raw) - file_start)
        if file_start < 0 or end < load_addr:
            raise FormatError(f"{path}: inconsistent multiboot a.out-kludge addresses")
        data = elf.raw[file_start : file_start + (end - load_addr)]
        segments = [Segment(load_addr, load_addr, data, max(bss_end, end) - load_addr, 7)]
    if not segments:
        raise FormatError(f"{path}: no loadable segments")
    image = Image(str(path), entry, [s for s in segments if s.paddr < HOLE_BASE], elf, flags)
    image.hole_segments = [s for s in segments if s.paddr >= HOLE_BASE]
    read_rewrite_info(image)
    return image


def _elf_segments(elf: Elf) -> list[Segment]:
    return [Segment(ph.paddr, ph.vaddr, elf.segment_data(ph), ph.memsz, ph.flags, ph.offset)
            for ph in elf.program_headers if ph.type == PT_LOAD and ph.memsz]  # fmt: skip


def gdt_entry(base: int, limit: int, access: int, flags: int) -> bytes:
    e = ((limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (access << 40) | (((limit >> 16) & 0xF) << 48)
         | ((flags & 0xF) << 52) | (((base >> 24) & 0xFF) << 56))  # fmt: skip
    return struct.pack("<Q", e)


BOOT_GDT_BYTES = b"".join([
    b"\0" * 8,
    gdt_entry(0, 0xFFFFF, 0x9A, 0xC),  # 0x08: ring-0 code, flat 4 GiB
    gdt_entry(0, 0xFFFFF, 0x92, 0xC),  # 0x10: ring-0 data
])  # fmt: skip


def bios_data_area() -> dict[int, bytes]:
    """The BIOS data area words a kernel may read, as SeaBIOS leaves them:
    COM1's base port, the equipment word, base memory in KiB."""
    return {0x400: struct.pack("<H", 0x3F8), 0x410: struct.pack("<H", 0x206), 0x413: struct.pack("<H", 639)}


def multiboot_info(ram_size: int, cmdline: str, kernel_end: int) -> dict[int, bytes]:
    """Physical address -> bytes for the info block and what it points at,
    laid out as QEMU 7.2's multiboot loader does after SeaBIOS (measured):
    the same flags, memory sizes, memory map and boot device."""
    top = ram_size - BIOS_HIGH_RESERVED
    mmap_entries = [
        (0, 0x9FC00, 1),
        (0x9FC00, 0x400, 2),
        (0xF0000, 0x10000, 2),
        (0x100000, top - 0x100000, 1),
        (top, BIOS_HIGH_RESERVED, 2),
        (0xFFFC0000, 0x40000, 2),  # the BIOS ROM below 4 GiB
    ]
    mmap = b"".join(struct.pack("<IQQI", 20, base, length, kind) for base, length, kind in mmap_entries)
    cmd = (cmdline + " ").encode()[:0x3FF] + b"\0"  # QEMU joins "kernel" and "append" with a space
    name = b"afterburn\0"
    mods_addr = (kernel_end + 0xFFF) & ~0xFFF
    info = struct.pack(
        "<IIIIIIIIIIIII",
        (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9),  # mem, boot device, cmdline, mods, mmap, name
        639,  # mem_lower (KiB)
        (top - 0x100000) // 1024,  # mem_upper (KiB)
        0x8000FFFF,  # boot_device: first hard disk, no partition
        CMDLINE_ADDR,
        0, mods_addr,  # no modules
        0, 0, 0, 0,  # syms
        len(mmap), MMAP_ADDR,
    ) + struct.pack("<IIII", 0, 0, 0, LOADER_NAME_ADDR)  # drives length/addr, config table, loader name
    return {MBI_ADDR: info, MMAP_ADDR: mmap, CMDLINE_ADDR: cmd, LOADER_NAME_ADDR: name}
