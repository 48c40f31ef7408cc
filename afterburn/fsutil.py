"""Atomic output: a reader never sees a half-written file, and a failure
never leaves one behind."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import AfterburnError


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_atomic(path: str | os.PathLike, data: bytes | str, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory
    and an atomic rename.  ``mode`` defaults to the existing file's mode."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if isinstance(data, str):
        data = data.encode()
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
    import tempfile  # (only here: afterburn cc imports this module for every compile)

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise AfterburnError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise AfterburnError(f"cannot write {path}: {e.strerror}") from None
        raise


def read_input(path: str | os.PathLike) -> bytes:
    """Read an input file, turning OS errors into one-line user errors."""
    try:
        return Path(path).read_bytes()
    except IsADirectoryError:
        raise AfterburnError(f"{path}: is a directory") from None
    except OSError as e:
        raise AfterburnError(f"cannot read {path}: {e.strerror}") from None
