"""Linux's appended module signature (``scripts/sign-file``).

The trailer is: the PKCS#7 signature, a 12-byte ``struct module_signature``
whose last 4 bytes are the big-endian signature length, then the 28-byte
magic ``~Module signature appended~\\n``.  An annotated module cannot keep it
(the signature would no longer match); Debian's kernel still loads the
module unsigned (``CONFIG_MODULE_SIG_FORCE`` is off) and taints with E.
"""
from __future__ import annotations

SIG_MAGIC = b"~Module signature appended~\n"
SIG_STRUCT_SIZE = 12


def strip_module_signature(ko: bytes) -> bytes:
    """``ko`` without its appended signature (the same object if it has
    none); ValueError if the trailer is malformed."""
    if not ko.endswith(SIG_MAGIC):
        return ko
    end = len(ko) - len(SIG_MAGIC)
    if end < SIG_STRUCT_SIZE:
        raise ValueError("signature trailer is truncated")
    sig_len = int.from_bytes(ko[end - 4 : end], "big")
    start = end - SIG_STRUCT_SIZE - sig_len
    if start < 0:
        raise ValueError(f"signature length {sig_len} is larger than the module")
    return ko[:start]
