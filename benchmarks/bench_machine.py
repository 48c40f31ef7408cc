"""Throughput of the emulated PC (bare backend) on a compute-bound loop and
an I/O-bound loop, measured in one run.  Instruction counts are exact
(deterministic); only wall time varies.

    python benchmarks/bench_machine.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.kernels import build_kernel, run_kernel  # noqa: E402

LOOPS = {
    "compute (add/dec/jnz)": "    movl $20000000, %ecx\n1:  addl $3, %eax\n    decl %ecx\n    jnz 1b\n    EXIT 0\n",
    "port I/O (inb 0x61)": "    movl $50000, %ecx\n1:  inb $0x61, %al\n    decl %ecx\n    jnz 1b\n    EXIT 0\n",
    "serial (LSR poll + THR)": "    movl $20000, %ecx\n1:  movw $0x3fd, %dx\n    inb %dx, %al\n    movw $0x3f8, %dx\n"
                               "    movb $0x2e, %al\n    outb %al, %dx\n    decl %ecx\n    jnz 1b\n    EXIT 0\n",
}


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        print(f"{'workload':28} {'instructions':>13} {'exits':>8} {'wall s':>8} {'M insn/s':>9} {'us/exit':>8}")
        for name, body in LOOPS.items():
            k = build_kernel(Path(d), body, name="k" + str(abs(hash(name))))
            t = time.perf_counter()
            obs, _ = run_kernel(k, max_insns=None, timeout=600)
            wall = time.perf_counter() - t
            exits = sum(obs.stats.exits.values())
            print(f"{name:28} {obs.stats.instructions:13,} {exits:8,} {wall:8.3f} "
                  f"{obs.stats.instructions / wall / 1e6:9.1f} {wall / max(exits, 1) * 1e6:8.2f}")


if __name__ == "__main__":
    main()
