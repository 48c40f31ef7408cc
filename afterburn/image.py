"""Kernel images, and what ``afterburn rewrite`` records in them.

An :class:`Image` is what the machine loads: segments at physical addresses,
the entry point, and the ELF (for symbols and site records).  A rewritten
image also carries, per patched site, its range and original bytes
(``.afterburn.orig``), the wedge's segments in the hypervisor hole, and a note
naming the backend it was rewritten for.  The layout of both is specified in
docs/site-format.md ("Rewritten images"), next to the site records; this
module is its one reader and writer.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .elf import Elf
from .errors import FormatError
from .sitefmt import NOTE_NAME

ORIG_SECTION = ".afterburn.orig"
BACKEND_NOTE_SECTION = ".afterburn.backend"
NT_AFTERBURN_BACKEND = 2  # type 1 is the site-format version note
ORIG_HEADER = struct.Struct("<IIIB")  # start, end, instruction address, length of the kind name


@dataclass
class Segment:
    paddr: int
    vaddr: int
    data: bytes
    memsz: int
    flags: int  # PF_X 1, PF_W 2, PF_R 4
    offset: int = -1  # file offset of data, where it came from a file

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


@dataclass(frozen=True)
class PatchedSite:
    """A site the rewriter patched: where, and what was there before."""

    start: int  # virtual address
    end: int
    insn: int  # address of the original instruction inside the site
    kind: str
    original: bytes  # the site's bytes before patching (instruction and NOPs)


@dataclass
class Image:
    """A bootable kernel image: what the machine loads."""

    path: str
    entry: int
    segments: list[Segment]  # guest RAM
    elf: Elf
    mb_flags: int
    notes: dict[str, str] = field(default_factory=dict)  # {"backend": name} once rewritten
    hole_segments: list[Segment] = field(default_factory=list)  # the wedge, in the hypervisor hole
    patched: list[PatchedSite] = field(default_factory=list)
    unrecorded: list[int] = field(default_factory=list)  # sensitive instructions with no site record

    @property
    def backend(self) -> str | None:
        return self.notes.get("backend")


# -- the backend note ------------------------------------------------------------


def backend_note(name: str) -> bytes:
    desc = name.encode() + b"\0"
    desc += b"\0" * (-len(desc) % 4)
    nm = NOTE_NAME + b"\0"
    nm += b"\0" * (-len(nm) % 4)
    return struct.pack("<III", len(NOTE_NAME) + 1, len(desc), NT_AFTERBURN_BACKEND) + nm + desc


def read_backend(elf: Elf) -> str | None:
    for note in elf.notes:
        if note.name == NOTE_NAME and note.type == NT_AFTERBURN_BACKEND:
            try:
                return note.desc.rstrip(b"\0").decode()
            except UnicodeDecodeError:
                raise FormatError(f"{elf.path}: the backend note is not text") from None
    return None


# -- .afterburn.orig ---------------------------------------------------------------


def encode_orig(patched: list[PatchedSite]) -> bytes:
    out = bytearray()
    for p in patched:
        kind = p.kind.encode()
        out += ORIG_HEADER.pack(p.start, p.end, p.insn, len(kind)) + kind + p.original
    return bytes(out)


def decode_orig(data: bytes, path: str) -> list[PatchedSite]:
    """Every record, each checked against the section's bounds: a corrupt
    section is a FormatError, never a loop that outruns the file."""
    out, pos = [], 0
    bad = FormatError(f"{path}: corrupt {ORIG_SECTION} section")
    while pos < len(data):
        if pos + ORIG_HEADER.size > len(data):
            raise bad
        start, end, insn, kind_len = ORIG_HEADER.unpack_from(data, pos)
        pos += ORIG_HEADER.size
        if not start <= insn < end or end - start > 255 or pos + kind_len + (end - start) > len(data):
            raise bad
        try:
            kind = data[pos : pos + kind_len].decode()
        except UnicodeDecodeError:
            raise bad from None
        pos += kind_len
        out.append(PatchedSite(start, end, insn, kind, data[pos : pos + (end - start)]))
        pos += end - start
    return out


def read_rewrite_info(image: Image) -> None:
    """Fill in what ``afterburn rewrite`` recorded: the backend and the patched sites."""
    backend = read_backend(image.elf)
    if backend is not None:
        image.notes["backend"] = backend
    orig = image.elf.section(ORIG_SECTION)
    if orig is not None:
        image.patched = decode_orig(orig.data, image.path)
