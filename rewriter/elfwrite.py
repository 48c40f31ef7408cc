"""Write a rewritten image as a standalone ELF.

Nothing in the original layout moves: the patched site bytes are written in
place, and everything new is appended after the original file:

* the wedge, as PT_LOAD segments in the hypervisor hole (sections
  ``.afterburn.wedge*``);
* ``.afterburn.orig``: for every patched site, its range, the original
  instruction's address, kind and original bytes (the hypervisor needs them to
  run a patched site that user-mode code reaches);
* ``.afterburn.backend``: a note (name "Afterburn", type 2) naming the backend;
* new program-header and section-header tables (the old ones stay, unused).

So the multiboot header keeps its place in the first 8 KiB, and
``afterburn run kernel.xen.elf`` finds everything it needs in the file.
"""
from __future__ import annotations

import struct

from afterburn.elf import (
    PT_LOAD, PT_NOTE, SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_NOBITS, SHT_NOTE, SHT_PROGBITS, SHT_STRTAB,
)  # fmt: skip
from afterburn.fsutil import write_atomic
from afterburn.image import BACKEND_NOTE_SECTION, ORIG_SECTION, Image, backend_note, encode_orig


def _align(buf: bytearray, n: int) -> None:
    buf += b"\0" * (-len(buf) % n)


def write_image(image: Image, out_path: str) -> None:
    elf = image.elf
    raw = bytearray(elf.raw)
    # Patched guest bytes go back where they came from.
    for seg in image.segments:
        if seg.offset < 0:
            raise ValueError("segment without a file offset")
        raw[seg.offset : seg.offset + len(seg.data)] = seg.data
    h = elf.header
    e_phoff, e_shoff, e_phentsize, e_phnum = h["e_phoff"], h["e_shoff"], h["e_phentsize"], h["e_phnum"]
    e_shentsize, e_shnum, e_shstrndx = h["e_shentsize"], h["e_shnum"], h["e_shstrndx"]
    old_phdrs = [bytes(raw[e_phoff + i * e_phentsize : e_phoff + (i + 1) * e_phentsize]) for i in range(e_phnum)]
    old_shdrs = [bytes(raw[e_shoff + i * e_shentsize : e_shoff + (i + 1) * e_shentsize]) for i in range(e_shnum)]
    shstr = bytearray(elf.sections[e_shstrndx].data) if e_shnum else bytearray(b"\0")

    def name(s: str) -> int:
        off = len(shstr)
        shstr.extend(s.encode() + b"\0")
        return off

    new_phdrs, new_shdrs = [], []
    for i, seg in enumerate(image.hole_segments):
        _align(raw, 0x1000)
        off = len(raw)
        raw += seg.data
        new_phdrs.append(struct.pack("<8I", PT_LOAD, off, seg.vaddr, seg.paddr, len(seg.data), seg.memsz, 7, 0x1000))
        sname = f".afterburn.wedge{i}"
        stype = SHT_PROGBITS if seg.data else SHT_NOBITS
        new_shdrs.append(struct.pack("<10I", name(sname), stype, SHF_ALLOC | SHF_WRITE | SHF_EXECINSTR, seg.vaddr, off,
                                     seg.memsz if not seg.data else len(seg.data), 0, 0, 0x1000, 0))  # fmt: skip
    _align(raw, 4)
    off = len(raw)
    blob = encode_orig(image.patched)
    raw += blob
    new_shdrs.append(struct.pack("<10I", name(ORIG_SECTION), SHT_PROGBITS, 0, 0, off, len(blob), 0, 0, 1, 0))
    _align(raw, 4)
    off = len(raw)
    note = backend_note(image.backend or "")
    raw += note
    new_phdrs.append(struct.pack("<8I", PT_NOTE, off, 0, 0, len(note), len(note), 4, 4))
    new_shdrs.append(struct.pack("<10I", name(BACKEND_NOTE_SECTION), SHT_NOTE, 0, 0, off, len(note), 0, 0, 4, 0))
    strtab_name = name(".shstrtab.afterburn")
    off = len(raw)
    raw += shstr
    new_shdrs.append(struct.pack("<10I", strtab_name, SHT_STRTAB, 0, 0, off, len(shstr), 0, 0, 1, 0))
    _align(raw, 4)
    phoff = len(raw)
    for ph in old_phdrs + new_phdrs:
        raw += ph
    _align(raw, 4)
    shoff = len(raw)
    for sh in old_shdrs + new_shdrs:
        raw += sh
    struct.pack_into("<I", raw, 28, phoff)
    struct.pack_into("<I", raw, 32, shoff)
    struct.pack_into("<HHHHH", raw, 42, 32, len(old_phdrs) + len(new_phdrs), 40, len(old_shdrs) + len(new_shdrs),
                     len(old_shdrs) + len(new_shdrs) - 1)  # fmt: skip
    write_atomic(out_path, bytes(raw), mode=0o755)
