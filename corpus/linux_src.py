"""Linux 6.1 from Debian's ``linux-source-6.1``: fetch, configure, build, boot.

The kernel source is third-party code and is never committed: apt (with the
private state of :mod:`corpus.fetch`) downloads the package into a cache
*outside the repository*, and the tree is unpacked there once and kept
pristine.  Every build is out of tree (``make O=DIR``), so a plain gcc build
and an ``afterburn cc`` build share one source tree and differ only in CC.

The configuration recipe (issue 9): ``make ARCH=i386 tinyconfig``, then
``scripts/config`` enables :data:`OPTIONS`, then ``olddefconfig``.  Any other
configuration works too: ``configure --config FILE`` starts from that file
and runs ``olddefconfig`` on it.

    python -m corpus.linux_src fetch                      # prints the source directory
    python -m corpus.linux_src configure BUILD [--config FILE]
    python -m corpus.linux_src build BUILD [--cc "afterburn cc"] [-j 2]
    python -m corpus.linux_src boot BUILD [--vmlinux]     # serial console log on stdout

The cache is ``$AFTERBURN_LINUX`` or ``~/.cache/afterburn/linux``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from corpus import fetch as debian

PACKAGE = "linux-source-6.1"
ARCH = "i386"
#: What tinyconfig lacks to boot to a serial console in QEMU, by bzImage or
#: by the PVH note of vmlinux, and to look for an init.
OPTIONS = ["PRINTK", "TTY", "SERIAL_8250", "SERIAL_8250_CONSOLE", "EARLY_PRINTK", "HYPERVISOR_GUEST", "PVH",
           "BINFMT_ELF", "BINFMT_SCRIPT", "PROC_FS", "BLK_DEV_INITRD", "RD_GZIP"]  # fmt: skip
#: The line a kernel with no root file system and no init ends on.
PANIC = "Kernel panic - not syncing: No working init found"
APPEND = "console=ttyS0 earlyprintk=serial panic=-1"


class LinuxError(Exception):
    """One line saying what went wrong."""


def default_cache() -> Path:
    env = os.environ.get("AFTERBURN_LINUX")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "afterburn" / "linux"


def _run(args: list[str], what: str, cwd: Path | None = None, timeout: float = 3600) -> str:
    try:
        r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LinuxError(f"{args[0]} is not installed (needed for {what})") from None
    except subprocess.TimeoutExpired:
        raise LinuxError(f"{what} timed out") from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
        raise LinuxError(f"{what} failed: {lines[-1] if lines else 'exit ' + str(r.returncode)}")
    return r.stdout


def source(cache: Path | None = None) -> Path | None:
    """The unpacked tree if it is complete (its marker file written last)."""
    cache = cache or default_cache()
    done = cache / "source.ok"
    if not done.exists():
        return None
    tree = cache / done.read_text().strip()
    return tree if (tree / "Makefile").exists() else None


def fetch_source(cache: Path | None = None) -> Path:
    """Download ``linux-source-6.1`` with a private apt and unpack its tarball
    (the .deb holds ``/usr/src/linux-source-6.1.tar.xz``) into the cache."""
    cache = cache or default_cache()
    tree = source(cache)
    if tree is not None:
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    debian._prepare_apt(cache)
    opts = debian._apt_options(cache)
    _run(["apt-get", *opts, "-q", "update"], "apt-get update")
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    _run(["apt-get", *opts, "-q", "download", PACKAGE], f"downloading {PACKAGE}", cwd=debs)
    deb = sorted(debs.glob(f"{PACKAGE}_*.deb"))
    if not deb:
        raise LinuxError(f"apt-get download produced no .deb for {PACKAGE}")
    x = cache / "deb"
    shutil.rmtree(x, ignore_errors=True)
    _run(["dpkg-deb", "-x", str(deb[-1]), str(x)], f"unpacking {deb[-1].name}")
    tarballs = sorted((x / "usr" / "src").glob("linux-source-*.tar.xz"))
    if not tarballs:
        raise LinuxError(f"{deb[-1].name} holds no linux-source-*.tar.xz")
    partial = cache / "src.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    _run(["tar", "-xJf", str(tarballs[0]), "-C", str(partial)], f"unpacking {tarballs[0].name}")
    (top,) = list(partial.iterdir())
    shutil.rmtree(cache / top.name, ignore_errors=True)
    top.rename(cache / top.name)
    partial.rmdir()
    shutil.rmtree(x)
    version = _run(["dpkg-deb", "-f", str(deb[-1]), "Version"], "reading the package version").strip()
    (cache / "version").write_text(version + "\n")
    (cache / "source.ok").write_text(top.name + "\n")
    return cache / top.name


def _make(src: Path, build: Path, *targets: str, cc: str | None = None, jobs: int = 2) -> list[str]:
    args = ["make", "-C", str(src), f"O={build}", f"ARCH={ARCH}", f"-j{jobs}"]
    if cc:
        args.append(f"CC={cc}")
    return args + list(targets)


def configure(src: Path, build: Path, config: Path | None = None, options: list[str] | None = None) -> Path:
    """Write ``build/.config``: tinyconfig plus ``options`` (default
    :data:`OPTIONS`), or ``config`` as given; then ``olddefconfig``."""
    build.mkdir(parents=True, exist_ok=True)
    if config is not None:
        try:
            shutil.copyfile(config, build / ".config")
        except OSError as e:
            raise LinuxError(f"cannot read {config}: {e.strerror}") from None
    else:
        _run(_make(src, build, "tinyconfig"), "make tinyconfig")
        enable = [a for o in (OPTIONS if options is None else options) for a in ("--enable", o)]
        _run([str(src / "scripts" / "config"), "--file", str(build / ".config"), *enable], "scripts/config")
    _run(_make(src, build, "olddefconfig"), "make olddefconfig")
    return build / ".config"


def missing_options(config: Path, options: list[str] | None = None) -> list[str]:
    """Options of the recipe that olddefconfig did not keep (a dependency is missing)."""
    text = config.read_text()
    return [o for o in (OPTIONS if options is None else options) if f"CONFIG_{o}=y" not in text]


@dataclass
class BuildResult:
    status: int
    wall: float
    cpu: float  # user + sys of every process the build ran, the afterburn cc server's included
    log: str
    server_cpu: float = 0.0  # the afterburn cc server's share


def build(src: Path, build_dir: Path, cc: str | None = None, jobs: int = 2, targets: tuple[str, ...] = ("bzImage",),
          env: dict[str, str] | None = None) -> BuildResult:  # fmt: skip
    """Run the kernel build; CPU time counts every child (the compilers),
    and the afterburn cc server, which is not a child of make: it is asked
    to exit when the build is done and reports its own CPU time."""
    from afterburn import ccserver

    ccserver.stop()  # a server left from an earlier build would report elsewhere
    with tempfile.TemporaryDirectory(prefix="afterburn-build-") as d:
        stats = Path(d) / "server-cpu"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        r = subprocess.run(_make(src, build_dir, *targets, cc=cc, jobs=jobs), capture_output=True, text=True,
                           env={**os.environ, "AFTERBURN_CC_STATS": str(stats), **(env or {})})  # fmt: skip
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        server = 0.0
        if ccserver.stop():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and '"cpu"' not in (stats.read_text() if stats.exists() else ""):
                time.sleep(0.05)
        if stats.exists():
            lines = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
            server = sum(x["cpu"] for x in lines if "cpu" in x)
            if os.environ.get("AFTERBURN_BUILD_STATS"):
                shutil.copyfile(stats, os.environ["AFTERBURN_BUILD_STATS"])
    return BuildResult(r.returncode, wall, cpu + server, r.stdout + r.stderr, server)


def _built_objects(build_dir: Path) -> list[Path]:
    """The objects of a build that end up in vmlinux or bzImage, as Kbuild
    compiled them (a .o with a .cmd), without the real-mode ones (-m16:
    arch/x86/boot, arch/x86/realmode/rm), which afterburn cc leaves to gcc too,
    and without host tools and link intermediates."""
    out = []
    for o in sorted(build_dir.rglob("*.o")):
        rel = o.relative_to(build_dir).as_posix()
        if rel.startswith(("scripts/", "tools/", "usr/")) or rel in ("vmlinux.o",) or rel.startswith(".tmp"):
            continue
        if (rel.startswith("arch/x86/boot/") and not rel.startswith("arch/x86/boot/compressed/")) \
                or rel.startswith("arch/x86/realmode/rm/"):  # fmt: skip
            continue
        if not (o.parent / f".{o.name}.cmd").exists():
            continue  # not compiled by Kbuild (a prelinked file)
        with open(o, "rb") as f:
            head = f.read(20)
        if head[4:5] != b"\x01" or head[18:20] != b"\x03\x00":
            continue  # a host tool's object (x86-64), not the kernel's
        if "-m16" in (o.parent / f".{o.name}.cmd").read_text().split("\n", 1)[0]:
            continue
        out.append(o)
    return out


def object_path(plain: Path, out: Path, jobs: int = 2) -> tuple[list, BuildResult]:
    """The object path (issue 9): copy the plain build, annotate every
    object with ``afterburn annotate``, and let Kbuild link them again.
    Returns the per-object results and the link's result."""
    from afterburn import batch

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(plain, out, symlinks=True)
    # Kbuild's generated Makefile names the build directory: point it here.
    mk = out / "Makefile"
    if mk.exists():
        mk.write_text(mk.read_text().replace(str(plain), str(out)))
    objects = _built_objects(out)
    results = batch.run([(str(o), str(o)) for o in objects], jobs)
    later = time.time() + 2  # newer than anything Kbuild made: it relinks, and compiles nothing
    for o in objects:
        os.utime(o, (later, later))
    return results, build(source(), out, jobs=jobs)


