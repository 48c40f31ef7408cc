"""Patch templates: the bytes written over each site.

Every template is one of the four shapes in ``afterburn.isa`` (VIF, STI,
CALL(n), MEMCALL) and follows the site ABI documented in
``wedge/src/wedge.h``: a call to an entry point, then argument bytes that
tell the wedge which form of the instruction it replaces.  NOPs fill the
site before the patch, so the patch ends where the site ends.  Backends never change the shape, only the constants they
supply (where the virtual IF byte is, which values mean on and off).

:func:`patch` returns the bytes or raises :class:`Unpatchable` with a reason.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from capstone import x86_const as X

from afterburn import isa
from afterburn.nops import nop_bytes

GPR = {"eax": 0, "ecx": 1, "edx": 2, "ebx": 3, "esp": 4, "ebp": 5, "esi": 6, "edi": 7,
       "ax": 0, "cx": 1, "dx": 2, "bx": 3, "sp": 4, "bp": 5, "si": 6, "di": 7,
       "al": 0, "cl": 1, "dl": 2, "bl": 3}  # fmt: skip
SREG = {"es": 0, "cs": 1, "ss": 2, "ds": 3, "fs": 4, "gs": 5}
SEG_OVERRIDES = {0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65}
_OVERRIDE_SREG = {0x26: 0, 0x2E: 1, 0x36: 2, 0x3E: 3, 0x64: 4, 0x65: 5}  # ES CS SS DS FS GS

SYS_OP = {"sldt": 0, "str": 1, "lldt": 2, "ltr": 3, "verr": 4, "verw": 5, "smsw": 6, "lmsw": 7}
MISC_OP = {"clts": 0, "invd": 1, "wbinvd": 2, "cpuid": 3, "rdmsr": 4, "wrmsr": 5, "rdtsc": 6, "rsm": 7, "hlt": 8,
           # issue 9: what the virtual CPU does not offer (wedge/src/cpu.c, h_misc)
           "sysenter": 9, "sysexit": 10, "syscall": 11, "sysret": 12, "xsetbv": 13, "xgetbv": 14, "xsaves": 15,
           "xrstors": 16, "monitor": 17, "mwait": 18, "rdpmc": 19, "rdtscp": 20, "invpcid": 21, "clac": 22,
           "stac": 23, "wbnoinvd": 24, "rdpid": 25, "vmcall": 26, "vmmcall": 27, "vmfunc": 28, "getsec": 29,
           "vmx": 30, "svm": 31}  # fmt: skip
DTR_OP = {"lgdt": 0, "lidt": 1, "sgdt": 2, "sidt": 3}
LXS_SREG = {"lds": 3, "les": 0, "lfs": 4, "lgs": 5, "lss": 2}


class Unpatchable(Exception):
    """This site cannot be patched; the message says why."""


@dataclass(frozen=True)
class Context:
    """What templates need from the wedge and the backend."""

    entries: dict[str, int]  # entry point name -> address
    scratch: int  # address of vcpu.scratch
    vif: int  # address of the byte that holds the virtual IF
    vif_on: int  # its value for IF=1
    vif_off: int
    pending_entry: int  # address of the dword sti calls through: a bare ret, or the pending entry


def _call(ctx: Context, entry: str, at: int) -> bytes:
    return b"\xe8" + struct.pack("<I", (ctx.entries[entry] - (at + 5)) & 0xFFFFFFFF)  # rel32 wraps


def _ss_mov_byte(addr: int, value: int) -> bytes:
    return b"\x36\xc6\x05" + struct.pack("<IB", addr, value)


def _gpr(insn, op) -> int:
    return GPR[insn.reg_name(op.reg)]


def _prefixes(insn) -> set[int]:
    return {p for p in insn.prefix if p}


def _mem_operand(insn):
    return next((op for op in insn.operands if op.type == X.X86_OP_MEM), None)


def _memcall(insn, ctx: Context, entry: str, desc: int, at: int) -> bytes:
    """``mov ss:[scratch],eax; lea eax,[mem]; call entry; .byte desc``: the
    memory operand's ModRM, SIB and displacement are reused as they are."""
    prefixes = _prefixes(insn)
    if 0x67 in prefixes:
        raise Unpatchable("16-bit addressing")
    overrides = prefixes & SEG_OVERRIDES
    start = insn.modrm_offset
    modrm = insn.bytes[start]
    if modrm >> 6 == 3:
        raise Unpatchable("expected a memory operand")
    end = insn.size - insn.imm_size
    lea = bytes([0x8D, modrm & 0xC7]) + bytes(insn.bytes[start + 1 : end])
    save = b"\x36\xa3" + struct.pack("<I", ctx.scratch)
    head = save + lea
    if not overrides:
        return head + _call(ctx, entry, at + len(head)) + bytes([desc])
    # The override byte made the instruction, so the site, one byte longer:
    # room for the byte that names the segment (the *_seg entry reads it).
    sreg = _OVERRIDE_SREG[insn.prefix[1]]  # capstone's segment-prefix slot
    return head + _call(ctx, f"{entry}_seg", at + len(head)) + bytes([desc, sreg])


