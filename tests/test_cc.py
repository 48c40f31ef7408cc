"""afterburn cc: a gcc drop-in producing annotated objects."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from afterburn.elf import Elf
from afterburn.sitefmt import read_site_table
from afterburn.verify import verify

CC = [sys.executable, "-m", "afterburn.cli", "cc"]
CFLAGS = ["-m32", "-O2", "-ffreestanding", "-fno-pie", "-fno-pic", "-fno-stack-protector", "-fno-asynchronous-unwind-tables"]

C_SRC = r"""
static inline void outb(unsigned short p, unsigned char v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(p)); }
static inline unsigned long irqsave(void) { unsigned long f; __asm__ volatile("pushfl; popl %0; cli" : "=r"(f) :: "memory"); return f; }
static inline void irqrestore(unsigned long f) { __asm__ volatile("pushl %0; popfl" :: "r"(f) : "memory", "cc"); }
int counter;
void poke(int n) { unsigned long f = irqsave(); for (int i = 0; i < n; i++) { outb(0x80, i); counter++; } irqrestore(f); }
"""
S_SRC = """#define PORT 0x3f8
\t.text
\t.globl spin
spin:
\tmovw $PORT+5, %dx
1:\tinb %dx, %al
\ttestb $0x20, %al
\tjz 1b
\thlt
\tret
"""


def cc(*args, cwd):
    return subprocess.run(CC + list(args), cwd=cwd, capture_output=True, text=True)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "a.c").write_text(C_SRC)
    (tmp_path / "b.S").write_text(S_SRC)
    (tmp_path / "c.s").write_text("\t.text\n\t.globl c\nc:\tcli\n\tret\n")
    return tmp_path


def kinds(path):
    return sorted(s.kind.name for s in read_site_table(Elf(path)).sites)


def test_c_source(project):
    r = cc(*CFLAGS, "-c", "a.c", "-o", "a.o", cwd=project)
    assert r.returncode == 0, r.stderr
    assert kinds(project / "a.o") == ["cli", "out", "popf", "pushf"]
    assert verify(Elf(project / "a.o")).ok


def test_preprocessed_and_plain_assembler(project):
    assert cc(*CFLAGS, "-c", "b.S", cwd=project).returncode == 0
    assert kinds(project / "b.o") == ["hlt", "in"]
    assert cc(*CFLAGS, "-c", "c.s", "-o", "sub.o", cwd=project).returncode == 0
    assert kinds(project / "sub.o") == ["cli"]


def test_dash_S_writes_annotated_assembler(project):
    assert cc(*CFLAGS, "-S", "a.c", cwd=project).returncode == 0
    assert ".pushsection .afterburn," in (project / "a.s").read_text()


def test_dependency_files_match_plain_gcc(project):
    for flags in (["-MD"], ["-MMD", "-MP"], ["-MD", "-MF", "deps/x.d"], ["-MD", "-MT", "custom"]):
        (project / "deps").mkdir(exist_ok=True)
        for f in project.glob("**/*.d"):
            f.unlink()
        assert subprocess.run(["gcc", *CFLAGS, *flags, "-c", "a.c", "-o", "a.o"], cwd=project).returncode == 0
        want = {p.relative_to(project): p.read_text() for p in project.glob("**/*.d")}
        for f in project.glob("**/*.d"):
            f.unlink()
        assert cc(*CFLAGS, *flags, "-c", "a.c", "-o", "a.o", cwd=project).returncode == 0
        got = {p.relative_to(project): p.read_text() for p in project.glob("**/*.d")}
        assert got == want, flags


def test_preprocess_only_passes_through(project):
    r = cc("-m32", "-E", "b.S", cwd=project)
    plain = subprocess.run(["gcc", "-m32", "-E", "b.S"], cwd=project, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == plain.stdout


def test_compile_and_link_in_one_command(project):
    r = cc(*CFLAGS, "-nostdlib", "-static", "-Wl,-e,poke", "a.c", "b.S", "c.s", "-o", "prog", cwd=project)
    assert r.returncode == 0, r.stderr
    elf = Elf(project / "prog")
    assert not elf.is_relocatable and kinds(project / "prog") == ["cli", "cli", "hlt", "in", "out", "popf", "pushf"]
    assert verify(elf).ok


def test_gcc_errors_keep_gcc_status_and_leave_no_object(project):
    (project / "bad.c").write_text("int f( {\n")
    r = cc(*CFLAGS, "-c", "bad.c", "-o", "bad.o", cwd=project)
    assert r.returncode == 1 and "error" in r.stderr
    assert not (project / "bad.o").exists() and not list(project.glob(".bad.o*"))


def same_as_gcc(args, cwd, outputs=()):
    """Run gcc and afterburn cc with the same arguments; return both
    results, each with the bytes of the named output files (None: absent)."""
    def run(prog):
        for o in outputs:
            (cwd / o).unlink(missing_ok=True)
        r = subprocess.run(prog + list(args), cwd=cwd, capture_output=True)
        files = {o: (cwd / o).read_bytes() if (cwd / o).exists() else None for o in outputs}
        return r.returncode, r.stdout, r.stderr.replace(b"afterburn", b"gcc"), files

    return run(["gcc"]), run(CC)


# Issue 9, failure 1: Kconfig's and Kbuild's probes (as-version.sh, cc-option)
# call the compiler without -m32; afterburn cc refused them all.
@pytest.mark.parametrize("args", [
    ["-Werror", "-fno-stack-protector", "-c", "-x", "c", "/dev/null", "-o", "probe.o"],
    ["-Werror", "-fno-such-option", "-c", "-x", "c", "/dev/null", "-o", "probe.o"],
    ["-c", "a.c", "-o", "probe.o"],  # 64-bit: gcc's own diagnostics about 32-bit inline asm, and its status
    ["--version"],
    ["-print-file-name=include"],
], ids=["probe-ok", "probe-fails", "64-bit", "version", "print"])  # fmt: skip
def test_calls_without_i386_code_are_gccs_own(project, args):
    gcc, ours = same_as_gcc(args, project, outputs=["probe.o"])
    assert ours == gcc


def test_64_bit_and_m16_objects_are_gccs(project):
    """Code for another target is not annotated, and is exactly gcc's
    (failure 9: -m16 real-mode code was refused)."""
    (project / "x.c").write_text("int x(int a) { __asm__ volatile(\"cli\"); return a + 1; }\n")
    for flags in (["-m64"], ["-m16"], ["-m32", "-m16"]):
        gcc, ours = same_as_gcc([*flags, "-O2", "-c", "x.c", "-o", "x.o"], project, outputs=["x.o"])
        assert ours == gcc and gcc[3]["x.o"] is not None, flags
        assert Elf(project / "x.o").section(".afterburn") is None


# Failure 2: -Wa,--version ended in an internal FileNotFoundError.
def test_assembler_version_query_behaves_as_gcc(project):
    args = ["-m32", "-Wa,--version", "-c", "-x", "assembler-with-cpp", "/dev/null", "-o", "v.o"]
    gcc, ours = same_as_gcc(args, project, outputs=["v.o"])
    assert gcc[0] == 0 and b"GNU assembler" in gcc[1]
    assert ours == gcc


# Failure 3: -o /dev/null (as root) replaced the device with a regular file:
# atomic writes apply to regular files only.  A FIFO stands in for the device.
def test_output_that_is_not_a_regular_file_is_written_in_place(project):
    import os
    import threading

    fifo = project / "pipe"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("data", fifo.read_bytes()), daemon=True)
    reader.start()
    r = cc(*CFLAGS, "-c", "a.c", "-o", "pipe", cwd=project)
    if reader.is_alive():  # nothing opened the pipe: release the reader
        with open(fifo, "wb"):
            pass
    reader.join(timeout=60)
    assert r.returncode == 0, r.stderr
    assert fifo.is_fifo() and got["data"][:4] == b"\x7fELF"
    # Through a symlink, as gcc: the link stays a link, its target is written.
    (project / "real.o").write_bytes(b"old")
    (project / "link.o").symlink_to("real.o")
    assert cc(*CFLAGS, "-c", "a.c", "-o", "link.o", cwd=project).returncode == 0
    assert (project / "link.o").is_symlink() and kinds(project / "real.o") == ["cli", "out", "popf", "pushf"]


# Failure 4: -o - wrote a file named "-"; -S -c wrote an object.
def test_dash_o_dash_and_S_beats_c(project):
    r = cc(*CFLAGS, "-S", "a.c", "-o", "-", cwd=project)
    assert r.returncode == 0 and ".pushsection .afterburn," in r.stdout
    assert not (project / "-").exists()
    r = cc(*CFLAGS, "-c", "-S", "a.c", "-o", "x.o", cwd=project)
    assert r.returncode == 0 and ".pushsection .afterburn," in (project / "x.o").read_text()
    # gcc hands "-o -" with -c to the assembler, which refuses: so do we, alike.
    gcc, ours = same_as_gcc([*CFLAGS, "-c", "a.c", "-o", "-"], project)
    assert gcc[0] != 0 and ours == gcc


MAKEFILE = """\
CFLAGS = -m32 -O2 -ffreestanding -fno-pie -fno-pic -fno-stack-protector -fno-asynchronous-unwind-tables -MMD
OBJS = a.o b.o
prog: $(OBJS)
\tld -m elf_i386 -e poke -o $@ $(OBJS)
%.o: %.S
\t$(CC) $(CFLAGS) -c $< -o $@
-include $(OBJS:.o=.d)
"""


def test_make_with_afterburn_cc(project):
    (project / "Makefile").write_text(MAKEFILE)
    cc_cmd = " ".join(shlex.quote(a) for a in CC)
    r = subprocess.run(["make", "-j2", f"CC={cc_cmd}"], cwd=project, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert verify(Elf(project / "prog")).ok
    assert (project / "a.d").read_text().startswith("a.o:")
    # A second make is a no-op: the dependency files are right.
    r = subprocess.run(["make", f"CC={cc_cmd}"], cwd=project, capture_output=True, text=True)
    assert "is up to date" in r.stdout


def test_the_build_server_and_the_caller_make_the_same_object(project, tmp_path, request):
    """One server annotates for a whole build (afterburn/ccserver.py); the
    object must be the one the caller would make itself, whether the server
    is used, refused (AFTERBURN_CC_SERVER=0) or unusable (a socket
    directory that is not private)."""
    import os
    import time

    def build(env):
        r = subprocess.run(CC + [*CFLAGS, "-c", "a.c", "-o", "a.o"], cwd=project, capture_output=True, text=True,
                           env={**os.environ, **env})  # fmt: skip
        assert r.returncode == 0, r.stderr
        return (project / "a.o").read_bytes()

    import shutil
    import tempfile

    runtime = Path(tempfile.mkdtemp(prefix="ab-"))  # short: a socket's path has at most 107 bytes
    request.addfinalizer(lambda: shutil.rmtree(runtime, ignore_errors=True))
    stats = tmp_path / "stats"
    served = build({"XDG_RUNTIME_DIR": str(runtime), "AFTERBURN_CC_STATS": str(stats)})
    assert list((runtime / f"afterburn-cc-{os.getuid()}").glob("*.sock")), "no server was started"
    assert '"request"' in stats.read_text()  # the server did the work
    alone = build({"AFTERBURN_CC_SERVER": "0"})
    public = tmp_path / "public"
    public.mkdir()
    (public / f"afterburn-cc-{os.getuid()}").mkdir(mode=0o777)
    os.chmod(public / f"afterburn-cc-{os.getuid()}", 0o777)
    unusable = build({"XDG_RUNTIME_DIR": str(public)})
    assert served == alone == unusable
    from afterburn import ccserver

    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        assert ccserver.stop()
    finally:
        os.environ.pop("XDG_RUNTIME_DIR") if old is None else os.environ.update(XDG_RUNTIME_DIR=old)
    deadline = time.monotonic() + 10
    while '"cpu"' not in stats.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '"cpu"' in stats.read_text()  # it reports its CPU time when it exits
