"""The hypervisor half of the wedge protocol, shared by every rewriting backend.

A rewriting backend runs the guest kernel deprivileged (at ring 1 or ring 3)
with its sensitive instructions patched into calls to the wedge, the
in-guest monitor (``wedge/``).  Most of what the hypervisor does for that is
the same whatever the hypervisor is, and lives here, as QEMU's
``i8259_common.c`` holds what its 8259 implementations share and lguest's
core holds what its architectures share:

* boot: map the hypervisor hole, load the wedge, hand it the start info,
  start the vCPU in the wedge at the guest kernel's ring;
* the virtual CPU: read the wedge's ``struct vcpu``, report the guest-visible
  state, canonicalise an EIP inside a site or the wedge;
* modes: which mode the guest is in (kernel or user) is the hypervisor's to
  know, not the CPU's (at ring 3 both have CPL 3); the hole is mapped only in
  kernel mode, so user code can never reach the wedge, and in user mode the
  real IF and IOPL are the guest's own;
* interrupts: the pending protocol with the wedge (``vcpu.pending_entry``),
  no-interrupt windows (inside the wedge or a patched site), the sti shadow,
  acknowledging the 8259 at a re-enable point;
* traps: the guest-visible frame and the default way into the wedge (a
  bounce frame, ``wedge/src/bounce.S``); escapes (a sensitive instruction
  that reached the hypervisor unrewritten) are reported, never run;
* patched sites that guest user code reaches get their original bytes back
  (natively exact at CPL 3) and are patched again when the kernel returns;
* services the backend's calls dispatch to: port I/O (``struct pio``),
  entering user mode (``struct uframe``), acknowledging interrupts.

A backend (see ``backends/xen``) adds its ABI: how the wedge calls it
(:meth:`hypercall`), where the virtual IF lives (``vif_*``), how an interrupt
reaches the guest (:meth:`deliver_interrupt`), its MMU policy
(:meth:`make_mmu`, :meth:`on_protected_write`), what else it puts in the
start info, and its wedge layer (``wedge/<layer>/``).  Everything in
``wedge/layout.py`` is shared with the wedge from one definition.
"""
from __future__ import annotations

import bisect
import struct
from typing import ClassVar

from unicorn import UC_HOOK_CODE, UcError
from unicorn.x86_const import (
    UC_X86_REG_CR0, UC_X86_REG_CR4, UC_X86_REG_CS, UC_X86_REG_DS, UC_X86_REG_EAX, UC_X86_REG_EBP,
    UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDI, UC_X86_REG_EDX, UC_X86_REG_EFLAGS, UC_X86_REG_EIP,
    UC_X86_REG_ES, UC_X86_REG_ESI, UC_X86_REG_ESP, UC_X86_REG_FS, UC_X86_REG_GDTR, UC_X86_REG_GS, UC_X86_REG_SS,
)  # fmt: skip

import wedge as wedge_pkg
from afterburn import decode, isa
from afterburn.errors import AfterburnError
from wedge.layout import (
    FRAME, GDT_ENTRIES, HOLE_BASE, HOLE_SIZE, PIO, PIO_IN, PIO_REP_BACKWARD, PIO_STRING, REAL_GDT, STARTINFO_MAGIC,
    START_INFO, UFRAME, WedgeConfig, hyp_selectors, start_info, trap_info, vcpu_offsets,
)  # fmt: skip

from ..base import Backend
from ..pc.cpu import GPRS
from ..pc.loader import BOOT_CS, BOOT_DS, BOOT_GDT, BOOT_GDT_BYTES, BOOT_STACK, MB1_BOOT_MAGIC, MBI_ADDR, gdt_entry
from ..pc.uc_ext import RegBatch, load_cs_ss
from .mmu import GuestMmu

IF, IOPL, NT, RF, VM = 0x200, 0x3000, 0x4000, 0x10000, 0x20000
VOFF = vcpu_offsets()


class Kill(Exception):
    """The guest did something a hypervisor cannot allow: the run ends
    "killed" with this reason."""


