"""Decoding executable sections: the code map, NOPs, and flags liveness.

A linear sweep over a whole section goes wrong wherever data sits in code
(a multiboot header's checksum byte 0xfb decodes as ``sti``).  So the sweep
restarts at every symbol and at every recorded site, skips data symbols,
excluded regions and multiboot headers, and treats each recorded site as one
unit (instruction, then pad), the way objtool walks functions.
"""
from __future__ import annotations

import bisect
import struct
from functools import cache
from typing import NamedTuple

from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs, CsError
from capstone import x86_const as X

from . import isa
from .elf import Elf, Section
from .sitefmt import Region, Site


@cache
def decoder(bits: int = 32) -> Cs:
    md = Cs(CS_ARCH_X86, CS_MODE_32 if bits == 32 else CS_MODE_64)
    md.detail = True
    return md


def decode_one(data: bytes, offset: int, address: int, bits: int = 32):
    """The instruction at ``data[offset:]`` (reported at ``address``), or None.
    Its ``size`` is capstone's: use :func:`size_of` for the CPU's length."""
    try:
        for insn in decoder(bits).disasm(data[offset : offset + 16], address, 1):
            return insn
    except CsError:
        return None
    return None


# ---------------------------------------------------------------------------
# Instruction lengths the CPU agrees with
#
# Capstone 5.0.9 decodes ud0 (0F FF /r) and ud1 (0F B9 /r) without their
# ModRM byte, so one to six bytes short.  Linux ends every static-call
# trampoline with "0f b9 cc" (ud1 %esp,%ecx): read short, its ModRM byte is
# an int3.  Every decoder here goes through lite_run()/size_of(), which
# correct it; corpus/decoder_check.py compares the result with objdump on
# whole corpora and lists any other disagreement.

_MODRM_SHORT = frozenset({"ud0", "ud1"})  # capstone's mnemonics for the opcodes it decodes without ModRM
_PREFIXES = frozenset({0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67})


def modrm_length(data: bytes, at: int, addr16: bool) -> int:
    """Bytes of a ModRM operand at ``data[at]``: ModRM, SIB and displacement."""
    if at >= len(data):
        return 1
    modrm = data[at]
    mod, rm = modrm >> 6, modrm & 7
    if mod == 3:
        return 1
    if addr16:
        return 1 + (2 if mod == 2 or (mod == 0 and rm == 6) else mod)
    n = 1
    if rm == 4:  # SIB
        n += 1
        if mod == 0 and at + 1 < len(data) and data[at + 1] & 7 == 5:
            return n + 4
    if mod == 0:
        return n + (4 if rm == 5 else 0)
    return n + (1 if mod == 1 else 4)


def true_size(data: bytes, offset: int, size: int, mnemonic: str, bits: int = 32) -> int:
    """The CPU's length of the instruction capstone decoded at ``offset``
    as ``size`` bytes and ``mnemonic``."""
    if mnemonic.rsplit(" ", 1)[-1] not in _MODRM_SHORT:
        return size
    p = offset
    while p < len(data) and data[p] in _PREFIXES:
        p += 1
    addr16 = (0x67 in data[offset:p]) == (bits == 32)  # 0x67 flips 32-bit addressing to 16 (and back in 16-bit code)
    return min(p + 2 + modrm_length(data, p + 2, addr16 and bits != 64), len(data)) - offset


def size_of(insn, data: bytes, offset: int, bits: int = 32) -> int:
    """The CPU's length of a capstone instruction found at ``data[offset]``."""
    return true_size(data, offset, insn.size, insn.mnemonic, bits)


# Capstone 5.0.9 does not know some instructions at all.  Every register
# form of the 0F 01 group (ModRM >= C0) is one 3-byte instruction (vmcall,
# monitor, clac, xgetbv, serialize, wrmsrns, ...); the ones capstone lacks
# get their length here, and a name where it is known (Linux 6.1's
# sync_core() uses serialize).
_GROUP7_NAMES = {0xC5: "pconfig", 0xC6: "wrmsrns", 0xCF: "encls", 0xD7: "enclu", 0xC0: "enclv", 0xE8: "serialize",
                 0xE9: "seamcall", 0xEA: "ui_group", 0xEE: "rdpkru", 0xEF: "wrpkru"}  # fmt: skip


