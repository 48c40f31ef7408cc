"""Keeping call-frame information true when code grows (.eh_frame, .debug_frame).

An FDE describes a function by its start (relocated, so the generic
relocation remapping fixes it), its length (``pc_range``, a plain number)
and a program of CFA instructions whose ``advance_loc`` steps are byte
distances inside the function.  Padding a site or relaxing a branch changes
both.  :func:`rewrite` re-encodes every FDE against the new code layout:
the range becomes ``new(end) - new(start)``, each advance becomes the
distance between the new positions of the two old locations (re-encoded in
the smallest form that fits), and the records are re-laid out with
DW_CFA_nop padding.  It returns the new bytes and where every old record
went, so relocations inside the section can follow.

Anything it does not understand (64-bit DWARF, ``DW_CFA_set_loc``, an
unknown pointer encoding or opcode) raises :class:`CfiError`; the caller
then drops the section and says so, rather than ship stale unwind data.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass


class CfiError(Exception):
    """The frame section uses something this rewriter does not handle."""


# DW_CFA opcodes (low 6 bits zero) and the operands each takes.
_U, _S, _B = "u", "s", "b"  # ULEB128, SLEB128, block (ULEB length + bytes)
_OPERANDS: dict[int, str] = {
    0x00: "", 0x05: _U + _U, 0x06: _U, 0x07: _U, 0x08: _U, 0x09: _U + _U, 0x0A: "", 0x0B: "",
    0x0C: _U + _U, 0x0D: _U, 0x0E: _U, 0x0F: _B, 0x10: _U + _B, 0x11: _U + _S, 0x12: _U + _S, 0x13: _S,
    0x14: _U + _U, 0x15: _U + _S, 0x16: _U + _B, 0x2E: _U, 0x2F: _U + _U,
}  # fmt: skip
DW_CFA_advance_loc, DW_CFA_offset, DW_CFA_restore = 0x40, 0x80, 0xC0
DW_CFA_set_loc, DW_CFA_advance_loc1, DW_CFA_advance_loc2, DW_CFA_advance_loc4 = 0x01, 0x02, 0x03, 0x04
DW_CFA_nop = 0x00


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise CfiError("truncated LEB128")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _skip_operands(data: bytes, pos: int, spec: str) -> int:
    for kind in spec:
        if kind == _B:
            n, pos = _uleb(data, pos)
            pos += n
        else:
            _, pos = _uleb(data, pos)
    if pos > len(data):
        raise CfiError("truncated CFA instruction")
    return pos


def _pointer_size(enc: int) -> int:
    if enc == 0xFF:
        return 0
    fmt = enc & 0x0F
    if fmt in (0x00, 0x03, 0x0B):  # absptr (4 on i386), udata4, sdata4
        return 4
    if fmt in (0x02, 0x0A):
        return 2
    if fmt in (0x04, 0x0C):
        return 8
    raise CfiError(f"pointer encoding {enc:#x} is not supported")


@dataclass
class _Cie:
    caf: int  # code alignment factor
    fde_enc: int
    has_z: bool


def _parse_cie(data: bytes, start: int, end: int, eh: bool) -> _Cie:
    pos = start + 8
    version = data[pos]
    pos += 1
    nul = data.index(b"\0", pos)
    aug = data[pos:nul].decode("ascii", errors="replace")
    pos = nul + 1
    if aug and not aug.startswith("z"):
        raise CfiError(f"CIE augmentation {aug!r} is not supported")
    if not eh and version >= 4:
        pos += 2  # address_size, segment_selector_size
    caf, pos = _uleb(data, pos)
    _, pos = _uleb(data, pos)  # data alignment factor (SLEB; only skipped)
    if version == 1:
        pos += 1
    else:
        _, pos = _uleb(data, pos)
    fde_enc = 0x00
    if aug.startswith("z"):
        _, pos = _uleb(data, pos)
        for c in aug[1:]:
            if c == "R":
                fde_enc = data[pos]
                pos += 1
            elif c == "P":
                penc = data[pos]
                pos += 1 + _pointer_size(penc & 0x7F)
            elif c == "L":
                pos += 1
            elif c == "S":
                pass
            else:
                raise CfiError(f"CIE augmentation letter {c!r} is not supported")
    if pos > end:
        raise CfiError("CIE runs past its length")
    return _Cie(caf or 1, fde_enc, aug.startswith("z"))


@dataclass
class _Raw:
    """One record as found: where it is, what it is, how to read it."""

    start: int
    end: int
    kind: str  # "cie", "fde", or "end" (a zero terminator)
    cie: _Cie | None = None  # a CIE's own parameters, or those of an FDE's CIE
    cie_at: int = -1  # FDE: offset of its CIE
    psize: int = 0  # FDE: size of pc_begin and pc_range
    program_at: int = 0  # FDE: where its CFA instructions start


def _records(data: bytes, eh: bool) -> Iterator[_Raw]:
    """Every record of a frame section, in order."""
    cies: dict[int, _Cie] = {}
    pos = 0
    while pos + 4 <= len(data):
        length = struct.unpack_from("<I", data, pos)[0]
        if length == 0xFFFFFFFF:
            raise CfiError("64-bit DWARF frame records are not supported")
        if length == 0:
            yield _Raw(pos, pos + 4, "end")
            pos += 4
            continue
        end = pos + 4 + length
        if end > len(data):
            raise CfiError("frame record runs past the section")
        cie_id = struct.unpack_from("<I", data, pos + 4)[0]
        if cie_id == 0 if eh else cie_id == 0xFFFFFFFF:
            cies[pos] = _parse_cie(data, pos, end, eh)
            yield _Raw(pos, end, "cie", cies[pos])
        else:
            cie_at = (pos + 4 - cie_id) if eh else cie_id
            cie = cies.get(cie_at)
            if cie is None:
                raise CfiError(f"FDE at {pos:#x} names a CIE at {cie_at:#x} that precedes nothing parsed")
            psize = _pointer_size(cie.fde_enc if eh else 0)
            p = pos + 8 + 2 * psize
            if eh and cie.has_z:  # augmentation data (an LSDA pointer, say): kept as it is
                n, p2 = _uleb(data, p)
                p = p2 + n
            yield _Raw(pos, end, "fde", cie, cie_at, psize, p)
        pos = end


_ADVANCE_SIZE = {DW_CFA_advance_loc1: 1, DW_CFA_advance_loc2: 2, DW_CFA_advance_loc4: 4}


def _instructions(prog: bytes, caf: int) -> Iterator[tuple[int | None, bytes]]:
    """(bytes the location advances by, or None; the instruction's bytes)."""
    pos = 0
    while pos < len(prog):
        op = prog[pos]
        high = op & 0xC0
        if high == DW_CFA_advance_loc:
            yield (op & 0x3F) * caf, prog[pos : pos + 1]
            pos += 1
            continue
        if op in _ADVANCE_SIZE:
            n = _ADVANCE_SIZE[op]
            yield int.from_bytes(prog[pos + 1 : pos + 1 + n], "little") * caf, prog[pos : pos + 1 + n]
            pos += 1 + n
            continue
        if high in (DW_CFA_offset, DW_CFA_restore):
            nxt = _skip_operands(prog, pos + 1, _U if high == DW_CFA_offset else "")
        elif op == DW_CFA_set_loc:
            raise CfiError("DW_CFA_set_loc is not supported")
        elif op in _OPERANDS:
            nxt = _skip_operands(prog, pos + 1, _OPERANDS[op])
        else:
            raise CfiError(f"unknown CFA opcode {op:#x}")
        yield None, prog[pos:nxt]
        pos = nxt


@dataclass
class FrameRewrite:
    data: bytes
    moved: dict[int, int]  # old record start -> new record start
    fdes: int


def rewrite(data: bytes, eh: bool, fde_start: Callable[[int], tuple[int, int] | None],
            new_pos: Callable[[int, int], int]) -> FrameRewrite:  # fmt: skip
    """Rewrite a whole .eh_frame (``eh``) or .debug_frame.

    ``fde_start(field_offset)`` gives (code section index, old offset) for
    the pc_begin field at that offset of this section (from its
    relocation), or None when the FDE is not about moved code;
    ``new_pos(section, old_offset)`` maps a code location."""
    out = bytearray()
    moved: dict[int, int] = {}
    pos = fdes = 0
    for rec in _records(data, eh):
        moved[rec.start] = len(out)
        if rec.kind == "fde":
            out += _rewrite_fde(data, rec, eh, fde_start, new_pos, len(out), moved[rec.cie_at])
            fdes += 1
        else:
            out += data[rec.start : rec.end]
        pos = rec.end
    out += data[pos:]  # fewer than 4 bytes that are no record: kept as they are
    return FrameRewrite(bytes(out), moved, fdes)


def _rewrite_fde(data: bytes, rec: _Raw, eh: bool, fde_start, new_pos, out_at: int, new_cie: int) -> bytes:
    psize, begin_field = rec.psize, rec.start + 8
    pc_range = int.from_bytes(data[begin_field + psize : begin_field + 2 * psize], "little")
    head = bytearray(data[rec.start + 4 : rec.program_at])  # CIE pointer, pc_begin, pc_range, augmentation data
    struct.pack_into("<I", head, 0, out_at + 4 - new_cie if eh else new_cie)
    program = data[rec.program_at : rec.end]
    where = fde_start(begin_field)
    if where is not None:
        section, old_begin = where
        new_begin = new_pos(section, old_begin)
        new_range = new_pos(section, old_begin + pc_range) - new_begin
        head[4 + psize : 4 + 2 * psize] = new_range.to_bytes(psize, "little")
        program = _rewrite_program(program, rec.cie.caf, old_begin, lambda off: new_pos(section, off))
    body = bytes(head) + program
    body += bytes(-(len(body) + 4) % 4)  # DW_CFA_nop to the record alignment
    return struct.pack("<I", len(body)) + body


def _rewrite_program(prog: bytes, caf: int, loc: int, new_pos: Callable[[int], int]) -> bytes:
    out = bytearray()
    new_loc = new_pos(loc)
    for advance, op in _instructions(prog, caf):
        if advance is None:
            out += op
            continue
        loc += advance
        target = new_pos(loc)
        step = target - new_loc
        if step < 0 or step % caf:
            raise CfiError("a CFA location moved backwards")
        out += _advance(step // caf)
        new_loc = target
    return bytes(out)


def _advance(n: int) -> bytes:
    if n < 0x40:
        return bytes([DW_CFA_advance_loc | n])
    if n <= 0xFF:
        return bytes([DW_CFA_advance_loc1, n])
    if n <= 0xFFFF:
        return bytes([DW_CFA_advance_loc2]) + struct.pack("<H", n)
    return bytes([DW_CFA_advance_loc4]) + struct.pack("<I", n)


@dataclass
class FrameRecord:
    """One CIE or FDE, decoded far enough to compare two versions."""

    start: int
    is_cie: bool
    raw: bytes  # the whole record (CIEs are compared byte for byte)
    cie: int = -1  # FDE: offset of its CIE
    begin_field: int = -1  # FDE: offset of pc_begin in the section
    pc_range: int = 0
    program: list[tuple[int, bytes]] | None = None  # (location delta from pc_begin, instruction) without advances


def parse(data: bytes, eh: bool) -> list[FrameRecord]:
    """Every record of a frame section, FDE programs as (offset, op) pairs."""
    out: list[FrameRecord] = []
    for rec in _records(data, eh):
        if rec.kind == "cie":
            out.append(FrameRecord(rec.start, True, data[rec.start : rec.end]))
        elif rec.kind == "fde":
            begin = rec.start + 8
            pc_range = int.from_bytes(data[begin + rec.psize : begin + 2 * rec.psize], "little")
            out.append(FrameRecord(rec.start, False, data[rec.start : rec.end], rec.cie_at, begin, pc_range,
                                   _program(data[rec.program_at : rec.end], rec.cie.caf)))  # fmt: skip
    return out


def _program(prog: bytes, caf: int) -> list[tuple[int, bytes]]:
    out = []
    loc = 0
    for advance, op in _instructions(prog, caf):
        if advance is not None:
            loc += advance
        elif op != bytes([DW_CFA_nop]):
            out.append((loc, op))
    return out
