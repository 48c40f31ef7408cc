"""The ``afterburn`` executable.

``afterburn cc`` runs once per compiler call of a build, so it must start
fast: it is dispatched here before the rest of the command line (and its
rich tables) is imported.  Every other command is ``afterburn.cli``'s.
"""
from __future__ import annotations

import sys


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["cc"]:
        from .cc import run

        return run(argv[1:])
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
