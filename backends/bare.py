"""``bare``: the reference backend, native execution of the image as is.

The guest kernel runs at CPL0 exactly as on hardware: nothing is rewritten
(an annotated image runs its NOP pads), IN/OUT go straight to the devices,
interrupts follow the real EFLAGS.IF and the guest's own IDT.  Every other
backend is judged by giving the same Observation as this one.
"""
from __future__ import annotations

from .base import Backend
from .pc.cpu import IF, TripleFault


class BareBackend(Backend):
    name = "bare"
    description = "native: the image runs at CPL0, nothing rewritten"
    guest_cpl = 0
    rewrites = False
    reference = True

    def attach(self, machine) -> None:
        self.m = machine

    def interrupts_enabled(self) -> bool:
        return bool(self.m.cpu.eflags & IF)

    def poll_interrupts(self) -> None:
        m = self.m
        if not m.pic.has_interrupt():
            if m.watching:
                m.unwatch()
            return
        if not self.interrupts_enabled():
            # Pending under IF=0: stop at the instruction that sets IF again
            # (popf, sti, iret end a translation block, so block starts see it).
            if not m.watching:
                m.watch(self.interrupts_enabled)
            return
        if m.watching:
            m.unwatch()
        if m.cpu.ctx.irq_inhibited():
            # Right after sti / mov ss: one instruction runs first, as on the
            # hardware (this is what makes "sti; hlt" atomic).
            m.step()
            if m.stopped or not m.pic.has_interrupt() or not self.interrupts_enabled():
                return
        vector = m.pic.acknowledge()
        m.stats.interrupts += 1
        m.stats.exits["irq"] += 1
        try:
            m.cpu.deliver(vector, external=True)
        except TripleFault as e:
            m.stop("fault", f"triple fault: {e} delivering IRQ vector {vector:#x}")

    def on_halt(self) -> None:
        m = self.m
        if not self.interrupts_enabled():
            m.stop("halted", f"hlt with interrupts disabled at eip {m.cpu.eip:#x}")
            return
        m.idle_until_interrupt()

    def on_port_io(self, port: int, size: int, value: int | None) -> int | None:
        self.m.stats.exits["io"] += 1
        if value is None:
            return self.m.bus.read(port, size)
        self.m.bus.write(port, size, value)
        return None

    def vcpu_state(self) -> dict[str, int]:
        return self.m.arch_state()
