"""The xen model's MMU policy, on the generic walk of ``backends/wedged/mmu.py``.

Xen validates a page directory and its page tables when the guest pins one
or makes it the base (every present entry must name one of the guest's own
frames, and nothing may map the hypervisor hole), then write-protects their
frames while they are in use.  A guest write to one is carried out by
single-stepping it with the frame writable, then revalidating (Xen's
"writable page tables" emulation, which is what an unmodified guest needs;
``XenBackend.on_protected_write``).  The GDT and LDT are not protected this
way (kernels keep them next to hot data): the wedge compares the guest's
entries with the last shadowed ones before every segment load.
"""
from __future__ import annotations

import struct

from ..wedged.mmu import GuestMmu


class XenMmu(GuestMmu):
    def check_table(self, pd: int) -> str | None:
        """Validate a page directory and its page tables: every present entry
        must name one of the guest's frames.  Returns a reason, or None."""
        if pd >> 12 >= self.ram_frames:
            return f"page directory {pd:#x} is not a guest frame"
        entries = struct.unpack("<1024I", self.uc.mem_read(pd & 0xFFFFF000, 4096))
        for i, pde in enumerate(entries):
            if not pde & 1:
                continue
            if i == 1023:
                return "the page directory maps the hypervisor hole (0xffc00000 and up)"
            if self.pse and pde & 0x80:
                if (pde >> 12) + 1023 >= self.ram_frames:
                    return f"PDE {i} maps a 4 MiB page beyond the guest's memory"
                continue
            pt = pde >> 12
            if pt >= self.ram_frames:
                return f"PDE {i} points at frame {pt:#x}, not the guest's"
            reason = self.check_pt(pt)
            if reason:
                return f"PDE {i}: {reason}"
        return None

    def check_pt(self, frame: int) -> str | None:
        for j, pte in enumerate(struct.unpack("<1024I", self.uc.mem_read(frame << 12, 4096))):
            if pte & 1 and pte >> 12 >= self.ram_frames:
                return f"PTE {j} of page table {frame:#x} maps frame {pte >> 12:#x}, not the guest's"
        return None

    def table_frames(self, pd: int) -> set[int]:
        """The page directory's frame and those of the page tables it uses."""
        entries = struct.unpack("<1024I", self.uc.mem_read(pd & 0xFFFFF000, 4096))
        return {pd >> 12} | {pde >> 12 for pde in entries if pde & 1 and not (self.pse and pde & 0x80)}

    def pin(self, pd: int) -> str | None:
        """Validate and pin a new page directory (mmuext new_baseptr)."""
        reason = self.check_table(pd)
        if reason:
            return reason
        for f in [f for f, why in self.protected.items() if why == "pt"]:
            del self.protected[f]
        for f in self.table_frames(pd):
            self.protected[f] = "pt"
        self.base = pd & 0xFFFFF000
        self.flush()
        return None
