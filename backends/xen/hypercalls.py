"""Hypercall handlers of the xen model (``int $0x82`` from the guest kernel).

Each handler takes the backend and the argument registers and returns the
value for EAX.  Guest memory is read and written through the MMU, with the
same checks a guest access would get.  A hypercall the model does not know,
or one whose arguments make no sense, kills the guest with a reason: Xen's
answer to a broken PV guest, and what ``afterburn run`` reports.
"""
from __future__ import annotations

import struct

from ..wedged import Kill
from . import abi

# handler(backend, ebx, ecx, edx, esi, edi) -> eax (None: the call replaced the whole context)
HANDLERS = {}


def handler(name: str):
    def register(fn):
        HANDLERS[abi.HC[name]] = (name, fn)
        return fn

    return register


def _read(b, va: int, size: int) -> bytes:
    return b.guest_read(va, size)


def _write(b, va: int, data: bytes) -> None:
    b.guest_write(va, data)


@handler("set_trap_table")
def set_trap_table(b, table, *_):
    traps = {}
    for i in range(257):
        vector, flags, cs, address = struct.unpack("<BBHI", _read(b, table + 8 * i, 8))
        if address == 0:
            break
        if (cs & 3) == 0:
            raise Kill(f"trap table entry {vector}: ring-0 code selector {cs:#x}")
        traps[vector] = (cs, address, flags & 3)
    else:
        raise Kill("trap table is not terminated")
    b.traps = traps
    return 0


@handler("set_callbacks")
def set_callbacks(b, event_cs, event_eip, failsafe_cs, failsafe_eip, *_):
    if (event_cs & 3) == 0:
        raise Kill("event callback in ring 0")
    b.callback = (event_cs, event_eip)
    return 0


@handler("set_gdt")
def set_gdt(b, base, entries, *_):
    # Afterburn's set_gdt takes the guest's linear address (Xen's takes frames).
    if entries == 0 or entries > b.gdt_capacity():
        return -abi.EINVAL
    return 0 if b.descriptors.shadow_gdt(base, entries) else -abi.EFAULT


@handler("stack_switch")
def stack_switch(b, ss, esp, *_):
    b.stack = ((ss & 0xFFFF) | b.guest_cpl if ss & ~3 else 0, esp)
    return 0


@handler("update_descriptor")
def update_descriptor(b, linear, *_):
    """Afterburn's form: re-shadow the GDT or LDT entry at this linear
    address from what the guest's own table now holds."""
    if not b.descriptors.reshadow(linear):
        return -abi.EINVAL
    return 0


def _validate_pte(b, ptr: int, val: int) -> None:
    if ptr >> 12 >= b.mmu.ram_frames:
        raise Kill(f"mmu_update of {ptr:#x}: not a guest frame")
    if val & 1 and val >> 12 >= b.mmu.ram_frames:
        raise Kill(f"mmu_update maps frame {val >> 12:#x}, which the guest does not own")


@handler("mmu_update")
def mmu_update(b, reqs, count, done_ptr, domid, *_):
    done = 0
    for i in range(count):
        ptr, val = struct.unpack("<QQ", _read(b, reqs + 16 * i, 16))
        if ptr & 3 != abi.MMU_NORMAL_PT_UPDATE:
            return -abi.ENOSYS
        ptr &= ~3
        _validate_pte(b, ptr, val)
        b.m.uc.mem_write(ptr, struct.pack("<I", val & 0xFFFFFFFF))
        done += 1
    b.after_pt_change()
    if done_ptr:
        _write(b, done_ptr, struct.pack("<I", done))
    return 0


@handler("update_va_mapping")
def update_va_mapping(b, va, val_lo, val_hi, flags, *_):
    if not b.mmu.paging:
        return -abi.EINVAL
    pde = struct.unpack("<I", b.m.uc.mem_read(b.mmu.base + (va >> 22) * 4, 4))[0]
    if not pde & 1 or pde & 0x80:
        return -abi.EINVAL
    ptr = (pde & 0xFFFFF000) + ((va >> 12) & 0x3FF) * 4
    _validate_pte(b, ptr, val_lo)
    b.m.uc.mem_write(ptr, struct.pack("<I", val_lo))
    b.after_pt_change()
    return 0


