"""The site-record format (specified in docs/site-format.md).

One 8-byte record per sensitive instruction, in the allocated section
``.afterburn``::

    struct afterburn_site {        /* little-endian, 4-byte aligned */
        int32_t offset;            /* site address minus the address of this field */
        uint8_t kind;              /* afterburn.isa kind id */
        uint8_t length;            /* instruction + pad bytes */
        uint8_t insn_len;          /* instruction bytes */
        uint8_t flags;             /* SiteFlag */
    };

The offset is self-relative, so ``ld`` and module loaders relocate it with
an ordinary PC-relative relocation (R_386_PC32), which every loader we care
about accepts (GRUB's accepts only R_386_32 and R_386_PC32).  The format
version lives in a note (``.note.afterburn``, name "Afterburn", type 1), one
per annotated object, concatenated by ``ld``.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from . import isa
from .elf import EM_386, I386_PC_RELATIVE, R_X86_64_PC32, Elf, Section
from .errors import FormatError

SECTION = ".afterburn"
NOTE_SECTION = ".afterburn.note"  # not ".note.*": kernel linker scripts often discard those
NOTE_NAME = b"Afterburn"
NT_AFTERBURN_FORMAT = 1
FORMAT_VERSION = 1
RECORD = struct.Struct("<iBBBB")
RECORD_SIZE = RECORD.size  # 8
NOTE_DESC = struct.Struct("<HBB")  # version, record size, ISA
ISA_I386 = 1
ISA_X86_64 = 2


class SiteFlag(enum.IntFlag):
    NONE = 0
    # Some arithmetic flag (CF PF AF ZF SF OF) may be read after the site
    # before being written, so a patch must preserve them.
    FLAGS_LIVE = 0x01
    # The pad precedes the instruction, which ends the site (see
    # isa.PAD_BEFORE_KINDS); otherwise the instruction starts the site.
    PAD_BEFORE = 0x02


RESERVED_FLAGS = 0xFF & ~int(SiteFlag.FLAGS_LIVE | SiteFlag.PAD_BEFORE)


class Why(enum.IntEnum):
    """Why a region is excluded: the flags byte of its ``exclude_begin``
    record (docs/site-format.md).  Readers show unknown values as numbers."""

    UNSPECIFIED = 0  # .afterburn_noannotate, or a writer that gives no reason
    MODE = 1  # 16- or 64-bit code (.code16, .code64)
    DATA = 2  # data in a code section (.ascii, .string)
    ALTERNATIVES = 3  # code the kernel copies or overwrites at boot (.altinstructions)
    UNCHANGED = 4  # object annotation left it as it was (docs/objects.md: undecodable, fixed-length, blob)

    @classmethod
    def describe(cls, value: int) -> str:
        try:
            return _WHY_TEXT[cls(value)]
        except ValueError:
            return f"reason {value}"


_WHY_TEXT = {
    Why.UNSPECIFIED: "excluded on request (.afterburn_noannotate)",
    Why.MODE: "16- or 64-bit code, not pre-virtualized",
    Why.DATA: "data in a code section",
    Why.ALTERNATIVES: "alternatives: the kernel copies or overwrites this code at boot",
    Why.UNCHANGED: "left unchanged by object annotation",
}


@dataclass(frozen=True)
class Site:
    """One record, resolved to the code it describes."""

    index: int  # position in .afterburn
    section: Section  # the executable section holding the site
    offset: int  # within that section
    kind: isa.Kind
    length: int
    insn_len: int
    flags: SiteFlag

    @property
    def address(self) -> int:
        """Virtual address in a linked file; section offset in an object."""
        return self.section.addr + self.offset

    @property
    def pad(self) -> int:
        return self.length - self.insn_len

    @property
    def flags_live(self) -> bool:
        return bool(self.flags & SiteFlag.FLAGS_LIVE)

    @property
    def pad_before(self) -> bool:
        return bool(self.flags & SiteFlag.PAD_BEFORE)

    @property
    def insn_offset(self) -> int:
        """Where the instruction itself starts (within the section)."""
        return self.offset + self.pad if self.pad_before else self.offset

    @property
    def pad_offset(self) -> int:
        return self.offset if self.pad_before else self.offset + self.insn_len

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Region:
    """An excluded (``.afterburn_noannotate``) byte range of one section."""

    section: Section
    start: int
    end: int
    why: int = Why.UNSPECIFIED


@dataclass
class SiteTable:
    version: int | None
    isa: int | None
    sites: list[Site]
    excluded: list[Region]

    @property
    def annotated(self) -> bool:
        return self.version is not None

    def by_section(self) -> dict[int, list[Site]]:
        out: dict[int, list[Site]] = {}
        for s in self.sites:
            out.setdefault(s.section.index, []).append(s)
        for lst in out.values():
            lst.sort(key=lambda s: s.offset)
        return out


# ---------------------------------------------------------------------------
# Reading


def read_notes(elf: Elf) -> list[tuple[int, int, int]]:
    """(version, record size, isa) for every Afterburn note in the file."""
    out = []
    for note in elf.notes:
        if note.name == NOTE_NAME and note.type == NT_AFTERBURN_FORMAT:
            if len(note.desc) < NOTE_DESC.size:
                raise FormatError(f"{elf.path}: truncated Afterburn note")
            out.append(NOTE_DESC.unpack_from(note.desc))
    return out


def read_site_table(elf: Elf) -> SiteTable:
    """Read and validate the site table; an unannotated file gives an empty one."""
    notes = read_notes(elf)
    sec = elf.section(SECTION)
    if not notes:
        if sec is not None and sec.size:
            raise FormatError(f"{elf.path}: has {SECTION} records but no {NOTE_SECTION} version note")
        return SiteTable(None, None, [], [])
    versions = {n[0] for n in notes}
    if versions != {FORMAT_VERSION}:
        bad = sorted(versions - {FORMAT_VERSION})
        raise FormatError(
            f"{elf.path}: unsupported site format version {bad[0]} (this afterburn reads version {FORMAT_VERSION})"
        )
    sizes = {n[1] for n in notes}
    if sizes != {RECORD_SIZE}:
        raise FormatError(f"{elf.path}: site records of {sorted(sizes)} bytes, expected {RECORD_SIZE}")
    isas = {n[2] for n in notes}
    if len(isas) != 1:
        raise FormatError(f"{elf.path}: objects for different ISAs were linked together")
    file_isa = isas.pop()
    expected = ISA_I386 if elf.machine == EM_386 else ISA_X86_64
    if file_isa != expected:
        raise FormatError(f"{elf.path}: site note says ISA {file_isa}, ELF machine says {expected}")
    if sec is None or sec.size == 0:
        return SiteTable(FORMAT_VERSION, file_isa, [], [])
    if sec.size % RECORD_SIZE:
        raise FormatError(f"{elf.path}: {SECTION} size {sec.size} is not a multiple of {RECORD_SIZE}")
    targets = _resolve_targets(elf, sec)
    sites: list[Site] = []
    open_regions: dict[int, tuple[int, Section, int]] = {}
    regions: list[Region] = []
    data = sec.data
    for i in range(sec.size // RECORD_SIZE):
        _, kind_id, length, insn_len, flags = RECORD.unpack_from(data, i * RECORD_SIZE)
        target_sec, target_off = targets[i]
        kind = isa.BY_ID.get(kind_id)
        where = f"{elf.path}: {SECTION} record {i}"
        if kind is None:
            raise FormatError(f"{where}: unknown kind {kind_id}")
        if kind.marker:
            if kind is isa.EXCL_BEGIN:
                if target_sec.index in open_regions:
                    raise FormatError(f"{where}: nested exclude_begin")
                open_regions[target_sec.index] = (target_off, target_sec, flags)
            else:
                if target_sec.index not in open_regions:
                    raise FormatError(f"{where}: exclude_end without exclude_begin")
                start, s, why = open_regions.pop(target_sec.index)
                if target_off < start:
                    raise FormatError(f"{where}: excluded region ends before it starts")
                regions.append(Region(s, start, target_off, why))
            continue
        if flags & RESERVED_FLAGS:
            raise FormatError(f"{where}: reserved flag bits {flags & RESERVED_FLAGS:#x} set")
        if not 1 <= insn_len <= 15 or length < insn_len:
            raise FormatError(f"{where}: bad lengths (site {length}, instruction {insn_len})")
        if not target_sec.is_exec:
            raise FormatError(f"{where}: points into non-executable section {target_sec.name}")
        if target_off + length > target_sec.size:
            raise FormatError(f"{where}: runs past the end of {target_sec.name}")
        sites.append(Site(i, target_sec, target_off, kind, length, insn_len, SiteFlag(flags)))
    if open_regions:
        _, s, _ = next(iter(open_regions.values()))
        raise FormatError(f"{elf.path}: unterminated excluded region in {s.name}")
    return SiteTable(FORMAT_VERSION, file_isa, sites, regions)


def data_kind(sec: Section, i: int) -> int:
    """The kind byte of record ``i``."""
    return sec.data[i * RECORD_SIZE + 4]


def _resolve_targets(elf: Elf, sec: Section) -> list[tuple[Section, int]]:
    """(section, offset) each record's self-relative offset points at."""
    n = sec.size // RECORD_SIZE
    if not elf.is_relocatable:
        out: list[tuple[Section, int]] = []
        started: set[int] = set()  # sections with an exclude_begin so far
        for i in range(n):
            rel = RECORD.unpack_from(sec.data, i * RECORD_SIZE)[0]
            addr = (sec.addr + i * RECORD_SIZE + rel) & ((1 << elf.bits) - 1)
            target = elf.section_at(addr)
            if data_kind(sec, i) == isa.EXCL_END.id:
                # The end of an excluded region may be the end of its
                # section, which is where the next section (if any) starts:
                # the region's own section, if it ends there, wins.
                ending = next((s for s in elf.sections if s.index in started and s.addr + s.size == addr), None)
                target = ending or target
            if target is None:
                raise FormatError(f"{elf.path}: {SECTION} record {i} points at {addr:#x}, outside any section")
            out.append((target, addr - target.addr))
            if data_kind(sec, i) == isa.EXCL_BEGIN.id:
                started.add(target.index)
        return out
    relocs = {r.offset: r for r in elf.relocations(sec)}
    pc_types = I386_PC_RELATIVE if elf.bits == 32 else {R_X86_64_PC32}
    syms = elf.symbols
    out = []
    for i in range(n):
        r = relocs.get(i * RECORD_SIZE)
        if r is None or r.type not in pc_types or r.sym >= len(syms):
            raise FormatError(f"{elf.path}: {SECTION} record {i} has no PC-relative relocation")
        sym = syms[r.sym]
        if not isinstance(sym.shndx, int) or sym.shndx >= len(elf.sections):
            raise FormatError(f"{elf.path}: {SECTION} record {i} is relative to an undefined symbol")
        # The field holds S + A - P and P is the field itself, so the site is
        # at S + A, whether A is in place (REL) or explicit (RELA).
        out.append((elf.sections[sym.shndx], sym.value + r.addend))
    return out