class WedgedBackend(Backend):
    rewrites = True
    guest_cpl: ClassVar[int]  # the real ring of the guest kernel and the wedge: 1 or 3
    wedge_layer: ClassVar[str]  # the directory under wedge/ with this backend's be_* primitives
    hypercall_vectors: ClassVar[frozenset[int]]  # the int vectors the guest kernel (and the wedge) call the hypervisor on
    vif_addr: ClassVar[int]  # the byte that holds the virtual IF...
    vif_on: ClassVar[int]  # ...and its values
    vif_off: ClassVar[int]

    def __init__(self) -> None:
        self._user = False  # in guest user mode (kept here only for a ring-3 guest kernel)
        self._short_slice = False
        self._sti_shadow = False
        self._demoted: dict[int, tuple[int, bytes]] = {}  # site start -> (code hook, patch)

    # -- building the wedge and the patches ------------------------------------------

    def wedge_config(self) -> WedgeConfig:
        return WedgeConfig(self.guest_cpl, self.vif_addr, self.vif_on, self.vif_off)

    def wedge_headers(self) -> dict[str, str]:
        """Headers the backend's wedge layer includes, generated from its ABI (name -> text)."""
        return {}

    def wedge_image(self) -> wedge_pkg.WedgeImage:
        return wedge_pkg.build(self.wedge_layer, self.wedge_config(), self.wedge_headers())

    def template_context(self, w: wedge_pkg.WedgeImage):
        from rewriter.templates import Context

        return Context(
            entries={e: w.sym(e) for e in (*wedge_pkg.ENTRY_POINTS,
                                            *(f"{e}_seg" for e in wedge_pkg.SEG_ENTRY_POINTS))},
            scratch=w.vcpu + VOFF["scratch"], vif=self.vif_addr, vif_on=self.vif_on, vif_off=self.vif_off,
            pending_entry=w.vcpu + VOFF["pending_entry"],
        )  # fmt: skip

    # -- what a backend adds ----------------------------------------------------------

    def make_mmu(self) -> GuestMmu:
        return GuestMmu(self)

    def attach_backend(self) -> None:
        """Backend set-up after the hole is mapped and before the vCPU starts."""

    def start_info_words(self) -> list[int]:
        """The backend's words after the generic start info."""
        return []

    def hypercall(self, vector: int) -> None:
        """The guest kernel (or the wedge) executed ``int vector``, one of
        ``hypercall_vectors``; EIP is past the instruction."""
        raise NotImplementedError

    def deliver_interrupt(self, vector: int) -> None:
        """The 8259 gave ``vector`` and the guest can take it: get it to the wedge."""
        raise NotImplementedError

    def delivery_deferred(self) -> None:
        """An interrupt waits because the CPU is inside the wedge or a site;
        it is retried a few instructions on."""

    def pending_changed(self, on: bool) -> None:
        """The backend's own copy of "an interrupt may be waiting", if it has one."""

    def mode_changed(self, user: bool) -> None:
        """The guest entered user mode (True) or its kernel (False); at ring 3
        only, where no privilege change tells the CPU."""

    def record_fault_address(self, va: int) -> None:
        """Where the wedge's ``be_cr2`` finds the address of the #PF being delivered."""
        raise NotImplementedError

    def on_protected_write(self, fault) -> None:
        """The guest wrote a frame the backend protects."""
        self.m.stop("error", f"write to protected frame {fault.frame:#x}")

    def host_fault(self, fault) -> None:
        """The host's own address space has no mapping for an access (for a
        backend whose MMU answers from host-owned spaces)."""
        self.m.stop("error", f"no host mapping for {fault.va:#x}")

    def kernel_stack(self) -> tuple[int, int]:
        """(SS, ESP) for an entry from user mode: the guest TSS's ring-0 stack."""
        tr, gdt_base = self.read_vcpu("tr"), self.read_vcpu("gdt_base")
        desc = self.mmu.read(gdt_base + (tr & ~7), 8) if tr & ~3 else None
        if desc is None:
            raise Kill("entry from user mode without a TSS")
        lo, hi = struct.unpack("<II", desc)
        base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        raw = self.mmu.read(base + 4, 8)
        if raw is None:
            raise Kill("the TSS is not mapped")
        esp0, ss0 = struct.unpack("<II", raw)
        return ss0 & 0xFFFF, esp0

    # -- boot -----------------------------------------------------------------------

    def attach(self, m) -> None:
        self.m = m
        image = m.image
        if image is None or image.backend != self.name or not image.hole_segments:
            raise AfterburnError(f"the {self.name} backend needs an image rewritten for {self.name}")
        uc = m.uc
        self.w = self.wedge_image()
        self.vcpu = self.w.vcpu
        uc.mem_map(HOLE_BASE, HOLE_SIZE)
        for seg in image.hole_segments:
            if not (HOLE_BASE <= seg.paddr and seg.end <= 1 << 32):
                raise AfterburnError(f"{image.path}: a wedge segment lies outside the hypervisor hole")
            uc.mem_write(seg.paddr, seg.data + b"\0" * (seg.memsz - len(seg.data)))
        self.wedge_range = (min(s.paddr for s in image.hole_segments), max(s.end for s in image.hole_segments))
        self.sites = sorted(image.patched, key=lambda p: p.start)
        self._site_starts = [p.start for p in self.sites]
        self.mmu = self.make_mmu()
        self._trap_regs = RegBatch(uc, [UC_X86_REG_CS, UC_X86_REG_EIP])
        self.hyp_cs, self.hyp_ds = hyp_selectors(self.guest_cpl)
        self._hyp_gdt()
        records = image.elf.section(".afterburn")
        info = start_info(magic=STARTINFO_MAGIC, entry=image.entry, eax=MB1_BOOT_MAGIC, ebx=MBI_ADDR,
                          gdt_base=BOOT_GDT, gdt_limit=len(BOOT_GDT_BYTES) - 1, cs=BOOT_CS, ds=BOOT_DS,
                          esp=BOOT_STACK, sites=records.addr if records else 0,
                          nsites=(records.size // 8) if records else 0)  # fmt: skip
        extra = self.start_info_words()
        uc.mem_write(START_INFO, info + struct.pack(f"<{len(extra)}I", *extra))
        uc.mem_write(self.vif_addr, bytes([self.vif_off]))
        self.attach_backend()
        for addr in image.unrecorded:
            uc.hook_add(UC_HOOK_CODE, self._unrecorded_executed, None, addr, addr)
        # The vCPU starts in the wedge at the guest kernel's ring, paging
        # off, the real IF on (the virtual one is off).
        uc.reg_write(UC_X86_REG_CR0, 0x11)
        uc.reg_write(UC_X86_REG_CR4, 0)
        uc.reg_write(UC_X86_REG_GDTR, (0, REAL_GDT, GDT_ENTRIES * 8 - 1, 0))
        load_cs_ss(uc, m.cpu.ctx, self.hyp_cs, self.hyp_ds)
        for reg in (UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GS):
            uc.reg_write(reg, self.hyp_ds)
        uc.reg_write(UC_X86_REG_ESP, self.w.sym("boot_stack_top"))
        uc.reg_write(UC_X86_REG_ESI, START_INFO)
        uc.reg_write(UC_X86_REG_EFLAGS, 0x202)
        uc.reg_write(UC_X86_REG_EIP, self.w.entry)

    def _hyp_gdt(self) -> None:
        """The hypervisor's own flat code and data selectors, at the top of the real GDT."""
        dpl = self.guest_cpl << 5
        top = gdt_entry(0, 0xFFFFF, 0x9B | dpl, 0xC) + gdt_entry(0, 0xFFFFF, 0x93 | dpl, 0xC)
        self.m.uc.mem_write(REAL_GDT + (self.hyp_cs & ~7), top)

    # -- modes ------------------------------------------------------------------------

    def in_user_mode(self) -> bool:
        """Whether the guest runs in its user mode.  Below ring 3 the CPU
        knows (the guest kernel's CPL is not 3); at ring 3 only we do."""
        if self.guest_cpl < 3:
            return (self.m.uc.reg_read(UC_X86_REG_CS) & 3) == 3
        return self._user

    def _set_user(self, user: bool) -> None:
        if self.guest_cpl == 3 and user != self._user:
            self._user = user
            # Kernel and user share a CPL, so they share QEMU's TLB: drop the
            # kernel's translations (the hole, supervisor pages) or keep the
            # user's out.
            self.mmu.flush()
            self.mode_changed(user)

    # -- the vCPU --------------------------------------------------------------------

    def read_vcpu(self, name: str, index: int = 0) -> int:
        return struct.unpack("<I", self.m.uc.mem_read(self.vcpu + VOFF[name] + 4 * index, 4))[0]

    def vif(self) -> bool:
        return self.m.uc.mem_read(self.vif_addr, 1)[0] == self.vif_on

    def set_vif(self, on: bool) -> None:
        self.m.uc.mem_write(self.vif_addr, bytes([self.vif_on if on else self.vif_off]))

    def set_pending(self, on: bool) -> None:
        """Tell the wedge whether an interrupt may be waiting: the entry
        every sti patch calls (a bare ret, or w_pending), and the backend's
        own flag."""
        self.pending_changed(on)
        entry = self.w.sym("w_pending" if on else "w_ret")
        self.m.uc.mem_write(self.vcpu + VOFF["pending_entry"], struct.pack("<I", entry))

    def interrupts_enabled(self) -> bool:
        if self.in_user_mode():
            return bool(self.m.uc.reg_read(UC_X86_REG_EFLAGS) & IF)
        return self.vif()

    def in_wedge(self, eip: int) -> bool:
        """Whether EIP is the monitor's code: the wedge, or anything else the
        backend put in the hole (an L4 KIP's system-call stubs)."""
        return HOLE_BASE <= eip

    def in_noirq_window(self, eip: int) -> bool:
        if self.in_wedge(eip):
            return True
        site = self.site_at(eip)
        return site is not None and site.start < eip

    def guest_eip(self) -> int:
        eip = self.m.uc.reg_read(UC_X86_REG_EIP)
        if self.in_wedge(eip) and self.read_vcpu("depth"):
            site = self.site_at(self.read_vcpu("site_ret") - 1)
            if site is not None:
                return site.end
        return eip

    def vcpu_state(self) -> dict[str, int]:
        """The guest-visible CPU: in kernel mode the virtual control state and
        the guest's registers (from the wedge's frame when the run ended
        inside it); in user mode the real registers are the guest's."""
        uc = self.m.uc
        regs = {name: uc.reg_read(r) for name, r in GPRS.items()}
        real_eflags = uc.reg_read(UC_X86_REG_EFLAGS)
        eip = uc.reg_read(UC_X86_REG_EIP)
        seg = [self.read_vcpu("seg", i) & 0xFFFF for i in range(6)]
        if self.in_user_mode():
            eflags = (real_eflags & ~(RF | VM)) | 0x2
            seg = [uc.reg_read(r) for r in (UC_X86_REG_ES, UC_X86_REG_CS, UC_X86_REG_SS, UC_X86_REG_DS,
                                            UC_X86_REG_FS, UC_X86_REG_GS)]  # fmt: skip
        else:
            if self.in_wedge(eip) and self.read_vcpu("depth"):
                raw = self.mmu.read(self.read_vcpu("frame"), FRAME.size)
                if raw:
                    f = FRAME.unpack(raw)
                    regs = {r: f[r] for r in ("eax", "ecx", "edx", "ebx", "ebp", "esi", "edi")}
                    regs["esp"] = f["esp_"] + 8  # below the stub's pushes: the site's stack pointer
                    real_eflags = f["eflags"]
            eflags = (real_eflags & ~(IF | IOPL | NT | RF | VM)) | self.read_vcpu("eflags_sys") | 0x2
            if self.vif():
                eflags |= IF
        st = dict(regs)
        st.update(eip=self.m.canonical_eip(self.guest_eip()), eflags=eflags, es=seg[0], cs=seg[1], ss=seg[2],
                  ds=seg[3], fs=seg[4], gs=seg[5], cr0=self.read_vcpu("cr0"), cr2=self.read_vcpu("cr2"),
                  cr3=self.read_vcpu("cr3"), cr4=self.read_vcpu("cr4"), gdt_base=self.read_vcpu("gdt_base"),
                  gdt_limit=self.read_vcpu("gdt_limit"), idt_base=self.read_vcpu("idt_base"),
                  idt_limit=self.read_vcpu("idt_limit"))  # fmt: skip
        return st

    # -- guest memory for the hypervisor's services -------------------------------------

    def guest_read(self, va: int, size: int) -> bytes:
        data = self.mmu.read(va, size)
        if data is None:
            raise Kill(f"argument at {va:#x} is not mapped")
        return data

    def guest_write(self, va: int, data: bytes) -> None:
        if not self.mmu.write(va, data):
            raise Kill(f"result at {va:#x} is not writable")

    # -- interrupts --------------------------------------------------------------------

    def poll_interrupts(self) -> None:
        m = self.m
        if self._sti_shadow or not m.pic.has_interrupt():
            if m.watching:
                m.unwatch()
            return  # (in the sti shadow, the next instruction runs first: see slice_limit)
        if not self.interrupts_enabled():
            if self.in_user_mode():
                # User code with IF off: only its own popf or sti (IOPL 3)
                # or a trap into the kernel opens the window; watch for it.
                if not m.watching:
                    m.watch(self.interrupts_enabled)
            else:
                self.set_pending(True)  # the wedge checks at every re-enable point
            return
        if m.watching:
            m.unwatch()
        if self.in_noirq_window(m.cpu.eip):
            self._short_slice = True
            self.delivery_deferred()
            return
        if m.cpu.ctx.irq_inhibited():
            m.step()  # after a user-mode sti or mov ss, as the hardware does
            if m.stopped or not m.pic.has_interrupt() or not self.interrupts_enabled():
                return
        vector = m.pic.acknowledge()
        m.stats.interrupts += 1
        self.deliver_interrupt(vector)

    def slice_limit(self) -> int | None:
        if self._sti_shadow:
            self._sti_shadow = False
            return 1  # the instruction after sti runs before the interrupt
        if self._short_slice:
            self._short_slice = False
            return 8
        return None

    def sti_shadow(self, resume: int) -> int:
        """sti found an interrupt pending.  The hardware takes it after the
        next instruction (the sti shadow, which makes "sti; hlt" atomic).  So
        stop when the guest reaches that instruction (``resume``, where the
        wedge returns), run exactly it, then deliver."""
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
        """The wedge takes an interrupt at a re-enable point (IF is set
        again and something is pending): the vector, or -1."""
        m = self.m
        if self.interrupts_enabled() and m.pic.has_interrupt():
            vector = m.pic.acknowledge()
            m.stats.interrupts += 1
            if not m.pic.has_interrupt():
                self.set_pending(False)
            return vector
        self.set_pending(False)
        return -1

    # -- entering the wedge (traps, upcalls) ---------------------------------------------

    def guest_context(self) -> tuple[list[int], int, int]:
        """The interrupted guest context as the guest sees it: the frame words
        (EIP, CS, EFLAGS[, ESP, SS]), and the stack and SS to push them on."""
        uc = self.m.uc
        eip, cs = uc.reg_read(UC_X86_REG_EIP), uc.reg_read(UC_X86_REG_CS)
        real = uc.reg_read(UC_X86_REG_EFLAGS)
        if self.in_user_mode():
            kss, kesp = self.kernel_stack()
            words = [eip, cs, (real & ~(RF | VM)) | 0x2, uc.reg_read(UC_X86_REG_ESP), uc.reg_read(UC_X86_REG_SS)]
            return words, kesp, (kss & ~3) | self.guest_cpl
        eflags = (real & ~(IF | IOPL | NT | RF | VM)) | self.read_vcpu("eflags_sys") | 0x2
        if self.vif():
            eflags |= IF
        return [eip, self.read_vcpu("seg", 1), eflags], uc.reg_read(UC_X86_REG_ESP), uc.reg_read(UC_X86_REG_SS)

    def enter_wedge(self, target: int, extra: list[int], upcall: bool = False) -> None:
        """Push the guest-visible frame (and ``extra`` below it: error code,
        info word) and continue at ``target`` in the wedge: the default
        bounce frame of ``wedge/src/bounce.S``."""
        m, uc = self.m, self.m.uc
        from_user = self.in_user_mode()
        words, esp, ss = self.guest_context()
        frame = list(reversed(extra)) + words
        esp = (esp - 4 * len(frame)) & 0xFFFFFFFF
        if not self.mmu.write(esp, struct.pack(f"<{len(frame)}I", *frame)):
            m.stop("fault", f"guest stack at {esp:#x} not writable for a trap frame")
            return
        if from_user:
            # The user's IF becomes the virtual one: a trap gate keeps it.
            self.set_vif(bool(words[2] & IF))
            self._set_user(False)
        if upcall:
            self.set_vif(False)
        if (uc.reg_read(UC_X86_REG_CS) & 3) != self.guest_cpl or uc.reg_read(UC_X86_REG_SS) != ss:
            load_cs_ss(uc, m.cpu.ctx, self.hyp_cs, ss)
        else:
            uc.reg_write(UC_X86_REG_CS, self.hyp_cs)
        uc.reg_write(UC_X86_REG_ESP, esp)
        uc.reg_write(UC_X86_REG_EFLAGS, 0x202)
        uc.reg_write(UC_X86_REG_EIP, target)

    def trap_entry(self, vector: int) -> int:
        return self.w.sym("w_trap")

    def upcall(self) -> None:
        self.enter_wedge(self.w.sym("w_upcall"), [], upcall=True)

    def deliver_trap(self, vector: int, err: int | None, soft_len: int = 0) -> None:
        info = trap_info(vector, err is not None, soft_len)
        extra = [err, info] if err is not None else [info]
        self.m.stats.exits[f"trap {vector:#x}"] += 1
        self.enter_wedge(self.trap_entry(vector), extra)

    # -- what Unicorn reports -----------------------------------------------------------

    def on_trap(self, vector: int, err: int | None, software: bool) -> bool:
        m = self.m
        cs, eip = self._trap_regs.read()
        user = self.in_user_mode()
        if software and vector in self.hypercall_vectors and not user:
            # A hypercall is an int on a hypervisor vector in guest kernel
            # mode (the wedge's, or a para-virtual kernel's own), which the
            # hypervisor, not the CPU, tells apart from user mode.
            self.hypercall(vector)
            return True
        if self.in_wedge(eip - (2 if software else 0)):
            m.stop("error", f"{'int' if software else 'exception'} {vector:#x} inside the wedge at {eip:#x} "
                            f"(emulating the site called from {self.read_vcpu('site_ret'):#x})")  # fmt: skip
            return True
        soft_len = self._soft_len(eip, vector) if software else 0
        if not user and (software or vector in (13, 6)) and self._escape(eip - soft_len):
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
        if not self.in_user_mode():
            self._escape(address)

    def on_port_io(self, port: int, size: int, value: int | None) -> int | None:
        m = self.m
        if self.in_user_mode():
            # User code doing port I/O (a demoted site): the devices answer,
            # exactly as the reference lets them.
            m.stats.exits["io"] += 1
            if value is None:
                return m.bus.read(port, size)
            m.bus.write(port, size, value)
            return None
        eip = m.uc.reg_read(UC_X86_REG_EIP)
        if not self._escape(eip):
            m.stop("escape", f"native port I/O to {port:#x} near {eip:#x} reached the hypervisor")
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
            self.record_fault_address(va)
            m.stats.exits["page fault"] += 1
            self.deliver_trap(14, fault.error_code)
            return True
        if fault.why == "hole" and fault.user:
            self.user_site(fault)
            return True
        if fault.why == "protected":
            self.on_protected_write(fault)
            return True
        if fault.why == "host":
            self.host_fault(fault)
            return True
        if fault.why == "foreign":
            m.stop("killed", f"the guest maps frame {fault.frame:#x}, which it does not own")
            return True
        if fault.why == "unmapped":
            m.stop("error", f"access to unmapped guest-physical memory at {fault.va:#x}")
            return True
        m.stop("error", f"refused access to {fault.va:#x} ({fault.why})")
        return True

    # -- patched sites in user mode ------------------------------------------------------

    def user_site(self, fault) -> None:
        """Guest user code reached a patched site: the patch's first access to
        the hole faulted (the hole is not there in user mode) before changing
        anything but, for a call, the pushed return address."""
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
            self.record_fault_address(fault.va)
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
        """User code runs this site: give it back its original bytes.  In
        user mode the native instruction behaves exactly as on hardware,
        faults included, and a kernel handler that reads the faulting
        instruction sees the real one, not a patch.  A code hook watches the
        site: when the kernel reaches it again, it is patched again."""
        uc = self.m.uc
        self.m.stats.exits["user-mode site"] += 1
        patch = bytes(uc.mem_read(self.mmu.virt_to_phys(site.start), site.end - site.start))
        self._write_site(site, site.original)
        hook = uc.hook_add(UC_HOOK_CODE, self._demoted_reached, site, site.start, site.start)
        self._demoted[site.start] = (hook, patch)

    def _demoted_reached(self, uc, address, size, site) -> None:
        if self.in_user_mode():
            return
        hook, patch = self._demoted.pop(site.start)
        uc.hook_del(hook)
        self._write_site(site, patch)
        uc.reg_write(UC_X86_REG_EIP, address)  # restart the site, now patched
        self.m.end_slice()

    # -- services the backend's calls dispatch to ------------------------------------------

    def port_io(self, arg: int) -> int:
        """One port access, or a string of them (``struct pio`` at ``arg``)."""
        req = PIO.unpack(self.guest_read(arg, PIO.size))
        result = self.pio(**req)
        if req["flags"] & PIO_IN and not req["flags"] & PIO_STRING:
            self.guest_write(arg + PIO.offsets["value"], struct.pack("<I", result))
            return 0
        return result

    def pio(self, port: int, size: int, flags: int, value: int = 0, count: int = 0, buf: int = 0) -> int:
        """Carry out one ``struct pio`` request: the value read (IN), or the
        elements done (string forms; their buffer is guest-virtual)."""
        m = self.m
        m.stats.exits["io"] += 1
        m.sync_clock()
        if size not in (1, 2, 4):
            raise Kill(f"port I/O of size {size}")
        if not flags & PIO_STRING:
            if flags & PIO_IN:
                return m.bus.read(port, size)
            m.bus.write(port, size, value)
            return 0
        step = -size if flags & PIO_REP_BACKWARD else size
        done = 0
        for i in range(count):
            addr = (buf + i * step) & 0xFFFFFFFF
            if flags & PIO_IN:
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

    def return_to_user(self, arg: int) -> None:
        """Enter guest user mode with the context in ``struct uframe`` at ``arg``."""
        self.enter_user(UFRAME.unpack(self.guest_read(arg, UFRAME.size)))

    def enter_user(self, u: dict[str, int]) -> None:
        """Load a user context (``struct uframe``'s fields): every register as
        given, the real IF and IOPL the user's."""
        m, uc = self.m, self.m.uc
        cs, ss = u["cs"] & 0xFFFF, u["ss"] & 0xFFFF
        if cs & 3 != 3 or ss & 3 != 3:
            raise Kill(f"return to user mode with selectors {cs:#x}:{ss:#x}")
        m.stats.exits["return to user"] += 1
        try:
            load_cs_ss(uc, m.cpu.ctx, cs, ss)
            for reg, name in ((UC_X86_REG_DS, "ds"), (UC_X86_REG_ES, "es"), (UC_X86_REG_FS, "fs"),
                              (UC_X86_REG_GS, "gs")):  # fmt: skip
                uc.reg_write(reg, u[name] & 0xFFFF)
        except UcError:
            raise Kill(f"return to user mode with selectors the CPU refuses ({cs:#x}:{ss:#x})") from None
        for reg, name in ((UC_X86_REG_EAX, "eax"), (UC_X86_REG_ECX, "ecx"), (UC_X86_REG_EDX, "edx"),
                          (UC_X86_REG_EBX, "ebx"), (UC_X86_REG_EBP, "ebp"), (UC_X86_REG_ESI, "esi"),
                          (UC_X86_REG_EDI, "edi"), (UC_X86_REG_ESP, "esp"), (UC_X86_REG_EIP, "eip")):  # fmt: skip
            uc.reg_write(reg, u[name])
        eflags = (u["eflags"] & ~(NT | RF | VM)) | 0x2
        uc.reg_write(UC_X86_REG_EFLAGS, eflags)
        self.set_vif(bool(eflags & IF))
        self._set_user(True)

