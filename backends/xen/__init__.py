"""``xen``: a Xen-style paravirtual hypervisor model.

The guest kernel runs deprivileged at ring 1, as in 32-bit Xen PV, and
reaches the hypervisor only through hypercalls (``abi.py``,
``hypercalls.py``).  The generic half of the wedge protocol is
``backends/wedged``; what is Xen's is here:

* the ABI: ``int $0x82`` hypercalls, the shared-info page (its event upcall
  mask is the virtual IF, its pending flag the backend's copy of "an
  interrupt may wait", ``vcpu_info.arch.cr2`` the #PF address), start info;
* events: the 8259's INTR is event channel 1, a ``set_timer_op`` deadline
  event channel 2; when the guest's mask allows, the hypervisor
  acknowledges the 8259 and upcalls the wedge, which delivers through the
  guest's IDT;
* descriptor shadows (``set_gdt``, ``update_descriptor``, the LDT);
* the MMU policy (``mmu.py``): page tables are validated when pinned and
  write-protected while in use (Xen's writable page tables).

:class:`XenRing3` places the guest kernel at ring 3, as 64-bit Xen PV does:
the same ABI, the user/kernel split kept by the hypervisor.
"""
from __future__ import annotations

from unicorn.x86_const import (
    UC_X86_REG_CR2, UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDI, UC_X86_REG_EDX, UC_X86_REG_ESI,
)  # fmt: skip

from wedge.layout import GUEST_GDT_MAX, SHARED_INFO

from ..pc.uc_ext import RegBatch
from ..wedged import Kill, WedgedBackend
from ..wedged.descriptors import DescriptorShadows
from . import abi
from .hypercalls import HANDLERS
from .mmu import XenMmu


class OneShotTimer:
    """set_timer_op: wakes a blocked vCPU at a virtual time (event channel 2)."""

    def __init__(self, backend) -> None:
        self.b = backend
        self.when: int | None = None

    def arm(self, ns: int) -> None:
        self.when = ns or None

    def deadline(self) -> int | None:
        return self.when

    def fire(self, now: int) -> None:
        self.when = None
        self.b.raise_event(abi.TIMER_PORT)


