"""QEMU is the oracle: every corpus guest, plain and annotated, must print
exactly the same serial output and exit with the same value on
qemu-system-i386 and on the reference backend (``afterburn run``).  QEMU exits with
(v<<1)|1 for a guest value v; afterburn exits with v."""
from __future__ import annotations

import pytest

from afterburn.elf import Elf
from afterburn.verify import verify

from .backend_params import REFERENCE
from .conftest import GUESTS, qemu_run, run_afterburn


@pytest.mark.parametrize("guest", GUESTS)
def test_annotated_guest_verifies(corpus_builds, guest):
    rep = verify(Elf(corpus_builds["annotated"] / f"{guest}.elf"))
    assert rep.ok, rep.problems[:5]
    assert rep.sites > 50


@pytest.mark.parametrize("guest", GUESTS)
def test_annotation_does_not_change_behaviour_on_qemu(corpus_builds, guest):
    plain = qemu_run(corpus_builds["plain"] / f"{guest}.elf")
    annotated = qemu_run(corpus_builds["annotated"] / f"{guest}.elf")
    assert annotated == plain
    assert plain[1] == 1 and plain[0].endswith(f"PASS {guest}\n".encode())


@pytest.mark.parametrize("flavour", ["plain", "annotated"])
@pytest.mark.parametrize("guest", GUESTS)
def test_reference_backend_matches_qemu(corpus_builds, guest, flavour):
    kernel = corpus_builds[flavour] / f"{guest}.elf"
    serial, qemu_status = qemu_run(kernel)
    r = run_afterburn("run", "--backend", REFERENCE, str(kernel))
    assert r.stdout.encode() == serial
    assert (r.returncode << 1) | 1 == qemu_status, r.stderr
