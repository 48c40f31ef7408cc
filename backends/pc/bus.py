"""The ISA port bus: every emulated device sits behind this one interface.

Like Firecracker's device model, each device is a small class that claims a
set of I/O ports and answers reads and writes; the machine core knows nothing
about UARTs or PICs, it only forwards IN/OUT to the bus.  The bus also keeps
what the differential tests observe: the ordered trace of port writes and the
ports nobody claimed.

Sizes are in bytes (1, 2 or 4).  A multi-byte access to a device that only
decodes byte ports is split by the bus into byte accesses (little-endian), the
way the ISA bus does it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable


class Device:
    """Base class for a port-mapped device.

    Subclasses set ``name`` and implement :meth:`port_ranges`, :meth:`io_read`
    and :meth:`io_write`.  ``wide`` says whether the device decodes 16/32-bit
    accesses itself (like isa-debug-exit); otherwise the bus splits them.
    """

    name: str = "device"
    wide: bool = False

    def port_ranges(self) -> Iterable[tuple[int, int]]:
        """(first port, count) pairs this device answers."""
        raise NotImplementedError

    def io_read(self, port: int, size: int) -> int:
        raise NotImplementedError

    def io_write(self, port: int, size: int, value: int) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Return to the power-on state."""


@dataclass(frozen=True)
class PortWrite:
    """One entry of the observable I/O trace."""

    port: int
    size: int
    value: int

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.port, self.size, self.value)


@dataclass
class PortBus:
    """Routes port accesses to devices and records the observable trace."""

    devices: dict[int, Device] = field(default_factory=dict)
    trace: list[PortWrite] = field(default_factory=list)
    unknown_reads: Counter = field(default_factory=Counter)
    unknown_writes: Counter = field(default_factory=Counter)
    # Optional observer, e.g. a logger: called as (direction, port, size, value).
    on_unknown: Callable[[str, int, int, int], None] | None = None
    reads: int = 0
    writes: int = 0

    def attach(self, dev: Device) -> Device:
        for first, count in dev.port_ranges():
            for port in range(first, first + count):
                if port in self.devices:
                    raise ValueError(f"port {port:#x} claimed by {self.devices[port].name} and {dev.name}")
                self.devices[port] = dev
        return dev

    def read(self, port: int, size: int) -> int:
        self.reads += 1
        port &= 0xFFFF
        dev = self.devices.get(port)
        if dev is None:
            self.unknown_reads[port] += 1
            if self.on_unknown:
                self.on_unknown("in", port, size, 0)
            return (1 << (8 * size)) - 1  # an undriven ISA bus reads all-ones
        if dev.wide or size == 1:
            return dev.io_read(port, size) & ((1 << (8 * size)) - 1)
        value = 0
        for i in range(size):
            value |= (self.read_byte(port + i) & 0xFF) << (8 * i)
        return value

    def read_byte(self, port: int) -> int:
        dev = self.devices.get(port & 0xFFFF)
        if dev is None:
            self.unknown_reads[port & 0xFFFF] += 1
            return 0xFF
        return dev.io_read(port & 0xFFFF, 1)

    def write(self, port: int, size: int, value: int) -> None:
        self.writes += 1
        port &= 0xFFFF
        value &= (1 << (8 * size)) - 1
        self.trace.append(PortWrite(port, size, value))
        dev = self.devices.get(port)
        if dev is None:
            self.unknown_writes[port] += 1
            if self.on_unknown:
                self.on_unknown("out", port, size, value)
            return
        if dev.wide or size == 1:
            dev.io_write(port, size, value)
            return
        for i in range(size):
            sub = self.devices.get((port + i) & 0xFFFF)
            if sub is None:
                self.unknown_writes[(port + i) & 0xFFFF] += 1
            else:
                sub.io_write((port + i) & 0xFFFF, 1, (value >> (8 * i)) & 0xFF)

    def reset(self) -> None:
        for dev in set(self.devices.values()):
            dev.reset()
        self.trace.clear()
        self.unknown_reads.clear()
        self.unknown_writes.clear()
        self.reads = self.writes = 0
