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

The bytes are the authority.  The text is assembled by the same assembler,
and what only bytes can tell is read off the object with capstone, the same
analysis the object annotator and the verifier use: each site's kind (gas
assembles ``int $3`` as ``int3``) and whether arithmetic flags are live after
it.  That object is also a cross-check: a sensitive instruction in it that
the text did not show (emitted with ``.byte``, or from a macro parameter the
annotator could not follow) is an error, never a silently unannotated site.

* Normally one assembly is enough (:func:`annotate_to_object`): the facts are
  written into that object's records.
* A statement that uses a macro parameter (``rep \\insn``, ``\\oldinstr``) is
  whatever each expansion makes of it, one token or several statements.
  Pass 1 brackets every expansion with labels and counts it with an
  assembler symbol; the bytes say which expansions hold a sensitive
  instruction, and pass 2 pads exactly those (``.if`` on the counter).
* ``gcc -S`` output (``annotate_text``) always takes two passes: the text
  itself must carry the facts.

Regions that are not annotated are recorded with their reason (the
``exclude_begin`` record, docs/site-format.md): ``.afterburn_noannotate``,
``.code16``/``.code64`` code, character strings in code sections (data), and
Linux's ``.altinstr_replacement`` (the kernel copies those bytes over the
original at boot; docs/design.md, "Alternatives").
"""
from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from . import decode, isa, refs, sitefmt
from .asmtext import Lexer, Line, Stmt, parse_instruction, parse_section_args
from .elf import Elf
from .errors import AfterburnError
from .nops import nop_directive

# Site start, instruction start, instruction end, site end; exclusion marker;
# the bounds of a macro-parameter statement's expansion.
L_START, L_INSN, L_INSN_END, L_END, L_MARK = "19770101", "19770105", "19770102", "19770103", "19770104"
L_EXP, L_EXP_END = "19770106", "19770107"
SRCID_SECTION = ".afterburn.srcid"
PROBE_SECTION = ".afterburn.probe"  # pass 1: (statement id, expansion number, start, end) per expansion
COUNTER = ".Lafterburn_n"  # + statement id: that statement's expansions so far
HEADER = "# afterburn: annotated (site format {v})"
NOANNOTATE, ANNOTATE = ".afterburn_noannotate", ".afterburn_annotate"
# Directives that emit character strings: data even in a code section.
STRING_DIRECTIVES = frozenset({".ascii", ".asciz", ".string", ".string8", ".string16", ".string32", ".string64"})
_SECTION_DIRECTIVES = frozenset({".text", ".data", ".bss", ".section", ".pushsection", ".popsection", ".previous"})
_MODE_DIRECTIVES = frozenset({".code16", ".code16gcc", ".code32", ".code64"})

Assembler = Callable[[str], "bytes | None"]
_LABEL_LINE = re.compile(r"^\s*([A-Za-z_.$][\w.$]*|\d+)\s*:\s*(?:#.*)?$")
_LABEL_OR_COMMENT = re.compile(r"^\s*(?:#.*|(?:[A-Za-z_.$][\w.$]*|\d+)\s*:\s*(?:#.*)?)?$")


def alternatives_replacement(section: str) -> bool:
    """Linux's ``.altinstr_replacement``: code the kernel copies over an
    original at boot, never run where it is (docs/design.md)."""
    return section == ".altinstr_replacement" or section.startswith(".altinstr_replacement.")


@dataclass
class TextSite:
    id: int
    line: int  # 1-based line number in the input
    kind: isa.Kind | None  # None: a macro-parameter statement, decided per expansion
    text: str
    flags_live: bool = True
    padded: bool = True  # False: a macro-parameter statement (or an int3) no expansion of which is a site
    # Pad before the instruction, and labels written on it that may name the
    # instruction (not gcc's .L labels, not functions): see _head.
    movable_labels: bool = False
    labels_before: bool = False  # what the bytes said: something branches to those labels


@dataclass
class ProbeFacts:
    """What the bytes say about a macro-parameter statement: the expansions
    that are sites, and whether its labels are branched to."""

    expansions: list[Expansion] = field(default_factory=list)
    labels_before: bool = False


@dataclass(frozen=True)
class SiteFacts:
    """What the assembled bytes say about one text site."""

    kind: isa.Kind
    flags_live: bool
    labels_before: bool = False

@dataclass(frozen=True)
class Expansion:
    """What one expansion of a macro-parameter statement assembled to."""

    number: int  # the statement's expansion counter
    kind: isa.Kind
    pad_before: bool
    insn_len: int
    flags_live: bool


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
    """Tracks gas's current section through .text/.section/.pushsection/...

    A macro body lands in the section it is expanded in, so its statements
    are code unless the body itself switched (``.pushsection X`` inside a
    body puts the rest of it, up to the matching ``.popsection``, in X)."""

    def __init__(self) -> None:
        self.cur = ".text"
        self.prev = ".text"
        self.stack: list[tuple[str, str]] = []
        self.flags: dict[str, str] = {".text": "ax", ".data": "aw", ".bss": "aw"}
        self.macro_depth = 0  # inside .macro ... .endm
        self.body: str | None = None  # a macro body's own section, None: where it expands
        self.body_stack: list[str | None] = []

    def copy(self) -> _Sections:
        c = _Sections.__new__(_Sections)
        c.__dict__.update(self.__dict__)
        c.stack, c.body_stack, c.flags = list(self.stack), list(self.body_stack), dict(self.flags)
        return c

    def current(self) -> str | None:
        """The section statements go to now (None: a macro body's expansion site)."""
        return self.body if self.macro_depth else self.cur

    def exec(self, name: str | None = None) -> bool:
        name = name or self.current()
        if name is None:
            return True  # a macro body expanding wherever it is used: code
        flags = self.flags.get(name)
        if flags is not None:
            return "x" in flags
        return name.startswith(".text.") or name in (".init", ".fini") or alternatives_replacement(name)

    def apply(self, d: str, args: str) -> None:
        if d == ".macro":
            self.macro_depth += 1
            self.body, self.body_stack = None, []
            return
        if d == ".endm":
            self.macro_depth = max(0, self.macro_depth - 1)
            self.body, self.body_stack = None, []
            return
        name = None
        if d in (".section", ".pushsection"):
            name, flags = parse_section_args(args)
            if flags is not None and name not in self.flags:
                self.flags[name] = flags
        if self.macro_depth:
            if d in (".text", ".data", ".bss"):
                self.body = d
            elif d == ".section":
                self.body = name
            elif d == ".pushsection":
                self.body_stack.append(self.body)
                self.body = name
            elif d == ".popsection":
                self.body = self.body_stack.pop() if self.body_stack else None
            elif d == ".previous":
                self.body = None
            return
        if d in (".text", ".data", ".bss"):
            self._set(d)
        elif d == ".section":
            self._set(name)
        elif d == ".pushsection":
            self.stack.append((self.cur, self.prev))
            self.cur = name  # .pushsection does not disturb .previous
        elif d == ".popsection":
            if self.stack:
                self.cur, self.prev = self.stack.pop()
        elif d == ".previous":
            self.cur, self.prev = self.prev, self.cur

    def _set(self, name: str) -> None:
        if name != self.cur:
            self.prev, self.cur = self.cur, name


class _Emitter:
    """One pass over the lines.

    ``facts`` maps a text site's id to what the assembled bytes say about it:
    (kind, flags live) for a site, a list of :class:`Expansion` for a
    macro-parameter statement.  ``None`` is pass 1: records carry a
    ``.afterburn.srcid`` entry naming their text site, and every
    macro-parameter statement is bracketed and counted."""

    def __init__(self, lines: list[Line], name: str, facts: dict | None, srcid: bool | None = None) -> None:
        self.lines, self.name, self.facts = lines, name, facts
        self.pass1 = facts is None
        self.srcid = self.pass1 if srcid is None else srcid
        self.out: list[str] = []
        self.sites: list[TextSite] = []
        self.excluded: list[tuple[int, int | None, str]] = []
        self.warnings: list[str] = []
        self.sections = _Sections()
        self.user_excluded = False  # .afterburn_noannotate in effect
        self.mode = 32  # .code16 / .code32 / .code64
        self.region: tuple[int, str, int] | None = None  # open exclusion: (Why, text, first line)
        self.prefix_at: int | None = None  # out index of a pending prefix-only statement
        self.param_statements: list[int] = []  # text site ids of macro-parameter statements
        self.macros: set[str] = set()  # names of the macros defined so far (gas: case-insensitive)
        self.functions: set[str] = set()  # symbols declared .type NAME, @function
        self.byte_sites: dict[int, bool] = {}  # id(stmt) -> pad before, for instructions written with .byte

    def run(self) -> str:
        note_at = None
        for lineno, line in enumerate(self.lines, 1):
            if any(s.directive == ".end" for s in line.stmts):
                note_at = len(self.out)
            self._line(lineno, line)
        if self.region is not None:
            self._close(len(self.lines))
        note = ["\t" + d for d in sitefmt.note_directives(sitefmt.ISA_I386)]
        if note_at is None:
            self.out.extend(note)
        else:
            self.out[note_at:note_at] = note
        head = [HEADER.format(v=sitefmt.FORMAT_VERSION)]
        head += [f"\t.set {COUNTER}{sid}, 0" for sid in self.param_statements]
        return "\n".join(head + self.out) + "\n"

    # -- exclusion state -------------------------------------------------------

    def _wanted(self, sections: _Sections | None = None) -> tuple[int, str] | None:
        """The exclusion in force here, if any: (Why, why in words)."""
        sections = sections or self.sections
        if self.user_excluded:
            return sitefmt.Why.UNSPECIFIED, NOANNOTATE
        if self.mode != 32:
            return sitefmt.Why.MODE, f".code{self.mode} code is not pre-virtualized"
        cur = sections.current()
        if cur is not None and alternatives_replacement(cur):
            return sitefmt.Why.ALTERNATIVES, f"{cur}: copied over the original instructions at boot"
        return None

    def _open(self, lineno: int, wanted: tuple[int, str]) -> None:
        self.region = (wanted[0], wanted[1], lineno)
        if self.sections.exec():
            self._marker(isa.EXCL_BEGIN, wanted[0])

    def _close(self, lineno: int) -> None:
        if self.region is None:
            return
        if self.sections.exec():
            self._marker(isa.EXCL_END)
        self.excluded.append((self.region[2], lineno, self.region[1]))
        self.region = None

    def _sync(self, lineno: int) -> None:
        wanted = self._wanted()
        current = None if self.region is None else self.region[:2]
        if wanted != current:
            self._close(lineno)
            if wanted is not None:
                self._open(lineno, wanted)

    # -- per line ----------------------------------------------------------

    def _line(self, lineno: int, line: Line) -> None:
        plan = [self._classify(lineno, s) for s in line.stmts]
        touched = any(p is not None for p in plan)
        if not touched:
            self.out.append(line.raw)
            for s in line.stmts:
                if s.is_directive:
                    self.sections.apply(s.directive, s.directive_args)
            if line.stmts:
                only = line.stmts[0]
                self.prefix_at = len(self.out) - 1 if len(line.stmts) == 1 and _prefix_only(only) else None
            return
        if line.head:
            self.out.append(line.head)
        for stmt, kind in zip(line.stmts, plan, strict=True):
            if kind == "directive":
                self._directive(lineno, stmt)
            elif kind == "data":
                self._data(stmt)
            elif kind == "param":
                self._param(lineno, stmt)
            elif kind is None:
                self.out.append("\t" + stmt.text.strip())
                if stmt.is_directive:
                    self.sections.apply(stmt.directive, stmt.directive_args)
                self.prefix_at = len(self.out) - 1 if _prefix_only(stmt) else None
            else:
                self._site(lineno, stmt, kind)
        if line.tail:
            self.out.append("\t" + line.tail)

    def _classify(self, lineno: int, stmt: Stmt):
        """None (pass through), a Kind (a site), "param" (decided per
        expansion), "data", or "directive" (one that moves exclusion)."""
        if stmt.is_directive:
            d = stmt.directive
            if d == ".macro" and stmt.directive_args:
                self.macros.add(stmt.directive_args.replace(",", " ").split()[0].lower())
            if d == ".type":
                parts = [p.strip() for p in stmt.directive_args.split(",")]
                if len(parts) == 2 and parts[1].lstrip("@%\"").lower().startswith("function"):
                    self.functions.add(parts[0])
            if d in (NOANNOTATE, ANNOTATE) or d in _MODE_DIRECTIVES:
                return "directive"
            if d in _SECTION_DIRECTIVES or d in (".macro", ".endm"):
                after = self.sections.copy()
                after.apply(d, stmt.directive_args)
                if self.region is not None or self._wanted(after) is not None:
                    return "directive"
                return None
            if d in STRING_DIRECTIVES and self.region is None and self.sections.exec():
                return "data"
            if d == ".byte" and self.region is None and self.sections.exec():
                # An instruction written as bytes (Linux's XSTATE_OP writes
                # xsaves/xrstors so, for old assemblers) is an instruction.
                found = _bytes_instruction(stmt.directive_args)
                if found is not None:
                    self.byte_sites[id(stmt)] = found[1]
                    return found[0]
            if d == ".intel_syntax" and not self.user_excluded:
                raise AfterburnError(
                    f"{self.name}:{lineno}: Intel syntax is not supported; use AT&T syntax or wrap the region in "
                    f"{NOANNOTATE}/{ANNOTATE}"
                )
            return None
        if stmt.is_empty or self.region is not None:
            return None
        body = stmt.body
        if "\\" not in body:
            # Most statements: an ordinary mnemonic, decided without
            # splitting the operands.
            first = body.split(None, 1)[0].lower()
            if first not in _PREFIX_TOKENS and first not in self.macros and not first.startswith("{") and (
                    not isa.candidate_att(first) or (first in _SHARED_MNEMONICS and not _SPECIAL_OPERAND.search(body))):
                return None  # fmt: skip
        if stmt.is_assignment:
            return None
        ins = parse_instruction(body)
        if ins is None:
            return "param" if "\\" in stmt.body else None
        if ins.mnemonic in self.macros:
            return None  # a macro call, even one named like an instruction: its body is annotated
        if "\\" in ins.mnemonic or ("\\" in stmt.body and isa.candidate_att(ins.mnemonic)):
            return "param"  # what it is depends on the macro's argument
        kind = isa.classify_att(ins.mnemonic, ins.operands)
        if kind is not None and kind.name == "int3":
            return "param"  # an int3 may be padding, which only the bytes around it tell (decode.int3_padding)
        return kind

    # -- sites ---------------------------------------------------------------

    def _site(self, lineno: int, stmt: Stmt, kind: isa.Kind) -> None:
        if not self.sections.exec():
            self.warnings.append(f"{self.name}:{lineno}: {kind.name} in non-executable section "
                                 f"{self.sections.current()} left unannotated")  # fmt: skip
            self.out.append("\t" + stmt.text.strip())
            return
        site = TextSite(len(self.sites), lineno, kind, stmt.body)
        if self.facts is not None and site.id in self.facts:
            # The bytes gas produced are the authority on the kind (e.g.
            # "int $3" assembles to int3) and on the flags.
            f = self.facts[site.id]
            site.kind, site.flags_live, site.labels_before = f.kind, f.flags_live, f.labels_before
            kind = site.kind
        self.sites.append(site)
        if id(stmt) in self.byte_sites:
            before = self.byte_sites[id(stmt)]
        else:
            ins = parse_instruction(stmt.body)
            before = isa.pad_before_att(kind, ins.operands if ins else [])
        flags = (int(sitefmt.SiteFlag.FLAGS_LIVE) if site.flags_live else 0) | (
            int(sitefmt.SiteFlag.PAD_BEFORE) if before else 0
        )
        pad = "\t" + nop_directive(kind.pad32)
        site.movable_labels = self._head(stmt, [pad] if before else [], not site.labels_before)
        self.out.append("\t" + stmt.body)
        self.out.append(f"{L_INSN_END}:")
        if not before:
            self.out.append(pad)
        self.out.append(f"{L_END}:")
        self._record(f"{L_START}b", f"{L_END}b", f"{L_INSN_END}b - {L_INSN}b", kind.id, flags, site.id)

    def _head(self, stmt: Stmt, pad_before: list[str], labels_name_insn: bool = False) -> bool:
        """Labels, site start and any pad before the statement.  A pending
        prefix line ("rep" before "insb") is part of the site, so the head
        goes before it.

        A label names what follows it, so where a pad comes before the
        instruction, the labels written on that instruction (on its line, or
        on label lines just before it) name the instruction: they go after
        the pad (docs/design.md, "Labels and pads").  Not gcc's ``.L``
        labels and not functions: control enters those, so they stay at
        the site start, as does any label the bytes show is branched to
        (``labels_name_insn`` False).  Returns whether a label was placed
        after the pad."""
        if not pad_before:
            for label in stmt.labels:
                self.out.append(f"{label}:")
            head = [f"{L_START}:", f"{L_INSN}:"]
            if self.prefix_at is not None:
                self.out[self.prefix_at : self.prefix_at] = head
                self.prefix_at = None
            else:
                self.out.extend(head)
            return False
        # The label lines (with comments and blank lines) right before.
        i = len(self.out)
        while i > 0 and _LABEL_OR_COMMENT.match(self.out[i - 1]) and not self.out[i - 1].startswith("1977010"):
            i -= 1
        block = self.out[i:] + [f"{label}:" for label in stmt.labels]
        del self.out[i:]

        moved = [ln for ln in block if labels_name_insn and self._movable(ln)]
        movable_found = any(self._movable(ln) for ln in block)
        self.out += [ln for ln in block if ln not in moved] + [f"{L_START}:", *pad_before] + moved + [f"{L_INSN}:"]
        self.prefix_at = None
        return movable_found

    def _movable(self, line: str) -> bool:
        """A label line whose label may name the instruction after it (see _head)."""
        m = _LABEL_LINE.match(line)
        return bool(m) and not m.group(1).startswith((".L", "1977010")) and m.group(1) not in self.functions

    def _movable_labels(self, stmt: Stmt) -> bool:
        """Whether labels that may name this statement precede it."""
        i = len(self.out)
        while i > 0 and _LABEL_OR_COMMENT.match(self.out[i - 1]) and not self.out[i - 1].startswith("1977010"):
            i -= 1
        return any(self._movable(ln) for ln in self.out[i:] + [f"{label}:" for label in stmt.labels])

    def _record(self, start: str, end: str, insn_len: str, kind: int | str, flags: int | str, sid: int) -> None:
        self.out.extend("\t" + d for d in sitefmt.record_directives(start, end, insn_len, kind, flags))
        if self.srcid:  # pass 1: map the record back to this text site
            self.out += [f'\t.pushsection {SRCID_SECTION},"",@progbits', f"\t.long {sid}", "\t.popsection"]

    def _param(self, lineno: int, stmt: Stmt) -> None:
        """A statement that uses a macro parameter (``rep \\insn``,
        ``\\oldinstr``): what it assembles to depends on each expansion, and
        an argument may be one token or several statements.  Its own
        counter symbol numbers the expansions (``\\@`` does not: ``.irp``
        bodies share it).  Pass 1 records each expansion's bounds; pass 2
        pads the expansions whose bytes turned out to be one sensitive
        instruction, first in the expansion when its pad goes before, last
        when after (anything else was refused in pass 1)."""
        site = TextSite(len(self.sites), lineno, None, stmt.body)
        self.sites.append(site)
        self.param_statements.append(site.id)
        counter = f"{COUNTER}{site.id}"
        if self.pass1:
            site.movable_labels = self._movable_labels(stmt)
            for label in stmt.labels:
                self.out.append(f"{label}:")
            self.out += [f"\t.set {counter}, {counter} + 1", f"{L_EXP}:", "\t" + stmt.body, f"{L_EXP_END}:",
                         f'\t.pushsection {PROBE_SECTION},"",@progbits',
                         f"\t.long {site.id}, {counter}, {L_EXP}b, {L_EXP_END}b", "\t.popsection"]  # fmt: skip
            return
        pf = self.facts.get(site.id) if self.facts else None
        expansions: list[Expansion] = pf.expansions if pf else []
        site.labels_before = pf.labels_before if pf else False
        site.flags_live = any(e.flags_live for e in expansions)
        site.padded = bool(expansions)
        if len({e.kind for e in expansions}) == 1:
            site.kind = expansions[0].kind

        def when(group: list[Expansion]) -> str:
            return " || ".join(f"({counter} == {e.number})" for e in group)

        def groups(before: bool) -> dict[tuple, list[Expansion]]:
            out: dict[tuple, list[Expansion]] = {}
            for e in expansions:
                if e.pad_before == before:
                    out.setdefault((e.kind.id, e.kind.pad32, e.insn_len, e.flags_live), []).append(e)
            return out

        pads = [f"\t.set {counter}, {counter} + 1"]
        for (_, pad, _, _), group in groups(True).items():
            pads += [f"\t.if {when(group)}", "\t" + nop_directive(pad), "\t.endif"]
        if len(pads) > 1:
            self._head(stmt, pads, not site.labels_before)
        else:
            self._head(stmt, [])
            self.out.append(pads[0])
        self.out += ["\t" + stmt.body, f"{L_INSN_END}:"]
        for (_, pad, _, _), group in groups(False).items():
            self.out += [f"\t.if {when(group)}", "\t" + nop_directive(pad), "\t.endif"]
        self.out.append(f"{L_END}:")
        for before in (True, False):
            for (kind_id, _, insn_len, live), group in groups(before).items():
                # The instruction is first in its expansion when the pad
                # comes before, last when after: the site is pad + it.
                start, end = ((f"{L_START}b", f"({L_INSN}b + {insn_len})") if before
                              else (f"({L_INSN_END}b - {insn_len})", f"{L_END}b"))  # fmt: skip
                flags = (int(sitefmt.SiteFlag.FLAGS_LIVE) if live else 0) | (
                    int(sitefmt.SiteFlag.PAD_BEFORE) if before else 0)  # fmt: skip
                self.out.append(f"\t.if {when(group)}")
                self._record(start, end, str(insn_len), kind_id, flags, site.id)
                self.out.append("\t.endif")

    def _data(self, stmt: Stmt) -> None:
        """A string in a code section is data, whatever its bytes would
        decode to (Kbuild's asm-offsets.c emits its ``->SYM value`` lines
        into .text): an excluded region, so that no decoder reads it."""
        for label in stmt.labels:
            self.out.append(f"{label}:")
        self._marker(isa.EXCL_BEGIN, sitefmt.Why.DATA)
        self.out.append("\t" + stmt.body)
        self._marker(isa.EXCL_END)

    # -- directives that move exclusion ----------------------------------------------

    def _directive(self, lineno: int, stmt: Stmt) -> None:
        d = stmt.directive
        for label in stmt.labels:
            self.out.append(f"{label}:")
        if d in (NOANNOTATE, ANNOTATE):
            self.out.append(f"\t# afterburn: {d[1:]}")
            self.user_excluded = d == NOANNOTATE
            self._sync(lineno)
            return
        if d in _MODE_DIRECTIVES:
            self.out.append("\t" + stmt.body)
            new = 32 if d == ".code32" else (64 if d == ".code64" else 16)
            if new != 32 and self.mode == 32 and not self.user_excluded:
                self.warnings.append(f"{self.name}:{lineno}: {d} region left unannotated (only 32-bit code is)")
            self.mode = new
            self._sync(lineno)
            return
        # A section switch: close any region in the old section, and open
        # the one in force in the new.
        self._close(lineno)
        self.out.append("\t" + stmt.body)
        self.sections.apply(d, stmt.directive_args)
        wanted = self._wanted()
        if wanted is not None:
            self._open(lineno, wanted)

    def _marker(self, kind: isa.Kind, why: int = sitefmt.Why.UNSPECIFIED) -> None:
        self.out.append(f"{L_MARK}:")
        self.out.extend("\t" + d for d in sitefmt.marker_directives(f"{L_MARK}b", kind, why))
        if self.srcid:
            self.out += [f'\t.pushsection {SRCID_SECTION},"",@progbits', "\t.long -1", "\t.popsection"]


def _bytes_instruction(args: str) -> tuple[isa.Kind, bool] | None:
    """(kind, pad before) if a ``.byte`` list of constants is exactly one
    sensitive instruction."""
    try:
        data = bytes(int(a.strip(), 0) for a in args.split(","))
    except ValueError:
        return None  # an expression, or not a byte
    if not 0 < len(data) <= 15:
        return None
    insn = decode.decode_one(data, 0, 0)
    if insn is None or decode.size_of(insn, data, 0) != len(data):
        return None
    kind = isa.classify(insn)
    return (kind, isa.pad_before_cs(kind, insn)) if kind is not None else None


def _prefix_only(stmt: Stmt) -> bool:
    """A statement made only of prefixes, like ``rep`` in ``rep; insb``."""
    if not stmt.body or stmt.labels or stmt.is_directive:
        return False
    return all(t.lower() in _PREFIX_TOKENS for t in stmt.body.split())


_PREFIX_TOKENS = isa.ATT_PREFIXES
# Mnemonics shared with ordinary instructions: sensitive only with a
# segment, control or debug register operand, or (jmp/call) as a far
# transfer with two immediates.  A cheap test before parsing operands.
_SHARED_MNEMONICS = frozenset(m for m in ("mov", "movl", "movw", "movq", "push", "pushl", "pushw", "pop", "popl",
                                          "popw", "jmp", "call") if isa.candidate_att(m))  # fmt: skip
_SPECIAL_OPERAND = re.compile(r"%(?:[cdefgs]s|cr\d+|dr\d+|db\d+)\b|\$.*,\s*\$", re.IGNORECASE)


def is_annotated_text(src: str) -> bool:
    for raw in src.splitlines()[:5]:
        if raw.startswith("# afterburn: annotated"):
            return True
    if sitefmt.SECTION not in src:
        return False  # (the full check lexes every line)
    lexer = Lexer()
    for raw in src.splitlines():
        for s in lexer.line(raw).stmts:
            if s.directive in (".section", ".pushsection") and parse_section_args(s.directive_args)[0] == sitefmt.SECTION:
                return True
    return False


def _lines(src: str) -> list[Line]:
    lexer = Lexer()
    return [lexer.line(raw) for raw in src.splitlines()]


def annotate_text(src: str, name: str = "<input>", assemble: Assembler | None = None) -> AnnotateResult:
    """Annotate AT&T assembler text in two passes.  ``assemble`` turns text
    into an ELF object (bytes, or None if the assembler's flags ask for no
    object); without one, every site is conservatively flags-live, no
    cross-check is made, and macro-parameter statements are left as they are."""
    if is_annotated_text(src):
        return AnnotateResult(src, already_annotated=True)
    lines = _lines(src)
    if assemble is None:
        em = _Emitter(lines, name, {})
        return AnnotateResult(em.run(), em.sites, em.excluded, em.warnings)
    pass1 = _Emitter(lines, name, None)
    obj = assemble(pass1.run())
    if obj is None:  # the assembler flags ask for no object: nothing to learn from the bytes
        em = _Emitter(lines, name, {})
        return AnnotateResult(em.run(), em.sites, em.excluded, em.warnings)
    facts = _facts_from_object(Elf(f"{name} (pass 1)", obj), name, pass1.sites)
    em = _Emitter(lines, name, facts)
    text = em.run()
    return AnnotateResult(text, [s for s in em.sites if s.padded], em.excluded, em.warnings)


@dataclass
class ObjectResult:
    data: bytes | None  # None: the assembler flags asked for no object (e.g. -Wa,--version)
    warnings: list[str] = field(default_factory=list)
    passes: int = 1  # assemblies of annotated text it took


def annotate_to_object(src: str, name: str, assemble: Assembler, final: Assembler | None = None) -> ObjectResult:
    """Annotate AT&T text and return the assembled object.

    One assembly is normally enough: the object already has every pad, and
    what only the bytes can tell (each record's flags liveness, and its kind
    where gas chose the encoding) is written into its records directly.
    Text with macro-parameter statements, or whose bytes disagree with the
    text about a pad, takes :func:`annotate_text`'s two passes.  ``final``
    assembles the object that is returned (its messages are the user's);
    ``assemble`` any earlier pass."""
    final = final or assemble
    if is_annotated_text(src):
        return ObjectResult(final(src))
    lines = _lines(src)
    em = _Emitter(lines, name, {}, srcid=False)
    text = em.run()
    warnings, passes = em.warnings, 1
    if em.param_statements:
        res = annotate_text(src, name, assemble)
        text, warnings, passes = res.text, res.warnings, 2
    obj = final(text)
    if obj is None:
        return ObjectResult(None, warnings, passes)
    elf = Elf(name, obj)
    raw = bytearray(obj)
    records = elf.section(sitefmt.SECTION)
    for s, kind, live in _inspect(elf, name):
        if kind is not s.kind and (kind.pad32 != s.kind.pad32 or isa.pad_before(kind, False) != s.pad_before):
            if passes == 2:
                raise AfterburnError(f"{name}: internal error: a {kind.name} site was padded as {s.kind.name}")
            res = annotate_text(src, name, assemble)
            return ObjectResult(final(res.text), res.warnings, 2)
        at = records.offset + s.index * sitefmt.RECORD_SIZE
        flags = (int(s.flags) & ~int(sitefmt.SiteFlag.FLAGS_LIVE)) | (int(sitefmt.SiteFlag.FLAGS_LIVE) if live else 0)
        raw[at + 4], raw[at + 7] = kind.id, flags
    return ObjectResult(bytes(raw), warnings, passes)


# ---------------------------------------------------------------------------
# What the bytes say


def _inspect(elf: Elf, name: str, unchecked: list[sitefmt.Region] | None = None,
             padding: dict[int, set[int]] | None = None) -> list[tuple[sitefmt.Site, isa.Kind, bool]]:  # fmt: skip
    """Every record of an assembled object with the kind its bytes decode to
    and whether arithmetic flags are live after it; and the cross-check that
    the object holds no sensitive instruction without a record (outside
    excluded regions and ``unchecked``).  ``padding`` receives, per section,
    the offsets of the 0xCC bytes that are padding."""
    from .verify import relocation_targets

    table = sitefmt.read_site_table(elf)
    out = []
    per_section = table.by_section()
    targets = relocation_targets(elf)
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
            inside = next((r for r in table.excluded if r.section.index == sec.index and r.start <= s.offset < r.end),
                          None)  # fmt: skip
            if inside is not None:
                raise AfterburnError(f"{name}: the {kind.name} site at {elf.symbolize(sec, s.offset)} lies in a region "
                                     f"that must not be annotated ({sitefmt.Why.describe(inside.why)}); a macro "
                                     "expanded there pads it: annotate the macro by hand")  # fmt: skip
            out.append((s, kind, decode.site_flags_live(s, sec.data, elf.bits, site_at, relocated)))
        named = {t for t, _ in targets.get(sec.index, [])}
        decoded = decode.sweep(elf, sec, secsites, table.excluded, named=named, relocated=relocated)
        if padding is not None:
            padding[sec.index] = {d.offset for d in decoded if d.padding}
        probed = [(r.start, r.end) for r in unchecked or [] if r.section.index == sec.index]
        missed = [d for d in decoded if d.kind is not None and d.site is None
                  and not any(a <= d.offset < b for a, b in probed)]  # fmt: skip
        if missed:
            shown = "; ".join(
                f"{elf.symbolize(sec, d.offset)} {(d.insn.mnemonic + ' ' + d.insn.op_str).strip()}" for d in missed[:3]
            )
            more = f" (and {len(missed) - 3} more)" if len(missed) > 3 else ""
            raise AfterburnError(
                f"{name}: {len(missed)} sensitive instruction(s) in the assembled code were not visible in the text "
                f"(emitted with .byte?): {shown}{more}; write them as instructions or wrap them in "
                f"{NOANNOTATE}/{ANNOTATE}"
            )
    return out


def _entered(elf: Elf, padding_out=None) -> dict[int, set[int]]:
    """Per executable section, the offsets control is sent to: direct
    branches gas resolved, branch relocations, code pointers in data, and
    function symbols (refs.BRANCH, refs.POINTER)."""
    out: dict[int, set[int]] = {}
    for idx, rs in refs.elf_refs(elf).items():
        out.setdefault(idx, set()).update(r.offset for r in rs if r.meaning != refs.INSN)
    for sec in elf.exec_sections():
        got = out.setdefault(sec.index, set())
        relocated = {r.offset for r in elf.relocations(sec)}
        for off, size, _, _ in decode.lite_run(sec.data, 0, len(sec.data), elf.bits):
            b = decode.direct_branch(sec.data[off : off + size], off + size)
            if b is not None and not any(off + i in relocated for i in range(1, size)):
                got.add(b[0])
        got.update(s.value for s in elf.code_symbols(sec) if s.type == "STT_FUNC")
    return out


def _probes(elf: Elf) -> list[tuple[int, int, object, int, int]]:
    """(statement id, expansion number, section, start, end) per expansion
    of a macro-parameter statement in a pass-1 object."""
    probe = elf.section(PROBE_SECTION)
    if probe is None:
        return []
    relocs = {r.offset: r for r in elf.relocations(probe)}
    syms = elf.symbols
    out = []
    for i in range(0, probe.size - 15, 16):
        sid, number = struct.unpack_from("<iI", probe.data, i)
        a, b = relocs.get(i + 8), relocs.get(i + 12)
        if a is None or b is None:
            raise AfterburnError(f"{elf.path}: internal error: a macro-parameter expansion without relocations")
        sa, sb = syms[a.sym], syms[b.sym]
        if sa.shndx != sb.shndx or not isinstance(sa.shndx, int):
            raise AfterburnError(f"{elf.path}: internal error: a macro-parameter expansion spans sections")
        out.append((sid, number, elf.sections[sa.shndx], sa.value + a.addend, sb.value + b.addend))
    return out


def _facts_from_object(elf: Elf, name: str, sites: list[TextSite]) -> dict:
    """What pass 1's object says about each text site: (kind, flags live)
    for a site, the padded expansions for a macro-parameter statement."""
    records = elf.section(sitefmt.SECTION)
    n_records = records.size // sitefmt.RECORD_SIZE if records is not None else 0
    srcid_sec = elf.section(SRCID_SECTION)
    ids = list(struct.unpack(f"<{n_records}i", srcid_sec.data)) if srcid_sec is not None else []
    if len(ids) != n_records:
        raise AfterburnError(f"{name}: internal error: {n_records} records but {len(ids)} source ids")
    probes = _probes(elf)
    unchecked = [sitefmt.Region(sec, a, b) for _, _, sec, a, b in probes]
    padding: dict[int, set[int]] = {}
    facts: dict = {}
    entered = _entered(elf, padding_out=None)
    movable = {t.id for t in sites if t.movable_labels}
    for s, kind, live in _inspect(elf, name, unchecked, padding):
        sid = ids[s.index]
        # Labels placed after the pad that something branches to go back
        # to the site start.
        before = sid in movable and s.insn_offset in entered.get(s.section.index, set())
        if sid in facts:
            prev = facts[sid]
            if prev.kind is not kind:
                raise AfterburnError(f"{name}: one source line expands to different instructions "
                                     f"({prev.kind.name} and {kind.name}); annotate the macro by hand")  # fmt: skip
            live = live or prev.flags_live  # a macro body is live if any expansion is
            before = before or prev.labels_before
        facts[sid] = SiteFacts(kind, live, before)
    table = sitefmt.read_site_table(elf)
    by_id = {s.id: s for s in sites}
    for sid, number, sec, a, b in probes:
        pf = facts.setdefault(sid, ProbeFacts())
        if not sec.is_exec or any(r.section.index == sec.index and r.start <= a < r.end for r in table.excluded):
            continue
        found = _expansion(elf, sec, a, b, number, table, padding.get(sec.index, set()))
        if found is None:
            continue
        if isinstance(found, str):
            line = by_id[sid].line if sid in by_id else 0
            raise AfterburnError(f"{name}:{line}: `{by_id[sid].text if sid in by_id else '?'}` expands at "
                                 f"{elf.symbolize(sec, a)} to {found}; annotate the macro by hand")  # fmt: skip
        pf.expansions.append(found)
        # No pad in pass 1: the expansion's start is where its labels are.
        if sid in movable and found.pad_before and a in entered.get(sec.index, set()):
            pf.labels_before = True
    return facts


def _expansion(elf: Elf, sec, a: int, b: int, number: int, table: sitefmt.SiteTable,
               padding: set[int]) -> Expansion | str | None:  # fmt: skip
    """The site one expansion needs, None if it holds no sensitive
    instruction, or why it cannot be padded."""
    insns = list(decode.lite_run(sec.data, a, b, elf.bits))
    if not insns or insns[-1][0] + insns[-1][1] != b:
        return None if not insns else "bytes that do not decode as instructions"
    found = []
    for i, (off, size, mnemonic, op_str) in enumerate(insns):
        if off in padding:
            continue
        lite = decode.Lite(off, size, mnemonic, op_str, sec.data[off : off + size])
        kind = decode.kind_of(lite, sec.data, elf.bits)
        if kind is not None:
            found.append((i, off, size, kind))
    if not found:
        return None
    if len(found) > 1:
        return f"{len(found)} sensitive instructions ({', '.join(f[3].name for f in found)})"
    i, off, size, kind = found[0]
    insn = decode.decode_one(sec.data, off, off, elf.bits)
    before = isa.pad_before_cs(kind, insn)
    if (before and i != 0) or (not before and i != len(insns) - 1):
        where = "first" if before else "last"
        return f"{kind.name} among other instructions (its pad needs it {where})"
    site_at = {s.offset: s for s in table.sites if s.section.index == sec.index}
    relocated = {r.offset for r in elf.relocations(sec)}
    live = kind.transfers_control or decode.flags_live_after(sec.data, off + size, elf.bits, site_at, relocated)
    return Expansion(number, kind, before, size, live)
