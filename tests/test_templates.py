"""Every patch template runs, patched, exactly like the native instruction.

For each form in tests/forms.py, a bench kernel (tests/sitebench.py) runs
the form once natively (on the reference backend: the annotated image at
CPL 0) and once rewritten on every rewriting backend (the site patched, the
guest deprivileged, the wedge emulating it).  The Observations must be
identical: final registers,
virtual flags, segments, control registers and descriptor-table registers,
the port-write trace, the recorded trap frame and every byte the form could
write.  A kind whose template differs with the arithmetic flags live or dead
is run both ways.
"""
from __future__ import annotations

import pytest

from backends.pc.observation import compare
from tests import sitebench
from tests.backend_params import REFERENCE, REWRITING
from tests.forms import FORMS

CASES = [(kind, form) for kind, forms in FORMS.items() for form in forms]


def _template_depends_on_flags(kernel, backend: str) -> bool:
    """Whether the patch for the site at ``form`` differs when the flags are dead."""
    from afterburn import decode
    from afterburn.elf import Elf
    from afterburn.sitefmt import read_site_table
    from backends import get_backend
    from rewriter.templates import encode

    elf = Elf(kernel)
    form = next(s.value for s in elf.symbols if s.name == "form")
    # "form" names the instruction, which ends its site when the pad comes first.
    site = next(s for s in read_site_table(elf).sites if s.address <= form < s.address + s.length)
    text = elf.section(".text")
    code = text.data[site.offset : site.offset + site.length]
    insn = decode.decode_one(code, site.insn_offset - site.offset, site.insn_offset + text.addr)
    be = get_backend(backend)
    ctx = be.template_context(be.wedge_image())
    return encode(site.kind, insn, ctx, form, True) != encode(site.kind, insn, ctx, form, False)


@pytest.mark.parametrize("backend", REWRITING)
@pytest.mark.parametrize("kind,form", CASES, ids=[f"{k}:{f}" for k, f in CASES])
def test_patched_site_matches_native(tmp_path, kind, form, backend):
    kernels = {True: sitebench.build_bench(tmp_path, "bench_live", sitebench.bench_source(kind, form, True))}
    if _template_depends_on_flags(kernels[True], backend):
        kernels[False] = sitebench.build_bench(tmp_path, "bench_dead", sitebench.bench_source(kind, form, False))
    for live, kernel in kernels.items():
        native = sitebench.run(kernel, REFERENCE)
        patched = sitebench.run(kernel, backend)
        # The bench got past the form (or the form itself ended the run).
        if form == "hlt":
            assert native.ending.reason == "halted", native.ending.describe()
        elif form != "outl %eax,$0xf4":
            assert (native.ending.reason, native.ending.code) == ("exit", 0x42), native.ending.describe()
        div = compare(native, patched)
        assert div is None, f"{form} (flags {'live' if live else 'dead'}): {div.field}: {div.detail}"
