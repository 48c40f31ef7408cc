"""The assembler annotator: pad every sensitive instruction and record it.

Input is GNU as AT&T text (``gcc -S`` output, or a ``.S`` file after cpp).
Every sensitive instruction in an executable section becomes::

    19770101:                       # site start (before any prefix)
            rep; insb               # the original statement, verbatim
    19770102:                       # instruction end
            .byte 0x0f,0x1f,...     # NOP pad, length from afterburn.isa
    19770103:                       # site end
            .pushsection .afterburn,"a",@progbits
            .balign 4
            .long 19770101b - .     # self-relative site offset
            .byte KIND, 19770103b - 19770101b, 19770102b - 19770101b, FLAGS
            .popsection

Numeric local labels work inside ``.macro`` and ``.rept`` bodies, and
push/pop keep ``.previous`` intact.  Everything else passes through byte for
byte.

The FLAGS byte needs the *code after* each site, which text cannot tell us
reliably, so annotation is two passes: pass 1 is assembled (with a parallel
``.afterburn.srcid`` section mapping records back to text), each site's
arithmetic-flags liveness is computed on the real bytes with capstone (the
same analysis the object annotator and the verifier use), and pass 2 writes
the final text.  Pass 1's object also serves as a cross-check: any sensitive
instruction it contains that the text recogniser did not see (emitted with
``.byte``, or by a macro whose mnemonic is a parameter) is an error, never a
silently unannotated site.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from collections.abc import Callable

from . import decode, isa, sitefmt
from .asmtext import Lexer, Line, Stmt, parse_instruction, parse_section_args
from .elf import Elf
from .errors import AfterburnError
from .nops import nop_directive

# Site start, instruction start, instruction end, site end; exclusion marker.
L_START, L_INSN, L_INSN_END, L_END, L_MARK = "19770101", "19770105", "19770102", "19770103", "19770104"
SRCID_SECTION = ".afterburn.srcid"
HEADER = "# afterburn: annotated (site format {v})"
NOANNOTATE, ANNOTATE = ".afterburn_noannotate", ".afterburn_annotate"

Assembler = Callable[[str], bytes]


@dataclass
class TextSite:
    id: int
    line: int  # 1-based line number in the input
    kind: isa.Kind | None  # None: a macro-parameter mnemonic, decided per expansion
    text: str
    flags_live: bool = True


@dataclass
class AnnotateResult:
    text: str
    sites: list[TextSite] = field(default_factory=list)
    excluded: list[tuple[int, int | None, str]] = field(default_factory=list)  # (first line, last line, why)
    warnings: list[str] = field(default_factory=list)
    already_annotated: bool = False

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sites:
            name = s.kind.name if s.kind else "macro-parameter"
            out[name] = out.get(name, 0) + 1
        return out

    @property
    def pad_bytes(self) -> int:
        """Pad bytes in the text (a macro body counts once)."""
        return sum(s.kind.pad32 for s in self.sites if s.kind)


class _Sections:
    """Tracks gas's current section through .text/.section/.pushsection/..."""

    def __init__(self) -> None:
        self.cur = ".text"
        self.prev = ".text"
        self.stack: list[tuple[str, str]] = []
        self.flags: dict[str, str] = {".text": "ax", ".data": "aw", ".bss": "aw"}
        self.macro_depth = 0  # inside .macro ... .endm

    def exec(self, name: str | None = None) -> bool:
        if name is None and self.macro_depth:
            # A macro body lands in whatever section it is expanded in, not
            # the one current at its definition; an instruction there is code.
            return True
        name = name or self.cur
        flags = self.flags.get(name)
        if flags is not None:
            return "x" in flags
        return name.startswith(".text.") or name in (".init", ".fini")

    def apply(self, d: str, args: str) -> bool:
        """Apply a directive; True if it may change the current section."""
        if d == ".macro":
            self.macro_depth += 1
            return False
        if d == ".endm":
            self.macro_depth = max(0, self.macro_depth - 1)
            return False
        if self.macro_depth:
            return False  # section directives in a body act at expansion time
        if d in (".text", ".data", ".bss"):
            self._set(d)
        elif d in (".section", ".pushsection"):
            name, flags = parse_section_args(args)
            if flags is not None and name not in self.flags:
                self.flags[name] = flags
            if d == ".pushsection":
                self.stack.append((self.cur, self.prev))
                self.cur = name  # .pushsection does not disturb .previous
            else:
                self._set(name)
        elif d == ".popsection":
            if self.stack:
                self.cur, self.prev = self.stack.pop()
        elif d == ".previous":
            self.cur, self.prev = self.prev, self.cur
        else:
            return False
        return True

    def _set(self, name: str) -> None:
        if name != self.cur:
            self.prev, self.cur = self.cur, name


