"""Ring compression: the guest's descriptor tables, as the CPU may load them.

A deprivileged guest kernel cannot have its own GDT loaded: a DPL-0 segment
is out of reach at ring 1 or 3.  So the real GDT is a shadow of the guest's,
index for index, with every code or data descriptor more privileged than the
guest's real ring made that ring, the accessed bit preset (the CPU may not
write the real table), and system descriptors marked not present (the wedge
emulates lldt, ltr and far transfers; nothing loads them natively).

At ring 3 the guest kernel's compressed segments have DPL 3, which user
code could load too.  So in user mode they are replaced by descriptors of a
reserved system type: a user load raises #GP(selector), as the DPL 0 one
would on hardware (:meth:`DescriptorShadows.set_user_view`).

Next to each shadow the hypervisor keeps the guest's descriptors as it saw
them (``SEEN_GDT``/``SEEN_LDT``).  The wedge compares those with the guest's
current ones before every segment load and asks for a re-shadow when one
differs, so this module is the only place the compression rule is written.
"""
from __future__ import annotations

import struct

from unicorn.x86_const import UC_X86_REG_LDTR

from wedge.layout import GUEST_GDT_MAX, REAL_GDT, REAL_LDT, SEEN_GDT, SEEN_LDT

PRESENT, CODE_OR_DATA, ACCESSED = 0x8000, 0x1000, 0x100
DPL, TYPE = 3 << 13, 0x1F00  # TYPE: the S bit and the 4-bit type


def compress(lo: int, hi: int, ring: int) -> tuple[int, int]:
    """The real descriptor for the guest's (``lo``, ``hi``) at ``ring``."""
    if not hi & PRESENT:
        return lo, hi
    if hi & CODE_OR_DATA:
        if (hi >> 13) & 3 < ring:
            hi = (hi & ~(3 << 13)) | (ring << 13)
        return lo, hi | ACCESSED
    return lo, hi & ~PRESENT


class DescriptorShadows:
    """The real GDT and LDT of one vCPU, shadowed from the guest's."""

    def __init__(self, uc, read, ring: int) -> None:
        self.uc = uc
        self.read = read  # read(linear, size) -> bytes | None, as the guest kernel would
        self.ring = ring
        self.gdt: tuple[int, int] | None = None  # the guest's table: (linear base, entries)
        self.ldt: tuple[int, int] | None = None
        self.user_view = False
        # Real descriptors of segments more privileged than the guest's ring:
        # address -> (high word for kernel mode, high word for user mode).
        self.raised: dict[int, tuple[int, int]] = {}

    def _write(self, real: int, seen: int, raw: bytes) -> None:
        out = bytearray()
        for i in range(0, len(raw), 8):
            lo, hi = struct.unpack_from("<II", raw, i)
            clo, chi = compress(lo, hi, self.ring)
            self.raised.pop(real + i, None)
            if self.ring == 3 and hi & PRESENT and hi & CODE_OR_DATA and hi & DPL != DPL:
                self.raised[real + i] = (chi, chi & ~TYPE)
                if self.user_view:
                    chi &= ~TYPE
            out += struct.pack("<II", clo, chi)
        self.uc.mem_write(real, bytes(out))
        self.uc.mem_write(seen, raw)

    def set_user_view(self, user: bool) -> None:
        """Hide the guest kernel's segments from user mode (ring 3 only)."""
        self.user_view = user
        for addr, (kernel, user_hi) in self.raised.items():
            self.uc.mem_write(addr + 4, struct.pack("<I", user_hi if user else kernel))

    def shadow_gdt(self, base: int, entries: int) -> bool:
        """Shadow a whole GDT; False if the guest cannot read it."""
        if not 0 < entries <= GUEST_GDT_MAX:
            return False
        raw = self.read(base, entries * 8)
        if raw is None:
            return False
        self.gdt = (base, entries)
        self.raised = {a: v for a, v in self.raised.items() if not REAL_GDT <= a < REAL_LDT}
        self._write(REAL_GDT, SEEN_GDT, raw)
        clear = b"\0" * ((GUEST_GDT_MAX - entries) * 8)
        self.uc.mem_write(REAL_GDT + entries * 8, clear)
        self.uc.mem_write(SEEN_GDT + entries * 8, clear)
        return True

    def shadow_ldt(self, base: int, entries: int) -> bool:
        """Shadow an LDT (0 entries: none); False if the guest cannot read it."""
        if entries == 0:
            self.ldt = None
            self.uc.reg_write(UC_X86_REG_LDTR, (0, 0, 0, 0))
            return True
        raw = self.read(base, entries * 8) if entries <= 8192 else None
        if raw is None:
            return False
        self.ldt = (base, entries)
        self.raised = {a: v for a, v in self.raised.items() if not REAL_LDT <= a < SEEN_GDT}
        self._write(REAL_LDT, SEEN_LDT, raw)
        # The LDTR cache points at the shadow; the selector itself is never
        # loaded natively (lldt is emulated).
        self.uc.reg_write(UC_X86_REG_LDTR, (0, REAL_LDT, entries * 8 - 1, 0x8200))
        return True

    def reshadow(self, linear: int) -> bool:
        """Shadow again the one GDT or LDT entry at this linear address."""
        for table, real, seen in ((self.gdt, REAL_GDT, SEEN_GDT), (self.ldt, REAL_LDT, SEEN_LDT)):
            if table is None:
                continue
            base, entries = table
            if base <= linear < base + entries * 8 and not (linear - base) & 7:
                raw = self.read(linear, 8)
                if raw is None:
                    return False
                self._write(real + (linear - base), seen + (linear - base), raw)
                return True
        return False
