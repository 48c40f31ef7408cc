"""bare vs xen, side by side in one run: what pre-virtualization costs per
kind of site, and on the corpus guests.

Each workload is one annotated kernel; bare runs it natively at CPL 0, xen
runs it rewritten at CPL 1 through the wedge.  Runs alternate (bare, xen,
bare, xen, ...) and the medians are compared, because this machine is noisy:
quote the ratios, not the absolute times.  Instruction counts are exact.

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

N = 200_000
LOOPS = {
    "compute, no sites": f"    movl ${N * 10}, %ecx\n1:  addl $3, %eax\n    decl %ecx\n    jnz 1b\n    EXIT 0\n",
    "cli; sti (inline)": f"    movl ${N}, %ecx\n1:  cli\n    sti\n    decl %ecx\n    jnz 1b\n    EXIT 0\n",
    "pushf; cli; popf (wedge)": f"    movl ${N}, %ecx\n1:  pushfl\n    cli\n    popfl\n    decl %ecx\n    jnz 1b\n"
                                "    EXIT 0\n",
    "mov %cr0 (wedge)": f"    movl ${N}, %ecx\n1:  movl %cr0, %eax\n    decl %ecx\n    jnz 1b\n    EXIT 0\n",
    "inb $0x61 (hypercall)": f"    movl ${N // 10}, %ecx\n1:  inb $0x61, %al\n    decl %ecx\n    jnz 1b\n    EXIT 0\n",
}
GUESTS = ("hello", "timer", "paging", "ring3", "portio", "kinds")


def run(kernel: Path, backend: str):
    """One run; the time is the machine's own (load-time rewriting and set-up
    are not part of it)."""
    obs = sitebench.run(kernel, backend, digest_low=False, max_insns=1_000_000_000)
    if obs.ending.reason != "exit":
        raise SystemExit(f"{kernel.name} on {backend}: {obs.ending.describe()}")
    return obs, obs.stats.wall_s


def compare(name: str, kernel: Path, rounds: int) -> None:
    walls: dict[str, list[float]] = {"bare": [], "xen": []}
    obs = {}
    for _ in range(rounds):
        for backend in walls:
            obs[backend], wall = run(kernel, backend)
            walls[backend].append(wall)
    b, x = statistics.median(walls["bare"]), statistics.median(walls["xen"])
    ob, ox = obs["bare"].stats, obs["xen"].stats
    hyper = sum(ox.hypercalls.values())
    print(f"{name:26} {ob.instructions:>12,} {ox.instructions:>12,} {ox.instructions / ob.instructions:6.2f}x "
          f"{b:8.3f} {x:8.3f} {x / b:6.2f}x {hyper:>9,}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-corpus", action="store_true")
    args = ap.parse_args()
    head = (f"{'workload':26} {'insns bare':>12} {'insns xen':>12} {'ratio':>7} {'bare s':>8} {'xen s':>8} "
            f"{'ratio':>7} {'hypercalls':>9}")  # fmt: skip
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
