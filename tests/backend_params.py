"""The backends the conformance tests run over: every registered one, and
every rewriting one.  A new backend registered in ``backends.BACKENDS`` gets
every test parametrised over these without naming it anywhere."""
from __future__ import annotations

from backends import BACKENDS, backend_names, reference_backend

REFERENCE = reference_backend()
ALL = backend_names()
OTHERS = [n for n in ALL if n != REFERENCE]
REWRITING = [n for n in ALL if BACKENDS[n].rewrites]
