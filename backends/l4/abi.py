"""The L4 X.2 ABI on IA-32, as L4Ka::Pistachio implements it, and the
monitor protocol Afterburn's wedge speaks over it.

Numbers and layouts are X.2's (Pistachio's ia32 glue where the manual
leaves the choice: ``user/include/l4/*.h``, ``kernel/src/api/v4``,
``kernel/src/glue/v4-x86``).  Where the model departs from Pistachio the
constant says so here and docs/wedge.md ("l4") explains why.  This file is
the single definition; :func:`c_header` generates ``l4_abi.h`` for the wedge.
"""
from __future__ import annotations

from dataclasses import dataclass

from wedge.layout import HOLE_BASE, SHARED_INFO, START_INFO_WORDS

# -- system-call entry (Pistachio ia32 built without SYSENTER) ------------------------
IPC_VECTOR = 0x30  # Ipc and Lipc
SYSCALL_VECTOR = 0x31  # everything else, dispatched by the EIP of the int (the KIP stub)
KERNEL_INTERFACE = b"\xf0\x90"  # lock; nop: #UD, emulated

# The KIP: X.2 layout, Pistachio's values.
KIP_MAGIC = 0x4BE6344C  # "L4\xe6K"
API_VERSION = 0x84050000  # X.2
API_FLAGS = 0  # little-endian, 32-bit
KERNEL_ID = 0x04020000  # L4Ka::Pistachio
KIP_OFF = {
    "magic": 0x00, "api_version": 0x04, "api_flags": 0x08, "kernel_desc": 0x0C, "utcb_area_info": 0xA8,
    "kip_area_info": 0xAC, "proc_desc": 0xBC, "thread_info": 0xC4, "page_info": 0xC8, "processor_info": 0xCC,
}  # fmt: skip
# Offsets of the system-call links (each holds the stub's offset from the KIP base).
SYSCALL_LINKS = {
    "SpaceControl": 0xD0, "ThreadControl": 0xD4, "ProcessorControl": 0xD8, "MemoryControl": 0xDC, "Ipc": 0xE0,
    "Lipc": 0xE4, "Unmap": 0xE8, "ExchangeRegisters": 0xEC, "SystemClock": 0xF0, "ThreadSwitch": 0xF4,
    "Schedule": 0xF8,
}  # fmt: skip
UTCB_AREA_INFO = 0x000C2401  # UTCB 512 bytes, aligned to 512, area of at least 4 KiB
KIP_AREA_INFO = 0x0000000C  # 4 KiB
PAGE_INFO = 0x00401006  # 4 KiB and 4 MiB pages; rights R and W (no separate X on ia32)

# -- thread identifiers ---------------------------------------------------------------
NILTHREAD, ANYTHREAD, ANYLOCALTHREAD = 0, 0xFFFFFFFF, 0xFFFFFFC0
SYSTEM_BASE = 16  # 8259 interrupt lines
USER_BASE = SYSTEM_BASE + 32


def global_id(thread_no: int, version: int) -> int:
    """X.2 global thread id: thread number bits 31..14, version 13..0 (its low
    6 bits non-zero, or it would read as a local id)."""
    return (thread_no << 14) | version


def thread_no(tid: int) -> int:
    return tid >> 14


def is_global(tid: int) -> bool:
    return bool(tid & 0x3F)


def irq_thread(irq: int) -> int:
    return global_id(irq, 1)


# -- message tags and errors --------------------------------------------------------------


@dataclass(frozen=True)
class MsgTag:
    """MR0: label bits 31..16, flags 15..12, typed words 11..6, untyped 5..0."""

    label: int
    u: int = 0
    t: int = 0
    flags: int = 0

    @property
    def raw(self) -> int:
        return (self.label & 0xFFFF) << 16 | (self.flags & 0xF) << 12 | (self.t & 0x3F) << 6 | (self.u & 0x3F)

    @staticmethod
    def decode(raw: int) -> MsgTag:
        return MsgTag(raw >> 16, raw & 0x3F, (raw >> 6) & 0x3F, (raw >> 12) & 0xF)


FLAG_PROPAGATE, FLAG_ERROR = 0x1, 0x8  # of the 4 flag bits: p (bit 12) and E (bit 15)
ERROR_TAG = 0x00008000

# ErrorCode TCR: offset << 4 | err << 1 | phase (0 send, 1 receive)
IPC_TIMEOUT, IPC_NO_PARTNER, IPC_CANCELED, IPC_OVERFLOW, IPC_XFER_OWN, IPC_XFER_PARTNER, IPC_ABORTED = range(1, 8)


def ipc_error(err: int, receive: bool = False, offset: int = 0) -> int:
    return offset << 4 | err << 1 | int(receive)


