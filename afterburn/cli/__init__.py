"""The ``afterburn`` command line: one module per command.

Each command module has ``add_parser(sub)``, which declares its arguments,
and ``command(args)``, which does the work and returns the exit status.
Every command reports bad input as one line on stderr and exits with
status 2; reports are rich tables on a terminal, or JSON with ``--json``.
``afterburn cc`` bypasses argparse (its arguments are gcc's) and imports
none of the command modules: a build runs it once per source file.
"""
from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import AfterburnError

EXIT_USAGE = 2
EXIT_INTERNAL = 3


def build_parser() -> argparse.ArgumentParser:
    from . import annotate, diff, rewrite, run, sites, verify
    from .common import Parser

    p = Parser(prog="afterburn", description="Pre-virtualization for x86 kernels.")
    p.add_argument("--version", action="version", version=f"afterburn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (annotate, sites, verify, run, rewrite, diff):
        module.add_parser(sub)
    sub.add_parser("cc", help="gcc drop-in that writes annotated objects (afterburn cc -m32 -c foo.c)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "cc":
            from ..cc import main as cc_main

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
