"""The monitor: the L4 server that runs a pre-virtualized guest.

Three server threads, as in Afterburner's L4 backend and L4Ka's resource
monitor:

* the **resource manager** owns physical memory (σ0's idempotent mapping of
  RAM) and grants the guest's share to the monitor at start-up;
* the **monitor thread** is the pager and exception handler of the VM
  thread (guest kernel and wedge) and of the user thread (guest user mode),
  and serves the wedge's requests (the protocol in ``abi.MONITOR``);
* the **IRQ thread** is the handler of the interrupt thread for the 8259's
  INTR line: it acknowledges the 8259 and gets the vector into the guest,
  with ExchangeRegisters when the VM thread runs guest code (never inside
  the wedge: Afterburner's ``async_safe`` rule), or as the reply the VM
  thread waits for.

The monitor sees guest-physical memory at ``abi.MONITOR_PHYS`` in its own
space and maps pages from there, so every mapping the VM and user spaces
hold derives from the monitor's (and, above it, the resource manager's).
"""
from __future__ import annotations

import struct

from wedge.layout import HOLE_BASE, PIO, UFRAME, UPCALL_INFO, trap_info

from ..wedged import Kill
from ..wedged.mmu import Refusal
from . import abi
from .abi import Fpage, MsgTag
from .kernel import Message

M = abi.MONITOR
REPLY_OK = Message(MsgTag(0))


def reply(*words: int, label: int = 0) -> Message:
    return Message(MsgTag(label, len(words)), [w & 0xFFFFFFFF for w in words])


class ResourceManager:
    """σ0: answers the monitor's requests for memory with grant items."""

    def __init__(self, backend) -> None:
        self.b = backend

    def receive(self, sender, msg: Message) -> Message | None:
        self.b.kernel.refuse("only the monitor may ask the resource manager for memory")
        return None