def qemu_command(build_dir: Path, vmlinux: bool = False) -> list[str]:
    kernel = build_dir / ("vmlinux" if vmlinux else "arch/x86/boot/bzImage")
    qemu = shutil.which("qemu-system-i386") or "qemu-system-i386"
    return [qemu, "-kernel", str(kernel), "-append", APPEND, "-m", "128", "-nodefaults", "-display", "none",
            "-serial", "stdio", "-no-reboot"]  # fmt: skip


def boot(build_dir: Path, vmlinux: bool = False, timeout: float = 120) -> tuple[str, int]:
    """The serial console log of one QEMU boot, and QEMU's exit status.  With
    ``panic=-1`` and ``-no-reboot`` the panic ends QEMU."""
    try:
        r = subprocess.run(qemu_command(build_dir, vmlinux), stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        return out + "\n!! timeout\n", -1
    return r.stdout.decode(errors="replace").replace("\r\n", "\n"), r.returncode


# A build stamp ("#1 Tue Dec 3 ...", the builder's user@host), compiler
# banners and figures that move with code size.
_VARIES = [
    (re.compile(r"(Linux version \S+) \(.*"), r"\1 (BUILD STAMP)"),
    (re.compile(r"\b\d+[Kk](/\d+K)?\b"), "nK"),
    (re.compile(r"\b0x[0-9a-f]{8}-0x[0-9a-f]{8}\b"), "RANGE"),
    (re.compile(r"\[mem 0x[0-9a-f]+-0x[0-9a-f]+\]"), "[mem RANGE]"),
    (re.compile(r"(Freeing unused kernel image \(\w+\) memory:) \d+K"), r"\1 nK"),
    (re.compile(r"\(\d+ kB\)|\d+ kB"), "n kB"),
]


def normalize(log: str) -> str:
    """A console log without what differs from build to build of the same
    tree: the build stamp and figures that follow the image size.  Timing
    (the printk timestamp, BogoMIPS, calibration) is removed too."""
    out = []
    for line in log.splitlines():
        line = re.sub(r"^\[\s*\d+\.\d+\] ", "", line)
        if re.search(r"BogoMIPS|calibrat|tsc: |clocksource|Refined TSC|MHz processor|sched_clock: Marking stable", line):
            continue
        for pat, rep in _VARIES:
            line = pat.sub(rep, line)
        out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m corpus.linux_src", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=None, help="cache (default $AFTERBURN_LINUX or ~/.cache/afterburn/linux)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download and unpack the source; print its directory")
    c = sub.add_parser("configure", help="write BUILD/.config (tinyconfig + the recipe, or --config)")
    c.add_argument("build", type=Path)
    c.add_argument("--config", type=Path, help="start from this .config instead of the recipe")
    b = sub.add_parser("build", help="build bzImage (and vmlinux) in BUILD")
    b.add_argument("build", type=Path)
    b.add_argument("--cc", help='the C compiler, e.g. "afterburn cc" (default: the kernel\'s gcc)')
    b.add_argument("-j", "--jobs", type=int, default=2)
    op = sub.add_parser("objpath", help="annotate the objects of a plain build (afterburn annotate) and relink")
    op.add_argument("plain", type=Path)
    op.add_argument("out", type=Path)
    op.add_argument("-j", "--jobs", type=int, default=2)
    q = sub.add_parser("boot", help="boot BUILD's kernel in QEMU; print the console log")
    q.add_argument("build", type=Path)
    q.add_argument("--vmlinux", action="store_true", help="boot vmlinux through its PVH note, not bzImage")
    q.add_argument("--normalize", action="store_true", help="drop the build stamp, size figures and timing")
    args = ap.parse_args(argv)
    try:
        src = fetch_source(args.cache)
        if args.cmd == "fetch":
            print(src)
        elif args.cmd == "configure":
            cfg = configure(src, args.build.resolve(), args.config.resolve() if args.config else None)
            lost = missing_options(cfg) if args.config is None else []
            if lost:
                raise LinuxError(f"olddefconfig dropped {', '.join(lost)} (a dependency is not met)")
            print(cfg)
        elif args.cmd == "build":
            res = build(src, args.build.resolve(), args.cc, args.jobs)
            sys.stdout.write(res.log)
            print(f"linux_src: build exit {res.status}, wall {res.wall:.1f} s, cpu {res.cpu:.1f} s", file=sys.stderr)
            return 0 if res.status == 0 else 1
        elif args.cmd == "objpath":
            results, res = object_path(args.plain.resolve(), args.out.resolve(), args.jobs)
            failed = [r for r in results if not r.ok]
            for r in failed:
                print(f"linux_src: {r.input}: {r.error}", file=sys.stderr)
            print(f"linux_src: {len(results)} objects annotated ({sum(r.sites for r in results)} sites, "
                  f"{len(failed)} failed); relink exit {res.status}, cpu {res.cpu:.1f} s", file=sys.stderr)  # fmt: skip
            if res.status != 0:
                sys.stdout.write(res.log)
            return 0 if res.status == 0 and not failed else 1
        elif args.cmd == "boot":
            log, status = boot(args.build.resolve(), args.vmlinux)
            sys.stdout.write(normalize(log) if args.normalize else log)
            return 0 if PANIC in log else 1
    except LinuxError as e:
        print(f"linux_src: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
