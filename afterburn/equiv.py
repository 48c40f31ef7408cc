"""``afterburn verify OUT.o --against IN.o``: prove an annotated object equivalent.

The check works from the two files alone. It takes from the annotator only
the annotated object's site table and the documented rules for what may
differ, never the annotator's internal maps. It walks every executable
section of the input instruction by instruction alongside the output, and
builds the old-to-new offset map as it goes. It then requires the following.

* Code:
  - every input instruction is present, with the same bytes;
  - new bytes appear only as NOP pads at recorded sites;
  - gas-resolved branches may only change to the relaxed encoding of the
    same branch (rel8 to rel32; `loop` to `loop; jmp; jmp rel32`), and must
    reach the mapped target;
  - every sensitive instruction is a site of its kind, or lies in an
    excluded region;
  - every site corresponds to an input instruction.
- **Relocations**: same count, type and symbol in every section. Each offset maps. Each in-place addend
  names the mapped target.
- **Data**: sections other than code and frames are byte-identical outside relocation fields.
- **Symbols**: same names, types, bindings and sections. Values and sizes map.
- **Frames**: `.eh_frame` and `.debug_frame` FDEs cover the mapped ranges, with the same CFA
  instructions at the mapped locations.

The only extra sections allowed are `.afterburn`, `.rel.afterburn` and `.afterburn.note`. DWARF other than
`.debug_frame` may be emptied (the annotator says so).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field


from . import cfi, decode, isa, refs, sitefmt
from .annotate_obj import FrameMap, code_blobs, strip_signature
from .errors import FormatError
from .elf import I386_PC_BASED, STT_FUNC, STT_OBJECT, STT_SECTION, Elf
from .relobj import RelObject

EXTRA_SECTIONS = {sitefmt.SECTION, ".rel" + sitefmt.SECTION, sitefmt.NOTE_SECTION}
MAX_PROBLEMS = 50


@dataclass
class EquivReport:
    problems: list[str] = field(default_factory=list)
    instructions: int = 0
    sites: int = 0
    relaxed: int = 0
    relocations: int = 0
    symbols: int = 0
    fdes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"ok": self.ok, "problems": self.problems, "instructions": self.instructions, "sites": self.sites,
                "relaxed_branches": self.relaxed, "relocations": self.relocations, "symbols": self.symbols,
                "fdes": self.fdes, "notes": self.notes}  # fmt: skip


class _Stop(Exception):
    pass


@dataclass
class _Map:
    """Old -> new offsets for one section, learned while walking it."""

    old_len: int
    new_len: int
    starts: list[int] = field(default_factory=list)  # old unit starts
    unit_new: list[int] = field(default_factory=list)  # new start of the unit (pad first, if any)
    insn_new: list[int] = field(default_factory=list)  # new start of the instruction itself
    sizes: list[int] = field(default_factory=list)

    def add(self, old: int, new_unit: int, new_insn: int, size: int) -> None:
        self.starts.append(old)
        self.unit_new.append(new_unit)
        self.insn_new.append(new_insn)
        self.sizes.append(size)

    def _find(self, off: int) -> int:
        return bisect.bisect_right(self.starts, off) - 1

    def start(self, off: int) -> int:
        if off >= self.old_len:
            return self.new_len + off - self.old_len
        i = self._find(off)
        return self.unit_new[i] if self.starts[i] == off else self.inner(off)

    def insn(self, off: int) -> int:
        if off >= self.old_len:
            return self.start(off)
        i = self._find(off)
        return self.insn_new[i] if self.starts[i] == off else self.inner(off)

    def inner(self, off: int) -> int:
        if off >= self.old_len:
            return self.start(off)
        i = self._find(off)
        return self.insn_new[i] + (off - self.starts[i])


class _Checker:
    def __init__(self, old_raw: bytes, new_raw: bytes, old_path: str, new_path: str) -> None:
        old_raw, self.signed = strip_signature(old_raw)
        self.old = RelObject(old_raw, old_path)
        self.new = RelObject(new_raw, new_path)
        self.table = sitefmt.read_site_table(Elf(new_path, raw=new_raw))
        if not self.table.annotated:
            raise FormatError(f"{new_path}: not annotated (no site table)")
        self.rep = EquivReport()
        self.maps: dict[int, _Map] = {}
        self.frame_maps: dict[int, FrameMap] = {}
        self.refs: dict | None = None
        self.entered: dict[int, set[int]] = {}
        self.branch_targets: dict[int, set[int]] = {}  # gas-resolved branch targets in the input, per section

    def problem(self, msg: str) -> None:
        self.rep.problems.append(msg)
        if len(self.rep.problems) >= MAX_PROBLEMS:
            raise _Stop

    def run(self) -> EquivReport:
        try:
            self._sections()
            for sec in self.old.sections:
                if sec.is_exec and sec.data:
                    self._code(sec.index)
            self._frames()
            self._relocations()
            self._symbols()
            self._data()
        except _Stop:
            self.rep.problems.append("(stopped after the first problems)")
        return self.rep

    # -- section headers ------------------------------------------------------------------

    def _sections(self) -> None:
        old, new = self.old.sections, self.new.sections
        if len(new) < len(old):
            self.problem(f"the output has {len(new)} sections, the input {len(old)}")
            raise _Stop
        for a, b in zip(old, new, strict=False):
            if (a.name, a.type, a.flags, a.align) != (b.name, b.type, b.flags, b.align):
                self.problem(f"section {a.index}: {a.name} became {b.name} (type, flags or alignment changed)")
            elif a.name.startswith(".debug_") and a.name != ".debug_frame" and a.data and not b.data:
                self.rep.notes.append(f"{a.name} was dropped")
        for b in new[len(old) :]:
            if b.name not in EXTRA_SECTIONS:
                self.problem(f"unexpected new section {b.name}")

    # -- code --------------------------------------------------------------------------------

    def _code(self, idx: int) -> None:
        o_data, n_data = bytes(self.old.sections[idx].data), bytes(self.new.sections[idx].data)
        name = self.old.sections[idx].name
        m = _Map(len(o_data), len(n_data))
        self.maps[idx] = m
        sites = {s.offset: s for s in self.table.sites if s.section.index == idx}
        excluded = [(r.start, r.end) for r in self.table.excluded if r.section.index == idx]
        relocs = sorted(r.offset for r in self.old.relocs_for(idx))
        data_ranges = self._data_ranges(idx, len(o_data))
        # Decoding restarts at every symbol and data range, as the annotator's does.
        cuts = sorted({s.value for s in self.old.symbols if s.defined_in == idx and s.type != STT_SECTION}
                      | {a for a, _ in data_ranges} | {b for _, b in data_ranges} | {len(o_data)})  # fmt: skip
        padding = self._padding(idx, o_data, cuts, data_ranges, relocs)
        pending: list[tuple[int, int, int, int]] = []  # (old at, old target, new at, new target)
        seen_sites = 0
        o = n = 0
        while o < len(o_data):
            if n > len(n_data):
                self.problem(f"{name}: the output ends before input offset {o:#x}")
                return
            site = sites.get(n)
            dr = next((r for r in data_ranges if r[0] == o), None)
            if dr is not None and site is None:
                size = dr[1] - o
                if n_data[n : n + size] != o_data[o:size + o]:
                    self.problem(f"{name}+{o:#x}: the data block ({size} bytes) changed")
                m.add(o, n, n, size)
                o, n = o + size, n + size
                continue
            insn = self._decode(o_data, o)
            nxt = cuts[bisect.bisect_right(cuts, o)] if bisect.bisect_right(cuts, o) < len(cuts) else len(o_data)
            if insn is not None and o + insn[0] > nxt:
                insn = None  # it would run across a symbol: bytes, as the annotator keeps them
            if insn is None:  # not code: one byte, kept as it is
                if n >= len(n_data) or n_data[n] != o_data[o]:
                    self.problem(f"{name}+{o:#x}: an undecodable byte changed")
                m.add(o, n, n, 1)
                o, n = o + 1, n + 1
                continue
            size, mnem = insn
            self.rep.instructions += 1
            if site is not None:
                seen_sites += 1
                ins_at = n + site.pad if site.pad_before else n
                pad_at = n if site.pad_before else n + site.insn_len
                if site.insn_len != size or not self._same_but_relocs(o_data[o : o + size],
                                                                       n_data[ins_at : ins_at + size], o, relocs):
                    self.problem(f"{name}+{o:#x}: the site at new {n:#x} does not hold the input instruction")
                elif self._kind(o_data, o, size, mnem) is not site.kind:
                    self.problem(f"{name}+{o:#x}: the site at new {n:#x} is recorded as {site.kind.name}")
                if not decode.nop_cover(n_data, pad_at, pad_at + site.pad):
                    self.problem(f"{name}+{o:#x}: the pad at new {pad_at:#x} is not NOPs")
                m.add(o, n, ins_at, size)
                self.rep.sites += 1
                o, n = o + size, n + site.length
                continue
            kind = self._kind(o_data, o, size, mnem) if o not in padding else None
            if kind is not None and not any(a <= n < b for a, b in excluded):
                self.problem(f"{name}+{o:#x}: sensitive {kind.name} has neither a site nor an excluded region")
            old_b = o_data[o : o + size]
            branch = decode.direct_branch(old_b, o + size)
            after = bisect.bisect_right(relocs, o)
            reloc_inside = after < len(relocs) and relocs[after] < o + size
            if branch is not None and not reloc_inside:
                new_size, new_target = self._branch_form(n_data, n, old_b, branch)
                if new_size is None:
                    self.problem(f"{name}+{o:#x}: branch changed into something that is not its relaxed form")
                    new_size = size
                else:
                    if new_size != size:
                        self.rep.relaxed += 1
                    pending.append((o, branch[0], n, new_target))
                m.add(o, n, n, size)
                o, n = o + size, n + new_size
                continue
            new_b = n_data[n : n + size]
            if not self._same_but_relocs(old_b, new_b, o, relocs):
                self.problem(f"{name}+{o:#x}: instruction bytes changed ({old_b.hex()} -> {new_b.hex()})")
            m.add(o, n, n, size)
            o, n = o + size, n + size
        if n != len(n_data):
            self.problem(f"{name}: {len(n_data) - n} unexplained bytes at the end of the output")
        if seen_sites != len(sites):
            self.problem(f"{name}: {len(sites) - seen_sites} site record(s) match no input instruction")
        self.branch_targets[idx] = {t for _, t, _, _ in pending}
        for o, t, n, nt in pending:
            want = m.start(t) if t < len(o_data) or t == len(o_data) else None
            if want != nt:
                self.problem(f"{name}+{o:#x}: branch to input {t:#x} reaches new {nt:#x}, expected {want}")

    def _functions(self, idx: int) -> set[int]:
        return {s.value for s in self.old.symbols if s.defined_in == idx and s.type == STT_FUNC}

    def _entered(self, idx: int) -> set[int]:
        """Offsets of section ``idx`` of the input that control is sent to:
        gas-resolved branches, references that are branches or code
        pointers, functions (refs)."""
        if idx not in self.entered:
            if self.refs is None:
                self.refs = refs.relobj_refs(self.old)
            got = {r.offset for r in self.refs.get(idx, []) if r.meaning != refs.INSN} | self._functions(idx)
            got |= self.branch_targets.get(idx, set())
            self.entered[idx] = got
        return self.entered[idx]

    def _padding(self, idx: int, data: bytes, cuts: list[int], data_ranges: list[tuple[int, int]],
                 relocs: list[int]) -> set[int]:  # fmt: skip
        """The input's 0xCC padding bytes, by the documented rule
        (decode.int3_padding), worked out from the input alone."""
        relocated = set(relocs)
        named: set[int] = set()
        symbols = [(s.value, s.size) for s in self.old.symbols if s.defined_in == idx and s.type != STT_SECTION]
        for rs in self.old.rel_sections:
            target_data = bytes(self.old.sections[rs.target].data)
            for r in rs.relocs:
                sym = self.old.symbols[r.sym]
                if sym.defined_in == idx:
                    bias = 4 if r.type in I386_PC_BASED and self.old.sections[rs.target].is_exec and \
                        decode.is_branch_field(target_data, r.offset) else 0  # fmt: skip
                    named.add(sym.value + r.addend + bias)
        insns: list[tuple[int, int, str]] = []
        bounds = [0, *cuts]
        for a, b in zip(bounds, bounds[1:], strict=False):
            if any(x <= a < y for x, y in data_ranges):
                continue
            for off, size, mnemonic, _ in decode.lite_run(data[:b], a, b):
                insns.append((off, off + size, mnemonic))
                t = decode.direct_branch(data[off : off + size], off + size)
                if t is not None and not any(off + i in relocated for i in range(1, size)):
                    named.add(t[0])
        return decode.int3_padding(sorted(set(insns)), data, named, symbols)

    def _decode(self, data: bytes, off: int) -> tuple[int, str] | None:
        insn = decode.lite_one(data, off)
        return (insn.size, insn.mnemonic) if insn is not None else None

    @staticmethod
    def _kind(data: bytes, off: int, size: int, mnemonic: str) -> isa.Kind | None:
        name = mnemonic.rsplit(" ", 1)[-1]
        if name not in decode.candidate_mnemonics(32) or not isa.worth_testing(name, data[off : off + size]):
            return None
        insn = decode.decode_one(data, off, off)
        return isa.classify(insn) if insn is not None else None

    def _data_ranges(self, idx: int, n: int) -> list[tuple[int, int]]:
        """Data objects and copied code blobs (documented annotator rules):
        compared as blocks, never decoded."""
        syms = [s for s in self.old.symbols if s.defined_in == idx and s.name]
        out = [(s.value, min(n, s.value + s.size)) for s in syms if s.type == STT_OBJECT and s.size and s.value < n]
        data = bytes(self.old.sections[idx].data)
        relocated = {r.offset for r in self.old.relocs_for(idx)}
        out += [(a, b) for a, b, _, _ in code_blobs(syms, n, data, relocated)]
        return sorted(out)

    @staticmethod
    def _branch_form(n_data: bytes, n: int, old_b: bytes, branch) -> tuple[int | None, int]:
        """(size, target) of the branch at new offset ``n`` if it is the same
        branch as ``old_b``, re-encoded or relaxed."""
        _, form, prefixes = branch
        if form == "loop8" and n_data[n : n + len(old_b)][:-1] == old_b[:-1]:
            if n_data[n + len(old_b) - 1] == 0x02 and n_data[n + len(old_b) : n + len(old_b) + 3] == b"\xeb\x05\xe9":
                size = len(old_b) + 7
                return size, n + size + int.from_bytes(n_data[n + size - 4 : n + size], "little", signed=True)
            size = len(old_b)
            return size, n + size + int.from_bytes(n_data[n + size - 1 : n + size], "little", signed=True)
        for size in range(len(old_b), len(old_b) + 5):
            got = decode.direct_branch(n_data[n : n + size], n + size)
            if got is None or got[2] != prefixes:
                continue
            op_old, op_new = isa.opcode_bytes(old_b), isa.opcode_bytes(n_data[n : n + size])
            same = op_old[0] == op_new[0] and len(op_old) == len(op_new)
            relaxed = (op_old[0] == 0xEB and op_new[0] == 0xE9) or (
                0x70 <= op_old[0] <= 0x7F and op_new[:1] == b"\x0f" and op_new[1] == 0x80 | (op_old[0] & 0xF))
            if same or relaxed:
                return size, got[0]
        return None, 0

    @staticmethod
    def _same_but_relocs(a: bytes, b: bytes, at: int, relocs: list[int]) -> bool:
        """Equal, except inside relocation fields (whose values the
        relocation check judges); ``at`` is where ``a`` starts."""
        if len(a) != len(b):
            return False
        if a == b:
            return True
        for i in range(len(a)):
            if a[i] != b[i]:
                j = bisect.bisect_right(relocs, at + i) - 1
                if j < 0 or not relocs[j] <= at + i < relocs[j] + 4:
                    return False
        return True

    # -- frames --------------------------------------------------------------------------

    def _frames(self) -> None:
        for sec in self.old.sections:
            if sec.name not in (".eh_frame", ".debug_frame") or not sec.data:
                continue
            new = self.new.sections[sec.index]
            if not new.data:
                self.rep.notes.append(f"{sec.name} was dropped")
                continue
            eh = sec.name == ".eh_frame"
            try:
                a, b = cfi.parse(bytes(sec.data), eh), cfi.parse(bytes(new.data), eh)
            except cfi.CfiError as e:
                self.problem(f"{sec.name}: {e}")
                continue
            if len(a) != len(b):
                self.problem(f"{sec.name}: {len(a)} records became {len(b)}")
                continue
            self.frame_maps[sec.index] = FrameMap({x.start: y.start for x, y in zip(a, b, strict=True)},
                                                  len(sec.data), len(new.data))
            old_rel = {r.offset: r for r in self.old.relocs_for(sec.index)}
            for x, y in zip(a, b, strict=True):
                if x.is_cie != y.is_cie or (x.is_cie and x.raw != y.raw):
                    self.problem(f"{sec.name}: the CIE at {x.start:#x} changed")
                    continue
                if x.is_cie:
                    continue
                self.rep.fdes += 1
                r = old_rel.get(x.begin_field)
                sym = self.old.symbols[r.sym] if r is not None else None
                m = self.maps.get(sym.defined_in) if sym is not None and sym.defined_in is not None else None
                if m is None:
                    if (x.pc_range, x.program) != (y.pc_range, y.program):
                        self.problem(f"{sec.name}: FDE at {x.start:#x} changed though its code did not move")
                    continue
                begin = sym.value + r.addend
                if m.start(begin + x.pc_range) - m.start(begin) != y.pc_range:
                    self.problem(f"{sec.name}: FDE at {x.start:#x} has range {y.pc_range:#x}, expected "
                                 f"{m.start(begin + x.pc_range) - m.start(begin):#x}")  # fmt: skip
                want = [(m.start(begin + loc) - m.start(begin), op) for loc, op in x.program]
                if want != y.program:
                    self.problem(f"{sec.name}: FDE at {x.start:#x} has CFA instructions at the wrong places")

    # -- relocations ------------------------------------------------------------------------

    def _relocations(self) -> None:
        new_syms = self._symbol_pairs()
        for rs in self.old.rel_sections:
            target = self.old.sections[rs.target]
            nrs = self.new.rel_section_for(rs.target)
            new_relocs = nrs.relocs if nrs is not None else []
            dropped = target.name.startswith(".debug_") and not self.new.sections[rs.target].data
            if not new_relocs and rs.relocs and dropped:
                continue  # dropped debug info
            if len(new_relocs) != len(rs.relocs):
                self.problem(f"{rs.section.name}: {len(rs.relocs)} relocations became {len(new_relocs)}")
                continue
            tmap = self.maps.get(rs.target)
            old_bytes = bytes(target.data)
            ex = refs.table_stride([r.offset for r in rs.relocs], len(old_bytes)) \
                if target.name.startswith(refs.EX_TABLE) else 0  # fmt: skip
            by_offset = {r.offset: r for r in new_relocs}
            for r in rs.relocs:
                self.rep.relocations += 1
                if tmap is not None:
                    at = tmap.inner(r.offset)
                elif rs.target in self.frame_maps:
                    at = self.frame_maps[rs.target].inner(r.offset)
                else:
                    at = r.offset
                nr = by_offset.get(at)
                where = f"{rs.section.name}: the relocation at {target.name}+{r.offset:#x}"
                if nr is None:
                    self.problem(f"{where} is not at new offset {at:#x}")
                    continue
                if nr.type != r.type or new_syms.get(r.sym) != nr.sym:
                    self.problem(f"{where} changed type or symbol")
                    continue
                self._addend(r, nr, where, rs.target, old_bytes, ex)

    def _addend(self, r, nr, where: str, target_idx: int, old_bytes: bytes, ex: int) -> None:
        osym, nsym = self.old.symbols[r.sym], self.new.symbols[nr.sym]
        idx = osym.defined_in
        m = self.maps.get(idx) if idx is not None else None
        if m is None:
            if idx is not None and idx in self.frame_maps:
                if self.frame_maps[idx].inner(osym.value + r.addend) != nsym.value + nr.addend:
                    self.problem(f"{where} names a moved frame record wrongly")
            elif nr.addend != r.addend:
                self.problem(f"{where}: addend {r.addend} became {nr.addend}")
            return
        src = self.old.sections[target_idx]
        meaning, k = refs.meaning(src.name, src.is_exec, old_bytes, r.offset, r.type, ex)
        old_t = osym.value + r.addend + k
        new_t = nsym.value + nr.addend + k
        if not 0 <= old_t <= m.old_len:  # pointer arithmetic beyond the section: symbol-relative
            want = nsym.value + r.addend + k
        elif meaning == refs.INSN and old_t not in self._functions(idx):
            want = m.insn(old_t)  # the instruction itself, after a pad that comes first (refs)
        else:
            want = m.start(old_t)
        if new_t != want:
            self.problem(f"{where} points at new {new_t:#x}, expected {want:#x}")

    def _symbol_pairs(self) -> dict[int, int]:
        """Old symbol index -> new (the output may insert section symbols)."""
        out: dict[int, int] = {}
        j = 0
        new = self.new.symbols
        for i, s in enumerate(self.old.symbols):
            while j < len(new) and (new[j].name, new[j].info, new[j].shndx) != (s.name, s.info, s.shndx) \
                    and new[j].type == STT_SECTION:  # fmt: skip
                j += 1
            if j < len(new):
                out[i] = j
                j += 1
        return out

    # -- symbols ----------------------------------------------------------------------------

    def _symbols(self) -> None:
        pairs = self._symbol_pairs()
        for i, s in enumerate(self.old.symbols):
            self.rep.symbols += 1
            j = pairs.get(i)
            t = self.new.symbols[j] if j is not None else None
            if t is None or (t.name, t.info, t.other, t.shndx) != (s.name, s.info, s.other, s.shndx):
                self.problem(f"symbol {s.name or i} is missing or changed kind")
                continue
            m = self.maps.get(s.defined_in) if s.defined_in is not None else None
            if m is None or s.type == STT_SECTION:
                if (t.value, t.size) != (s.value, s.size):
                    self.problem(f"symbol {s.name}: value or size changed in a section that did not move")
                continue
            # A label on an instruction whose pad comes first names the
            # instruction, unless control is sent there (refs).
            names_insn = s.type != STT_FUNC and s.value not in self._entered(s.defined_in)
            want = m.insn(s.value) if names_insn and s.value < m.old_len else m.start(s.value)
            if t.value != want:
                self.problem(f"symbol {s.name}: {t.value:#x}, expected {want:#x}")
            elif s.size and t.size != m.start(s.value + s.size) - t.value:
                self.problem(f"symbol {s.name}: size {t.size:#x}, expected {m.start(s.value + s.size) - t.value:#x}")

    # -- other data --------------------------------------------------------------------------

    def _data(self) -> None:
        for a in self.old.sections:
            if a.is_exec or a.name in (".eh_frame", ".debug_frame") or a.type in (2, 3, 9) or a.index == 0:
                continue  # code, frames, symbol/string/relocation tables: checked above
            b = self.new.sections[a.index]
            if a.name.startswith(".debug_") and not b.data:
                continue
            fields = sorted(r.offset for r in self.old.relocs_for(a.index))
            old_data, new_data = bytearray(a.data), bytes(b.data)
            if a.name == ".altinstructions":
                # Each entry's original length follows its (padded) code.
                for at, want in self._alt_lengths(a).items():
                    if at < len(new_data) and new_data[at] != want:
                        self.problem(f".altinstructions+{at:#x}: original length {new_data[at]}, expected {want}")
                    old_data[at] = new_data[at] if at < len(new_data) else old_data[at]
            if len(old_data) != len(new_data) or not self._same_but_relocs(bytes(old_data), new_data, 0, fields):
                self.problem(f"{a.name}: contents changed outside relocation fields")

    def _alt_lengths(self, alt) -> dict[int, int]:
        """Offset of each .altinstructions entry's original-length byte ->
        the length its original range maps to."""
        relocs = sorted(self.old.relocs_for(alt.index), key=lambda r: r.offset)
        stride = refs.table_stride([r.offset for r in relocs], len(alt.data))
        out = {}
        for r in relocs:
            if not stride or r.offset % stride or r.offset + 10 >= len(alt.data):
                continue
            sym = self.old.symbols[r.sym]
            m = self.maps.get(sym.defined_in) if sym.defined_in is not None else None
            start, n = sym.value + r.addend, alt.data[r.offset + 10]
            out[r.offset + 10] = m.start(start + n) - m.start(start) if m is not None else n
        return out


def check(old_raw: bytes, new_raw: bytes, old_path: str = "<input>", new_path: str = "<output>") -> EquivReport:
    """Prove ``new`` (an annotated object) equivalent to ``old``."""
    return _Checker(old_raw, new_raw, old_path, new_path).run()