class Monitor:
    def __init__(self, backend) -> None:
        self.b = backend
        self.k = backend.kernel

    # -- the wedge's requests ----------------------------------------------------------

    def receive(self, sender, msg: Message) -> Message | None:
        b = self.b
        if sender is not b.vm_thread:
            b.kernel.refuse(f"a message to the monitor from {sender.name}")
            return None
        handler = HANDLERS.get(msg.label)
        if handler is None:
            b.kernel.refuse(f"monitor request with label {msg.label:#x}")
            return reply(label=abi.MONITOR_ERROR)
        try:
            return handler(self, msg.words)
        except (IndexError, Kill) as e:
            b.m.stop("killed", f"monitor request {b.label_name(b.monitor_thread, msg.label)}: "
                               f"{e if isinstance(e, Kill) else 'too few words'}")  # fmt: skip
            return None

    def pio(self, w: list[int]) -> Message:
        req = PIO.unpack(b"".join(struct.pack("<I", x) for x in w[:4]))
        return reply(self.b.pio(**req))

    def inta(self, w: list[int]) -> Message:
        return reply(self.b.inta())

    def sti_shadow(self, w: list[int]) -> Message:
        return reply(self.b.sti_shadow(w[0]))

    def idle(self, w: list[int]) -> Message:
        self.b.block()
        return REPLY_OK

    def rdmsr(self, w: list[int]) -> Message:
        self.b.m.stats.exits["msr"] += 1
        value = self.b.m.uc.msr_read(w[0])
        return reply(0, value, value >> 32)

    def wrmsr(self, w: list[int]) -> Message:
        self.b.m.stats.exits["msr"] += 1
        self.b.m.uc.msr_write(w[0], (w[2] << 32) | w[1])
        return reply(0)

    def paging(self, w: list[int]) -> Message:
        self.b.set_paging(w[0], w[1])
        return REPLY_OK

    def cr3(self, w: list[int]) -> Message:
        self.b.guest_cr3(w[0])
        return REPLY_OK

    def flush_user(self, w: list[int]) -> Message:
        for raw in w:
            fp = Fpage.decode(raw)
            if fp is not None:
                self.b.unmap_user(fp)
        return REPLY_OK

    def set_gdt(self, w: list[int]) -> Message:
        if not 0 < w[1] <= self.b.gdt_capacity():
            return reply(abi.E_INVALID_PARAM)
        return reply(0 if self.b.descriptors.shadow_gdt(w[0], w[1]) else abi.E_INVALID_PARAM)

    def update_descriptor(self, w: list[int]) -> Message:
        return reply(0 if self.b.descriptors.reshadow(w[0]) else abi.E_INVALID_PARAM)

    def set_ldt(self, w: list[int]) -> Message:
        if not self.b.descriptors.shadow_ldt(w[0], w[1]):
            raise Kill(f"LDT at {w[0]:#x} is not mapped")
        return REPLY_OK

    def console(self, w: list[int]) -> Message:
        n = w[0]
        data = b"".join(struct.pack("<I", x) for x in w[1:])
        if n > len(data):
            raise Kill("console write longer than its message")
        self.b.console += data[:n]
        return REPLY_OK

    def shutdown(self, w: list[int]) -> Message | None:
        self.b.shutdown(w[0])
        return None

    def activate(self, w: list[int]) -> Message | None:
        """Enter guest user mode: the VM thread waits for the reply, which
        comes when user mode is interrupted (a trap, a fault, an interrupt)."""
        raw = b"".join(struct.pack("<I", x) for x in w[: UFRAME.size // 4])
        if len(raw) < UFRAME.size:
            raise Kill("activate without a whole struct uframe")
        self.b.activate_user(raw)
        return None

    # -- the kernel's protocol messages ------------------------------------------------------

    def pagefault(self, thread, msg: Message, fault: Refusal) -> None:
        """Page-fault IPC (label 0xFFE0 | rwx; MR1 address, MR2 IP), from the
        VM or the user thread: map the page from the monitor's memory after
        the guest's own page tables (a map item in the reply), or turn it
        into the guest's own page fault, or refuse."""
        b, k = self.b, self.k
        user = thread is b.user_thread
        va, write = msg.words[0], bool(msg.label & abi.W)
        b.m.stats.hypercalls[f"ipc pagefault ({thread.name})"] += 1
        b.m.stats.exits["page fault ipc"] += 1
        page = va & ~0xFFF
        if page >= HOLE_BASE:
            # The hole is the monitor's: the VM space holds it from the start
            # (a fault there is a refused access), and user mode never does.
            if user:
                b.user_site(fault)
            else:
                b.m.stop("error", f"the VM thread faulted in the monitor's area at {va:#x}")
            return
        r = b.mmu.translate(va, write, user, update=True)
        if isinstance(r, Refusal):
            if r.why in ("foreign", "unmapped"):
                b.m.stop("killed", f"the guest maps frame {r.frame:#x}, which it does not own"
                                   f" (page fault at {va:#x})")  # fmt: skip
                return
            b.guest_page_fault(va, r.error_code)
            return
        pa, perms = r
        rights = abi.R | abi.X | (abi.W if perms & 2 else 0)
        item = abi.map_item(Fpage(abi.MONITOR_PHYS + pa, 12, rights), page)
        # The reply: one map item.  The kernel installs it into the faulter's space.
        target = b.user_space if user else b.vm_space
        k.map(b.monitor_space, Fpage.decode(item[1]), target, item[0] & ~0x3FF)
        m = target.pages.get(page >> 12)
        if m is not None:
            m.referenced |= abi.R | (abi.W if write else 0)

    def exception(self, thread, vector: int, err: int | None, soft_len: int) -> None:
        """Exception IPC (label 0xFFB0, MR1..MR12) from a guest thread: the
        guest kernel's to deliver through its IDT."""
        b = self.b
        b.m.stats.hypercalls[f"ipc exception ({thread.name})"] += 1
        if thread is b.user_thread:
            b.user_event(trap_info(vector, err is not None, soft_len), err or 0)
        else:
            b.inject(vector, err, soft_len)


class IrqThread:
    """Handler of the interrupt thread of the 8259's INTR line."""

    def __init__(self, backend) -> None:
        self.b = backend

    def receive(self, sender, msg: Message) -> Message | None:
        self.b.kernel.refuse(f"a message to the IRQ thread from {sender.name}")
        return None

    def interrupt(self, vector: int) -> None:
        """The interrupt IPC (label 0xFFF0) arrived and the guest can take it
        now: get ``vector`` in."""
        b = self.b
        b.m.stats.hypercalls["ipc interrupt"] += 1
        if b.user_thread_running():
            b.user_event(UPCALL_INFO, vector)
        else:
            b.upcall_vector(vector)


HANDLERS = {M["pio"]: Monitor.pio, M["inta"]: Monitor.inta, M["sti_shadow"]: Monitor.sti_shadow,
            M["idle"]: Monitor.idle, M["rdmsr"]: Monitor.rdmsr, M["wrmsr"]: Monitor.wrmsr,
            M["paging"]: Monitor.paging, M["cr3"]: Monitor.cr3, M["flush_user"]: Monitor.flush_user,
            M["set_gdt"]: Monitor.set_gdt, M["update_descriptor"]: Monitor.update_descriptor,
            M["set_ldt"]: Monitor.set_ldt, M["console"]: Monitor.console, M["shutdown"]: Monitor.shutdown,
            M["activate"]: Monitor.activate}  # fmt: skip
