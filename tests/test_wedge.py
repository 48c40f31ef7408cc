"""The wedge and the Python side agree on the ABI of wedge/layout.py, for
every rewriting backend; a backend can bring its own entry stubs."""
from __future__ import annotations

import re
import subprocess

import pytest

import wedge
from afterburn.elf import Elf
from backends import get_backend
from backends.pc.machine import Limits
from backends.run import run
from tests import sitebench
from tests.backend_params import REWRITING
from tests.kernels import PRELUDE
from wedge.layout import (
    FRAME, PIO, REGS, SHARED_INFO, UFRAME, VCPU, VCPU_FIELDS, VCPU_MAGIC, WedgeConfig, c_header, hyp_selectors,
    start_info, vcpu_offsets,
)  # fmt: skip


@pytest.mark.parametrize("backend", REWRITING)
def test_vcpu_symbol_has_the_layout_size(backend):
    w = get_backend(backend).wedge_image()
    sym = next(s for s in Elf(w.path).symbols if s.name == "vcpu")
    assert sym.size == vcpu_offsets()["__size__"]


def _compiles(tmp_path, header: str, use: str) -> subprocess.CompletedProcess:
    (tmp_path / "wedge_abi.h").write_text(header)
    probe = tmp_path / "probe.c"
    probe.write_text(f'#include "wedge_abi.h"\n{use}\n')
    return subprocess.run(["gcc", "-m32", "-ffreestanding", "-c", str(probe), "-o", str(tmp_path / "p.o")],
                          capture_output=True, text=True)  # fmt: skip


@pytest.mark.parametrize("struct,field", [(VCPU, "cr2"), (PIO, "value"), (UFRAME, "eip"), (REGS, "ebx"),
                                          (FRAME, "eflags")])  # fmt: skip
def test_layout_asserts_catch_a_c_struct_that_disagrees(tmp_path, struct, field):
    """wedge_abi.h asserts every offset; a C layout that differs from
    layout.py (here: a field widened by hand) does not compile."""
    header = c_header(WedgeConfig(1, SHARED_INFO, 0, 1))
    assert _compiles(tmp_path, header, f"struct {struct.name} v;").returncode == 0
    bad = re.sub(rf"(struct {struct.name} {{.*?)uint32_t {field};", rf"\1uint64_t {field};", header, flags=re.S)
    assert bad != header
    r = _compiles(tmp_path, bad, f"struct {struct.name} v;")
    assert r.returncode != 0 and f"{struct.name} layout" in r.stderr


def test_python_packs_what_c_declares():
    assert PIO.size == 16 and PIO.offsets["buf"] == 12
    assert PIO.unpack(PIO.pack(port=0x3F8, size=1, flags=3, value=7, count=2, buf=0x1000)) == {
        "port": 0x3F8, "size": 1, "flags": 3, "value": 7, "count": 2, "buf": 0x1000}  # fmt: skip
    assert FRAME.offsets["ret"] == REGS.size + 4 and UFRAME.size == REGS.size + 7 * 4
    assert len(start_info(magic=1, entry=2, eax=3, ebx=4, gdt_base=5, gdt_limit=6, cs=7, ds=8, esp=9, sites=10,
                          nsites=11)) == 44  # fmt: skip


@pytest.mark.parametrize("ring", [1, 3])
def test_the_ring_is_the_backends_choice(ring):
    """The same frontend builds for a ring-1 and a ring-3 guest kernel: the
    hypervisor's selectors carry the ring."""
    header = c_header(WedgeConfig(ring, SHARED_INFO, 0, 1))
    cs, ds = hyp_selectors(ring)
    assert cs & 3 == ds & 3 == ring
    assert f"#define GUEST_RING 0x{ring:08x}" in header and f"#define HYP_CS 0x{cs:08x}" in header


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


@pytest.mark.parametrize("backend", REWRITING)
def test_python_reads_what_the_running_wedge_wrote(tmp_path, backend):
    """Python reads the vCPU through layout.py's offsets while the wedge
    writes it through wedge_abi.h: the values must make sense together."""
    kernel = sitebench.build_bench(tmp_path, "k", PRELUDE + BODY)
    r = run(kernel, backend, limits=Limits(max_insns=1_000_000))
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


def test_unknown_wedge_layer_is_an_error():
    from afterburn.errors import AfterburnError

    with pytest.raises(AfterburnError, match="no wedge layer"):
        wedge.build("nosuch", WedgeConfig(1, SHARED_INFO, 0, 1))


# A layer that brings its own upcall entry: it counts upcalls in a word of
# its own, then goes on as the default does.  Everything else comes from the
# backend's own layer, linked in beside it.
OWN_UPCALL = r"""
#include "wedge_abi.h"
	.text
	.globl w_upcall
	.type w_upcall, @function
w_upcall:
	incl %ss:own_upcalls
	pushl $UPCALL_INFO
	jmp w_trap
	.data
	.globl own_upcalls
own_upcalls: .long 0
	.section .note.GNU-stack, "", @progbits
"""


def _default_entry(backend: str) -> bool:
    """Whether a backend's layer links the default entry stubs (l4 brings
    its own: tests/test_l4.py)."""
    layer = wedge.SRC / type(get_backend(backend)).wedge_layer
    return not any("w_upcall:" in p.read_text() for p in layer.glob("*.S"))


@pytest.mark.parametrize("backend", [b for b in REWRITING if _default_entry(b)])
def test_a_backend_can_bring_its_own_entry_stubs(corpus_builds, tmp_path, backend):
    """The default entry stubs are weak: a layer's own w_upcall replaces
    the default in the link, and upcalls arrive through it."""
    base = type(get_backend(backend))
    layer = tmp_path / "ownentry"
    layer.mkdir()
    for src in (wedge.SRC / base.wedge_layer).iterdir():
        (layer / src.name).symlink_to(src)
    (layer / "own_upcall.S").write_text(OWN_UPCALL)
    own = type("OwnEntry", (base,), {"wedge_layer": layer})()
    w = own.wedge_image()
    assert w.sym("w_upcall") != get_backend(backend).wedge_image().sym("w_upcall")
    r = run(corpus_builds["annotated"] / "timer.elf", own, limits=Limits(max_insns=100_000_000))
    assert r.observation.ending.code == 0, r.observation.ending.describe()
    counted = int.from_bytes(r.machine.uc.mem_read(w.sym("own_upcalls"), 4), "little")
    assert counted == r.observation.stats.exits["upcall"] > 0
