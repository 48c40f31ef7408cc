"""``make demo``: the main job on the built-in corpus guests (filled in as
the pipeline grows)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "corpus" / "guests"


def main() -> int:
    afterburn = [sys.executable, "-m", "afterburn.cli"]
    for elf in sorted((GUESTS / "build" / "annotated").glob("*.elf")):
        print(f"== {elf.name}: afterburn verify", flush=True)
        subprocess.run(afterburn + ["verify", str(elf)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