class _Emitter:
    """One pass over the lines.  ``facts`` maps a text site's id to what the
    assembled bytes say about it, (kind, flags live); None means pass 1."""

    def __init__(self, lines: list[Line], name: str, facts: dict[int, tuple[isa.Kind, bool]] | None) -> None:
        self.lines, self.name, self.facts = lines, name, facts
        self.out: list[str] = []
        self.sites: list[TextSite] = []
        self.excluded: list[tuple[int, int | None, str]] = []
        self.warnings: list[str] = []
        self.sections = _Sections()
        self.excluding: str | None = None  # why, while inside an excluded region
        self.exclusion_start = 0
        self.user_excluded = False  # .afterburn_noannotate in effect
        self.mode = 32  # .code16 / .code32 / .code64
        self.prefix_at: int | None = None  # out index of a pending prefix-only statement
        self.param_sites = 0

    def run(self) -> str:
        note_at = None
        for lineno, line in enumerate(self.lines, 1):
            if any(s.directive == ".end" for s in line.stmts):
                note_at = len(self.out)
            self._line(lineno, line)
        if self.excluding:
            self._end_exclusion(len(self.lines))
        note = sitefmt.note_directives(sitefmt.ISA_I386)
        note = ["\t" + d for d in note]
        if note_at is None:
            self.out.extend(note)
        else:
            self.out[note_at:note_at] = note
        head = [HEADER.format(v=sitefmt.FORMAT_VERSION)]
        if self.param_sites:
            head += ["\t" + d for d in _param_symbols()]
        return "\n".join(head + self.out) + "\n"

    # -- per line ----------------------------------------------------------

    def _line(self, lineno: int, line: Line) -> None:
        plan = [self._classify(lineno, s) for s in line.stmts]
        touched = any(p is not None for p in plan)
        if not touched:
            self.out.append(line.raw)
            for s in line.stmts:
                self._after_stmt(lineno, s)
            if line.stmts:
                only = line.stmts[0]
                self.prefix_at = len(self.out) - 1 if len(line.stmts) == 1 and _prefix_only(only) else None
            return
        if line.head:
            self.out.append(line.head)
        for stmt, kind in zip(line.stmts, plan, strict=True):
            if kind == "directive":
                self._directive_line(lineno, stmt)
            elif kind == "param":
                self._param_site(lineno, stmt)
            elif kind is None:
                self.out.append("\t" + stmt.text.strip())
                self._after_stmt(lineno, stmt)
                self.prefix_at = len(self.out) - 1 if _prefix_only(stmt) else None
            else:
                self._site(lineno, stmt, kind)
        if line.tail:
            self.out.append("\t" + line.tail)

    def _classify(self, lineno: int, stmt: Stmt):
        """None (pass through), a Kind (annotate), or "directive" (ours)."""
        if stmt.is_directive:
            d = stmt.directive
            if d in (NOANNOTATE, ANNOTATE, ".code16", ".code16gcc", ".code32", ".code64") or (
                self.excluding and self._changes_section(d)
            ):
                return "directive"
            if d == ".intel_syntax" and not self.user_excluded:
                raise AfterburnError(
                    f"{self.name}:{lineno}: Intel syntax is not supported; use AT&T syntax or wrap the region in "
                    f"{NOANNOTATE}/{ANNOTATE}"
                )
            return None
        if stmt.is_empty or stmt.is_assignment or self.excluding:
            return None
        ins = parse_instruction(stmt.body)
        if ins is None:
            return None
        if "\\" in ins.mnemonic:
            return "param"  # the mnemonic is (built from) a macro parameter
        return isa.classify_att(ins.mnemonic, ins.operands)

    @staticmethod
    def _changes_section(d: str) -> bool:
        return d in (".text", ".data", ".bss", ".section", ".pushsection", ".popsection", ".previous")

    def _after_stmt(self, lineno: int, stmt: Stmt) -> None:
        if stmt.is_directive:
            self.sections.apply(stmt.directive, stmt.directive_args)

    # -- sites ---------------------------------------------------------------

    def _site(self, lineno: int, stmt: Stmt, kind: isa.Kind) -> None:
        if not self.sections.exec():
            self.warnings.append(
                f"{self.name}:{lineno}: {kind.name} in non-executable section {self.sections.cur} left unannotated"
            )
            self.out.append("\t" + stmt.text.strip())
            return
        site = TextSite(len(self.sites), lineno, kind, stmt.body)
        if self.facts is not None and site.id in self.facts:
            # The bytes gas produced are the authority on the kind (e.g.
            # "int $3" assembles to int3) and on the flags.
            site.kind, site.flags_live = self.facts[site.id]
            kind = site.kind
        self.sites.append(site)
        ins = parse_instruction(stmt.body)
        before = isa.pad_before_att(kind, ins.operands if ins else [])
        flags = (int(sitefmt.SiteFlag.FLAGS_LIVE) if site.flags_live else 0) | (
            int(sitefmt.SiteFlag.PAD_BEFORE) if before else 0
        )
        pad = "\t" + nop_directive(kind.pad32)
        self._emit_site(stmt, [pad] if before else [], [] if before else [pad], kind, str(flags), site.id)

    def _emit_site(self, stmt: Stmt, pad_before: list[str], pad_after: list[str], kind, flags: str, sid: int,
                   guard: str | None = None) -> None:  # fmt: skip
        """Labels, pad and record around one statement.  A pending prefix
        line ("rep" before "insb") is part of the site, so the head goes
        before it.  ``guard`` wraps the pad and record in ``.ifdef``."""
        # Labels stay where they were: before the site, so a branch to them
        # lands on its start, never inside.
        for label in stmt.labels:
            self.out.append(f"{label}:")
        open_, close = ([f"\t.ifdef {guard}"], ["\t.endif"]) if guard else ([], [])
        head = [f"{L_START}:"] + (open_ + pad_before + close if pad_before else []) + [f"{L_INSN}:"]
        if self.prefix_at is not None:
            self.out[self.prefix_at : self.prefix_at] = head
            self.prefix_at = None
        else:
            self.out.extend(head)
        self.out.append("\t" + stmt.body)
        self.out.append(f"{L_INSN_END}:")
        self.out += open_ + pad_after + [f"{L_END}:"]
        self.out.extend("\t" + d for d in sitefmt.record_directives(
            f"{L_START}b", f"{L_END}b", f"{L_INSN_END}b - {L_INSN}b", kind, flags))  # fmt: skip
        if self.facts is None:  # pass 1: map the record back to this text site
            self.out += [f'\t.pushsection {SRCID_SECTION},"",@progbits', f"\t.long {sid}", "\t.popsection"]
        self.out += close

    def _param_site(self, lineno: int, stmt: Stmt) -> None:
        """A statement like ``rep \\insn`` inside a macro: which instruction it
        is depends on the expansion, so let gas decide.  Every unambiguous
        sensitive mnemonic has assembler-local symbols for its kind, pad and
        pad placement (see :func:`_param_symbols`); gas substitutes the
        parameter into those names, and ``.ifdef`` leaves non-sensitive
        expansions alone."""
        if not self.sections.exec():
            self.out.append("\t" + stmt.text.strip())
            return
        ins = parse_instruction(stmt.body)
        token = ins.mnemonic if ins else ""
        # The mnemonic as written (case kept: gas symbol names are case-sensitive).
        written = next(t for t in stmt.body.split() if t.lower() == token)
        site = TextSite(len(self.sites), lineno, None, stmt.body)  # kind decided per expansion
        if self.facts is not None:
            site.flags_live = self.facts.get(site.id, (None, True))[1]
        self.sites.append(site)
        self.param_sites += 1
        kind_sym, pad_sym, before_sym = (f"{PARAM_KIND}{written}", f"{PARAM_PAD}{written}",
                                         f"{PARAM_BEFORE}{written}")  # fmt: skip
        live = int(sitefmt.SiteFlag.FLAGS_LIVE) if site.flags_live else 0
        flags = f"{live} | ({before_sym} * {int(sitefmt.SiteFlag.PAD_BEFORE)})"
        self._emit_site(stmt, [f"\t.if {before_sym}", f"\t.skip {pad_sym}, 0x90", "\t.endif"],
                        [f"\t.if {before_sym} == 0", f"\t.skip {pad_sym}, 0x90", "\t.endif"],
                        kind_sym, flags, site.id, guard=kind_sym)  # fmt: skip

    # -- exclusion -------------------------------------------------------------

    def _directive_line(self, lineno: int, stmt: Stmt) -> None:
        d = stmt.directive
        for label in stmt.labels:
            self.out.append(f"{label}:")
        if d in (NOANNOTATE, ANNOTATE):
            self.out.append(f"\t# afterburn: {d[1:]}")
            if d == NOANNOTATE and not self.user_excluded:
                self.user_excluded = True
                if not self.excluding:
                    self._begin_exclusion(lineno, f"{NOANNOTATE}")
            elif d == ANNOTATE and self.user_excluded:
                self.user_excluded = False
                if self.mode == 32:
                    self._end_exclusion(lineno)
            return
        if d in (".code16", ".code16gcc", ".code32", ".code64"):
            self.out.append("\t" + stmt.body)
            new = 32 if d == ".code32" else (64 if d == ".code64" else 16)
            if new != 32 and self.mode == 32 and not self.excluding:
                self._begin_exclusion(lineno, f"{d} code is not pre-virtualized")
                self.warnings.append(f"{self.name}:{lineno}: {d} region left unannotated (only 32-bit code is)")
            elif new == 32 and self.mode != 32 and not self.user_excluded:
                self._end_exclusion(lineno)
            self.mode = new
            return
        # A section switch inside an excluded region: close the region in the
        # old section and reopen it in the new one.
        if self.sections.exec():
            self._marker(isa.EXCL_END)
        self.out.append("\t" + stmt.body)
        self.sections.apply(d, stmt.directive_args)
        if self.sections.exec():
            self._marker(isa.EXCL_BEGIN)

    def _begin_exclusion(self, lineno: int, why: str) -> None:
        self.excluding = why
        self.exclusion_start = lineno
        if self.sections.exec():
            self._marker(isa.EXCL_BEGIN)

    def _end_exclusion(self, lineno: int) -> None:
        if self.sections.exec():
            self._marker(isa.EXCL_END)
        self.excluded.append((self.exclusion_start, lineno, self.excluding or ""))
        self.excluding = None

    def _marker(self, kind: isa.Kind) -> None:
        self.out.append(f"{L_MARK}:")
        self.out.extend("\t" + d for d in sitefmt.marker_directives(f"{L_MARK}b", kind))
        if self.facts is None:
            self.out += [f'\t.pushsection {SRCID_SECTION},"",@progbits', "\t.long -1", "\t.popsection"]


