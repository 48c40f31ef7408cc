"""The load-time rewriter: patch every site of an annotated image for one
backend, and add that backend's wedge.

The rules from Afterburner's weak spots: every patch is computed and
checked to fit *before* anything is written, and a site that cannot be
patched is an error listing every such site, never a site left alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from afterburn import decode, isa
from afterburn.errors import AfterburnError
from afterburn.sitefmt import read_site_table
from afterburn.image import Image, PatchedSite, Segment

from .templates import Unpatchable, patch


@dataclass(frozen=True)
class Problem:
    address: int
    symbol: str
    kind: str
    reason: str

    def to_json(self) -> dict:
        return asdict(self)


class RewriteError(AfterburnError):
    """Some sites cannot be patched (the run exits 1; ``problems`` lists them)."""

    exit_status = 1

    def __init__(self, path: str, problems: list[Problem]) -> None:
        first = problems[0]
        super().__init__(f"{path}: {len(problems)} site(s) cannot be patched; first: {first.kind} at "
                         f"{first.address:#x} ({first.symbol}): {first.reason}")  # fmt: skip
        self.problems = problems


def _encode(site, original: bytes, ctx, where: str) -> bytes | Problem:
    """The patch for one site (its ``original`` bytes decoded), or why not."""
    ins_off = site.insn_offset - site.offset
    insn = decode.decode_one(original, ins_off, site.address + ins_off)
    if insn is None or isa.classify(insn) is not site.kind:
        return Problem(site.address, where, site.kind.name, "the bytes do not decode to the record's kind")
    try:
        return patch(site.kind, insn, ctx, site.address, site.length, site.flags_live)
    except Unpatchable as e:
        return Problem(site.address, where, site.kind.name, str(e))


def check_fit(elf, backend) -> tuple[int, list[Problem]]:
    """Encode every site of an annotated object or kernel for ``backend``
    without writing anything: (sites that fit, the ones that do not).  This
    is what ``afterburn rewrite --check`` reports for a module that will be
    rewritten only after a loader has linked it."""
    table = read_site_table(elf)
    if not table.annotated:
        raise AfterburnError(f"{elf.path}: not annotated (no site table)")
    ctx = backend.template_context(backend.wedge_image())
    results = [_encode(site, site.section.data[site.offset : site.offset + site.length], ctx,
                       elf.symbolize(site.section, site.offset)) for site in table.sites]  # fmt: skip
    problems = [r for r in results if isinstance(r, Problem)]
    return len(results) - len(problems), problems


def _segment_at(segments: list[Segment], va: int, length: int) -> tuple[int, int]:
    for i, seg in enumerate(segments):
        if seg.vaddr <= va and va + length <= seg.vaddr + len(seg.data):
            return i, va - seg.vaddr
    raise AfterburnError(f"site at {va:#x} is not in the image's loaded bytes")


def rewrite(image: Image, backend) -> Image:
    """A copy of ``image`` with every site patched for ``backend``."""
    if image.backend:
        raise AfterburnError(f"{image.path}: already rewritten for {image.backend}")
    table = read_site_table(image.elf)
    if not table.annotated:
        raise AfterburnError(f"{image.path}: not annotated (no site table); build it with afterburn cc or annotate it")
    wedge = backend.wedge_image()
    ctx = backend.template_context(wedge)
    data = [bytearray(s.data) for s in image.segments]
    edits, problems, patched = [], [], []
    for site in sorted(table.sites, key=lambda s: s.address):
        where = image.elf.symbolize(site.section, site.offset)
        seg, off = _segment_at(image.segments, site.address, site.length)
        original = bytes(data[seg][off : off + site.length])
        code = _encode(site, original, ctx, where)
        if isinstance(code, Problem):
            problems.append(code)
            continue
        edits.append((seg, off, code))
        patched.append(PatchedSite(site.address, site.address + site.length, site.insn_offset + site.section.addr,
                                   site.kind.name, original))  # fmt: skip
    if problems:
        raise RewriteError(image.path, problems)
    for seg, off, code in edits:
        data[seg][off : off + len(code)] = code
    segments = [replace(s, data=bytes(d)) for s, d in zip(image.segments, data, strict=True)]
    hole = [Segment(addr, addr, body, memsz, 7) for addr, body, memsz in wedge.segments]
    return replace(image, segments=segments, notes={**image.notes, "backend": backend.name}, hole_segments=hole,
                   patched=patched, unrecorded=unrecorded_sites(image, table))  # fmt: skip


def unrecorded_sites(image: Image, table) -> list[int]:
    """Sensitive instructions with no record (outside excluded regions too):
    left native, so the backend must watch them."""
    out = []
    per_section = table.by_section()
    for sec in image.elf.exec_sections():
        for d in decode.sweep(image.elf, sec, per_section.get(sec.index, []), []):
            if d.kind is not None and d.site is None:
                out.append(sec.addr + d.offset)
    return out
