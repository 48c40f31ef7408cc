"""Shared test helpers.

Tests that need an external tool (qemu-system-i386, the Debian corpus) skip
on a developer machine that lacks it, but FAIL under CI (AFTERBURN_CI=1),
where .ci/run installs everything: a missing tool there is a broken set-up,
never a reason to pass.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from corpus import guest_names

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("AFTERBURN_CI") == "1"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required under CI (.ci/run installs it) but is missing")
        pytest.skip(f"{name} not installed")
    return path


def require_corpus():
    """The Debian corpus (corpus/fetch.py): skip without it, fail under CI."""
    from corpus import fetch

    corpus = fetch.load()
    if corpus is None:
        msg = "the Debian corpus is not in the cache (python -m corpus.fetch; AFTERBURN_CORPUS)"
        if IN_CI:
            pytest.fail(f"{msg}: required under CI")
        pytest.skip(msg)
    return corpus


def once_per_session(tmp_path_factory, name: str, compute):
    """``compute(workdir)``'s JSON-able result, computed once per test
    session even under pytest-xdist: the first worker to take the lock
    computes, the others read its JSON."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    result = shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result.exists():
            return json.loads(result.read_text())
        data = compute(shared / name)
        result.write_text(json.dumps(data))
        return data


def assemble(text: str, tmp_path: Path, name: str = "t") -> Path:
    """Assemble AT&T text with GNU as (32-bit); returns the object path."""
    src = tmp_path / f"{name}.s"
    obj = tmp_path / f"{name}.o"
    src.write_text(text)
    r = subprocess.run(["as", "--32", "-o", str(obj), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return obj


def run_afterburn(*args: str, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess, exactly as a user would."""
    return subprocess.run([sys.executable, "-m", "afterburn.cli", *args], capture_output=True, text=True,
                          input=input, cwd=cwd)  # fmt: skip


@pytest.fixture
def as_assembler(tmp_path):
    """An ``assemble(text) -> bytes`` callable for annotate_text."""
    counter = [0]

    def _assemble(text: str) -> bytes:
        counter[0] += 1
        return assemble(text, tmp_path, f"pass{counter[0]}").read_bytes()

    return _assemble


GUESTS = guest_names()
AFTERBURN_CC = f"{sys.executable} -m afterburn.cli cc"


@pytest.fixture(scope="session")
def corpus_builds(tmp_path_factory):
    """The corpus guests built twice: with gcc, and with ``afterburn cc``."""
    base = tmp_path_factory.mktemp("corpus")
    out = {}
    for flavour, extra in (("plain", []), ("annotated", [f"CC={AFTERBURN_CC}"])):
        build = base / flavour
        r = subprocess.run(["make", "-s", "-j2", "-C", str(ROOT / "corpus" / "guests"), f"BUILD={build}", *extra],
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        out[flavour] = build
    return out


def qemu_run(kernel: Path, timeout: float = 60) -> tuple[bytes, int]:
    """Serial output and exit status of the reference QEMU command."""
    qemu = require_tool("qemu-system-i386")
    r = subprocess.run([qemu, "-kernel", str(kernel), "-nodefaults", "-m", "32", "-display", "none", "-serial",
                        "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)  # fmt: skip
    return r.stdout, r.returncode
