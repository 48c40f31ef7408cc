"""The sensitive-instruction table: recognisers, ids, pads from patch shapes."""
from __future__ import annotations

import pytest
from capstone import x86_const as X

from afterburn import isa
from afterburn.asmtext import parse_instruction
from afterburn.decode import decode_one
from afterburn.elf import Elf

from .conftest import assemble
from .forms import ALL_FORMS as FORMS, NOT_SENSITIVE

# The ids are the on-disk format: renumbering must fail a test.
FROZEN_IDS = {
    1: "cli", 2: "sti", 3: "pushf", 4: "popf", 5: "in", 6: "out", 7: "ins", 8: "outs", 9: "mov_to_cr",
    10: "mov_from_cr", 11: "mov_to_dr", 12: "mov_from_dr", 13: "mov_to_sreg", 14: "mov_from_sreg",
    15: "push_sreg", 16: "pop_sreg", 17: "lgdt", 18: "lidt", 19: "lldt", 20: "ltr", 21: "sgdt", 22: "sidt",
    23: "sldt", 24: "str", 25: "smsw", 26: "lmsw", 27: "clts", 28: "invlpg", 29: "invd", 30: "wbinvd",
    31: "hlt", 32: "iret", 33: "lret", 34: "ljmp", 35: "lcall", 36: "lds", 37: "les", 38: "lfs", 39: "lgs",
    40: "lss", 41: "int", 42: "int3", 43: "into", 44: "cpuid", 45: "rdmsr", 46: "wrmsr", 47: "rdtsc",
    48: "lar", 49: "lsl", 50: "verr", 51: "verw", 52: "arpl", 53: "rsm", 54: "sysenter", 55: "sysexit", 56: "syscall",
    57: "sysret", 58: "xsetbv", 59: "xgetbv", 60: "xsaves", 61: "xrstors", 62: "monitor", 63: "mwait", 64: "rdpmc",
    65: "rdtscp", 66: "invpcid", 67: "clac", 68: "stac", 69: "wbnoinvd", 70: "rdpid", 71: "vmcall", 72: "vmmcall",
    73: "vmfunc", 74: "getsec", 75: "vmx", 76: "svm", 0xF0: "exclude_begin", 0xF1: "exclude_end",
}  # fmt: skip


def test_ids_are_frozen():
    assert {k: v.name for k, v in isa.BY_ID.items()} == FROZEN_IDS


def test_every_kind_has_forms():
    assert set(FORMS) == {k.name for k in isa.KINDS}


def test_issue_list_is_covered():
    required = {"cli", "sti", "pushf", "popf", "in", "out", "ins", "outs", "mov_to_cr", "mov_from_cr", "mov_to_dr",
                "mov_from_dr", "mov_to_sreg", "mov_from_sreg", "push_sreg", "pop_sreg", "lgdt", "lidt", "lldt", "ltr",
                "sgdt", "sidt", "sldt", "str", "smsw", "lmsw", "clts", "invlpg", "invd", "wbinvd", "hlt", "iret",
                "lret", "ljmp", "lcall", "lds", "les", "lfs", "lgs", "lss", "int", "int3", "into", "cpuid", "rdmsr",
                "wrmsr", "rdtsc", "lar", "lsl", "verr", "verw", "arpl", "rsm"}  # fmt: skip
    assert required <= set(isa.BY_NAME)
    for k in isa.KINDS:
        assert k.cls in (isa.Class.PRIVILEGED, isa.Class.SENSITIVE)
        assert k.reads or k.writes, k.name
        assert k.pad32 >= 0


def _decoded_forms(tmp_path):
    """(kind name, AT&T text, capstone insn) for every form, assembled by gas."""
    lines = []
    for name, forms in FORMS.items():
        for f in forms:
            lines.append((name, f))
    text = "\t.text\n" + "".join(f"\t{f}\n" for _, f in lines)
    elf = Elf(assemble(text, tmp_path))
    data = elf.section(".text").data
    off, out = 0, []
    for name, f in lines:
        insn = decode_one(data, off, off)
        assert insn is not None, f
        out.append((name, f, insn))
        off += insn.size
    assert off == len(data)
    return out


def test_capstone_recogniser_matches_every_form(tmp_path):
    for name, f, insn in _decoded_forms(tmp_path):
        kind = isa.classify(insn)
        assert kind is not None and kind.name == name, (f, insn.mnemonic, insn.op_str)


