"""``afterburn annotate``."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.table import Table

from ..errors import AfterburnError
from .common import err, out, positive_int, print_json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "annotate", help="pad and record every sensitive instruction (assembler text, .o, .ko, GRUB .mod)",
        description="Annotate GNU as AT&T text (.s, or .S after cpp) or an ELF32 i386 relocatable object "
                    "(.o, .ko, .mod): pad every sensitive instruction and record it.  One input: -o OUT.  "
                    "Many objects or directories: --out-dir D [-j N].",
    )  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="assembler file, object, or (with --out-dir) directory")
    p.add_argument("-o", "--output", help="output file ('-' for stdout, assembler only)")
    p.add_argument("--out-dir", help="batch mode: write each annotated object here")
    p.add_argument("-j", "--jobs", type=positive_int, default=1, help="batch mode: parallel processes (1)")
    p.add_argument("--as-flag", action="append", default=[], metavar="FLAG",
                   help="extra flag for the checking assembler run (e.g. -I dir); repeatable")  # fmt: skip
    p.add_argument("--no-check", action="store_true",
                   help="do not assemble: every site is marked flags-live and nothing is cross-checked")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=command)


def _text_assembler(as_flags: list[str]):
    def assemble(text: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="afterburn-as-") as d:
            src, obj = Path(d, "in.s"), Path(d, "in.o")
            src.write_text(text)
            try:
                r = subprocess.run(["as", "--32", *as_flags, "-o", str(obj), str(src)], capture_output=True, text=True)
            except FileNotFoundError:
                raise AfterburnError("annotate: 'as' (GNU binutils) is not installed") from None
            if r.returncode != 0:
                lines = [ln.split(": ", 1)[-1] for ln in r.stderr.splitlines() if ln.strip()]
                first = next((ln for ln in lines if "rror" in ln), lines[0] if lines else "failed")
                raise AfterburnError(f"annotate: the input does not assemble ({first})")
            return obj.read_bytes()

    return assemble


def command(args) -> int:
    from ..fsutil import read_input, same_file

    if args.out_dir:
        if args.output:
            raise AfterburnError("annotate: give either -o (one input) or --out-dir (many), not both")
        return _annotate_batch(args)
    if len(args.inputs) != 1 or not args.output:
        raise AfterburnError("annotate: give -o OUT for one input, or --out-dir DIR for several files or directories")
    src = args.inputs[0]
    raw = read_input(src)
    if args.output != "-" and same_file(src, args.output):
        raise AfterburnError(f"{src}: -o would overwrite the input")
    if raw[:4] == b"\x7fELF":
        return _annotate_object(args, src, raw)
    return _annotate_text(args, src, raw)


def _annotate_object(args, src: str, raw: bytes) -> int:
    from ..annotate_obj import annotate_object
    from ..fsutil import write_atomic

    if args.output == "-":
        raise AfterburnError("annotate: an object cannot be written to stdout; give -o a file")
    r = annotate_object(raw, src)
    write_atomic(args.output, r.data)
    summary = {
        "input": src, "output": args.output, "already_annotated": r.already_annotated, "sites": r.site_count,
        "by_kind": dict(sorted(r.sites.items())), "skipped": [s.to_json() for s in r.skipped],
        "bytes_added": r.bytes_added, "relaxed_branches": r.relaxed, "messages": r.messages,
    }  # fmt: skip
    if args.json:
        print_json(summary)
        return 0
    for m in r.messages:
        err.print(f"afterburn: note: {src}: {m}")
    if r.already_annotated:
        err.print(f"{src}: already annotated; output is an unchanged copy")
        return 0
    if r.skipped:
        t = Table(title=f"{src}: {len(r.skipped)} site(s) skipped", title_justify="left")
        for col in ("where", "kind", "reason"):
            t.add_column(col)
        for sk in r.skipped:
            t.add_row(f"{sk.section}+{sk.offset:#x} ({sk.symbol})", sk.kind, sk.reason)
        err.print(t)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(r.sites.items(), key=lambda kv: -kv[1]))
    err.print(f"{src}: {r.site_count} sites ({kinds or 'none'}), {len(r.skipped)} skipped, {r.bytes_added} bytes "
              f"added, {r.relaxed} branches relaxed -> {args.output}")  # fmt: skip
    return 0


def _annotate_batch(args) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import batch

    pairs = batch.collect(args.inputs, args.out_dir)
    progress = Progress(TextColumn("annotating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=err,
                        disable=args.json or not err.is_terminal)  # fmt: skip
    with progress:
        task = progress.add_task("", total=len(pairs))
        results = batch.run(pairs, args.jobs,
                            lambda r: progress.update(task, advance=1, description=Path(r.input).name))  # fmt: skip
    failed = [r for r in results if not r.ok]
    if args.json:
        print_json({"out_dir": args.out_dir, "files": [r.to_json() for r in results],
                     "totals": _batch_totals(results)})  # fmt: skip
        return 2 if failed else 0
    t = Table(title=f"annotated {len(results) - len(failed)} of {len(results)} files into {args.out_dir}",
              title_justify="left")  # fmt: skip
    for col in ("file", "sites", "skipped", "bytes added", "time", "notes"):
        t.add_column(col, justify="right" if col in ("sites", "bytes added", "time") else "left")
    shown = [r for r in results if r.sites or r.skipped or not r.ok or r.messages] if len(results) > 40 else results
    for r in shown:
        reasons: dict[str, int] = {}
        for sk in r.skipped:
            reasons[sk["reason"]] = reasons.get(sk["reason"], 0) + 1
        skipped = "; ".join(f"{n}: {why}" for why, n in reasons.items()) or "-"
        notes = r.error if not r.ok else "; ".join(r.messages)
        t.add_row(os.path.relpath(r.output, args.out_dir), str(r.sites), skipped, str(r.bytes_added),
                  f"{r.seconds:.2f} s", f"[red]{notes}[/red]" if not r.ok else notes)  # fmt: skip
    out.print(t)
    tot = _batch_totals(results)
    if len(shown) < len(results):
        out.print(f"({len(results) - len(shown)} files with no sensitive instructions not listed)")
    err.print(f"{tot['files']} files: {tot['sites']} sites, {tot['skipped']} skipped, {tot['bytes_added']} bytes "
              f"added, {tot['failed']} failed, {tot['seconds']:.1f} s of work")  # fmt: skip
    return 2 if failed else 0


def _batch_totals(results) -> dict:
    return {"files": len(results), "failed": sum(not r.ok for r in results), "sites": sum(r.sites for r in results),
            "skipped": sum(len(r.skipped) for r in results), "bytes_added": sum(r.bytes_added for r in results),
            "seconds": sum(r.seconds for r in results)}  # fmt: skip


def _annotate_text(args, src: str, raw: bytes) -> int:
    from ..annotate_asm import annotate_text
    from ..fsutil import write_atomic

    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise AfterburnError(f"{src}: not assembler text (not valid UTF-8)") from None
    if "\0" in text:
        raise AfterburnError(f"{src}: not assembler text (contains NUL bytes)")
    if args.output == "-" and args.json:
        raise AfterburnError("annotate: --json and -o - both write to stdout; give -o a file")
    assemble = None if args.no_check else _text_assembler(args.as_flag)
    res = annotate_text(text, name=src, assemble=assemble)
    if args.output == "-":
        sys.stdout.write(res.text)
    else:
        write_atomic(args.output, res.text)
    summary = {
        "input": src,
        "output": args.output,
        "already_annotated": res.already_annotated,
        "sites": len(res.sites),
        "by_kind": res.by_kind(),
        "flags_live": sum(s.flags_live for s in res.sites),
        "pad_bytes": res.pad_bytes,
        "excluded": [{"first_line": a, "last_line": b, "why": w} for a, b, w in res.excluded],
        "warnings": res.warnings,
    }
    if args.json:
        print_json(summary)
        return 0
    for w in res.warnings:
        err.print(f"afterburn: warning: {w}")
    if res.already_annotated:
        err.print(f"{src}: already annotated; output is an unchanged copy")
    else:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(res.by_kind().items(), key=lambda kv: -kv[1]))
        err.print(f"{src}: {len(res.sites)} sites ({kinds or 'none'}), {len(res.excluded)} excluded regions, "
                  f"{res.pad_bytes} pad bytes -> {args.output}")  # fmt: skip
    return 0