# ThreadControl / SpaceControl / ExchangeRegisters / Schedule ErrorCode values
E_OK, E_NO_PRIVILEGE, E_INVALID_THREAD, E_INVALID_SPACE, E_INVALID_SCHEDULER, E_INVALID_PARAM = range(6)
E_UTCB_AREA, E_KIP_AREA, E_NO_MEMORY = 6, 7, 8

# Timeouts: snd << 16 | rcv; a time value 0 is never, 0x0400 is zero.
NEVER, ZERO_TIME = 0x0000, 0x0400


def timeouts(snd: int, rcv: int) -> int:
    return snd << 16 | rcv


# -- fpages and typed items ----------------------------------------------------------------


@dataclass(frozen=True)
class Fpage:
    """A flexpage: base bits 31..10 (aligned to its size), log2 size bits
    9..4, rights r (bit 2), w (bit 1), x (bit 0)."""

    base: int
    log2: int
    rights: int = 7

    @property
    def raw(self) -> int:
        return (self.base & ~((1 << self.log2) - 1) & 0xFFFFFC00) | (self.log2 & 0x3F) << 4 | (self.rights & 7)

    @property
    def size(self) -> int:
        return 1 << self.log2

    @property
    def end(self) -> int:
        return self.base + self.size

    @staticmethod
    def decode(raw: int) -> Fpage | None:
        """None for the nil fpage; the complete address space is log2 32."""
        log2 = (raw >> 4) & 0x3F
        if log2 == 0:
            return None
        if log2 == 1 and raw & ~0x3FF == 0:  # CompleteAddressSpace
            return Fpage(0, 32, raw & 7)
        return Fpage(raw & ~((1 << min(log2, 32)) - 1) & 0xFFFFFFFF, log2, raw & 7)


MIN_FPAGE = 12
R, W, X = 4, 2, 1
FULL = R | W | X
MAP_ITEM, GRANT_ITEM = 4, 5  # type field, bits 3..1 of the item's first word


def map_item(fpage: Fpage, snd_base: int, grant: bool = False) -> tuple[int, int]:
    return (snd_base & 0xFFFFFC00) | ((GRANT_ITEM if grant else MAP_ITEM) << 1), fpage.raw


def item_type(word0: int) -> int:
    return (word0 >> 1) & 7


# Unmap control: k (index of the last fpage, in MR0..MRk) bits 5..0, flush bit 6.
UNMAP_FLUSH = 0x40

# ExchangeRegisters control bits (input), and the returned state bits.
EXREGS = {"h": 1 << 0, "r": 1 << 1, "s": 1 << 2, "S": 1 << 3, "I": 1 << 4, "F": 1 << 5, "u": 1 << 6, "p": 1 << 7,
          "H": 1 << 8}  # fmt: skip
EXREGS_WAS_HALTED, EXREGS_WAS_RECEIVING, EXREGS_WAS_SENDING = 1, 2, 4
USER_FLAGS = 0x8D5  # the flags ExchangeRegisters may change: CF PF AF ZF SF OF

# -- the UTCB (word offsets from the local id, the address of MR0) ------------------------
UTCB_SIZE = 512
UTCB_MR0 = 256  # local id = UtcbLocation + 256
MRS = 64
TCR = {"ThreadWord0": -4, "ThreadWord1": -5, "VirtualSender": -6, "IntendedReceiver": -7, "XferTimeouts": -8,
       "ErrorCode": -9, "PreemptFlags": -10, "ExceptionHandler": -11, "Pager": -12, "UserDefinedHandle": -13,
       "ProcessorNo": -14, "MyGlobalId": -15}  # fmt: skip
BR0 = -16

# -- kernel protocol messages (label, in MR0 bits 31..16) ----------------------------------------
LABEL_PAGEFAULT = 0xFFE0  # | rwx of the access; u = 2: fault address, faulting IP
LABEL_INTERRUPT = 0xFFF0
LABEL_PREEMPTION = 0xFFD0
LABEL_EXCEPTION = 0xFFB0  # Pistachio ia32 uses -5 for every CPU exception; u = 12
# Exception message, MR1..MR12 (and the reply writes them back)
EXC_MRS = ("eip", "eflags", "vector", "error", "edi", "esi", "ebp", "esp", "ebx", "edx", "ecx", "eax")

# -- the layout of the VM's address space in the hole (a departure: Pistachio puts the KIP
#    and UTCB areas below its kernel at 0xC0000000, where a guest kernel lives) ---------------
KIP_AREA = HOLE_BASE + 0x1E000  # one page
UTCB_AREA = HOLE_BASE + 0x1F000  # one page: the VM thread's UTCB
VM_UTCB = UTCB_AREA  # UtcbLocation; its local id is +256
MONITOR_PHYS = 0x40000000  # where the monitor sees guest-physical memory (granted by the resource manager)

