"""``bare``: the reference backend, native execution of the image as is.

The guest kernel runs at CPL0 exactly as on hardware: nothing is rewritten
(an annotated image runs its NOP pads), IN/OUT go straight to the devices,
interrupts follow the real EFLAGS.IF and the guest's own IDT.  Every other
backend is judged by giving the same Observation as this one.
"""
from __future__ import annotations

from .base import Backend
from .pc.cpu import IF


class BareBackend(Backend):
    name = "bare"
    description = "native: the image runs at CPL0, nothing rewritten"
    guest_cpl = 0
    rewrites = False

    def attach(self, machine) -> None:
        self.m = machine

    def interrupts_enabled(self) -> bool:
        return bool(self.m.cpu.eflags & IF)

    def interrupt_blocked(self) -> None:
        self.m.watch(self.interrupts_enabled)

    def deliver_interrupt(self, vector: int) -> None:
        self.m.stats.exits["irq"] += 1
        self.m.cpu.deliver(vector, external=True)

    def on_port_io(self, port: int, size: int, value: int | None) -> int | None:
        self.m.stats.exits["io"] += 1
        if value is None:
            return self.m.bus.read(port, size)
        self.m.bus.write(port, size, value)
        return None

    def vcpu_state(self) -> dict[str, int]:
        return self.m.arch_state()
