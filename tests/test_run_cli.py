"""``afterburn run``: streaming serial, exit statuses, JSON, bad input."""
from __future__ import annotations

import json

from .backend_params import REFERENCE
from .kernels import build_kernel
from .test_cli import one_line_error
from .conftest import run_afterburn

HELLO = "    PUTC 'h'\n    PUTC 'i'\n    PUTC 10\n    EXIT 0x17\n"


def test_streams_serial_and_exits_with_the_guest_value(tmp_path):
    k = build_kernel(tmp_path, HELLO)
    r = run_afterburn("run", str(k))
    assert r.stdout == "hi\n" and r.returncode == 0x17
    assert "isa-debug-exit 0x17" in r.stderr and "instructions" in r.stderr


def test_json_observation(tmp_path):
    k = build_kernel(tmp_path, HELLO)
    r = run_afterburn("run", "--json", str(k))
    obs = json.loads(r.stdout)
    assert r.returncode == 0x17
    assert obs["serial"] == "hi\n" and obs["ending"] == {"reason": "exit", "code": 0x17, "detail": "", "status": 0x17}
    assert obs["backend"] == REFERENCE and obs["stats"]["instructions"] > 0
    assert [0x3F8, 1, ord("h")] in obs["io_trace"]
    assert obs["cpu"]["cr0"] & 1


def test_documented_statuses(tmp_path):
    assert run_afterburn("run", str(build_kernel(tmp_path, "    cli\n    hlt\n", "h"))).returncode == 250
    assert run_afterburn("run", str(build_kernel(tmp_path, "    ud2\n", "t"))).returncode == 251
    loop = build_kernel(tmp_path, "1:  jmp 1b\n", "l")
    assert run_afterburn("run", "--timeout", "0.2", str(loop)).returncode == 252
    r = run_afterburn("run", "--max-insns", "1000", str(loop))
    assert r.returncode == 253 and "max-insns" in r.stderr


def test_bad_input(tmp_path):
    (tmp_path / "x.elf").write_bytes(b"not an elf")
    one_line_error(run_afterburn("run", str(tmp_path / "x.elf")), match="not an ELF file")
    one_line_error(run_afterburn("run", str(tmp_path / "missing.elf")), match="No such file")
    one_line_error(run_afterburn("run", "--backend", "nope", str(build_kernel(tmp_path, HELLO))), match="unknown backend")
    one_line_error(run_afterburn("run", "--max-insns", "0", "k.elf"), match="must be positive")
