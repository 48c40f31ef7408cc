"""``afterburn verify``: an objtool-like checker for annotated files.

For an annotated object or linked ELF it proves, by decoding the bytes:

* every sensitive instruction in an executable section has exactly one site
  record, or lies in an excluded (``.afterburn_noannotate``) region;
* every record decodes to the kind it names, with the length it names;
* the pad bytes are NOPs;
* no branch target (decoded direct branch, or relocation into code) lies
  inside a pad;
* no two records overlap;
* no record claims "flags dead" where the liveness scan finds them live (a
  rewriter trusting that claim would corrupt the program).
"""
from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field


from . import decode, isa, refs
from .elf import Elf, Section
from .sitefmt import SECTION, Site, SiteTable, Why, read_site_table


@dataclass(frozen=True)
class Problem:
    check: str  # unannotated | kind | length | placement | pad | branch-into-pad | overlap | duplicate | flags
    section: str
    offset: int
    address: int
    where: str
    message: str


@dataclass
class Report:
    path: str
    annotated: bool
    sites: int = 0
    excluded: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    instructions: int = 0
    problems: list[Problem] = field(default_factory=list)
    # Every excluded region, with why, and the sensitive instructions in it
    # (not counted in data): what annotation left alone is listed, not hidden.
    regions: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d




def _problem(elf: Elf, sec: Section, off: int, check: str, msg: str) -> Problem:
    return Problem(check, sec.name, off, sec.addr + off, elf.symbolize(sec, off), msg)


def relocation_targets(elf: Elf) -> dict[int, list[tuple[int, str]]]:
    """For relocatable files: per executable section index, the offsets that
    relocations from anywhere (jump tables, __ex_table, ...) point at, with a
    description of where the reference comes from."""
    return {idx: [(r.offset, r.source) for r in rs] for idx, rs in refs.elf_refs(elf).items()}


def _data_pointers(elf: Elf) -> set[int]:
    """In a linked file, which has no relocations left: every address a
    32-bit word of allocated data could point at, absolute (jump tables,
    function pointers) or relative to itself (Linux's __ex_table).  Evidence
    that control may be sent there, for the label-before-pad check."""
    import struct

    cached = getattr(elf, "_afterburn_data_pointers", None)
    if cached is not None:
        return cached
    out: set[int] = set()
    for sec in elf.sections:
        if not sec.is_alloc or sec.is_exec or sec.type != 1 or elf.bits != 32 or sec.name == SECTION:
            continue  # (the site records point at every site start)
        data = sec.data[: len(sec.data) & ~3]
        for i, (w,) in enumerate(struct.iter_unpack("<I", data)):
            out.add(w)
            out.add((sec.addr + 4 * i + w) & 0xFFFFFFFF)
    elf._afterburn_data_pointers = out
    return out


def verify(elf: Elf, table: SiteTable | None = None) -> Report:
    table = table if table is not None else read_site_table(elf)
    rep = Report(elf.path, table.annotated, len(table.sites), len(table.excluded))
    for s in table.sites:
        rep.by_kind[s.kind.name] = rep.by_kind.get(s.kind.name, 0) + 1
    per_section = table.by_section()
    references = refs.elf_refs(elf)
    for sec in elf.exec_sections():
        sites = per_section.get(sec.index, [])
        rep.problems += _check_records(elf, sec, sites)
        rep.problems += _check_coverage_and_branches(elf, sec, sites, table, references.get(sec.index, []), rep)
    rep.regions = _regions(elf, table)
    rep.problems.sort(key=lambda p: (p.section, p.offset, p.check))
    return rep


def _regions(elf: Elf, table: SiteTable) -> list[dict]:
    out = []
    for r in table.excluded:
        sensitive: dict[str, int] = {}
        if r.why != Why.DATA and r.section.is_exec:
            data = r.section.data
            for off, size, mnemonic, op_str in decode.lite_run(data[: r.end], r.start, r.end, elf.bits):
                kind = decode.kind_of(decode.Lite(off, size, mnemonic, op_str, data[off : off + size]), data, elf.bits)
                if kind is not None:
                    sensitive[kind.name] = sensitive.get(kind.name, 0) + 1
        out.append({"section": r.section.name, "start": r.start, "end": r.end, "address": r.section.addr + r.start,
                    "where": elf.symbolize(r.section, r.start), "why": Why.describe(r.why), "sensitive": sensitive})  # fmt: skip
    return out


