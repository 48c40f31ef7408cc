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
import stat
import sys

from .errors import AfterburnError

# Only what every call needs is imported here: a call that is gcc's costs
# one Python start-up and nothing more (subprocess, pathlib, the annotator
# and the server client are imported where they are used).

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


class Source:
    __slots__ = ("path", "lang")

    def __init__(self, path: str, lang: str) -> None:
        self.path = path  # "-" is standard input
        self.lang = lang


class Command:
    """A gcc command line, as much of it as matters here."""

    def __init__(self, common=None, deps=None, inputs=None, output=None, mode="link", has_mt=False,
                 wants_deps=False, machine=None, lto=False) -> None:  # fmt: skip
        self.common: list[str] = common if common is not None else []  # flags for every step
        self.deps: list[str] = deps if deps is not None else []  # dependency flags (first step only)
        self.inputs: list[object] = inputs if inputs is not None else []  # Source or str, in order
        self.output: str | None = output
        self.mode = mode  # link | c | S | E
        self.has_mt, self.wants_deps = has_mt, wants_deps
        self.machine: str | None = machine  # the last -m16/-m32/-m64/-mx32
        self.lto = lto

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
            src_lang = lang or _LANG_BY_EXT.get(os.path.splitext(a)[1])
            if src_lang in _SOURCE_LANGS:
                cmd.inputs.append(Source(a, src_lang))
            else:
                cmd.inputs.append(a)
        i += 1
    return cmd


def _gcc() -> list[str]:
    cc = os.environ.get("AFTERBURN_CC", "gcc")
    if not any(c in cc for c in "\"'\\"):
        return cc.split()
    import shlex

    return shlex.split(cc)


def targets_i386(cmd: Command) -> bool:
    """Whether gcc would generate 32-bit x86 code for this call: the last
    -m flag says so, or, with none, the compiler's own default does."""
    if cmd.machine is not None:
        return cmd.machine == "-m32"
    import subprocess

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
    """Run gcc with our stdio; its status, if not 0, becomes ours.  (os,
    not subprocess: this runs once per compile, subprocess costs an import.)"""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        status = os.spawnvp(os.P_WAIT, args[0], args)
    except OSError as e:
        raise AfterburnError(f"afterburn cc: cannot run {args[0]}: {e.strerror}") from None
    if status != 0:
        raise _GccFailed(status if status > 0 else 128 - status)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0] if path != "-" else "stdin"


def _object_name(src: Source, cmd: Command, single: bool) -> str:
    if cmd.output and single:
        return cmd.output
    stem = "-" if src.path == "-" else os.path.splitext(os.path.basename(src.path))[0]
    return f"{stem}.o" if cmd.mode == "c" else f"{stem}.s"


def _dep_flags(cmd: Command, target: str) -> list[str]:
    flags = list(cmd.deps)
    if cmd.wants_deps and not any(f.startswith("-MF") for f in flags) and not any(
        f.startswith("-Wp,") for f in flags
    ):
        flags += ["-MF", os.path.splitext(target)[0] + ".d"]
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
    _write_atomic(os.path.realpath(path), data)


def _write_atomic(path: str, data: bytes) -> None:
    """Write a temporary file next to ``path`` and rename it there: make
    never sees half an object, and a failed compile leaves none.  (As gcc,
    no fsync; os calls only, see the imports.)"""
    d, name = os.path.split(path)
    tmp = os.path.join(d, f".{name}.{os.getpid()}.afterburn-tmp")
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise AfterburnError(f"afterburn cc: cannot write {path}: {e.strerror}") from None


def _read_text(src: Source, asm) -> str:
    try:
        if asm is None:
            return sys.stdin.read()
        return asm.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise AfterburnError(f"afterburn cc: cannot read {asm or 'standard input'}: {e}") from None


def _annotate(req: dict) -> dict:
    """The job, by the server if there is one (see ccserver), else here."""
    from . import ccserver

    reply = ccserver.request(req)
    if reply is None:
        from .ccjob import annotate_job

        reply = annotate_job(req)
    if "error" in reply:
        raise AfterburnError(reply["error"])
    if "internal" in reply:
        raise RuntimeError(reply["internal"])
    sys.stdout.write(reply["stdout"])
    sys.stdout.flush()
    sys.stderr.write(reply["stderr"])
    _warn(reply["warnings"])
    return reply


