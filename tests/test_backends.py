"""The backend conformance suite: what every registered backend must do.

Each test is parametrised over every backend (or every rewriting backend
where the test is about rewriting), so a new backend is held to all of it
by being registered.  The reference is the native backend; the per-form
test of the patch templates is in tests/test_templates.py.
"""
from __future__ import annotations

import json

import pytest

from backends.pc.observation import EXIT_STATUS, compare
from tests import sitebench
from tests.backend_params import ALL, OTHERS, REFERENCE, REWRITING
from tests.conftest import GUESTS, run_afterburn
from tests.kernels import PRELUDE

_reference: dict = {}


def _reference_run(kernel):
    """The reference Observation of a corpus guest, once per worker."""
    if kernel not in _reference:
        _reference[kernel] = sitebench.run(kernel, REFERENCE, digest_low=False, max_insns=100_000_000)
    return _reference[kernel]


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("guest", GUESTS)
def test_corpus_guest_agrees_with_the_reference(corpus_builds, guest, backend):
    kernel = corpus_builds["annotated"] / f"{guest}.elf"
    ref = _reference_run(kernel)
    obs = sitebench.run(kernel, backend, digest_low=False, max_insns=100_000_000)
    assert obs.serial.decode().rstrip("\n").endswith(f"PASS {guest}"), obs.ending.describe()
    assert (obs.ending.reason, obs.ending.code) == ("exit", 0)
    div = compare(ref, obs)
    assert div is None, f"{div.field}: {div.detail}"


@pytest.mark.parametrize("backend", REWRITING)
def test_rewriting_backend_really_deprivileges(corpus_builds, backend):
    """The guest ran behind the hypervisor: it called it, and what the
    Observation shows is the virtual CPU (CS is the guest's ring-0 selector,
    not the real one)."""
    obs = sitebench.run(corpus_builds["annotated"] / "ring3.elf", backend, digest_low=False)
    assert obs.stats.hypercalls and obs.stats.exits["user-mode site"] > 0
    assert obs.cpu["cs"] & 3 == 0


@pytest.mark.parametrize("backend", ALL)
def test_vcpu_state_has_the_reference_keys(tmp_path, backend):
    kernel = sitebench.build_bench(tmp_path, "k", PRELUDE + "    EXIT 0\n")
    ref = sitebench.run(kernel, REFERENCE, digest_low=False)
    obs = sitebench.run(kernel, backend, digest_low=False)
    assert sorted(obs.cpu) == sorted(ref.cpu) and all(isinstance(v, int) for v in obs.cpu.values())


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


def strip_record(annotated: str, marker: str) -> str:
    """Delete the site record that follows the first statement containing
    ``marker`` (the instruction and its pad stay: an unrecorded site)."""
    import re

    at = annotated.index(marker)
    block = re.compile(r"\t\.pushsection \.afterburn,.*?\t\.popsection\n", re.S)
    m = block.search(annotated, at)
    assert m is not None
    return annotated[: m.start()] + annotated[m.end() :]


@pytest.fixture(scope="module")
def unrecorded_kernel(tmp_path_factory):
    """A kernel whose `inb $0x60` lost its site record."""
    tmp = tmp_path_factory.mktemp("escape")
    annotated = sitebench.annotate(PRELUDE + BODY_IO, tmp, "k")
    stripped = strip_record(annotated, "inb $0x60, %al")
    return sitebench.link([sitebench.assemble_text(stripped, tmp, "k")], tmp, "k")


def test_verify_sees_the_missing_record(unrecorded_kernel):
    r = run_afterburn("verify", str(unrecorded_kernel))
    assert r.returncode == 1 and "in" in r.stdout


@pytest.mark.parametrize("backend", REWRITING)
def test_escape_is_reported(unrecorded_kernel, backend):
    """An unrewritten sensitive instruction is reported when the guest
    reaches it, never executed natively in silence."""
    obs = sitebench.run(unrecorded_kernel, backend, digest_low=False)
    assert obs.ending.reason == "escape", obs.ending.describe()
    assert "unrewritten in" in obs.ending.detail and "0x60" in obs.ending.detail
    assert obs.serial == b"A"  # everything before it ran
    r = run_afterburn("run", "--backend", backend, str(unrecorded_kernel))
    assert r.returncode == EXIT_STATUS["escape"] == 248


def test_reference_runs_the_unrecorded_kernel_to_the_end(unrecorded_kernel):
    assert sitebench.run(unrecorded_kernel, REFERENCE, digest_low=False).serial == b"AB"


@pytest.mark.parametrize("backend", REWRITING)
def test_rewrite_then_run_round_trip(corpus_builds, tmp_path, backend):
    """``afterburn rewrite`` writes an image that runs on its backend with
    no flags, exactly as the in-memory rewrite does."""
    src = corpus_builds["annotated"] / "timer.elf"
    out = tmp_path / f"timer.{backend}.elf"
    r = run_afterburn("rewrite", "--backend", backend, str(src), "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    a = run_afterburn("run", str(out), "--json", "--cmdline", "x")
    b = run_afterburn("run", "--backend", backend, str(src), "--json", "--cmdline", "x")
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja["backend"] == backend and ja["stats"]["hypercalls"]
    for key in ("serial", "ending", "io_trace", "cpu", "memory"):
        assert ja[key] == jb[key], key
    r = run_afterburn("run", "--backend", REFERENCE, str(out))
    assert r.returncode == 2 and f"rewritten for {backend}" in r.stderr


@pytest.mark.parametrize("backend", REWRITING)
def test_unannotated_kernel_is_refused(corpus_builds, backend):
    r = run_afterburn("run", "--backend", backend, str(corpus_builds["plain"] / "hello.elf"))
    assert r.returncode == 2
    assert "not annotated" in r.stderr and "Traceback" not in r.stderr
