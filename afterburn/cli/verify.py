"""``afterburn verify``."""
from __future__ import annotations

from rich.table import Table

from .common import err, out, print_json


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check an annotated object or linked ELF")
    p.add_argument("file")
    p.add_argument("--against", metavar="INPUT", help="prove FILE (an annotated object) equivalent to INPUT")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=command)


def command(args) -> int:
    from ..elf import open_elf
    from ..verify import verify

    if args.against:
        return _verify_against(args)
    elf = open_elf(args.file)
    rep = verify(elf)
    if args.json:
        print_json(rep.to_json())
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
    from ..equiv import check
    from ..fsutil import read_input
    from ..verify import verify
    from ..elf import Elf

    new_raw, old_raw = read_input(args.file), read_input(args.against)
    rep = check(old_raw, new_raw, args.against, args.file)
    own = verify(Elf(args.file, raw=new_raw))  # the output must also be a clean annotated object by itself
    problems = rep.problems + [f"verify: {p.message} at {p.where}" for p in own.problems]
    if args.json:
        print_json({**rep.to_json(), "ok": not problems, "problems": problems, "file": args.file,
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
