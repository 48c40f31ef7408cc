"""``afterburn cc``: a gcc drop-in that produces annotated objects.

Each 32-bit x86 source goes through gcc up to assembler text, through the
annotator, and is assembled with the same driver and flags::

    foo.c  --gcc -S-->  foo.s  --annotate + assemble-->  foo.o
    foo.S  --gcc -E-->  foo.s  --annotate + assemble-->  foo.o
    foo.s  ----------------->  annotate + assemble  -->  foo.o

Every call that does not compile i386 code is gcc's, exactly: the process
becomes gcc (``exec``), so output, diagnostics and exit status are gcc's own.
That covers preprocessing (``-E``, ``-M``), links without sources, version
and help queries, and sources compiled for another target: 64-bit, and
``-m16`` (real-mode code is not pre-virtualized, as ``.code16`` regions are
not).  Build systems probe the compiler that way (Kconfig's
``as-version.sh``, ``cc-option``), and the probes must see gcc.

Flags pass through to every gcc step; dependency flags (-MD, -MMD, -MF, -MT,
-MQ, -MP, -Wp,-MD,...) go to the first step only, with the target and file
names gcc would have used for the final object, so ``make`` sees the same .d
files.  Options follow gcc's precedence: ``-E`` over ``-S`` over ``-c``, the
last ``-o`` and the last ``-m16/-m32/-m64`` win.  Outputs: a regular file
(or a new one) is written atomically; ``-o -`` is stdout; any other file
(``/dev/null``, a pipe) is written in place, never replaced.

The real compiler is ``$AFTERBURN_CC`` or ``gcc``.  This module imports
nothing heavy at the top: a call that turns out to be gcc's costs one
Python start-up.
"""
from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AfterburnError

# gcc options whose value may be the next argument.
_TAKES_ARG = {
    "-o", "-x", "-MF", "-MT", "-MQ", "-I", "-D", "-U", "-include", "-imacros", "-isystem", "-iquote",
    "-idirafter", "-iprefix", "-iwithprefix", "-iwithprefixbefore", "-isysroot", "-imultilib", "-L", "-l",
    "-T", "-Xlinker", "-Xassembler", "-Xpreprocessor", "-aux-info", "-wrapper", "-B", "-u", "-z", "--param",
    "-dumpdir", "-dumpbase", "-dumpbase-ext", "-e",
}  # fmt: skip
_LANG_BY_EXT = {".c": "c", ".i": "cpp-output", ".S": "assembler-with-cpp", ".sx": "assembler-with-cpp", ".s": "assembler"}
_SOURCE_LANGS = ("c", "cpp-output", "assembler", "assembler-with-cpp")
_MODE_RANK = {"link": 0, "c": 1, "S": 2, "E": 3}  # gcc: -E beats -S beats -c


@dataclass
class Source:
    path: str  # "-" is standard input
    lang: str


@dataclass
class Command:
    common: list[str] = field(default_factory=list)  # flags for every step
    deps: list[str] = field(default_factory=list)  # dependency flags (first step only)
    inputs: list[object] = field(default_factory=list)  # Source or str (object/library), in order
    output: str | None = None
    mode: str = "link"  # link | c | S | E
    has_mt: bool = False
    wants_deps: bool = False
    machine: str | None = None  # the last -m16/-m32/-m64/-mx32
    lto: bool = False

    @property
    def sources(self) -> list[Source]:
        return [i for i in self.inputs if isinstance(i, Source)]


