"""``afterburn sites``."""
from __future__ import annotations

from rich.table import Table

from .common import err, out, print_json


def add_parser(sub) -> None:
    p = sub.add_parser("sites", help="list the site records of an object or linked ELF")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=command)


def command(args) -> int:
    from ..elf import open_elf
    from ..sitefmt import read_site_table

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
        print_json({"file": args.file, "format_version": table.version, "linked": not elf.is_relocatable,
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
