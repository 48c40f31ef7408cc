"""A thin, safe view of an x86 ELF file: sections, symbols, relocations.

The headers, section table and symbol table are read with ``struct``
(pyelftools, used before, cost afterburn cc more per object than the
annotation did).  On top: validation with one-line errors (garbage in never
becomes a traceback), REL in-place addends, and ``symbol+offset`` names.
"""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .errors import FormatError
from .fsutil import read_input

# ELF constants, for this reader and for the object writer (relobj.py).
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 0, 1, 2, 3, 4
SHT_NOTE, SHT_NOBITS, SHT_REL, SHT_GROUP, SHT_SYMTAB_SHNDX = 7, 8, 9, 17, 18
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_INFO_LINK = 0x1, 0x2, 0x4, 0x40
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON = 0, 0xFF00, 0xFFF1, 0xFFF2
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
ET_REL = 1
SHN_XINDEX = 0xFFFF
_ET = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
_STT = {0: "STT_NOTYPE", 1: "STT_OBJECT", 2: "STT_FUNC", 3: "STT_SECTION", 4: "STT_FILE", 5: "STT_COMMON",
        6: "STT_TLS", 10: "STT_GNU_IFUNC"}  # fmt: skip
_STB = {0: "STB_LOCAL", 1: "STB_GLOBAL", 2: "STB_WEAK", 10: "STB_GNU_UNIQUE"}
_SHN = {0: "SHN_UNDEF", 0xFFF1: "SHN_ABS", 0xFFF2: "SHN_COMMON"}  # what pyelftools called them

EM_386 = 3
EM_X86_64 = 62
PT_LOAD, PT_NOTE = 1, 4

R_386_NONE, R_386_32, R_386_PC32, R_386_GOT32, R_386_PLT32, R_386_GOTOFF, R_386_GOTPC = 0, 1, 2, 3, 4, 9, 10
R_386_16, R_386_PC16, R_386_8, R_386_PC8, R_386_GOT32X = 20, 21, 22, 23, 43
R_X86_64_PC32 = 2

# Width of the field each i386 relocation patches (its addend is in place: REL).
I386_RELOC_WIDTH = {R_386_32: 4, R_386_PC32: 4, R_386_GOT32: 4, R_386_PLT32: 4, R_386_GOTOFF: 4, R_386_GOTPC: 4,
                    R_386_GOT32X: 4, R_386_16: 2, R_386_PC16: 2, R_386_8: 1, R_386_PC8: 1}  # fmt: skip
# S + A - P: the field names the target's address relative to itself.
I386_PC_RELATIVE = frozenset({R_386_PC32, R_386_PC16, R_386_PC8})
# Every type measured from the field (PLT32 and GOTPC too), for code that
# must know where a PC-relative field's target lies.
I386_PC_BASED = I386_PC_RELATIVE | {R_386_PLT32, R_386_GOTPC}


@dataclass
class Section:
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int
    align: int
    _file: Elf = field(repr=False)

    @property
    def is_exec(self) -> bool:
        return bool(self.flags & SHF_EXECINSTR) and self.type != SHT_NOBITS

    @property
    def is_alloc(self) -> bool:
        return bool(self.flags & SHF_ALLOC)

    @cached_property
    def data(self) -> bytes:
        if self.type == SHT_NOBITS:
            return b""
        end = self.offset + self.size
        if end > len(self._file.raw):
            raise FormatError(f"{self._file.path}: section {self.name} extends past the end of the file")
        return self._file.raw[self.offset : end]


@dataclass(frozen=True)
class Symbol:
    index: int
    name: str
    value: int
    size: int
    type: str  # STT_FUNC, STT_NOTYPE, STT_OBJECT, STT_SECTION, ...
    bind: str
    shndx: int | str  # section index or 'SHN_UNDEF' / 'SHN_ABS' / 'SHN_COMMON'


@dataclass(frozen=True)
class ProgramHeader:
    type: int  # PT_LOAD, PT_NOTE, ...
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    flags: int  # PF_X 1, PF_W 2, PF_R 4


