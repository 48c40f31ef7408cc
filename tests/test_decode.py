"""Instruction lengths: every decoder agrees with the CPU (issue 9, failure 7).

Capstone 5.0.9 decodes ud1 (0F B9 /r) and ud0 (0F FF /r) without their
ModRM byte.  Linux ends static-call trampolines with "0f b9 cc", so the
short reading saw an int3 that is not there: the cc path refused it, and
the object path padded it and broke the ud1, with verify --against saying
EQUIVALENT.  objdump is the independent decoder these tests trust.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from afterburn import decode
from afterburn.annotate_obj import annotate_object
from afterburn.elf import Elf
from afterburn.equiv import check
from afterburn.sitefmt import read_site_table
from corpus.decoder_check import check_file, objdump_instructions

from .conftest import assemble, require_corpus

# Every ModRM shape: register, [reg], [disp32], SIB, SIB without base,
# disp8, disp32, and 16-bit addressing (0x67), behind prefixes too.
UD_FORMS = """\
\t.text
f:
\tud1 %esp, %ecx
\tud1 (%esp), %eax
\tud1 0x12345678, %eax
\tud1 (%eax,%ebx,4), %edx
\tud1 0x10(,%ebx,4), %edx
\tud1 0x7f(%ebp), %esi
\tud1 0x12345(%ebp,%ecx,2), %edi
\taddr16 ud1 (%bx,%si), %eax
\taddr16 ud1 0x1234, %eax
\taddr16 ud1 0x12(%bp), %eax
\tdata16 ud1 (%eax), %eax
\tud0 (%eax), %eax
\tud0 0x12345678(%eax,%ebx,8), %ecx
\tud0 %eax, %eax
\tud2
\tint3
\tret
"""


def test_ud0_ud1_lengths_agree_with_objdump(tmp_path):
    obj = assemble(UD_FORMS, tmp_path)
    want = [(a, len(raw)) for a, raw, _ in objdump_instructions(str(obj))[".text"]]
    data = Elf(obj).section(".text").data
    got = [(a, n) for a, n, _, _ in decode.lite_run(data, 0, len(data))]
    assert got == want
    # The single-instruction entry points agree too.
    assert [(i.address, i.size) for i in (decode.lite_one(data, a) for a, _ in want)] == want
    assert [decode.size_of(decode.decode_one(data, a, a), data, a) for a, _ in want] == [n for _, n in want]
    assert check_file(str(obj)).classes == {}


TRAMPOLINE = """\
\t.section .static_call.text,"ax"
\t.globl tramp
tramp:
\t.byte 0xe9
\t.long target - (. + 4)
\t.byte 0x0f, 0xb9, 0xcc
\t.type tramp, @function
\t.size tramp, . - tramp
\t.text
target:
\tcli
\tret
"""


def test_object_path_leaves_ud1_whole_and_the_proof_notices(tmp_path, monkeypatch):
    obj = assemble(TRAMPOLINE, tmp_path)
    raw = obj.read_bytes()
    res = annotate_object(raw, str(obj))
    out = Elf("out.o", raw=res.data)
    assert [s.kind.name for s in read_site_table(out).sites] == ["cli"]
    assert out.section(".static_call.text").data == Elf(obj).section(".static_call.text").data
    assert check(raw, res.data, "in.o", "out.o").ok
    # What the annotator did while it read ud1 short (and before 0xCC
    # padding was told from int3): a pad inside the ud1.  The proof, reading
    # lengths right, must refuse that output.
    monkeypatch.setattr(decode, "_MODRM_SHORT", frozenset())
    monkeypatch.setattr(decode, "int3_padding", lambda *a: set())
    broken = annotate_object(raw, str(obj))
    monkeypatch.undo()
    assert sorted(s.kind.name for s in read_site_table(Elf("b.o", raw=broken.data)).sites) == ["cli", "int3"]
    assert not check(raw, broken.data, "in.o", "broken.o").ok


def test_cc_path_accepts_a_static_call_trampoline(tmp_path):
    src = tmp_path / "t.c"
    src.write_text('void target(void) { __asm__ volatile("cli"); }\n'
                   'asm(".pushsection .static_call.text, \\"ax\\"\\n.globl tramp\\ntramp:\\n.byte 0xe9\\n'
                   '.long target - (. + 4)\\n.byte 0x0f, 0xb9, 0xcc\\n.popsection\\n");\n')  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "afterburn.cli", "cc", "-m32", "-O2", "-c", "t.c", "-o", "t.o"], cwd=tmp_path,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [s.kind.name for s in read_site_table(Elf(tmp_path / "t.o")).sites] == ["cli"]


def test_corpus_static_call_modules_agree_with_objdump():
    """A slice of the corpus check (python -m corpus.decoder_check runs it
    on all ~4,400 modules): modules whose static-call trampolines end in ud1."""
    corpus = require_corpus()
    mods = [p for p in corpus.ko_files() if p.name in ("kvm.ko", "kvm-intel.ko", "snd-pcm.ko")]
    assert len(mods) == 3
    for m in mods:
        res = check_file(str(m))
        assert res.error is None and res.instructions > 1000
        assert res.classes == {}, res.classes


@pytest.mark.parametrize("data,padding", [
    (b"\xc3\xcc", {1}),  # ret; int3: a speculation trap
    (b"\xe9\x00\x00\x00\x00\xcc\xcc\xcc", {5, 6, 7}),  # jmp; .fill 0xcc
    (b"\x18\x00\xcc\xcc", {2, 3}),  # data, then .align 4, 0xcc: a run
    (b"\x90\xcc\x90", set()),  # a lone int3 after an ordinary instruction is an int3
    (b"\xc3\xcc\x90", {1}),
], ids=["ret-int3", "jmp-fill", "align-fill", "int3", "ret-int3-nop"])  # fmt: skip
def test_int3_padding_rule(data, padding):
    insns = [(a, a + n, m) for a, n, m, _ in decode.lite_run(data, 0, len(data))]
    assert decode.int3_padding(insns, data, set()) == padding
    # A name (symbol, branch or relocation target) makes an 0xCC an int3.
    assert decode.int3_padding(insns, data, padding) == set()


def test_instructions_capstone_does_not_know(tmp_path):
    """Linux 6.1's sync_core() uses serialize (0f 01 e8), which capstone
    5.0.9 cannot decode: the object path left alternative.o unannotated and
    the sweep stepped through it byte by byte.  The 0F 01 register forms
    are 3 bytes each."""
    obj = assemble("\t.text\nf:\tserialize\n\tcli\n\t.byte 0x0f,0x01,0xc6\n\tret\n", tmp_path)
    data = Elf(obj).section(".text").data
    assert [(a, n, m) for a, n, m, _ in decode.lite_run(data, 0, len(data))] == [
        (0, 3, "serialize"), (3, 1, "cli"), (4, 3, "wrmsrns"), (7, 1, "ret")]
    assert check_file(str(obj)).classes == {}
    out = annotate_object(obj.read_bytes(), str(obj))
    assert out.sites == {"cli": 1} and out.skipped == []
