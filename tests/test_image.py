"""The rewritten-image format (afterburn/image.py) and the ELF program
headers and notes it rests on, checked against binutils' readelf."""
from __future__ import annotations

import re
import subprocess

import pytest

from afterburn.elf import PT_LOAD, Elf
from afterburn.errors import FormatError
from afterburn.image import ORIG_HEADER, PatchedSite, backend_note, decode_orig, encode_orig, read_backend
from rewriter.elfwrite import write_image
from tests import sitebench
from tests.backend_params import REWRITING
from tests.kernels import PRELUDE

SITES = [PatchedSite(0x100000, 0x100008, 0x100000, "cli", bytes.fromhex("fa0f1f8000000000")),
         PatchedSite(0x100010, 0x100016, 0x100015, "sti", bytes.fromhex("0f1f440000fb"))]  # fmt: skip


def test_orig_round_trip():
    assert decode_orig(encode_orig(SITES), "k") == SITES


@pytest.mark.parametrize("corrupt", [
    lambda b: b[:-1],  # truncated original bytes
    lambda b: b[:5],  # truncated header
    lambda b: ORIG_HEADER.pack(0x2000, 0x1000, 0x1800, 3) + b"cli" + b,  # end before start: was an endless loop
    lambda b: ORIG_HEADER.pack(0x1000, 0x1008, 0x2000, 3) + b"cli" + b"\x90" * 8,  # instruction outside the site
    lambda b: ORIG_HEADER.pack(0x1000, 0x1008, 0x1000, 3) + b"\xff\xfe\xfd" + b"\x90" * 8,  # kind not text
])  # fmt: skip
def test_corrupt_orig_is_a_format_error(corrupt):
    with pytest.raises(FormatError, match="corrupt .afterburn.orig"):
        decode_orig(corrupt(encode_orig(SITES)), "k")


def _readelf(*args: str) -> str:
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("backend", REWRITING)
def test_program_headers_and_notes_agree_with_readelf(tmp_path, backend):
    """A rewritten kernel (wedge segments, the backend note) read by our ELF
    view and by binutils' readelf: the same segments, the same note."""
    from backends import get_backend
    from backends.pc.loader import load_image

    kernel = sitebench.build_bench(tmp_path, "k", PRELUDE + "    cli\n    EXIT 0\n")
    be = get_backend(backend)
    out = tmp_path / "k.rewritten.elf"
    write_image(be.prepare(load_image(kernel)), str(out))
    elf = Elf(out)
    rows = re.findall(r"^\s+LOAD\s+0x(\w+) 0x(\w+) 0x(\w+) 0x(\w+) 0x(\w+)", _readelf("-l", str(out)), re.M)
    ours = [(ph.offset, ph.vaddr, ph.paddr, ph.filesz, ph.memsz) for ph in elf.program_headers if ph.type == PT_LOAD]
    assert ours == [tuple(int(x, 16) for x in r) for r in rows] and len(ours) >= 2
    # readelf names type 2 for an unknown owner after the generic NT_ARCH
    notes = re.findall(r"^\s+(\S+)\s+0x\w+\s+(.*?)\s+description data: ([\w ]+?)\s*$", _readelf("-n", str(out)), re.M)
    name = " ".join(f"{b:02x}" for b in backend.encode() + b"\0")
    assert any(n[:2] == ("Afterburn", "NT_ARCH (architecture)") and n[2].startswith(name) for n in notes)
    assert read_backend(elf) == backend
    assert backend_note(backend) in out.read_bytes()


def test_truncated_note_is_a_format_error(tmp_path):
    kernel = sitebench.build_bench(tmp_path, "k", PRELUDE + "    cli\n    EXIT 0\n")
    raw = bytearray(kernel.read_bytes())
    sec = Elf(kernel).section(".afterburn.note")
    raw[sec.offset + 4 : sec.offset + 8] = (1000).to_bytes(4, "little")  # descsz past the section
    with pytest.raises(FormatError, match="truncated note"):
        Elf(kernel, raw=bytes(raw)).notes