# The page the VM shares with the monitor (it is the monitor's memory, mapped into the VM):
# the virtual IF and the words the monitor leaves for the wedge's entry stubs.
SHARED = {
    "vif": 0,  # u8: 1 = virtual IF on
    "pending": 1,  # u8: an interrupt may be waiting (the IRQ thread sets it)
    "entry_eip": 4,  # the guest-visible frame of the context ExchangeRegisters took the
    "entry_cs": 8,  # VM thread away from (the wedge's entry stubs push it)
    "entry_eflags": 12,
    "entry_info": 16,  # trap information word (wedge/layout.py), or UPCALL_INFO
    "entry_error": 20,
    "entry_cr2": 24,
    "vector": 28,  # the vector the IRQ thread acknowledged for an upcall
}
VIF_ON, VIF_OFF = 1, 0

# -- the monitor protocol (labels below the kernel's negative ones) ------------------------------
MONITOR = {
    "activate": 0x100,  # enter guest user mode: MR1..MR17 = struct uframe; the reply is what ended it
    "idle": 0x101,  # hlt with IF on: the reply comes when an interrupt is pending
    "inta": 0x102,  # acknowledge: reply MR1 = vector, or -1
    "sti_shadow": 0x103,  # MR1 = the instruction after sti
    "pio": 0x110,  # MR1..MR6 = struct pio; reply MR1 = result
    "rdmsr": 0x111,  # MR1 = index; reply MR1 = status, MR2/MR3 = lo/hi
    "wrmsr": 0x112,  # MR1 = index, MR2/MR3 = lo/hi; reply MR1 = status
    "paging": 0x120,  # MR1 = cr0, MR2 = cr4
    "cr3": 0x121,  # MR1 = cr3
    "flush_user": 0x122,  # MR1..MRk = fpages: revoke from the guest's user space
    "set_gdt": 0x130,  # MR1 = base, MR2 = entries
    "update_descriptor": 0x131,  # MR1 = linear address
    "set_ldt": 0x132,  # MR1 = base, MR2 = entries
    "console": 0x140,  # MR1 = length, MR2.. = bytes
    "shutdown": 0x150,  # MR1 = reason (0 power off, 3 crash)
}
MONITOR_ERROR = 0xFFFF  # the reply label to a request the monitor refuses (a server cannot set E)
# What the reply to "activate" (or a re-activation) reports, MR1..: info word (wedge/layout.py),
# error code, cr2, then struct uframe of the interrupted user context.
ACTIVATE_REPLY = ("info", "error", "cr2")
SHUTDOWN_POWEROFF, SHUTDOWN_CRASH = 0, 3
THREAD_NAMES = ("monitor", "irq", "rm", "vm", "user")

# Start info: the generic words, then the thread ids the wedge talks to and the KIP.
START_INFO_L4 = ("monitor", "irq", "kip", "utcb")


def c_header() -> str:
    lines = ["/* Generated from backends/l4/abi.py: do not edit. */", "#ifndef L4_ABI_H", "#define L4_ABI_H", ""]
    consts = {
        "L4_IPC_VECTOR": IPC_VECTOR, "L4_SYSCALL_VECTOR": SYSCALL_VECTOR, "L4_ERROR_TAG": ERROR_TAG,
        "L4_UNMAP_FLUSH": UNMAP_FLUSH, "L4_NEVER": NEVER, "L4_ZERO_TIME": ZERO_TIME, "L4_UTCB_MR0": UTCB_MR0,
        "L4_KIP_AREA": KIP_AREA, "L4_VM_UTCB": VM_UTCB, "L4_SHARED": SHARED_INFO, "L4_VIF_ON": VIF_ON,
        "L4_VIF_OFF": VIF_OFF, "L4_LABEL_PAGEFAULT": LABEL_PAGEFAULT, "L4_HOLE_BASE": HOLE_BASE,
    }  # fmt: skip
    lines += [f"#define {k} 0x{v:08x}" for k, v in consts.items()]
    lines += [f"#define L4_LINK_{k.upper()} 0x{v:x}" for k, v in SYSCALL_LINKS.items()]
    lines += [f"#define L4_TCR_{k.upper()} ({v})" for k, v in TCR.items()]
    lines += [f"#define L4_SHARED_{k.upper()} {v}" for k, v in SHARED.items()]
    lines += [f"#define L4_MON_{k.upper()} 0x{v:x}" for k, v in MONITOR.items()]
    lines += [f"#define L4_SI_{k.upper()} {len(START_INFO_WORDS) + i}" for i, k in enumerate(START_INFO_L4)]
    lines += [f"#define L4_SHUTDOWN_POWEROFF {SHUTDOWN_POWEROFF}", f"#define L4_SHUTDOWN_CRASH {SHUTDOWN_CRASH}"]
    lines += ["", "#endif", ""]
    return "\n".join(lines)
