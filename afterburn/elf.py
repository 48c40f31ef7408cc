"""A thin, safe view of an x86 ELF file: sections, symbols, relocations.

pyelftools does the parsing; this module adds what every Afterburn command
needs and pyelftools leaves out: validation with one-line errors (garbage in
never becomes a traceback), REL in-place addends, and ``symbol+offset`` names.
"""
from __future__ import annotations

import bisect
import io
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

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
            self._ef = ELFFile(io.BytesIO(self.raw))
            machine = self._ef["e_machine"]
            self.elfclass = self._ef.elfclass
            self.little = self._ef.little_endian
            self.type = self._ef["e_type"]
            self.entry = self._ef["e_entry"]
            self.sections = [self._section(i, s) for i, s in enumerate(self._ef.iter_sections())]
        except FormatError:
            raise
        except (ELFError, struct.error, ValueError, KeyError, IndexError, AssertionError, TypeError) as e:
            raise FormatError(f"{self.path}: malformed ELF file ({e})") from None
        if machine not in ("EM_386", "EM_X86_64"):
            raise FormatError(f"{self.path}: ELF machine {machine} is not x86")
        if not self.little:
            raise FormatError(f"{self.path}: big-endian ELF is not x86")
        self.machine = EM_386 if machine == "EM_386" else EM_X86_64
        self.bits = 32 if self.elfclass == 32 else 64
        if (self.machine == EM_386) != (self.bits == 32):
            raise FormatError(f"{self.path}: ELF class {self.bits} does not match machine {machine}")
        self._by_name = {}
        for s in self.sections:
            self._by_name.setdefault(s.name, s)

    def _section(self, index: int, s) -> Section:
        h = s.header
        return Section(
            index, s.name, _sh_type(h["sh_type"]), h["sh_flags"], h["sh_addr"], h["sh_offset"], h["sh_size"],
            h["sh_link"], h["sh_info"], h["sh_entsize"], h["sh_addralign"], self,
        )  # fmt: skip

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
        """The ELF header's fields, by their ELF names (``e_phoff``, ...)."""
        return {k: v for k, v in self._ef.header.items() if isinstance(v, int)}

    @cached_property
    def program_headers(self) -> list[ProgramHeader]:
        """Every program header, each checked to lie inside the file."""
        out = []
        try:
            segments = list(self._ef.iter_segments())
        except (ELFError, struct.error, ValueError, KeyError) as e:
            raise FormatError(f"{self.path}: malformed program headers ({e})") from None
        for i, seg in enumerate(segments):
            h = seg.header
            ptype = h["p_type"] if isinstance(h["p_type"], int) else _PT.get(h["p_type"], 0x60000000)
            if h["p_offset"] + h["p_filesz"] > len(self.raw) or (ptype == PT_LOAD and h["p_filesz"] > h["p_memsz"]):
                raise FormatError(f"{self.path}: segment {i} is truncated or inconsistent")
            out.append(ProgramHeader(ptype, h["p_offset"], h["p_vaddr"], h["p_paddr"], h["p_filesz"], h["p_memsz"],
                                     h["p_flags"]))  # fmt: skip
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
        tab = self._ef.get_section_by_name(".symtab")
        if tab is None:
            return []
        out = []
        try:
            for i, sym in enumerate(tab.iter_symbols()):
                e = sym.entry
                out.append(Symbol(i, sym.name, e["st_value"], e["st_size"], e["st_info"]["type"],
                                  e["st_info"]["bind"], e["st_shndx"]))  # fmt: skip
        except (ELFError, struct.error, ValueError, UnicodeDecodeError) as e:
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


_PT = {"PT_NULL": 0, "PT_LOAD": 1, "PT_DYNAMIC": 2, "PT_INTERP": 3, "PT_NOTE": 4, "PT_SHLIB": 5, "PT_PHDR": 6,
       "PT_TLS": 7, "PT_GNU_EH_FRAME": 0x6474E550, "PT_GNU_STACK": 0x6474E551, "PT_GNU_RELRO": 0x6474E552,
       "PT_GNU_PROPERTY": 0x6474E553}  # fmt: skip


def _sh_type(t) -> int:
    """pyelftools gives names for known types; we want the numbers."""
    if isinstance(t, int):
        return t
    names = {"SHT_NULL": 0, "SHT_PROGBITS": 1, "SHT_SYMTAB": 2, "SHT_STRTAB": 3, "SHT_RELA": 4, "SHT_HASH": 5,
             "SHT_DYNAMIC": 6, "SHT_NOTE": 7, "SHT_NOBITS": 8, "SHT_REL": 9, "SHT_SHLIB": 10, "SHT_DYNSYM": 11,
             "SHT_INIT_ARRAY": 14, "SHT_FINI_ARRAY": 15, "SHT_PREINIT_ARRAY": 16, "SHT_GROUP": 17,
             "SHT_SYMTAB_SHNDX": 18}  # fmt: skip
    return names.get(t, 0x60000000)


def open_elf(path: str | Path) -> Elf:
    return Elf(path)
