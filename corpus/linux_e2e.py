"""End-to-end check of real Linux drivers: boot Debian's i386 kernel in QEMU,
insmod stock (or rewritten) ``.ko`` modules, make the drivers do real port
I/O, and print a deterministic report of what they did.

Why: a rewritten module can load, probe and still be wrong.  The only
convincing check is behavioural: the same kernel, the same emulated
hardware, the same workload, once with Debian's modules and once with the
rewritten ones; the two reports must be identical.  For that comparison to
mean anything the report has to be

* **complete enough to notice a difference**: every insmod and rmmod result,
  every kernel log line each step produced, what the drivers claimed
  (``/proc/ioports``, IRQ names), and the result of a workload that drives
  each device through its real data path (floppy read/write, NE2000 and
  PCnet ping through QEMU's user-mode network, the watchdog's magic close,
  the parallel port's data lines, the SMBus, fw_cfg DMA, CMOS NVRAM, the i8042
  AUX port);
* **identical from boot to boot**: no timestamps, counters, round-trip times,
  or kernel messages that come from timing rather than from the drivers
  (:data:`NOISE`, :data:`RENUMBER`);
* **blind to the module signature**: Debian's modules carry an appended
  signature, rewritten ones cannot.  An unsigned module still loads
  (``CONFIG_MODULE_SIG_FORCE`` is off) but the kernel prints "module
  verification failed ... tainting kernel" once and sets taint flag E.  Those
  lines are dropped and flag E is masked; every other taint flag is reported
  (``kernel taint (E ignored): ...``), so a warning or oops (W, D) still
  shows, and so does O if a rewritten module lost its ``intree`` tag.

How it fits together: :func:`module_closure` resolves dependencies from each
module's ``.modinfo`` (there is no kmod/depmod here), :func:`build_initramfs`
writes a newc cpio with busybox, the modules and a generated ``/init``
(:func:`init_script`), :func:`boot` runs QEMU (TCG) and returns the text the
init printed between its markers, :func:`report` removes what is known to vary,
and :func:`run` does all of it.  The raw guest output (``boot``) is kept
separate from the filtered report so the filter is plain Python, unit-testable
without QEMU and changeable without rebuilding anything.

The report, one line per fact, in this order (``  | `` lines are the kernel
log each step produced, ``  ! `` lines a failing command's own message)::

    kernel: 6.1.0-50-686
    == insmod ==
    insmod parport_pc: ok
      | parport0: PC-style at 0x378, irq 7 [PCSPP,TRISTATE]
    insmod ne2k-pci: failed rc=8
      ! insmod: can't insert '/mods/ne2k-pci.ko': invalid module format
      | Invalid ELF section header overflow
    == exercise floppy ==
    read back: afterburn floppy write test
    == resources claimed (ioports, IRQs) ==
    ioport   0378-037a : parport0
    irq 7: IO-APIC 7-edge parport0
    == /proc/modules ==
    == rmmod ==
    == ioports still claimed after rmmod ==
    == other kernel messages ==
    kernel taint (E ignored): none
    host: parallel port received 'afterburn parallel port test\n'

    python -m corpus.linux_e2e [--overlay DIR] [--strip-signatures] [--compare] [--modules a,b,...] [--raw]

``--compare`` boots the stock modules next to the overlay and exits 0 only if
the two reports are identical (else it prints the diff and exits 1).

One boot with the default module set takes 7-8 s of wall time on an idle
2-core machine (QEMU, SeaBIOS and the kernel's XZ decompression ~3.5 s, the
kernel ~1.3 s, the init ~3 s), about twice that when both cores are busy.
"""
from __future__ import annotations

import argparse
import difflib
import gzip
import io
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from elftools.elf.elffile import ELFFile

from afterburn.modsig import SIG_MAGIC, strip_module_signature  # noqa: F401 - SIG_MAGIC: part of this module's API

if TYPE_CHECKING:  # pragma: no cover
    from corpus.fetch import Corpus

# ---------------------------------------------------------------------------
# Module set

