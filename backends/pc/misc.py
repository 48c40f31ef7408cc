"""Two trivial ISA devices: QEMU's isa-debug-exit and the POST code port.

* :class:`DebugExit` models ``-device isa-debug-exit,iobase=0xf4,iosize=0x04``
  (hw/misc/debugexit.c).  It decodes 1-, 2- and 4-byte accesses itself at
  any of its ports (``wide``): a write of value v ends the run.  QEMU exits
  with status ``(v << 1) | 1``; our machine reports v itself through
  ``on_exit(v)``, so callers compare ``(v << 1) | 1`` with QEMU's status.
  Reads return 0 at every width (measured on QEMU 7.2).
* :class:`PostPort` is port 0x80, where BIOSes and kernels write progress
  codes (Linux also uses it as an I/O delay).  QEMU's ioport80 ignores writes
  and reads all-ones; we keep the codes for observers.  It is a byte device,
  so the bus splits wider accesses and 0x81-0x83 are someone else's.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .bus import Device


class DebugExit(Device):
    """isa-debug-exit: the guest's way to end the run with a status."""

    name = "debug-exit"
    wide = True

    def __init__(self, on_exit: Callable[[int], None] | None = None,
                 iobase: int = 0xF4, iosize: int = 4) -> None:
        self.on_exit = on_exit
        self.iobase = iobase
        self.iosize = iosize
        self.reset()

    def port_ranges(self) -> Iterable[tuple[int, int]]:
        return [(self.iobase, self.iosize)]

    def reset(self) -> None:
        self.exit_code: int | None = None

    def io_read(self, port: int, size: int) -> int:
        return 0

    def io_write(self, port: int, size: int, value: int) -> None:
        value &= (1 << (8 * size)) - 1
        self.exit_code = value
        if self.on_exit:
            self.on_exit(value)

    @staticmethod
    def qemu_status(value: int) -> int:
        """The host exit status QEMU would give for a write of ``value``."""
        return ((value << 1) | 1) & 0xFF

    def state(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code}

    def load_state(self, st: dict[str, Any]) -> None:
        self.exit_code = st["exit_code"]


class PostPort(Device):
    """Port 0x80 POST/diagnostic code latch."""

    name = "post"

    def __init__(self, port: int = 0x80) -> None:
        self.port = port
        self.reset()

    def port_ranges(self) -> Iterable[tuple[int, int]]:
        return [(self.port, 1)]

    def reset(self) -> None:
        self.last: int | None = None
        self.codes: list[int] = []

    def io_read(self, port: int, size: int) -> int:
        return 0xFF

    def io_write(self, port: int, size: int, value: int) -> None:
        self.last = value & 0xFF
        self.codes.append(self.last)

    def state(self) -> dict[str, Any]:
        return {"last": self.last, "codes": list(self.codes)}

    def load_state(self, st: dict[str, Any]) -> None:
        self.last = st["last"]
        self.codes = list(st["codes"])
