"""``l4``: the guest kernel as a user-level thread of an L4 X.2 microkernel.

The guest kernel and its wedge run at CPL 3 as the *VM thread* of an L4
address space; guest user mode runs as a second thread in a space of its
own.  They reach the rest of the system only through L4 system calls
(``kernel.py``: the KIP's stubs, ``int $0x30`` for IPC and ``int $0x31``
for the others, ``lock; nop`` for KernelInterface) and IPC to the monitor
(``monitor.py``), a separate L4 server: its monitor thread pages both
spaces from guest memory it was granted by the resource manager, takes
their exceptions, and serves the wedge; its IRQ thread brings the 8259's
interrupts in.  The generic half of the wedge protocol is
``backends/wedged``; docs/wedge.md ("l4") describes the model and where it
departs from Pistachio.
"""
from __future__ import annotations

import struct

import unicorn.unicorn_const as C
from unicorn.x86_const import (
    UC_X86_REG_CS, UC_X86_REG_DS, UC_X86_REG_EAX, UC_X86_REG_EBP, UC_X86_REG_EBX, UC_X86_REG_ECX,
    UC_X86_REG_EDI, UC_X86_REG_EDX, UC_X86_REG_EFLAGS, UC_X86_REG_EIP, UC_X86_REG_ES, UC_X86_REG_ESI,
    UC_X86_REG_ESP, UC_X86_REG_FS, UC_X86_REG_GS, UC_X86_REG_SS,
)  # fmt: skip

from wedge.layout import (
    GUEST_GDT_MAX, HOLE_BASE, HOLE_SIZE, HYP_PRIVATE, SHARED_INFO, START_INFO, UFRAME, UNTIL_PAGE, UPCALL_INFO,
    trap_info,
)  # fmt: skip

from ..wedged import IF, Kill, WedgedBackend
from ..wedged.descriptors import DescriptorShadows
from ..wedged.mmu import ALL, READ_EXEC, GuestMmu, Refusal
from . import abi
from .abi import Fpage
from .kernel import L4Kernel, Mapping, Message
from .monitor import IrqThread, Monitor, ResourceManager

TIDS = {"rm": abi.global_id(abi.USER_BASE, 1), "monitor": abi.global_id(abi.USER_BASE + 2, 1),
        "irq": abi.global_id(abi.USER_BASE + 3, 1), "vm": abi.global_id(abi.USER_BASE + 4, 1),
        "user": abi.global_id(abi.USER_BASE + 5, 1)}  # fmt: skip
USER_UTCB = HOLE_BASE + 0x1D000  # the user thread's UTCB page (in its own space)
LABELS = {v: k for k, v in abi.MONITOR.items()}


class L4Mmu(GuestMmu):
    """The CPU's translations come from the running thread's L4 address
    space; the walk of the guest's page tables (:meth:`translate`) is the
    monitor's, for paging and for its own accesses to guest memory."""

    def fill(self, va: int, write: bool):
        b = self.b
        user = b.in_user_mode()
        space = b.user_space if user else b.vm_space
        page = va & 0xFFFFF000
        m = space.pages.get(page >> 12)
        if m is not None and (m.rights & abi.W or not write):
            m.referenced |= abi.R | (abi.W if write else 0)
            return m.frame << 12, (ALL if m.rights & abi.W else READ_EXEC)
        # The CPU itself reads the descriptor tables (kernel memory to a real
        # L4 kernel) for a user-mode segment load; the probe page as always.
        if not write and (HYP_PRIVATE <= page < HOLE_BASE + HOLE_SIZE or page == UNTIL_PAGE):
            return page, C.UC_PROT_READ
        return Refusal(va, write, user, m is not None, "host")