#: The drivers loaded by default, in the order the report lists them (their
#: dependencies are pulled in by :func:`module_closure`).  Each one either
#: drives an emulated device through port I/O or is exercised below; every one
#: was checked to load and to produce the same output on every boot.
DEFAULT_MODULES: list[str] = [
    "parport",  # parallel-port core
    "parport_pc",  # PC-style port at 0x378: mode probing by port I/O
    "lp",  # line printer on parport0: the workload writes a line through it
    "ppdev",  # user-space parport access (loads, registers)
    "floppy",  # FDC at 0x3f0: probe, then a DMA read and write of real sectors
    "8390",  # NS8390 core shared by the NE2000 drivers
    "ne2k-pci",  # RTL-8029 at a PCI I/O BAR: PROM read, then ping through it
    "pcnet32",  # AMD PCnet/PCI (port I/O register access): ping through it
    "nvram",  # CMOS NVRAM through ports 0x70/0x71
    "ib700wdt",  # IB700 watchdog at 0x441/0x443: start, magic close
    "serio_raw",  # raw i8042 AUX access: a PS/2 "get device id" round trip
    "qemu_fw_cfg",  # fw_cfg at 0x510 (selector port, DMA port): reads every blob
    "i2c-piix4",  # PIIX4 SMBus at 0x700: bus scan and an EEPROM dump
    "i2c-dev",  # /dev/i2c-N for the above
    "evdev",  # /dev/input/event* (for the speaker's tone events)
    "pcspkr",  # PC speaker through the PIT and port 0x61: a tone on, then off
]

#: Kernel command line.  ``loglevel=1`` keeps printk off the serial console so
#: it cannot interleave with the init's output (the init reads the log with
#: ``dmesg`` instead); ``printk.time=0`` drops timestamps at the source;
#: ``ipv6.disable=1`` avoids router solicitations and "link becomes ready"
#: messages that arrive whenever the link-watch work happens to run;
#: ``panic=-1`` with QEMU's ``-no-reboot`` turns a panic into a prompt exit;
#: ``tsc=reliable`` turns off the clocksource watchdog, which under a busy
#: host marks the TSC unstable at a random moment (and says so in the log);
#: ``nokaslr`` puts the kernel and modules at the same addresses every boot, so
#: an oops in a rewritten module can be compared with the stock module's map.
#: Two options only save time (measured with ``initcall_debug``):
#: ``cryptomgr.notests`` skips the crypto self-tests (2.4 s under TCG; module
#: signatures are still checked) and ``noisapnp`` the ISA PnP scan (0.5 s; the
#: parallel port is found through PnP ACPI).  Boot to /init: 5 s -> 2 s.
KERNEL_CMDLINE = ("console=ttyS0 panic=-1 nokaslr tsc=reliable loglevel=1 printk.time=0 ipv6.disable=1 "
                  "cryptomgr.notests noisapnp")  # fmt: skip

BEGIN_MARKER = "=== afterburn linux e2e: begin ==="
END_MARKER = "=== afterburn linux e2e: end ==="
#: What :func:`boot` returns (as status) when QEMU had to be killed.
TIMEOUT_STATUS = 124

FLOPPY_SIZE = 2_949_120  # a 2.88M image, so QEMU reports the same 2.88M drive as with no image
FLOPPY_WRITE_SECTOR = 200
FLOPPY_WRITE_TEXT = "afterburn floppy write test"
LP_TEXT = "afterburn parallel port test"

# ---------------------------------------------------------------------------
# Dependencies


def canonical(name: str) -> str:
    """The kernel's name for a module: ``ne2k-pci``, ``ne2k-pci.ko`` -> ``ne2k_pci``.

    Kbuild turns dashes into underscores in KBUILD_MODNAME, and ``depends=``
    uses that form, while file names keep whatever the Makefile used."""
    return name.rsplit("/", 1)[-1].removesuffix(".ko").replace("-", "_")