def _wide16(insn) -> int:
    return 1 if 0x66 in _prefixes(insn) else 0


def encode(site_kind: isa.Kind, insn, ctx: Context, at: int, flags_live: bool) -> bytes:
    """The patch for one instruction (not yet padded); ``at`` is the site's
    address, where the patch starts."""
    name = site_kind.name
    if 0xF0 in _prefixes(insn):
        raise Unpatchable("LOCK prefix")
    mem = _mem_operand(insn) is not None
    ops = insn.operands

    if name == "cli":
        return _ss_mov_byte(ctx.vif, ctx.vif_off)
    if name == "sti":
        # call *ss:[pending_entry]: a ret while nothing is pending (no flags,
        # no registers touched), the wedge's w_pending while something is.
        return _ss_mov_byte(ctx.vif, ctx.vif_on) + b"\x36\xff\x15" + struct.pack("<I", ctx.pending_entry)
    if name in ("pushf", "popf"):
        return _call(ctx, f"w_{name}{'16' if _wide16(insn) else ''}", at)
    if name in ("in", "out", "ins", "outs"):
        size = {1: 0, 2: 1, 4: 2}[_io_size(insn)]
        desc = size | (4 if name in ("in", "ins") else 0)
        if name in ("ins", "outs"):
            prefixes = _prefixes(insn)
            if prefixes & SEG_OVERRIDES:
                raise Unpatchable("segment override on string I/O")
            desc |= 16 | (32 if prefixes & {0xF2, 0xF3} else 0)
            return _call(ctx, "w_io", at) + bytes([desc])
        imm = next((op for op in ops if op.type == X.X86_OP_IMM), None)
        if imm is not None:
            return _call(ctx, "w_io", at) + bytes([desc | 8, imm.imm & 0xFF])
        return _call(ctx, "w_io", at) + bytes([desc])
    if name in ("mov_to_cr", "mov_from_cr", "mov_to_dr", "mov_from_dr"):
        write = name.startswith("mov_to")
        special, gpr = (ops[0], ops[1]) if write else (ops[1], ops[0])
        reg = insn.reg_name(special.reg)
        n = int(reg[2:])
        if n > 7:
            raise Unpatchable(f"{reg} does not exist in 32-bit mode")
        desc = _gpr(insn, gpr) | (n << 3) | (64 if write else 0) | (128 if "dr" in reg else 0)
        return _call(ctx, "w_movcr", at) + bytes([desc])
    if name == "mov_to_sreg":
        sreg = SREG[insn.reg_name(ops[0].reg)]
        if mem:
            return _memcall(insn, ctx, "w_sreg_m", sreg, at)
        return _call(ctx, "w_sreg", at) + bytes([sreg | (_gpr(insn, ops[1]) << 3)])
    if name == "mov_from_sreg":
        sreg = SREG[insn.reg_name(ops[1].reg)]
        if mem:
            return _memcall(insn, ctx, "w_sreg_m", sreg | 8, at)
        op = 2 if _wide16(insn) else 1
        return _call(ctx, "w_sreg", at) + bytes([sreg | (_gpr(insn, ops[0]) << 3) | (op << 6)])
    if name in ("push_sreg", "pop_sreg"):
        sreg = SREG[insn.reg_name(ops[0].reg)]
        entry = "w_pushseg" if name == "push_sreg" else "w_popseg"
        return _call(ctx, entry, at) + bytes([sreg | (8 if _wide16(insn) else 0)])
    if name in DTR_OP:
        return _memcall(insn, ctx, "w_dtr", DTR_OP[name] | (4 if _wide16(insn) else 0), at)
    if name in SYS_OP:
        op = SYS_OP[name]
        if mem:
            return _memcall(insn, ctx, "w_sys_m", op, at)
        return _call(ctx, "w_sys", at) + bytes([op | (_gpr(insn, ops[0]) << 3) | (64 if _wide16(insn) else 0)])
    if name in ("lar", "lsl"):
        desc = (1 if name == "lsl" else 0) | (_gpr(insn, ops[0]) << 1) | (128 if _wide16(insn) else 0)
        if mem:
            return _memcall(insn, ctx, "w_lar_m", desc, at)
        return _call(ctx, "w_lar", at) + bytes([desc | (_gpr(insn, ops[1]) << 4)])
    if name == "arpl":
        src = _gpr(insn, ops[1])
        if mem:
            return _memcall(insn, ctx, "w_arpl_m", src << 3, at)
        return _call(ctx, "w_arpl", at) + bytes([_gpr(insn, ops[0]) | (src << 3)])
    if name in MISC_OP:
        return _call(ctx, "w_misc", at) + bytes([MISC_OP[name]])
    if name == "invlpg":
        return _memcall(insn, ctx, "w_invlpg", 0, at)
    if name == "iret":
        return _call(ctx, "w_iret", at) + bytes([_wide16(insn)])
    if name == "lret":
        imm = ops[0].imm if ops else None
        desc = _wide16(insn) | (2 if imm is not None else 0)
        return _call(ctx, "w_lret", at) + bytes([desc]) + (struct.pack("<H", imm) if imm is not None else b"")
    if name in ("ljmp", "lcall"):
        call = 1 if name == "lcall" else 0
        w16 = _wide16(insn)
        if mem:
            return _memcall(insn, ctx, "w_far_m", call | (w16 << 1), at)
        sel, off = ops[0].imm, ops[1].imm
        target = struct.pack("<H", off) if w16 else struct.pack("<I", off)
        return _call(ctx, "w_far", at) + bytes([call | (w16 << 1)]) + target + struct.pack("<H", sel)
    if name in LXS_SREG:
        return _memcall(insn, ctx, "w_lxs", LXS_SREG[name] | (_gpr(insn, ops[0]) << 3) | (64 if _wide16(insn) else 0), at)
    if name == "int":
        return _call(ctx, "w_int", at) + bytes([ops[0].imm & 0xFF])
    if name in ("int3", "into"):
        return _call(ctx, f"w_{name}", at)
    raise Unpatchable(f"no template for {name}")


def _io_size(insn) -> int:
    for op in insn.operands:
        if op.type == X.X86_OP_REG and insn.reg_name(op.reg) in ("al", "ax", "eax"):
            return {"al": 1, "ax": 2, "eax": 4}[insn.reg_name(op.reg)]
        if op.type == X.X86_OP_MEM:
            return op.size
    return {X.X86_INS_INSB: 1, X.X86_INS_OUTSB: 1, X.X86_INS_INSW: 2, X.X86_INS_OUTSW: 2}.get(insn.id, 4)


def patch(site_kind: isa.Kind, insn, ctx: Context, at: int, length: int, flags_live: bool) -> bytes:
    """The full site: NOPs, then the template, which ends where the site
    ends.  So a wedge call returns exactly to the instruction after the
    site (nothing of the site runs after the patch), which matters for the
    sti shadow: "the next instruction" is the guest's, not a NOP."""
    size = len(encode(site_kind, insn, ctx, at, flags_live))
    if size > length:
        raise Unpatchable(f"the {size}-byte patch does not fit the {length}-byte site")
    lead = length - size
    return nop_bytes(lead) + encode(site_kind, insn, ctx, at + lead, flags_live)