# ---------------------------------------------------------------------------
# Writing (as gas directives; used by the assembler annotator)


def note_directives(isa_id: int = ISA_I386) -> list[str]:
    """The version note, once per annotated object."""
    return [
        f'.pushsection {NOTE_SECTION},"",@note',
        ".balign 4",
        f".long {len(NOTE_NAME) + 1}, {NOTE_DESC.size}, {NT_AFTERBURN_FORMAT}",
        f'.asciz "{NOTE_NAME.decode()}"',
        ".balign 4",
        f".short {FORMAT_VERSION}",
        f".byte {RECORD_SIZE}, {isa_id}",
        ".balign 4",
        ".popsection",
    ]


def record_directives(start: str, end: str, insn_len: str, kind: isa.Kind | str, flags: int | str) -> list[str]:
    """One record.  ``start``/``end`` are label expressions (e.g. ``7771b``),
    ``insn_len`` and (if not a Kind) ``kind`` and ``flags`` gas expressions."""
    kind_id = kind.id if isinstance(kind, isa.Kind) else kind
    return [
        f'.pushsection {SECTION},"a",@progbits',
        ".balign 4",
        f".long {start} - .",
        f".byte {kind_id}, {end} - {start}, {insn_len}, {flags}",
        ".popsection",
    ]


def marker_directives(label: str, kind: isa.Kind, why: int = Why.UNSPECIFIED) -> list[str]:
    return [
        f'.pushsection {SECTION},"a",@progbits',
        ".balign 4",
        f".long {label} - .",
        f".byte {kind.id}, 0, 0, {int(why)}",
        ".popsection",
    ]
