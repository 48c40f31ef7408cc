"""Errors that reach the user as one line and exit status 2."""


class AfterburnError(Exception):
    """Bad input or an impossible request: reported as ``afterburn: error: ...``."""

    exit_status = 2


class FormatError(AfterburnError):
    """A file is not what we can read (not ELF, wrong machine, unknown site format)."""
