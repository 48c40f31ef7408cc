"""``xen``: a Xen-style paravirtual hypervisor model.

The guest kernel runs deprivileged at ring 1, as in 32-bit Xen PV, and
reaches the hypervisor only through the wedge's hypercalls (``abi.py``,
``hypercalls.py``).  What this module does:

* boot: map the hypervisor hole (wedge, shared info, start info, the real
  GDT), start the vCPU in the wedge at ring 1;
* the MMU (``mmu.py``): the guest's own page tables, validated as used;
* interrupts: the 8259's INTR is event channel 1; when the guest's upcall
  mask allows, the hypervisor acknowledges the 8259 and upcalls the wedge,
  which delivers through the guest IDT (never while the guest is inside the
  wedge or a patched site: those are the "no-interrupt windows");
* traps: every exception Unicorn reports is bounced to the wedge's trap
  entry with a guest-visible frame, except hypercalls, MMU refusals, and
  escapes: a sensitive instruction the rewriter did not patch, caught when
  it faults, when it does port I/O, or by a code hook on its address, and
  reported, never executed natively in silence;
* patched sites reached in guest *user* mode fault on the supervisor-only
  hole; the hypervisor then gives the site back its original bytes, which
  at CPL 3 behave natively, and patches it again if the kernel reaches it.
"""
from __future__ import annotations

import bisect
import struct

from unicorn import UC_HOOK_CODE
from unicorn.x86_const import (
    UC_X86_REG_CR0, UC_X86_REG_CR2, UC_X86_REG_CR4, UC_X86_REG_CS, UC_X86_REG_DS, UC_X86_REG_EAX, UC_X86_REG_EBX,
    UC_X86_REG_ECX, UC_X86_REG_EDI, UC_X86_REG_EDX, UC_X86_REG_EFLAGS, UC_X86_REG_EIP, UC_X86_REG_ES,
    UC_X86_REG_ESI, UC_X86_REG_ESP, UC_X86_REG_FS, UC_X86_REG_GDTR, UC_X86_REG_GS, UC_X86_REG_LDTR, UC_X86_REG_SS,
)  # fmt: skip

import wedge as wedge_pkg
from afterburn import decode, isa
from afterburn.errors import AfterburnError
from wedge.layout import (
    GDT_ENTRIES, GUEST_GDT_MAX, HOLE_BASE, HOLE_SIZE, HYP_CS, HYP_DS, REAL_GDT, REAL_LDT,
    SHARED_INFO, START_INFO, vcpu_offsets,
)  # fmt: skip

from ..base import Backend
from ..pc.cpu import GPRS
from ..pc.loader import BOOT_CS, BOOT_DS, BOOT_GDT, BOOT_GDT_BYTES, BOOT_STACK, MB1_BOOT_MAGIC, MBI_ADDR, gdt_entry
from ..pc.uc_ext import RegBatch, load_cs_ss
from . import abi
from .hypercalls import HANDLERS, Kill, _read, _write
from .mmu import Mmu

IF, IOPL, NT, RF, VM, TF = 0x200, 0x3000, 0x4000, 0x10000, 0x20000, 0x100
UPCALL_INFO = 0xFFFF
VOFF = vcpu_offsets()


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


