"""Cross-check the project's decoder against objdump on whole corpora.

Every decoder in Afterburn (the verifier's sweep, the object annotator's code
map, the equivalence proof, the cc path's cross-check) takes instruction
lengths from :func:`afterburn.decode.lite_run`.  A length the CPU disagrees
with is silent corruption: the sweep reads the next bytes as an instruction
that is not there (capstone 5.0.9 reads ``ud1``'s ModRM byte ``cc`` as an
``int3``).  This script disassembles every executable section with GNU
objdump, an independent decoder, and at every instruction objdump reports
compares its length with ours, restarting wherever objdump restarts.  It
prints each class of disagreement (opcode, objdump's reading, both lengths)
with a count and a first example, and exits 1 if there is any.

    python -m corpus.decoder_check [FILES_OR_DIRS...] [-j N] [--json]

Without arguments it checks the Debian corpus (every ``.ko`` and GRUB
``.mod``, see :mod:`corpus.fetch`).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from afterburn import decode
from afterburn.elf import Elf
from afterburn.errors import AfterburnError

_LINE = re.compile(r"^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(.*)$")
_SECTION = re.compile(r"^Disassembly of section (\S+):$")
_PREFIXES = {0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67}


@dataclass
class FileResult:
    path: str
    instructions: int = 0
    # class -> (count, example)
    classes: dict[str, list] = field(default_factory=dict)
    # Bytes objdump prints as ".byte"/"(bad)": it would not decode them (an
    # instruction running across a symbol, or no instruction at all), and
    # objdump's "finit" for fwait + fninit.  Not lengths objdump vouches
    # for, so listed apart.
    declined: dict[str, list] = field(default_factory=dict)
    error: str | None = None


def _class(raw: bytes, text: str, ours: int | None) -> str:
    i = 0
    while i < len(raw) and raw[i] in _PREFIXES:
        i += 1
    op = raw[i : i + (2 if raw[i : i + 1] == b"\x0f" else 1)]
    mnemonic = text.split()[0] if text.split() else "?"
    return f"{op.hex()} {mnemonic}: objdump {len(raw)} bytes, afterburn {'undecodable' if ours is None else ours}"


def objdump_instructions(path: str) -> dict[str, list[tuple[int, bytes, str]]]:
    """Per section: (address, bytes, text) for every instruction objdump prints."""
    r = subprocess.run(["objdump", "-d", "-w", "-z", "--insn-width=16", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise AfterburnError(f"objdump failed on {path}: {r.stderr.strip().splitlines()[-1:]}")
    out: dict[str, list[tuple[int, bytes, str]]] = {}
    cur: list | None = None
    for line in r.stdout.splitlines():
        m = _SECTION.match(line)
        if m:
            cur = out.setdefault(m.group(1), [])
            continue
        m = _LINE.match(line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), bytes.fromhex(m.group(2).replace(" ", "")), m.group(3).strip()))
    return out


def check_file(path: str) -> FileResult:
    res = FileResult(path)
    try:
        elf = Elf(path)
        listing = objdump_instructions(path)
    except (AfterburnError, OSError) as e:
        res.error = str(e)
        return res
    for sec in elf.exec_sections():
        insns = listing.get(sec.name, [])
        base = 0 if elf.is_relocatable else sec.addr
        data = sec.data
        i = 0
        while i < len(insns):
            # A run: instructions objdump decoded back to back.
            j = i + 1
            while j < len(insns) and insns[j][0] == insns[j - 1][0] + len(insns[j - 1][1]):
                j += 1
            start, end = insns[i][0] - base, insns[j - 1][0] - base + len(insns[j - 1][1])
            ours = {a: n for a, n, _, _ in decode.lite_run(data, start, end, elf.bits)}
            k = i
            while k < j:
                addr, raw, text = insns[k]
                off = addr - base
                res.instructions += 1
                n = ours.get(off)
                if n != len(raw):
                    key = _class(raw, text, n)
                    # objdump shows "fwait; fninit" as one "finit": the CPU
                    # executes two instructions (FWAIT is no prefix), as we read it.
                    fwait = raw[:1] == b"\x9b" and n == 1 and ours.get(off + 1) == len(raw) - 1
                    table = res.declined if text.startswith((".byte", "(bad)")) or fwait else res.classes
                    entry = table.setdefault(key, [0, f"{path} {sec.name}+{off:#x}: {raw.hex()} {text}"])
                    entry[0] += 1
                    # Resynchronise at objdump's next instruction.
                    ours.update({a: s for a, s, _, _ in decode.lite_run(data, off + len(raw), end, elf.bits)})
                k += 1
            i = j
    return res


def _files(args: list[str]) -> list[str]:
    if not args:
        from corpus import fetch

        corpus = fetch.load()
        if corpus is None:
            raise AfterburnError("the Debian corpus is not in the cache (python -m corpus.fetch)")
        return [str(p) for p in corpus.ko_files() + corpus.grub_mod_files()]
    out: list[str] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            out += sorted(str(q) for q in p.rglob("*") if q.suffix in (".o", ".ko", ".mod") and q.is_file())
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m corpus.decoder_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="ELF files or directories (default: the Debian corpus)")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        files = _files(args.files)
    except AfterburnError as e:
        print(f"decoder_check: error: {e}", file=sys.stderr)
        return 2
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(check_file, files, chunksize=16))
    total: Counter[str] = Counter()
    declined: Counter[str] = Counter()
    example: dict[str, str] = {}
    for r in results:
        for key, (count, ex) in r.classes.items():
            total[key] += count
            example.setdefault(key, ex)
        for key, (count, ex) in r.declined.items():
            declined[key] += count
            example.setdefault(key, ex)
    errors = [r for r in results if r.error]
    summary = {"files": len(results), "instructions": sum(r.instructions for r in results),
               "disagreements": sum(total.values()),
               "classes": [{"class": k, "count": n, "example": example[k]} for k, n in total.most_common()],
               "objdump_declined": [{"class": k, "count": n, "example": example[k]} for k, n in declined.most_common()],
               "errors": [f"{r.path}: {r.error}" for r in errors]}  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['files']} files, {summary['instructions']} instructions compared with objdump, "
              f"{summary['disagreements']} disagreements in {len(total)} classes")  # fmt: skip
        for k, n in total.most_common():
            print(f"  {n:8d}  {k}\n            e.g. {example[k]}")
        if declined:
            print(f"{sum(declined.values())} places objdump did not decode (.byte, (bad)) or merged (fwait):")
            for k, n in declined.most_common():
                print(f"  {n:8d}  {k}\n            e.g. {example[k]}")
        for e in summary["errors"]:
            print(f"  error: {e}")
    return 1 if total or errors else 0


if __name__ == "__main__":
    sys.exit(main())
