"""corpus.linux_e2e: Debian's kernel loading real driver modules in QEMU.

The fast tests check the pieces (dependency order, the cpio, the signature
stripper, the report filter) without QEMU.  The boot tests (``test_boot_*``,
deselect with ``-k "not boot"``) share one set of five boots, ~8 s each and
two at a time: stock twice, stock with every signature stripped (what
rewritten modules look like), a deliberately broken set, and every module
annotated by Afterburn.  Stock must be
clean and repeatable, stripped must be identical to stock, broken must
differ: together they show that the harness can tell a good module set from
a bad one and does not confuse "unsigned" with "different".
"""
from __future__ import annotations

import gzip
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from corpus import fetch
from corpus import linux_e2e as e2e

from .conftest import assemble, once_per_session, require_corpus, require_tool

# ---------------------------------------------------------------------------
# Pieces, no QEMU


def _fake_module(tmp_path: Path, name: str, depends: str) -> Path:
    """A relocatable i386 ELF whose .modinfo says ``depends=...``."""
    obj = assemble(f'.section .modinfo,"a"\n.asciz "name={name}"\n.asciz "depends={depends}"\n', tmp_path, name)
    ko = tmp_path / "tree" / f"{name}.ko"
    ko.parent.mkdir(exist_ok=True)
    obj.rename(ko)
    return ko


def test_module_closure_orders_dependencies_first(tmp_path):
    require_tool("as")
    _fake_module(tmp_path, "core", "")
    _fake_module(tmp_path, "lib-x", "core")
    _fake_module(tmp_path, "drv_a", "lib_x,core")
    _fake_module(tmp_path, "drv-b", "core")
    root = tmp_path / "tree"
    names = [p.name for p in e2e.module_closure(root, ["drv-a", "drv_b", "core"])]
    assert names == ["core.ko", "lib-x.ko", "drv_a.ko", "drv-b.ko"]
    with pytest.raises(KeyError, match="nope"):
        e2e.module_closure(root, ["nope"])


def test_module_closure_reports_a_missing_dependency(tmp_path):
    require_tool("as")
    _fake_module(tmp_path, "lonely", "ghost")
    with pytest.raises(KeyError, match="needed by lonely"):
        e2e.module_closure(tmp_path / "tree", ["lonely"])


def test_strip_signature():
    elf = b"\x7fELF" + bytes(range(200))
    sig = b"S" * 300
    struct = bytes([0, 0, 2, 0, 0, 0, 0, 0]) + len(sig).to_bytes(4, "big")
    assert e2e.strip_signature(elf + sig + struct + e2e.SIG_MAGIC) == elf
    assert e2e.strip_signature(elf) == elf  # nothing to strip: unchanged
    with pytest.raises(ValueError):
        e2e.strip_signature(b"x" + (10_000).to_bytes(4, "big") + e2e.SIG_MAGIC)


