"""The one definition of the wedge's ABI with the hypervisor.

Python (the rewriter, the backends, the Observation) and the wedge's C and
assembly must agree on the hole map, the virtual CPU, the frames the entry
stubs build, the trap information word, the boot parameters and the port
I/O request.  All of it is defined here once; :func:`c_header` generates
``wedge_abi.h`` for the wedge build, with a ``_Static_assert`` for every
struct offset, and the Python side packs and unpacks through the same
:class:`CStruct` objects.  ``tests/test_wedge.py`` checks the compiled wedge
against this table.

What a backend chooses is passed in at build time (:class:`WedgeConfig`):
the ring its guest kernel runs in, and where its virtual IF lives.

The hypervisor hole: the top 4 MiB of every guest address space belong to
the monitor, as in 32-bit Xen.  Guests must not map anything there; the
hypervisor maps it identically (virtual = physical) and only while the
guest runs in (virtual) kernel mode, so guest user code never sees it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

HOLE_BASE = 0xFFC00000
HOLE_SIZE = 0x00400000

# Placement inside the hole is chosen for QEMU's software TLB, which is
# direct-mapped (64 to 256 entries, indexed by page number) with an 8-entry
# victim cache.  Anything 1 MiB-aligned shares index 0 with the guest kernel's
# first page (kernels load at 1 MiB), so the hot pages sit at page offsets
# 0x20-0x3f of their 1 MiB block, each at its own index: wedge 0x20.., shared
# info 0x2c, start info 0x2d, real GDT 0x30-0x3f.  With everything at offset
# 0 a pushf/cli/popf loop refilled the TLB (a Python callback) ~5 times per
# iteration and ran 10x slower.
WEDGE_BASE = HOLE_BASE + 0x20000  # wedge image: text, data (the vcpu lives here), bss, boot stack
WEDGE_MAX = 0x00200000
SHARED_INFO = 0xFFE2C000  # backend shared page (Xen: shared_info), guest read/write
START_INFO = 0xFFE2D000  # boot parameters from the hypervisor, guest read-only
HYP_PRIVATE = 0xFFF30000  # hypervisor-private, guest read-only:
REAL_GDT = HYP_PRIVATE  # 64 KiB: the real GDT, 8192 descriptors
REAL_LDT = HYP_PRIVATE + 0x10000  # 64 KiB: the real LDT
# The guest's own descriptors as they were when the hypervisor last shadowed
# them: the wedge compares the guest's current ones with these before every
# segment load, and needs no copy of the shadowing rule to do so.
SEEN_GDT = HYP_PRIVATE + 0x20000
SEEN_LDT = HYP_PRIVATE + 0x30000
# The hole's last page stays empty and readable from every ring: Unicorn
# looks up the translation block at `until - 1` (0xFFFFFFFF) after an
# emu_start that began at EIP 0 (backends/pc/machine.py: other slices stop
# at 0 and are exempt), and a refused lookup would leave a stale fault.
UNTIL_PAGE = 0xFFFFF000

# The hypervisor's own flat code and data selectors are the top two entries
# of the real GDT, at the guest kernel's ring; below them, the real GDT is a
# shadow of the guest's own GDT, index for index.
GDT_ENTRIES = 8192
GUEST_GDT_MAX = GDT_ENTRIES - 8  # the guest may use descriptors below this index


def hyp_selectors(ring: int) -> tuple[int, int]:
    """(CS, DS) the wedge runs on for a guest kernel at ``ring``."""
    return (GDT_ENTRIES - 2) * 8 | ring, (GDT_ENTRIES - 1) * 8 | ring


# ---------------------------------------------------------------------------
# Structures shared by C and Python


@dataclass(frozen=True)
class Field:
    name: str
    size: int  # bytes per element: 1, 2, 4, or a CStruct's size
    count: int = 1
    doc: str = ""
    struct: CStruct | None = None  # a nested structure


class CStruct:
    """A little-endian C struct with no padding (every field is naturally
    aligned, which the generated asserts check), declared once for both
    languages."""

    def __init__(self, name: str, *fields: Field) -> None:
        self.name = name
        self.fields = fields
        self.offsets: dict[str, int] = {}
        off = 0
        for f in fields:
            self.offsets[f.name] = off
            off += f.size * f.count
        self.size = off

    def unpack(self, data: bytes) -> dict[str, int]:
        """Top-level scalar fields by name (nested structs flattened)."""
        out: dict[str, int] = {}
        for f in self.fields:
            at = self.offsets[f.name]
            if f.struct is not None:
                out.update(f.struct.unpack(data[at : at + f.size]))
            elif f.count == 1:
                out[f.name] = int.from_bytes(data[at : at + f.size], "little")
        return out

    def pack(self, **values: int) -> bytes:
        buf = bytearray(self.size)
        for f in self.fields:
            if f.struct is None and f.count == 1 and f.name in values:
                at = self.offsets[f.name]
                buf[at : at + f.size] = (values[f.name] & ((1 << (8 * f.size)) - 1)).to_bytes(f.size, "little")
        return bytes(buf)

    def c_lines(self) -> list[str]:
        lines = [f"struct {self.name} {{"]
        for f in self.fields:
            ctype = f"struct {f.struct.name}" if f.struct else {1: "uint8_t", 2: "uint16_t", 4: "uint32_t"}[f.size]
            arr = f"[{f.count}]" if f.count > 1 else ""
            doc = f"  /* {f.doc} */" if f.doc else ""
            lines.append(f"    {ctype} {f.name}{arr};{doc}")
        lines.append("};")
        up = self.name.upper()
        for f in self.fields:
            lines.append(f"_Static_assert(offsetof(struct {self.name}, {f.name}) == {up}_OFF_{f.name.upper()}, "
                         f'"{self.name} layout");')  # fmt: skip
        lines.append(f'_Static_assert(sizeof(struct {self.name}) == {up}_SIZE, "{self.name} size");')
        return lines

    def c_defines(self) -> list[str]:
        up = self.name.upper()
        return [f"#define {up}_OFF_{f.name.upper()} {self.offsets[f.name]}" for f in self.fields] + \
            [f"#define {up}_SIZE {self.size}"]  # fmt: skip


def _u32(*names: str) -> tuple[Field, ...]:
    return tuple(Field(n, 4) for n in names)


# The guest registers an entry stub saves and every exit restores: DS and ES
# (real selectors), then a pushal image.
REGS = CStruct("regs", *_u32("es", "ds", "edi", "esi", "ebp", "esp_", "ebx", "edx", "ecx", "eax"))
# What a site entry stub leaves below the site's return address.
FRAME = CStruct("frame", Field("r", REGS.size, struct=REGS), Field("eflags", 4, doc="the guest's real flags"),
                Field("ret", 4, doc="the call's return address"))  # fmt: skip
# What the wedge hands the hypervisor to enter guest user mode
# (the return_to_user primitive): every register, and the user context.
UFRAME = CStruct("uframe", Field("r", REGS.size, struct=REGS), *_u32("fs", "gs", "eip", "cs", "eflags", "esp", "ss"))
# One port I/O request, or a string of them (ins/outs).
PIO = CStruct("pio", Field("port", 2), Field("size", 1), Field("flags", 1), *_u32("value", "count", "buf"))
PIO_IN, PIO_STRING, PIO_REP_BACKWARD = 1, 2, 4

# The virtual CPU, in order; every field 4-byte aligned.
VCPU = CStruct(
    "vcpu",
    Field("magic", 4, doc="0x56435055 'VCPU' once the wedge has booted"),
    *_u32("cr0", "cr2", "cr3", "cr4"),
    Field("dr", 4, 8, "DR0-DR7"),
    *_u32("gdt_base", "gdt_limit", "idt_base", "idt_limit"),
    Field("ldtr", 4, doc="LDT selector"), Field("tr", 4, doc="TSS selector"),
    Field("seg", 4, 6, "virtual selectors: ES CS SS DS FS GS (the hardware's sreg order)"),
    Field("seg_desc", 4, 12, "descriptor cached by each segment register (2 words each), as hardware caches it"),
    Field("eflags_sys", 4, doc="virtual IOPL and NT (the real ones stay 0 in the guest kernel)"),
    Field("scratch", 4, doc="EAX saved by MEMCALL patches"),
    Field("memcall_seg", 4, doc="set by a *_seg entry: the MEMCALL site names its segment in one more byte"),
    Field("pending_entry", 4, doc="what sti patches call: w_ret, or w_pending while an interrupt may wait"),
    Field("exit_esp", 4, doc="with exit_ss: the stack `lss` switches to before the final iret"),
    Field("exit_ss", 4),
    Field("exit_frame", REGS.size, doc="the registers restored on leaving the wedge", struct=REGS),
    Field("site_ret", 4, doc="return address of the wedge call in progress"),
    Field("frame", 4, doc="where that call's saved guest registers are (struct frame)"),
    Field("sites", 4, doc="linear address of the guest's .afterburn records (from start_info)"),
    Field("nsites", 4),
    Field("depth", 4, doc="wedge nesting depth"),
    Field("msr_count", 4),
    Field("counters", 4, 64, "wedge entries, by entry point (wedge.ENTRY_POINTS order)"),
    Field("delivered", 4, doc="interrupts the wedge delivered through the guest IDT"),
    Field("hypercalls", 4, doc="hypercalls the wedge made"),
)  # fmt: skip
VCPU_FIELDS = VCPU.fields
VCPU_MAGIC = 0x56435055


def vcpu_offsets() -> dict[str, int]:
    return {**VCPU.offsets, "__size__": VCPU.size}


# ---------------------------------------------------------------------------
# Entering the wedge from the hypervisor (the default "bounce frame")
#
# The hypervisor pushes, on the guest's stack (the kernel stack for an entry
# from user mode): the guest-visible interrupt frame (EIP, CS, EFLAGS[, ESP,
# SS]), an error code if the vector has one, and the trap information word,
# then enters the trap entry.  Event upcalls enter the upcall entry with only
# the frame; that stub pushes UPCALL_INFO itself.

TRAP_VECTOR = 0xFF
TRAP_HAS_ERROR = 1 << 8
TRAP_SOFTWARE = 1 << 9  # an int n / int3 / into: EIP is past the instruction
TRAP_SOFT_LEN_SHIFT = 12  # ...whose length (1 or 2) is here
UPCALL_INFO = 0xFFFF


def trap_info(vector: int, has_error: bool, soft_len: int = 0) -> int:
    info = vector | (TRAP_HAS_ERROR if has_error else 0)
    if soft_len:
        info |= TRAP_SOFTWARE | (soft_len << TRAP_SOFT_LEN_SHIFT)
    return info


# ---------------------------------------------------------------------------
# Boot parameters (start info): ESI points at these u32 words when the
# hypervisor starts the vCPU in the wedge; a backend's own words follow.

STARTINFO_MAGIC = 0x41465458  # 'AFTX'
START_INFO_WORDS = ("magic", "entry", "eax", "ebx", "gdt_base", "gdt_limit", "cs", "ds", "esp", "sites", "nsites")


def start_info(**values: int) -> bytes:
    return struct.pack(f"<{len(START_INFO_WORDS)}I", *(values[w] & 0xFFFFFFFF for w in START_INFO_WORDS))


# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WedgeConfig:
    """What a backend chooses for its wedge at build time."""

    ring: int  # the real ring the guest kernel (and the wedge) runs in: 1 or 3
    vif_addr: int  # the byte that holds the virtual IF
    vif_on: int  # its value for IF=1
    vif_off: int


def c_header(cfg: WedgeConfig) -> str:
    """``wedge_abi.h``: constants, structs with layout asserts, the hole map,
    and the backend's choices."""
    hyp_cs, hyp_ds = hyp_selectors(cfg.ring)
    consts = {
        "HOLE_BASE": HOLE_BASE, "HOLE_SIZE": HOLE_SIZE, "WEDGE_BASE": WEDGE_BASE, "SHARED_INFO": SHARED_INFO,
        "START_INFO": START_INFO, "HYP_PRIVATE": HYP_PRIVATE, "REAL_GDT": REAL_GDT, "REAL_LDT": REAL_LDT,
        "SEEN_GDT": SEEN_GDT, "SEEN_LDT": SEEN_LDT, "GUEST_GDT_MAX": GUEST_GDT_MAX, "VCPU_MAGIC": VCPU_MAGIC,
        "GUEST_RING": cfg.ring, "HYP_CS": hyp_cs, "HYP_DS": hyp_ds,
        "TRAP_VECTOR": TRAP_VECTOR, "TRAP_HAS_ERROR": TRAP_HAS_ERROR, "TRAP_SOFTWARE": TRAP_SOFTWARE,
        "TRAP_SOFT_LEN_SHIFT": TRAP_SOFT_LEN_SHIFT, "UPCALL_INFO": UPCALL_INFO, "STARTINFO_MAGIC": STARTINFO_MAGIC,
        "PIO_IN": PIO_IN, "PIO_STRING": PIO_STRING, "PIO_REP_BACKWARD": PIO_REP_BACKWARD,
        "BE_VIF_ADDR": cfg.vif_addr, "BE_VIF_ON": cfg.vif_on, "BE_VIF_OFF": cfg.vif_off,
    }  # fmt: skip
    # No "u" suffixes: entry.S includes this too, and gas has no integer suffixes.
    lines = ["/* Generated from wedge/layout.py: do not edit. */", "#ifndef WEDGE_ABI_H", "#define WEDGE_ABI_H", ""]
    lines += [f"#define {k} 0x{v:08x}" for k, v in consts.items()]
    lines += [f"#define SI_{w.upper()} {i}" for i, w in enumerate(START_INFO_WORDS)]
    lines.append(f"#define SI_WORDS {len(START_INFO_WORDS)}")
    structs = (REGS, FRAME, UFRAME, PIO, VCPU)
    for s in structs:
        lines += s.c_defines()
    lines += ["", "#ifndef __ASSEMBLER__", "#include <stdint.h>", "#include <stddef.h>"]
    for s in structs:
        lines += s.c_lines()
    lines += ["#endif", "", "#endif", ""]
    return "\n".join(lines)
