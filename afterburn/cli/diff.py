"""``afterburn diff``."""
from __future__ import annotations

from ..errors import AfterburnError
from .common import out, positive_int, print_json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "diff", help="run a kernel on several backends and compare what a user could see",
        description="Run the kernel on each backend and compare the Observations (serial output, ending, port "
                    "writes, final virtual CPU state, memory digests; never timing).  Exits 0 if and only if "
                    "all agree.",
    )  # fmt: skip
    p.add_argument("kernel", help="annotated multiboot ELF kernel")
    p.add_argument("--backends", help="comma-separated, the first is the reference (default: every backend, the "
                                      "native reference first)")
    p.add_argument("--max-insns", type=positive_int, default=200_000_000, help="per backend (200000000)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds of wall time per backend (120)")
    p.add_argument("--cmdline", help="multiboot command line (default: the kernel path)")
    p.add_argument("--json", action="store_true", help="print the comparison and every Observation as JSON")
    p.set_defaults(func=command)


def command(args) -> int:
    from backends import BACKENDS, backend_names
    from backends.pc.machine import Limits

    from ..diff import render, run_backends

    names = [n.strip() for n in args.backends.split(",") if n.strip()] if args.backends else backend_names()
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise AfterburnError(f"diff: unknown backend(s) {', '.join(unknown)} (have: {', '.join(BACKENDS)})")
    if len(names) < 2 or len(set(names)) != len(names):
        raise AfterburnError("diff: --backends needs two or more different backends")
    result = run_backends(args.kernel, names, Limits(max_insns=args.max_insns, timeout=args.timeout), args.cmdline)
    if args.json:
        print_json(result.to_json())
    else:
        render(result, out)
    return 0 if result.agree else 1