def _unknown_to_capstone(data: bytes, offset: int) -> tuple[int, str] | None:
    """(length, mnemonic) of an instruction capstone cannot decode, if known."""
    p = offset
    while p < len(data) and data[p] in _PREFIXES and p - offset < 14:
        p += 1
    if data[p : p + 2] == b"\x0f\x01" and p + 2 < len(data) and data[p + 2] >= 0xC0:
        return p + 3 - offset, _GROUP7_NAMES.get(data[p + 2], f"0f01{data[p + 2]:02x}")
    return None


def lite_run(data: bytes, start: int, end: int, bits: int = 32):
    """``(offset, size, mnemonic, op_str)`` for the instructions decoded
    linearly from ``start`` up to ``end`` (an instruction may run past
    ``end``), stopping at the first byte that does not decode.  The only
    linear decoder in the project: capstone's ``disasm_lite`` with the
    lengths corrected (see :func:`true_size`)."""
    md = decoder(bits)
    pos = start
    while pos < end:
        resync = None
        try:
            # disasm_lite decodes its whole buffer up front: bound it.
            for address, size, mnemonic, op_str in md.disasm_lite(data[pos : min(end + 15, len(data))], pos):
                if address >= end:
                    return
                fixed = true_size(data, address, size, mnemonic, bits)
                yield address, fixed, mnemonic, op_str
                pos = address + fixed
                if fixed != size:
                    resync = pos  # capstone's stream after it is misaligned: restart
                    break
        except CsError:
            return
        if resync is None:
            # Capstone stopped at pos: an instruction it does not know, or
            # bytes that are no instruction.
            known = _unknown_to_capstone(data, pos) if pos < end else None
            if known is None:
                return
            yield pos, known[0], known[1], ""
            resync = pos + known[0]
        pos = resync


def is_nop(insn) -> bool:
    return insn.id == X.X86_INS_NOP


def nop_cover(data: bytes, start: int, end: int, bits: int = 32) -> bool:
    """True if ``data[start:end]`` is exactly a sequence of NOP instructions."""
    off = start
    while off < end:
        insn = decode_one(data[:end], off, off, bits)
        if insn is None or not is_nop(insn):
            return False
        off += size_of(insn, data, off, bits)
    return off == end


# ---------------------------------------------------------------------------
# Data inside code sections


MB1_MAGIC = 0x1BADB002
MB2_MAGIC = 0xE85250D6