@dataclass(frozen=True)
class Note:
    section: str
    name: bytes  # without the terminating NUL
    type: int
    desc: bytes


@dataclass(frozen=True)
class Reloc:
    offset: int  # within the target section
    type: int
    sym: int  # symbol index
    addend: int  # explicit (RELA) or read in place (REL)
    width: int


class Elf:
    """An x86 ELF file held in memory."""

    def __init__(self, path: str | Path, raw: bytes | None = None) -> None:
        self.path = str(path)
        self.raw = raw if raw is not None else read_input(path)
        if self.raw[:4] != b"\x7fELF":
            raise FormatError(f"{self.path}: not an ELF file")
        try:
            self._parse()
        except FormatError:
            raise
        except (struct.error, ValueError, IndexError, UnicodeDecodeError) as e:
            raise FormatError(f"{self.path}: malformed ELF file ({e})") from None
        self._by_name = {}
        for s in self.sections:
            self._by_name.setdefault(s.name, s)

    def _parse(self) -> None:
        """The ELF header and section headers, read with struct: a fraction
        of pyelftools' cost, which afterburn cc pays for every object."""
        raw = self.raw
        ei_class, ei_data = raw[4], raw[5]
        if ei_class not in (1, 2):
            raise FormatError(f"{self.path}: malformed ELF file (class {ei_class})")
        self.elfclass = 32 if ei_class == 1 else 64
        self.little = ei_data == 1
        if ei_data != 1:
            raise FormatError(f"{self.path}: big-endian ELF is not x86")
        if ei_class == 1:
            e_type, e_machine, _, self.entry, _, shoff, _, _, _, _, shentsize, shnum, shstrndx = \
                struct.unpack_from("<HHIIIIIHHHHHH", raw, 16)  # fmt: skip
            shfmt = "<10I"
        else:
            e_type, e_machine, _, self.entry, _, shoff, _, _, _, _, shentsize, shnum, shstrndx = \
                struct.unpack_from("<HHIQQQIHHHHHH", raw, 16)  # fmt: skip
            shfmt = "<IIQQQQIIQQ"
        self.type = _ET.get(e_type, f"ET_{e_type:#x}")
        if e_machine not in (EM_386, EM_X86_64):
            raise FormatError(f"{self.path}: ELF machine {e_machine} is not x86")
        self.machine = e_machine
        self.bits = self.elfclass
        if (self.machine == EM_386) != (self.bits == 32):
            name = "EM_386" if e_machine == EM_386 else "EM_X86_64"
            raise FormatError(f"{self.path}: ELF class {self.bits} does not match machine {name}")
        if shoff == 0:
            shnum = 0
        elif shnum == 0:  # more than 0xff00 sections: the count is in section 0
            shnum = struct.unpack_from(shfmt, raw, shoff)[5]
        if shnum and (shentsize != struct.calcsize(shfmt) or shoff + shnum * shentsize > len(raw)):
            raise FormatError(f"{self.path}: malformed ELF file (section headers out of bounds)")
        headers = [struct.unpack_from(shfmt, raw, shoff + i * shentsize) for i in range(shnum)]
        if shstrndx == SHN_XINDEX and headers:
            shstrndx = headers[0][6]
        names = b""
        if headers and 0 < shstrndx < len(headers):
            h = headers[shstrndx]
            names = raw[h[4] : h[4] + h[5]]
        self.sections = []
        for i, h in enumerate(headers):
            name_off, typ, flags, addr, offset, size, link, info, align, entsize = h
            end = names.find(b"\0", name_off)
            name = names[name_off : end if end >= 0 else len(names)].decode("utf-8", "replace")
            self.sections.append(Section(i, name, typ, flags, addr, offset, size, link, info, entsize, align, self))

    # -- basic queries -----------------------------------------------------

    @property
    def is_relocatable(self) -> bool:
        return self.type == "ET_REL"

    def section(self, name: str) -> Section | None:
        return self._by_name.get(name)

    def exec_sections(self) -> list[Section]:
        return [s for s in self.sections if s.is_exec and s.size > 0]

    def section_at(self, addr: int) -> Section | None:
        """The allocated section containing virtual address ``addr`` (linked files)."""
        for s in self.sections:
            if s.is_alloc and s.addr <= addr < s.addr + s.size and s.type != SHT_NOBITS:
                return s
        return None

    # -- program headers and notes ---------------------------------------------

    @cached_property
    def header(self) -> dict[str, int]:
        """The ELF header's fields after e_ident, by their ELF names (``e_phoff``, ...)."""
        names = ("e_type", "e_machine", "e_version", "e_entry", "e_phoff", "e_shoff", "e_flags", "e_ehsize",
                 "e_phentsize", "e_phnum", "e_shentsize", "e_shnum", "e_shstrndx")  # fmt: skip
        fmt = "<HHIIIIIHHHHHH" if self.elfclass == 32 else "<HHIQQQIHHHHHH"
        return dict(zip(names, struct.unpack_from(fmt, self.raw, 16), strict=True))

    @cached_property
    def program_headers(self) -> list[ProgramHeader]:
        """Every program header, each checked to lie inside the file."""
        h = self.header
        fmt = "<8I" if self.elfclass == 32 else "<IIQQQQQQ"
        if h["e_phoff"] == 0 or h["e_phnum"] == 0:
            return []
        if h["e_phentsize"] != struct.calcsize(fmt) or h["e_phoff"] + h["e_phnum"] * h["e_phentsize"] > len(self.raw):
            raise FormatError(f"{self.path}: malformed program headers (out of bounds)")
        out = []
        for i in range(h["e_phnum"]):
            f = struct.unpack_from(fmt, self.raw, h["e_phoff"] + i * h["e_phentsize"])
            if self.elfclass == 32:
                ptype, offset, vaddr, paddr, filesz, memsz, flags, _ = f
            else:
                ptype, flags, offset, vaddr, paddr, filesz, memsz, _ = f
            if offset + filesz > len(self.raw) or (ptype == PT_LOAD and filesz > memsz):
                raise FormatError(f"{self.path}: segment {i} is truncated or inconsistent")
            out.append(ProgramHeader(ptype, offset, vaddr, paddr, filesz, memsz, flags))
        return out

    def segment_data(self, ph: ProgramHeader) -> bytes:
        return self.raw[ph.offset : ph.offset + ph.filesz]

    @cached_property
    def notes(self) -> list[Note]:
        """Every note in every SHT_NOTE section, bounded by its section."""
        out = []
        for sec in self.sections:
            if sec.type != SHT_NOTE:
                continue
            data, pos = sec.data, 0
            while pos + 12 <= len(data):
                namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
                name_at = pos + 12
                desc_at = name_at + ((namesz + 3) & ~3)
                end = desc_at + ((descsz + 3) & ~3)
                if desc_at + descsz > len(data):
                    raise FormatError(f"{self.path}: truncated note in {sec.name}")
                out.append(Note(sec.name, data[name_at : name_at + namesz].rstrip(b"\0"), ntype,
                                data[desc_at : desc_at + descsz]))  # fmt: skip
                pos = end
        return out

    # -- symbols -------------------------------------------------------------

    @cached_property
    def symbols(self) -> list[Symbol]:
        tab = self.section(".symtab")
        if tab is None or tab.type != SHT_SYMTAB:
            return []
        if not 0 < tab.link < len(self.sections):
            raise FormatError(f"{self.path}: malformed symbol table (no string table)")
        strtab = self.sections[tab.link].data
        fmt = "<IIIBBH" if self.bits == 32 else "<IBBHQQ"
        entsize = struct.calcsize(fmt)
        data = tab.data[: len(tab.data) - len(tab.data) % entsize]
        out = []
        try:
            for i, fields in enumerate(struct.iter_unpack(fmt, data)):
                if self.bits == 32:
                    name_off, value, size, info, _, shndx = fields
                else:
                    name_off, info, _, shndx, value, size = fields
                end = strtab.find(b"\0", name_off)
                name = strtab[name_off : end if end >= 0 else len(strtab)].decode("utf-8")
                out.append(Symbol(i, name, value, size, _STT.get(info & 0xF, f"STT_{info & 0xF}"),
                                  _STB.get(info >> 4, f"STB_{info >> 4}"), _SHN.get(shndx, shndx)))  # fmt: skip
        except (struct.error, UnicodeDecodeError) as e:
            raise FormatError(f"{self.path}: malformed symbol table ({e})") from None
        return out

    @cached_property
    def _symbol_index(self) -> dict[int, tuple[list[int], list[Symbol]]]:
        """Per section index: sorted starts and the named code/data symbols."""
        per: dict[int, list[Symbol]] = {}
        for s in self.symbols:
            if isinstance(s.shndx, int) and s.name and s.type in ("STT_FUNC", "STT_NOTYPE", "STT_OBJECT"):
                per.setdefault(s.shndx, []).append(s)
        out = {}
        for idx, syms in per.items():
            # Prefer functions, then globals, when two symbols share an address.
            syms.sort(key=lambda s: (s.value, s.type != "STT_FUNC", s.bind == "STB_LOCAL"))
            dedup: list[Symbol] = []
            for s in syms:
                if not dedup or dedup[-1].value != s.value:
                    dedup.append(s)
            out[idx] = ([s.value for s in dedup], dedup)
        return out

    def symbolize(self, section: Section, offset: int) -> str:
        """``name+0x12`` for an offset in ``section`` (an address in linked
        files is ``section.addr + offset``), or ``section+0x12``."""
        value = offset if self.is_relocatable else section.addr + offset
        starts, syms = self._symbol_index.get(section.index, ([], []))
        i = bisect.bisect_right(starts, value) - 1
        if i >= 0:
            s = syms[i]
            delta = value - s.value
            return s.name if delta == 0 else f"{s.name}+{delta:#x}"
        return f"{section.name}+{offset:#x}"

    def code_symbols(self, section: Section) -> list[Symbol]:
        """Named symbols inside ``section`` sorted by address."""
        return list(self._symbol_index.get(section.index, ([], []))[1])

    # -- relocations ---------------------------------------------------------

    def reloc_sections_for(self, section: Section) -> list[Section]:
        return [s for s in self.sections if s.type in (9, 4) and s.info == section.index]  # SHT_REL, SHT_RELA

    def relocations(self, section: Section) -> list[Reloc]:
        """All relocations that patch ``section``, with addends resolved."""
        out: list[Reloc] = []
        for rs in self.reloc_sections_for(section):
            rela = rs.type == 4
            entsize = rs.entsize or (24 if self.bits == 64 else (12 if rela else 8))
            if rs.offset + rs.size > len(self.raw) or entsize == 0:
                raise FormatError(f"{self.path}: relocation section {rs.name} is truncated")
            data = self.raw[rs.offset : rs.offset + rs.size]
            fmt = ("<QQq" if rela else "<QQ") if self.bits == 64 else ("<IIi" if rela else "<II")
            for off in range(0, len(data) - entsize + 1, entsize):
                fields = struct.unpack_from(fmt, data, off)
                r_offset, r_info = fields[0], fields[1]
                if self.bits == 64:
                    rtype, sym = r_info & 0xFFFFFFFF, r_info >> 32
                else:
                    rtype, sym = r_info & 0xFF, r_info >> 8
                width = I386_RELOC_WIDTH.get(rtype, 4) if self.bits == 32 else 4
                if rela:
                    addend = fields[2]
                else:
                    addend = _read_signed(section.data, r_offset, width, self.path, section.name)
                out.append(Reloc(r_offset, rtype, sym, addend, width))
        out.sort(key=lambda r: r.offset)
        return out


def _read_signed(data: bytes, off: int, width: int, path: str, name: str) -> int:
    if off < 0 or off + width > len(data):
        raise FormatError(f"{path}: relocation at {name}+{off:#x} lies outside the section")
    return int.from_bytes(data[off : off + width], "little", signed=True)


def open_elf(path: str | Path) -> Elf:
    return Elf(path)
