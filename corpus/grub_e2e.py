"""GRUB's own modules, end to end: ``.mod`` files -> core.img -> QEMU -> serial bytes.

Debian's i386-pc GRUB modules are real third-party object code with in/out,
rdmsr/wrmsr, cpuid, pushf/popf and lidt in them (research/corpus.md §3.1).
This module turns a set of them into a bootable image and runs it, so that a
rewritten (annotated) module can be checked against the stock one by what
GRUB does with it: the serial output and the exit status.

* :func:`build_image` runs ``grub-mkimage -O i386-pc`` with the modules and an
  embedded config, and prepends ``lnxboot.img`` so that QEMU's ``-kernel`` can
  load the result.  An *overlay* directory of replacement ``*.mod`` files
  takes the place of the stock ones: that is how annotated modules go in.
* :func:`boot` runs the image on :data:`MACHINE` (QEMU, TCG) and returns the
  serial output and QEMU's exit status.  :data:`SCRIPT` ends with
  ``outb 0xf4 0x10``, which isa-debug-exit turns into status 33.
* :data:`SCRIPT` and :data:`MODULES` run sensitive instructions in as many
  modules as can give byte-identical output on every boot.
* :func:`run` is build + boot with the defaults; ``python -m corpus.grub_e2e
  [--overlay DIR]`` prints the serial output (:func:`readable` on a
  terminal, the exact bytes otherwise) and the exit status.

Determinism.  Two boots of one image must print the same bytes, and so must
a stock and an annotated image, although the annotated one executes other
instructions.  Hence:

* ``-icount shift=7,sleep=off``: virtual time is the instruction count times
  128 ns, never the host's speed or load.  GRUB and SeaBIOS wait for virtual
  time (TSC calibration, play, morse, spkmodem, USB and ATA timeouts), and a
  large shift makes those waits cost few instructions.  A boot takes about
  1.7 s of CPU (shift 3: about 4 s; shift 10: about 2.2 s; no -icount: about
  7 s, most of it waiting in real time).  About 0.4 s of it is GRUB unpacking
  the LZMA-compressed memdisk of 79 modules.
* The RTC starts at a fixed date (``-rtc base=...,clock=vm``), not the host
  clock; but it still ticks with virtual time, which an annotated module
  changes.  So before anything prints a time the script stops it: register
  B bit 7 (SET) stops the time from advancing, and putting the dividers in
  reset (register A bits 6-4 = 110) stops the once-a-second update-ended
  flag, which SET alone does not.  It then clears the flags (reading
  register C) and sets a fixed date: ``date`` and ``cmosdump`` print
  constants.
* No disk (see :data:`MACHINE`).
* The output is the same with shift 4 to 9 and without -icount at all:
  nothing printed depends on how much time passes, which is what keeps a
  slower annotated module from diverging.  40 boots, four at a time on a
  loaded two-core machine, were identical.
* Terminal escape sequences (GRUB clears the screen first) and ``\\n\\r``
  line ends are GRUB's own and deterministic; the bytes are returned as they
  are.

``-no-reboot`` turns a triple fault (what a badly rewritten module usually
ends in: a ``ud2`` in place of cpuid.mod's first ``cpuid`` does) into a
prompt exit with status 0 instead of an endless reboot loop.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from corpus.fetch import Corpus

QEMU = "qemu-system-i386"
EXIT_VALUE = 0x10
EXIT_STATUS = (EXIT_VALUE << 1) | 1  # what isa-debug-exit makes of `outb 0xf4 0x10`
TIMED_OUT = -1  # boot()'s status when QEMU had to be killed
ICOUNT_SHIFT = 7

# The machine.  The extra devices are there for GRUB's drivers to probe: std
# VGA with the Bochs dispi interface (video_bochs, vbe, vga), the PIIX3 UHCI
# plus an OHCI and an EHCI controller (uhci, ohci, ehci), an AHCI controller
# (ahci) and an empty ATAPI CD-ROM on the PIIX3 IDE (pata).  +mtrr makes vbe
# run its MTRR code (cpuid, rdmsr).  No disk with a medium: QEMU completes
# block I/O in its main loop, at a host-dependent point of the guest's
# instruction stream; with an IDE disk, 6 boots in 24 hung before the first
# serial byte when four ran at once.
MACHINE = [
    "-nodefaults", "-machine", "pc", "-cpu", "qemu32,+mtrr", "-m", "32",
    "-display", "none", "-serial", "stdio", "-no-reboot",
    "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    "-rtc", "base=2020-01-01T00:00:00,clock=vm",
    "-icount", f"shift={ICOUNT_SHIFT},sleep=off",
    "-device", "VGA",
    "-usb", "-device", "pci-ohci", "-device", "usb-ehci",
    "-device", "ahci", "-drive", "if=ide,index=0,media=cdrom",
]  # fmt: skip

# Embedded in core.img: only what is needed to read the memdisk.  Every other
# module is in the memdisk and loaded by the script's `insmod` (a kernel
# command), after the serial console is up.  A module that fails to load then
# prints "error: ..." under its section's marker and the script goes on;
# an embedded module that fails to load stops GRUB at "Press any key" on the
# VGA console, which on this machine is a silent hang until the timeout.
EMBEDDED = ["memdisk", "tar"]
PREFIX = "(memdisk)/boot/grub"  # insmod NAME reads $prefix/i386-pc/NAME.mod; grub-mkimage -m implies this prefix

# Modules the script loads (their dependencies come along).  The 40 stock
# modules with sensitive instructions are all here or among the dependencies
# (pci, datetime, cs5536); objdump -d counts (in/out
# of every width, cli/sti, pushf/popf, cpuid, rdmsr/wrmsr, iret, lidt/lgdt,
# hlt, mov %crN) and, after the slash, how many of those the script executes
# (QEMU's -d in_asm log, instructions matched back to each module's code):
#   video_bochs 60/52  datetime 44/28  ehci 33/22  pata 33/22  uhci 37/17
#   cmostest 20/16  serial 22/14  at_keyboard 21/12  vga 19/12  ahci 12/12
#   setpci 12/12  iorw 9/9  cpuid 9/9  spkmodem 9/9  ohci 8/8  play 8/8
#   vbe 17/8  morse 7/7  rdmsr 6/6  wrmsr 6/6  pci 8/4  lspci 6/4
#   cmosdump 4/4  hwmatch 4/4  vga_text 9/4  mda_text 9/4  gdb 34/2 (lidt)
#   915resolution 15/2  video_cirrus 110/2  pcidump 2/2
#   load only: cs5536 30, drivemap 8, xnu 8, random 9, halt 6, relocator 3,
#   sendkey 3, zstd 2, linux16 1, reboot 1.
# 321 of the 664 sensitive instructions run, in 31 modules.  The rest need
# hardware QEMU lacks (a Cirrus card instead of std VGA, a CS5536, an Intel
# 915), an OS being booted (drivemap's int 13h handler, sendkey, relocator,
# linux16, xnu), or would end the run (halt, reboot: they are the script's
# fallback exit).
MODULES = [
    "serial", "terminal", "echo", "minicmd",
    "gdb", "cpuid", "rdmsr", "wrmsr", "iorw",
    "cmostest", "date", "cmosdump",
    "lspci", "pcidump", "setpci", "hwmatch", "915resolution", "lsapm",
    "at_keyboard", "keystatus", "sendkey", "play",
    "vga_text", "mda_text", "morse", "spkmodem",
    "videoinfo", "gfxterm", "video_cirrus", "vbe", "vga", "video_bochs",
    "usbtest", "uhci", "ohci", "ehci", "ahci", "pata", "ls",
    "drivemap", "relocator", "linux16", "xnu", "random", "halt", "reboot", "zstd",
]  # fmt: skip

# Data files in the memdisk besides the modules: hwmatch reads a file of
# regular expressions, matched against "v<vendor>d<device>sv..sd..bc..sc..".
MEMDISK = {"hw.lst": b"# the i440FX host bridge\nv8086d1237.*\n"}

# The config embedded in core.img.  GRUB runs it with the rescue parser: one
# command per line, $variables expand, no `if`.  A failing command prints
# "error: ...", which is how test-style commands (cpuid -l, cmostest,
# keystatus) show their result.  Each section starts with an [echo marker]
# and loads its own modules, so that a divergence is easy to place.
# Dropped, with the reason: `date` before the RTC is frozen (prints the
# virtual time, which depends on the instruction count); `915resolution -l`
# (on a non-Intel chipset it lists modes from a NULL map and never ends);
# `gdbstub PORT` (waits for a debugger); `videotest` (waits for a key);
# reading a disk (see MACHINE).  The script ends with `outb 0xf4 0x10`; if
# iorw failed to load, `halt` (ACPI off) or `reboot` (-no-reboot) end QEMU
# with status 0 instead of GRUB waiting at its rescue prompt.
SCRIPT = """\
insmod serial
serial --unit=0 --speed=115200
insmod terminal
terminal_output serial
insmod echo
insmod minicmd
echo [begin]
echo [gdb] loading gdb runs lidt, unloading it runs lidt again
insmod gdb
gdbstub_break
gdbstub_stop
rmmod gdb
echo [cpuid]
insmod cpuid
echo cpuid -l:
cpuid -l
echo cpuid -p:
cpuid -p
echo [msr]
insmod rdmsr
insmod wrmsr
rdmsr 0x1b
rdmsr -v apicbase 0x1b
echo apicbase=$apicbase
wrmsr 0x174 0x28
rdmsr 0x174
wrmsr 0x174 0
rdmsr 0x174
echo [iorw] CMOS scratch bytes 0x72-0x73, PCI config space of 00:00.0
insmod iorw
outb 0x70 0x72
outb 0x71 0xa5
inb 0x71
outb 0x71 0x0f 0x0f
inb -v cmos72 0x71
echo cmos72=$cmos72
outw 0x70 0x5a73
outb 0x70 0x73
inb 0x71
outl 0xcf8 0x80000000
inl 0xcfc
inw 0xcfe
inw -v vendor 0xcfc
echo vendor=$vendor
outl 0xcf8 0x8000000c 0xff
inl -v reg 0xcfc
echo reg0c=$reg
outw 0xcfc 0x10 0xff
inl 0xcfc
echo [cmos] stop the RTC (reg B bit 7, reg A dividers), clear its flags (reg C)
insmod cmostest
insmod date
insmod cmosdump
cmosset 0x0b:7
cmosset 0x0a:6
outb 0x70 0x0c
inb -v flags 0x71
date 2021-02-03 04:05:06
date
echo cmostest 0x0b:7:
cmostest 0x0b:7
echo cmostest 0x0b:6:
cmostest 0x0b:6
cmosset 0x74:3
echo cmostest 0x74:3:
cmostest 0x74:3
cmosclean 0x74:3
echo cmostest 0x74:3:
cmostest 0x74:3
cmosclean 0x90:0
echo cmostest 0x90:0:
cmostest 0x90:0
cmosdump
echo [pci]
insmod lspci
insmod pcidump
insmod setpci
lspci
lspci -i
pcidump -s 0:1.0
pcidump -d 8086:7113
setpci VENDOR_ID
setpci -s 0:1.3 CLASS_DEVICE
setpci -s 0:0.0 0c.l=10
setpci -s 0:0.0 0c.w=20
setpci -s 0:0.0 0c.l
setpci -s 0:1.1 CACHE_LINE_SIZE=8
setpci -d 8086:7010 -v cls 0c.b
echo cls=$cls
echo [hwmatch]
insmod hwmatch
hwmatch (memdisk)/hw.lst 6
echo match=$match
hwmatch (memdisk)/hw.lst 1
echo match=$match
echo [915resolution]
insmod 915resolution
915resolution -q
echo [lsapm]
insmod lsapm
lsapm
echo [keyboard]
insmod at_keyboard
insmod keystatus
insmod sendkey
terminal_input --append at_keyboard
echo keystatus:
keystatus
echo keystatus --shift:
keystatus --shift
echo keystatus --ctrl --alt:
keystatus --ctrl --alt
terminal_input --remove at_keyboard
sendkey --num on
echo [play]
insmod play
play 6000 440 1 0 1 880 1
echo [terminals] vga_text, mda_text, morse, spkmodem
insmod vga_text
insmod mda_text
insmod morse
insmod spkmodem
terminal_output --append vga_text
echo to vga_text
terminal_output --remove vga_text
terminal_output --append mda_text
echo to mda_text
terminal_output --remove mda_text
terminal_output --append morse
echo e t
terminal_output --remove morse
terminal_output --append spkmodem
echo to spkmodem
terminal_output --remove spkmodem
echo [video]
insmod videoinfo
insmod gfxterm
insmod video_cirrus
insmod vga
insmod vbe
insmod video_bochs
videoinfo 640x480x8
set gfxmode=640x480x8
terminal_output --append gfxterm
echo to gfxterm on video_bochs
terminal_output --remove gfxterm
rmmod video_bochs
terminal_output --append gfxterm
echo to gfxterm on vbe
terminal_output --remove gfxterm
rmmod vbe
terminal_output --append gfxterm
echo to gfxterm on vga
terminal_output --remove gfxterm
echo [usb]
insmod usbtest
insmod uhci
insmod ohci
insmod ehci
usb
echo [disks] an empty ATAPI CD-ROM on the PIIX3 IDE, nothing on the AHCI
insmod ahci
insmod pata
insmod ls
ls
echo [load] modules whose sensitive code needs an OS being booted
insmod drivemap
insmod relocator
insmod linux16
insmod xnu
insmod random
insmod halt
insmod reboot
insmod zstd
drivemap -l
echo [modules]
lsmod
echo [end]
outb 0xf4 0x10
halt
reboot
"""


class GrubE2EError(Exception):
    """The image could not be built or booted; the message says why in one line."""


def _need(tool: str, what: str) -> str:
    path = shutil.which(tool) if os.sep not in tool else (tool if os.access(tool, os.X_OK) else None)
    if path is None:
        raise GrubE2EError(f"{tool} is not installed or not executable (needed to {what})")
    return path


def module_closure(module_dir: Path, modules: list[str]) -> list[str]:
    """The modules grub-mkimage embeds for ``modules``: them plus their dependencies (moddep.lst), sorted."""
    deps: dict[str, list[str]] = {}
    for line in (Path(module_dir) / "moddep.lst").read_text().splitlines():
        name, _, rest = line.partition(":")
        deps[name.strip()] = rest.split()
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(deps.get(m, []))
    return sorted(seen)


def overlay_dir(module_dir: Path, overlay: Path, dest: Path) -> Path:
    """Make ``dest`` a module directory: every file of ``module_dir`` (symlinked), the overlay's ``*.mod`` copied over.

    grub-mkimage reads kernel.img, moddep.lst, lzma_decompress.img, ... from the
    same directory as the modules, so the overlay cannot be a directory of
    its own.  An overlay module that replaces nothing is an error: a typo
    would otherwise leave the stock module silently under test.
    """
    module_dir, overlay, dest = Path(module_dir), Path(overlay), Path(dest)
    if not overlay.is_dir():
        raise GrubE2EError(f"overlay {overlay} is not a directory")
    mods = sorted(overlay.glob("*.mod"))
    unknown = [p.name for p in mods if not (module_dir / p.name).exists()]
    if unknown:
        raise GrubE2EError(f"overlay modules replace no stock module: {', '.join(unknown)}")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in module_dir.iterdir():
        (dest / f.name).symlink_to(f.resolve())
    for p in mods:
        (dest / p.name).unlink()
        shutil.copyfile(p, dest / p.name)
    return dest


def _memdisk_tar(files: dict[str, bytes]) -> bytes:
    """A reproducible ustar archive (fixed owner, mode and mtime) for grub-mkimage -m."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(
    mkimage: str,
    module_dir: Path,
    config: str,
    modules: list[str],
    out: Path,
    overlay: Path | None = None,
    *,
    memdisk: dict[str, bytes] | None = None,
    memdisk_modules: list[str] | None = None,
) -> Path:
    """Build ``out`` (a grub.lkrn: lnxboot.img + core.img) and return it.

    ``config`` is embedded and run at start-up.  ``modules`` and their
    dependencies are embedded and loaded before it runs.  ``overlay`` is a
    directory of replacement ``*.mod`` files (see :func:`overlay_dir`).
    ``memdisk`` files, and ``memdisk_modules`` with their dependencies as
    ``boot/grub/i386-pc/NAME.mod`` (overlay applied), go into a tar that GRUB
    sees as ``(memdisk)``; with the prefix ``(memdisk)/boot/grub``,
    ``insmod NAME`` loads them.  The memdisk and tar modules are then
    embedded too.  Intermediate files go next to ``out``.  The same inputs
    give the same bytes.
    """
    mkimage = _need(mkimage, "build a GRUB image")
    module_dir, out = Path(module_dir), Path(out)
    for need in ("kernel.img", "lnxboot.img", "moddep.lst"):
        if not (module_dir / need).exists():
            raise GrubE2EError(f"{module_dir} has no {need}: not a GRUB i386-pc module directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    d = module_dir if overlay is None else overlay_dir(module_dir, overlay, out.with_name(out.name + ".modules"))
    cfg = out.with_name(out.name + ".cfg")
    cfg.write_text(config)
    core = out.with_name(out.name + ".core.img")
    args = [mkimage, "-O", "i386-pc", "-d", str(d), "-o", str(core), "-c", str(cfg), "-p", PREFIX]
    files = dict(memdisk or {})
    for m in module_closure(d, memdisk_modules or []):
        if not (d / f"{m}.mod").exists():
            raise GrubE2EError(f"{d} has no module {m}.mod")
        files[f"{PREFIX.removeprefix('(memdisk)/')}/i386-pc/{m}.mod"] = (d / f"{m}.mod").read_bytes()
    if files:
        tar = out.with_name(out.name + ".memdisk.tar")
        tar.write_bytes(_memdisk_tar(files))
        args += ["-m", str(tar)]
        modules = [*modules, *(m for m in ("memdisk", "tar") if m not in modules)]
    r = subprocess.run([*args, *modules], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error:" in ln] or lines[:1]
        raise GrubE2EError(f"grub-mkimage failed: {errors[0] if errors else 'exit ' + str(r.returncode)}")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes((module_dir / "lnxboot.img").read_bytes() + core.read_bytes())
    tmp.replace(out)
    return out


def boot(image: Path, timeout: float = 60) -> tuple[bytes, int]:
    """Boot ``image`` on :data:`MACHINE`; return (serial output, QEMU's exit status).

    The status is :data:`EXIT_STATUS` when the script reached its final
    ``outb 0xf4 0x10``, 0 after a triple fault or shutdown, and
    :data:`TIMED_OUT` (with the output so far) when QEMU had to be killed.
    """
    qemu = _need(QEMU, "boot the GRUB image")
    try:
        r = subprocess.run([qemu, "-kernel", str(image), *MACHINE], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        return (e.stdout or b""), TIMED_OUT
    if r.returncode == 1 and not r.stdout and r.stderr:
        # QEMU itself refused to start (bad option, missing file): not a guest result.
        raise GrubE2EError(f"{QEMU} failed: {r.stderr.decode(errors='replace').strip().splitlines()[0]}")
    return r.stdout, r.returncode


ESCAPE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def readable(out: bytes) -> str:
    """The serial output without GRUB's terminal escape sequences and carriage returns, for people and greps."""
    return ESCAPE.sub(b"", out).replace(b"\r", b"").decode("latin-1")


def run(corpus: Corpus, overlay: Path | None = None, workdir: Path | None = None,
        timeout: float = 60) -> tuple[bytes, int]:  # fmt: skip
    """Build the default image (:data:`SCRIPT`, :data:`MODULES`) from ``corpus``, with ``overlay``, and boot it.

    ``workdir`` keeps the image and its intermediates; without it they go in
    a temporary directory that is removed afterwards.
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="grub_e2e.") as tmp:
            return run(corpus, overlay, Path(tmp), timeout)
    image = build_image(corpus.grub_mkimage, Path(corpus.grub_modules), SCRIPT, EMBEDDED, Path(workdir) / "grub.lkrn",
                        overlay, memdisk=MEMDISK, memdisk_modules=MODULES)  # fmt: skip
    return boot(image, timeout)


def main(argv: list[str] | None = None) -> int:
    from corpus.fetch import FetchError, default_cache, ensure

    ap = argparse.ArgumentParser(prog="python -m corpus.grub_e2e", description=__doc__.split("\n\n")[0])
    ap.add_argument("--overlay", type=Path, help="directory of replacement *.mod files (e.g. annotated modules)")
    ap.add_argument("--cache", type=Path, default=None, help="corpus cache (default: $AFTERBURN_CORPUS or "
                                                              "~/.cache/afterburn/debian)")  # fmt: skip
    ap.add_argument("--workdir", type=Path, help="keep the image and its intermediates here")
    ap.add_argument("--timeout", type=float, default=60, help="seconds before QEMU is killed (default 60)")
    args = ap.parse_args(argv)
    try:
        corpus = ensure(args.cache or default_cache())
        out, status = run(corpus, args.overlay, args.workdir, args.timeout)
    except (GrubE2EError, FetchError) as e:
        print(f"corpus.grub_e2e: error: {e}", file=sys.stderr)
        return 2
    if sys.stdout.isatty():  # GRUB starts by clearing the screen: not the user's terminal
        sys.stdout.write(readable(out))
    else:
        sys.stdout.buffer.write(out)  # the exact bytes, for diffing
    sys.stdout.flush()
    note = {EXIT_STATUS: "the script ran to the end", TIMED_OUT: "timed out", 0: "reset or shutdown"}
    print(f"exit status: {status} ({note.get(status, 'unexpected')})", file=sys.stderr)
    return 0 if status == EXIT_STATUS else 1


if __name__ == "__main__":
    sys.exit(main())