PARAM_KIND, PARAM_PAD, PARAM_BEFORE = ".Lafterburn_kind_", ".Lafterburn_pad_", ".Lafterburn_before_"


def _param_symbols() -> list[str]:
    """``.set`` lines naming the kind and pad of every mnemonic that is
    sensitive whatever its operands (so not mov/push/pop/int/jmp/call)."""
    out = []
    for m in sorted({m for k in isa.KINDS for m in k.att_mnemonics}):
        kinds = [k for k in isa.KINDS if m in k.att_mnemonics]
        if len(kinds) == 1 and kinds[0].att_test is None:
            k = kinds[0]
            for spelling in {m, m.upper()}:
                out += [f".set {PARAM_KIND}{spelling}, {k.id}", f".set {PARAM_PAD}{spelling}, {k.pad32}",
                        f".set {PARAM_BEFORE}{spelling}, {int(isa.pad_before(k, False))}"]  # fmt: skip
    return out


def _prefix_only(stmt: Stmt) -> bool:
    """A statement made only of prefixes, like ``rep`` in ``rep; insb``."""
    return bool(stmt.body) and not stmt.labels and not stmt.is_directive and parse_instruction(stmt.body) is None


def is_annotated_text(src: str) -> bool:
    for raw in src.splitlines()[:5]:
        if raw.startswith("# afterburn: annotated"):
            return True
    lexer = Lexer()
    for raw in src.splitlines():
        for s in lexer.line(raw).stmts:
            if s.directive in (".section", ".pushsection") and parse_section_args(s.directive_args)[0] == sitefmt.SECTION:
                return True
    return False


