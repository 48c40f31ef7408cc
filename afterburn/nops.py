"""Multi-byte NOP sequences for pads.

Pads use the recommended long NOPs (``0f 1f /0`` with 66 prefixes), not runs
of 0x90, so an annotated kernel on real hardware decodes a handful of
instructions per pad rather than one per byte.  gas's own ``.nops`` is not
used: in 32-bit mode without ``-march`` it emits ``lea 0(%esi),%esi``, which
is not a NOP to a verifier (nor to a CPU's rename stage).
"""
from __future__ import annotations

# Intel SDM vol. 2B, "NOP": recommended multi-byte sequences, 1..9 bytes.
_NOPS: dict[int, bytes] = {
    1: bytes.fromhex("90"),
    2: bytes.fromhex("6690"),
    3: bytes.fromhex("0f1f00"),
    4: bytes.fromhex("0f1f4000"),
    5: bytes.fromhex("0f1f440000"),
    6: bytes.fromhex("660f1f440000"),
    7: bytes.fromhex("0f1f8000000000"),
    8: bytes.fromhex("0f1f840000000000"),
    9: bytes.fromhex("660f1f840000000000"),
}
MAX_NOP = 9


def nop_bytes(n: int) -> bytes:
    """``n`` bytes of NOPs, as few instructions as possible."""
    if n < 0:
        raise ValueError("negative pad")
    out = bytearray()
    while n > 0:
        step = min(n, MAX_NOP)
        out += _NOPS[step]
        n -= step
    return bytes(out)


def nop_directive(n: int) -> str:
    """A gas ``.byte`` line emitting ``n`` NOP bytes (empty string for 0)."""
    if n == 0:
        return ""
    return ".byte " + ",".join(f"0x{b:02x}" for b in nop_bytes(n))
