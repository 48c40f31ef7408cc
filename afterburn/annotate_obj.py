"""Annotating relocatable objects we cannot recompile (.o, .ko, GRUB .mod).

Padding a sensitive instruction in an object moves everything after it, and
on real i386 modules 92% of sensitive instructions lie inside the span of a
branch gas resolved without a relocation (research/corpus.md).  So the
object is taken apart and put back together:

1. **Code map.**  Each executable section is decoded by a linear sweep that
   restarts at every symbol.  Data symbols, code blobs that are copied
   elsewhere at run time (``X_start``..``X_end`` symbol pairs, e.g. GRUB's
   relocator), and bytes that do not decode stay *opaque*: moved as a block,
   never decoded or padded.  Every gas-resolved branch must land on an
   instruction start (or inside an opaque block); if one does not, the
   sweep has misread the section (16-bit code, data in code), and the whole
   section is left unchanged, its sites listed as skipped.
2. **Sites and layout.**  Every sensitive instruction (``afterburn.isa``)
   becomes a site with its NOP pad, before or after it as the site format
   says, except where padding would break a contract: inside an
   ``.altinstructions`` original range or a ``.parainstructions`` patch
   site (their lengths are recorded elsewhere), or in
   ``.altinstr_replacement`` (copied over an original of fixed length).
   Gas-resolved branches get new displacements; a rel8 that no longer
   reaches is relaxed to rel32 (``loop``/``jecxz``, which have no rel32
   form, become ``loop 1f; jmp 2f; 1: jmp target; 2:``), until nothing
   changes.
3. **Remapping.**  Every relocation that lies in moved code gets its new
   offset; every relocation whose symbol lies in moved code gets its
   in-place addend remapped, whichever section holds it (jump tables in
   ``.rodata``, ``__ex_table``, ``__jump_table``, ``__bug_table``,
   ``.smp_locks``, ``.altinstructions``, ``__mcount_loc``, data, ...).
   Symbol values and sizes follow.  ``.eh_frame``/``.debug_frame`` are
   re-encoded (``afterburn.cfi``); other DWARF is dropped with a message
   (its addresses would be stale).
4. **Records.**  ``.afterburn`` gets one record per site, each with an
   ``R_386_PC32`` against its section, skipped sites are bracketed as
   excluded regions, and ``.afterburn.note`` carries the format version.

The output uses no relocation type the input did not (GRUB's loader accepts
only R_386_32 and R_386_PC32), and a module signature trailer is dropped
(the signature would no longer match) with a message.  ``afterburn verify
--against`` (``afterburn.equiv``) proves the result equivalent to the input.
"""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field

from . import cfi, decode, isa, refs, sitefmt
from .elf import (
    I386_PC_BASED, R_386_PC32, SHF_ALLOC, SHF_INFO_LINK, SHT_NOTE, SHT_PROGBITS, SHT_REL, STT_FUNC, STT_NOTYPE,
    STT_OBJECT, STT_SECTION,
)  # fmt: skip
from .errors import FormatError
from .annotate_asm import alternatives_replacement
from .modsig import strip_module_signature
from .nops import nop_bytes
from .relobj import RelObject, RelSection, Reloc, Symbol


INSN, SITE, BRANCH, OPAQUE = "insn", "site", "branch", "opaque"
_SHORT_JMP, _SHORT_JCC, _LOOP, _NEAR = "jmp8", "jcc8", "loop8", "near"  # decode.direct_branch forms
_LOOP32 = "loop32"  # loop/jecxz relaxed: loop 1f; jmp 2f; 1: jmp rel32; 2:
_CANDIDATES = decode.candidate_mnemonics(32)


@dataclass
class Skipped:
    section: str
    offset: int  # in the input
    symbol: str
    kind: str
    reason: str
    index: int = field(default=0, repr=False)  # section index
    length: int = field(default=0, repr=False)  # instruction bytes
    why: int = field(default=sitefmt.Why.UNCHANGED, repr=False)  # recorded with its excluded region

    def to_json(self) -> dict:
        return {"section": self.section, "offset": self.offset, "symbol": self.symbol, "kind": self.kind,
                "reason": self.reason}  # fmt: skip


@dataclass
class ObjResult:
    data: bytes
    sites: dict[str, int] = field(default_factory=dict)  # kind -> count
    skipped: list[Skipped] = field(default_factory=list)
    bytes_added: int = 0
    relaxed: int = 0
    messages: list[str] = field(default_factory=list)
    already_annotated: bool = False

    @property
    def site_count(self) -> int:
        return sum(self.sites.values())


