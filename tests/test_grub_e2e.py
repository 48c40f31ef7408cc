"""corpus.grub_e2e: Debian's GRUB modules, stock or replaced, booted in QEMU.

The fast tests check the pieces (overlay directory, dependency closure,
one-line errors) without QEMU or the corpus.  The boot tests (``test_boot_*``,
deselect with ``-k "not boot"``) share one set of three boots, ~2 s of CPU
each, two at a time:

* ``stock``: the default script on the stock modules;
* ``copies``: an overlay of byte-identical copies of stock modules.  Its image
  must be byte-identical to stock's, so booting it is also a second boot of
  the stock image: the determinism check;
* ``broken``: two deliberately broken modules.  cmosdump.mod is cut short,
  so GRUB refuses to load it; in iorw.mod one ``in %dx,%al`` became a
  ``nop`` (same length), the kind of mistake a bad rewrite makes: the module
  loads, runs, and computes a wrong value.

Together they show that the harness passes overlay modules through, gives
the same bytes every time, and notices both kinds of broken module, in the
sections where they are used and nowhere else.
"""
from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_32, Cs
from elftools.elf.elffile import ELFFile

from corpus import fetch
from corpus import grub_e2e as g

from .conftest import once_per_session, require_corpus, require_tool

# ---------------------------------------------------------------------------
# Pieces, no QEMU, no corpus


def _fake_module_dir(root: Path, mods: dict[str, str]) -> Path:
    """A directory that looks like usr/lib/grub/i386-pc: NAME.mod files and a moddep.lst."""
    root.mkdir(parents=True)
    for f in ("kernel.img", "lnxboot.img", "lzma_decompress.img", "command.lst"):
        (root / f).write_bytes(f.encode())
    for name in mods:
        (root / f"{name}.mod").write_bytes(f"stock {name}".encode())
    (root / "moddep.lst").write_text("".join(f"{name}: {deps}\n" for name, deps in mods.items()))
    return root


def test_module_closure_follows_moddep(tmp_path):
    d = _fake_module_dir(tmp_path / "mods", {"a": "b c", "b": "c", "c": "", "d": "a"})
    assert g.module_closure(d, ["a"]) == ["a", "b", "c"]
    assert g.module_closure(d, ["d", "c"]) == ["a", "b", "c", "d"]
    assert g.module_closure(d, []) == []


def test_overlay_dir_keeps_every_stock_file_and_replaces_the_overlay_modules(tmp_path):
    stock = _fake_module_dir(tmp_path / "mods", {"a": "", "b": ""})
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "a.mod").write_bytes(b"annotated a")
    (overlay / "notes.txt").write_text("not a module: ignored")
    dest = g.overlay_dir(stock, overlay, tmp_path / "merged")
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in stock.iterdir())
    assert (dest / "a.mod").read_bytes() == b"annotated a" and not (dest / "a.mod").is_symlink()
    assert (dest / "b.mod").read_bytes() == b"stock b"
    assert (dest / "moddep.lst").read_text() == (stock / "moddep.lst").read_text()
    (overlay / "a.mod").write_bytes(b"changed later")  # a copy, not a link to the overlay
    assert (dest / "a.mod").read_bytes() == b"annotated a"
    g.overlay_dir(stock, overlay, dest)  # rebuilding over an old one is fine
    assert (dest / "a.mod").read_bytes() == b"changed later"


def test_overlay_dir_rejects_a_module_that_replaces_nothing(tmp_path):
    stock = _fake_module_dir(tmp_path / "mods", {"a": ""})
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "typo.mod").write_bytes(b"x")
    with pytest.raises(g.GrubE2EError, match="replace no stock module: typo.mod"):
        g.overlay_dir(stock, overlay, tmp_path / "merged")
    with pytest.raises(g.GrubE2EError, match="not a directory"):
        g.overlay_dir(stock, tmp_path / "missing", tmp_path / "merged")


def test_missing_tools_are_one_line_errors(tmp_path, monkeypatch):
    stock = _fake_module_dir(tmp_path / "mods", {"a": ""})
    with pytest.raises(g.GrubE2EError, match=r"^/nonexistent/grub-mkimage is not installed") as e:
        g.build_image("/nonexistent/grub-mkimage", stock, "", ["a"], tmp_path / "out" / "grub.lkrn")
    assert "\n" not in str(e.value)
    with pytest.raises(g.GrubE2EError, match="not a GRUB i386-pc module directory"):
        g.build_image("/bin/true", tmp_path, "", ["a"], tmp_path / "out" / "grub.lkrn")
    monkeypatch.setattr(g, "QEMU", "qemu-system-afterburn-missing")
    with pytest.raises(g.GrubE2EError, match=r"^qemu-system-afterburn-missing is not installed") as e:
        g.boot(tmp_path / "grub.lkrn")
    assert "\n" not in str(e.value)


