"""Just enough of GNU as's AT&T syntax to find instructions in text.

gas on i386 Linux treats ``#`` as a comment anywhere outside a string, a
``/`` that starts a line as a line comment, ``/* ... */`` as a comment that
may span lines, and ``;`` as a statement separator.  A statement is zero or
more ``label:`` followed by a directive, an assignment, or an instruction with
optional prefixes.  Everything is kept verbatim so the annotator can re-emit
untouched text byte for byte.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .isa import ATT_PREFIXES

_SPECIAL = re.compile(r"[\"'#;/]")
_ASSIGN = re.compile(r"[A-Za-z_.$][\w.$]*\s*==?(?!=)")
_LABEL = re.compile(r'\s*((?:[A-Za-z_.$\\@][\w.$\\@()]*|\d+|"[^"]*"))\s*:(?!:)')


@dataclass(slots=True)
class Stmt:
    text: str  # verbatim, labels included, comments inside it kept
    code: str  # the same with comments removed
    labels: list[str] = field(default_factory=list)
    body: str = ""  # code after the labels, stripped

    @property
    def is_empty(self) -> bool:
        return not self.body

    @property
    def is_directive(self) -> bool:
        return self.body.startswith(".")

    @property
    def directive(self) -> str:
        return self.body.split(None, 1)[0].lower() if self.is_directive else ""

    @property
    def directive_args(self) -> str:
        parts = self.body.split(None, 1)
        return parts[1].strip() if len(parts) > 1 else ""

    @property
    def is_assignment(self) -> bool:
        """``sym = expr`` (or ``sym == expr``)."""
        return bool(_ASSIGN.match(self.body))


@dataclass(slots=True)
class Line:
    raw: str
    stmts: list[Stmt]
    # The end of a block comment opened on an earlier line (``... */``).
    head: str = ""
    # A comment that ends the line (``# ...``), or the start of a block
    # comment left open at the end of the line; re-emitted after our lines.
    tail: str = ""


class Lexer:
    """Splits lines into statements, carrying block-comment state."""

    def __init__(self) -> None:
        self.in_block = False

    def line(self, raw: str) -> Line:
        if not self.in_block and not _SPECIAL.search(raw):
            # No string, comment or separator: one statement, as it is.
            stmt = _stmt(raw, raw)
            return Line(raw, [stmt] if raw.strip() or stmt.labels else [], "", "")
        stmts: list[Stmt] = []
        text: list[str] = []
        code: list[str] = []
        i, n = 0, len(raw)
        tail = ""
        head = ""
        if self.in_block:
            j = raw.find("*/")
            if j < 0:
                return Line(raw, [], raw, "")
            head, i = raw[: j + 2], j + 2
            self.in_block = False
        elif raw.lstrip().startswith("/") and not raw.lstrip().startswith("/*"):
            return Line(raw, [], "", raw)
        while i < n:
            c = raw[i]
            if c == '"':
                j = i + 1
                while j < n and raw[j] != '"':
                    j += 2 if raw[j] == "\\" else 1
                j = min(j + 1, n)
                text.append(raw[i:j])
                code.append(raw[i:j])
                i = j
            elif c == "'":
                # gas character constant: 'c or '\c (an optional closing quote
                # is just the next token)
                j = i + (3 if i + 1 < n and raw[i + 1] == "\\" else 2)
                text.append(raw[i:j])
                code.append(raw[i:j])
                i = j
            elif c == "#":
                tail = raw[i:]
                i = n
            elif raw.startswith("/*", i):
                j = raw.find("*/", i + 2)
                if j < 0:
                    # Block comment left open: it becomes the line's tail.
                    tail = raw[i:]
                    self.in_block = True
                    i = n
                else:
                    text.append(raw[i : j + 2])
                    code.append(" ")
                    i = j + 2
            elif c == ";":
                stmts.append(_stmt("".join(text), "".join(code)))
                text, code = [], []
                i += 1
            else:
                j = i
                while j < n and raw[j] not in "\"'#;/":
                    j += 1
                if j == i:  # a lone '/' (division)
                    j = i + 1
                text.append(raw[i:j])
                code.append(raw[i:j])
                i = j
        stmts.append(_stmt("".join(text), "".join(code)))
        return Line(raw, [s for s in stmts if s.text.strip() or s.labels], head, tail)


def _stmt(text: str, code: str) -> Stmt:
    labels = []
    rest = code
    while True:
        m = _LABEL.match(rest)
        if not m or m.group(1).startswith("%"):
            break
        labels.append(m.group(1))
        rest = rest[m.end() :]
    return Stmt(text, code, labels, rest.strip())


def split_operands(s: str) -> list[str]:
    """Split at top-level commas (not inside parentheses or strings)."""
    out, depth, cur, in_str = [], 0, [], False
    for ch in s:
        if in_str:
            cur.append(ch)
            if ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


@dataclass(frozen=True)
class Instruction:
    prefixes: tuple[str, ...]
    mnemonic: str  # lower case
    operands: list[str]


def parse_instruction(body: str) -> Instruction | None:
    """Prefixes, mnemonic and operands of an instruction statement; None for a
    statement that is only prefixes (``rep`` before ``insb`` on the next line)."""
    tokens = body.split(None, 1)
    prefixes: list[str] = []
    while tokens:
        head = tokens[0].lower()
        if head in ATT_PREFIXES or (head.startswith("{") and head.endswith("}")):
            prefixes.append(head)
            tokens = tokens[1].split(None, 1) if len(tokens) > 1 else []
            continue
        break
    if not tokens:
        return None
    mnemonic = tokens[0].lower()
    operands = split_operands(tokens[1]) if len(tokens) > 1 else []
    return Instruction(tuple(prefixes), mnemonic, operands)


def parse_section_args(args: str) -> tuple[str, str | None]:
    """(name, flags or None) from the arguments of .section/.pushsection."""
    parts = split_operands(args)
    if not parts:
        return "", None
    name = parts[0].strip().strip('"')
    flags = None
    if len(parts) > 1 and parts[1].startswith('"'):
        flags = parts[1].strip('"')
    return name, flags
