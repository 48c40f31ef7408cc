"""Backends: the ways of running a guest on the emulated PC.

``BACKENDS`` maps a name to its class; each backend is one module (or one
folder) and is readable alone.  ``backends/pc`` is the machine they share.
"""
from __future__ import annotations

from .bare import BareBackend
from .base import Backend
from .xen import XenBackend

BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (BareBackend, XenBackend)}


def get_backend(name: str) -> Backend:
    from afterburn.errors import AfterburnError

    cls = BACKENDS.get(name)
    if cls is None:
        raise AfterburnError(f"unknown backend {name!r} (available: {', '.join(sorted(BACKENDS))})")
    return cls()
