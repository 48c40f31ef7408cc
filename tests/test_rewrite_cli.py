"""``afterburn rewrite``, running rewritten images, and ``afterburn diff``."""
from __future__ import annotations

import json

import pytest

from afterburn.elf import Elf
from afterburn.sitefmt import read_site_table
from backends import backend_names
from backends.pc.loader import find_multiboot_header, load_image
from tests import sitebench
from tests.conftest import run_afterburn
from tests.kernels import PRELUDE
from tests.backend_params import REFERENCE, REWRITING
from tests.test_backends import BODY_IO, strip_record
from wedge.layout import WEDGE_BASE


@pytest.fixture(scope="module", params=REWRITING)
def rewritten(request, corpus_builds, tmp_path_factory):
    src = corpus_builds["annotated"] / "timer.elf"
    out = tmp_path_factory.mktemp("rw") / f"timer.{request.param}.elf"
    r = run_afterburn("rewrite", "--backend", request.param, str(src), "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    return src, out, json.loads(r.stdout)


def test_rewrite_writes_a_standalone_elf(rewritten):
    src, out, summary = rewritten
    table = read_site_table(Elf(src))
    assert summary["ok"] and summary["sites"] == len(table.sites) > 100
    image = load_image(out)
    assert image.backend == summary["backend"]
    assert len(image.patched) == len(table.sites)
    assert image.hole_segments and image.hole_segments[0].vaddr == WEDGE_BASE
    raw_in, raw_out = src.read_bytes(), out.read_bytes()
    (off_in, words_in), (off_out, words_out) = find_multiboot_header(raw_in), find_multiboot_header(raw_out)
    assert off_in == off_out < 8192 and words_in[:3] == words_out[:3]  # the header did not move
    original = load_image(src)
    by_addr = {s.vaddr: s for s in original.segments}
    changed = 0
    for p in image.patched:
        seg = next(s for s in image.segments if s.vaddr <= p.start < s.vaddr + len(s.data))
        new = seg.data[p.start - seg.vaddr : p.end - seg.vaddr]
        old = by_addr[seg.vaddr].data[p.start - seg.vaddr : p.end - seg.vaddr]
        assert old == p.original and len(new) == len(old)
        changed += new != old
    assert changed == len(image.patched)  # every site was patched, none left alone
    # Outside the sites, the guest's bytes are untouched.
    site_bytes = {a for p in image.patched for a in range(p.start, p.end)}
    for seg in image.segments:
        old = by_addr[seg.vaddr].data
        assert all(seg.data[i] == old[i] for i in range(len(old)) if seg.vaddr + i not in site_bytes)


@pytest.mark.parametrize("args,message", [
    (["--backend", REFERENCE], "nothing to rewrite"),
    (["--backend", "nosuch"], "unknown backend"),
])  # fmt: skip
def test_rewrite_bad_backend(rewritten, tmp_path, args, message):
    src, _, _ = rewritten
    r = run_afterburn("rewrite", *args, str(src), "-o", str(tmp_path / "o.elf"))
    assert r.returncode == 2 and message in r.stderr and not (tmp_path / "o.elf").exists()


def test_rewrite_refuses_bad_inputs(rewritten, corpus_builds, tmp_path):
    src, out, summary = rewritten
    backend = summary["backend"]
    before = src.read_bytes()
    cases = [
        (out, "already rewritten"),
        (corpus_builds["plain"] / "timer.elf", "not annotated"),
        (tmp_path / "missing.elf", "cannot read"),
    ]
    (tmp_path / "junk.elf").write_bytes(b"\x7fELF" + b"\xff" * 40)
    cases.append((tmp_path / "junk.elf", ""))
    for path, message in cases:
        r = run_afterburn("rewrite", "--backend", backend, str(path), "-o", str(tmp_path / "o.elf"))
        assert r.returncode == 2, (path, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    r = run_afterburn("rewrite", "--backend", backend, str(src), "-o", str(src))
    assert r.returncode == 2 and "overwrite the input" in r.stderr
    assert src.read_bytes() == before
    assert not (tmp_path / "o.elf").exists()


@pytest.mark.parametrize("backend", REWRITING)
def test_unpatchable_sites_are_listed_and_nothing_is_written(tmp_path, backend):
    # 16-bit addressing in 32-bit code, and string I/O through another
    # segment, have no template (the wedge would compute the wrong address):
    # both sites must be reported.
    body = "    lgdt (%si)\n    rep outsb %fs:(%esi), (%dx)\n    EXIT 0\n"
    kernel = sitebench.build_bench(tmp_path, "k", PRELUDE + body)
    out = tmp_path / f"k.{backend}.elf"
    r = run_afterburn("rewrite", "--backend", backend, str(kernel), "-o", str(out), "--json")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["ok"] is False
    assert [(p["kind"], p["reason"]) for p in report["unpatchable"]] == [
        ("lgdt", "16-bit addressing"), ("outs", "segment override on string I/O")]
    assert all(p["symbol"].startswith("_start+") for p in report["unpatchable"])
    assert not out.exists()
    r = run_afterburn("rewrite", "--backend", backend, str(kernel), "-o", str(out))
    assert r.returncode == 1 and "2 site(s) cannot be patched" in r.stderr and "lgdt" in r.stdout


# -- afterburn diff --------------------------------------------------------------------


def test_diff_agrees_on_a_corpus_guest(corpus_builds):
    r = run_afterburn("diff", str(corpus_builds["annotated"] / "paging.elf"), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    # By default every registered backend runs, the native reference first.
    assert rep["agree"] and [b["backend"] for b in rep["backends"]] == backend_names()
    # Paging reaches every hypervisor: each counts calls of its own.
    assert all(sum(b["observation"]["stats"]["hypercalls"].values()) > 0 for b in rep["backends"][1:])
    r = run_afterburn("diff", str(corpus_builds["annotated"] / "paging.elf"))
    assert r.returncode == 0 and "all backends agree" in r.stdout and "hypercalls" in r.stdout


def test_diff_shows_the_first_divergence(tmp_path):
    annotated = sitebench.annotate(PRELUDE + BODY_IO, tmp_path, "k")
    kernel = sitebench.link([sitebench.assemble_text(strip_record(annotated, "inb $0x60, %al"), tmp_path, "k")],
                            tmp_path, "k")  # fmt: skip
    r = run_afterburn("diff", str(kernel), "--json")
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert not rep["agree"]
    first = rep["backends"][1]
    assert first["divergence"]["field"] == "serial" and first["observation"]["ending"]["reason"] == "escape"
    r = run_afterburn("diff", str(kernel))
    assert r.returncode == 1
    assert f"first divergence: {first['backend']} vs {REFERENCE} (serial)" in r.stdout and "escape" in r.stdout


@pytest.mark.parametrize("backends", [REFERENCE, f"{REFERENCE},{REFERENCE}", f"{REFERENCE},nosuch"])
def test_diff_bad_backends(corpus_builds, backends):
    r = run_afterburn("diff", str(corpus_builds["annotated"] / "hello.elf"), "--backends", backends)
    assert r.returncode == 2 and r.stderr.startswith("afterburn: error: diff:")

