"""A small, careful model of an ELF relocatable object that can be written back.

The object annotator grows code sections, so almost every offset in the file
changes: section contents and sizes, relocation offsets and in-place
addends, symbol values and sizes.  This module holds an ET_REL object as
plain Python data (sections with their bytes, the symbol table, relocations
with decoded fields) and writes a new, valid file from it.  LIEF was the
obvious candidate, but its maintainers describe object-file modification as
limited, and what is needed here is narrow: ELF32, REL relocations, no
program headers.  ELF64/RELA would add the 64-bit struct layouts here and
explicit addends instead of in-place ones; the annotator above works on
offsets, addends and targets and would not change (docs/objects.md).

Section indices never change: new sections are appended, and a dropped
section keeps its header with empty contents, so ``st_shndx``, ``sh_link``,
``sh_info`` and group members stay valid without renumbering.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .elf import (
    EM_386, ET_REL, I386_RELOC_WIDTH, SHF_ALLOC, SHF_EXECINSTR, SHN_LORESERVE, SHT_GROUP, SHT_NOBITS, SHT_PROGBITS,
    SHT_REL, SHT_RELA, SHT_STRTAB, SHT_SYMTAB, SHT_SYMTAB_SHNDX, STT_SECTION,
)  # fmt: skip
from .errors import FormatError

@dataclass
class Section:
    index: int
    name: str
    type: int
    flags: int
    addr: int
    link: int
    info: int
    align: int
    entsize: int
    data: bytearray  # empty for SHT_NOBITS
    size: int  # == len(data) except for SHT_NOBITS
    name_off: int = 0

    @property
    def is_exec(self) -> bool:
        return bool(self.flags & SHF_EXECINSTR) and self.type == SHT_PROGBITS

    @property
    def is_alloc(self) -> bool:
        return bool(self.flags & SHF_ALLOC)


@dataclass
class Symbol:
    name: str
    value: int
    size: int
    info: int  # bind << 4 | type
    other: int
    shndx: int

    @property
    def bind(self) -> int:
        return self.info >> 4

    @property
    def type(self) -> int:
        return self.info & 0xF

    @property
    def defined_in(self) -> int | None:
        """The section index this symbol is defined in, if a real section."""
        return self.shndx if 0 < self.shndx < SHN_LORESERVE else None


@dataclass
class Reloc:
    offset: int  # in the target section
    type: int
    sym: int  # symbol-table index
    addend: int  # in place for REL (read from the target section), explicit for RELA

    @property
    def width(self) -> int:
        return I386_RELOC_WIDTH.get(self.type, 4)


@dataclass
class RelSection:
    """A SHT_REL(A) section with its entries decoded."""

    section: Section  # the relocation section itself
    target: int  # index of the section it patches
    relocs: list[Reloc] = field(default_factory=list)


class RelObject:
    """An ELF32 ET_REL x86 object, editable and writable."""

    def __init__(self, raw: bytes, path: str = "<object>") -> None:
        self.path = path
        self.raw = raw
        if raw[:4] != b"\x7fELF":
            raise FormatError(f"{path}: not an ELF file")
        if len(raw) < 52:
            raise FormatError(f"{path}: truncated ELF header")
        if raw[4] != 1:
            raise FormatError(f"{path}: 64-bit objects are not supported yet (ELF32 i386 only)")
        if raw[5] != 1:
            raise FormatError(f"{path}: big-endian ELF is not x86")
        (self.e_type, self.e_machine, self.e_version, _entry, _phoff, e_shoff, self.e_flags, _ehsize, _phentsize,
         _phnum, e_shentsize, e_shnum, self.e_shstrndx) = struct.unpack_from("<HHIIIIIHHHHHH", raw, 16)  # fmt: skip
        self.ident = raw[:16]
        if self.e_type != ET_REL:
            raise FormatError(f"{path}: not a relocatable object (ELF type {self.e_type})")
        if self.e_machine != EM_386:
            raise FormatError(f"{path}: ELF machine {self.e_machine} is not i386")
        if e_shentsize != 40 or e_shoff + e_shnum * 40 > len(raw) or e_shnum == 0:
            raise FormatError(f"{path}: malformed section header table")
        headers = [struct.unpack_from("<10I", raw, e_shoff + 40 * i) for i in range(e_shnum)]
        if self.e_shstrndx >= e_shnum:
            raise FormatError(f"{path}: bad section-name table index")
        sh = headers[self.e_shstrndx]
        shstr = raw[sh[4] : sh[4] + sh[5]]
        self.sections: list[Section] = []
        for i, (name_off, typ, flags, addr, off, size, link, info, align, entsize) in enumerate(headers):
            if typ != SHT_NOBITS and off + size > len(raw):
                raise FormatError(f"{path}: section {i} extends past the end of the file")
            data = bytearray() if typ == SHT_NOBITS else bytearray(raw[off : off + size])
            name = _cstr(shstr, name_off)
            self.sections.append(Section(i, name, typ, flags, addr, link, info, align, entsize, data, size, name_off))
        if any(s.type == SHT_SYMTAB_SHNDX for s in self.sections):
            raise FormatError(f"{path}: SHT_SYMTAB_SHNDX (more than 65280 sections) is not supported")
        symtabs = [s for s in self.sections if s.type == SHT_SYMTAB]
        if len(symtabs) > 1:
            raise FormatError(f"{path}: {len(symtabs)} symbol tables")
        if not symtabs:
            # Possible in a stripped object with no relocations (GRUB's
            # all_video.mod); records need one, so make an empty table.
            strtab = self.add_section(".strtab", SHT_STRTAB, 0, b"\0")
            symtabs = [self.add_section(".symtab", SHT_SYMTAB, 0, bytes(16), align=4, link=strtab.index, info=1,
                                        entsize=16)]  # fmt: skip
        self.symtab = symtabs[0]
        if self.symtab.link == self.e_shstrndx or self.symtab.link >= len(self.sections):
            raise FormatError(f"{path}: the symbol table shares the section-name string table (not supported)")
        self.strtab = self.sections[self.symtab.link]
        self.symbols = self._read_symbols()
        self.rel_sections: list[RelSection] = []
        for s in self.sections:
            if s.type == SHT_RELA:
                raise FormatError(f"{path}: RELA relocations ({s.name}) are not supported for i386 yet")
            if s.type == SHT_REL:
                if s.info >= len(self.sections) or s.link != self.symtab.index:
                    raise FormatError(f"{path}: relocation section {s.name} names a bad section or symbol table")
                self.rel_sections.append(RelSection(s, s.info, self._read_relocs(s)))

    # -- reading -------------------------------------------------------------------------

    def _read_symbols(self) -> list[Symbol]:
        data, out = self.symtab.data, []
        for off in range(0, len(data) - 15, 16):
            name_off, value, size, info, other, shndx = struct.unpack_from("<IIIBBH", data, off)
            out.append(Symbol(_cstr(self.strtab.data, name_off), value, size, info, other, shndx))
        return out

    def _read_relocs(self, s: Section) -> list[Reloc]:
        target = self.sections[s.info]
        out = []
        for off in range(0, len(s.data) - 7, 8):
            r_offset, r_info = struct.unpack_from("<II", s.data, off)
            rtype, sym = r_info & 0xFF, r_info >> 8
            if sym >= len(self.symbols):
                raise FormatError(f"{self.path}: relocation in {s.name} names symbol {sym}, which does not exist")
            width = I386_RELOC_WIDTH.get(rtype)
            if width is None:
                raise FormatError(f"{self.path}: relocation type {rtype} in {s.name} is not supported")
            if target.type == SHT_NOBITS or r_offset + width > len(target.data):
                raise FormatError(f"{self.path}: relocation at {target.name}+{r_offset:#x} lies outside the section")
            addend = int.from_bytes(target.data[r_offset : r_offset + width], "little", signed=True)
            out.append(Reloc(r_offset, rtype, sym, addend))
        return out

    # -- queries -------------------------------------------------------------------------

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def relocs_for(self, index: int) -> list[Reloc]:
        return [r for rs in self.rel_sections if rs.target == index for r in rs.relocs]

    def rel_section_for(self, index: int) -> RelSection | None:
        return next((rs for rs in self.rel_sections if rs.target == index), None)

    def used_reloc_types(self) -> set[int]:
        return {r.type for rs in self.rel_sections for r in rs.relocs}

    def section_symbol(self, index: int) -> int | None:
        return next((i for i, s in enumerate(self.symbols) if s.type == STT_SECTION and s.shndx == index), None)

    # -- editing -------------------------------------------------------------------------

    def add_section(self, name: str, typ: int, flags: int, data: bytes, align: int = 1, link: int = 0,
                    info: int = 0, entsize: int = 0) -> Section:  # fmt: skip
        s = Section(len(self.sections), name, typ, flags, 0, link, info, align, entsize, bytearray(data), len(data))
        self.sections.append(s)
        return s

    def add_local_symbol(self, sym: Symbol) -> int:
        """Insert a local symbol before the first global one (ELF requires
        locals first) and renumber every relocation that names a later one."""
        first_global = self.symtab.info
        self.symbols.insert(first_global, sym)
        for rs in self.rel_sections:
            for r in rs.relocs:
                if r.sym >= first_global:
                    r.sym += 1
        for s in self.sections:
            # A section group names its signature symbol by index (COMDAT:
            # gcc's __x86.get_pc_thunk.* in every object that uses one).
            if s.type == SHT_GROUP and s.info >= first_global:
                s.info += 1
        self.symtab.info += 1
        return first_global

    # -- writing -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The object as a file: every relocation's addend written back in
        place, the symbol and relocation tables regenerated, sections laid
        out in index order after the ELF header, section headers last."""
        self._write_addends()
        self._write_symtab()
        for rs in self.rel_sections:
            rs.section.data = bytearray(b"".join(struct.pack("<II", r.offset, (r.sym << 8) | r.type)
                                                 for r in rs.relocs))  # fmt: skip
        shstr = self.sections[self.e_shstrndx]
        names = bytearray(b"\0")
        offsets: dict[str, int] = {"": 0}
        for s in self.sections:
            if s.name not in offsets:
                offsets[s.name] = len(names)
                names += s.name.encode() + b"\0"
            s.name_off = offsets[s.name]
        shstr.data = names
        out = bytearray(52)
        layout = []
        for s in self.sections:
            if s.type == SHT_NOBITS:
                s.size = max(s.size, 0)
            else:
                s.size = len(s.data)
            if s.index == 0 or s.type == SHT_NOBITS:
                layout.append(len(out) if s.index else 0)
                continue
            align = max(s.align, 1)
            out += b"\0" * (-len(out) % align)
            layout.append(len(out))
            out += s.data
        out += b"\0" * (-len(out) % 4)
        shoff = len(out)
        for s, off in zip(self.sections, layout, strict=True):
            out += struct.pack("<10I", s.name_off, s.type, s.flags, s.addr, off if s.index else 0, s.size, s.link,
                               s.info, s.align, s.entsize)  # fmt: skip
        header = struct.pack("<HHIIIIIHHHHHH", ET_REL, self.e_machine, self.e_version, 0, 0, shoff, self.e_flags,
                             52, 0, 0, 40, len(self.sections), self.e_shstrndx)  # fmt: skip
        out[:52] = self.ident + header
        return bytes(out)

    def _write_addends(self) -> None:
        for rs in self.rel_sections:
            target = self.sections[rs.target]
            for r in rs.relocs:
                w = r.width
                lo, hi = -(1 << (8 * w - 1)), (1 << (8 * w)) - 1
                if not lo <= r.addend <= hi:
                    raise FormatError(f"{self.path}: addend {r.addend} does not fit the {w}-byte field at "
                                      f"{target.name}+{r.offset:#x}")  # fmt: skip
                target.data[r.offset : r.offset + w] = (r.addend & ((1 << (8 * w)) - 1)).to_bytes(w, "little")

    def _write_symtab(self) -> None:
        strtab = bytearray(b"\0")
        seen: dict[str, int] = {"": 0}
        out = bytearray()
        for s in self.symbols:
            if s.name not in seen:
                seen[s.name] = len(strtab)
                strtab += s.name.encode() + b"\0"
            out += struct.pack("<IIIBBH", seen[s.name], s.value, s.size, s.info, s.other, s.shndx)
        self.symtab.data = out
        self.strtab.data = strtab


def _cstr(data: bytes | bytearray, off: int) -> str:
    if off >= len(data):
        return ""
    end = data.find(b"\0", off)
    return bytes(data[off : end if end >= 0 else len(data)]).decode("utf-8", errors="replace")