def _check_records(elf: Elf, sec: Section, sites: list[Site]) -> list[Problem]:
    out: list[Problem] = []
    data = sec.data
    prev: Site | None = None
    relocated = {r.offset for r in elf.relocations(sec)} if elf.is_relocatable else set()
    site_at = {s.offset: s for s in sites}
    for s in sites:
        if prev is not None:
            if prev.offset == s.offset:
                out.append(_problem(elf, sec, s.offset, "duplicate", f"two records for one {s.kind.name} site"))
            elif prev.end > s.offset:
                out.append(_problem(elf, sec, s.offset, "overlap",
                                    f"{s.kind.name} record overlaps the {prev.kind.name} site at {prev.offset:#x}"))  # fmt: skip
        prev = s
        insn = decode.decode_one(data, s.insn_offset, s.insn_offset, elf.bits)
        if insn is None:
            out.append(_problem(elf, sec, s.offset, "kind", f"record says {s.kind.name}, bytes do not decode"))
            continue
        kind = isa.classify(insn)
        if kind is not s.kind:
            got = kind.name if kind else f"'{insn.mnemonic} {insn.op_str}'".replace(" '", "'")
            out.append(_problem(elf, sec, s.offset, "kind", f"record says {s.kind.name}, instruction is {got}"))
            continue
        if decode.size_of(insn, data, s.insn_offset, elf.bits) != s.insn_len:
            out.append(_problem(elf, sec, s.offset, "length",
                                f"record says the instruction is {s.insn_len} bytes, it is "
                                f"{decode.size_of(insn, data, s.insn_offset, elf.bits)}"))  # fmt: skip
            continue
        if s.pad_before != isa.pad_before_cs(kind, insn):
            where = "before" if isa.pad_before_cs(kind, insn) else "after"
            out.append(_problem(elf, sec, s.offset, "placement", f"the pad of {s.kind.name} belongs {where} it"))
        if not decode.nop_cover(data, s.pad_offset, s.pad_offset + s.pad, elf.bits):
            out.append(_problem(elf, sec, s.offset, "pad", f"the {s.pad}-byte pad of {s.kind.name} is not all NOPs"))
        if not s.flags_live and decode.site_flags_live(s, data, elf.bits, site_at, relocated):
            out.append(_problem(elf, sec, s.offset, "flags",
                                f"record claims arithmetic flags are dead after {s.kind.name}, but they may be read"))  # fmt: skip
    return out


def _check_coverage_and_branches(
    elf: Elf, sec: Section, sites: list[Site], table: SiteTable, references: list[refs.Ref], rep: Report
) -> list[Problem]:
    out: list[Problem] = []
    relocated = {r.offset for r in elf.relocations(sec)} if elf.is_relocatable else set()
    decoded = decode.sweep(elf, sec, sites, table.excluded, named={r.offset for r in references}, relocated=relocated)
    rep.instructions += len(decoded)
    # A target strictly inside a site (its pad, or the instruction when the
    # pad comes first) would skip part of what the rewriter replaces.
    pads = sorted(((s.offset + 1, s.end, s) for s in sites if s.end > s.offset + 1), key=lambda p: p[:2])

    pad_starts = [p[0] for p in pads]

    def in_pad(target: int) -> Site | None:
        i = bisect.bisect_right(pad_starts, target) - 1
        if i >= 0 and pads[i][0] <= target < pads[i][1]:
            return pads[i][2]
        return None

    entered: set[int] = set()  # where control is sent: branches, code pointers
    for d in decoded:
        if d.kind is not None and d.site is None:
            text = f"{d.insn.mnemonic} {d.insn.op_str}".strip()
            out.append(_problem(elf, sec, d.offset, "unannotated",
                                f"sensitive instruction {d.kind.name} ({text}) has no site record"))  # fmt: skip
        target = decode.branch_target(d.insn, relocated)
        if target is not None:
            entered.add(target)
            site = in_pad(target)
            if site is not None:
                out.append(_problem(elf, sec, d.offset, "branch-into-pad",
                                    f"branch at {elf.symbolize(sec, d.offset)} targets the inside of the "
                                    f"{site.kind.name} site at {elf.symbolize(sec, site.offset)}"))  # fmt: skip
    base = 0 if elf.is_relocatable else sec.addr
    symbols = [(s.value - base, s) for s in elf.code_symbols(sec)]
    functions = {off for off, s in symbols if s.type == "STT_FUNC"}
    entered |= {r.offset for r in references if r.meaning != refs.INSN} | functions
    first_pad = {s.offset: s for s in sites if s.pad_before and s.pad}
    for r in references:
        site = in_pad(r.offset)
        if site is not None and not (r.meaning == refs.INSN and site.pad_before and r.offset == site.insn_offset):
            out.append(_problem(elf, sec, r.offset, "branch-into-pad",
                                f"relocation from {r.source} points inside the {site.kind.name} site at "
                                f"{elf.symbolize(sec, site.offset)}"))  # fmt: skip
        site = first_pad.get(r.offset)
        if site is not None and r.meaning == refs.INSN and r.offset not in functions:
            out.append(_problem(elf, sec, r.offset, "label-before-pad",
                                f"the address taken at {r.source} names the pad before the {site.kind.name} at "
                                f"{elf.symbolize(sec, site.insn_offset)}, not the instruction"))  # fmt: skip
    # A label on a pad-first site's start that nothing sends control to is
    # the address of the instruction, written where the pad now is (issue 9:
    # int3_selftest_ip).
    linked_pointers = _data_pointers(elf) if first_pad and not elf.is_relocatable else set()
    for off, sym in symbols:
        site = first_pad.get(off)
        if site is not None and off not in entered and off + base not in linked_pointers:
            out.append(_problem(elf, sec, off, "label-before-pad",
                                f"{sym.name} names the pad before the {site.kind.name}, and nothing branches there: "
                                "it means the instruction"))  # fmt: skip
    return out
