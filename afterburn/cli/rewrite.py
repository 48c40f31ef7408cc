"""``afterburn rewrite``."""
from __future__ import annotations

from rich.table import Table

from ..errors import AfterburnError
from .common import err, out, print_json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "rewrite", help="patch every site of an annotated kernel for a backend and add its wedge",
        description="Write a standalone ELF: the patched kernel, the backend's wedge in an added PT_LOAD segment "
                    "and a note naming the backend (afterburn run then needs no flags).  Exits 1 with the list "
                    "of sites that cannot be patched, writing nothing.",
    )  # fmt: skip
    p.add_argument("kernel", help="annotated multiboot ELF kernel (afterburn cc)")
    from backends import BACKENDS

    rewriting = ", ".join(name for name, cls in BACKENDS.items() if cls.rewrites)
    p.add_argument("--backend", required=True, help=f"backend to rewrite for ({rewriting})")
    p.add_argument("-o", "--output", help="output ELF")
    p.add_argument("--check", action="store_true",
                   help="only check that every site fits (works on annotated objects and modules too)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=command)


def command(args) -> int:
    from backends import get_backend
    from backends.pc.loader import load_image
    from rewriter import RewriteError, rewrite
    from rewriter.elfwrite import write_image

    from ..fsutil import same_file

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
            print_json({"kernel": args.kernel, "backend": backend.name, "ok": False,
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
        print_json(summary)
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

    from ..elf import open_elf

    ok, problems = check_fit(open_elf(args.kernel), backend)
    if args.json:
        print_json({"file": args.kernel, "backend": backend.name, "fit": ok,
                     "unpatchable": [p.to_json() for p in problems]})  # fmt: skip
        return 1 if problems else 0
    if problems:
        _print_unpatchable(args.kernel, backend.name, problems)
    err.print(f"{args.kernel}: {ok} sites fit the {backend.name} patches, {len(problems)} do not")
    return 1 if problems else 0