def modinfo(ko: Path | bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` section as key -> values (keys such as ``alias`` repeat)."""
    data = ko if isinstance(ko, bytes) else Path(ko).read_bytes()
    section = ELFFile(io.BytesIO(data)).get_section_by_name(".modinfo")
    if section is None:
        raise ValueError(f"{ko if not isinstance(ko, bytes) else 'module'} has no .modinfo section")
    info: dict[str, list[str]] = {}
    for entry in section.data().split(b"\0"):
        if b"=" in entry:
            key, _, value = entry.decode("utf-8", "replace").partition("=")
            info.setdefault(key, []).append(value)
    return info


def module_index(modules_root: Path) -> dict[str, Path]:
    """Canonical module name -> ``.ko`` path for every module under the tree."""
    return {canonical(p.name): p for p in sorted(Path(modules_root).rglob("*.ko"))}


def module_closure(modules_root: Path, names: list[str], index: dict[str, Path] | None = None) -> list[Path]:
    """The ``.ko`` files for ``names`` and everything they depend on, in load order.

    Dependencies come from ``depends=`` in each module's ``.modinfo`` (what
    depmod would read); ``softdep=`` hints are not followed.  The order is a
    depth-first post-order over ``names`` as given, so each module follows its
    dependencies and otherwise keeps the caller's order: the report lists
    modules in a stable, meaningful order.  ``-`` and ``_`` are interchangeable
    in names.  A missing module or dependency raises ``KeyError``."""
    index = index if index is not None else module_index(modules_root)
    order: list[Path] = []
    seen: set[str] = set()
    active: list[str] = []

    def visit(name: str) -> None:
        key = canonical(name)
        if key in seen:
            return
        if key in active:
            raise ValueError(f"dependency cycle: {' -> '.join(active + [key])}")
        if key not in index:
            via = f" (needed by {active[-1]})" if active else ""
            raise KeyError(f"no module {name!r} under {modules_root}{via}")
        active.append(key)
        for dep in modinfo(index[key]).get("depends", []):
            for d in dep.split(","):
                if d:
                    visit(d)
        active.pop()
        seen.add(key)
        order.append(index[key])

    for n in names:
        visit(n)
    return order


def strip_signature(ko: bytes) -> bytes:
    """``ko`` without its appended signature: what a rewritten module looks like."""
    return strip_module_signature(ko)


# ---------------------------------------------------------------------------
# The guest's /init


@dataclass(frozen=True)
class Exercise:
    """A workload run after all modules are loaded, if they all are in the set."""

    name: str
    needs: tuple[str, ...]  # canonical module names
    script: str  # shell; prints deterministic lines; dmesg is collected after it


# The scripts below print only values that come from the drivers or the
# emulated hardware, never counters or times; each external command is
# wrapped in `timeout` so a broken driver yields a report, not a hang.
EXERCISES: list[Exercise] = [
    Exercise("parport", ("parport_pc",), """
for f in base-addr irq dma modes; do echo "parport0 $f: $(cat /proc/sys/dev/parport/parport0/$f | tr '\\t' ' ')"; done
"""),
    Exercise("lp", ("lp",), f"""
timeout 10 sh -c 'echo "{LP_TEXT}" > /dev/lp0'; echo "write /dev/lp0: rc=$?"
"""),
    Exercise("floppy", ("floppy",), f"""
echo "read 36 sectors: $(timeout 30 dd if=/dev/fd0 bs=512 count=36 2>/dev/null | md5sum | cut -d' ' -f1)"
echo "sector 100: $(timeout 30 dd if=/dev/fd0 bs=512 skip=100 count=1 2>/dev/null | head -n1)"
printf '%-512s' '{FLOPPY_WRITE_TEXT}' > /tmp/sector
timeout 30 dd if=/tmp/sector of=/dev/fd0 bs=512 seek={FLOPPY_WRITE_SECTOR} count=1 conv=fsync 2>/dev/null
echo "write sector {FLOPPY_WRITE_SECTOR}: rc=$?"
timeout 30 blockdev --flushbufs /dev/fd0
back=$(timeout 30 dd if=/dev/fd0 bs=512 skip={FLOPPY_WRITE_SECTOR} count=1 2>/dev/null \
       | head -c {len(FLOPPY_WRITE_TEXT)})
echo "read back: $back"
"""),
    Exercise("ne2k-pci", ("ne2k_pci",), """
net_test ne2k-pci 10.0.2.15 10.0.2.2
"""),
    Exercise("pcnet32", ("pcnet32",), """
net_test pcnet32 10.0.3.15 10.0.3.2
"""),
    Exercise("nvram", ("nvram",), """
timeout 10 cat /proc/driver/nvram
echo "read /dev/nvram: $(timeout 10 md5sum /dev/nvram 2>&1)"
"""),
    Exercise("ib700wdt", ("ib700wdt",), """
timeout 10 sh -c 'echo V > /dev/watchdog'; echo "open, write V, close /dev/watchdog: rc=$?"
"""),
    Exercise("serio_raw", ("serio_raw",), """
for s in /sys/bus/serio/devices/serio*; do
  [ "$(cat $s/description 2>/dev/null)" = "i8042 AUX port" ] || continue
  echo -n serio_raw > $s/drvctl; echo "bind $(basename $s): rc=$?"
done
dev=$(ls /dev/serio_raw* 2>/dev/null | head -n1)
if [ -n "$dev" ]; then
  (timeout 5 dd if=$dev bs=1 count=2 2>/dev/null > /tmp/serio.out) &
  sleep 0.1
  printf '\\362' > $dev; echo "write 0xf2 (get id): rc=$?"
  wait
  echo "reply: $(hexdump -v -e '1/1 " %02x"' /tmp/serio.out)"
else
  echo "no /dev/serio_raw*"
fi
"""),
    Exercise("qemu_fw_cfg", ("qemu_fw_cfg",), """
echo "rev: $(cat /sys/firmware/qemu_fw_cfg/rev)"
cd /sys/firmware/qemu_fw_cfg/by_name
for f in $(find . -type l | sort); do
  echo "${f#./} size=$(cat $f/size) md5=$(timeout 10 md5sum $f/raw | cut -d' ' -f1)"
done
cd /
"""),
    Exercise("i2c", ("i2c_piix4", "i2c_dev"), """
bus=
for a in /sys/bus/i2c/devices/i2c-*; do
  case "$(cat $a/name)" in *PIIX4*) bus=${a##*-}; break;; esac
done
if [ -n "$bus" ]; then
  echo "adapter: $(cat /sys/bus/i2c/devices/i2c-$bus/name)"
  timeout 30 i2cdetect -y $bus 0x48 0x5f
  echo "eeprom 0x50: $(timeout 30 i2cdump -y $bus 0x50 b | md5sum | cut -d' ' -f1)"
else
  echo "no PIIX4 adapter"
fi
"""),
    Exercise("pcspkr", ("pcspkr", "evdev"), """
ev=
for i in /sys/class/input/input*; do
  [ "$(cat $i/name)" = "PC Speaker" ] && ev=$(ls -d $i/event* | head -n1)
done
if [ -n "$ev" ]; then
  # struct input_event on i386: u32 sec, u32 usec, u16 type (EV_SND 0x12), u16 code (SND_TONE 2), s32 value (Hz)
  printf '\\0\\0\\0\\0\\0\\0\\0\\0\\022\\0\\002\\0\\270\\001\\0\\0' > /dev/input/${ev##*/}; echo "tone 440 Hz: rc=$?"
  printf '\\0\\0\\0\\0\\0\\0\\0\\0\\022\\0\\002\\0\\0\\0\\0\\0' > /dev/input/${ev##*/}; echo "tone off: rc=$?"
else
  echo "no PC Speaker input device"
fi
"""),
]

_INIT_PROLOGUE = r"""#!/bin/sh
# Generated by corpus/linux_e2e.py; every line printed between the markers is
# part of the report (after corpus.linux_e2e.report() drops known noise).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp
# The kernel log since the last call, one "  | " line each (timestamps
# removed in case printk.time=0 is ignored).
klog() { dmesg -c | sed -e 's/^\[[ 0-9.]*\] //' -e 's/^/  | /'; }
# Only what identifies a claim: IRQ number, chip, trigger, name (no counts).
irqs() {
  awk 'NR > 1 && $1 ~ /^[0-9]+:$/ { s = $1; for (i = 3; i <= NF; i++) s = s " " $i; print s }' /proc/interrupts
}
load() {
  out=$(insmod "/mods/$2" 2>&1); rc=$?
  if [ $rc = 0 ]; then echo "insmod $1: ok"; else echo "insmod $1: failed rc=$rc"; fi
  [ -n "$out" ] && echo "$out" | sed 's/^/  ! /'
  klog
}
unload() {
  out=$(rmmod "$1" 2>&1); rc=$?
  if [ $rc = 0 ]; then echo "rmmod $1: ok"; else echo "rmmod $1: failed rc=$rc"; fi
  [ -n "$out" ] && echo "$out" | sed 's/^/  ! /'
  klog
}
iface_of() {
  for n in /sys/class/net/*; do
    [ "$(basename "$(readlink $n/device/driver 2>/dev/null)")" = "$1" ] && { basename $n; return; }
  done
}
# Bring the driver's interface up, wait for carrier, ping the QEMU user-mode
# gateway with full-size frames (TX, RX and the interrupt path).
net_test() {
  i=$(iface_of $1)
  [ -n "$i" ] || { echo "no interface for $1"; return; }
  echo "mac: $(cat /sys/class/net/$i/address)"
  ip link set $i up; echo "link up: rc=$?"
  n=0; while [ "$(cat /sys/class/net/$i/carrier 2>/dev/null)" != 1 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
  echo "carrier: $(cat /sys/class/net/$i/carrier 2>/dev/null)"
  ip addr add $2/24 dev $i
  timeout 20 ping -A -c 4 -W 5 -s 1400 $3 | grep 'packets transmitted'
  irqs | grep " $i\$" | sed 's/^ */irq while up: /'
  ip link set $i down; echo "link down: rc=$?"
}
cat /proc/ioports > /tmp/ioports.before
irqs > /tmp/irqs.before
dmesg -c > /tmp/dmesg.boot
"""

_INIT_EPILOGUE = r"""
echo "== resources claimed (ioports, IRQs) =="
grep -vxF -f /tmp/ioports.before /proc/ioports | sed 's/^/ioport /'
irqs | grep -vxF -f /tmp/irqs.before | sed 's/^ */irq /'
"""


def init_script(modules: list[Path]) -> str:
    """The ``/init`` for ``modules`` (already in load order).

    Steps, each printing ``== ... ==`` headers and the kernel log it caused:
    insmod each module; the :data:`EXERCISES` whose modules are all present
    (run after everything is loaded and before the resource snapshot, so NIC
    IRQs, which are requested at open, show in it); the new ``/proc/ioports``
    and ``/proc/interrupts`` entries; ``/proc/modules`` (name, references,
    users: sizes differ for rewritten modules and are left out); rmmod in
    reverse order and any port range still claimed afterwards (an exit path
    that forgets ``release_region``); leftover log lines; the taint mask."""
    lines = [_INIT_PROLOGUE, f'echo "{BEGIN_MARKER}"', 'echo "kernel: $(uname -r)"', 'echo "== insmod =="']
    present = {canonical(m.name) for m in modules}
    for m in modules:
        lines.append(f"load {shlex.quote(m.name[:-3])} {shlex.quote(m.name)}")
    for ex in EXERCISES:
        if all(n in present for n in ex.needs):
            lines.append(f'echo "== exercise {ex.name} =="')
            lines.append(ex.script.strip("\n"))
            lines.append("klog")
    lines.append(_INIT_EPILOGUE)
    lines.append('echo "== /proc/modules =="')
    lines.append("awk '{ print $1, $3, $4 }' /proc/modules")
    lines.append('echo "== rmmod =="')
    for m in reversed(modules):
        lines.append(f"unload {shlex.quote(m.name[:-3])}")
    lines.append('echo "== ioports still claimed after rmmod =="')
    lines.append("diff /tmp/ioports.before /proc/ioports > /dev/null && echo none || "
                 "grep -vxF -f /tmp/ioports.before /proc/ioports")  # fmt: skip
    lines.append('echo "== other kernel messages =="')
    lines.append("klog")
    lines.append('echo "taint: $(cat /proc/sys/kernel/tainted)"')
    lines.append(f'echo "{END_MARKER}"')
    lines.append("poweroff -f")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# initramfs

#: busybox applets the init uses (installed as symlinks in /bin).
APPLETS = (
    "sh", "awk", "basename", "blockdev", "cat", "cut", "dd", "diff", "dmesg", "echo", "find", "grep", "head", "hexdump",
    "i2cdetect", "i2cdump", "insmod", "ip", "ls", "md5sum", "mkdir", "mount", "ping", "poweroff", "printf", "readlink",
    "rmmod", "sed", "sleep", "sort", "timeout", "tr", "uname",
)  # fmt: skip


class _Cpio:
    """A newc ("070701") cpio writer: fixed inode numbers, uid/gid 0, mtime 0,
    so the same inputs give the same bytes."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 0

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        head = b"070701" + b"".join(b"%08X" % v for v in fields) + name.encode() + b"\0"
        self.buf.write(head + b"\0" * (-len(head) % 4))
        self.buf.write(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self.add(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.add(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self.add(name, 0o120777, target.encode())

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.buf.getvalue()


def _resolve_overlay(modules: list[Path], overlay: dict[str, Path] | None) -> dict[str, Path]:
    """Overlay keyed by canonical module name; unknown keys are an error,
    because a typo would silently compare stock against stock."""
    if not overlay:
        return {}
    wanted = {canonical(m.name) for m in modules}
    out = {canonical(k): Path(v) for k, v in overlay.items()}
    unknown = sorted(set(out) - wanted)
    if unknown:
        raise ValueError(f"overlay names modules that are not loaded: {', '.join(unknown)}")
    return out


def build_initramfs(busybox: Path, modules: list[Path], out: Path, overlay: dict[str, Path] | None = None) -> Path:
    """Write a gzip'd newc cpio to ``out`` and return ``out``.

    Contents: ``/bin/busybox`` and symlinks for :data:`APPLETS`,
    ``/dev/console`` (so the init has a console before devtmpfs is mounted),
    ``/mods/<file>.ko`` for each module (from ``overlay``, keyed by module
    file name such as ``ne2k-pci.ko`` or by module name, when it names it:
    that is how rewritten modules get in) and ``/init`` from
    :func:`init_script`.  Deterministic: identical inputs give identical
    bytes.

    Overlay modules go through :func:`strip_signature`: a rewritten module
    that kept Debian's appended signature would carry a signature that no
    longer matches its bytes, and the kernel rejects that outright
    (``insmod: ... Key was rejected by service``, EKEYREJECTED), which would
    say nothing about the rewrite.  Without any signature it loads and only
    taints (E), which the report ignores."""
    resolved = _resolve_overlay(modules, overlay)
    cpio = _Cpio()
    for d in ("bin", "dev", "mods", "proc", "sys", "tmp"):
        cpio.dir(d)
    cpio.add("dev/console", 0o020600, rdev=(5, 1))
    cpio.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    for applet in APPLETS:
        cpio.symlink(f"bin/{applet}", "busybox")
    for m in modules:
        replacement = resolved.get(canonical(m.name))
        data = strip_signature(replacement.read_bytes()) if replacement else m.read_bytes()
        cpio.file(f"mods/{m.name}", data)
    cpio.file("init", init_script(modules).encode(), 0o755)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    return out


# ---------------------------------------------------------------------------
# QEMU


def floppy_image() -> bytes:
    """A 2.88M image whose sector N starts with ``sector N``."""
    img = bytearray(FLOPPY_SIZE)
    for n in range(FLOPPY_SIZE // 512):
        text = f"sector {n}\n".encode()
        img[n * 512 : n * 512 + len(text)] = text
    return bytes(img)


def qemu_command(vmlinuz: Path, initramfs: Path, floppy: Path, parallel: Path) -> list[str]:
    """The QEMU invocation: TCG, the PC machine's own floppy controller,
    parallel port, i8042, PIIX4 SMBus and fw_cfg, plus an NE2000 and a PCnet on
    two separate restricted user-mode networks, and the IB700 watchdog.

    ``-icount`` is deliberately not used: it doubles (``shift=auto``) or
    triples (``shift=0``) the boot time and buys nothing, since the report
    contains nothing timing-dependent.  The RTC is pinned anyway, so nothing
    that reads the date (CMOS via nvram) changes with the day the test runs."""
    return [
        shutil.which("qemu-system-i386") or "qemu-system-i386",
        "-accel", "tcg", "-m", "256", "-display", "none", "-serial", "stdio", "-no-reboot",
        "-monitor", "none", "-rtc", "base=2020-01-01T00:00:00,clock=vm",
        "-kernel", str(vmlinuz), "-initrd", str(initramfs), "-append", KERNEL_CMDLINE,
        "-nic", "none",
        "-netdev", "user,id=n0,restrict=on,net=10.0.2.0/24", "-device", "ne2k_pci,netdev=n0",
        "-netdev", "user,id=n1,restrict=on,net=10.0.3.0/24", "-device", "pcnet,netdev=n1",
        "-device", "ib700",
        "-drive", f"if=floppy,format=raw,file={floppy}",
        "-parallel", f"file:{parallel}",
    ]  # fmt: skip


def boot(vmlinuz: Path, initramfs: Path, timeout: float = 120) -> tuple[str, int]:
    """Boot ``vmlinuz`` with ``initramfs`` in QEMU; return (text, exit status).

    The text is what the init printed between :data:`BEGIN_MARKER` and
    :data:`END_MARKER` (``\\r`` removed), so kernel boot noise never matters.
    Then come host-side observations: ``host: parallel port received ...``
    (what ``lp`` put on the wire) and ``host: floppy sector N ...`` (what the
    floppy write left in the image).  If a marker is missing (panic, hang,
    init died) the text says so in a ``!!`` line and ends with the last
    console lines, which then differ from any good report.  A run killed
    after ``timeout`` seconds returns status :data:`TIMEOUT_STATUS`; a clean
    ``poweroff -f`` gives 0."""
    with tempfile.TemporaryDirectory(prefix="afterburn-e2e-") as tmp:
        floppy, parallel = Path(tmp) / "floppy.img", Path(tmp) / "parallel.out"
        floppy.write_bytes(floppy_image())
        parallel.touch()
        proc = subprocess.Popen(qemu_command(vmlinuz, initramfs, floppy, parallel), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
            status = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            status = TIMEOUT_STATUS
        console = out.decode("utf-8", "replace").replace("\r", "")
        text = _between_markers(console, err.decode("utf-8", "replace"), status)
        wire = parallel.read_bytes()
        text += f"host: parallel port received {wire.decode('latin-1')!r}\n"
        sector = floppy.read_bytes()[FLOPPY_WRITE_SECTOR * 512 : (FLOPPY_WRITE_SECTOR + 1) * 512]
        start = sector[: len(FLOPPY_WRITE_TEXT)].decode("latin-1")
        text += f"host: floppy sector {FLOPPY_WRITE_SECTOR} starts {start!r}\n"
    return text, status


def _between_markers(console: str, stderr: str, status: int) -> str:
    lines = console.split("\n")
    begin = next((i for i, ln in enumerate(lines) if ln.strip() == BEGIN_MARKER), None)
    end = next((i for i, ln in enumerate(lines) if ln.strip() == END_MARKER), None)
    if begin is not None and end is not None and end > begin:
        return "".join(ln + "\n" for ln in lines[begin + 1 : end])
    why = "the init never started" if begin is None else "the init did not finish"
    if status == TIMEOUT_STATUS:
        why += " (QEMU killed after the timeout)"
    tail = lines[begin + 1 :] if begin is not None else lines[-40:]
    problems = [f"!! {why}; QEMU exit status {status}"]
    problems += [f"!! qemu: {ln}" for ln in stderr.splitlines() if ln.strip()]
    return "\n".join(problems + tail).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------
# The report

#: Kernel log lines that come from timing, not from the drivers under test;
#: :func:`report` drops them wherever they land.  Keep this list short and
#: specific: everything not matched is compared.
NOISE: list[re.Pattern[str]] = [
    re.compile(p)
    for p in (
        r"^clocksource: ",  # TSC/HPET watchdog under a loaded host
        r"^tsc: ",  # "Refined TSC clocksource calibration", "Marking TSC unstable"
        r"^sched_clock: ",
        r"^TSC found unstable after boot",  # kernel/sched/clock.c, follows the above
        r"^random: ",  # crng init done
        r"^hrtimer: interrupt took ",
        r"^workqueue: .* hogged CPU",
        r"^sched: RT throttling activated",
    )
]
#: Numbers in kernel log lines that depend on the order of asynchronous work
#: rather than on the driver, rewritten to a placeholder.  Input device numbers:
#: at boot atkbd also tries the i8042 AUX port from the kseriod thread and
#: briefly holds an input number while it does, so the speaker is input2 or
#: (seen once in 16 boots on a busy host) input3.
RENUMBER: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(/input/input)\d+\b"), r"\1N"),
]
#: Lines about the module signature or the taint it causes: present for
#: unsigned (rewritten) modules, absent for signed stock ones.
SIGNATURE = re.compile(r"signature|module verification|PKCS#7|taint", re.IGNORECASE)

#: Kernel taint flags, bit -> letter (include/linux/panic.h, 6.1).
TAINT_FLAGS = "PFSRMBUDAWCIOELKXT"
TAINT_UNSIGNED_MODULE = 13  # E


def describe_taint(mask: int) -> str:
    """``"none"`` or the letters of the set flags, flag E masked out."""
    mask &= ~(1 << TAINT_UNSIGNED_MODULE)
    letters = [TAINT_FLAGS[b] if b < len(TAINT_FLAGS) else f"bit{b}" for b in range(mask.bit_length()) if mask >> b & 1]
    return "".join(letters) or "none"


def report(text: str) -> str:
    """The comparison-ready report from :func:`boot`'s text.

    Drops kernel log lines (``  | ...``) that match :data:`NOISE` or
    :data:`SIGNATURE`, applies :data:`RENUMBER` to the others, and turns
    ``taint: N`` into ``kernel taint (E ignored): ...``.  Nothing else is touched, so two reports are equal only
    if the drivers did and said the same things."""
    out = []
    for line in text.splitlines():
        if line.startswith("  | "):
            msg = line[4:]
            if SIGNATURE.search(msg) or any(p.search(msg) for p in NOISE):
                continue
            for pattern, replacement in RENUMBER:
                line = pattern.sub(replacement, line)
        elif line.startswith("taint: ") and line[7:].strip().isdigit():
            line = f"kernel taint (E ignored): {describe_taint(int(line[7:]))}"
        out.append(line)
    return "".join(ln + "\n" for ln in out)


# ---------------------------------------------------------------------------
# Entry points


def run(corpus: Corpus, workdir: Path, names: list[str] | None = None, overlay: dict[str, Path] | None = None,
        timeout: float = 120) -> str:  # fmt: skip
    """Build the initramfs for ``names`` (default :data:`DEFAULT_MODULES`) with
    ``overlay`` applied, boot it, and return :func:`report` of the result.

    A QEMU exit status other than 0 is added as a ``!! qemu exit status``
    line, so it is part of the comparison too."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    modules = module_closure(Path(corpus.modules), list(names or DEFAULT_MODULES))
    initramfs = build_initramfs(Path(corpus.busybox), modules, workdir / "initramfs.cpio.gz", overlay)
    text, status = boot(Path(corpus.vmlinuz), initramfs, timeout)
    (workdir / "console.txt").write_text(text)
    rep = report(text)
    if status != 0:
        rep += f"!! qemu exit status {status}\n"
    return rep


def overlay_from_dir(directory: Path, modules: list[Path]) -> dict[str, Path]:
    """The ``.ko`` files anywhere under ``directory`` that replace one of
    ``modules`` (matched by module name; other files are ignored, so a whole
    tree of rewritten modules can be passed)."""
    wanted = {canonical(m.name) for m in modules}
    found: dict[str, Path] = {}
    for p in sorted(Path(directory).rglob("*.ko")):
        key = canonical(p.name)
        if key in wanted:
            if key in found:
                raise ValueError(f"{directory} holds two copies of {key}: {found[key]} and {p}")
            found[key] = p
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m corpus.linux_e2e", description=__doc__.split("\n\n")[0])
    ap.add_argument("--overlay", type=Path, help="directory of replacement .ko files (e.g. rewritten modules)")
    ap.add_argument("--strip-signatures", action="store_true",
                    help="load the stock modules with their signatures removed (what rewritten modules look like)")
    ap.add_argument("--modules", help=f"comma-separated module names (default: {','.join(DEFAULT_MODULES)})")
    ap.add_argument("--workdir", type=Path, help="keep the initramfs and console text here")
    ap.add_argument("--raw", action="store_true", help="print the init's output unfiltered")
    ap.add_argument("--compare", action="store_true",
                    help="also boot the stock modules; print the diff; exit 0 iff the reports are identical")
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args(argv)  # fmt: skip

    from corpus.fetch import load

    corpus = load()
    if corpus is None:
        print("linux_e2e: error: no corpus (run python -m corpus.fetch, or set AFTERBURN_CORPUS)", file=sys.stderr)
        return 2
    names = [n for n in (args.modules or "").split(",") if n] or DEFAULT_MODULES
    with tempfile.TemporaryDirectory(prefix="afterburn-e2e-") as tmp:
        return _main(args, corpus, names, args.workdir or Path(tmp))


def _main(args: argparse.Namespace, corpus: Corpus, names: list[str], workdir: Path) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    modules = module_closure(Path(corpus.modules), names)
    overlay: dict[str, Path] = {}
    if args.strip_signatures:
        (workdir / "stripped").mkdir(exist_ok=True)
        for m in modules:
            dst = workdir / "stripped" / m.name
            dst.write_bytes(strip_signature(m.read_bytes()))
            overlay[canonical(m.name)] = dst
    if args.overlay:
        overlay.update(overlay_from_dir(args.overlay, modules))
        print(f"linux_e2e: overlay replaces {len(overlay)} of {len(modules)} modules: "
              f"{', '.join(sorted(overlay)) or '(none)'}", file=sys.stderr)  # fmt: skip
    started = time.monotonic()
    if args.compare:
        if not overlay:
            print("linux_e2e: error: --compare needs --overlay or --strip-signatures", file=sys.stderr)
            return 2
        with ThreadPoolExecutor(2) as pool:  # two QEMUs side by side
            stock_job = pool.submit(run, corpus, workdir / "stock", names, None, args.timeout)
            new_job = pool.submit(run, corpus, workdir / "overlay", names, overlay, args.timeout)
            stock, new = stock_job.result(), new_job.result()
        diff = list(difflib.unified_diff(stock.splitlines(True), new.splitlines(True), "stock", "overlay"))
        sys.stdout.writelines(diff or [new])
        verdict = "differ" if diff else "identical"
        print(f"linux_e2e: reports {verdict}; {time.monotonic() - started:.1f} s", file=sys.stderr)
        return 1 if diff else 0
    if args.raw:
        initramfs = build_initramfs(Path(corpus.busybox), modules, workdir / "initramfs.cpio.gz", overlay)
        text, status = boot(Path(corpus.vmlinuz), initramfs, args.timeout)
        sys.stdout.write(text)
        print(f"linux_e2e: qemu exit status {status}", file=sys.stderr)
    else:
        sys.stdout.write(run(corpus, workdir, names, overlay, args.timeout))
    kept = f"; files in {workdir}" if args.workdir else ""
    print(f"linux_e2e: {time.monotonic() - started:.1f} s{kept}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