def _read_cpio(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdevmajor, rdevminor)) from a newc archive."""
    out, pos = {}, 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body, (f[9], f[10]))


def test_build_initramfs(tmp_path):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"BUSYBOX")
    mods = []
    for name in ("parport.ko", "ne2k-pci.ko"):
        (tmp_path / name).write_bytes(b"stock " + name.encode())
        mods.append(tmp_path / name)
    struct = bytes(8) + (3).to_bytes(4, "big")
    (tmp_path / "new.ko").write_bytes(b"rewritten" + b"SIG" + struct + e2e.SIG_MAGIC)  # stale signature
    out = e2e.build_initramfs(busybox, mods, tmp_path / "a.gz", overlay={"ne2k_pci.ko": tmp_path / "new.ko"})
    again = e2e.build_initramfs(busybox, mods, tmp_path / "b.gz", overlay={"ne2k-pci": tmp_path / "new.ko"})
    assert out.read_bytes() == again.read_bytes()  # deterministic, and both key spellings work
    files = _read_cpio(gzip.decompress(out.read_bytes()))
    assert files["mods/parport.ko"][1] == b"stock parport.ko"
    assert files["mods/ne2k-pci.ko"][1] == b"rewritten"  # overlay modules are loaded unsigned
    assert files["bin/busybox"] == (0o100755, b"BUSYBOX", (0, 0))
    assert files["bin/sh"] == (0o120777, b"busybox", (0, 0))
    assert files["dev/console"][0] == 0o020600 and files["dev/console"][2] == (5, 1)
    init = files["init"][1].decode()
    assert files["init"][0] == 0o100755 and init.startswith("#!/bin/sh\n")
    assert init.index("load parport parport.ko") < init.index("load ne2k-pci ne2k-pci.ko")
    assert init.index("unload ne2k-pci") < init.index("unload parport")
    assert e2e.BEGIN_MARKER in init and e2e.END_MARKER in init and "poweroff -f" in init
    with pytest.raises(ValueError, match="not loaded"):
        e2e.build_initramfs(busybox, mods, tmp_path / "c.gz", overlay={"floppy.ko": tmp_path / "new.ko"})


def test_overlay_from_dir_takes_only_the_loaded_modules(tmp_path):
    mods = [tmp_path / "stock" / "ne2k-pci.ko", tmp_path / "stock" / "8390.ko"]
    tree = tmp_path / "rewritten" / "drivers"
    tree.mkdir(parents=True)
    for name in ("ne2k_pci.ko", "floppy.ko"):
        (tree / name).write_bytes(b"x")
    assert e2e.overlay_from_dir(tmp_path / "rewritten", mods) == {"ne2k_pci": tree / "ne2k_pci.ko"}
    (tmp_path / "rewritten" / "ne2k-pci.ko").write_bytes(b"y")
    with pytest.raises(ValueError, match="two copies"):
        e2e.overlay_from_dir(tmp_path / "rewritten", mods)


def test_report_filters_only_noise_signature_and_renumbering():
    found = "  | ne2k-pci 0000:00:03.0 eth0: RealTek RTL-8029(AS) found at 0xc000, IRQ 11, 52:54:00:12:34:56.\n"
    text = (
        "insmod ne2k-pci: ok\n"
        "  | ne2k_pci: module verification failed: signature and/or required key missing - tainting kernel\n"
        "  | random: crng init done\n"
        f"{found}"
        "  | input: PC Speaker as /devices/platform/pcspkr/input/input2\n"
        "taint: 8192\n"
    )
    assert e2e.report(text) == (
        f"insmod ne2k-pci: ok\n{found}"
        "  | input: PC Speaker as /devices/platform/pcspkr/input/inputN\n"
        "kernel taint (E ignored): none\n"
    )
    assert "kernel taint (E ignored): DW" in e2e.report("taint: 8832\n")  # D (7) and W (9) survive the mask


def test_between_markers_reports_an_unfinished_init():
    text = e2e._between_markers(f"noise\n{e2e.BEGIN_MARKER}\ninsmod a: ok\nKernel panic\n", "", 0)
    assert text.startswith("!! the init did not finish") and "insmod a: ok" in text and "noise" not in text
    assert e2e._between_markers(f"x\n{e2e.BEGIN_MARKER}\nok\n{e2e.END_MARKER}\ny\n", "", 0) == "ok\n"


# ---------------------------------------------------------------------------
# Boots

EXPECTED_LINES = [
    "  | parport0: PC-style at 0x378, irq 7 [PCSPP,TRISTATE]",
    "  | Floppy drive(s): fd0 is 2.88M AMI BIOS",
    "  | ne2k-pci 0000:00:03.0 eth0: RealTek RTL-8029(AS) found at 0xc000, IRQ 11, 52:54:00:12:34:56.",
    "  | ib700wdt: WDT driver for IB700 single board computer initialising",
    "  | pcnet32: PCnet/PCI II 79C970A at 0xc100, 52:54:00:12:34:57 assigned IRQ 10",
    "  | lp0: using parport0 (interrupt-driven).",
    "  | piix4_smbus 0000:00:01.3: SMBus Host Controller at 0x700, revision 0",
    "  | ib700wdt: Watchdog Module Unloaded",
    "read back: afterburn floppy write test",
    "reply:  fa 00",
    "ioport   0378-037a : parport0",
    "ioport     c000-c01f : ne2k-pci",
    "irq 6: IO-APIC 6-edge floppy",
    "kernel taint (E ignored): none",
    f"host: parallel port received {e2e.LP_TEXT + chr(10)!r}",
    f"host: floppy sector {e2e.FLOPPY_WRITE_SECTOR} starts {e2e.FLOPPY_WRITE_TEXT!r}",
]
BROKEN_TRUNCATED = "ne2k-pci"  # cut in half: insmod must fail
BROKEN_EDITED = "ib700wdt"  # one .rodata string changed: loads, says something else


def _overlays(corpus: fetch.Corpus, where: Path) -> dict[str, dict[str, Path]]:
    modules = e2e.module_closure(Path(corpus.modules), e2e.DEFAULT_MODULES)
    stripped: dict[str, Path] = {}
    for m in modules:
        dst = where / "stripped" / m.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(e2e.strip_signature(m.read_bytes()))
        stripped[m.name] = dst
    broken = dict(stripped)
    cut = where / "broken" / f"{BROKEN_TRUNCATED}.ko"
    cut.parent.mkdir(parents=True, exist_ok=True)
    data = stripped[f"{BROKEN_TRUNCATED}.ko"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    broken[cut.name] = cut
    # Edited from the *signed* stock file: the stale signature must be stripped
    # by build_initramfs, or the kernel rejects the module (EKEYREJECTED).
    edited = where / "broken" / f"{BROKEN_EDITED}.ko"
    data = next(m for m in modules if m.name == edited.name).read_bytes()
    assert data.count(b"computer initialising") == 1 and data.endswith(e2e.SIG_MAGIC)
    edited.write_bytes(data.replace(b"computer initialising", b"computer INITIALISING"))
    broken[edited.name] = edited
    # What Afterburn is for: every module annotated (padded sites, records,
    # no signature) must behave exactly like the stock one.
    from afterburn.annotate_obj import annotate_object

    annotated: dict[str, Path] = {}
    for m in modules:
        dst = where / "annotated" / m.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(annotate_object(m.read_bytes(), str(m)).data)
        annotated[m.name] = dst
    return {"stock": {}, "stock-again": {}, "stripped": stripped, "broken": broken, "annotated": annotated}


@pytest.fixture(scope="session")
def boots(tmp_path_factory) -> dict[str, dict[str, str]]:
    """name -> {"report": run()'s report, "console": the unfiltered guest text}.

    Computed once per test session even under pytest-xdist: the first worker
    to take the lock boots, the others read its JSON."""
    require_tool("qemu-system-i386")
    corpus = require_corpus()

    def compute(work: Path) -> dict[str, dict[str, str]]:
        overlays = _overlays(corpus, work)

        def one(name: str) -> tuple[str, dict[str, str]]:
            rep = e2e.run(corpus, work / name, overlay=overlays[name] or None)
            return name, {"report": rep, "console": (work / name / "console.txt").read_text()}

        with ThreadPoolExecutor(2) as pool:  # two QEMUs at a time: the CI machine has 2 cores
            return dict(pool.map(one, overlays))

    return once_per_session(tmp_path_factory, "linux_e2e", compute)


def test_boot_stock_modules_load_probe_and_unload(boots):
    rep = boots["stock"]["report"]
    corpus = require_corpus()
    for m in e2e.module_closure(Path(corpus.modules), e2e.DEFAULT_MODULES):
        name = m.name[:-3]
        assert f"insmod {name}: ok\n" in rep, rep
        assert f"rmmod {name}: ok\n" in rep, rep
    lines = rep.splitlines()
    for expected in EXPECTED_LINES:
        assert expected in lines, f"missing {expected!r} in\n{rep}"
    assert lines.count("4 packets transmitted, 4 packets received, 0% packet loss") == 2  # ne2k-pci, pcnet32
    assert "== ioports still claimed after rmmod ==\nnone\n" in rep
    assert "!!" not in rep and "failed" not in rep


def test_boot_stock_report_is_deterministic(boots):
    assert boots["stock"]["report"] == boots["stock-again"]["report"]


def test_boot_unsigned_modules_give_the_identical_report(boots):
    # The raw guest output does differ (the kernel complains once and taints
    # with E), which is exactly what the report must not depend on.
    assert "module verification failed" in boots["stripped"]["console"]
    assert "module verification failed" not in boots["stock"]["console"]
    assert boots["stripped"]["report"] == boots["stock"]["report"]


def test_boot_broken_modules_change_the_report(boots):
    rep = boots["broken"]["report"]
    assert rep != boots["stock"]["report"]
    assert f"insmod {BROKEN_TRUNCATED}: failed" in rep
    assert "no interface for ne2k-pci" in rep
    assert "  | ib700wdt: WDT driver for IB700 single board computer INITIALISING" in rep


def test_boot_annotated_modules_give_the_identical_report(boots):
    """Debian's kernel loads the afterburn-annotated port-I/O drivers and
    they do exactly what the stock ones do (the pads are NOPs natively)."""
    from afterburn.elf import Elf
    from afterburn.sitefmt import read_site_table

    corpus = require_corpus()
    sites = {}
    for m in e2e.module_closure(Path(corpus.modules), e2e.DEFAULT_MODULES):
        from afterburn.annotate_obj import annotate_object

        sites[m.name] = len(read_site_table(Elf(m.name, raw=annotate_object(m.read_bytes()).data)).sites)
    assert sites["parport_pc.ko"] > 100 and sites["floppy.ko"] > 40 and sites["ne2k-pci.ko"] > 10, sites
    assert boots["annotated"]["report"] == boots["stock"]["report"]