def test_main_reports_a_bad_overlay_in_one_line(tmp_path, monkeypatch, capsys):
    stock = _fake_module_dir(tmp_path / "mods", {"a": ""})
    fake = fetch.Corpus(root=str(tmp_path), linux_version="", linux_package="", modules="", vmlinuz="",
                        grub_modules=str(stock), grub_debug_modules="", grub_mkimage="/bin/true", busybox="",
                        packages={})  # fmt: skip
    monkeypatch.setattr(fetch, "ensure", lambda cache=None: fake)
    assert g.main(["--overlay", str(tmp_path / "nope"), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("corpus.grub_e2e: error: overlay "), err


# ---------------------------------------------------------------------------
# Boots


COPIED = ["serial", "iorw", "cpuid", "rdmsr", "pci", "datetime", "video_bochs", "uhci"]
TRUNCATED = "cmosdump"
PATCHED = "iorw"


def _patch_first_inb(raw: bytes) -> bytes:
    """``raw`` with its first ``in %dx,%al`` (ec) turned into a ``nop`` (90), same length."""
    text = ELFFile(io.BytesIO(raw)).get_section_by_name(".text")
    start = text["sh_offset"]
    insn = next(i for i in Cs(CS_ARCH_X86, CS_MODE_32).disasm(text.data(), 0) if i.bytes == b"\xec")
    return raw[: start + insn.address] + b"\x90" + raw[start + insn.address + 1 :]


def _overlays(corpus: fetch.Corpus, where: Path) -> dict[str, Path | None]:
    stock = Path(corpus.grub_modules)
    copies, broken = where / "overlay" / "copies", where / "overlay" / "broken"
    copies.mkdir(parents=True)
    broken.mkdir(parents=True)
    for m in COPIED:
        (copies / f"{m}.mod").write_bytes((stock / f"{m}.mod").read_bytes())
    (broken / f"{TRUNCATED}.mod").write_bytes((stock / f"{TRUNCATED}.mod").read_bytes()[:300])
    (broken / f"{PATCHED}.mod").write_bytes(_patch_first_inb((stock / f"{PATCHED}.mod").read_bytes()))
    # Every module the image loads, annotated by Afterburn (site records,
    # NOP pads, relaxed branches, remapped jump tables).
    from afterburn.annotate_obj import annotate_object

    annotated = where / "overlay" / "annotated"
    annotated.mkdir(parents=True)
    for name in g.module_closure(stock, [*g.EMBEDDED, *g.MODULES]):
        mod = stock / f"{name}.mod"
        (annotated / mod.name).write_bytes(annotate_object(mod.read_bytes(), str(mod)).data)
    return {"stock": None, "copies": copies, "broken": broken, "annotated": annotated}


@pytest.fixture(scope="session")
def boots(tmp_path_factory) -> dict[str, dict]:
    """name -> {"out": serial text (latin-1), "status": exit status, "image": the image's path}.

    Computed once per test session even under pytest-xdist: the first worker
    to take the lock boots, the others read its JSON."""
    require_tool("qemu-system-i386")
    corpus = require_corpus()

    def compute(work: Path) -> dict[str, dict]:
        overlays = _overlays(corpus, work)
        images = {
            name: g.build_image(corpus.grub_mkimage, Path(corpus.grub_modules), g.SCRIPT, g.EMBEDDED,
                                work / name / "grub.lkrn", overlay, memdisk=g.MEMDISK, memdisk_modules=g.MODULES)
            for name, overlay in overlays.items()
        }  # fmt: skip

        def one(name: str) -> tuple[str, dict]:
            out, status = g.boot(images[name], timeout=120)
            return name, {"out": out.decode("latin-1"), "status": status, "image": str(images[name])}

        with ThreadPoolExecutor(2) as pool:  # two QEMUs at a time: the CI machine has 2 cores
            return dict(pool.map(one, images))

    return once_per_session(tmp_path_factory, "grub_e2e", compute)


MARKERS = re.findall(r"^echo (\[[a-z0-9]+\])", g.SCRIPT, re.MULTILINE)


def _lines(out: str) -> list[str]:
    return g.readable(out.encode("latin-1")).split("\n")


def _sections(out: str) -> dict[str, list[str]]:
    """The output's lines under each [marker] of the script ("" for what precedes the first)."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in _lines(out):
        if line.startswith("[") and line.split()[0] in MARKERS:
            current = line.split()[0]
            sections[current] = []
        sections[current].append(line)
    return sections


def _differing_sections(a: str, b: str) -> set[str]:
    sa, sb = _sections(a), _sections(b)
    return {k for k in sa.keys() | sb.keys() if sa.get(k) != sb.get(k)}


EXPECTED_LINES = [
    "0xfee00900",  # rdmsr 0x1b: the APIC base
    "apicbase=fee00900",
    "0x28",  # wrmsr 0x174 0x28, rdmsr 0x174
    "cmos72=af",  # outb with a mask read-modify-writes CMOS byte 0x72
    "0x12378086",  # PCI 00:00.0 vendor and device, by inl
    "vendor=8086",
    "2021-02-03 04:05:06 Wednesday",  # set on the stopped RTC, read back
    "70: 00 00 af 5a 00 00 00 00 00 00 00 00 00 00 00 00 ",  # the bytes iorw wrote, in cmosdump
    "00:00.0 8086:1237 [0600] Host Bridge",
    "00:02.0 1234:1111 [0300] VGA Controller",
    "        IO space 4 at 0xc040",
    "Register c of 0:00.0 is 20",  # setpci wrote it
    "cls=8",
    "match=1",
    "match=0",
    "Chipset Id: 12378086",  # 915resolution's own PCI read
    "APM enabled",
    "to gfxterm on video_bochs",
    "to gfxterm on vbe",
    "to gfxterm on vga",
    "USB devices:",
    "(ata0) (memdisk) ",
    "No drives have been remapped",
]


def test_boot_stock_runs_the_whole_script(boots):
    stock = boots["stock"]
    assert stock["status"] == g.EXIT_STATUS == 33, stock["out"][-2000:]
    lines = _lines(stock["out"])
    found = [ln.split()[0] for ln in lines if ln.startswith("[") and ln.split()[0] in MARKERS]
    assert found == MARKERS and MARKERS[0] == "[begin]" and MARKERS[-1] == "[end]"
    for expected in EXPECTED_LINES:
        assert expected in lines, f"missing {expected!r} in\n{stock['out']}"
    # The only errors are the script's deliberate ones: no module failed to load.
    assert {ln for ln in lines if "error" in ln} == {"error: No GDB stub is running.", "error: false."}
    listed = {ln.split()[0] for ln in lines[lines.index("[modules]") + 1 :] if ln.strip()}
    assert set(g.MODULES) - {"gdb", "video_bochs"} <= listed  # those two are unloaded on purpose


def test_boot_identical_copies_give_the_identical_image(boots):
    assert Path(boots["copies"]["image"]).read_bytes() == Path(boots["stock"]["image"]).read_bytes()


def test_boot_stock_is_deterministic(boots):
    # "copies" is the stock image (previous test) booted a second time.
    assert (boots["copies"]["out"], boots["copies"]["status"]) == (boots["stock"]["out"], boots["stock"]["status"])


def test_boot_broken_modules_change_the_output_where_they_are_used(boots):
    out, stock = boots["broken"]["out"], boots["stock"]["out"]
    assert boots["broken"]["status"] == g.EXIT_STATUS  # the rest of the script still ran
    # [iorw]: the patched inb read garbage; [cmos]: cmosdump did not load (and
    # CMOS byte 0x72 holds what the bad read-modify-write left); [modules]:
    # lsmod lists no cmosdump.
    assert _differing_sections(stock, out) == {"[iorw]", "[cmos]", "[modules]"}
    assert "cmos72=af" in _sections(stock)["[iorw]"] and "cmos72=af" not in _sections(out)["[iorw]"]
    assert "Unknown command `cmosdump'." in _sections(out)["[cmos]"]


def test_boot_annotated_modules_give_the_identical_output(boots):
    """The image built from afterburn-annotated modules runs the whole
    script (lspci, cmosdump, inb/outb, rdmsr/wrmsr, cpuid, video, USB...)
    with serial output identical to the stock image's."""
    from afterburn.elf import Elf
    from afterburn.sitefmt import read_site_table

    annotated = Path(boots["annotated"]["image"]).parent.parent / "overlay" / "annotated"
    sites = {m.stem: len(read_site_table(Elf(m)).sites) for m in annotated.glob("*.mod")}
    assert sum(sites.values()) > 300 and sites["video_bochs"] > 50 and sites["iorw"] > 5, sites
    assert boots["annotated"]["status"] == boots["stock"]["status"] == 33
    assert boots["annotated"]["out"] == boots["stock"]["out"]
