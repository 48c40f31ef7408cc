"""The command line: bad input is one line and exit status 2, outputs are
atomic, reports come as tables or JSON."""
from __future__ import annotations

import json
import struct

import pytest

from .conftest import assemble, run_afterburn


def one_line_error(r, status=2, match=""):
    assert r.returncode == status, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith("afterburn: error:"), lines[0]
    assert match in lines[0], lines[0]


@pytest.fixture
def annotated_obj(tmp_path):
    src = tmp_path / "a.s"
    src.write_text("\t.text\n\t.globl f\nf:\tcli\n\tinb $0x60,%al\n\tsti\n\tret\n")
    r = run_afterburn("annotate", str(src), "-o", str(tmp_path / "a.ann.s"))
    assert r.returncode == 0, r.stderr
    return assemble((tmp_path / "a.ann.s").read_text(), tmp_path, "a.ann")


def test_verify_and_sites_json(annotated_obj):
    r = run_afterburn("verify", str(annotated_obj), "--json")
    assert r.returncode == 0
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["sites"] == 3 and rep["by_kind"] == {"cli": 1, "in": 1, "sti": 1}
    r = run_afterburn("sites", str(annotated_obj), "--json")
    data = json.loads(r.stdout)
    assert data["format_version"] == 1
    assert [(s["kind"], s["offset"], s["insn_len"], s["length"], s["symbol"]) for s in data["sites"]] == [
        ("cli", 0, 1, 8, "f"), ("in", 8, 2, 7, "f+0x8"), ("sti", 15, 1, 15, "f+0xf")]
    r = run_afterburn("sites", str(annotated_obj))
    assert r.returncode == 0 and "f+0x8" in r.stdout


def test_verify_failure_status_and_table(tmp_path):
    obj = assemble("\t.text\nf:\tcli\n", tmp_path)
    r = run_afterburn("verify", str(obj))
    assert r.returncode == 1
    assert "unannotated" in r.stdout and "FAILED" in r.stderr


@pytest.mark.parametrize("content,match", [
    (b"hello world\n", "not an ELF file"),
    (b"\x7fELF\x01\x01\x01" + b"\0" * 9 + b"\x01", "malformed ELF"),
    (b"", "not an ELF file"),
])  # fmt: skip
def test_garbage_inputs(tmp_path, content, match):
    f = tmp_path / "bad"
    f.write_bytes(content)
    for cmd in ("verify", "sites"):
        one_line_error(run_afterburn(cmd, str(f)), match=match)


def test_wrong_architecture(tmp_path, annotated_obj):
    raw = bytearray(annotated_obj.read_bytes())
    struct.pack_into("<H", raw, 18, 40)  # e_machine = EM_ARM
    f = tmp_path / "arm.o"
    f.write_bytes(raw)
    one_line_error(run_afterburn("verify", str(f)), match="is not x86")


def test_truncated_elf(tmp_path, annotated_obj):
    f = tmp_path / "trunc.o"
    f.write_bytes(annotated_obj.read_bytes()[:200])
    one_line_error(run_afterburn("verify", str(f)))


def test_missing_and_directory_inputs(tmp_path):
    one_line_error(run_afterburn("verify", str(tmp_path / "nope")), match="No such file")
    one_line_error(run_afterburn("sites", str(tmp_path)), match="is a directory")
    one_line_error(run_afterburn("annotate", str(tmp_path / "nope.s"), "-o", str(tmp_path / "x.s")))


def test_usage_errors_are_status_2():
    one_line_error(run_afterburn("frobnicate"))
    one_line_error(run_afterburn("annotate"))
    one_line_error(run_afterburn("verify", "a", "b"))


def test_annotate_never_touches_input_or_leaves_partial_output(tmp_path):
    src = tmp_path / "a.s"
    text = "\t.text\n\tcli\n"
    src.write_text(text)
    one_line_error(run_afterburn("annotate", str(src), "-o", str(src)), match="overwrite the input")
    assert src.read_text() == text
    # A failing annotation leaves an existing output untouched and no temp files.
    bad = tmp_path / "bad.s"
    bad.write_text("\t.text\n\t.byte 0x90, 0xfa\n")  # cli hidden after a nop: refused
    out = tmp_path / "out.s"
    out.write_text("previous\n")
    one_line_error(run_afterburn("annotate", str(bad), "-o", str(out)), match="not visible in the text")
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.s", "bad.s", "out.s"]
    # Input that is not assembler at all.
    b = tmp_path / "bin.s"
    b.write_bytes(b"\xff\xfe\x00junk")
    one_line_error(run_afterburn("annotate", str(b), "-o", str(tmp_path / "o.s")), match="not assembler text")
    g = tmp_path / "garbage.s"
    g.write_text("this is not assembler at all\n")
    one_line_error(run_afterburn("annotate", str(g), "-o", str(tmp_path / "o.s")), match="does not assemble")


def test_annotate_twice_is_a_noop(tmp_path):
    src = tmp_path / "a.s"
    src.write_text("\t.text\n\tcli\n")
    assert run_afterburn("annotate", str(src), "-o", str(tmp_path / "b.s")).returncode == 0
    r = run_afterburn("annotate", str(tmp_path / "b.s"), "-o", str(tmp_path / "c.s"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["already_annotated"]
    assert (tmp_path / "b.s").read_text() == (tmp_path / "c.s").read_text()
    assert (tmp_path / "c.s").read_text().count(".pushsection .afterburn,") == 1


def test_annotate_json_summary(tmp_path):
    src = tmp_path / "a.s"
    src.write_text("\t.text\n\tcli\n\trep; outsb\n\t.afterburn_noannotate\n\thlt\n\t.afterburn_annotate\n")
    one_line_error(run_afterburn("annotate", str(src), "-o", "-", "--json"), match="both write to stdout")
    r = run_afterburn("annotate", str(src), "-o", str(tmp_path / "o.s"), "--json")
    data = json.loads(r.stdout)
    assert data["sites"] == 2 and data["by_kind"] == {"cli": 1, "outs": 1}
    assert data["pad_bytes"] == 7 + 5 and len(data["excluded"]) == 1
