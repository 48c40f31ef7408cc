"""Every backend against the native reference, side by side in one run:
what pre-virtualization costs per kind of site, and on the corpus guests.

Each workload is one annotated kernel; the reference runs it natively at
CPL 0, every other backend runs it its own way (rewritten, deprivileged,
through the wedge).  Runs alternate (reference, other, ..., reference, ...)
and the medians are compared, because this machine is noisy: quote the
ratios, not the absolute times.  Instruction counts are exact.

    python benchmarks/bench_backends.py [--rounds 3] [--no-corpus]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import sitebench  # noqa: E402
from tests.kernels import PRELUDE  # noqa: E402
from backends import backend_names  # noqa: E402
from corpus import guest_names  # noqa: E402

N = 200_000
LOOPS = {
    "compute, no sites": f"    movl ${N * 10}, %ecx\n1:  addl $3, %eax\n    decl %ecx\n    jnz 1b\n    EXIT 0\n",
    "cli; sti (inline)": f"    movl ${N}, %ecx\n1:  cli\n    sti\n    decl %ecx\n    jnz 1b\n    EXIT 0\n",
    "pushf; cli; popf (wedge)": f"    movl ${N}, %ecx\n1:  pushfl\n    cli\n    popfl\n    decl %ecx\n    jnz 1b\n"
                                "    EXIT 0\n",
    "mov %cr0 (wedge)": f"    movl ${N}, %ecx\n1:  movl %cr0, %eax\n    decl %ecx\n    jnz 1b\n    EXIT 0\n",
    "inb $0x61 (hypercall)": f"    movl ${N // 10}, %ecx\n1:  inb $0x61, %al\n    decl %ecx\n    jnz 1b\n    EXIT 0\n",
}
GUESTS = guest_names()


def run(kernel: Path, backend: str):
    """One run; the time is the machine's own (load-time rewriting and set-up
    are not part of it)."""
    obs = sitebench.run(kernel, backend, digest_low=False, max_insns=1_000_000_000)
    if obs.ending.reason != "exit":
        raise SystemExit(f"{kernel.name} on {backend}: {obs.ending.describe()}")
    return obs, obs.stats.wall_s


def compare(name: str, kernel: Path, rounds: int) -> None:
    ref, *others = backend_names()
    walls: dict[str, list[float]] = {b: [] for b in (ref, *others)}
    obs = {}
    for _ in range(rounds):
        for backend in walls:
            obs[backend], wall = run(kernel, backend)
            walls[backend].append(wall)
    b, ob = statistics.median(walls[ref]), obs[ref].stats
    for other in others:
        x, ox = statistics.median(walls[other]), obs[other].stats
        hyper = sum(ox.hypercalls.values())
        print(f"{name:26} {other:>8} {ob.instructions:>12,} {ox.instructions:>12,} "
              f"{ox.instructions / ob.instructions:6.2f}x {b:8.3f} {x:8.3f} {x / b:6.2f}x {hyper:>9,}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-corpus", action="store_true")
    args = ap.parse_args()
    ref = backend_names()[0]
    head = (f"{'workload':26} {'backend':>8} {'insns ' + ref:>12} {'insns':>12} {'ratio':>7} {ref + ' s':>8} "
            f"{'s':>8} {'ratio':>7} {'hypercalls':>9}")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        print(f"site kinds, {N:,} iterations (port I/O {N // 10:,}), median of {args.rounds} alternating runs")
        print(head)
        for i, (name, body) in enumerate(LOOPS.items()):
            kernel = sitebench.build_bench(Path(d), f"w{i}", PRELUDE + body)
            compare(name, kernel, args.rounds)
        if args.no_corpus:
            return
        build = Path(d) / "corpus"
        subprocess.run(["make", "-s", "-j2", "-C", str(ROOT / "corpus" / "guests"), f"BUILD={build}",
                        f"CC={sys.executable} -m afterburn.cli cc"], check=True, capture_output=True)  # fmt: skip
        print(f"\ncorpus guests (annotated), median of {args.rounds} alternating runs")
        print(head)
        for guest in GUESTS:
            compare(guest, build / f"{guest}.elf", args.rounds)


if __name__ == "__main__":
    main()