class L4Backend(WedgedBackend):
    name = "l4"
    description = "L4 X.2 microkernel: guest kernel as a user-level thread, IPC to a monitor server"
    guest_cpl = 3
    wedge_layer = "l4"
    hypercall_vectors = frozenset({abi.IPC_VECTOR, abi.SYSCALL_VECTOR})
    vif_addr = SHARED_INFO + abi.SHARED["vif"]
    vif_on, vif_off = abi.VIF_ON, abi.VIF_OFF

    def __init__(self) -> None:
        super().__init__()
        self.console = bytearray()

    def wedge_headers(self) -> dict[str, str]:
        return {"l4_abi.h": abi.c_header()}

    def make_mmu(self) -> L4Mmu:
        return L4Mmu(self)

    def start_info_words(self) -> list[int]:
        return [TIDS["monitor"], TIDS["irq"], abi.KIP_AREA, abi.VM_UTCB]

    # -- the system at start-up -------------------------------------------------------

    def attach_backend(self) -> None:
        m = self.m
        k = self.kernel = L4Kernel(self)
        rm_space = k.space("rm", privileged=True)
        self.monitor_space = k.space("monitor", privileged=True)
        self.vm_space = k.space("vm")
        self.user_space = k.space("user")
        self.rm = k.thread(TIDS["rm"], "rm", rm_space, server=ResourceManager(self))
        self.monitor_thread = k.thread(TIDS["monitor"], "monitor", self.monitor_space, server=Monitor(self))
        self.irq = IrqThread(self)
        self.irq_thread = k.thread(TIDS["irq"], "irq", self.monitor_space, server=self.irq)
        self.vm_thread = k.thread(TIDS["vm"], "vm", self.vm_space, utcb=abi.VM_UTCB, pager=TIDS["monitor"],
                                  exception_handler=TIDS["monitor"])  # fmt: skip
        self.user_thread = k.thread(TIDS["user"], "user", self.user_space, utcb=USER_UTCB, pager=TIDS["monitor"],
                                    exception_handler=TIDS["monitor"])  # fmt: skip
        self.monitor = self.monitor_thread.server
        # σ0's idempotent mapping of physical memory: RAM, and the hole the
        # monitor's own pages (wedge, shared page, tables) live in.
        for pfn in range(m.ram_size >> 12):
            rm_space.pages[pfn] = Mapping(pfn, abi.FULL)
        for pfn in range(HOLE_BASE >> 12, (HOLE_BASE + HOLE_SIZE) >> 12):
            rm_space.pages[pfn] = Mapping(pfn, abi.FULL)
        # The monitor asks for the guest's memory and its own area: grant items.
        k.count("ipc rm (grant)")
        k.map(rm_space, Fpage(0, (m.ram_size - 1).bit_length()), self.monitor_space, abi.MONITOR_PHYS, grant=True)
        k.map(rm_space, Fpage(HOLE_BASE, 22), self.monitor_space, HOLE_BASE, grant=True)
        # The VM space: the KIP and UTCB areas (the kernel's), then the monitor's
        # area mapped in by the monitor, read-only where the guest may only read.
        self.vm_space.kip_area, self.vm_space.utcb_area = Fpage(abi.KIP_AREA, 12), Fpage(abi.UTCB_AREA, 12)
        self.user_space.kip_area, self.user_space.utcb_area = Fpage(abi.KIP_AREA, 12), Fpage(USER_UTCB, 12)
        k.build_kip(abi.KIP_AREA)
        for space in (self.vm_space, self.user_space):
            space.pages[abi.KIP_AREA >> 12] = Mapping(abi.KIP_AREA >> 12, abi.R | abi.X)
        self.vm_space.pages[abi.UTCB_AREA >> 12] = Mapping(abi.UTCB_AREA >> 12, abi.FULL)
        self.user_space.pages[USER_UTCB >> 12] = Mapping(USER_UTCB >> 12, abi.FULL)
        for page in range(HOLE_BASE, HOLE_BASE + HOLE_SIZE, 0x1000):
            if page in (abi.KIP_AREA, abi.UTCB_AREA, USER_UTCB):
                continue
            read_only = page >= HYP_PRIVATE or page == START_INFO
            k.map(self.monitor_space, Fpage(page, 12, abi.R | abi.X if read_only else abi.FULL), self.vm_space, page)
        for t in (self.vm_thread, self.user_thread):
            k.write_utcb(t)
        k.current = self.vm_thread
        k.count("ThreadControl (interrupt association)")
        self.descriptors = DescriptorShadows(m.uc, self.mmu.read, self.guest_cpl)

    def gdt_capacity(self) -> int:
        return GUEST_GDT_MAX

    def label_name(self, dest, label: int) -> str:
        if dest is self.monitor_thread:
            return LABELS.get(label, f"{label:#x}")
        return f"{dest.name} {label:#x}"

    # -- registers of the thread on the CPU, for ExchangeRegisters ---------------------------

    def sp(self) -> int:
        return self.m.uc.reg_read(UC_X86_REG_ESP)

    def ip(self) -> int:
        return self.m.uc.reg_read(UC_X86_REG_EIP)

    def flags(self) -> int:
        return self.m.uc.reg_read(UC_X86_REG_EFLAGS)

    def exregs(self, sp: int | None = None, ip: int | None = None, flags: int | None = None) -> None:
        uc = self.m.uc
        if sp is not None:
            uc.reg_write(UC_X86_REG_ESP, sp)
        if ip is not None:
            uc.reg_write(UC_X86_REG_EIP, ip)
        if flags is not None:
            old = uc.reg_read(UC_X86_REG_EFLAGS)
            uc.reg_write(UC_X86_REG_EFLAGS, (old & ~abi.USER_FLAGS) | (flags & abi.USER_FLAGS))

    # -- what the shared base asks ------------------------------------------------------------

    def hypercall(self, vector: int) -> None:
        self.kernel.syscall(vector)

    def on_trap(self, vector: int, err: int | None, software: bool) -> bool:
        if vector == 6 and not software and self._kernel_interface():
            return True
        return super().on_trap(vector, err, software)

    def _kernel_interface(self) -> bool:
        """KernelInterface: ``lock; nop`` raises #UD, which the kernel emulates
        for any thread (EAX the KIP, ECX/EDX/ESI the version, flags, id)."""
        uc = self.m.uc
        eip = uc.reg_read(UC_X86_REG_EIP)
        space = self.user_space if self.in_user_mode() else self.vm_space
        m = space.pages.get(eip >> 12)
        if m is None or bytes(uc.mem_read((m.frame << 12) | (eip & 0xFFF), 2)) != abi.KERNEL_INTERFACE:
            return False
        self.kernel.count("KernelInterface")
        for reg, value in ((UC_X86_REG_EAX, abi.KIP_AREA), (UC_X86_REG_ECX, abi.API_VERSION),
                           (UC_X86_REG_EDX, abi.API_FLAGS), (UC_X86_REG_ESI, abi.KERNEL_ID),
                           (UC_X86_REG_EIP, eip + 2)):  # fmt: skip
            uc.reg_write(reg, value)
        return True

    def deliver_trap(self, vector: int, err: int | None, soft_len: int = 0) -> None:
        """An exception of a guest thread: the kernel's exception IPC to its
        handler, the monitor."""
        self.m.stats.exits[f"trap {vector:#x}"] += 1
        self.monitor.exception(self.kernel.current, vector, err, soft_len)

    def host_fault(self, fault) -> None:
        """A miss in the running thread's space: the kernel's page-fault IPC
        to its pager, the monitor."""
        va = self.mmu.fault_address.value()
        rwx = abi.W if fault.write else abi.R | abi.X  # ia32 reports a read as R|X
        msg = Message(abi.MsgTag(abi.LABEL_PAGEFAULT | rwx, 2), [va, self.ip()])
        self.monitor.pagefault(self.kernel.current, msg, fault)

    def deliver_interrupt(self, vector: int) -> None:
        self.irq.interrupt(vector)

    def delivery_deferred(self) -> None:
        """Afterburner's async_safe rule: the IRQ thread's ExchangeRegisters
        found the VM thread inside the wedge, so it put the old IP back (a
        second ExchangeRegisters) and the interrupt stays raised."""
        if not self.user_thread_running():
            self.kernel.count("ExchangeRegisters (cancelled: inside the wedge)")

    def pending_changed(self, on: bool) -> None:
        self.m.uc.mem_write(SHARED_INFO + abi.SHARED["pending"], bytes([int(on)]))

    def record_fault_address(self, va: int) -> None:
        self._shared("entry_cr2", va)

    def mode_changed(self, user: bool) -> None:
        self.descriptors.set_user_view(user)

    def _shared(self, name: str, value: int) -> None:
        self.m.uc.mem_write(SHARED_INFO + abi.SHARED[name], struct.pack("<I", value & 0xFFFFFFFF))

    # -- into the VM thread (kernel mode): ExchangeRegisters onto the wedge's entry stubs ------

    def _exregs_into_wedge(self, entry: str, info: int, error: int = 0) -> None:
        """Leave the guest-visible frame of the current context in the shared
        page and move the VM thread's IP to ``entry``: its stub pushes the
        frame on the stack it was on (Afterburner's async_irq_handle_exregs)."""
        words, _, _ = self.guest_context()
        for name, value in zip(("entry_eip", "entry_cs", "entry_eflags"), words, strict=True):
            self._shared(name, value)
        self._shared("entry_info", info)
        self._shared("entry_error", error)
        self.kernel.count("ExchangeRegisters")
        self.exregs(ip=self.w.sym(entry))

    def inject(self, vector: int, err: int | None, soft_len: int) -> None:
        self._exregs_into_wedge("w_trap", trap_info(vector, err is not None, soft_len), err or 0)

    def guest_page_fault(self, va: int, err: int) -> None:
        self.record_fault_address(va)
        self.m.stats.exits["page fault"] += 1
        if self.user_thread_running():
            self.user_event(trap_info(14, True), err)
        else:
            self.inject(14, err, 0)

    def upcall_vector(self, vector: int) -> None:
        self.m.stats.exits["upcall"] += 1
        self._shared("vector", vector)
        self._exregs_into_wedge("w_upcall", UPCALL_INFO)
        self.set_vif(False)

    # -- guest user mode: the user thread --------------------------------------------------------

    def user_thread_running(self) -> bool:
        return self.kernel.current is self.user_thread

    def activate_user(self, raw: bytes) -> None:
        """The VM thread waits in its call; the user thread gets the CPU with
        the registers the wedge gave (the reply to its pending exception IPC,
        which is how X.2 sets a thread's whole register file)."""
        k = self.kernel
        vm = self.vm_thread
        vm.context = self.m.uc.context_save()
        vm.waiting_for = self.monitor_thread.tid
        self.enter_user(UFRAME.unpack(raw))
        k.current = self.user_thread

    def user_event(self, info: int, error: int) -> None:
        """User mode stopped (exception, page fault, interrupt): the VM thread
        gets the CPU back with the reply to its activate call, which says
        why and carries the user context."""
        uc = self.m.uc
        user = {name: uc.reg_read(r) for name, r in (
            ("es", UC_X86_REG_ES), ("ds", UC_X86_REG_DS), ("edi", UC_X86_REG_EDI), ("esi", UC_X86_REG_ESI),
            ("ebp", UC_X86_REG_EBP), ("ebx", UC_X86_REG_EBX), ("edx", UC_X86_REG_EDX), ("ecx", UC_X86_REG_ECX),
            ("eax", UC_X86_REG_EAX), ("fs", UC_X86_REG_FS), ("gs", UC_X86_REG_GS), ("eip", UC_X86_REG_EIP),
            ("cs", UC_X86_REG_CS), ("eflags", UC_X86_REG_EFLAGS), ("esp", UC_X86_REG_ESP), ("ss", UC_X86_REG_SS))}
        user["esp_"] = user["esp"]
        frame = _uframe(user)
        cr2 = struct.unpack("<I", uc.mem_read(SHARED_INFO + abi.SHARED["entry_cr2"], 4))[0]
        self.set_vif(bool(user["eflags"] & IF))  # the user's IF becomes the virtual one (a trap gate keeps it)
        self._set_user(False)
        self.kernel.current = self.vm_thread
        uc.context_restore(self.vm_thread.context)
        self.vm_thread.context = None
        words = [info, error, cr2, *struct.unpack(f"<{len(frame) // 4}I", frame)]
        self.kernel.deliver_reply(self.vm_thread, self.monitor_thread, Message(abi.MsgTag(0, len(words)), words))

    def unmap_user(self, fp: Fpage) -> None:
        """Revoke the guest's user mappings in ``fp``: the monitor unmaps its
        own pages they were mapped from (X.2 Unmap names the caller's pages)."""
        k = self.kernel
        for vpn in [v for v in self.user_space.pages if fp.base >> 12 <= v < min(fp.end, HOLE_BASE) >> 12]:
            m = self.user_space.pages.get(vpn)
            if m is not None and m.parent is not None and m.parent[0] is self.monitor_space:
                k.unmap(self.monitor_space, Fpage(m.parent[1] << 12, 12, abi.FULL), False)

    # -- the monitor's services -------------------------------------------------------------------

    def set_paging(self, cr0: int, cr4: int) -> None:
        if cr4 & 0x20 and cr0 & 0x80000000:
            raise Kill("PAE paging is not supported")
        self.mmu.set_mode(bool(cr0 & 0x80000000), bool(cr0 & 0x10000), bool(cr4 & 0x10))

    def guest_cr3(self, cr3: int) -> None:
        self.mmu.base = cr3 & 0xFFFFF000
        self.unmap_user(Fpage(0, 32))

    def block(self) -> None:
        """hlt with IF on: the VM thread's idle IPC waits for the IRQ thread."""
        m = self.m
        m.stats.halts += 1
        if not self.interrupts_enabled():
            m.stop("halted", f"hlt with interrupts disabled at {self.guest_eip():#x}")
            return
        m.idle_until_interrupt()
        if m.pic.has_interrupt():
            self.set_pending(True)

    def shutdown(self, reason: int) -> None:
        if reason == abi.SHUTDOWN_CRASH:
            text = self.console.decode(errors="replace").strip().replace("\n", "; ")
            self.m.stop("fault", f"guest crashed ({text or 'no message'})")
        else:
            self.m.stop("halted", f"guest shut down (reason {reason})")


def _uframe(user: dict[str, int]) -> bytes:
    return b"".join(struct.pack("<I", user[name] & 0xFFFFFFFF) for name in
                    ("es", "ds", "edi", "esi", "ebp", "esp_", "ebx", "edx", "ecx", "eax", "fs", "gs", "eip", "cs",
                     "eflags", "esp", "ss"))  # fmt: skip