def parse(argv: list[str]) -> Command:
    cmd = Command()
    lang: str | None = None
    i = 0
    while i < len(argv):
        a = argv[i]

        def take() -> str:
            nonlocal i
            i += 1
            if i >= len(argv):
                raise AfterburnError(f"afterburn cc: missing argument to {argv[i - 1]}")
            return argv[i]

        if a in ("-c", "-S", "-E"):
            if _MODE_RANK[a[1]] > _MODE_RANK[cmd.mode]:
                cmd.mode = a[1]
        elif a == "-o":
            cmd.output = take()
        elif a.startswith("-o") and len(a) > 2:
            cmd.output = a[2:]
        elif a == "-x":
            lang = take()
            lang = None if lang == "none" else lang
        elif a.startswith("-x") and len(a) > 2:
            lang = None if a[2:] == "none" else a[2:]
        elif a in ("-MF", "-MT", "-MQ"):
            v = take()
            cmd.deps += [a, v]
            cmd.has_mt |= a != "-MF"
        elif a.startswith(("-MF", "-MT", "-MQ")):
            cmd.deps.append(a)
            cmd.has_mt |= not a.startswith("-MF")
        elif a in ("-MD", "-MMD", "-MP", "-MG"):
            cmd.deps.append(a)
            cmd.wants_deps |= a in ("-MD", "-MMD")
        elif a in ("-M", "-MM"):
            cmd.mode = "E"  # dependency listing only: gcc does it all
            cmd.common.append(a)
        elif a.startswith("-Wp,") and "-M" in a:
            cmd.deps.append(a)
            cmd.wants_deps = True
        elif a in _TAKES_ARG:
            cmd.common += [a, take()]
        elif a.startswith("-") and a != "-":
            cmd.common.append(a)
            if a in ("-m16", "-m32", "-m64", "-mx32"):
                cmd.machine = a
            cmd.lto |= a.startswith("-flto") and a != "-fno-lto"
        else:
            src_lang = lang or _LANG_BY_EXT.get(Path(a).suffix)
            if src_lang in _SOURCE_LANGS:
                cmd.inputs.append(Source(a, src_lang))
            else:
                cmd.inputs.append(a)
        i += 1
    return cmd


def _gcc() -> list[str]:
    return shlex.split(os.environ.get("AFTERBURN_CC", "gcc"))


def targets_i386(cmd: Command) -> bool:
    """Whether gcc would generate 32-bit x86 code for this call: the last
    -m flag says so, or, with none, the compiler's own default does."""
    if cmd.machine is not None:
        return cmd.machine == "-m32"
    try:
        r = subprocess.run(_gcc() + ["-dumpmachine"], capture_output=True, text=True)
    except OSError:
        return False
    machine = r.stdout.strip().split("-", 1)[0]
    return len(machine) == 4 and machine[0] == "i" and machine[2:] == "86"


def annotates(cmd: Command) -> bool:
    """True for the calls Afterburn annotates; every other call is gcc's."""
    return cmd.mode != "E" and bool(cmd.sources) and targets_i386(cmd)