def multiboot_headers(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of multiboot v1/v2 headers in a code section's bytes.

    Both specs put the header in the first 8 or 32 KiB, 4- or 8-aligned, with
    a checksum that makes the fields sum to zero, which is what we test."""
    out = []
    limit = min(len(data), 32768)
    for off in range(0, limit - 11, 4):
        magic = struct.unpack_from("<I", data, off)[0]
        if magic == MB1_MAGIC:
            flags, csum = struct.unpack_from("<II", data, off + 4)
            if (magic + flags + csum) & 0xFFFFFFFF == 0:
                size = 12 + (20 if flags & 0x10000 else 0)
                size += 16 if flags & 0x4 and flags & 0x10000 else 0
                out.append((off, min(off + size, len(data))))
        elif magic == MB2_MAGIC and off + 16 <= len(data):
            arch, length, csum = struct.unpack_from("<III", data, off + 4)
            if (magic + arch + length + csum) & 0xFFFFFFFF == 0 and 16 <= length <= 65536:
                out.append((off, min(off + length, len(data))))
    return out


class Lite(NamedTuple):
    """An instruction as ``disasm_lite`` gives it: enough for a sweep, ~10x
    cheaper than a capstone instruction with operand detail.  (Tuples: a
    sweep makes one per instruction.)"""

    address: int
    size: int
    mnemonic: str
    op_str: str
    bytes: bytes


class Decoded(NamedTuple):
    """One instruction found by the sweep; ``site`` is set at a site start.
    ``padding``: an 0xCC byte that is filler, not an int3 (see
    :func:`int3_padding`); its ``kind`` is None."""

    offset: int
    insn: Lite
    kind: isa.Kind | None
    site: Site | None
    padding: bool = False


# Instructions after which execution never falls through to the next byte.
NO_FALL_THROUGH = frozenset({"jmp", "ljmp", "ret", "retf", "lret", "iret", "iretd", "iretw", "ud0", "ud1", "ud2",
                             "sysexit", "sysret"})  # fmt: skip


def int3_padding(insns: list[tuple[int, int, str]], data: bytes, targets: set[int],
                 symbols: list[tuple[int, int]] = ()) -> set[int]:  # fmt: skip
    """Offsets of the 0xCC bytes among ``insns`` ((offset, end, mnemonic),
    sorted; a site's end is the end of its pad) that are padding rather
    than int3 instructions.

    The one rule every decoder here applies (docs/design.md, "Padding is
    not code"): an 0xCC that nothing names is padding when it is one of a
    run of two or more, or when the instruction before it never falls
    through.  Linux fills with 0xCC between its fixed-stride stubs
    (``.fill ..., 0xcc`` after a ``jmp``), after data (``.align 64, 0xcc``),
    after a trampoline's ``ret`` (``ret; int3``, a speculation trap), and ld
    fills the gaps between input sections with it.  Padding them would move
    what follows, which those layouts forbid; none of them ever runs.

    ``targets`` always name a byte: branch and relocation targets, sites.
    ``symbols`` ((offset, size)) name their first byte, except a zero-size
    symbol in a gap between sized symbols: that marks a boundary (a linker
    script's ``__sched_text_end = .``) in the fill, not code."""
    named = set(targets)
    sized = sorted((a, a + n) for a, n in symbols if n > 0)
    starts = [a for a, _ in sized]
    max_end: list[int] = []  # running maximum of the ends, for "covered by a sized symbol"
    for _, b in sized:
        max_end.append(max(b, max_end[-1]) if max_end else b)
    for off, size in symbols:
        if size == 0 and sized:
            i = bisect.bisect_right(starts, off) - 1
            covered = i >= 0 and max_end[i] > off
            if not covered and i >= 0 and i + 1 < len(sized):
                continue  # in a gap between two sized symbols
        named.add(off)
    out: set[int] = set()
    i, n = 0, len(insns)

    def cc(k: int) -> bool:
        off, end, _ = insns[k]
        return end == off + 1 and data[off] == 0xCC and off not in named

    while i < n:
        if not cc(i):
            i += 1
            continue
        j = i + 1  # the run of unnamed 0xCC bytes, back to back
        while j < n and cc(j) and insns[j][0] == insns[j - 1][1]:
            j += 1
        prev = insns[i - 1] if i else None
        after_stop = prev is not None and prev[1] == insns[i][0] and prev[2].rsplit(" ", 1)[-1] in NO_FALL_THROUGH
        if j - i >= 2 or after_stop:
            out.update(insns[k][0] for k in range(i, j))
        i = j
    return out


def lite_one(data: bytes, offset: int, bits: int = 32) -> Lite | None:
    for address, size, mnemonic, op_str in lite_run(data, offset, offset + 1, bits):
        return Lite(address, size, mnemonic, op_str, data[offset : offset + size])
    return None


def kind_of(lite: Lite, data: bytes, bits: int = 32) -> isa.Kind | None:
    """The sensitive kind of a lite instruction (full decoding only for the
    few whose mnemonic and bytes could be sensitive)."""
    name = lite.mnemonic.rsplit(" ", 1)[-1]
    if name not in candidate_mnemonics(bits) or not isa.worth_testing(name, lite.bytes):
        return None
    insn = decode_one(data, lite.address, lite.address, bits)
    return isa.classify(insn) if insn is not None else None


@cache
def candidate_mnemonics(bits: int = 32) -> frozenset[str]:
    """Mnemonics of every capstone id some sensitive kind uses."""
    return frozenset(decoder(bits).insn_name(i) for i in isa.CS_IDS)


def sweep(elf: Elf, section: Section, sites: list[Site], excluded: list[Region], bits: int | None = None,
          named: set[int] | None = None, relocated: set[int] | None = None) -> list[Decoded]:  # fmt: skip
    """Decode ``section`` guided by symbols, sites and known data.

    Instruction addresses are section offsets (add ``section.addr`` for the
    virtual address of a linked file).  ``named``: more offsets something
    points at (relocation targets), ``relocated``: offsets of relocation
    fields in the section (a branch with one there has no final target)."""
    bits = bits or elf.bits
    data = section.data
    base = 0 if elf.is_relocatable else section.addr
    if relocated is None and elf.is_relocatable:
        relocated = {r.offset for r in elf.relocations(section)}
    site_at = {s.offset: s for s in sites}
    # Byte ranges never decoded as code.
    skip: list[tuple[int, int]] = [(r.start, r.end) for r in excluded if r.section.index == section.index]
    skip += multiboot_headers(data)
    starts = {0}
    symbols: list[tuple[int, int]] = []
    for sym in elf.code_symbols(section):
        off = sym.value - base
        if not 0 <= off < len(data):
            continue
        if sym.type == "STT_OBJECT" and sym.size:
            skip.append((off, off + sym.size))
        else:
            starts.add(off)
        symbols.append((off, sym.size))
    for s in sites:
        starts.update((s.offset, s.end))
    starts.update(end for _, end in skip)
    skip.sort()
    boundaries = sorted(o for o in starts if 0 <= o < len(data))
    out: list[Decoded] = []
    seen: set[int] = set()
    site_starts = sorted(site_at)
    skip_starts = sorted(a for a, _ in skip)
    for bi, start in enumerate(boundaries):
        stop = boundaries[bi + 1] if bi + 1 < len(boundaries) else len(data)
        i = bisect.bisect_right(site_starts, start) - 1
        if i >= 0 and site_starts[i] < start < site_at[site_starts[i]].end:
            continue  # a label on the instruction of a site whose pad comes first: the site is one unit
        off = start
        while off < stop:
            if off in seen:
                break
            r = _in_ranges(skip, off)
            if r is not None:
                off = r
                continue
            site = site_at.get(off)
            if site is not None:
                seen.add(off)
                insn = lite_one(data, site.insn_offset, bits)
                if insn is None:
                    off += 1
                    continue
                out.append(Decoded(site.insn_offset, insn, kind_of(insn, data, bits), site))
                off = site.end if site.end > off else off + insn.size
                continue
            # A run of ordinary instructions, decoded in one call, up to the
            # next site, skipped range or already-decoded offset.
            special = min([o for o in (_next(site_starts, off), _next(skip_starts, off)) if o is not None],
                          default=len(data))  # fmt: skip
            moved = False
            # Addresses are section offsets throughout, so branch targets and
            # relocation offsets compare directly.
            bound = min(special, stop)
            for address, size, mnemonic, op_str in lite_run(data[:min(special, stop + 15, len(data))], off, bound, bits):
                if address != off and address in seen:
                    break
                seen.add(address)
                insn = Lite(address, size, mnemonic, op_str, data[address : address + size])
                out.append(Decoded(address, insn, kind_of(insn, data, bits), None))
                off = address + size
                moved = True
            if not moved:
                if off in seen:
                    break
                seen.add(off)
                off += 1  # undecodable byte
    out.sort(key=lambda d: d.offset)
    targets = {s.offset for s in sites} | {s.insn_offset for s in sites} | set(named or ())
    for d in out:
        t = branch_target(d.insn, relocated or set())
        if t is not None:
            targets.add(t)
    pad = int3_padding([(d.offset, d.site.end if d.site else d.offset + d.insn.size, d.insn.mnemonic) for d in out],
                       data, targets, symbols)  # fmt: skip
    if pad:
        out = [Decoded(d.offset, d.insn, None, None, True) if d.offset in pad else d for d in out]
    return out


def _next(sorted_offsets: list[int], off: int) -> int | None:
    """The first offset greater than ``off``."""
    i = bisect.bisect_right(sorted_offsets, off)
    return sorted_offsets[i] if i < len(sorted_offsets) else None


def _in_ranges(ranges: list[tuple[int, int]], off: int) -> int | None:
    """End of the range containing ``off``, if any."""
    for a, b in ranges:
        if a <= off < b:
            return b
        if a > off:
            break
    return None


# ---------------------------------------------------------------------------
# Arithmetic-flags liveness

CF, PF, AF, ZF, SF, OF = 1, 2, 4, 8, 16, 32
ARITH = CF | PF | AF | ZF | SF | OF

_CS_BITS = {
    "AF": AF, "CF": CF, "SF": SF, "ZF": ZF, "PF": PF, "OF": OF,
}  # fmt: skip


def _cs_mask(value: int, prefix: str) -> int:
    m = 0
    for name, bit in _CS_BITS.items():
        if value & getattr(X, f"X86_EFLAGS_{prefix}_{name}"):
            m |= bit
    return m


# Readers capstone under-reports (its TEST bits are missing for these).
_READS = {
    X.X86_INS_PUSHF: ARITH, X.X86_INS_PUSHFD: ARITH, X.X86_INS_PUSHFQ: ARITH,
    X.X86_INS_LAHF: SF | ZF | AF | PF | CF,
    X.X86_INS_ADC: CF, X.X86_INS_SBB: CF, X.X86_INS_RCL: CF, X.X86_INS_RCR: CF,
    X.X86_INS_CMC: CF, X.X86_INS_SALC: CF, X.X86_INS_INTO: OF,
    X.X86_INS_DAA: AF | CF, X.X86_INS_DAS: AF | CF, X.X86_INS_AAA: AF, X.X86_INS_AAS: AF,
    X.X86_INS_LOOPE: ZF, X.X86_INS_LOOPNE: ZF,
}  # fmt: skip
# Shifts and rotates leave every flag alone when the count is zero, so a
# variable count is not a kill.
_SHIFTS = {X.X86_INS_SHL, X.X86_INS_SAL, X.X86_INS_SHR, X.X86_INS_SAR, X.X86_INS_ROL, X.X86_INS_ROR,
           X.X86_INS_RCL, X.X86_INS_RCR, X.X86_INS_SHLD, X.X86_INS_SHRD}  # fmt: skip


def flag_effects(insn) -> tuple[int, int]:
    """(flags read, flags surely written) as ARITH bit masks."""
    ef = insn.eflags
    reads = _cs_mask(ef, "TEST") | _READS.get(insn.id, 0)
    writes = _cs_mask(ef, "MODIFY") | _cs_mask(ef, "RESET") | _cs_mask(ef, "SET") | _cs_mask(ef, "UNDEFINED")
    writes &= ~_cs_mask(ef, "PRIOR")
    regs_read, _ = insn.regs_access()
    if not reads and any(insn.reg_name(r) in ("eflags", "rflags") for r in regs_read):
        reads = ARITH  # reads flags but capstone does not say which: assume all
    if insn.id in _SHIFTS and not (insn.operands and insn.operands[-1].type == X.X86_OP_IMM and insn.operands[-1].imm & 0x1F):
        writes = 0
    return reads, writes


_STOPS = {X.X86_GRP_CALL, X.X86_GRP_RET, X.X86_GRP_INT, X.X86_GRP_IRET}
# Instructions after which the fall-through path is not what runs next.
_TRAPS = {X.X86_INS_HLT, X.X86_INS_UD0, X.X86_INS_UD1, X.X86_INS_UD2, X.X86_INS_SYSENTER, X.X86_INS_SYSEXIT,
          X.X86_INS_SYSCALL, X.X86_INS_SYSRET}  # fmt: skip


def flags_live_after(
    data: bytes, offset: int, bits: int, sites: dict[int, Site], relocated: set[int], max_insns: int = 64
) -> bool:
    """Whether some arithmetic flag may be read after ``offset`` before it is
    written: a forward scan along the single fall-through path, following
    direct unconditional jumps, that answers "live" whenever it cannot tell
    (a call, a return, an indirect or relocated branch, a conditional branch
    with flags still undecided, the end of the section)."""
    pending = ARITH
    seen: set[int] = set()
    for _ in range(max_insns):
        if offset >= len(data) or offset in seen:
            return True
        seen.add(offset)
        site = sites.get(offset)
        at = site.insn_offset if site is not None else offset
        insn = decode_one(data, at, at, bits)
        if insn is None:
            return True
        reads, writes = flag_effects(insn)
        if reads & pending:
            return True
        pending &= ~writes
        if not pending:
            return False
        nxt = site.end if site is not None else offset + size_of(insn, data, at, bits)
        groups = set(insn.groups)
        if groups & _STOPS or insn.id in _TRAPS:
            return True
        if X.X86_GRP_JUMP in groups:
            if insn.id != X.X86_INS_JMP:
                return True  # conditional (or loop/jecxz) with flags undecided
            op = insn.operands[0] if insn.operands else None
            if op is None or op.type != X.X86_OP_IMM or any(at + i in relocated for i in range(1, insn.size)):
                return True
            nxt = op.imm
        offset = nxt
    return True


def site_flags_live(site: Site, data: bytes, bits: int, sites: dict[int, Site], relocated: set[int]) -> bool:
    """The FLAGS_LIVE bit a record for ``site`` must carry: whether the code
    that runs after the instruction may read an arithmetic flag first."""
    if site.kind.transfers_control:
        return True
    return flags_live_after(data, site.end, bits, sites, relocated)


def direct_branch(raw: bytes, end: int) -> tuple[int, str, bytes] | None:
    """(target, form, prefixes) of a direct jmp/jcc/call/loop/jecxz ending at
    ``end``, from its bytes alone; form is "jmp8", "jcc8", "loop8" or "near"."""
    op = isa.opcode_bytes(raw)
    prefixes = raw[: len(raw) - len(op)]
    if not op:
        return None
    b = op[0]
    if b == 0xEB or 0x70 <= b <= 0x7F or 0xE0 <= b <= 0xE3:
        if len(op) != 2:
            return None
        form = "jmp8" if b == 0xEB else "jcc8" if b <= 0x7F else "loop8"
        return end + struct.unpack("<b", op[1:2])[0], form, prefixes
    if b in (0xE8, 0xE9) and len(op) == 5:
        return end + struct.unpack("<i", op[1:5])[0], "near", prefixes
    if b == 0x0F and len(op) == 6 and 0x80 <= op[1] <= 0x8F:
        return end + struct.unpack("<i", op[2:6])[0], "near", prefixes
    return None


def is_branch_field(data: bytes, field: int) -> bool:
    """Whether a 4-byte PC-relative relocation field in code is the
    displacement of a call, jmp or jcc rel32, whose target is then measured
    from the end of the instruction (S + A + 4), not from the field.  The
    opcode bytes right before the field tell."""
    if 1 <= field <= len(data) and data[field - 1] in (0xE8, 0xE9):
        return True
    return 2 <= field <= len(data) and data[field - 2] == 0x0F and 0x80 <= data[field - 1] <= 0x8F


def branch_target(insn, relocated: set[int]) -> int | None:
    """Target of a direct jmp/jcc/call/loop whose displacement is not
    relocated (so the decoded target is final), else None.  ``insn`` is a
    :class:`Lite` or a capstone instruction."""
    start, size = insn.address, insn.size
    b = direct_branch(bytes(insn.bytes), start + size)
    if b is None or any(start + i in relocated for i in range(1, size)):
        return None
    return b[0]
