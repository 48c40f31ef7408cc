"""The wedge: Afterburn's in-guest monitor, built from C and GNU asm.

Why C and not keystone: the frontend is the virtual CPU (descriptor
tables, interrupt frames, iret with redirection, ring compression), and
reviewing that as C is feasible where as hand-written assembly it would not
be; only the register-exact entry stubs are assembly.  It is built with the
same gcc the project already requires for ``afterburn cc``, once per source
version (cached by a hash of sources, generated headers and compiler), and
linked at the fixed hypervisor-hole address, so nothing needs relocating at
load time.

:func:`build` returns a :class:`WedgeImage`: the loadable bytes, the entry
points the rewriter patches sites to call, and the address of the vCPU.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from afterburn.elf import PT_LOAD, Elf
from afterburn.errors import AfterburnError

from .layout import WEDGE_BASE, WEDGE_MAX, WedgeConfig, c_header

SRC = Path(__file__).resolve().parent

# Site entry points: the index of each is its slot in vcpu.counters (entry.S
# passes the same index to its ENTRY and FAST macros).
ENTRY_POINTS = (
    "w_pending", "w_pushf", "w_popf", "w_io", "w_movcr", "w_sreg", "w_sreg_m", "w_pushseg", "w_popseg", "w_dtr",
    "w_sys", "w_sys_m", "w_lar", "w_lar_m", "w_arpl", "w_arpl_m", "w_misc", "w_invlpg", "w_iret", "w_lret",
    "w_far", "w_far_m", "w_lxs", "w_int", "w_int3", "w_into", "w_pushf16", "w_popf16",
)  # fmt: skip

# MEMCALL entries with a *_seg twin (an instruction with a segment override).
SEG_ENTRY_POINTS = ("w_sreg_m", "w_dtr", "w_sys_m", "w_lar_m", "w_arpl_m", "w_invlpg", "w_far_m", "w_lxs")

CFLAGS = ["-m32", "-march=i686", "-O2", "-ffreestanding", "-fno-pic", "-fno-pie", "-fno-stack-protector",
          "-fno-asynchronous-unwind-tables", "-fno-builtin", "-fno-strict-aliasing", "-mno-sse", "-mno-mmx",
          "-mno-80387", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]  # fmt: skip

LINK_SCRIPT = f"""ENTRY(wedge_start)
SECTIONS {{
  . = 0x{WEDGE_BASE:08x};
  .text : {{ *(.text .text.*) }}
  .rodata : {{ *(.rodata .rodata.*) }}
  . = ALIGN(0x1000);
  .data : {{ *(.data .data.*) }}
  .bss : {{ *(.bss .bss.*) *(COMMON) }}
  /DISCARD/ : {{ *(.note .note.*) *(.comment) *(.eh_frame) }}
}}
"""


@dataclass
class WedgeImage:
    backend: str
    path: Path
    segments: list[tuple[int, bytes, int]]  # (address, data, memsz)
    symbols: dict[str, int]
    entry: int
    end: int

    def sym(self, name: str) -> int:
        try:
            return self.symbols[name]
        except KeyError:
            raise AfterburnError(f"wedge for {self.backend} has no symbol {name}") from None

    @property
    def vcpu(self) -> int:
        return self.sym("vcpu")


def _sources(layer: Path) -> list[Path]:
    return sorted((SRC / "src").glob("*.[cS]")) + sorted(layer.glob("*.[cS]"))


def _cache_root() -> Path:
    root = os.environ.get("AFTERBURN_CACHE")
    if root:
        return Path(root) / "wedge"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "afterburn" / "wedge"


def _gcc() -> str:
    return os.environ.get("AFTERBURN_WEDGE_CC", "gcc")


_BUILT: dict[tuple, WedgeImage] = {}


def build(layer: str | Path, cfg: WedgeConfig, headers: dict[str, str] | None = None) -> WedgeImage:
    """The wedge for a backend layer, built if needed, once per process: the
    frontend, the layer's ``be_*`` primitives (and any entry stubs that
    replace the weak defaults of ``src/bounce.S``), ``wedge_abi.h`` generated
    for ``cfg``, and the backend's own generated ``headers`` (name -> text).
    ``layer`` is a directory next to src/, by name, or any directory."""
    layer = layer if isinstance(layer, Path) else SRC / layer
    backend = layer.name
    headers = {"wedge_abi.h": c_header(cfg), **(headers or {})}
    key = (str(layer), cfg, tuple(sorted(headers.items())))
    if key in _BUILT:
        return _BUILT[key]
    if not layer.is_dir():
        raise AfterburnError(f"no wedge layer for backend {backend!r}")
    sources = _sources(layer)
    h = hashlib.sha256()
    for p in sources + sorted((SRC / "src").glob("*.h")) + sorted(layer.glob("*.h")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    for name, text in sorted(headers.items()):
        h.update(name.encode() + b"\0" + text.encode())
    h.update(" ".join(CFLAGS).encode() + LINK_SCRIPT.encode())
    try:
        h.update(subprocess.run([_gcc(), "--version"], capture_output=True, check=True).stdout)
    except (OSError, subprocess.CalledProcessError):
        raise AfterburnError(f"cannot run {_gcc()} to build the wedge") from None
    out_dir = _cache_root() / f"{backend}-ring{cfg.ring}-{h.hexdigest()[:16]}"
    elf_path = out_dir / f"wedge-{backend}.elf"
    if not elf_path.exists():
        _compile(layer, headers, sources, out_dir, elf_path)
    _BUILT[key] = _load(backend, elf_path)
    return _BUILT[key]


def _compile(layer: Path, headers: dict[str, str], sources: list[Path], out_dir: Path, elf_path: Path) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name, text in headers.items():
            (tmp / name).write_text(text)
        (tmp / "wedge.ld").write_text(LINK_SCRIPT)
        objs = []
        for src in sources:
            obj = tmp / (src.parent.name + "-" + src.name + ".o")
            r = subprocess.run([_gcc(), *CFLAGS, f"-I{tmp}", f"-I{SRC / 'src'}", f"-I{layer}", "-c", str(src),
                                "-o", str(obj)],
                               capture_output=True, text=True)  # fmt: skip
            if r.returncode != 0:
                lines = r.stderr.strip().splitlines()
                first = next((ln for ln in lines if "error" in ln), lines[0] if lines else str(src))
                raise AfterburnError(f"building the wedge failed: {first}")
            objs.append(str(obj))
        out = tmp / elf_path.name
        r = subprocess.run(["ld", "-m", "elf_i386", "-T", str(tmp / "wedge.ld"), "-o", str(out), *objs],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            raise AfterburnError(f"linking the wedge failed: {r.stderr.strip()}")
        try:
            os.replace(tmp, out_dir)  # atomic publish; a concurrent builder may have won
        except OSError:
            if not elf_path.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load(backend: str, path: Path) -> WedgeImage:
    elf = Elf(path)
    segs = [(ph.vaddr, elf.segment_data(ph), ph.memsz) for ph in elf.program_headers if ph.type == PT_LOAD and ph.memsz]
    symbols = {s.name: s.value for s in elf.symbols if s.name}
    end = max(a + m for a, _, m in segs)
    if end - WEDGE_BASE > WEDGE_MAX:
        raise AfterburnError(f"the {backend} wedge is {end - WEDGE_BASE} bytes, more than {WEDGE_MAX}")
    missing = [e for e in (*ENTRY_POINTS, *(f"{e}_seg" for e in SEG_ENTRY_POINTS)) if e not in symbols]
    if missing:
        raise AfterburnError(f"the {backend} wedge lacks entry points {missing}")
    return WedgeImage(backend, path, segs, symbols, elf.entry, end)
