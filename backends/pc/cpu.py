"""The x86 CPU around Unicorn: registers, descriptor tables, and interrupt
and exception delivery through the guest's IDT.

Unicorn never delivers through the IDT: every exception and ``int n`` ends
up in a hook with nothing pushed.  :meth:`Cpu.deliver` does what the
hardware would (Intel SDM vol. 3, 6.12): look up the gate, check it, switch
to the TSS stack when the handler is more privileged, push the frame and the
error code, clear IF for interrupt gates.  A fault while delivering becomes
#DF or, after #DF, a triple fault, by the SDM's benign/contributory table.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from unicorn import Uc, UcError
from unicorn.x86_const import (
    UC_X86_REG_CR2, UC_X86_REG_CS, UC_X86_REG_EAX, UC_X86_REG_EBP, UC_X86_REG_EBX, UC_X86_REG_ECX,
    UC_X86_REG_EDI, UC_X86_REG_EDX, UC_X86_REG_EFLAGS, UC_X86_REG_EIP, UC_X86_REG_ESI, UC_X86_REG_ESP,
    UC_X86_REG_GDTR, UC_X86_REG_IDTR, UC_X86_REG_LDTR, UC_X86_REG_SS, UC_X86_REG_TR,
)  # fmt: skip

from .uc_ext import CpuContext, PageFault, load_cs_ss, read_virt, write_virt

EXC_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF", 10: "#TS",
             11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM"}  # fmt: skip
HAS_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17})
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})

IF = 1 << 9
TF, NT, RF, VM = 1 << 8, 1 << 14, 1 << 16, 1 << 17

GPRS = {"eax": UC_X86_REG_EAX, "ecx": UC_X86_REG_ECX, "edx": UC_X86_REG_EDX, "ebx": UC_X86_REG_EBX,
        "esp": UC_X86_REG_ESP, "ebp": UC_X86_REG_EBP, "esi": UC_X86_REG_ESI, "edi": UC_X86_REG_EDI}  # fmt: skip


def vector_name(vec: int) -> str:
    return EXC_NAMES.get(vec, f"vector {vec:#x}")


class Fault(Exception):
    """An exception the CPU raises while delivering another one."""

    def __init__(self, vec: int, err: int = 0, cr2: int | None = None) -> None:
        super().__init__(f"{vector_name(vec)}({err:#x})")
        self.vec, self.err, self.cr2 = vec, err, cr2


class TripleFault(Exception):
    """Delivery of #DF faulted: the CPU shuts down."""


@dataclass(frozen=True)
class Descriptor:
    base: int
    limit: int  # in bytes, granularity applied
    access: int  # P DPL S type
    flags: int  # G D/B L AVL

    @property
    def present(self) -> bool:
        return bool(self.access & 0x80)

    @property
    def dpl(self) -> int:
        return (self.access >> 5) & 3

    @property
    def is_code(self) -> bool:
        return bool(self.access & 0x10) and bool(self.access & 0x08)

    @property
    def conforming(self) -> bool:
        return self.is_code and bool(self.access & 0x04)

    @staticmethod
    def parse(raw: bytes) -> Descriptor:
        lo, hi = struct.unpack("<II", raw)
        base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        limit = (lo & 0xFFFF) | (hi & 0xF0000)
        flags = (hi >> 20) & 0xF
        if flags & 0x8:
            limit = (limit << 12) | 0xFFF
        return Descriptor(base, limit, (hi >> 8) & 0xFF, flags)


