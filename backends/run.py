"""The one way to run a kernel: load, choose the backend, prepare (rewrite
when the backend needs it), build the machine, boot, run, observe.

``afterburn run``, ``afterburn diff``, ``make demo``, the benchmarks and the
tests all come through here, so a run means the same thing everywhere:

    result = run("kernel.elf", "xen", limits=Limits(max_insns=10**8))
    result.observation.serial, result.observation.ending

:func:`boot` stops before running, for callers that want to look at or
change the machine first.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from afterburn.errors import AfterburnError
from afterburn.image import Image

from . import get_backend, reference_backend
from .base import Backend
from .pc.loader import load_image
from .pc.machine import DEFAULT_RAM, Limits, Machine
from .pc.observation import Observation

MIN_MEMORY_MB = 4
MAX_MEMORY_MB = 3072  # guest RAM stays well below the hypervisor hole and the BIOS ROM at 4 GiB


@dataclass
class Run:
    observation: Observation
    machine: Machine
    backend: Backend


def boot(kernel: str | Path | Image, backend: str | Backend | None = None, *, memory_mb: int | None = None,
         cmdline: str | None = None, digests: Iterable[str] = (),
         on_serial: Callable[[int], None] | None = None) -> tuple[Machine, Backend]:  # fmt: skip
    """A machine with ``kernel`` loaded for ``backend``, ready to run.

    ``backend`` defaults to the one a rewritten image names, else the
    reference backend; an annotated image is rewritten here if the backend
    rewrites."""
    image = kernel if isinstance(kernel, Image) else load_image(kernel)
    if backend is None:
        backend = image.backend or reference_backend()
    be = get_backend(backend) if isinstance(backend, str) else backend
    image = be.prepare(image)
    ram = DEFAULT_RAM if memory_mb is None else _ram_bytes(memory_mb)
    machine = Machine(ram_size=ram, on_serial=on_serial)
    machine.load(image, cmdline)
    for spec in digests:
        machine.digest(spec)
    return machine, be


def run(kernel: str | Path | Image, backend: str | Backend | None = None, *, limits: Limits | None = None,
        **options) -> Run:  # fmt: skip
    """Boot ``kernel`` on ``backend`` (see :func:`boot` for ``options``) and run it."""
    machine, be = boot(kernel, backend, **options)
    obs = machine.run(be, limits)
    return Run(obs, machine, be)


def _ram_bytes(memory_mb: int) -> int:
    if not MIN_MEMORY_MB <= memory_mb <= MAX_MEMORY_MB:
        raise AfterburnError(f"--memory {memory_mb}: guest RAM must be {MIN_MEMORY_MB} to {MAX_MEMORY_MB} MiB")
    return memory_mb << 20
