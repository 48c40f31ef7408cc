"""The Xen-style hypercall ABI between the wedge and the ``xen`` backend.

32-bit Xen PV conventions: ``int $0x82`` with the hypercall number in EAX,
arguments in EBX, ECX, EDX, ESI, EDI, the result in EAX (negative errno on
failure).  Numbers and structure layouts are Xen's where Xen has the call;
where a pre-virtualized guest needs something a Xen PV guest does not (port
I/O through the hypervisor, an 8259 acknowledge, turning paging on and off),
the call is an Afterburn extension in a sub-op range Xen does not use, and
is marked so here.  This file is the single definition of Xen's part;
:func:`c_header` generates ``xen_abi.h`` for the wedge.  What every backend
shares with its wedge (``struct pio``, the start info's first words, the
trap frame) is in ``wedge/layout.py``.
"""
from __future__ import annotations

from wedge.layout import SHARED_INFO, START_INFO_WORDS

HYPERCALL_VECTOR = 0x82

# Hypercall numbers (xen/include/public/xen.h)
HC = {
    "set_trap_table": 0,
    "mmu_update": 1,
    "set_gdt": 2,
    "stack_switch": 3,
    "set_callbacks": 4,
    "update_descriptor": 10,
    "update_va_mapping": 14,
    "set_timer_op": 15,
    "xen_version": 17,
    "console_io": 18,
    "iret": 23,  # x86-64 PV's iret; here: arg -> struct uframe (wedge/layout.py)
    "mmuext_op": 26,
    "sched_op": 29,
    "event_channel_op": 32,
    "physdev_op": 33,
}

# sched_op commands and shutdown reasons
SCHEDOP_yield, SCHEDOP_block, SCHEDOP_shutdown = 0, 1, 2
SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend, SHUTDOWN_crash = 0, 1, 2, 3

# mmuext_op commands (struct mmuext_op: u32 cmd; u32 arg1; u32 arg2 on 32-bit)
MMUEXT = {
    "pin_l2_table": 1,
    "unpin_table": 4,
    "new_baseptr": 5,
    "tlb_flush_local": 6,
    "invlpg_local": 7,
    "set_ldt": 13,
    # Afterburn extension: the guest's virtual CR0/CR4 decide paging on/off,
    # write protection and 4 MiB pages (arg1 = cr0, arg2 = cr4).
    "afterburn_paging": 0x100,
}
MMU_NORMAL_PT_UPDATE = 0  # low bits of mmu_update's ptr

CONSOLEIO_write = 0

# event_channel_op
EVTCHNOP_bind_pirq, EVTCHNOP_unmask = 2, 9
PIC_PORT = 1  # the event channel the 8259's INTR output is bound to
TIMER_PORT = 2  # VIRQ_TIMER: set_timer_op deadlines

# physdev_op: Afterburn extensions (Xen's own ops are below 0x100)
PHYSDEVOP = {
    "afterburn_pio": 0x100,  # arg -> struct pio (wedge/layout.py)
    "afterburn_inta": 0x101,  # returns the vector the 8259 acknowledges, or -1
    "afterburn_rdmsr": 0x102,  # arg -> struct msr: u32 index, u32 lo, u32 hi
    "afterburn_wrmsr": 0x103,
    "afterburn_sti": 0x104,  # sti found an interrupt pending: deliver it after the next instruction
}

# Errors (negative in EAX)
EPERM, ENOENT, EFAULT, EINVAL, ENOSYS = 1, 2, 14, 22, 38

# shared_info (xen/include/public/xen.h, x86_32): vcpu_info[32] of 64 bytes,
# then the event channel bitmaps.  Afterburn adds the 8259 vector of the
# pending PIC event in the page's unused tail.
SHINFO = {
    "upcall_pending": 0,  # vcpu_info[0].evtchn_upcall_pending (u8)
    "upcall_mask": 1,  # vcpu_info[0].evtchn_upcall_mask (u8): 1 = virtual IF clear
    "pending_sel": 4,  # vcpu_info[0].evtchn_pending_sel (u32)
    "cr2": 8,  # vcpu_info[0].arch.cr2
    "evtchn_pending": 2048,  # u32[32]
    "evtchn_mask": 2176,  # u32[32]
    "afterburn_vector": 3840,  # u32[16]: vector of the event on each port (extension)
}

# start info: Xen's words after the generic ones (wedge/layout.py).
STARTINFO_XEN_WORDS = ("nr_pages", "shared_info")


def c_header() -> str:
    lines = ["/* Generated from backends/xen/abi.py: do not edit. */", "#ifndef XEN_ABI_H", "#define XEN_ABI_H", ""]
    lines.append(f"#define HYPERCALL_VECTOR 0x{HYPERCALL_VECTOR:x}")
    lines += [f"#define HC_{k.upper()} {v}" for k, v in HC.items()]
    lines += [f"#define MMUEXT_{k.upper()} {v}" for k, v in MMUEXT.items()]
    lines += [f"#define PHYSDEVOP_{k.upper()} {v}" for k, v in PHYSDEVOP.items()]
    lines += [f"#define SHINFO_{k.upper()} {v}" for k, v in SHINFO.items()]
    lines += [f"#define SI_{k.upper()} {len(START_INFO_WORDS) + i}" for i, k in enumerate(STARTINFO_XEN_WORDS)]
    for name in ("SCHEDOP_yield", "SCHEDOP_block", "SCHEDOP_shutdown", "SHUTDOWN_poweroff", "SHUTDOWN_crash",
                 "CONSOLEIO_write", "EVTCHNOP_bind_pirq", "EVTCHNOP_unmask", "PIC_PORT", "TIMER_PORT"):  # fmt: skip
        lines.append(f"#define {name.upper()} {globals()[name]}")
    # No "u" suffix: entry.S uses these too, and gas has no integer suffixes.
    lines.append(f"#define XEN_SHARED_INFO 0x{SHARED_INFO:08x}")
    lines += ["", "#endif", ""]
    return "\n".join(lines)