def annotate_text(src: str, name: str = "<input>", assemble: Assembler | None = None) -> AnnotateResult:
    """Annotate AT&T assembler text.  ``assemble`` turns text into an ELF
    object (bytes); without it, every site is conservatively flags-live and
    the cross-check is skipped."""
    if is_annotated_text(src):
        return AnnotateResult(src, already_annotated=True)
    lexer = Lexer()
    lines = [lexer.line(raw) for raw in src.splitlines()]
    if assemble is None:
        em = _Emitter(lines, name, {})
        text = em.run()
        return AnnotateResult(text, em.sites, em.excluded, em.warnings)
    pass1 = _Emitter(lines, name, None)
    text1 = pass1.run()
    obj = assemble(text1)
    per_expansion = {s.id for s in pass1.sites if s.kind is None}
    facts = _facts_from_object(Elf(f"{name} (pass 1)", obj), name, per_expansion)
    em = _Emitter(lines, name, facts)
    text = em.run()
    return AnnotateResult(text, em.sites, em.excluded, em.warnings)


def _facts_from_object(elf: Elf, name: str, per_expansion: set[int]) -> dict[int, tuple[isa.Kind, bool]]:
    """(kind, flags live) per text site, read off the pass-1 object; also
    the cross-check that the object holds no unrecorded sensitive instruction."""
    table = sitefmt.read_site_table(elf)
    srcid_sec = elf.section(SRCID_SECTION)
    records = elf.section(sitefmt.SECTION)
    n_records = records.size // sitefmt.RECORD_SIZE if records is not None else 0
    ids = list(struct.unpack(f"<{n_records}i", srcid_sec.data)) if srcid_sec is not None else []
    if len(ids) != n_records:
        raise AfterburnError(f"{name}: internal error: {n_records} records but {len(ids)} source ids")
    facts: dict[int, tuple[isa.Kind, bool]] = {}
    per_section = table.by_section()
    for sec in elf.exec_sections():
        secsites = per_section.get(sec.index, [])
        site_at = {s.offset: s for s in secsites}
        relocated = {r.offset for r in elf.relocations(sec)}
        for s in secsites:
            insn = decode.decode_one(sec.data, s.insn_offset, s.insn_offset, elf.bits)
            kind = isa.classify(insn) if insn is not None else None
            if kind is None:
                raise AfterburnError(f"{name}: internal error: the {s.kind.name} site at "
                                     f"{elf.symbolize(sec, s.offset)} does not assemble to a sensitive instruction")  # fmt: skip
            sid = ids[s.index]
            live = decode.site_flags_live(s, sec.data, elf.bits, site_at, relocated)
            if sid in facts:
                prev_kind, prev_live = facts[sid]
                if prev_kind is not kind and sid not in per_expansion:
                    raise AfterburnError(f"{name}: one source line expands to different instructions "
                                         f"({prev_kind.name} and {kind.name}); annotate the macro by hand")  # fmt: skip
                live = live or prev_live  # a macro body is live if any expansion is
            facts[sid] = (kind, live)
        missed = [d for d in decode.sweep(elf, sec, secsites, table.excluded) if d.kind is not None and d.site is None]
        if missed:
            shown = "; ".join(
                f"{elf.symbolize(sec, d.offset)} {(d.insn.mnemonic + ' ' + d.insn.op_str).strip()}" for d in missed[:3]
            )
            more = f" (and {len(missed) - 3} more)" if len(missed) > 3 else ""
            raise AfterburnError(
                f"{name}: {len(missed)} sensitive instruction(s) in the assembled code were not visible in the text "
                f"(emitted with .byte, or by a macro whose mnemonic is a parameter?): {shown}{more}; write them as "
                f"instructions or wrap them in {NOANNOTATE}/{ANNOTATE}"
            )
    return facts
