"""What Unicorn 2.1.4's Python binding does not give us, done with ctypes.

Each item here exists because of a measured Unicorn behaviour
(../research/unicorn.md); the version is pinned in setup.cfg because these
reach into its internals:

* :class:`InsnCounter`: the number of instructions the current
  ``emu_start(count=N)`` has retired, read from ``uc_struct.emu_counter``.
  ``hlt`` at CPL0 ends ``emu_start`` silently and looks like count expiry;
  the counter tells them apart (count expiry leaves it at N+1) and gives the
  exact instruction counts the virtual clock needs.
* :class:`FaultAddress`: the full address of an access a TLB-fill hook
  refused (``uc_struct.invalid_addr``; the hook only sees the page).
* :class:`CpuContext`: fields of QEMU's ``CPUX86State`` inside a context
  blob: ``old_exception`` (Unicorn never resets it, so the second fault would
  become #DF), the exception error code, ``exception_is_int`` (a software
  ``int n`` versus a fault), ``hflags`` (the sti/mov-ss interrupt shadow).
* guest-virtual memory access (``uc_vmem_*``, not wrapped by the binding).
* a deterministic ``rdtsc`` (the binding refuses RDTSC hooks; the core has
  them).
* :func:`load_cs_ss`: changing CPL from the host (``reg_write(SS)`` is checked
  against the current CPL, so the CPL bits of ``hflags`` are set first).
"""
from __future__ import annotations

import ctypes
import struct
from functools import cache

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_32, UC_PROT_READ, UC_PROT_WRITE, Uc
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC
from unicorn.unicorn_py3.unicorn import uccallback, uclib
from unicorn.x86_const import (
    UC_X86_INS_RDTSC, UC_X86_REG_CS, UC_X86_REG_DR0, UC_X86_REG_DR1, UC_X86_REG_DR2,
    UC_X86_REG_DR3, UC_X86_REG_EAX, UC_X86_REG_ECX, UC_X86_REG_EDX, UC_X86_REG_SS,
)  # fmt: skip

# -- instruction counter -----------------------------------------------------


