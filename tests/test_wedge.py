"""The wedge and the Python side agree on the vCPU layout and entry points."""
from __future__ import annotations

import re
import subprocess

import pytest

import wedge
from afterburn.elf import Elf
from backends import get_backend
from wedge.layout import SHARED_INFO, VCPU_FIELDS, VCPU_MAGIC, WedgeConfig, c_header, vcpu_offsets
from tests import sitebench
from tests.kernels import PRELUDE


def test_vcpu_symbol_has_the_layout_size():
    w = get_backend("xen").wedge_image()
    sym = next(s for s in Elf(w.path).symbols if s.name == "vcpu")
    assert sym.size == vcpu_offsets()["__size__"]


def test_layout_asserts_catch_a_c_struct_that_disagrees(tmp_path):
    """vcpu.h asserts every offset; a C layout that differs from
    layout.py (here: a field widened by hand) does not compile."""
    header = c_header(WedgeConfig(1, SHARED_INFO, 0, 1))
    bad = header.replace("uint32_t cr2;", "uint64_t cr2;")
    assert bad != header
    probe = tmp_path / "probe.c"
    for text, ok in ((header, True), (bad, False)):
        (tmp_path / "wedge_abi.h").write_text(text)
        probe.write_text('#include "wedge_abi.h"\nstruct vcpu v;\n')
        r = subprocess.run(["gcc", "-m32", "-ffreestanding", "-c", str(probe), "-o", str(tmp_path / "p.o")],
                           capture_output=True, text=True)  # fmt: skip
        assert (r.returncode == 0) == ok, r.stderr
        if not ok:
            assert "vcpu layout" in r.stderr


def test_entry_stub_order_matches_entry_points():
    text = (wedge.SRC / "src" / "entry.S").read_text()
    slots = {name: int(i) for name, i in re.findall(r"^\s*ENTRY\s+(\w+),\s*\w+,\s*(\d+)", text, re.M)}
    slots.update({name: int(i) for name, i in re.findall(r"^\s*FAST\s+(\w+),\s*(\d+)", text, re.M)})
    # Every entry point the rewriter may call exists with its own slot...
    assert {n: slots.get(n) for n in wedge.ENTRY_POINTS} == {n: i for i, n in enumerate(wedge.ENTRY_POINTS)}
    # ...and internal entries only share the slot of the entry they serve.
    assert {n: i for n, i in slots.items() if n not in wedge.ENTRY_POINTS} == {"w_popf_slow": 2}
    counters = next(f for f in VCPU_FIELDS if f.name == "counters")
    assert counters.count >= len(wedge.ENTRY_POINTS)


BODY = """
    pushfl
    popl %eax
    movb $'x', %al
    movw $0x3f8, %dx
    outb %al, %dx
    outb %al, %dx
    outb %al, %dx
    pushfl
    popl %eax
    EXIT 0
"""


def test_python_reads_what_the_running_wedge_wrote(tmp_path):
    """Python reads the vCPU through layout.py's offsets while the wedge
    writes it through vcpu.h: the values must make sense together."""
    from backends.pc.machine import Limits
    from backends.run import run

    kernel = sitebench.build_bench(tmp_path, "k", PRELUDE + BODY)
    r = run(kernel, "xen", limits=Limits(max_insns=1_000_000))
    obs, be = r.observation, r.backend
    assert obs.serial == b"xxx"
    assert be.read_vcpu("magic") == VCPU_MAGIC
    assert be.read_vcpu("cr0") == 0x11
    assert be.read_vcpu("seg", 1) == 0x08  # CS: the prelude's ljmp $0x08
    assert be.read_vcpu("seg", 3) == 0x10  # DS
    assert be.read_vcpu("depth") == 1  # the run ended inside the wedge (the exit's out)
    count = {name: be.read_vcpu("counters", i) for i, name in enumerate(wedge.ENTRY_POINTS)}
    # The prelude masks both PICs (2 outb) and sets segments; the body does 3
    # outb to COM1 and the exit.  Each went through w_io exactly once.
    assert count["w_io"] == 2 + 3 + 1 == obs.stats.exits["io"]
    assert count["w_pushf"] == 2
    assert count["w_sreg"] >= 3


@pytest.mark.parametrize("backend", ["nosuch"])
def test_unknown_wedge_layer_is_an_error(backend):
    from afterburn.errors import AfterburnError

    with pytest.raises(AfterburnError):
        wedge.build(backend, WedgeConfig(1, SHARED_INFO, 0, 1))
