"""The xen backend: the corpus runs identically to bare, escapes are
reported, and the hypervisor refuses what a PV guest may not do."""
from __future__ import annotations

import re

import pytest

from backends.pc.observation import EXIT_STATUS, compare
from tests import sitebench
from tests.conftest import GUESTS, run_afterburn
from tests.kernels import PRELUDE


@pytest.mark.parametrize("guest", GUESTS)
def test_corpus_guest_identical_on_bare_and_xen(corpus_builds, guest):
    kernel = corpus_builds["annotated"] / f"{guest}.elf"
    bare = sitebench.run(kernel, "bare", digest_low=False, max_insns=100_000_000)
    xen = sitebench.run(kernel, "xen", digest_low=False, max_insns=100_000_000)
    assert xen.serial.decode().rstrip("\n").endswith(f"PASS {guest}"), xen.ending.describe()
    assert (xen.ending.reason, xen.ending.code) == ("exit", 0)
    div = compare(bare, xen)
    assert div is None, f"{div.field}: {div.detail}"
    # It really ran deprivileged: hypercalls happened, and the virtual CPU
    # state was compared (CS is the guest's ring-0 selector, not the real one).
    assert xen.stats.hypercalls and xen.cpu["cs"] & 3 == 0


def test_unannotated_kernel_is_refused(corpus_builds):
    r = run_afterburn("run", "--backend", "xen", str(corpus_builds["plain"] / "hello.elf"))
    assert r.returncode == 2
    assert "not annotated" in r.stderr and "Traceback" not in r.stderr


# -- escapes -------------------------------------------------------------------------

BODY_IO = """
    movb $'A', %al
    movw $0x3f8, %dx
    outb %al, %dx
    inb $0x60, %al
    movb $'B', %al
    movw $0x3f8, %dx
    outb %al, %dx
    EXIT 0
"""


def _strip_record(annotated: str, marker: str) -> str:
    """Delete the site record that follows the first statement containing
    ``marker`` (the instruction and its pad stay: an unrecorded site)."""
    at = annotated.index(marker)
    block = re.compile(r"\t\.pushsection \.afterburn,.*?\t\.popsection\n", re.S)
    m = block.search(annotated, at)
    assert m is not None
    return annotated[: m.start()] + annotated[m.end() :]


def test_stripped_site_record_is_reported_as_escape(tmp_path):
    text = PRELUDE + BODY_IO
    annotated = sitebench.annotate(text, tmp_path, "k")
    stripped = _strip_record(annotated, "inb $0x60, %al")
    kernel = sitebench.link([sitebench.assemble_text(stripped, tmp_path, "k")], tmp_path, "k")
    # verify sees the hole in the table...
    r = run_afterburn("verify", str(kernel))
    assert r.returncode == 1 and "in" in r.stdout
    # ...and xen reports the instruction when it gets there, instead of running it.
    obs = sitebench.run(kernel, "xen", digest_low=False)
    assert obs.ending.reason == "escape", obs.ending.describe()
    assert "unrewritten in" in obs.ending.detail and "0x60" in obs.ending.detail
    assert obs.serial == b"A"  # everything before it ran
    r = run_afterburn("run", "--backend", "xen", str(kernel))
    assert r.returncode == EXIT_STATUS["escape"] == 248
    # bare runs the same image natively, to the end
    assert sitebench.run(kernel, "bare", digest_low=False).serial == b"AB"


def _code_bytes(code: bytes) -> str:
    return ", ".join(f"{b:#04x}" for b in code)


def _run_copied_code(tmp_path, code: bytes, data: str = "", fixup: str = ""):
    """A kernel that copies ``code`` into a buffer and calls it: code no
    annotator or rewriter ever saw, as a hostile guest would run it.
    ``fixup`` runs between the copy and the call (patching the copy)."""
    body = f"""
    movl $code, %esi
    movl $buf, %edi
    movl $code_end - code, %ecx
    cld
    rep movsb
    {fixup}
    call buf
    EXIT 0
    .data
code: .byte {_code_bytes(code)}, 0xc3
code_end:
    .align 8
{data}
    .bss
buf: .fill 64, 1, 0
    .text
"""
    kernel = sitebench.build_bench(tmp_path, "hostile", PRELUDE + body)
    return sitebench.run(kernel, "xen", digest_low=False)


def test_invalid_hypercall_kills_the_guest(tmp_path):
    obs = _run_copied_code(tmp_path, bytes.fromhex("b8e7030000") + bytes.fromhex("cd82"))  # mov eax, 999; int 0x82
    assert obs.ending.reason == "killed" and "invalid hypercall 999" in obs.ending.detail


def test_native_sensitive_instruction_in_copied_code_is_an_escape(tmp_path):
    obs = _run_copied_code(tmp_path, bytes.fromhex("fa"))  # cli
    assert obs.ending.reason == "escape" and "cli" in obs.ending.detail


# mmu_update(req, 1, NULL, DOMID_SELF): mov eax, 1; mov ebx, req; mov ecx, 1;
# xor edx, edx; mov esi, 0x7ff0; int 0x82.  The address of req is stored into
# the copied code at run time (buf + 6, the operand of "mov ebx").
MMU_UPDATE = bytes.fromhex("b801000000" "bb00000000" "b901000000" "31d2" "bef07f0000" "cd82")


def _mmu_update(tmp_path, ptr: int, val: int):
    return _run_copied_code(tmp_path, MMU_UPDATE, f"req: .quad {ptr:#x}, {val:#x}", fixup="movl $req, buf + 6")


@pytest.mark.parametrize("frame", [0x4000, 0xFFC00])  # beyond the guest's 32 MiB; the wedge in the hole
def test_mmu_update_mapping_a_foreign_frame_kills_the_guest(tmp_path, frame):
    obs = _mmu_update(tmp_path, 0x2000, frame << 12 | 1)
    assert obs.ending.reason == "killed", obs.ending.describe()
    assert f"maps frame {frame:#x}, which the guest does not own" in obs.ending.detail


def test_mmu_update_of_memory_outside_the_guest_kills_it(tmp_path):
    obs = _mmu_update(tmp_path, 0xFFC00000, 0x5003)
    assert obs.ending.reason == "killed" and "not a guest frame" in obs.ending.detail


def test_valid_mmu_update_is_applied(tmp_path):
    """The same raw call on a frame the guest owns goes through."""
    obs = _mmu_update(tmp_path, 0x2000, 0x5003)
    assert (obs.ending.reason, obs.ending.code) == ("exit", 0), obs.ending.describe()
