"""What every command shares: the consoles, JSON output, one-line usage
errors, argument types."""
from __future__ import annotations

import argparse
import json
import os
import sys

from rich.console import Console

from ..errors import AfterburnError


def _console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        # Piped or captured: rich would assume 80 columns and squeeze tables.
        c = Console(stderr=stderr, highlight=False, soft_wrap=True, width=132)
    return c


out = _console()
err = _console(stderr=True)


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise AfterburnError(f"{self.prog}: {message}")


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value
