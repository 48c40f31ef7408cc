"""``make demo``: the main job on the built-in corpus guests.

For each corpus guest, the ``afterburn cc`` build is checked with ``afterburn
verify``, then run on every backend.  One table shows the result of each run.
"""
from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "corpus" / "guests" / "build"
GUESTS = ("hello", "timer", "paging", "ring3", "portio", "kinds")


def main() -> int:
    from backends import BACKENDS, get_backend
    from backends.pc.loader import load_image
    from backends.pc.machine import Limits, Machine

    from .elf import open_elf
    from .verify import verify

    console = Console()
    table = Table(title="Afterburn corpus: annotated guests on every backend", title_justify="left")
    for col in ("guest", "sites", "verify", "backend", "result", "last line", "instructions", "wall"):
        table.add_column(col, justify="right" if col in ("sites", "instructions", "wall") else "left")
    failures = 0
    for guest in GUESTS:
        kernel = BUILD / "annotated" / f"{guest}.elf"
        if not kernel.exists():
            console.print(f"[red]{kernel} is missing; run `make guests` first[/red]")
            return 1
        rep = verify(open_elf(kernel))
        for name in BACKENDS:
            machine = Machine()
            backend = get_backend(name)
            machine.load(backend.prepare(load_image(kernel)))
            obs = machine.run(backend, Limits(max_insns=100_000_000, timeout=120))
            last = obs.serial.decode(errors="replace").rstrip("\n").rsplit("\n", 1)[-1]
            ok = obs.ending.reason == "exit" and obs.ending.code == 0 and last == f"PASS {guest}"
            failures += not ok or not rep.ok
            table.add_row(guest, str(rep.sites), "[green]ok[/green]" if rep.ok else f"[red]{len(rep.problems)}[/red]",
                          name, obs.ending.describe(), f"[green]{last}[/green]" if ok else f"[red]{last}[/red]",
                          f"{obs.stats.instructions:,}", f"{obs.stats.wall_s:.2f} s")  # fmt: skip
    console.print(table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