@cache
def _emu_counter_offset() -> int:
    """Find ``emu_counter`` (followed by ``emu_count``) in ``uc_struct`` by
    running a calibration loop twice with distinctive counts."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, bytes.fromhex("83c003 49 75fa f4"))  # l: add eax,3; dec ecx; jnz l; hlt
    base = uc._uch.value  # noqa: SLF001 - the engine handle is the uc_struct pointer

    def run(n: int) -> bytes:
        uc.reg_write(UC_X86_REG_ECX, 10**9)
        uc.emu_start(0, 1 << 32, count=n)
        return ctypes.string_at(base, 4096)

    found = None
    for n in (123457, 77779):
        blob = run(n)
        pos = [o for o in range(0, len(blob) - 16, 8) if struct.unpack_from("<QQ", blob, o) == (n + 1, n)]
        if len(pos) != 1 or (found is not None and pos[0] != found):
            raise RuntimeError("cannot locate uc_struct.emu_counter; is this Unicorn 2.1.4?")
        found = pos[0]
    return found


class InsnCounter:
    """Reads the retired-instruction count of the running ``emu_start``."""

    def __init__(self, uc: Uc) -> None:
        self._cell = ctypes.c_uint64.from_address(uc._uch.value + _emu_counter_offset())  # noqa: SLF001

    def raw(self) -> int:
        """Counter value: instructions begun in this emu_start (count hook)."""
        return self._cell.value

    def retired(self, budget: int) -> int:
        """Instructions retired by an ``emu_start(count=budget)`` that returned."""
        return min(self._cell.value, budget)

    def expired(self, budget: int) -> bool:
        """True if the last emu_start stopped because the count ran out."""
        return self._cell.value > budget


@cache
def _invalid_addr_offset() -> int:
    """Find ``uc_struct.invalid_addr``: where Unicorn keeps the full address
    of an access a TLB-fill hook refused (the hook itself only sees the page)."""
    import unicorn.unicorn_const as C
    from unicorn import UC_HOOK_TLB_FILL, UcError

    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x100000)
    uc.ctl_set_tlb_mode(C.UC_TLB_VIRTUAL)
    target = [0]

    def fill(uc_, vaddr, access, entry, _user):
        if vaddr == target[0] & ~0xFFF:
            return False
        entry.paddr, entry.perms = vaddr, C.UC_PROT_ALL
        return True

    uc.hook_add(UC_HOOK_TLB_FILL, fill)
    base = uc._uch.value  # noqa: SLF001
    snapshots = []
    for addr in (0x50123, 0x61ABC):
        target[0] = addr
        uc.mem_write(0x1000, b"\xa1" + struct.pack("<I", addr) + b"\x90\x90")  # mov eax, [addr]
        try:
            uc.emu_start(0x1000, 0x1007)
        except UcError:
            pass
        snapshots.append(ctypes.string_at(base, 4096))
    found = [o for o in range(0, 4088, 4)
             if struct.unpack_from("<Q", snapshots[0], o)[0] == 0x50123
             and struct.unpack_from("<Q", snapshots[1], o)[0] == 0x61ABC]  # fmt: skip
    if len(found) != 1:
        raise RuntimeError("cannot locate uc_struct.invalid_addr; is this Unicorn 2.1.4?")
    return found[0]


class RegBatch:
    """Read a fixed set of registers in one native call.

    The binding's ``reg_read`` costs ~2 us a register (class dispatch per
    call), ``reg_read_batch`` no less; a hypercall reads eight.  Calling
    ``uc_reg_read_batch`` through ctypes with prebuilt arrays takes ~1.6 us
    for all eight (values are the low 32 bits for 32-bit registers)."""

    def __init__(self, uc: Uc, regs: list[int]) -> None:
        n = len(regs)
        self._handle = uc._uch  # noqa: SLF001
        self._ids = (ctypes.c_int * n)(*regs)
        self._vals = (ctypes.c_uint64 * n)()
        base = ctypes.addressof(self._vals)
        self._ptrs = (ctypes.c_void_p * n)(*[base + 8 * i for i in range(n)])
        self._n = n
        fn = uclib.uc_reg_read_batch
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        fn.restype = ctypes.c_int
        self._fn = fn

    def read(self) -> list[int]:
        if self._fn(self._handle, self._ids, self._ptrs, self._n) != 0:
            raise RuntimeError("uc_reg_read_batch failed")
        return [v & 0xFFFFFFFF for v in self._vals]


class FaultAddress:
    """The full address of the last access a TLB-fill hook refused."""

    def __init__(self, uc: Uc) -> None:
        self._cell = ctypes.c_uint64.from_address(uc._uch.value + _invalid_addr_offset())  # noqa: SLF001

    def value(self) -> int:
        return self._cell.value & 0xFFFFFFFF


# -- the CPU context blob ------------------------------------------------------


@cache
def _context_offsets() -> dict[str, int]:
    """Offsets in Unicorn's x86 context blob, found by marker values in dr0-3.

    In CPUX86State: ``int error_code; int exception_is_int;
    target_ulong exception_next_eip; target_ulong dr[8]; void *bp[4];
    int old_exception;`` and ``hflags`` at env+176 (env at blob+40)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    marks = [0x1111000 + i * 0x10 for i in range(4)]
    for reg, m in zip((UC_X86_REG_DR0, UC_X86_REG_DR1, UC_X86_REG_DR2, UC_X86_REG_DR3), marks, strict=True):
        uc.reg_write(reg, m)
    raw = bytes(uc.context_save())
    pat = b"".join(struct.pack("<Q", m) for m in marks)
    dr = raw.find(pat)
    if dr <= 0 or raw.find(pat, dr + 1) >= 0:
        raise RuntimeError("cannot locate dr[] in the Unicorn context blob; is this Unicorn 2.1.4?")
    return {"error_code": dr - 16, "exception_is_int": dr - 12, "old_exception": dr + 64 + 32, "hflags": 40 + 176}


HF_INHIBIT_IRQ = 1 << 3  # QEMU: interrupts inhibited for one instruction (after sti / mov ss)