@handler("set_timer_op")
def set_timer_op(b, lo, hi, *_):
    b.timer.arm((hi << 32) | lo)
    return 0


@handler("xen_version")
def xen_version(b, cmd, *_):
    return 0x00040011  # 4.17: also how a PV guest says "deliver what is pending"


@handler("console_io")
def console_io(b, cmd, count, buf, *_):
    if cmd != abi.CONSOLEIO_write or count > 4096:
        return -abi.EINVAL
    b.console += _read(b, buf, count)
    return count


@handler("iret")
def iret(b, uframe, *_):
    """Enter guest user mode (the wedge's be_return_to_user)."""
    b.return_to_user(uframe)
    return None


@handler("mmuext_op")
def mmuext_op(b, ops, count, done_ptr, domid, *_):
    for i in range(count):
        cmd, arg1, arg2 = struct.unpack("<III", _read(b, ops + 12 * i, 12))
        if cmd == abi.MMUEXT["new_baseptr"]:
            reason = b.mmu.pin(arg1 << 12)
            if reason:
                raise Kill(f"new page directory refused: {reason}")
        elif cmd == abi.MMUEXT["pin_l2_table"]:
            reason = b.mmu.check_table(arg1 << 12)
            if reason:
                raise Kill(f"pin refused: {reason}")
        elif cmd == abi.MMUEXT["unpin_table"]:
            pass
        elif cmd in (abi.MMUEXT["tlb_flush_local"], abi.MMUEXT["invlpg_local"]):
            b.mmu.flush()
        elif cmd == abi.MMUEXT["set_ldt"]:
            if not b.descriptors.shadow_ldt(arg1, arg2):
                raise Kill(f"LDT at {arg1:#x} is not mapped")
        elif cmd == abi.MMUEXT["afterburn_paging"]:
            b.set_paging(arg1, arg2)
        else:
            raise Kill(f"mmuext_op command {cmd} is not supported")
    if done_ptr:
        _write(b, done_ptr, struct.pack("<I", count))
    return 0


@handler("sched_op")
def sched_op(b, cmd, arg, *_):
    if cmd == abi.SCHEDOP_yield:
        return 0
    if cmd == abi.SCHEDOP_block:
        b.block()
        return 0
    if cmd == abi.SCHEDOP_shutdown:
        reason = struct.unpack("<I", _read(b, arg, 4))[0]
        b.shutdown(reason)
        return 0
    raise Kill(f"sched_op command {cmd} is not supported")


@handler("event_channel_op")
def event_channel_op(b, cmd, arg, *_):
    if cmd in (abi.EVTCHNOP_bind_pirq, abi.EVTCHNOP_unmask):
        return 0
    return -abi.ENOSYS


@handler("physdev_op")
def physdev_op(b, cmd, arg, *_):
    op = abi.PHYSDEVOP
    if cmd == op["afterburn_pio"]:
        return b.port_io(arg)
    if cmd == op["afterburn_inta"]:
        return b.inta()
    if cmd == op["afterburn_sti"]:
        return b.sti_shadow(arg)
    if cmd in (op["afterburn_rdmsr"], op["afterburn_wrmsr"]):
        index, lo, hi = struct.unpack("<III", _read(b, arg, 12))
        b.m.stats.exits["msr"] += 1
        if cmd == op["afterburn_rdmsr"]:
            value = b.m.uc.msr_read(index)
            _write(b, arg + 4, struct.pack("<II", value & 0xFFFFFFFF, value >> 32))
        else:
            b.m.uc.msr_write(index, (hi << 32) | lo)
        return 0
    return -abi.ENOSYS
