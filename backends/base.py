"""The backend interface: what differs between the ways of running a guest.

Five backends share one machine (``backends/pc``): ``bare`` and ``hvm`` run
the unmodified image, ``xen``, ``l4`` and ``linux`` run it rewritten with a
wedge and the guest kernel deprivileged.  The machine core calls the methods
below at the few points where they differ, and never asks which backend it
has:

* before the run: :meth:`prepare` (rewrite the image, or not) and
  :meth:`attach` (hooks, privilege level, initial guest state);
* while running: :meth:`poll_interrupts` (between slices),
  :meth:`on_trap` (exceptions and software interrupts Unicorn hands us),
  :meth:`on_port_io` (IN/OUT executed by guest code), :meth:`on_halt`,
  :meth:`on_emulation_error`;
* after the run: :meth:`vcpu_state`, the guest-visible CPU state for the
  Observation (so a deprivileged backend reports its *virtual* IF and ring).

Statistics (exits and hypercalls by kind) go into ``machine.stats``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from afterburn.image import Image
    from .pc.machine import Machine


_WEDGES: dict = {}


class Backend(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    guest_cpl: ClassVar[int]  # the ring the guest kernel runs in
    rewrites: ClassVar[bool]  # does the image go through the rewriter and get a wedge?
    reference: ClassVar[bool] = False  # the native backend the others are compared with

    def prepare(self, image: Image) -> Image:
        """The image to load: the image itself (``bare``, ``hvm``, or an image
        already rewritten for this backend), or a rewritten copy."""
        from afterburn.errors import AfterburnError

        if image.backend == self.name:
            return image
        if image.backend:
            raise AfterburnError(f"{image.path} was rewritten for {image.backend}; run it on {image.backend}, "
                                 f"or rewrite the original for {self.name}")  # fmt: skip
        if not self.rewrites:
            return image
        from rewriter import rewrite

        return rewrite(image, self)

    # -- rewriting backends ------------------------------------------------------

    def wedge_image(self):
        """This backend's wedge (wedge/src plus wedge/<name>), built once per process."""
        import wedge

        if self.name not in _WEDGES:
            _WEDGES[self.name] = wedge.build(self.name)
        return _WEDGES[self.name]

    def template_context(self, wedge_image):
        """What the patch templates need from this backend (rewriter.templates.Context)."""
        raise NotImplementedError(f"{self.name} does not rewrite")

    @abstractmethod
    def attach(self, machine: Machine) -> None:
        """Install hooks and set the initial guest state (after loading)."""

    @abstractmethod
    def interrupts_enabled(self) -> bool:
        """Whether the guest accepts an external interrupt now (its IF)."""

    @abstractmethod
    def poll_interrupts(self) -> None:
        """Called between slices: if the 8259 has an interrupt and the guest
        can take it, acknowledge it and deliver it (through the guest IDT, an
        event upcall, an IPC or a signal); if it cannot yet, arrange to be
        told when it can, so it lands at the instruction that opens the
        window."""

    def slice_limit(self) -> int | None:
        """An upper bound for the next slice, if the backend wants control back sooner."""
        return None

    def on_emulation_error(self, error) -> bool:
        """Unicorn stopped with an error; True if the backend handled it
        (e.g. a page fault its MMU raised), else the run ends."""
        return False

    def on_trap(self, vector: int, error_code: int | None, software: bool) -> bool:
        """An exception or ``int n`` reached the host.  Return True if the
        backend handled it; otherwise the machine delivers it through the
        guest's IDT as the hardware would."""
        return False

    @abstractmethod
    def on_port_io(self, port: int, size: int, value: int | None) -> int | None:
        """Guest code executed IN (value None, return the result) or OUT."""

    def on_halt(self) -> None:
        """The guest executed ``hlt`` natively (Unicorn stopped there)."""
        raise NotImplementedError(f"{self.name}: native hlt")

    @abstractmethod
    def vcpu_state(self) -> dict[str, int]:
        """Guest-visible CPU state for the Observation."""