class CpuContext:
    """A reusable context blob for reading and patching CPUX86State fields."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        self.off = _context_offsets()
        self.ctx = uc.context_save()

    def _base(self) -> int:
        return self.ctx.context.value

    def _get(self, field: str) -> int:
        return struct.unpack("<i", ctypes.string_at(self._base() + self.off[field], 4))[0]

    def exception(self) -> tuple[int, bool]:
        """(error code, is software interrupt) of the exception being handled,
        and QEMU's ``old_exception = -1``, as after a successful delivery.
        Call this at the start of every interrupt hook."""
        self.uc.context_update(self.ctx)
        err, is_int = self._get("error_code"), self._get("exception_is_int")
        ctypes.memmove(self._base() + self.off["old_exception"], struct.pack("<i", -1), 4)
        self.uc.context_restore(self.ctx)
        return err, bool(is_int)

    def set_cpl(self, cpl: int) -> None:
        self.uc.context_update(self.ctx)
        addr = self._base() + self.off["hflags"]
        hf = struct.unpack("<I", ctypes.string_at(addr, 4))[0]
        ctypes.memmove(addr, struct.pack("<I", (hf & ~3) | cpl), 4)
        self.uc.context_restore(self.ctx)

    def irq_inhibited(self) -> bool:
        """True right after sti or mov ss: the next instruction runs first."""
        self.uc.context_update(self.ctx)
        return bool(self._get("hflags") & HF_INHIBIT_IRQ)


# -- guest-virtual memory ------------------------------------------------------

uclib.uc_vmem_read.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
uclib.uc_vmem_write.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
uclib.uc_vmem_translate.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.POINTER(ctypes.c_uint64)]


class PageFault(Exception):
    """A guest-virtual access that the guest's page tables do not allow."""

    def __init__(self, addr: int, write: bool) -> None:
        super().__init__(f"page fault at {addr:#x} ({'write' if write else 'read'})")
        self.addr = addr
        self.write = write


def translate(uc: Uc, vaddr: int, write: bool = False) -> int:
    """Guest-physical address of ``vaddr`` under the current paging mode."""
    pa = ctypes.c_uint64()
    err = uclib.uc_vmem_translate(uc._uch, vaddr, UC_PROT_WRITE if write else UC_PROT_READ, ctypes.byref(pa))  # noqa: SLF001
    if err != 0:
        raise PageFault(vaddr, write)
    return pa.value


def read_virt(uc: Uc, vaddr: int, size: int) -> bytes:
    """Read guest-virtual memory page by page (raises PageFault)."""
    out = bytearray()
    while size > 0:
        chunk = min(size, 0x1000 - (vaddr & 0xFFF))
        out += uc.mem_read(translate(uc, vaddr), chunk)
        vaddr, size = (vaddr + chunk) & 0xFFFFFFFF, size - chunk
    return bytes(out)


def write_virt(uc: Uc, vaddr: int, data: bytes) -> None:
    """Write guest-virtual memory; every page is translated before any byte is
    written, so a fault leaves memory untouched."""
    pieces = []
    pos = 0
    while pos < len(data):
        chunk = min(len(data) - pos, 0x1000 - (vaddr & 0xFFF))
        pieces.append((translate(uc, vaddr, write=True), data[pos : pos + chunk]))
        vaddr, pos = (vaddr + chunk) & 0xFFFFFFFF, pos + chunk
    for pa, piece in pieces:
        uc.mem_write(pa, piece)


# -- deterministic rdtsc -------------------------------------------------------


def hook_rdtsc(uc: Uc, read_tsc) -> object:
    """Make ``rdtsc`` return ``read_tsc()``.  The binding rejects RDTSC for
    UC_HOOK_INSN, but the core accepts it with the CPUID callback signature."""

    @uccallback(uc, HOOK_INSN_CPUID_CFUNC)
    def _cb(uc_, _key):
        value = read_tsc()
        uc_.reg_write(UC_X86_REG_EAX, value & 0xFFFFFFFF)
        uc_.reg_write(UC_X86_REG_EDX, (value >> 32) & 0xFFFFFFFF)
        return 1  # skip Unicorn's host-clock rdtsc

    return uc._Uc__do_hook_add(UC_HOOK_INSN, _cb, 1, 0, ctypes.c_int(UC_X86_INS_RDTSC))  # noqa: SLF001


# -- changing CPL from the host --------------------------------------------------


def load_cs_ss(uc: Uc, ctx: CpuContext, cs: int, ss: int) -> None:
    """Load CS and SS with full descriptor loads from the guest GDT, from any
    CPL to any CPL.

    ``reg_write(SS)`` is validated against the current CPL (QEMU keeps CPL in
    ``hflags`` and takes it from SS.DPL), so first set ``hflags``' CPL bits
    to the target ring, then let the ordinary, checked loads happen."""
    if (ss & 3) != (uc.reg_read(UC_X86_REG_SS) & 3):
        ctx.set_cpl(ss & 3)
    uc.reg_write(UC_X86_REG_SS, ss)
    uc.reg_write(UC_X86_REG_CS, cs)