def test_att_recogniser_matches_every_form():
    for name, forms in FORMS.items():
        for f in forms:
            ins = parse_instruction(f)
            kind = isa.classify_att(ins.mnemonic, ins.operands)
            assert kind is not None and kind.name == name, f


def test_lookalikes_are_not_sensitive(tmp_path):
    for f in NOT_SENSITIVE:
        ins = parse_instruction(f)
        assert isa.classify_att(ins.mnemonic, ins.operands) is None, f
    text = "\t.text\n" + "".join(f"\t{f}\n" for f in NOT_SENSITIVE) + "1:\n"
    elf = Elf(assemble(text, tmp_path))
    data = elf.section(".text").data
    off = 0
    while off < len(data):
        insn = decode_one(data, off, off)
        assert isa.classify(insn) is None, (insn.mnemonic, insn.op_str)
        off += insn.size


# -- pads are derived from the wedge's patch shapes (afterburn.isa docstring) --

_MEMCALL_KINDS = {"mov_to_sreg", "mov_from_sreg", "lgdt", "lidt", "sgdt", "sidt", "lldt", "ltr", "sldt", "str", "smsw",
                  "lmsw", "invlpg", "ljmp", "lcall", "lds", "les", "lfs", "lgs", "lss", "lar", "lsl", "verr", "verw",
                  "arpl"}  # fmt: skip


def template_len(name: str, insn) -> int:
    """Length of the longest frontend patch for this instruction form."""
    if name == "cli":
        return isa.VIF_STORE
    if name == "sti":
        return isa.VIF_STORE + isa.CALL_INDIRECT  # mov vif; call *ss:[pending_entry]
    if name in ("pushf", "popf"):
        return isa.CALL  # an entry point per operand size, no argument
    has_mem = any(op.type == X.X86_OP_MEM for op in insn.operands)
    if name in _MEMCALL_KINDS and has_mem:
        m = insn.size - insn.modrm_offset - insn.imm_size  # ModRM + SIB + displacement bytes
        seg = 1 if insn.prefix[1] else 0  # a segment override adds the byte that names it
        return isa.SCRATCH_SAVE + isa.LEA_OPCODE + m + isa.CALL + isa.ARG + seg
    extra = 0
    if name in ("in", "out") and any(op.type == X.X86_OP_IMM for op in insn.operands):
        extra = 1  # the port number
    elif name == "lret" and insn.operands:
        extra = 2  # the imm16 stack adjustment
    elif name in ("ljmp", "lcall") and not has_mem:
        extra = insn.size - 1 - (1 if insn.prefix[2] == 0x66 else 0)  # ptr16:32 or ptr16:16
    return isa.CALL + isa.ARG + extra


def test_pads_are_the_room_the_longest_patch_needs(tmp_path):
    need: dict[str, int] = {}
    for name, _form, insn in _decoded_forms(tmp_path):
        need[name] = max(need.get(name, 0), template_len(name, insn) - insn.size)
    for k in isa.KINDS:
        assert k.pad32 == need[k.name], f"{k.name}: pad {k.pad32}, patch shapes need {need[k.name]}"


def test_control_transfer_kinds():
    assert {k.name for k in isa.KINDS if k.transfers_control} == {
        "iret", "lret", "ljmp", "lcall", "int", "int3", "into", "rsm", "sysenter", "sysexit", "syscall", "sysret",
        "vmcall", "vmmcall", "getsec", "vmx", "svm"}  # fmt: skip


def test_every_privileged_instruction_of_linux_6_1_is_a_kind():
    """Issue 9, failure 12: the table lacked privileged instructions Linux
    6.1 i386 contains.  Every one of them, and the rest a 32-bit kernel can
    run, is recognised by both recognisers (the forms above)."""
    required = {"sysenter", "sysexit", "xsetbv", "xsaves", "xrstors", "monitor", "mwait", "rdpmc", "rdtscp",
                "invpcid", "clac", "stac", "wbnoinvd", "syscall", "sysret", "xgetbv", "rdpid", "vmcall", "vmmcall",
                "vmfunc", "getsec", "vmx", "svm"}  # fmt: skip
    assert required <= set(isa.BY_NAME)
    privileged = {k.name for k in isa.KINDS if k.cls is isa.Class.PRIVILEGED}
    assert {"sysexit", "xsetbv", "xsaves", "xrstors", "monitor", "mwait", "invpcid", "clac", "stac"} <= privileged


@pytest.mark.parametrize("bits", [64])
def test_x86_64_room_is_explicit(bits):
    with pytest.raises(NotImplementedError):
        isa.BY_NAME["cli"].pad(bits)
