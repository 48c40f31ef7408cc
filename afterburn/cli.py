"""The ``afterburn`` command line.

Every command reports bad input as one line on stderr and exits with status
2; reports are rich tables on a terminal, or JSON with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import AfterburnError

EXIT_USAGE = 2
EXIT_INTERNAL = 3

def _console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        # Piped or captured: rich would assume 80 columns and squeeze tables.
        c = Console(stderr=stderr, highlight=False, soft_wrap=True, width=132)
    return c


out = _console()
err = _console(stderr=True)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise AfterburnError(f"{self.prog}: {message}")


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


# ---------------------------------------------------------------------------
# annotate


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


def cmd_annotate(args) -> int:
    from .fsutil import read_input, same_file

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
    from .annotate_obj import annotate_object
    from .fsutil import write_atomic

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
        _print_json(summary)
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

    from . import batch

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
        _print_json({"out_dir": args.out_dir, "files": [r.to_json() for r in results],
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
    from .annotate_asm import annotate_text
    from .fsutil import write_atomic

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
        _print_json(summary)
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


# ---------------------------------------------------------------------------
# sites


def cmd_sites(args) -> int:
    from .elf import open_elf
    from .sitefmt import read_site_table

    elf = open_elf(args.file)
    table = read_site_table(elf)
    rows = []
    for s in sorted(table.sites, key=lambda s: (s.section.index, s.offset)):
        rows.append({
            "address": s.address, "section": s.section.name, "offset": s.offset, "kind": s.kind.name,
            "length": s.length, "insn_len": s.insn_len, "pad": s.pad, "flags_live": s.flags_live,
            "symbol": elf.symbolize(s.section, s.offset),
        })  # fmt: skip
    excluded = [{"section": r.section.name, "start": r.start, "end": r.end,
                 "symbol": elf.symbolize(r.section, r.start)} for r in table.excluded]  # fmt: skip
    if args.json:
        _print_json({"file": args.file, "format_version": table.version, "linked": not elf.is_relocatable,
                     "sites": rows, "excluded": excluded})  # fmt: skip
        return 0
    if not table.annotated:
        err.print(f"{args.file}: not annotated (no site table)")
        return 0
    t = Table(title=f"{args.file}: {len(rows)} sites (site format {table.version})", title_justify="left")
    t.add_column("address" if not elf.is_relocatable else "offset", justify="right")
    t.add_column("kind")
    t.add_column("len", justify="right")
    t.add_column("insn", justify="right")
    t.add_column("pad", justify="right")
    t.add_column("flags")
    t.add_column("symbol")
    for r in rows:
        where = f"{r['address']:#010x}" if not elf.is_relocatable else f"{r['section']}+{r['offset']:#x}"
        t.add_row(where, r["kind"], str(r["length"]), str(r["insn_len"]), str(r["pad"]),
                  "live" if r["flags_live"] else "dead", r["symbol"])  # fmt: skip
    out.print(t)
    for x in excluded:
        out.print(f"excluded: {x['section']}+{x['start']:#x}..{x['end']:#x} ({x['symbol']})")
    return 0


# ---------------------------------------------------------------------------
# verify


def cmd_verify(args) -> int:
    from .elf import open_elf
    from .verify import verify

    if args.against:
        return _verify_against(args)
    elf = open_elf(args.file)
    rep = verify(elf)
    if args.json:
        _print_json(rep.to_json())
        return 0 if rep.ok else 1
    if not rep.annotated:
        err.print(f"{args.file}: not annotated (no site table)")
    if rep.problems:
        t = Table(title=f"{args.file}: {len(rep.problems)} problems", title_justify="left")
        for col in ("check", "where", "address", "problem"):
            t.add_column(col)
        for p in rep.problems:
            t.add_row(p.check, p.where, f"{p.section}+{p.offset:#x}" if elf.is_relocatable else f"{p.address:#x}",
                      p.message)  # fmt: skip
        out.print(t)
    status = "OK" if rep.ok else "FAILED"
    err.print(f"{args.file}: {status}: {rep.sites} sites, {rep.excluded} excluded regions, "
              f"{rep.instructions} instructions checked, {len(rep.problems)} problems")  # fmt: skip
    return 0 if rep.ok else 1


def _verify_against(args) -> int:
    from .equiv import check
    from .fsutil import read_input
    from .verify import verify
    from .elf import Elf

    new_raw, old_raw = read_input(args.file), read_input(args.against)
    rep = check(old_raw, new_raw, args.against, args.file)
    own = verify(Elf(args.file, raw=new_raw))  # the output must also be a clean annotated object by itself
    problems = rep.problems + [f"verify: {p.message} at {p.where}" for p in own.problems]
    if args.json:
        _print_json({**rep.to_json(), "ok": not problems, "problems": problems, "file": args.file,
                     "against": args.against})  # fmt: skip
        return 0 if not problems else 1
    for n in rep.notes:
        err.print(f"afterburn: note: {n}")
    if problems:
        t = Table(title=f"{args.file} is not equivalent to {args.against}: {len(problems)} problems",
                  title_justify="left")  # fmt: skip
        t.add_column("problem")
        for p in problems:
            t.add_row(p)
        out.print(t)
    status = "EQUIVALENT" if not problems else "NOT EQUIVALENT"
    err.print(f"{args.file}: {status} to {args.against}: {rep.instructions} instructions, {rep.sites} sites, "
              f"{rep.relaxed} relaxed branches, {rep.relocations} relocations, {rep.symbols} symbols, "
              f"{rep.fdes} FDEs checked")  # fmt: skip
    return 0 if not problems else 1


# ---------------------------------------------------------------------------
# run


def _print_run_summary(obs, path: str) -> None:
    st = obs.stats
    t = Table(title=f"{path} on {obs.backend}", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("ending", f"{obs.ending.describe()} (exit status {obs.ending.status})")
    t.add_row("instructions", f"{st.instructions:,}")
    t.add_row("virtual time", f"{st.virtual_ns / 1e6:.3f} ms ({st.idle_ns / 1e6:.3f} ms idle in hlt)")
    t.add_row("interrupts", f"{st.interrupts:,} delivered, {st.halts:,} hlt")
    if st.exceptions:
        t.add_row("exceptions", ", ".join(f"{k} {v}" for k, v in sorted(st.exceptions.items())))
    if st.exits:
        t.add_row("exits", ", ".join(f"{k} {v:,}" for k, v in sorted(st.exits.items())))
    if st.unknown_ports:
        t.add_row("unknown ports", ", ".join(f"{k} ×{v}" for k, v in sorted(st.unknown_ports.items())))
    if st.hypercalls:
        t.add_row("hypercalls", ", ".join(f"{k} {v:,}" for k, v in sorted(st.hypercalls.items())))
    rate = st.instructions / st.wall_s / 1e6 if st.wall_s else 0
    t.add_row("wall time", f"{st.wall_s:.3f} s ({rate:.1f} M instructions/s)")
    err.print(t)


def cmd_run(args) -> int:
    from backends import get_backend
    from backends.pc.loader import load_image
    from backends.pc.machine import Limits, Machine

    image = load_image(args.kernel)
    backend = get_backend(args.backend or image.notes.get("backend", "bare"))
    image = backend.prepare(image)
    stream = None if args.json else (lambda b: (sys.stdout.buffer.write(bytes([b])), sys.stdout.buffer.flush()))
    machine = Machine(ram_size=args.memory << 20, on_serial=stream)
    machine.load(image, args.cmdline)
    for spec in args.digest:
        machine.digest(spec)
    obs = machine.run(backend, Limits(max_insns=args.max_insns, timeout=args.timeout))
    if args.json:
        _print_json({"kernel": args.kernel, **obs.to_json()})
    else:
        _print_run_summary(obs, args.kernel)
    return obs.ending.status


# ---------------------------------------------------------------------------
# rewrite


def cmd_rewrite(args) -> int:
    from backends import get_backend
    from backends.pc.loader import load_image
    from rewriter import RewriteError, rewrite
    from rewriter.elfwrite import write_image

    from .fsutil import same_file

    backend = get_backend(args.backend)
    if not backend.rewrites:
        raise AfterburnError(f"rewrite: the {backend.name} backend runs images as they are; nothing to rewrite")
    if args.check:
        return _rewrite_check(args, backend)
    if not args.output:
        raise AfterburnError("rewrite: -o OUT is required (or --check to only test that every site fits)")
    image = load_image(args.kernel)
    if image.backend:
        raise AfterburnError(f"{args.kernel}: already rewritten for {image.backend}; rewrite the original")
    if same_file(args.kernel, args.output):
        raise AfterburnError(f"{args.kernel}: -o would overwrite the input")
    try:
        new = rewrite(image, backend)
    except RewriteError as e:
        if args.json:
            _print_json({"kernel": args.kernel, "backend": backend.name, "ok": False,
                         "unpatchable": [p.to_json() for p in e.problems]})  # fmt: skip
        else:
            _print_unpatchable(args.kernel, backend.name, e.problems)
            err.print(f"afterburn: error: {e}")
        return e.exit_status
    write_image(new, args.output)
    by_kind: dict[str, int] = {}
    for p in new.patched:
        by_kind[p.kind] = by_kind.get(p.kind, 0) + 1
    wedge_bytes = sum(s.memsz for s in new.hole_segments)
    summary = {"kernel": args.kernel, "output": args.output, "backend": backend.name, "ok": True,
               "sites": len(new.patched), "by_kind": dict(sorted(by_kind.items())),
               "unrecorded": [f"{a:#x}" for a in new.unrecorded], "wedge_bytes": wedge_bytes}  # fmt: skip
    if args.json:
        _print_json(summary)
        return 0
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items(), key=lambda kv: -kv[1]))
    err.print(f"{args.kernel}: {len(new.patched)} sites patched for {backend.name} ({kinds or 'none'}); "
              f"wedge {wedge_bytes:,} bytes -> {args.output}")  # fmt: skip
    if new.unrecorded:
        err.print(f"afterburn: warning: {len(new.unrecorded)} sensitive instruction(s) have no site record and "
                  f"stay native; the backend reports each one it reaches as an escape")  # fmt: skip
    return 0


def _print_unpatchable(path: str, backend: str, problems) -> None:
    t = Table(title=f"{path}: {len(problems)} site(s) cannot be patched for {backend}", title_justify="left")
    for col in ("address", "kind", "symbol", "reason"):
        t.add_column(col)
    for p in problems:
        t.add_row(f"{p.address:#010x}", p.kind, p.symbol, p.reason)
    out.print(t)


def _rewrite_check(args, backend) -> int:
    from rewriter import check_fit

    from .elf import open_elf

    ok, problems = check_fit(open_elf(args.kernel), backend)
    if args.json:
        _print_json({"file": args.kernel, "backend": backend.name, "fit": ok,
                     "unpatchable": [p.to_json() for p in problems]})  # fmt: skip
        return 1 if problems else 0
    if problems:
        _print_unpatchable(args.kernel, backend.name, problems)
    err.print(f"{args.kernel}: {ok} sites fit the {backend.name} patches, {len(problems)} do not")
    return 1 if problems else 0


# ---------------------------------------------------------------------------
# diff


def cmd_diff(args) -> int:
    from backends import BACKENDS
    from backends.pc.machine import Limits

    from .diff import render, run_backends

    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise AfterburnError(f"diff: unknown backend(s) {', '.join(unknown)} (have: {', '.join(BACKENDS)})")
    if len(names) < 2 or len(set(names)) != len(names):
        raise AfterburnError("diff: --backends needs two or more different backends")
    result = run_backends(args.kernel, names, Limits(max_insns=args.max_insns, timeout=args.timeout), args.cmdline)
    if args.json:
        _print_json(result.to_json())
    else:
        render(result, out)
    return 0 if result.agree else 1


# ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="afterburn", description="Pre-virtualization for x86 kernels.")
    p.add_argument("--version", action="version", version=f"afterburn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    a = sub.add_parser(
        "annotate", help="pad and record every sensitive instruction (assembler text, .o, .ko, GRUB .mod)",
        description="Annotate GNU as AT&T text (.s, or .S after cpp) or an ELF32 i386 relocatable object "
                    "(.o, .ko, .mod): pad every sensitive instruction and record it.  One input: -o OUT.  "
                    "Many objects or directories: --out-dir D [-j N].",
    )  # fmt: skip
    a.add_argument("inputs", nargs="+", metavar="INPUT", help="assembler file, object, or (with --out-dir) directory")
    a.add_argument("-o", "--output", help="output file ('-' for stdout, assembler only)")
    a.add_argument("--out-dir", help="batch mode: write each annotated object here")
    a.add_argument("-j", "--jobs", type=_positive_int, default=1, help="batch mode: parallel processes (1)")
    a.add_argument("--as-flag", action="append", default=[], metavar="FLAG",
                   help="extra flag for the checking assembler run (e.g. -I dir); repeatable")  # fmt: skip
    a.add_argument("--no-check", action="store_true",
                   help="do not assemble: every site is marked flags-live and nothing is cross-checked")  # fmt: skip
    a.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    a.set_defaults(func=cmd_annotate)

    s = sub.add_parser("sites", help="list the site records of an object or linked ELF")
    s.add_argument("file")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sites)

    v = sub.add_parser("verify", help="check an annotated object or linked ELF")
    v.add_argument("file")
    v.add_argument("--against", metavar="INPUT", help="prove FILE (an annotated object) equivalent to INPUT")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)

    r = sub.add_parser(
        "run", help="run a multiboot kernel on the emulated PC",
        description="Run a multiboot kernel.  The exit status is the value the guest wrote to isa-debug-exit "
                    "(port 0xf4, 0-255), or 248 escape (an unrewritten sensitive instruction reached the hypervisor), "
                    "249 killed by the hypervisor, 250 halted, 251 fault (triple fault), 252 timeout, "
                    "253 max-insns, 254 machine error.",
    )  # fmt: skip
    r.add_argument("kernel", help="multiboot v1 ELF kernel")
    r.add_argument("--backend", help="backend to run on (default: bare, or the one a rewritten image names)")
    r.add_argument("--max-insns", type=_positive_int, help="stop after this many guest instructions")
    r.add_argument("--timeout", type=float, default=60.0, help="stop after this many seconds of wall time (60)")
    r.add_argument("--memory", type=_positive_int, default=32, help="guest RAM in MiB (32)")
    r.add_argument("--cmdline", help="multiboot command line (default: the kernel path)")
    r.add_argument("--digest", action="append", default=[], metavar="SYMBOL|ADDR:LEN",
                   help="also digest this guest memory in the Observation (default: .data); repeatable")  # fmt: skip
    r.add_argument("--json", action="store_true", help="print the whole Observation as JSON instead")
    r.set_defaults(func=cmd_run)

    w = sub.add_parser(
        "rewrite", help="patch every site of an annotated kernel for a backend and add its wedge",
        description="Write a standalone ELF: the patched kernel, the backend's wedge in an added PT_LOAD segment "
                    "and a note naming the backend (afterburn run then needs no flags).  Exits 1 with the list "
                    "of sites that cannot be patched, writing nothing.",
    )  # fmt: skip
    w.add_argument("kernel", help="annotated multiboot ELF kernel (afterburn cc)")
    w.add_argument("--backend", required=True, help="backend to rewrite for (e.g. xen)")
    w.add_argument("-o", "--output", help="output ELF")
    w.add_argument("--check", action="store_true",
                   help="only check that every site fits (works on annotated objects and modules too)")
    w.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    w.set_defaults(func=cmd_rewrite)

    d = sub.add_parser(
        "diff", help="run a kernel on several backends and compare what a user could see",
        description="Run the kernel on each backend and compare the Observations (serial output, ending, port "
                    "writes, final virtual CPU state, memory digests; never timing).  Exits 0 if and only if "
                    "all agree.",
    )  # fmt: skip
    d.add_argument("kernel", help="annotated multiboot ELF kernel")
    d.add_argument("--backends", default="bare,xen", help="comma-separated, the first is the reference (bare,xen)")
    d.add_argument("--max-insns", type=_positive_int, default=200_000_000, help="per backend (200000000)")
    d.add_argument("--timeout", type=float, default=120.0, help="seconds of wall time per backend (120)")
    d.add_argument("--cmdline", help="multiboot command line (default: the kernel path)")
    d.add_argument("--json", action="store_true", help="print the comparison and every Observation as JSON")
    d.set_defaults(func=cmd_diff)

    sub.add_parser("cc", help="gcc drop-in that writes annotated objects (afterburn cc -m32 -c foo.c)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "cc":
            from .cc import main as cc_main

            return cc_main(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return args.func(args)
    except AfterburnError as e:
        msg = str(e).replace("\n", " ")
        print(f"afterburn: error: {msg}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("afterburn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug, not bad input: still one line, but say so
        if os.environ.get("AFTERBURN_DEBUG"):
            raise
        print(f"afterburn: internal error: {type(e).__name__}: {e} (set AFTERBURN_DEBUG=1 for a traceback)",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