class _GccFailed(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _run(args: list[str]) -> None:
    r = subprocess.run(args)
    if r.returncode != 0:
        raise _GccFailed(r.returncode)


def _object_name(src: Source, cmd: Command, single: bool) -> str:
    if cmd.output and single:
        return cmd.output
    stem = "-" if src.path == "-" else Path(src.path).with_suffix("").name
    return f"{stem}.o" if cmd.mode == "c" else f"{stem}.s"


def _dep_flags(cmd: Command, target: str) -> list[str]:
    flags = list(cmd.deps)
    if cmd.wants_deps and not any(f.startswith("-MF") for f in flags) and not any(
        f.startswith("-Wp,") for f in flags
    ):
        flags += ["-MF", str(Path(target).with_suffix(".d"))]
    if (cmd.wants_deps or flags) and not cmd.has_mt:
        flags += ["-MT", target]
    return flags


def in_place(path: str) -> bool:
    """Outputs that must be written where they are, never replaced by a
    rename: anything that exists and is not a regular file (``/dev/null``,
    a FIFO, a terminal).  A symlink is followed, as gcc does."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def write_output(path: str, data: bytes) -> None:
    """Write a final output as gcc would: ``-`` is stdout, a device or pipe
    is written in place, a regular file atomically."""
    from .fsutil import write_atomic

    if path == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    if in_place(path):
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as e:
            raise AfterburnError(f"afterburn cc: cannot write {path}: {e.strerror}") from None
        return
    # Through a symlink, as gcc writes: the link stays, its target changes.
    write_atomic(os.path.realpath(path), data)


class _Assembler:
    """Assembles annotated text with the same driver and flags as the
    compile, into a private directory.  ``None`` means the flags made the
    assembler produce nothing (``-Wa,--version``): gcc's own call produces
    nothing either.  Only the final assembly's messages reach the user
    (``echo``): a check assembly is ours, and ``gcc -S`` runs no assembler."""

    def __init__(self, cmd: Command, tmp: Path, echo: bool = False) -> None:
        self.cmd, self.tmp, self.echo = cmd, tmp, echo
        self.count = 0

    def __call__(self, text: str) -> bytes | None:
        self.count += 1
        tag = f"{'final' if self.echo else 'check'}-{self.count}"
        s, o = self.tmp / f"{tag}.s", self.tmp / f"{tag}.o"
        s.write_text(text)
        r = subprocess.run(_gcc() + self.cmd.common + ["-c", "-x", "assembler", str(s), "-o", str(o)],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            first = next((ln for ln in r.stderr.splitlines() if "rror" in ln), r.stderr.strip())
            raise AfterburnError(f"afterburn cc: annotated assembler does not assemble: {first}")
        if self.echo and (r.stdout or r.stderr):  # what the final assembly prints is the user's
            sys.stdout.write(r.stdout)
            sys.stdout.flush()
            sys.stderr.write(r.stderr)
        try:
            return o.read_bytes()
        except FileNotFoundError:
            return None


def _read_text(src: Source, asm: Path | None) -> str:
    try:
        if asm is None:
            return sys.stdin.read()
        return asm.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise AfterburnError(f"afterburn cc: cannot read {asm or 'standard input'}: {e}") from None


def compile_source(src: Source, cmd: Command, out: str, tmp: Path) -> None:
    """Compile one source to an annotated object (or .s for -S) at ``out``."""
    from . import annotate_asm

    stem = Path(src.path).stem if src.path != "-" else "stdin"
    asm: Path | None = tmp / f"{stem}.s"
    if src.lang in ("c", "cpp-output"):
        _run(_gcc() + cmd.common + _dep_flags(cmd, out) + ["-S", "-x", src.lang, src.path, "-o", str(asm)])
    elif src.lang == "assembler-with-cpp":
        _run(_gcc() + cmd.common + _dep_flags(cmd, out) + ["-E", "-x", src.lang, src.path, "-o", str(asm)])
    else:
        asm = None if src.path == "-" else Path(src.path)
    if asm is not None and not asm.exists():
        return  # gcc succeeded and wrote nothing (e.g. -fsyntax-only): neither do we
    text = _read_text(src, asm)
    assemble = _Assembler(cmd, tmp)
    if cmd.mode == "S":
        result = annotate_asm.annotate_text(text, name=src.path, assemble=assemble)
        _warn(result.warnings)
        write_output(out, result.text.encode())
        return
    if out == "-":
        # gcc hands "-o -" to the assembler: let the assembler do with the
        # annotated text whatever it does with gcc's (GNU as refuses).
        result = annotate_asm.annotate_text(text, name=src.path, assemble=assemble)
        _warn(result.warnings)
        ann = tmp / f"{stem}.afterburn.s"
        ann.write_text(result.text)
        _run(_gcc() + cmd.common + ["-c", "-x", "assembler", str(ann), "-o", "-"])
        return
    obj = annotate_asm.annotate_to_object(text, name=src.path, assemble=assemble, final=_Assembler(cmd, tmp, echo=True))
    _warn(obj.warnings)
    if obj.data is not None:  # None: the flags asked the assembler for something else (-Wa,--version)
        write_output(out, obj.data)


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        print(f"afterburn cc: warning: {w}", file=sys.stderr)


def exec_gcc(argv: list[str]) -> None:
    """Become gcc with these arguments (never returns)."""
    gcc = _gcc()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(gcc[0], gcc + argv)
    except OSError as e:
        raise AfterburnError(f"afterburn cc: cannot run {gcc[0]}: {e.strerror}") from None


def main(argv: list[str]) -> int:
    cmd = parse(argv)
    if not annotates(cmd):
        exec_gcc(argv)
    if cmd.lto:
        raise AfterburnError("afterburn cc: -flto is not supported (gcc -S would emit LTO bytecode, not assembler)")
    if cmd.output and len(cmd.sources) > 1 and cmd.mode in ("c", "S"):
        raise AfterburnError(f"afterburn cc: cannot specify -o with -{cmd.mode} and multiple files")
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="afterburn-cc-") as d:
            tmp = Path(d)
            if cmd.mode in ("c", "S"):
                single = len(cmd.sources) == 1
                for src in cmd.sources:
                    compile_source(src, cmd, _object_name(src, cmd, single), tmp)
                return 0
            # Compile and link: annotated temporary objects replace the sources.
            link_inputs = []
            for n, item in enumerate(cmd.inputs):
                if isinstance(item, Source):
                    obj = tmp / f"{n}-{Path(item.path).stem}.o"
                    sub = Command(cmd.common, cmd.deps, [item], None, "c", cmd.has_mt, cmd.wants_deps, cmd.machine)
                    compile_source(item, sub, str(obj), tmp)
                    link_inputs.append(str(obj))
                else:
                    link_inputs.append(item)
            out = ["-o", cmd.output] if cmd.output else []
            _run(_gcc() + cmd.common + link_inputs + out)
            return 0
    except _GccFailed as e:
        return e.status