def code_blobs(syms: list[Symbol], n: int, data: bytes | None = None, relocated: set[int] | None = None
               ) -> list[tuple[int, int, str, str]]:  # fmt: skip
    """Code copied elsewhere at run time, whose internal layout and size the
    assembler computed where no relocation shows it: (start, end, name, name)
    for ``X_start``/``X_end`` (or ``Xstart``/``Xend``) pairs of *labels*, i.e.
    symbols that are not functions (GRUB's relocator and int15 hook; a pair
    of functions named so, like Linux's ``*_transaction_start``, is not a
    blob).  Overlapping pairs merge.

    Given the section's bytes (and its relocated offsets), a pair that a
    gas-resolved branch crosses is no blob: code copied elsewhere cannot
    reach, or be reached by, a relative branch nobody relocates.  Linux's
    ``__irqentry_text_start``/``_end`` only mark a range, and its stubs jump
    out to ``handle_exception``."""
    labels = {s.name: s for s in syms if s.type != STT_FUNC and not (s.type == STT_OBJECT and s.size)}
    out = []
    for name, s in labels.items():
        for suffix in ("_start", "start"):
            if name.endswith(suffix):
                end = labels.get(name[: -len(suffix)] + suffix.replace("start", "end"))
                if end is not None and s.value < end.value <= n:
                    out.append((s.value, end.value, name, end.name))
                break
    if data is not None and out:
        crossing = _resolved_branches(data, relocated or set(), {s.value for s in syms})
        out = [b for b in out if not any((b[0] <= src < b[1]) != (b[0] <= t < b[1]) for src, t in crossing)]
    out.sort()
    merged: list[tuple[int, int, str, str]] = []
    for b in out:
        if merged and b[0] < merged[-1][1]:
            a = merged[-1]
            merged[-1] = (a[0], max(a[1], b[1]), a[2], b[3] if b[1] > a[1] else a[3])
        else:
            merged.append(b)
    return merged


def _resolved_branches(data: bytes, relocated: set[int], starts: set[int]) -> list[tuple[int, int]]:
    """(branch, target) for every direct branch gas resolved (no relocation
    in it), decoding linearly from every symbol."""
    out = []
    bounds = sorted({0, len(data)} | {s for s in starts if 0 <= s < len(data)})
    for a, b in zip(bounds, bounds[1:], strict=False):
        for off, size, _, _ in decode.lite_run(data[:b], a, b):
            t = decode.direct_branch(data[off : off + size], off + size)
            if t is not None and not any(off + i in relocated for i in range(1, size)):
                out.append((off, t[0]))
    return out


class _Refuse(Exception):
    """This section cannot be annotated safely: leave it as it is."""


@dataclass
class Unit:
    old: int
    size: int
    kind: str
    insn: object = None
    site_kind: isa.Kind | None = None
    pad: int = 0
    pad_before: bool = False
    target: int | None = None  # branch: old target offset
    form: str = ""  # branch encoding now
    insn_form: str = ""  # branch encoding in the input
    fixed: bool = False  # inside a region whose length must not change
    mnemonic: str = ""
    new: int = 0
    new_size: int = 0

    @property
    def end(self) -> int:
        return self.old + self.size


class SectionMap:
    """Old offset -> new offset for one rewritten section."""

    def __init__(self, units: list[Unit], old_len: int, new_len: int) -> None:
        self.units = units
        self.starts = [u.old for u in units]
        self.old_len, self.new_len = old_len, new_len

    def _unit(self, off: int) -> Unit:
        i = bisect.bisect_right(self.starts, off) - 1
        if i < 0:
            raise FormatError(f"offset {off:#x} precedes the section")
        return self.units[i]

    def inner(self, off: int) -> int:
        """Byte-exact: where the byte at ``off`` went (relocation fields)."""
        if off >= self.old_len:
            return self.new_len + (off - self.old_len)
        u = self._unit(off)
        d = off - u.old
        if u.kind == SITE and u.pad_before:
            return u.new + u.pad + d
        return u.new + min(d, max(u.new_size - 1, 0))

    def start(self, off: int) -> int:
        """Where control or a pointer to ``off`` must go now: the start of
        its unit (a padded site starts with its pad when the pad comes first)."""
        if off >= self.old_len:
            return self.new_len + (off - self.old_len)
        u = self._unit(off)
        return u.new if off == u.old else self.inner(off)

    def insn(self, off: int) -> int:
        """Instruction semantics (exception tables name the faulting
        instruction itself, after a pad that comes first)."""
        if off >= self.old_len:
            return self.start(off)
        u = self._unit(off)
        if off == u.old and u.kind == SITE and u.pad_before:
            return u.new + u.pad
        return self.start(off)


class FrameMap:
    """Old offset -> new offset in a rewritten frame section (per record)."""

    def __init__(self, moved: dict[int, int], old_len: int, new_len: int) -> None:
        self.starts = sorted(moved)
        self.moved = moved
        self.old_len, self.new_len = old_len, new_len

    def inner(self, off: int) -> int:
        i = bisect.bisect_right(self.starts, off) - 1
        if i < 0:
            return off
        base = self.starts[i]
        return self.moved[base] + (off - base)

    start = insn = inner


def strip_signature(raw: bytes, path: str = "<object>") -> tuple[bytes, bool]:
    """(the object without a module signature trailer, whether it had one)."""
    try:
        out = strip_module_signature(raw)
    except ValueError as e:
        raise FormatError(f"{path}: bad module signature trailer ({e})") from None
    return out, len(out) != len(raw)