def compile_source(src: Source, cmd: Command, out: str, tmp: str) -> None:
    """Compile one source to an annotated object (or .s for -S) at ``out``.
    ``tmp`` is a private directory (an absolute path)."""
    stem = _stem(src.path)
    asm = os.path.join(tmp, f"{stem}.s")
    if src.lang in ("c", "cpp-output"):
        _run(_gcc() + cmd.common + _dep_flags(cmd, out) + ["-S", "-x", src.lang, src.path, "-o", asm])
    elif src.lang == "assembler-with-cpp":
        _run(_gcc() + cmd.common + _dep_flags(cmd, out) + ["-E", "-x", src.lang, src.path, "-o", asm])
    elif src.path == "-":
        with open(asm, "w") as f:
            f.write(_read_text(src, None))
    else:
        asm = os.path.abspath(src.path)
    if not os.path.exists(asm):
        return  # gcc succeeded and wrote nothing (e.g. -fsyntax-only): neither do we
    text_out = cmd.mode == "S" or out == "-"
    result = os.path.join(tmp, f"{stem}.afterburn.{'s' if text_out else 'o'}")
    req = {"op": "annotate", "mode": "S" if text_out else "c", "text": asm, "name": src.path, "gcc": _gcc(),
           "flags": cmd.common, "tmp": tmp, "result": result, "cwd": os.getcwd(), "env": dict(os.environ)}  # fmt: skip
    reply = _annotate(req)
    if not reply["written"]:
        return
    if cmd.mode != "S" and out == "-":
        # gcc hands "-o -" to the assembler: let the assembler do with the
        # annotated text whatever it does with gcc's (GNU as refuses).
        _run(_gcc() + cmd.common + ["-c", "-x", "assembler", result, "-o", "-"])
        return
    with open(result, "rb") as f:
        write_output(out, f.read())


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        print(f"afterburn cc: warning: {w}", file=sys.stderr)
    sys.stderr.flush()


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
    tmp = _private_dir()
    try:
        if cmd.mode in ("c", "S"):
            single = len(cmd.sources) == 1
            for src in cmd.sources:
                compile_source(src, cmd, _object_name(src, cmd, single), tmp)
            return 0
        # Compile and link: annotated temporary objects replace the sources.
        link_inputs = []
        for n, item in enumerate(cmd.inputs):
            if isinstance(item, Source):
                obj = os.path.join(tmp, f"{n}-{_stem(item.path)}.o")
                sub = Command(cmd.common, cmd.deps, [item], None, "c", cmd.has_mt, cmd.wants_deps, cmd.machine)
                compile_source(item, sub, obj, tmp)
                link_inputs.append(obj)
            else:
                link_inputs.append(item)
        out = ["-o", cmd.output] if cmd.output else []
        _run(_gcc() + cmd.common + link_inputs + out)
        return 0
    except _GccFailed as e:
        return e.status
    finally:
        _remove_dir(tmp)


def _private_dir() -> str:
    """A new directory only we can enter (tempfile's job, without its import)."""
    base = os.environ.get("TMPDIR") or "/tmp"
    for n in range(100):
        d = os.path.join(base, f"afterburn-cc-{os.getpid()}-{n}")
        try:
            os.mkdir(d, 0o700)
            return d
        except FileExistsError:
            continue
        except OSError as e:
            raise AfterburnError(f"afterburn cc: cannot create a directory in {base}: {e.strerror}") from None
    raise AfterburnError(f"afterburn cc: cannot create a directory in {base}")


def _remove_dir(d: str) -> None:
    """Remove our private directory, which holds only files."""
    try:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)
    except OSError:
        pass


def run(argv: list[str]) -> int:
    """``afterburn cc`` as a command: errors as the rest of the command line
    reports them (one line, status 2; a bug is status 3, without traceback)."""
    try:
        return main(argv)
    except AfterburnError as e:
        msg = str(e).replace("\n", " ")
        print(f"afterburn: error: {msg}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("afterburn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug, not bad input
        if os.environ.get("AFTERBURN_DEBUG"):
            raise
        print(f"afterburn: internal error: {type(e).__name__}: {e} (set AFTERBURN_DEBUG=1 for a traceback)",
              file=sys.stderr)  # fmt: skip
        return 3
