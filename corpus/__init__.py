"""The corpus: the guests written here (``guests/``) and scripts that fetch
real third-party objects (``fetch.py``)."""
from __future__ import annotations

from pathlib import Path

GUESTS_DIR = Path(__file__).resolve().parent / "guests"


def guest_names() -> tuple[str, ...]:
    """Every corpus guest, as guests/Makefile finds them: each directory
    other than lib/ that holds C or assembler sources."""
    return tuple(sorted(d.name for d in GUESTS_DIR.iterdir()
                        if d.is_dir() and d.name != "lib" and any(d.glob("*.[cS]"))))  # fmt: skip