class Cpu:
    """Architectural helpers over one Unicorn engine."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        self.ctx = CpuContext(uc)

    # -- registers -----------------------------------------------------------

    def reg(self, reg: int) -> int:
        return self.uc.reg_read(reg)

    def set_reg(self, reg: int, value: int) -> None:
        self.uc.reg_write(reg, value & 0xFFFFFFFF)

    @property
    def eip(self) -> int:
        return self.uc.reg_read(UC_X86_REG_EIP)

    @property
    def eflags(self) -> int:
        return self.uc.reg_read(UC_X86_REG_EFLAGS)

    @property
    def cpl(self) -> int:
        return self.uc.reg_read(UC_X86_REG_SS) & 3  # QEMU keeps CPL equal to SS.DPL

    def gprs(self) -> dict[str, int]:
        return {name: self.uc.reg_read(r) for name, r in GPRS.items()}

    # -- memory and descriptor tables ---------------------------------------

    def read(self, vaddr: int, size: int) -> bytes:
        return read_virt(self.uc, vaddr, size)

    def write(self, vaddr: int, data: bytes) -> None:
        write_virt(self.uc, vaddr, data)

    def descriptor(self, selector: int) -> Descriptor | None:
        """The GDT/LDT entry for ``selector``, or None if outside the table."""
        if selector & 4:
            _, base, limit, _ = self.uc.reg_read(UC_X86_REG_LDTR)
        else:
            _, base, limit, _ = self.uc.reg_read(UC_X86_REG_GDTR)
        index = selector & ~7
        if index + 7 > limit:
            return None
        return Descriptor.parse(self.read(base + index, 8))

    def _descriptor_words(self, *selectors: int | None) -> list[tuple[int, int]]:
        """(linear address, value) of the high word of each selector's descriptor."""
        out = []
        for sel in selectors:
            if sel is None or not sel & ~3:
                continue
            reg = UC_X86_REG_LDTR if sel & 4 else UC_X86_REG_GDTR
            _, base, limit, _ = self.uc.reg_read(reg)
            if (sel & ~7) + 7 <= limit:
                addr = base + (sel & ~7) + 4
                try:
                    out.append((addr, struct.unpack("<I", self.read(addr, 4))[0]))
                except PageFault:
                    pass
        return out

    def tss_stack(self, ring: int) -> tuple[int, int]:
        """(esp, ss) for ``ring`` from the current 32-bit TSS."""
        _, base, limit, _ = self.uc.reg_read(UC_X86_REG_TR)
        if limit < 8 * ring + 8:
            raise Fault(10, self.uc.reg_read(UC_X86_REG_TR)[0] & ~3)
        esp, ss = struct.unpack("<II", self.read(base + 4 + 8 * ring, 8))
        return esp, ss & 0xFFFF

    # -- delivery ------------------------------------------------------------

    def deliver(self, vec: int, err: int | None = None, *, soft: bool = False, external: bool = False) -> None:
        """Deliver an interrupt or exception through the guest IDT.

        ``soft`` is an ``int n``/``int3``/``into`` (gate DPL is checked, EIP is
        already past the instruction); ``external`` sets the EXT bit of error
        codes that delivery itself generates.  Raises :class:`TripleFault`."""
        first = vec
        while True:
            try:
                self._deliver_once(vec, err, soft, external)
                return
            except Fault as f:
                if soft:
                    # A fault raised by int n / int3 / into (e.g. gate DPL <
                    # CPL) is reported at the instruction, not after it.
                    self.uc.reg_write(UC_X86_REG_EIP, self.eip - self._soft_int_length(vec))
                if f.cr2 is not None:
                    self.uc.reg_write(UC_X86_REG_CR2, f.cr2)
                if vec == 8:
                    raise TripleFault(f"{vector_name(f.vec)} while delivering #DF (first {vector_name(first)})") from None
                double = (vec in CONTRIBUTORY and f.vec in CONTRIBUTORY) or (
                    vec == 14 and (f.vec in CONTRIBUTORY or f.vec == 14)
                )
                vec, err = (8, 0) if double else (f.vec, f.err)
                soft, external = False, False

    def _soft_int_length(self, vec: int) -> int:
        """Length of the int3 (CC) / into (CE) / int n (CD ib) just executed."""
        try:
            last = self.read(self.eip - 1, 1)[0]
        except PageFault:
            return 2
        return 1 if (vec, last) in ((3, 0xCC), (4, 0xCE)) else 2

    def _deliver_once(self, vec: int, err: int | None, soft: bool, external: bool) -> None:
        uc = self.uc
        ext = 1 if external else 0
        _, idt_base, idt_limit, _ = uc.reg_read(UC_X86_REG_IDTR)
        if vec * 8 + 7 > idt_limit:
            raise Fault(13, vec * 8 + 2 + ext)
        try:
            lo, hi = struct.unpack("<II", self.read(idt_base + vec * 8, 8))
        except PageFault as pf:
            raise Fault(14, 0, pf.addr) from None
        gate_type = (hi >> 8) & 0x1F
        if gate_type not in (0x0E, 0x0F):  # 32-bit interrupt/trap gates; task and 16-bit gates unsupported
            raise Fault(13, vec * 8 + 2 + ext)
        cpl = self.cpl
        if soft and ((hi >> 13) & 3) < cpl:
            raise Fault(13, vec * 8 + 2)
        if not hi & 0x8000:
            raise Fault(11, vec * 8 + 2 + ext)
        sel = lo >> 16
        offset = (lo & 0xFFFF) | (hi & 0xFFFF0000)
        try:
            code = self.descriptor(sel) if sel & ~3 else None
        except PageFault as pf:
            raise Fault(14, 0, pf.addr) from None
        if code is None or not code.is_code:
            raise Fault(13, (sel & ~3) + ext)
        if not code.present:
            raise Fault(11, (sel & ~3) + ext)
        new_cpl = cpl if code.conforming else code.dpl
        if new_cpl > cpl:
            raise Fault(13, (sel & ~3) + ext)
        eflags, eip = self.eflags, self.eip
        old_cs, old_ss, old_esp = uc.reg_read(UC_X86_REG_CS), uc.reg_read(UC_X86_REG_SS), uc.reg_read(UC_X86_REG_ESP)
        if new_cpl < cpl:
            esp, ss = self.tss_stack(new_cpl)
            frame = [old_ss, old_esp, eflags, old_cs, eip]
        else:
            esp, ss = old_esp, old_ss
            frame = [eflags, old_cs, eip]
        if err is not None:
            frame.append(err)
        esp = (esp - 4 * len(frame)) & 0xFFFFFFFF
        try:
            self.write(esp, struct.pack(f"<{len(frame)}I", *reversed(frame)))
        except PageFault as pf:
            raise Fault(14, 2, pf.addr) from None  # supervisor write, page not present
        # Loading the registers from the host sets the descriptors' accessed
        # bits in the guest's table; QEMU's interrupt delivery does not.
        kept = self._descriptor_words(sel, ss if new_cpl != cpl else None)
        try:
            if new_cpl != cpl:
                load_cs_ss(uc, self.ctx, (sel & ~3) | new_cpl, ss)
            elif sel != old_cs:
                uc.reg_write(UC_X86_REG_CS, (sel & ~3) | new_cpl)
        except UcError:
            raise Fault(13, (sel & ~3) + ext) from None
        for addr, word in kept:
            self.write(addr, struct.pack("<I", word))
        uc.reg_write(UC_X86_REG_ESP, esp)
        uc.reg_write(UC_X86_REG_EIP, offset)
        eflags &= ~(TF | NT | RF | VM)
        if gate_type == 0x0E:
            eflags &= ~IF
        uc.reg_write(UC_X86_REG_EFLAGS, eflags)
