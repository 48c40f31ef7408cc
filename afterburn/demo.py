"""``make demo``: the main job on the built-in corpus guests.

For each corpus guest, the ``afterburn cc`` build is checked with ``afterburn
verify``, then ``afterburn diff`` runs it on every backend (the native one is
the reference; the others are rewritten at load time) and compares what a user
could see.  One table shows every run; any divergence is shown in detail.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from corpus import guest_names

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "corpus" / "guests" / "build"
GUESTS = guest_names()


def main() -> int:
    from backends import backend_names, reference_backend
    from backends.pc.machine import Limits

    from .diff import format_counts, short_result, render, run_backends
    from .elf import open_elf
    from .verify import verify

    console = Console(width=max(Console().width, 132))
    ref = reference_backend()
    table = Table(title=f"Afterburn corpus: annotated guests, every backend against {ref}", title_justify="left")
    for col in ("guest", "sites", "verify", "backend", "result", "last line", "agrees", "instructions", "wall",
                "exits"):  # fmt: skip
        table.add_column(col, justify="right" if col in ("sites", "instructions", "wall") else "left",
                         no_wrap=col != "exits")  # fmt: skip
    failures, diverged = 0, []
    for guest in GUESTS:
        kernel = BUILD / "annotated" / f"{guest}.elf"
        if not kernel.exists():
            console.print(f"[red]{kernel} is missing; run `make guests` first[/red]")
            return 1
        rep = verify(open_elf(kernel))
        result = run_backends(str(kernel), backend_names(), Limits(max_insns=200_000_000, timeout=300))
        for i, run in enumerate(result.runs):
            obs = run.observation
            last = obs.serial.decode(errors="replace").rstrip("\n").rsplit("\n", 1)[-1]
            ok = obs.ending.reason == "exit" and obs.ending.code == 0 and last == f"PASS {guest}"
            agrees = "reference" if i == 0 else "[green]yes[/green]" if run.divergence is None else "[red]NO[/red]"
            failures += not ok or not rep.ok or run.divergence is not None
            table.add_row(guest if i == 0 else "", str(rep.sites) if i == 0 else "",
                          ("[green]ok[/green]" if rep.ok else f"[red]{len(rep.problems)}[/red]") if i == 0 else "",
                          run.backend, short_result(obs),
                          f"[green]{last}[/green]" if ok else f"[red]{last}[/red]", agrees,
                          f"{obs.stats.instructions:,}", f"{obs.stats.wall_s:.2f} s",
                          format_counts(obs.stats.exits, limit=3))  # fmt: skip
        table.add_section()
        if not result.agree:
            diverged.append(result)
    console.print(table)
    for result in diverged:
        render(result, console)
    console.print(f"[green]every guest passed and every backend agreed with {ref}[/green]" if not failures
                  else f"[red]{failures} problem(s)[/red]")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
