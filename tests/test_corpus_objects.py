"""Object annotation proven on real code: Debian's i386 Linux modules and
every GRUB i386-pc module.

For each module: annotate; the output must pass ``verify`` on its own, be
proven equivalent to the input (``verify --against``), and every site must
fit the xen patches.  CI runs every GRUB module and the fixed sample of
Linux modules in ``corpus/linux_sample.txt`` (modules with sensitive
instructions, chosen once by a seeded draw, plus the drivers the end-to-end
boot loads); ``benchmarks/bench_corpus.py`` runs all ~4,100.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from afterburn.annotate_obj import annotate_object
from afterburn.elf import Elf
from afterburn.equiv import check
from afterburn.verify import verify
from backends import get_backend
from tests.backend_params import REWRITING
from corpus import fetch
from rewriter import check_fit
from tests.conftest import require_corpus

SAMPLE = Path(__file__).resolve().parent.parent / "corpus" / "linux_sample.txt"


@pytest.fixture(scope="module")
def corpus() -> fetch.Corpus:
    return require_corpus()


def _prove(path: Path) -> tuple[int, list[str]]:
    """(sites, problems) for one module."""
    raw = path.read_bytes()
    res = annotate_object(raw, str(path))
    problems = []
    elf = Elf(f"{path}.annotated", raw=res.data)
    rep = verify(elf)
    problems += [f"verify: {p.message}" for p in rep.problems]
    eq = check(raw, res.data, str(path), f"{path}.annotated")
    problems += [f"equivalence: {p}" for p in eq.problems]
    if res.site_count:
        for backend in REWRITING:
            _, unfit = check_fit(elf, get_backend(backend))
            problems += [f"{backend}: {p.kind} at {p.symbol}: {p.reason}" for p in unfit]
    return res.site_count, problems


def _run(paths: list[Path]) -> tuple[int, int, dict[str, list[str]]]:
    sites = with_sites = 0
    failures: dict[str, list[str]] = {}
    for p in paths:
        n, problems = _prove(p)
        sites += n
        with_sites += n > 0
        if problems:
            failures[p.name] = problems[:3]
    return sites, with_sites, failures


def test_every_grub_module(corpus):
    mods = corpus.grub_mod_files()
    assert len(mods) > 250
    sites, with_sites, failures = _run(mods)
    assert not failures, failures
    # research/corpus.md counts 676 core sensitive instructions in 40 modules;
    # our table also has int n, cpuid, rdtsc, sreg moves, far transfers.
    assert with_sites >= 40 and sites >= 900, (with_sites, sites)


def test_linux_module_sample(corpus):
    names = [ln.strip() for ln in SAMPLE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(names) >= 100
    root = Path(corpus.modules)
    missing = [n for n in names if not (root / n).exists()]
    assert not missing, f"sample modules missing from {corpus.linux_package}: {missing[:5]}"
    sites, with_sites, failures = _run([root / n for n in names])
    assert not failures, failures
    assert with_sites == len(names) and sites > 1000, (with_sites, sites)
