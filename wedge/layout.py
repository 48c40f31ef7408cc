"""The one definition of the wedge's memory layout and virtual CPU.

Python (the rewriter, the backends, the Observation) and the wedge's C code
must agree on where every field of the virtual CPU lives.  It is defined
here once; :func:`c_header` generates ``vcpu.h`` for the wedge build, and
``tests/test_wedge.py`` checks the compiled wedge against this table.

The hypervisor hole: the top 4 MiB of every guest address space belong to
the monitor, as in 32-bit Xen.  Guests must not map anything there; the
hypervisor maps it identically (virtual = physical) and supervisor-only, so
guest user code never sees it.
"""
from __future__ import annotations

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
HYP_PRIVATE = 0xFFF30000  # hypervisor-private (real GDT, LDT shadow): guest read-only
REAL_GDT = HYP_PRIVATE  # 64 KiB: 8192 descriptors
REAL_LDT = HYP_PRIVATE + 0x10000  # 64 KiB shadow of the guest's current LDT
# The hole's last page stays empty and readable from every ring: Unicorn
# looks up the translation block at `until - 1` (0xFFFFFFFF) after an
# emu_start that began at EIP 0 (backends/pc/machine.py: other slices stop
# at 0 and are exempt), and a refused lookup would leave a stale fault.
UNTIL_PAGE = 0xFFFFF000

# Selectors the hypervisor reserves at the top of the real GDT (ring 1 for
# the guest kernel and the wedge, ring 3 for user mode); below them, the real
# GDT is a ring-compressed shadow of the guest's own GDT, index for index.
GDT_ENTRIES = 8192
HYP_CS = (GDT_ENTRIES - 4) * 8 | 1
HYP_DS = (GDT_ENTRIES - 3) * 8 | 1
HYP_UCS = (GDT_ENTRIES - 2) * 8 | 3
HYP_UDS = (GDT_ENTRIES - 1) * 8 | 3
GUEST_GDT_MAX = GDT_ENTRIES - 8  # the guest may use descriptors below this index


@dataclass(frozen=True)
class Field:
    name: str
    size: int  # bytes per element
    count: int = 1
    doc: str = ""


# struct vcpu, in order; every field 4-byte aligned (the C side is packed and
# asserts each offset).
VCPU_FIELDS: tuple[Field, ...] = (
    Field("magic", 4, doc="0x56435055 'VCPU' once the wedge has booted"),
    Field("cr0", 4), Field("cr2", 4), Field("cr3", 4), Field("cr4", 4),
    Field("dr", 4, 8, "DR0-DR7"),
    Field("gdt_base", 4), Field("gdt_limit", 4),
    Field("idt_base", 4), Field("idt_limit", 4),
    Field("ldtr", 4, doc="LDT selector"), Field("tr", 4, doc="TSS selector"),
    Field("seg", 4, 6, "virtual selectors: ES CS SS DS FS GS (the hardware's sreg order)"),
    Field("seg_desc", 4, 12, "descriptor cached by each segment register (2 words each), as hardware caches it"),
    Field("eflags_sys", 4, doc="virtual IOPL and NT (real ones stay 0 at CPL 1)"),
    Field("scratch", 4, doc="EAX saved by MEMCALL patches"),
    Field("memcall_seg", 4, doc="set by a *_seg entry: the MEMCALL site names its segment in one more byte"),
    Field("pending_entry", 4, doc="what sti patches call: w_ret, or w_pending while an interrupt may wait"),
    Field("exit_esp", 4, doc="with exit_ss: the stack `lss` switches to before the final iret"),
    Field("exit_ss", 4),
    Field("exit_frame", 4, 10, "es, ds and the pushal image restored on leaving the wedge"),
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

VCPU_MAGIC = 0x56435055


def vcpu_offsets() -> dict[str, int]:
    out, off = {}, 0
    for f in VCPU_FIELDS:
        out[f.name] = off
        off += f.size * f.count
    out["__size__"] = off
    return out


def c_header() -> str:
    """``vcpu.h`` for the wedge: the struct, layout asserts and the hole map."""
    lines = [
        "/* Generated from wedge/layout.py: do not edit. */",
        "#ifndef AFTERBURN_VCPU_H",
        "#define AFTERBURN_VCPU_H",
        "",
    ]
    consts = {
        "HOLE_BASE": HOLE_BASE, "HOLE_SIZE": HOLE_SIZE, "WEDGE_BASE": WEDGE_BASE, "SHARED_INFO": SHARED_INFO,
        "START_INFO": START_INFO, "HYP_PRIVATE": HYP_PRIVATE, "REAL_GDT": REAL_GDT, "REAL_LDT": REAL_LDT,
        "HYP_CS": HYP_CS, "HYP_DS": HYP_DS, "HYP_UCS": HYP_UCS, "HYP_UDS": HYP_UDS,
        "GUEST_GDT_MAX": GUEST_GDT_MAX, "VCPU_MAGIC": VCPU_MAGIC,
    }  # fmt: skip
    lines += [f"#define {k} 0x{v:08x}" for k, v in consts.items()]
    offs = vcpu_offsets()
    lines += [f"#define VCPU_OFF_{f.name.upper()} {offs[f.name]}" for f in VCPU_FIELDS]
    lines += [f"#define VCPU_SIZE {offs['__size__']}", "", "#ifndef __ASSEMBLER__", "#include <stdint.h>",
              "#include <stddef.h>", "struct vcpu {"]
    for f in VCPU_FIELDS:
        ctype = {1: "uint8_t", 2: "uint16_t", 4: "uint32_t"}[f.size]
        arr = f"[{f.count}]" if f.count > 1 else ""
        doc = f"  /* {f.doc} */" if f.doc else ""
        lines.append(f"    {ctype} {f.name}{arr};{doc}")
    lines.append("};")
    for f in VCPU_FIELDS:
        lines.append(f"_Static_assert(offsetof(struct vcpu, {f.name}) == VCPU_OFF_{f.name.upper()}, \"vcpu layout\");")
    lines.append("_Static_assert(sizeof(struct vcpu) == VCPU_SIZE, \"vcpu size\");")
    lines += ["#endif", "", "#endif", ""]
    return "\n".join(lines)
