"""A deterministic virtual clock.

Wall time never leaks into a guest: time advances only when the machine says
so, by a fixed number of nanoseconds per retired guest instruction, or by a
jump to the next timer deadline while the guest sits in ``hlt``.  So two runs
of the same guest see identical timer interrupts at identical instructions,
and a guest that waits in ``hlt`` costs no host time for the idle period.

Devices that need to act at a moment in virtual time (the PIT raising IRQ0, the
RTC update cycle) implement :class:`Timed`.  The machine asks the clock for the
earliest deadline to size its next execution slice, advances the clock, then
calls :meth:`VirtualClock.fire_due` so each due device can raise its IRQ.
"""
from __future__ import annotations

from typing import Protocol


class Timed(Protocol):
    def deadline(self) -> int | None:
        """Virtual time (ns) of this device's next event, or None."""

    def fire(self, now: int) -> None:
        """Called once the clock has reached :meth:`deadline`."""


class VirtualClock:
    """Virtual nanoseconds since power-on."""

    def __init__(self, ns_per_insn: int = 10) -> None:
        self.now = 0
        self.ns_per_insn = ns_per_insn
        self._timed: list[Timed] = []

    def register(self, dev: Timed) -> None:
        self._timed.append(dev)

    def next_deadline(self) -> int | None:
        times = [t for t in (d.deadline() for d in self._timed) if t is not None]
        return min(times) if times else None

    def advance_insns(self, n: int) -> None:
        self.now += n * self.ns_per_insn

    def advance_to(self, t: int) -> None:
        if t > self.now:
            self.now = t

    def fire_due(self) -> None:
        """Let every device whose deadline has passed act (raise IRQs)."""
        for dev in self._timed:
            d = dev.deadline()
            # A device may have several periods due after a long slice; real
            # edge-triggered hardware merges them into one pending IRQ, and
            # fire() is expected to catch up its own state to `now`.
            if d is not None and d <= self.now:
                dev.fire(self.now)
