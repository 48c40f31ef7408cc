"""Object annotation on the whole Debian corpus: every i386 Linux module and
every GRUB i386-pc module.  For each: annotate, ``verify`` the output,
``verify --against`` the input, and check every site fits the xen patches.

    python benchmarks/bench_corpus.py [--jobs 2] [--limit N] [--json out.json]

Needs the corpus (``python -m corpus.fetch``).  Prints the totals the
closing notes quote: modules, sites, skipped sites by reason, bytes added,
relaxed branches, failures, and time per stage.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one(path: str) -> dict:
    from afterburn.annotate_obj import annotate_object
    from afterburn.elf import Elf
    from afterburn.equiv import check
    from afterburn.verify import verify
    from backends import get_backend
    from rewriter import check_fit

    out = {"file": path, "error": "", "sites": 0, "skipped": [], "bytes": 0, "text": 0, "relaxed": 0,
           "verify": True, "equiv": True, "fit_problems": 0, "t": [0.0, 0.0, 0.0, 0.0]}  # fmt: skip
    raw = Path(path).read_bytes()
    try:
        t = time.perf_counter()
        r = annotate_object(raw, path)
        out["t"][0] = time.perf_counter() - t
        out.update(sites=r.site_count, skipped=[s.reason.split(" (")[0][:70] for s in r.skipped],
                   bytes=r.bytes_added, relaxed=r.relaxed)  # fmt: skip
        elf = Elf(path + ".annotated", raw=r.data)
        out["text"] = sum(s.size for s in elf.exec_sections())
        t = time.perf_counter()
        out["verify"] = verify(elf).ok
        out["t"][1] = time.perf_counter() - t
        t = time.perf_counter()
        out["equiv"] = check(raw, r.data, path, path + ".annotated").ok
        out["t"][2] = time.perf_counter() - t
        t = time.perf_counter()
        if r.site_count:
            out["fit_problems"] = len(check_fit(elf, get_backend("xen"))[1])
        out["t"][3] = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - a benchmark reports, it does not stop
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def main() -> None:
    from corpus.fetch import ensure

    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first N Linux modules")
    ap.add_argument("--json", help="write every per-module row here")
    args = ap.parse_args()
    corpus = ensure()
    sets = {"linux": [str(p) for p in corpus.ko_files()], "grub": [str(p) for p in corpus.grub_mod_files()]}
    if args.limit:
        sets["linux"] = sets["linux"][: args.limit]
    rows_all = {}
    for name, files in sets.items():
        t0 = time.perf_counter()
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(one, files, chunksize=8))
        wall = time.perf_counter() - t0
        rows_all[name] = rows
        with_sites = [r for r in rows if r["sites"] or r["skipped"]]
        reasons = Counter(reason for r in rows for reason in r["skipped"])
        stage = [sum(r["t"][i] for r in rows) for i in range(4)]
        print(f"== {name}: {len(rows)} modules, {wall:.0f} s wall with {args.jobs} processes")
        print(f"   with sensitive instructions: {len(with_sites)}; sites {sum(r['sites'] for r in rows):,}, "
              f"skipped {sum(len(r['skipped']) for r in rows):,}, bytes added {sum(r['bytes'] for r in rows):,} "
              f"({100 * sum(r['bytes'] for r in with_sites) / max(1, sum(r['text'] for r in with_sites)):.2f}% of "
              f"their code), branches relaxed {sum(r['relaxed'] for r in rows):,}")  # fmt: skip
        print(f"   failures: annotate {sum(bool(r['error']) for r in rows)}, verify {sum(not r['verify'] for r in rows)}, "
              f"verify --against {sum(not r['equiv'] for r in rows)}, xen fit problems "
              f"{sum(r['fit_problems'] for r in rows)}")  # fmt: skip
        print(f"   CPU time: annotate {stage[0]:.1f} s, verify {stage[1]:.1f} s, equivalence {stage[2]:.1f} s, "
              f"fit {stage[3]:.1f} s")  # fmt: skip
        for reason, n in reasons.most_common(8):
            print(f"   skipped {n:5}: {reason}")
        for r in [r for r in rows if r["error"] or not r["verify"] or not r["equiv"]][:10]:
            print(f"   FAIL {r['file']}: {r['error'] or ('verify' if not r['verify'] else 'equivalence')}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows_all, indent=1))


if __name__ == "__main__":
    main()
