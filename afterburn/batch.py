"""Annotating many objects: ``afterburn annotate FILES_OR_DIRS... --out-dir D``.

Directories are searched for ``*.o``, ``*.ko`` and ``*.mod``; each output
keeps its path relative to the directory given (a plain file lands directly
in ``D``).  Files are independent, so ``-j N`` runs them in N processes.
Every file gets one result row; a file that is not a valid object is a row
with its error, never a stopped batch.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import AfterburnError
from .fsutil import read_input, write_atomic

OBJECT_SUFFIXES = (".o", ".ko", ".mod")


@dataclass
class FileResult:
    input: str
    output: str
    ok: bool = True
    error: str = ""
    sites: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    bytes_added: int = 0
    relaxed: int = 0
    messages: list[str] = field(default_factory=list)
    already_annotated: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def collect(inputs: list[str], out_dir: str) -> list[tuple[str, str]]:
    """(input, output) pairs for files and directories."""
    pairs: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(OBJECT_SUFFIXES))
            if not found:
                raise AfterburnError(f"{item}: no .o, .ko or .mod files in this directory")
            pairs += [(str(f), str(Path(out_dir) / f.relative_to(p))) for f in found]
        elif p.exists():
            pairs.append((item, str(Path(out_dir) / p.name)))
        else:
            raise AfterburnError(f"cannot read {item}: No such file or directory")
    outs = [o for _, o in pairs]
    if len(set(outs)) != len(outs):
        dup = next(o for o in outs if outs.count(o) > 1)
        raise AfterburnError(f"two inputs would both be written to {dup}; give them separate runs")
    return pairs


def annotate_file(src: str, dst: str) -> FileResult:
    """Annotate one object into ``dst`` (atomically); errors become the row."""
    from .annotate_obj import annotate_object

    res = FileResult(src, dst)
    t = time.perf_counter()
    try:
        raw = read_input(src)
        r = annotate_object(raw, src)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dst, r.data)
    except AfterburnError as e:
        res.ok, res.error = False, str(e)
    except Exception as e:  # a bug: keep the batch going, say what happened
        res.ok, res.error = False, f"internal error: {type(e).__name__}: {e}"
    else:
        res.sites, res.by_kind = r.site_count, dict(sorted(r.sites.items()))
        res.skipped = [s.to_json() for s in r.skipped]
        res.bytes_added, res.relaxed, res.messages = r.bytes_added, r.relaxed, r.messages
        res.already_annotated = r.already_annotated
    res.seconds = time.perf_counter() - t
    return res


def run(pairs: list[tuple[str, str]], jobs: int, progress=None) -> list[FileResult]:
    """Annotate every pair; ``progress(result)`` is called as each finishes."""
    results: list[FileResult] = []
    if jobs <= 1 or len(pairs) <= 1:
        for src, dst in pairs:
            r = annotate_file(src, dst)
            results.append(r)
            if progress:
                progress(r)
        return results
    with ProcessPoolExecutor(max_workers=min(jobs, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(annotate_file, s, d) for s, d in pairs]
        for fut in as_completed(futures):
            r = fut.result()
            results.append(r)
            if progress:
                progress(r)
    order = {s: i for i, (s, _) in enumerate(pairs)}
    results.sort(key=lambda r: order[r.input])
    return results