class XenBackend(Backend):
    name = "xen"
    description = "Xen-style PV: guest kernel at ring 1, hypercalls on int 0x82, event channels"
    guest_cpl = 1
    rewrites = True

    def __init__(self) -> None:
        self.console = bytearray()
        self.traps: dict[int, tuple[int, int, int]] = {}
        self.callback: tuple[int, int] | None = None
        self.kernel_stack: tuple[int, int] | None = None
        self._short_slice = False
        self._sti_shadow = False
        self._demoted: dict[int, tuple[int, bytes]] = {}  # site start -> (code hook, patch)
        self.gdt: tuple[int, int] | None = None  # the guest's GDT: (linear base, entries)
        self.ldt: tuple[int, int] | None = None

    # -- rewriting ----------------------------------------------------------------

    def template_context(self, w: wedge_pkg.WedgeImage):
        from rewriter.templates import Context

        return Context(
            entries={e: w.sym(e) for e in (*wedge_pkg.ENTRY_POINTS,
                                            *(f"{e}_seg" for e in wedge_pkg.SEG_ENTRY_POINTS))},
            scratch=w.vcpu + VOFF["scratch"],
            vif=SHARED_INFO + abi.SHINFO["upcall_mask"], vif_on=0, vif_off=1,
            pending_entry=w.vcpu + VOFF["pending_entry"],
        )  # fmt: skip

    # -- boot -----------------------------------------------------------------------

    def attach(self, m) -> None:
        self.m = m
        image = m.image
        if image is None or image.backend != self.name or not image.hole_segments:
            raise AfterburnError("the xen backend needs an image rewritten for xen")
        uc = m.uc
        self.w = self.wedge_image()
        self.vcpu = self.w.vcpu
        uc.mem_map(HOLE_BASE, HOLE_SIZE)
        for seg in image.hole_segments:
            uc.mem_write(seg.paddr, seg.data + b"\0" * (seg.memsz - len(seg.data)))
        self.wedge_range = (min(s.paddr for s in image.hole_segments), max(s.end for s in image.hole_segments))
        self.sites = sorted(image.patched, key=lambda p: p.start)
        self._site_starts = [p.start for p in self.sites]
        self.mmu = Mmu(self)
        self._trap_regs = RegBatch(uc, [UC_X86_REG_CS, UC_X86_REG_EIP])
        self._hypercall_regs = RegBatch(uc, [UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX,
                                             UC_X86_REG_ESI, UC_X86_REG_EDI])  # fmt: skip
        self.timer = OneShotTimer(self)
        m.clock.register(self.timer)
        self._real_gdt()
        records = image.elf.section(".afterburn")
        start = [abi.STARTINFO_MAGIC, image.entry, MB1_BOOT_MAGIC, MBI_ADDR, BOOT_GDT, len(BOOT_GDT_BYTES) - 1,
                 BOOT_CS, BOOT_DS, BOOT_STACK, records.addr if records else 0, (records.size // 8) if records else 0,
                 m.ram_size >> 12, SHARED_INFO]  # fmt: skip
        uc.mem_write(START_INFO, struct.pack(f"<{len(start)}I", *start))
        uc.mem_write(SHARED_INFO + abi.SHINFO["upcall_mask"], b"\1")
        for addr in image.unrecorded:
            uc.hook_add(UC_HOOK_CODE, self._unrecorded_executed, None, addr, addr)
        # The vCPU starts in the wedge at ring 1, paging off, real IF on.
        uc.reg_write(UC_X86_REG_CR0, 0x11)
        uc.reg_write(UC_X86_REG_CR4, 0)
        uc.reg_write(UC_X86_REG_GDTR, (0, REAL_GDT, GDT_ENTRIES * 8 - 1, 0))
        load_cs_ss(uc, m.cpu.ctx, HYP_CS, HYP_DS)
        for reg in (UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GS):
            uc.reg_write(reg, HYP_DS)
        uc.reg_write(UC_X86_REG_ESP, self.w.sym("boot_stack_top"))
        uc.reg_write(UC_X86_REG_ESI, START_INFO)
        uc.reg_write(UC_X86_REG_EFLAGS, 0x202)
        uc.reg_write(UC_X86_REG_EIP, self.w.entry)

    def _real_gdt(self) -> None:
        """The hypervisor's own flat selectors at the top of the real GDT."""
        top = b"".join([gdt_entry(0, 0xFFFFF, 0xBB, 0xC), gdt_entry(0, 0xFFFFF, 0xB3, 0xC),
                        gdt_entry(0, 0xFFFFF, 0xFB, 0xC), gdt_entry(0, 0xFFFFF, 0xF3, 0xC)])  # fmt: skip
        self.m.uc.mem_write(REAL_GDT + (HYP_CS & ~7), top)

    def gdt_capacity(self) -> int:
        return GUEST_GDT_MAX

    # -- descriptor tables: ring-compressed shadows ------------------------------------

    def shadow_gdt(self, base: int, entries: int) -> int:
        """Copy the guest's GDT into the real one, index for index, with
        DPL 0 made DPL 1 (ring compression) and accessed bits preset (the CPU
        may not write the real table).  Later guest writes to its GDT are
        picked up by the wedge, which compares entries before every segment
        load and asks for update_descriptor when one differs."""
        raw = self.mmu.read(base, entries * 8)
        if raw is None:
            return -abi.EFAULT
        self.gdt = (base, entries)
        self._write_shadow(REAL_GDT, raw)
        self.m.uc.mem_write(REAL_GDT + entries * 8, b"\0" * ((GUEST_GDT_MAX - entries) * 8))
        return 0

    def shadow_ldt(self, base: int, entries: int) -> None:
        if entries == 0:
            self.ldt = None
            self.m.uc.reg_write(UC_X86_REG_LDTR, (0, 0, 0, 0))
            return
        raw = self.mmu.read(base, entries * 8)
        if raw is None:
            raise Kill(f"LDT at {base:#x} is not mapped")
        self.ldt = (base, entries)
        self._write_shadow(REAL_LDT, raw)
        # The LDTR cache points at the shadow; the selector itself is never
        # loaded natively (lldt is emulated).
        self.m.uc.reg_write(UC_X86_REG_LDTR, (0, REAL_LDT, entries * 8 - 1, 0x8200))

    def _write_shadow(self, where: int, raw: bytes) -> None:
        out = bytearray()
        for i in range(0, len(raw), 8):
            lo, hi = struct.unpack_from("<II", raw, i)
            out += struct.pack("<II", *self._compress(lo, hi))
        self.m.uc.mem_write(where, bytes(out))

    @staticmethod
    def _compress(lo: int, hi: int) -> tuple[int, int]:
        if not hi & 0x8000:
            return lo, hi
        if hi & 0x1000:  # code/data: DPL 0 -> 1, accessed preset
            if (hi >> 13) & 3 == 0:
                hi |= 1 << 13
            return lo, hi | 0x100
        # System descriptors are used only by the wedge's emulation (lldt,
        # ltr, call gates are not entered natively): keep them not present.
        return lo, hi & ~0x8000

    def reshadow_entry(self, linear: int) -> bool:
        """Copy one descriptor of the guest's GDT or LDT into the real table."""
        for table, where in ((self.gdt, REAL_GDT), (self.ldt, REAL_LDT)):
            if table is None:
                continue
            base, entries = table
            if base <= linear < base + entries * 8 and not (linear - base) & 7:
                raw = self.mmu.read(linear, 8)
                if raw is None:
                    return False
                self._write_shadow(where + (linear - base), raw)
                return True
        return False

    def after_pt_change(self) -> None:
        if self.mmu.paging:
            reason = self.mmu.pin(self.mmu.base)
            if reason:
                raise Kill(f"page tables now invalid: {reason}")

    def set_paging(self, cr0: int, cr4: int) -> None:
        mmu = self.mmu
        mmu.wp = bool(cr0 & 0x10000)
        mmu.pse = bool(cr4 & 0x10)
        if cr4 & 0x20 and cr0 & 0x80000000:
            raise Kill("PAE paging is not supported")
        paging = bool(cr0 & 0x80000000)
        if paging and not mmu.paging:
            reason = mmu.pin(self.read_vcpu("cr3"))
            if reason:
                raise Kill(f"enabling paging: {reason}")
        mmu.paging = paging
        mmu.flush()

    # -- the vCPU ------------------------------------------------------------------

    def read_vcpu(self, name: str, index: int = 0) -> int:
        return struct.unpack("<I", self.m.uc.mem_read(self.vcpu + VOFF[name] + 4 * index, 4))[0]

    def shinfo(self, field: str, size: int = 1) -> int:
        data = self.m.uc.mem_read(SHARED_INFO + abi.SHINFO[field], size)
        return int.from_bytes(data, "little")

    def set_shinfo(self, field: str, value: int, size: int = 1) -> None:
        self.m.uc.mem_write(SHARED_INFO + abi.SHINFO[field], value.to_bytes(size, "little"))

    def set_pending(self, on: bool) -> None:
        """Xen's evtchn_upcall_pending, and the frontend's copy of the same
        fact: the entry every sti patch calls (a bare ret, or w_pending)."""
        self.set_shinfo("upcall_pending", int(on))
        entry = self.w.sym("w_pending" if on else "w_ret")
        self.m.uc.mem_write(self.vcpu + VOFF["pending_entry"], struct.pack("<I", entry))

    def interrupts_enabled(self) -> bool:
        return self.shinfo("upcall_mask") == 0

    def in_noirq_window(self, eip: int) -> bool:
        if self.wedge_range[0] <= eip < self.wedge_range[1]:
            return True
        site = self.site_at(eip)
        return site is not None and site.start < eip

    # -- events ------------------------------------------------------------------

    def raise_event(self, port: int, vector: int | None = None) -> None:
        if vector is not None:
            self.m.uc.mem_write(SHARED_INFO + abi.SHINFO["afterburn_vector"] + 4 * port, struct.pack("<I", vector))
        pending = self.shinfo("evtchn_pending", 4) | (1 << port)
        self.set_shinfo("evtchn_pending", pending, 4)
        self.set_shinfo("pending_sel", 1, 4)
        self.set_pending(True)

    def poll_interrupts(self) -> None:
        m = self.m
        if self._sti_shadow or not m.pic.has_interrupt():
            return  # (in the sti shadow, the next instruction runs first: see slice_limit)
        if not self.interrupts_enabled():
            self.set_pending(True)  # the wedge checks on every re-enable
            return
        if self.in_noirq_window(m.cpu.eip):
            self._short_slice = True
            return
        vector = m.pic.acknowledge()
        m.stats.interrupts += 1
        m.stats.exits["upcall"] += 1
        self.raise_event(abi.PIC_PORT, vector)
        self.enter_wedge(self.callback[1] if self.callback else self.w.sym("w_upcall"), [], upcall=True)

    def slice_limit(self) -> int | None:
        if self._sti_shadow:
            self._sti_shadow = False
            return 1  # the instruction after sti runs before the interrupt
        if self._short_slice:
            self._short_slice = False
            return 8
        return None

    def sti_shadow(self, resume: int) -> int:
        """physdev afterburn_sti: sti found an interrupt pending.  The
        hardware takes it after the next instruction (the sti shadow, which
        makes "sti; hlt" atomic).  So stop when the guest reaches that
        instruction (``resume``, where the wedge returns), run exactly it,
        then deliver."""
        m = self.m

        def reached(uc, address, size, _user):
            uc.hook_del(self._shadow_hook)
            self._sti_shadow = True
            m.end_slice()

        self._shadow_hook = m.uc.hook_add(UC_HOOK_CODE, reached, None, resume, resume)
        # Unicorn compiles code hooks into translated blocks: a block already
        # translated at ``resume`` would never call this one.
        m.uc.ctl_remove_cache(resume, resume + 1)
        return 0

    def inta(self) -> int:
        """physdev afterburn_inta: the wedge takes an interrupt at a
        re-enable point (IF is set again and something is pending)."""
        m = self.m
        if self.interrupts_enabled() and m.pic.has_interrupt():
            vector = m.pic.acknowledge()
            m.stats.interrupts += 1
            if not m.pic.has_interrupt():
                self.set_pending(False)
            return vector
        self.set_pending(False)
        return -1

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

    # -- entering the wedge (traps, upcalls) ---------------------------------------------

    def guest_context(self) -> tuple[list[int], int, int]:
        """The interrupted guest context as the guest sees it: the frame words
        (EIP, CS, EFLAGS[, ESP, SS]), and the stack and SS to push them on."""
        uc = self.m.uc
        eip, cs = uc.reg_read(UC_X86_REG_EIP), uc.reg_read(UC_X86_REG_CS)
        real = uc.reg_read(UC_X86_REG_EFLAGS)
        eflags = (real & ~(IF | IOPL | NT | RF | VM)) | self.read_vcpu("eflags_sys") | 0x2
        if self.interrupts_enabled():
            eflags |= IF
        if cs & 3 == 3:
            kss, kesp = self.kernel_stack or self._tss_stack()
            words = [eip, cs, eflags, uc.reg_read(UC_X86_REG_ESP), uc.reg_read(UC_X86_REG_SS)]
            return words, kesp, (kss & ~3) | 1
        return [eip, self.read_vcpu("seg", 1), eflags], uc.reg_read(UC_X86_REG_ESP), uc.reg_read(UC_X86_REG_SS)

    def _tss_stack(self) -> tuple[int, int]:
        tr = self.read_vcpu("tr")
        gdt_base = self.read_vcpu("gdt_base")
        desc = self.mmu.read(gdt_base + (tr & ~7), 8) if tr & ~3 else None
        if desc is None:
            raise Kill("entry from ring 3 without a TSS")
        lo, hi = struct.unpack("<II", desc)
        base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        raw = self.mmu.read(base + 4, 8)
        if raw is None:
            raise Kill("the TSS is not mapped")
        esp0, ss0 = struct.unpack("<II", raw)
        return ss0 & 0xFFFF, esp0

    def enter_wedge(self, target: int, extra: list[int], upcall: bool = False) -> None:
        """Push the guest-visible frame (and ``extra`` below it: error code,
        info word) and continue at ``target`` in the wedge, ring 1."""
        m, uc = self.m, self.m.uc
        words, esp, ss = self.guest_context()
        frame = list(reversed(extra)) + words
        esp = (esp - 4 * len(frame)) & 0xFFFFFFFF
        if not self.mmu.write(esp, struct.pack(f"<{len(frame)}I", *frame)):
            m.stop("fault", f"guest stack at {esp:#x} not writable for a trap frame")
            return
        if upcall:
            self.set_shinfo("upcall_mask", 1)
        if (uc.reg_read(UC_X86_REG_CS) & 3) == 3 or uc.reg_read(UC_X86_REG_SS) != ss:
            load_cs_ss(uc, m.cpu.ctx, HYP_CS, ss)
        else:
            uc.reg_write(UC_X86_REG_CS, HYP_CS)
        uc.reg_write(UC_X86_REG_ESP, esp)
        uc.reg_write(UC_X86_REG_EFLAGS, 0x202)
        uc.reg_write(UC_X86_REG_EIP, target)

    def deliver_trap(self, vector: int, err: int | None, soft_len: int = 0) -> None:
        info = vector | ((err is not None) << 8) | ((soft_len > 0) << 9) | (soft_len << 12)
        extra = [err, info] if err is not None else [info]
        target = self.traps.get(vector, (HYP_CS, self.w.sym("w_trap"), 0))[1]
        self.m.stats.exits[f"trap {vector:#x}"] += 1
        self.enter_wedge(target, extra)

    # -- what Unicorn reports -----------------------------------------------------------

    def on_trap(self, vector: int, err: int | None, software: bool) -> bool:
        m = self.m
        cs, eip = self._trap_regs.read()
        cpl = cs & 3
        in_wedge = self.wedge_range[0] <= eip - (2 if software else 0) < self.wedge_range[1]
        if software and vector == abi.HYPERCALL_VECTOR and cpl == 1:
            self.hypercall()
            return True
        if in_wedge:
            m.stop("error", f"{'int' if software else 'exception'} {vector:#x} inside the wedge at {eip:#x} "
                            f"(emulating the site called from {self.read_vcpu('site_ret'):#x})")  # fmt: skip
            return True
        soft_len = self._soft_len(eip, vector) if software else 0
        if cpl == 1 and (software or vector in (13, 6)) and self._escape(eip - soft_len):
            return True
        self.deliver_trap(vector, err, soft_len)
        return True

    def _soft_len(self, eip: int, vector: int) -> int:
        last = self.mmu.read(eip - 1, 1)
        return 1 if last is not None and (vector, last[0]) in ((3, 0xCC), (4, 0xCE)) else 2

    def _escape(self, addr: int) -> bool:
        """A sensitive instruction ran natively in the guest kernel: report it."""
        code = self.mmu.read(addr, 16)
        insn = decode.decode_one(code, 0, addr) if code else None
        kind = isa.classify(insn) if insn is not None else None
        if kind is None:
            return False
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        self.m.stop("escape", f"unrewritten {kind.name} ({text}) at {addr:#x} ({self.m.symbolize(addr)}) "
                              "reached the hypervisor")  # fmt: skip
        return True

    def _unrecorded_executed(self, uc, address, size, _user) -> None:
        if uc.reg_read(UC_X86_REG_CS) & 3 != 3:
            self._escape(address)

    def on_port_io(self, port: int, size: int, value: int | None) -> int | None:
        uc = self.m.uc
        eip = uc.reg_read(UC_X86_REG_EIP)
        if uc.reg_read(UC_X86_REG_CS) & 3 == 3:
            # User code doing port I/O (a demoted site): the devices answer,
            # exactly as bare lets them.
            self.m.stats.exits["io"] += 1
            if value is None:
                return self.m.bus.read(port, size)
            self.m.bus.write(port, size, value)
            return None
        if not self._escape(eip):
            self.m.stop("escape", f"native port I/O to {port:#x} near {eip:#x} reached the hypervisor")
        return 0 if value is None else None

    def on_halt(self) -> None:
        self.m.stop("escape", f"native hlt near {self.m.uc.reg_read(UC_X86_REG_EIP):#x}")

    def on_emulation_error(self, error) -> bool:
        fault, self.mmu.fault = self.mmu.fault, None
        if fault is None:
            return False
        m = self.m
        if fault.why == "page":
            va = self.mmu.fault_address.value()  # the exact address, not just its page
            self.set_shinfo("cr2", va, 4)
            m.uc.reg_write(UC_X86_REG_CR2, va)
            m.stats.exits["page fault"] += 1
            self.deliver_trap(14, fault.error_code)
            return True
        if fault.why == "hole" and fault.user:
            self.user_site(fault)
            return True
        if fault.why == "protected":
            self.emulate_protected_write(fault)
            return True
        if fault.why == "foreign":
            m.stop("killed", f"the guest maps frame {fault.frame:#x}, which it does not own")
            return True
        if fault.why == "unmapped":
            m.stop("error", f"access to unmapped guest-physical memory at {fault.va:#x}")
            return True
        m.stop("error", f"refused access to {fault.va:#x} ({fault.why})")
        return True

    def emulate_protected_write(self, fault) -> None:
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

    def user_site(self, fault) -> None:
        """Guest user code reached a patched site: the patch's first access to
        the hole faulted (it is supervisor-only) before changing anything
        but, for a call, the pushed return address."""
        uc = self.m.uc
        eip, esp = uc.reg_read(UC_X86_REG_EIP), uc.reg_read(UC_X86_REG_ESP)
        if eip >= HOLE_BASE:  # the call went through: the return address says which site
            ret = self.mmu.read(esp, 4)
            addr = struct.unpack("<I", ret)[0] - 1 if ret else -1
            esp += 4
        else:
            addr = eip
        site = self.site_at(addr)
        if site is None:
            # Not a site: user code touched the hole, which its page tables do
            # not map (as far as it knows): a page fault like any other.
            self.set_shinfo("cr2", fault.va, 4)
            self.deliver_trap(14, fault.error_code)
            return
        self.demote(site)
        uc.reg_write(UC_X86_REG_ESP, esp)
        uc.reg_write(UC_X86_REG_EIP, site.start)

    def site_at(self, addr: int):
        i = bisect.bisect_right(self._site_starts, addr) - 1
        return self.sites[i] if i >= 0 and self.sites[i].start <= addr < self.sites[i].end else None

    def _write_site(self, site, data: bytes) -> None:
        self.m.uc.mem_write(self.mmu.virt_to_phys(site.start), data)
        # Unicorn does not notice the host rewriting code it has translated.
        self.m.uc.ctl_remove_cache(site.start, site.end)

    def demote(self, site) -> None:
        """User code runs this site: give it back its original bytes.  At
        CPL 3 the native instruction behaves exactly as on hardware, faults
        included, and a kernel handler that reads the faulting instruction
        sees the real one, not a patch.  A code hook watches the site: when
        the kernel reaches it again, it is patched again."""
        uc = self.m.uc
        self.m.stats.exits["user-mode site"] += 1
        patch = bytes(uc.mem_read(self.mmu.virt_to_phys(site.start), site.end - site.start))
        self._write_site(site, site.original)
        hook = uc.hook_add(UC_HOOK_CODE, self._demoted_reached, site, site.start, site.start)
        self._demoted[site.start] = (hook, patch)

    def _demoted_reached(self, uc, address, size, site) -> None:
        if uc.reg_read(UC_X86_REG_CS) & 3 == 3:
            return
        hook, patch = self._demoted.pop(site.start)
        uc.hook_del(hook)
        self._write_site(site, patch)
        uc.reg_write(UC_X86_REG_EIP, address)  # restart the site, now patched
        self.m.end_slice()

    # -- hypercalls -------------------------------------------------------------------

    def hypercall(self) -> None:
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
        if not m.stopped:
            uc.reg_write(UC_X86_REG_EAX, result & 0xFFFFFFFF)

    def port_io(self, arg: int) -> int:
        """physdev afterburn_pio: one access, or a string of them."""
        m = self.m
        port, size, flags, value, count, buf = struct.unpack("<HBBIII", _read(self, arg, 16))
        m.stats.exits["io"] += 1
        m.sync_clock()
        if size not in (1, 2, 4):
            raise Kill(f"port I/O of size {size}")
        if not flags & abi.PIO_STRING:
            if flags & abi.PIO_IN:
                _write(self, arg + 4, struct.pack("<I", m.bus.read(port, size)))
            else:
                m.bus.write(port, size, value)
            return 0
        step = -size if flags & abi.PIO_REP_BACKWARD else size
        done = 0
        for i in range(count):
            addr = (buf + i * step) & 0xFFFFFFFF
            if flags & abi.PIO_IN:
                if not self.mmu.write(addr, m.bus.read(port, size).to_bytes(size, "little")):
                    break
            else:
                data = self.mmu.read(addr, size)
                if data is None:
                    break
                m.bus.write(port, size, int.from_bytes(data, "little"))
            done += 1
            if m.stopped:
                break
        return done

    # -- observation ------------------------------------------------------------------

    def guest_eip(self) -> int:
        eip = self.m.uc.reg_read(UC_X86_REG_EIP)
        if self.wedge_range[0] <= eip < self.wedge_range[1] and self.read_vcpu("depth"):
            site = self.site_at(self.read_vcpu("site_ret") - 1)
            if site is not None:
                return site.end
        return eip

    def vcpu_state(self) -> dict[str, int]:
        """The guest-visible CPU: virtual control state, and the guest's
        registers (from the wedge's frame when the run ended inside it)."""
        uc = self.m.uc
        regs = {name: uc.reg_read(r) for name, r in GPRS.items()}
        real_eflags = uc.reg_read(UC_X86_REG_EFLAGS)
        eip = uc.reg_read(UC_X86_REG_EIP)
        if self.wedge_range[0] <= eip < self.wedge_range[1] and self.read_vcpu("depth"):
            frame = self.read_vcpu("frame")
            raw = self.mmu.read(frame, 48)
            if raw:
                _, _, edi, esi, ebp, esp_, ebx, edx, ecx, eax, real_eflags, _ret = struct.unpack("<12I", raw)
                regs = {"eax": eax, "ecx": ecx, "edx": edx, "ebx": ebx, "esp": esp_ + 8, "ebp": ebp, "esi": esi,
                        "edi": edi}  # fmt: skip
        eflags = (real_eflags & ~(IF | IOPL | NT | RF | VM)) | self.read_vcpu("eflags_sys") | 0x2
        if self.interrupts_enabled():
            eflags |= IF
        st = dict(regs)
        seg = [self.read_vcpu("seg", i) & 0xFFFF for i in range(6)]
        st.update(eip=self.m.canonical_eip(self.guest_eip()), eflags=eflags, es=seg[0], cs=seg[1], ss=seg[2],
                  ds=seg[3], fs=seg[4], gs=seg[5], cr0=self.read_vcpu("cr0"), cr2=self.read_vcpu("cr2"),
                  cr3=self.read_vcpu("cr3"), cr4=self.read_vcpu("cr4"), gdt_base=self.read_vcpu("gdt_base"),
                  gdt_limit=self.read_vcpu("gdt_limit"), idt_base=self.read_vcpu("idt_base"),
                  idt_limit=self.read_vcpu("idt_limit"))  # fmt: skip
        return st

