"""Backends: the ways of running a guest on the emulated PC.

``BACKENDS`` maps a name to its class; each backend is one module (or one
folder) and is readable alone.  ``backends/pc`` is the machine they share.
"""
from __future__ import annotations

from .bare import BareBackend
from .base import Backend
from .l4 import L4Backend
from .xen import XenBackend, XenRing3

BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (BareBackend, XenBackend, XenRing3, L4Backend)}


def reference_backend() -> str:
    """The backend every other one is compared with: the native one."""
    return next(name for name, cls in BACKENDS.items() if cls.reference)


def backend_names() -> list[str]:
    """Every registered backend, the reference first."""
    ref = reference_backend()
    return [ref] + [name for name in BACKENDS if name != ref]


def get_backend(name: str) -> Backend:
    from afterburn.errors import AfterburnError

    cls = BACKENDS.get(name)
    if cls is None:
        raise AfterburnError(f"unknown backend {name!r} (available: {', '.join(sorted(BACKENDS))})")
    return cls()
