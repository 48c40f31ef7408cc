"""Cost of annotation: building the corpus with ``afterburn cc`` vs gcc, and
what annotation adds to the images.  Both builds alternate in one run
(the machine is noisy); the ratio is what to quote.

    python benchmarks/bench_annotate.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from afterburn.elf import Elf  # noqa: E402
from afterburn.sitefmt import read_site_table  # noqa: E402


def build(out: Path, cc: str | None) -> float:
    shutil.rmtree(out, ignore_errors=True)
    args = ["make", "-s", "-j2", "-C", str(ROOT / "corpus" / "guests"), f"BUILD={out}"]
    if cc:
        args.append(f"CC={cc}")
    t = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t


def text_size(elf: Path) -> int:
    e = Elf(elf)
    return sum(s.size for s in e.exec_sections())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cc = f"{sys.executable} -m afterburn.cli cc"
    with tempfile.TemporaryDirectory() as d:
        plain_t, ann_t = [], []
        for _ in range(args.rounds):
            plain_t.append(build(Path(d) / "plain", None))
            ann_t.append(build(Path(d) / "ann", cc))
        p, a = statistics.median(plain_t), statistics.median(ann_t)
        print(f"corpus build (6 guests, -j2), median of {args.rounds}: gcc {p:.2f} s, afterburn cc {a:.2f} s, "
              f"ratio {a / p:.2f}x")
        print(f"{'guest':8} {'sites':>6} {'text plain':>11} {'text annotated':>15} {'growth':>7}")
        total_sites = 0
        for elf in sorted((Path(d) / "ann").glob("*.elf")):
            sites = len(read_site_table(Elf(elf)).sites)
            total_sites += sites
            tp, ta = text_size(Path(d) / "plain" / elf.name), text_size(elf)
            print(f"{elf.stem:8} {sites:6} {tp:11} {ta:15} {100 * (ta - tp) / tp:6.1f}%")
        print(f"total sites: {total_sites}")


if __name__ == "__main__":
    main()