class XenBackend(WedgedBackend):
    name = "xen"
    description = "Xen-style PV: guest kernel at ring 1, hypercalls on int 0x82, event channels"
    guest_cpl = 1
    wedge_layer = "xen"
    hypercall_vectors = frozenset({abi.HYPERCALL_VECTOR})
    vif_addr = SHARED_INFO + abi.SHINFO["upcall_mask"]
    vif_on, vif_off = 0, 1

    def __init__(self) -> None:
        super().__init__()
        self.console = bytearray()
        self.traps: dict[int, tuple[int, int, int]] = {}
        self.callback: tuple[int, int] | None = None
        self.stack: tuple[int, int] | None = None  # from stack_switch

    def wedge_headers(self) -> dict[str, str]:
        return {"xen_abi.h": abi.c_header()}

    # -- boot ---------------------------------------------------------------------------

    def make_mmu(self) -> XenMmu:
        return XenMmu(self)

    def start_info_words(self) -> list[int]:
        return [self.m.ram_size >> 12, SHARED_INFO]

    def attach_backend(self) -> None:
        self._hypercall_regs = RegBatch(self.m.uc, [UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX,
                                                    UC_X86_REG_ESI, UC_X86_REG_EDI])  # fmt: skip
        self.timer = OneShotTimer(self)
        self.m.clock.register(self.timer)
        self.descriptors = DescriptorShadows(self.m.uc, self.mmu.read, self.guest_cpl)

    def mode_changed(self, user: bool) -> None:
        self.descriptors.set_user_view(user)

    def gdt_capacity(self) -> int:
        return GUEST_GDT_MAX

    def kernel_stack(self) -> tuple[int, int]:
        return self.stack or super().kernel_stack()

    # -- shared info ----------------------------------------------------------------------

    def shinfo(self, field: str, size: int = 1) -> int:
        data = self.m.uc.mem_read(SHARED_INFO + abi.SHINFO[field], size)
        return int.from_bytes(data, "little")

    def set_shinfo(self, field: str, value: int, size: int = 1) -> None:
        self.m.uc.mem_write(SHARED_INFO + abi.SHINFO[field], value.to_bytes(size, "little"))

    def pending_changed(self, on: bool) -> None:
        self.set_shinfo("upcall_pending", int(on))

    def record_fault_address(self, va: int) -> None:
        self.set_shinfo("cr2", va, 4)
        self.m.uc.reg_write(UC_X86_REG_CR2, va)

    # -- events ---------------------------------------------------------------------------

    def raise_event(self, port: int, vector: int | None = None) -> None:
        if vector is not None:
            self.m.uc.mem_write(SHARED_INFO + abi.SHINFO["afterburn_vector"] + 4 * port, vector.to_bytes(4, "little"))
        self.set_shinfo("evtchn_pending", self.shinfo("evtchn_pending", 4) | (1 << port), 4)
        self.set_shinfo("pending_sel", 1, 4)
        self.set_pending(True)

    def deliver_interrupt(self, vector: int) -> None:
        self.m.stats.exits["upcall"] += 1
        self.raise_event(abi.PIC_PORT, vector)
        if self.callback:
            self.enter_wedge(self.callback[1], [], upcall=True)
        else:
            self.upcall()

    def trap_entry(self, vector: int) -> int:
        entry = self.traps.get(vector)
        return entry[1] if entry else super().trap_entry(vector)

    def block(self) -> None:
        """sched_op block: wait until an event can be delivered."""
        m = self.m
        m.stats.halts += 1
        if not self.interrupts_enabled():
            m.stop("halted", f"hlt with interrupts disabled at {self.guest_eip():#x}")
            return
        m.idle_until_interrupt((self.timer,), woken=lambda: bool(self.shinfo("upcall_pending")))
        if m.pic.has_interrupt():
            # Woken by the 8259: the event is pending now.  The wedge, which
            # the hypercall returns to, takes it (be_pending, then inta).
            self.set_pending(True)

    def shutdown(self, reason: int) -> None:
        if reason == abi.SHUTDOWN_crash:
            text = self.console.decode(errors="replace").strip().replace("\n", "; ")
            self.m.stop("fault", f"guest crashed ({text or 'no message'})")
        else:
            self.m.stop("halted", f"guest shut down (reason {reason})")

    # -- descriptor tables and the MMU ------------------------------------------------------

    def after_pt_change(self) -> None:
        if self.mmu.paging:
            reason = self.mmu.pin(self.mmu.base)
            if reason:
                raise Kill(f"page tables now invalid: {reason}")

    def set_paging(self, cr0: int, cr4: int) -> None:
        mmu = self.mmu
        if cr4 & 0x20 and cr0 & 0x80000000:
            raise Kill("PAE paging is not supported")
        paging = bool(cr0 & 0x80000000)
        mmu.pse = bool(cr4 & 0x10)
        if paging and not mmu.paging:
            reason = mmu.pin(self.read_vcpu("cr3"))
            if reason:
                raise Kill(f"enabling paging: {reason}")
        mmu.set_mode(paging, bool(cr0 & 0x10000), bool(cr4 & 0x10))

    def on_protected_write(self, fault) -> None:
        """A write to a pinned page table: let one instruction write the
        frame, then revalidate the tables."""
        m, mmu = self.m, self.mmu
        m.stats.exits["protected write"] += 1
        why = mmu.protected[fault.frame]
        mmu.writable_frame = fault.frame
        mmu.flush()
        try:
            m.step()
        finally:
            mmu.writable_frame = None
            mmu.flush()
        if why == "pt":
            try:
                self.after_pt_change()
            except Kill as k:
                m.stop("killed", str(k))

    # -- hypercalls -------------------------------------------------------------------------

    def hypercall(self, vector: int) -> None:
        m, uc = self.m, self.m.uc
        nr, *args = self._hypercall_regs.read()
        entry = HANDLERS.get(nr)
        if entry is None:
            m.stop("killed", f"invalid hypercall {nr}")
            return
        name, fn = entry
        m.stats.hypercalls[name] += 1
        m.stats.exits["hypercall"] += 1
        try:
            result = fn(self, *args)
        except Kill as k:
            m.stop("killed", f"{name}: {k}")
            return
        if result is not None and not m.stopped:  # (None: the call replaced the whole context)
            uc.reg_write(UC_X86_REG_EAX, result & 0xFFFFFFFF)


class XenRing3(XenBackend):
    """The same Xen ABI with the guest kernel at ring 3, where 64-bit Xen PV
    puts it: the CPU cannot tell the guest's kernel from its user mode, so
    the hypervisor keeps the mode, maps the hole only in kernel mode and
    enters user mode itself (the iret hypercall)."""

    name = "xen-ring3"
    description = "Xen-style PV with the guest kernel at ring 3 (as 64-bit Xen PV places it)"
    guest_cpl = 3
