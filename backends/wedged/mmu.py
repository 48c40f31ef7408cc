"""The MMU of a deprivileged guest: its own page tables, walked by the
hypervisor.

Unicorn runs in ``UC_TLB_VIRTUAL`` mode: every TLB miss comes here, and the
translation is computed by walking the guest's own two-level page tables in
Python (``../research/unicorn.md``: the fill hook supplies ``paddr`` and
``perms``; refusing makes Unicorn stop precisely at the access).  Doing the
walk ourselves gives the hypervisor what a real one gets from validating
every update:

* every frame a translation lands on is checked to be the guest's own
  (guest RAM); a mapping of anything else is refused as "foreign";
* the hypervisor hole (top 4 MiB) is mapped the same in every address space,
  and only while the guest is in (virtual) kernel mode, whatever the guest's
  tables say (except the real descriptor tables, which user mode may read).  Privilege comes from the virtual mode the backend tracks, not
  from the real CPL: a guest kernel at ring 3 shares its CPL with user code;
* frames the backend protects (its page tables, say) are mapped read-only;
  a write to one is refused as "protected", and the backend decides what to
  do (Xen's writable page tables single-step it, then revalidate);
* accessed and dirty bits are set as the hardware sets them: A on every
  walk, D on the first write (with paging on, a read fill grants no write
  permission, so the first write comes back here).

A refused access is recorded in :attr:`fault`; the backend turns it into a
#PF for the guest, a user-mode site execution, or whatever its policy says.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import unicorn.unicorn_const as C
from unicorn import UC_HOOK_TLB_FILL

from wedge.layout import HOLE_BASE, HYP_PRIVATE, START_INFO, UNTIL_PAGE

from ..pc.uc_ext import FaultAddress

READ_EXEC = C.UC_PROT_READ | C.UC_PROT_EXEC
ALL = C.UC_PROT_ALL


@dataclass(frozen=True)
class Refusal:
    va: int
    write: bool
    user: bool
    present: bool  # a protection violation rather than a missing mapping
    why: str  # "page" (a #PF for the guest), "hole", "protected", "foreign", "unmapped"
    frame: int = -1

    @property
    def error_code(self) -> int:
        return (1 if self.present else 0) | (2 if self.write else 0) | (4 if self.user else 0)


class GuestMmu:
    def __init__(self, backend) -> None:
        self.b = backend
        self.uc = backend.m.uc
        self.ram_frames = backend.m.ram_size >> 12
        self.paging = False
        self.wp = False
        self.pse = False
        self.base = 0  # page directory, guest-physical
        self.fault: Refusal | None = None
        self.protected: dict[int, str] = {}  # frame -> why the backend protects it
        self.writable_frame: int | None = None  # the protected frame a single step may write
        self.fills = 0
        self.fault_address = FaultAddress(self.uc)
        self.uc.ctl_set_tlb_mode(C.UC_TLB_VIRTUAL)
        self.uc.hook_add(UC_HOOK_TLB_FILL, self._fill)

    # -- the TLB ------------------------------------------------------------

    def flush(self) -> None:
        self.uc.ctl(C.UC_CTL_TLB_FLUSH, C.UC_CTL_IO_WRITE)

    def _fill(self, uc, vaddr: int, access: int, entry, _user) -> bool:
        self.fills += 1
        r = self.fill(vaddr, access == C.UC_MEM_WRITE)
        if isinstance(r, Refusal):
            self.fault = r
            return False
        entry.paddr, entry.perms = r
        return True

    def fill(self, va: int, write: bool) -> tuple[int, int] | Refusal:
        """The translation the CPU uses.  Here: the guest's own page tables,
        walked as the hardware would; a backend whose address spaces belong
        to a host (an L4 kernel's, a Linux host's) answers from those."""
        return self.translate(va, write, self.b.in_user_mode(), update=True)

    def set_mode(self, paging: bool, wp: bool, pse: bool) -> None:
        self.paging, self.wp, self.pse = paging, wp, pse
        self.flush()

    # -- translation ----------------------------------------------------------

    def _read32(self, pa: int) -> int:
        return struct.unpack("<I", self.uc.mem_read(pa, 4))[0]

    def _set_bits(self, pa: int, old: int, bits: int) -> None:
        if old & bits != bits:
            self.uc.mem_write(pa, struct.pack("<I", old | bits))

    def translate(self, va: int, write: bool, user: bool, update: bool = False) -> tuple[int, int] | Refusal:
        """(physical page, permissions) for an access, or why it is refused.
        ``update`` sets accessed/dirty bits (only real accesses do)."""
        va &= 0xFFFFF000
        if va == UNTIL_PAGE and not write:
            return va, READ_EXEC
        if va >= HOLE_BASE:
            private = va >= HYP_PRIVATE
            read_only = private or START_INFO <= va < START_INFO + 0x1000
            # The real descriptor tables stay readable in user mode: the CPU
            # reads them itself for a user-mode segment load, and this hook
            # cannot tell its reads from the program's.  They hold nothing
            # but the guest's own descriptors.
            if (user and not (private and not write)) or (write and read_only):
                return Refusal(va, write, user, True, "hole")
            return va, (C.UC_PROT_READ if user else READ_EXEC if read_only else ALL)
        if not self.paging:
            frame = va >> 12
            pa = va
        else:
            pde_pa = (self.base & 0xFFFFF000) + (va >> 22) * 4
            pde = self._read32(pde_pa)
            if not pde & 1:
                return Refusal(va, write, user, False, "page")
            if self.pse and pde & 0x80:
                pa = (pde & 0xFFC00000) | (va & 0x3FF000)
                rw, us = bool(pde & 2), bool(pde & 4)
                leaf_pa, leaf = pde_pa, pde
            else:
                pt = pde & 0xFFFFF000
                if pt >> 12 >= self.ram_frames:
                    return Refusal(va, write, user, True, "foreign", pt >> 12)
                pte_pa = pt + ((va >> 12) & 0x3FF) * 4
                pte = self._read32(pte_pa)
                if not pte & 1:
                    return Refusal(va, write, user, False, "page")
                pa = pte & 0xFFFFF000
                rw, us = bool(pde & pte & 2), bool(pde & pte & 4)
                leaf_pa, leaf = pte_pa, pte
            if (user and not us) or (write and not rw and (user or self.wp)):
                return Refusal(va, write, user, True, "page")
            frame = pa >> 12
            if update:
                self._set_bits(pde_pa, pde, 0x20)
                if leaf_pa != pde_pa:
                    self._set_bits(leaf_pa, leaf, 0x20 | (0x40 if write else 0))
                elif write:
                    self._set_bits(pde_pa, pde | 0x20, 0x40)
        if frame >= self.ram_frames:
            return Refusal(va, write, user, True, "foreign" if self.paging else "unmapped", frame)
        if frame in self.protected and frame != self.writable_frame:
            if write:
                return Refusal(va, write, user, True, "protected", frame)
            return pa, READ_EXEC
        # With paging on, a read maps the page read-only so that the first
        # write comes back here and sets the dirty bit; without paging there
        # are no dirty bits to keep, and one fill serves both.
        return pa, (ALL if write or not self.paging else READ_EXEC)

    def virt_to_phys(self, va: int, write: bool = False, user: bool = False) -> int | None:
        """Physical address for a hypervisor access on the guest's behalf."""
        r = self.translate(va, write, user)
        if isinstance(r, Refusal):
            return None
        return r[0] | (va & 0xFFF)

    def read(self, va: int, size: int) -> bytes | None:
        """Read guest-virtual memory as the guest kernel would; None if it cannot."""
        out = bytearray()
        while size > 0:
            pa = self.virt_to_phys(va)
            if pa is None:
                return None
            chunk = min(size, 0x1000 - (va & 0xFFF))
            out += self.uc.mem_read(pa, chunk)
            va, size = (va + chunk) & 0xFFFFFFFF, size - chunk
        return bytes(out)

    def write(self, va: int, data: bytes) -> bool:
        """Write guest-virtual memory as the hypervisor (kernel privilege,
        ignoring the read-only mapping of protected frames).  Every page is
        translated before any byte is written."""
        pieces, pos = [], 0
        while pos < len(data):
            r = self.translate(va, True, False)
            if isinstance(r, Refusal) and r.why != "protected":
                return False
            pa = (r[0] if not isinstance(r, Refusal) else (r.frame << 12)) | (va & 0xFFF)
            chunk = min(len(data) - pos, 0x1000 - (va & 0xFFF))
            pieces.append((pa, data[pos : pos + chunk]))
            va, pos = (va + chunk) & 0xFFFFFFFF, pos + chunk
        for pa, piece in pieces:
            self.uc.mem_write(pa, piece)
        return True