def annotate_object(raw: bytes, path: str = "<object>") -> ObjResult:
    """Annotate one ELF32 i386 relocatable object; returns the new file's bytes."""
    raw, signed = strip_signature(raw, path)
    obj = RelObject(raw, path)
    if obj.section(sitefmt.NOTE_SECTION) is not None:
        return ObjResult(raw, already_annotated=True)
    return _Annotator(obj, path, signed).run()


class _Annotator:
    def __init__(self, obj: RelObject, path: str, signed: bool) -> None:
        self.obj, self.path, self.signed = obj, path, signed
        self.result = ObjResult(b"")
        self.units: dict[int, list[Unit]] = {}
        self.old_data: dict[int, bytes] = {}
        self.excluded: list[tuple[int, int, int, int]] = []  # (section, old start, old end, Why): no records inside
        # .altinstructions originals: (section, start, instrlen, offset of the instrlen byte)
        self.alt_originals: list[tuple[int, int, int, int]] = []
        self.blobs: list[tuple[int, int, int, str]] = []  # of the section being mapped
        self.maps: dict[int, SectionMap | FrameMap] = {}
        self._targets: dict[int, set[int]] | None = None
        self._refs_cache: dict[int, list[refs.Ref]] | None = None
        self._entered_cache: dict[int, set[int]] = {}
        syms = obj.symbols
        self.sym_by_sec: dict[int, list[Symbol]] = {}
        for s in syms:
            if s.defined_in is not None and s.type in (STT_FUNC, STT_NOTYPE, STT_OBJECT) and s.name:
                self.sym_by_sec.setdefault(s.defined_in, []).append(s)
        for lst in self.sym_by_sec.values():
            lst.sort(key=lambda s: (s.value, s.type != STT_FUNC))

    # -- entry ---------------------------------------------------------------------------

    def run(self) -> ObjResult:
        obj, res = self.obj, self.result
        if self.signed:
            res.messages.append("module signature dropped (it would no longer match)")
        fixed = self._fixed_ranges()
        ambiguous = self._ambiguous_references()
        for sec in obj.sections:
            if not sec.is_exec or not sec.data:
                continue
            try:
                if sec.index in ambiguous:
                    raise _Refuse(ambiguous[sec.index])
                units = self._code_units(sec, fixed.get(sec.index, []))
                self._lay_out(sec, units)
                self._check_alt_lengths(sec, units)
            except _Refuse as e:
                self._skip_all(sec, str(e))
                continue
            for idx, a, b, why in self.blobs:
                self.excluded.append((idx, a, b, sitefmt.Why.UNCHANGED))
                self._list_sensitive(sec, a, b, why)
            if any(u.kind == SITE for u in units):
                self.units[sec.index] = units
        for idx, units in self.units.items():
            sec = obj.sections[idx]
            self.old_data[idx] = bytes(sec.data)
            new = self._emit_section(self.old_data[idx], units)
            self.maps[idx] = SectionMap(units, len(sec.data), len(new))
            res.bytes_added += len(new) - len(sec.data)
            sec.data = new
            sec.size = len(new)
        if self.units:
            self._alt_lengths()
            self._frames()
            self._drop_debug()
            self._remap_relocations()
            self._remap_symbols()
        self._records()
        res.data = obj.to_bytes()
        return res

    # -- which code keeps its length ------------------------------------------------------

    def _fixed_ranges(self) -> dict[int, list[tuple[int, int, str, int]]]:
        """Per section: (start, end, why, Why) ranges where no site may be
        padded.  Also notes every .altinstructions original, whose length
        field follows the code (docs/design.md, "Alternatives")."""
        obj = self.obj
        out: dict[int, list[tuple[int, int, str, int]]] = {}
        alt = obj.section(".altinstructions")
        if alt is not None:
            relocs = sorted(obj.relocs_for(alt.index), key=lambda r: r.offset)
            stride = refs.table_stride([r.offset for r in relocs], len(alt.data))
            for r in relocs:
                if stride and r.offset % stride == 0 and r.offset + 10 < len(alt.data):
                    where = self._reloc_target(r)
                    if where is not None:
                        self.alt_originals.append((where[0], where[1], alt.data[r.offset + 10], r.offset + 10))
        para = obj.section(".parainstructions")
        if para is not None:
            for r in obj.relocs_for(para.index):
                if r.offset % 8 == 0:
                    where = self._reloc_target(r)
                    if where is not None and r.offset + 5 < len(para.data):
                        n = para.data[r.offset + 5]
                        out.setdefault(where[0], []).append((where[1], where[1] + n,
                                                             "inside a .parainstructions patch site",
                                                             sitefmt.Why.UNCHANGED))  # fmt: skip
        for sec in obj.sections:
            if sec.is_exec and alternatives_replacement(sec.name) and sec.data:
                out.setdefault(sec.index, []).append((0, len(sec.data), "in .altinstr_replacement (copied over the "
                                                      "original instructions at boot)", sitefmt.Why.ALTERNATIVES))
                self.excluded.append((sec.index, 0, len(sec.data), sitefmt.Why.ALTERNATIVES))
        return out

    def _ambiguous_references(self) -> dict[int, str]:
        """Code sections named by a section-relative address that lies
        outside them: ``.head.text + 0x4000005a`` is what gas makes of
        Linux's ``_pa(1f)`` (a label minus PAGE_OFFSET).  Which instruction
        it means cannot be told, so such a section cannot move."""
        obj = self.obj
        out: dict[int, str] = {}
        for rs in obj.rel_sections:
            src = obj.sections[rs.target]
            if not src.is_alloc:
                continue
            data = bytes(src.data)
            for r in rs.relocs:
                sym = obj.symbols[r.sym]
                idx = sym.defined_in
                if idx is None or sym.type != STT_SECTION or not obj.sections[idx].is_exec or idx in out:
                    continue
                k = self._pc_bias(rs.target, r.offset, data) if r.type in I386_PC_BASED else 0
                where = sym.value + r.addend + k
                if not 0 <= where <= len(obj.sections[idx].data):
                    out[idx] = (f"{src.name}+{r.offset:#x} refers to {obj.sections[idx].name}"
                                f"{where:+#x}, outside the section: which instruction it means cannot be told")
        return out

    def _check_alt_lengths(self, sec, units: list[Unit]) -> None:
        """An .altinstructions original's length is one byte: it must still fit."""
        if not units or not any(u.kind == SITE for u in units):
            return
        smap = SectionMap(units, len(sec.data), units[-1].new + units[-1].new_size)
        for idx, start, n, _ in self.alt_originals:
            if idx == sec.index and smap.start(start + n) - smap.start(start) > 255:
                raise _Refuse(f"the .altinstructions original at {sec.name}+{start:#x} would grow past 255 bytes")

    def _alt_lengths(self) -> None:
        """Originals are code like any other (their sites are padded); the
        length each .altinstructions entry records follows them."""
        alt = self.obj.section(".altinstructions")
        for idx, start, n, at in self.alt_originals:
            smap = self.maps.get(idx)
            if isinstance(smap, SectionMap):
                alt.data[at] = smap.start(start + n) - smap.start(start)

    def _reloc_target(self, r: Reloc) -> tuple[int, int] | None:
        sym = self.obj.symbols[r.sym]
        sec = sym.defined_in
        if sec is None:
            return None
        return sec, sym.value + r.addend

    # -- the code map --------------------------------------------------------------------

    def _code_units(self, sec, fixed: list[tuple[int, int, str]]) -> list[Unit]:
        self._sec_name = sec.name
        data = bytes(sec.data)
        n = len(data)
        relocs = self.obj.relocs_for(sec.index)
        reloc_at = sorted(r.offset for r in relocs)
        opaque: list[tuple[int, int, str]] = []
        syms = self.sym_by_sec.get(sec.index, [])
        starts = {0}
        for s in syms:
            if 0 <= s.value < n:
                if s.type == STT_OBJECT and s.size:
                    opaque.append((s.value, min(n, s.value + s.size), f"data object {s.name}"))
                else:
                    starts.add(s.value)
        blobs = self._blobs(syms, n, data, set(reloc_at))
        self.blobs = [(sec.index, a, b, why) for a, b, why in blobs]
        opaque += blobs
        opaque.sort()
        cuts = set(starts)
        for a, b, _ in opaque:
            cuts.update((a, b))
        cuts = sorted(c for c in cuts if 0 <= c < n)
        units: list[Unit] = []
        pos = 0
        for ci, c in enumerate(cuts):
            end = cuts[ci + 1] if ci + 1 < len(cuts) else n
            if pos > c:  # an instruction ran across this cut
                if pos >= end:
                    continue
                c = pos
            blob = next((o for o in opaque if o[0] <= c < o[1]), None)
            if blob is not None:
                units.append(Unit(c, min(end, blob[1]) - c, OPAQUE))
                pos = min(end, blob[1])
                continue
            pos = self._decode_run(data, c, end, units)
        units.sort(key=lambda u: u.old)
        self._merge_opaque(units)
        padding = self._padding(sec, units, reloc_at, [(s.value, s.size) for s in syms])
        self._classify(sec, units, reloc_at, fixed, padding)
        return units

    def _padding(self, sec, units: list[Unit], reloc_at: list[int], symbols: list[tuple[int, int]]) -> set[int]:
        """The 0xCC bytes that are padding, not int3 (decode.int3_padding):
        named means a symbol, a gas-resolved branch or a relocation points there."""
        data = bytes(sec.data)
        relocated = set(reloc_at)
        named = {0} | self._reloc_targets().get(sec.index, set())
        for u in units:
            if u.kind == INSN and not any(u.old + i in relocated for i in range(1, u.size)):
                b = decode.direct_branch(data[u.old : u.end], u.end)
                if b is not None:
                    named.add(b[0])
        insns = [(u.old, u.end, u.mnemonic) for u in units if u.kind == INSN]
        return decode.int3_padding(insns, data, named, symbols)

    def _reloc_targets(self) -> dict[int, set[int]]:
        """Per section: the offsets relocations from anywhere point at."""
        if self._targets is None:
            obj = self.obj
            out: dict[int, set[int]] = {}
            for rs in obj.rel_sections:
                old = bytes(obj.sections[rs.target].data)
                for r in rs.relocs:
                    where = self._reloc_target(r)
                    if where is None:
                        continue
                    k = self._pc_bias(rs.target, r.offset, old) if r.type in I386_PC_BASED else 0
                    out.setdefault(where[0], set()).add(where[1] + k)
            self._targets = out
        return self._targets

    def _blobs(self, syms: list[Symbol], n: int, data: bytes, relocated: set[int]) -> list[tuple[int, int, str]]:
        return [(a, b, f"inside {x}..{y}, code copied elsewhere at run time (its layout must not change)")
                for a, b, x, y in code_blobs(syms, n, data, relocated)]  # fmt: skip

    def _decode_run(self, data: bytes, start: int, end: int, units: list[Unit]) -> int:
        """Decode [start, end) into units.  ``disasm_lite`` (no objects, no
        detail) is ~5x faster; full decoding happens only for the few
        instructions whose mnemonic could be sensitive."""
        pos = start
        for address, size, mnemonic, _ in decode.lite_run(data[:end], start, end):
            insn = None
            name = mnemonic.rsplit(" ", 1)[-1]
            if name in _CANDIDATES and isa.worth_testing(name, data[address : address + size]):
                insn = decode.decode_one(data, address, address)
            units.append(Unit(address, size, INSN, insn, mnemonic=mnemonic))
            pos = address + size
        if pos < end:
            if end - pos < 16 and decode.lite_one(data, pos) is not None:
                # A few bytes before a symbol that would decode only by
                # running across it: alignment fill after data or a blob.
                units.append(Unit(pos, end - pos, OPAQUE))
                return end
            # Bytes that do not decode: data in code, or an instruction
            # capstone does not know.  Moving them as a block would be safe
            # for data but not for code whose branches cross a pad, and the
            # two cannot be told apart: leave the section alone.
            raise _Refuse(f"bytes at {self._sec_name}+{pos:#x} do not decode (data in code, or an unknown "
                          "instruction)")  # fmt: skip
        return pos

    @staticmethod
    def _merge_opaque(units: list[Unit]) -> None:
        i = 0
        while i + 1 < len(units):
            a, b = units[i], units[i + 1]
            if a.kind == OPAQUE and b.kind == OPAQUE and a.end == b.old:
                a.size += b.size
                del units[i + 1]
            else:
                i += 1

    def _classify(self, sec, units: list[Unit], reloc_at: list[int], fixed: list[tuple[int, int, str]],
                  padding: set[int]) -> None:  # fmt: skip
        starts = {u.old: u for u in units}
        n = len(sec.data)

        def relocated(u: Unit) -> bool:
            i = bisect.bisect_right(reloc_at, u.old)
            return i < len(reloc_at) and reloc_at[i] < u.end

        for u in units:
            if u.kind != INSN:
                continue
            raw = bytes(sec.data[u.old : u.end])
            op = isa.opcode_bytes(raw)
            prefixes = raw[: len(raw) - len(op)]
            if 0x67 in prefixes or (0x66 in prefixes and op[:1] in (b"\xea", b"\x9a", b"\xca", b"\xcb", b"\xcf")):
                # gcc never emits address-size prefixes or 16-bit far
                # transfers in 32-bit code; real-mode code (.code16, with
                # its addr32/data32 prefixes) decoded as 32-bit shows them.
                raise _Refuse(f"16-bit code at {sec.name}+{u.old:#x} (an address-size prefix or a 16-bit far "
                              "transfer, decoded as 32-bit)")  # fmt: skip
            insn = u.insn
            fix = next((f for f in fixed if f[0] <= u.old < f[1]), None)
            u.fixed = fix is not None
            if insn is not None and u.old not in padding:
                kind = isa.classify(insn)
                if kind is not None:
                    if fix is not None:
                        self._skip(sec, u.old, kind.name, u.size, fix[2], fix[3])
                    else:
                        u.kind, u.site_kind = SITE, kind
                        u.pad = kind.pad(32)
                        u.pad_before = isa.pad_before_cs(kind, insn)
                    continue
            branch = decode.direct_branch(bytes(sec.data[u.old : u.end]), u.end)
            if branch is None or relocated(u):
                continue
            target, form, prefixes = branch
            if 0x66 in prefixes:
                raise _Refuse(f"16-bit branch at {sec.name}+{u.old:#x} (16-bit code decoded as 32-bit?)")
            if not 0 <= target <= n:
                raise _Refuse(f"branch at {sec.name}+{u.old:#x} leaves the section without a relocation "
                              "(data or 16-bit code decoded as 32-bit?)")  # fmt: skip
            if target < n and target not in starts:
                host = self._host(units, target)
                if host is None or host.kind != OPAQUE:
                    raise _Refuse(f"branch at {sec.name}+{u.old:#x} lands inside an instruction at {target:#x} "
                                  "(the sweep misread the code: data or 16-bit code?)")  # fmt: skip
            u.kind, u.target = BRANCH, target
            u.form = u.insn_form = form

    @staticmethod
    def _host(units: list[Unit], off: int) -> Unit | None:
        i = bisect.bisect_right([u.old for u in units], off) - 1
        return units[i] if i >= 0 and units[i].old <= off < units[i].end else None

    # -- layout ---------------------------------------------------------------------------

    def _lay_out(self, sec, units: list[Unit]) -> None:
        n = len(sec.data)
        for u in units:
            u.new_size = u.size + (u.pad if u.kind == SITE else 0)
        index = {u.old: i for i, u in enumerate(units)}
        branches = [u for u in units if u.kind == BRANCH]
        for _ in range(10000):
            self._offsets(units)
            total = units[-1].new + units[-1].new_size if units else 0
            changed = False
            for b in branches:
                if b.form in (_NEAR, _LOOP32):
                    continue
                t = self._new_target(units, index, b.target, n, total)
                disp = t - (b.new + b.new_size)
                if not -128 <= disp <= 127:
                    if b.fixed:
                        raise _Refuse(f"a branch at {sec.name}+{b.old:#x} inside a fixed-length range would need "
                                      "relaxing")  # fmt: skip
                    grow = {_SHORT_JMP: 3, _SHORT_JCC: 4, _LOOP: 7}[b.form]
                    b.form = _NEAR if b.form != _LOOP else _LOOP32
                    b.new_size += grow
                    self.result.relaxed += 1
                    changed = True
            if not changed:
                return
        raise _Refuse("branch relaxation did not converge")

    @staticmethod
    def _offsets(units: list[Unit]) -> None:
        pos = 0
        for u in units:
            u.new = pos
            pos += u.new_size

    @staticmethod
    def _new_target(units: list[Unit], index: dict[int, int], target: int, n: int, total: int) -> int:
        if target >= n:
            return total + (target - n)
        i = index.get(target)
        if i is not None:
            return units[i].new
        host = _Annotator._host(units, target)
        return host.new + (target - host.old)

    def _emit_section(self, data: bytes, units: list[Unit]) -> bytearray:
        index = {u.old: i for i, u in enumerate(units)}
        total = units[-1].new + units[-1].new_size
        out = bytearray()
        for u in units:
            old = data[u.old : u.end]
            if u.kind == SITE:
                pad = nop_bytes(u.pad)
                out += pad + old if u.pad_before else old + pad
            elif u.kind == BRANCH:
                out += self._encode_branch(u, old, self._new_target(units, index, u.target, len(data), total))
            else:
                out += old
            assert len(out) == u.new + u.new_size, "layout and emission disagree"
        return out

    @staticmethod
    def _encode_branch(u: Unit, old: bytes, target: int) -> bytes:
        end = u.new + u.new_size
        if u.form in (_SHORT_JMP, _SHORT_JCC, _LOOP):
            return old[:-1] + struct.pack("<b", target - end)
        if u.form == _LOOP32:
            # loop 1f; jmp 2f; 1: jmp target; 2:  (loop and jecxz have no rel32 form)
            return old[:-1] + b"\x02\xeb\x05\xe9" + struct.pack("<i", target - end)
        if u.insn_form == _NEAR:  # call/jmp/jcc rel32 as they were
            return old[:-4] + struct.pack("<i", target - end)
        prefixes = old[: len(old) - 2]  # everything before opcode and rel8
        if u.insn_form == _SHORT_JMP:
            return prefixes + b"\xe9" + struct.pack("<i", target - end)
        return prefixes + bytes([0x0F, 0x80 | (old[-2] & 0x0F)]) + struct.pack("<i", target - end)

    # -- skipped sites -----------------------------------------------------------------

    def _skip(self, sec, off: int, kind: str, length: int, reason: str, why: int = sitefmt.Why.UNCHANGED) -> None:
        self.result.skipped.append(Skipped(sec.name, off, self._symbolize(sec.index, off), kind, reason, sec.index,
                                           length, why))  # fmt: skip

    def _skip_all(self, sec, reason: str) -> None:
        """A section left as it is: one excluded region, and every sensitive
        instruction a plain sweep sees in it listed."""
        self.result.skipped = [s for s in self.result.skipped if s.index != sec.index]  # listed again below
        self.excluded.append((sec.index, 0, len(sec.data), sitefmt.Why.UNCHANGED))
        self._list_sensitive(sec, 0, len(sec.data), f"section left unchanged: {reason}")

    def _list_sensitive(self, sec, start: int, end: int, reason: str) -> None:
        """List the sensitive instructions a plain sweep of [start, end) sees
        (stepping over bytes that do not decode)."""
        data = bytes(sec.data)
        pos = start
        while pos < end:
            last = pos
            for address, size, mnemonic, _ in decode.lite_run(data[:end], pos, end):
                name = mnemonic.rsplit(" ", 1)[-1]
                if name in _CANDIDATES and isa.worth_testing(name, data[address : address + size]):
                    insn = decode.decode_one(data, address, address)
                    kind = isa.classify(insn) if insn is not None else None
                    if kind is not None:
                        self._skip(sec, address, kind.name, size, reason)
                last = address + size
            pos = last + 1 if last < end else end  # stopped at a byte that does not decode: step over it

    def _symbolize(self, idx: int, off: int) -> str:
        syms = [s for s in self.sym_by_sec.get(idx, []) if s.value <= off]
        if not syms:
            return f"{self.obj.sections[idx].name}+{off:#x}"
        s = max(syms, key=lambda s: s.value)
        return s.name if s.value == off else f"{s.name}+{off - s.value:#x}"

    # -- everything that points into moved code ----------------------------------------

    def _frames(self) -> None:
        obj = self.obj
        for sec in obj.sections:
            if sec.name not in (".eh_frame", ".debug_frame") or sec.type != SHT_PROGBITS or not sec.data:
                continue
            relocs = {r.offset: r for r in obj.relocs_for(sec.index)}

            def fde_start(field: int, relocs=relocs) -> tuple[int, int] | None:
                r = relocs.get(field)
                t = self._reloc_target(r) if r is not None else None
                return t if t is not None and isinstance(self.maps.get(t[0]), SectionMap) else None

            old_len = len(sec.data)
            try:
                fr = cfi.rewrite(bytes(sec.data), sec.name == ".eh_frame", fde_start,
                                 lambda idx, off: self.maps[idx].start(off))  # fmt: skip
            except cfi.CfiError as e:
                self._drop(sec, f"dropped {sec.name} ({e}): its code ranges would be stale")
                continue
            sec.data = bytearray(fr.data)
            sec.size = len(fr.data)
            self.maps[sec.index] = FrameMap(fr.moved, old_len, len(fr.data))

    def _drop(self, sec, message: str | None = None) -> None:
        """Empty a section and its relocations (the header stays)."""
        sec.data = bytearray()
        sec.size = 0
        rs = self.obj.rel_section_for(sec.index)
        if rs is not None:
            rs.relocs = []
        if message:
            self.result.messages.append(message)

    def _drop_debug(self) -> None:
        dropped = []
        for sec in self.obj.sections:
            if sec.name.startswith(".debug_") and sec.name != ".debug_frame" and not sec.is_alloc and sec.data:
                self._drop(sec)
                dropped.append(sec.name)
        if dropped:
            self.result.messages.append(f"dropped DWARF debug info ({', '.join(dropped)}): its code addresses would "
                                        "be stale; .debug_frame, if any, is kept and rewritten")  # fmt: skip

    def _pc_bias(self, target_index: int, offset: int, old: bytes) -> int:
        """For a PC-relative relocation in code: how far past the field the
        CPU measures from (4 for a call/jmp/jcc rel32, whose target is
        S + A + 4), so the *target* can be remapped rather than the field."""
        if not self.obj.sections[target_index].is_exec:
            return 0
        return 4 if decode.is_branch_field(old, offset) else 0

    def _remap_relocations(self) -> None:
        obj = self.obj
        old_values = [s.value for s in obj.symbols]
        new_values = [self._new_symbol_value(s) for s in obj.symbols]
        for rs in obj.rel_sections:
            src = obj.sections[rs.target]
            target_map = self.maps.get(rs.target)
            old = self.old_data.get(rs.target) or bytes(src.data)
            stride = refs.table_stride([r.offset for r in rs.relocs], len(old)) \
                if src.name.startswith(refs.EX_TABLE) else 0  # fmt: skip
            for r in rs.relocs:
                sym = obj.symbols[r.sym]
                smap = self.maps.get(sym.defined_in) if sym.defined_in is not None else None
                if smap is not None:
                    meaning, k = refs.meaning(src.name, src.is_exec, old, r.offset, r.type, stride)
                    where = old_values[r.sym] + r.addend + k
                    # A target outside the section (C pointer arithmetic such
                    # as sym - 4096) stays relative to its symbol.
                    if 0 <= where <= smap.old_len:
                        r.addend = self._reference_target(sym.defined_in, where, meaning) - new_values[r.sym] - k
                if target_map is not None:
                    r.offset = target_map.inner(r.offset)

    def _reference_target(self, idx: int, where: int, meaning: str) -> int:
        """Where a reference to ``where`` goes (refs): the instruction of a
        site whose pad comes first when the reference means the instruction
        and no function starts there, else the start of its unit."""
        smap = self.maps[idx]
        if meaning == refs.INSN and where not in self._functions(idx):
            return smap.insn(where)
        return smap.start(where)

    def _functions(self, idx: int) -> set[int]:
        return {s.value for s in self.sym_by_sec.get(idx, []) if s.type == STT_FUNC}

    def _entered(self, idx: int) -> set[int]:
        """Offsets control is sent to in the input (refs.BRANCH, POINTER;
        gas-resolved branches; functions)."""
        if idx not in self._entered_cache:
            got = {r.offset for r in self._refs().get(idx, []) if r.meaning != refs.INSN} | self._functions(idx)
            got |= {u.target for u in self.units.get(idx, []) if u.kind == BRANCH and u.target is not None}
            self._entered_cache[idx] = got
        return self._entered_cache[idx]

    def _refs(self) -> dict[int, list[refs.Ref]]:
        if self._refs_cache is None:
            self._refs_cache = refs.relobj_refs(self.obj)
        return self._refs_cache

    def _new_symbol_value(self, s: Symbol) -> int:
        smap = self.maps.get(s.defined_in) if s.defined_in is not None else None
        if smap is None or s.type == STT_SECTION:
            return s.value
        # A label on an instruction whose pad comes first names the
        # instruction, unless control is sent there (docs/design.md,
        # "Labels and pads").
        if s.type != STT_FUNC and s.value < smap.old_len and s.value not in self._entered(s.defined_in):
            return smap.insn(s.value)
        return smap.start(s.value)

    def _remap_symbols(self) -> None:
        for s in self.obj.symbols:
            smap = self.maps.get(s.defined_in) if s.defined_in is not None else None
            if smap is None or s.type == STT_SECTION:
                continue
            start = self._new_symbol_value(s)
            if s.size:
                s.size = smap.start(s.value + s.size) - start
            s.value = start

    # -- records -----------------------------------------------------------------------

    def _records(self) -> None:
        obj, res = self.obj, self.result
        entries: list[tuple[int, int, int, bytes]] = []  # (section, offset, order, record tail)
        for idx, units in sorted(self.units.items()):
            sec = obj.sections[idx]
            sites = {}
            for u in units:
                if u.kind == SITE:
                    flags = sitefmt.SiteFlag.PAD_BEFORE if u.pad_before else sitefmt.SiteFlag.NONE
                    sites[u.new] = sitefmt.Site(0, None, u.new, u.site_kind, u.size + u.pad, u.size, flags)
            relocated = {r.offset for r in obj.relocs_for(idx)}
            data = bytes(sec.data)
            for off, site in sites.items():
                flags = site.flags
                if decode.site_flags_live(site, data, 32, sites, relocated):
                    flags |= sitefmt.SiteFlag.FLAGS_LIVE
                entries.append((idx, off, 2, struct.pack("<BBBB", site.kind.id, site.length, site.insn_len, flags)))
                res.sites[site.kind.name] = res.sites.get(site.kind.name, 0) + 1
        regions = sorted(list(self.excluded) + [(sk.index, sk.offset, sk.offset + sk.length, sk.why)
                                                for sk in res.skipped
                                                if not any(r[0] == sk.index and r[1] <= sk.offset < r[2]
                                                           for r in self.excluded)])  # fmt: skip
        merged: list[tuple[int, int, int, int]] = []
        for r in regions:  # regions may touch or overlap (a skipped site inside a fixed range)
            if merged and merged[-1][0] == r[0] and r[1] < merged[-1][2]:
                merged[-1] = (r[0], merged[-1][1], max(merged[-1][2], r[2]), merged[-1][3])
            else:
                merged.append(r)
        for idx, start, end, why in merged:
            smap = self.maps.get(idx)
            a, b = (smap.insn(start), smap.inner(end - 1) + 1) if isinstance(smap, SectionMap) else (start, end)
            # Order at equal offsets: a region ends before the next begins.
            entries.append((idx, a, 1, struct.pack("<BBBB", isa.EXCL_BEGIN.id, 0, 0, int(why))))
            entries.append((idx, b, 0, struct.pack("<BBBB", isa.EXCL_END.id, 0, 0, 0)))
        entries.sort()
        note = struct.pack("<III", len(sitefmt.NOTE_NAME) + 1, sitefmt.NOTE_DESC.size, sitefmt.NT_AFTERBURN_FORMAT)
        note += sitefmt.NOTE_NAME + b"\0\0\0" + sitefmt.NOTE_DESC.pack(sitefmt.FORMAT_VERSION, sitefmt.RECORD_SIZE,
                                                                        sitefmt.ISA_I386)  # fmt: skip
        if entries:
            if R_386_PC32 not in obj.used_reloc_types():
                res.messages.append("the site records use R_386_PC32, which this input did not use (ld, GRUB and "
                                    "Linux all accept it)")  # fmt: skip
            section_syms = {}
            for idx in sorted({e[0] for e in entries}):
                sym = obj.section_symbol(idx)
                if sym is None:
                    sym = obj.add_local_symbol(Symbol("", 0, 0, STT_SECTION, 0, idx))
                section_syms[idx] = sym
            records = bytearray()
            relocs = []
            for i, (idx, off, _, tail) in enumerate(entries):
                records += struct.pack("<i", off) + tail
                relocs.append(Reloc(8 * i, R_386_PC32, section_syms[idx], off))
            afterburn = obj.add_section(sitefmt.SECTION, SHT_PROGBITS, SHF_ALLOC, bytes(records), align=4)
            rel = obj.add_section(".rel" + sitefmt.SECTION, SHT_REL, SHF_INFO_LINK, b"", align=4,
                                  link=obj.symtab.index, info=afterburn.index, entsize=8)  # fmt: skip
            obj.rel_sections.append(RelSection(rel, afterburn.index, relocs))
        obj.add_section(sitefmt.NOTE_SECTION, SHT_NOTE, 0, note, align=4)
