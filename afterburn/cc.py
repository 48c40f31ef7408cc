"""``afterburn cc``: a gcc drop-in that produces annotated objects.

Each source goes through gcc up to assembler text, through the annotator, and
back through gcc to an object::

    foo.c  --gcc -S-->  foo.s  --annotate-->  foo.ann.s  --gcc -c-->  foo.o
    foo.S  --gcc -E-->  foo.s  --annotate-->  ...
    foo.s  ------------------>  annotate  -->  ...

Every other flag passes through to both gcc steps.  Dependency flags (-MD,
-MMD, -MF, -MT, -MQ, -MP, -Wp,-MD,...) apply to the first step only, with the
target and file names gcc would have used for the final object, so
``make CC="afterburn cc"`` sees the same .d files as with plain gcc.  Linking
and anything without sources (-E, -M, plain links) is handed to gcc unchanged.
The real compiler is ``$AFTERBURN_CC`` or ``gcc``.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .annotate_asm import annotate_text
from .errors import AfterburnError
from .fsutil import write_atomic

# gcc options whose value may be the next argument.
_TAKES_ARG = {
    "-o", "-x", "-MF", "-MT", "-MQ", "-I", "-D", "-U", "-include", "-imacros", "-isystem", "-iquote",
    "-idirafter", "-iprefix", "-iwithprefix", "-iwithprefixbefore", "-isysroot", "-imultilib", "-L", "-l",
    "-T", "-Xlinker", "-Xassembler", "-Xpreprocessor", "-aux-info", "-wrapper", "-B", "-u", "-z", "--param",
    "-dumpdir", "-dumpbase", "-dumpbase-ext", "-e",
}  # fmt: skip
_LANG_BY_EXT = {".c": "c", ".i": "cpp-output", ".S": "assembler-with-cpp", ".sx": "assembler-with-cpp", ".s": "assembler"}


@dataclass
class Source:
    path: str
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
    m32: bool = False
    m64: bool = False
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
            cmd.m32 |= a == "-m32"
            cmd.m64 |= a in ("-m64", "-mx32")
            cmd.lto |= a.startswith("-flto") and a != "-fno-lto"
        else:
            ext = Path(a).suffix
            src_lang = lang or _LANG_BY_EXT.get(ext)
            if src_lang in ("c", "cpp-output", "assembler", "assembler-with-cpp"):
                cmd.inputs.append(Source(a, src_lang))
            else:
                cmd.inputs.append(a)
        i += 1
    return cmd


def _gcc() -> list[str]:
    return shlex.split(os.environ.get("AFTERBURN_CC", "gcc"))


def _run(args: list[str]) -> None:
    r = subprocess.run(args)
    if r.returncode != 0:
        raise _GccFailed(r.returncode)


class _GccFailed(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _object_name(src: Source, cmd: Command, single: bool) -> str:
    if cmd.output and single:
        return cmd.output
    return Path(src.path).with_suffix(".o" if cmd.mode == "c" else ".s").name


def _dep_flags(cmd: Command, target: str) -> list[str]:
    flags = list(cmd.deps)
    if cmd.wants_deps and not any(f.startswith("-MF") for f in flags) and not any(
        f.startswith("-Wp,") for f in flags
    ):
        flags += ["-MF", str(Path(target).with_suffix(".d"))]
    if (cmd.wants_deps or flags) and not cmd.has_mt:
        flags += ["-MT", target]
    return flags


def _assembler_for(cmd: Command, tmp: Path):
    """Pass-1 assembly uses the same driver and flags as the final step."""
    counter = [0]

    def assemble(text: str) -> bytes:
        counter[0] += 1
        s = tmp / f"pass1-{counter[0]}.s"
        o = tmp / f"pass1-{counter[0]}.o"
        s.write_text(text)
        r = subprocess.run(_gcc() + cmd.common + ["-c", "-x", "assembler", str(s), "-o", str(o)],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            first = next((ln for ln in r.stderr.splitlines() if "Error" in ln or "error" in ln), r.stderr.strip())
            raise AfterburnError(f"afterburn cc: annotated assembler does not assemble: {first}")
        return o.read_bytes()

    return assemble


def compile_source(src: Source, cmd: Command, out: str, tmp: Path) -> None:
    """Compile one source to an annotated object (or .s for -S) at ``out``."""
    stem = Path(src.path).stem
    asm = tmp / f"{stem}.s"
    target = out
    if src.lang == "c" or src.lang == "cpp-output":
        _run(_gcc() + cmd.common + _dep_flags(cmd, target) + ["-S", "-x", src.lang, src.path, "-o", str(asm)])
    elif src.lang == "assembler-with-cpp":
        _run(_gcc() + cmd.common + _dep_flags(cmd, target) + ["-E", "-x", src.lang, src.path, "-o", str(asm)])
    else:
        asm = Path(src.path)
    try:
        text = asm.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise AfterburnError(f"afterburn cc: cannot read {asm}: {e}") from None
    result = annotate_text(text, name=src.path, assemble=_assembler_for(cmd, tmp))
    for w in result.warnings:
        print(f"afterburn cc: warning: {w}", file=sys.stderr)
    if cmd.mode == "S":
        write_atomic(out, result.text)
        return
    ann = tmp / f"{stem}.afterburn.s"
    ann.write_text(result.text)
    # gcc writes next to the final name, then we rename: never a half object.
    out_path = Path(out)
    partial = out_path.with_name(f".{out_path.name}.afterburn-tmp")
    try:
        _run(_gcc() + cmd.common + ["-c", "-x", "assembler", str(ann), "-o", str(partial)])
        os.replace(partial, out_path)
    finally:
        if partial.exists():
            partial.unlink()


def main(argv: list[str]) -> int:
    cmd = parse(argv)
    if cmd.mode == "E" or not cmd.sources:
        return subprocess.run(_gcc() + argv).returncode
    if cmd.lto:
        raise AfterburnError("afterburn cc: -flto is not supported (gcc -S would emit LTO bytecode, not assembler)")
    if cmd.m64 or not cmd.m32:
        raise AfterburnError("afterburn cc: only 32-bit x86 is supported so far; compile with -m32")
    if cmd.output and len(cmd.sources) > 1 and cmd.mode in ("c", "S"):
        raise AfterburnError(f"afterburn cc: cannot specify -o with -{cmd.mode} and multiple files")
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
                    sub = Command(cmd.common, cmd.deps, [item], None, "c", cmd.has_mt, cmd.wants_deps, True)
                    compile_source(item, sub, str(obj), tmp)
                    link_inputs.append(str(obj))
                else:
                    link_inputs.append(item)
            out = ["-o", cmd.output] if cmd.output else []
            _run(_gcc() + cmd.common + link_inputs + out)
            return 0
    except _GccFailed as e:
        return e.status
