"""The backend interface: what differs between the ways of running a guest.

Five backends share one machine (``backends/pc``): ``bare`` and ``hvm`` run
the unmodified image, ``xen``, ``l4`` and ``linux`` run it rewritten with a
wedge and the guest kernel deprivileged.  The machine core calls the methods
below at the few points where they differ, and never asks which backend it
has:

* before the run: :meth:`prepare` (rewrite the image, or not) and
  :meth:`attach` (hooks, privilege level, initial guest state);
* while running: :meth:`interrupts_enabled`, :meth:`deliver_interrupt`,
  :meth:`on_trap` (exceptions and software interrupts Unicorn hands us),
  :meth:`on_port_io` (IN/OUT executed by guest code), :meth:`on_halt`;
* after the run: :meth:`vcpu_state`, the guest-visible CPU state for the
  Observation (so a deprivileged backend reports its *virtual* IF and ring).

Statistics (exits and hypercalls by kind) go into ``machine.stats``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .pc.loader import Image
    from .pc.machine import Machine


class Backend(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    guest_cpl: ClassVar[int]  # the ring the guest kernel runs in
    rewrites: ClassVar[bool]  # does the image go through the rewriter and get a wedge?

    def prepare(self, image: Image) -> Image:
        """The image to load: the image itself, or a rewritten copy."""
        return image

    @abstractmethod
    def attach(self, machine: Machine) -> None:
        """Install hooks and set the initial guest state (after loading)."""

    @abstractmethod
    def interrupts_enabled(self) -> bool:
        """Whether the guest accepts an external interrupt now."""

    @abstractmethod
    def deliver_interrupt(self, vector: int) -> None:
        """Deliver an acknowledged external interrupt to the guest kernel."""

    def interrupt_blocked(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """An interrupt is pending but :meth:`interrupts_enabled` is False.
        Arrange for the machine to regain control when that changes (e.g.
        ``machine.watch(self.interrupts_enabled)``), so it is delivered at the
        instruction that opens the window.  A wedge that checks for pending
        interrupts on every re-enable needs nothing here."""

    def on_trap(self, vector: int, error_code: int | None, software: bool) -> bool:
        """An exception or ``int n`` reached the host.  Return True if the
        backend handled it; otherwise the machine delivers it through the
        guest's IDT as the hardware would."""
        return False

    @abstractmethod
    def on_port_io(self, port: int, size: int, value: int | None) -> int | None:
        """Guest code executed IN (value None, return the result) or OUT."""

    def on_halt(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """The guest executed ``hlt`` (Unicorn stopped).  The machine then
        waits for an interrupt if :meth:`interrupts_enabled`, else ends the
        run as halted."""

    @abstractmethod
    def vcpu_state(self) -> dict[str, int]:
        """Guest-visible CPU state for the Observation."""
