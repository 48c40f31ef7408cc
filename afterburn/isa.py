"""The sensitive-instruction table: the single source of truth.

Every x86 instruction whose behaviour depends on, or changes, privileged
machine state is a *kind* here.  The annotator, the verifier, the rewriter's
fit checks and the tests all read this table; nothing else in the code base
keeps its own list.

Each :class:`Kind` holds

* ``id``: the byte stored in site records (stable: part of the file format,
  see docs/site-format.md; never renumber, only append);
* a recogniser for decoded instructions (capstone) and one for GNU as AT&T
  text;
* its class: ``PRIVILEGED`` (faults at CPL > 0 on real hardware) or
  ``SENSITIVE`` (runs at any CPL but reveals or changes privileged state, the
  Popek–Goldberg gap: pushf, popf, sgdt, mov from a segment register, ...);
* its pad length per ISA (``None`` where not yet supported);
* the registers and flags it reads and writes.

Pad lengths are not tuned by hand.  They are the room the longest patch the
wedge frontend emits needs beyond the instruction itself (docs/design.md,
"Patch shapes").  The frontend has a few shapes; every backend shares them,
because backends differ only inside the wedge, never at the site:

========  ===============================================  ==============
shape     bytes written over the site                       length
========  ===============================================  ==============
VIF       ``mov byte ss:[vif], imm8``                         8
STI       VIF + ``call *ss:[pending_entry]``                  15
CALL(n)   ``call entry`` + n inline argument bytes           5 + n
MEMCALL   ``mov ss:[vcpu.scratch],eax; lea eax,[mem]; call`` 6 + (1+M) + 5 + 1
          + 1 descriptor byte (M = ModRM+SIB+disp bytes)
========  ===============================================  ==============

Every shape starts with an access to the supervisor-only wedge page, so a
patched site that runs in guest *user* mode faults before it has any effect
and the hypervisor can emulate the original instruction instead.

``pending_entry`` holds the address of a bare ``ret`` in the wedge, or of
the pending-interrupt entry while one waits: the check costs a call and a
return and touches no flags or registers.  pushf and popf are CALL(0):
separate entry points for the 32- and 16-bit forms.

So, e.g., ``out %al,$0x80`` (2 bytes) becomes ``call w_io; .byte desc, port``
(7 bytes): pad 5.  ``lgdt disp32(%eax)`` (2 opcode + M) becomes MEMCALL:
``13 + M`` bytes, pad ``11``.  Memory references in patches carry an SS
override: a guest may run with a non-flat DS, but every kernel's stack
segment is flat.  The unit test ``tests/test_isa.py`` recomputes
every pad from these shapes and the instruction forms.

x86-64 is left room for (``pad64``), not implemented yet.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from collections.abc import Callable, Iterable

from capstone import x86_const as X


_CONTROL_TRANSFER = frozenset({"iret", "lret", "ljmp", "lcall", "int", "int3", "into", "rsm", "sysenter", "sysexit",
                               "syscall", "sysret", "vmcall", "vmmcall", "getsec", "vmx", "svm"})  # fmt: skip

# Kinds whose *next* instruction address is architecturally visible: pushed
# as a return address (int, int3, into, lcall), the EIP an interrupt sees
# after waking from hlt, or protected by an interrupt shadow (sti; loads of
# SS, see pad_before).  Their pad goes *before* the instruction, so the
# padded binary keeps "sti; hlt" atomic and "mov ss; mov esp" safe on real
# hardware.  Every other kind keeps its pad after, so its own address (what
# exception tables such as Linux's __ex_table name) is unchanged.
PAD_BEFORE_KINDS = frozenset({"sti", "hlt", "int", "int3", "into", "lcall"})
_SS_SHADOW_KINDS = frozenset({"mov_to_sreg", "pop_sreg"})


class Class(enum.Enum):
    PRIVILEGED = "privileged"  # #GP (or #UD) when executed at CPL > 0 with IOPL 0
    SENSITIVE = "sensitive"  # unprivileged but sensitive: runs silently at any CPL


SEGMENT_REGS = frozenset({"cs", "ds", "es", "fs", "gs", "ss"})
CONTROL_REGS = frozenset({f"cr{i}" for i in range(16)})
DEBUG_REGS = frozenset({f"dr{i}" for i in range(16)})

# AT&T spellings gas accepts for the same registers.
ATT_SEG = frozenset("%" + r for r in SEGMENT_REGS)
ATT_CR = frozenset("%" + r for r in CONTROL_REGS)
ATT_DR = frozenset({f"%db{i}" for i in range(16)} | {f"%dr{i}" for i in range(16)})

# Prefix mnemonics that can stand alone in AT&T text ("rep; insb").
ATT_PREFIXES = frozenset(
    {
        "rep", "repe", "repz", "repne", "repnz", "lock", "data16", "data32", "addr16", "addr32",
        "cs", "ds", "es", "fs", "gs", "ss", "notrack", "bnd", "xacquire", "xrelease",
    }
)  # fmt: skip

# Patch-shape sizes (see module docstring).
CALL = 5
ARG = 1
VIF_STORE = 8  # 36 C6 05 imm32 imm8
CALL_INDIRECT = 7  # 36 FF 15 imm32: call *ss:[abs32]
SCRATCH_SAVE = 6  # 36 A3 imm32
LEA_OPCODE = 1


@dataclass(frozen=True)
class Kind:
    id: int
    name: str
    cls: Class
    pad32: int
    pad64: int | None
    reads: frozenset[str]
    writes: frozenset[str]
    doc: str
    cs_ids: frozenset[int] = frozenset()
    cs_test: Callable[[object], bool] | None = None
    att_mnemonics: frozenset[str] = frozenset()
    att_test: Callable[[str, list[str]], bool] | None = None
    # A marker kind is not an instruction (e.g. the bounds of an excluded region).
    marker: bool = False

    @property
    def transfers_control(self) -> bool:
        """Execution continues somewhere other than the next instruction, so
        what happens to the flags "after" it is decided by unseen code."""
        return self.name in _CONTROL_TRANSFER

    def pad(self, bits: int = 32) -> int:
        pad = self.pad32 if bits == 32 else self.pad64
        if pad is None:
            raise NotImplementedError(f"{self.name}: no pad defined for {bits}-bit code yet")
        return pad

    def matches_cs(self, insn) -> bool:
        return insn.id in self.cs_ids and (self.cs_test is None or self.cs_test(insn))

    def matches_att(self, mnemonic: str, operands: list[str]) -> bool:
        return mnemonic in self.att_mnemonics and (self.att_test is None or self.att_test(mnemonic, operands))


# ---------------------------------------------------------------------------
# Operand helpers for the two recognisers.


def _cs_regs(insn) -> list[str]:
    return [insn.reg_name(op.reg) for op in insn.operands if op.type == X.X86_OP_REG]


def _cs_dst_reg_in(names: frozenset[str]) -> Callable:
    def test(insn) -> bool:
        ops = insn.operands
        return bool(ops) and ops[0].type == X.X86_OP_REG and insn.reg_name(ops[0].reg) in names

    return test


def _cs_src_reg_in(names: frozenset[str]) -> Callable:
    def test(insn) -> bool:
        ops = insn.operands
        return len(ops) >= 2 and ops[1].type == X.X86_OP_REG and insn.reg_name(ops[1].reg) in names

    return test


def _cs_any_reg_in(names: frozenset[str]) -> Callable:
    return lambda insn: any(r in names for r in _cs_regs(insn))


def _cs_far_indirect(reg_field: int) -> Callable:
    """``FF /3`` (far call) and ``FF /5`` (far jmp) decode as plain call/jmp
    in capstone; only the ModRM reg field tells them apart from near ones."""

    def test(insn) -> bool:
        return insn.opcode[0] == 0xFF and ((insn.modrm >> 3) & 7) == reg_field

    return test


def _att_dst_in(names: frozenset[str]) -> Callable:
    return lambda m, ops: bool(ops) and ops[-1].lower() in names


def _att_src_in(names: frozenset[str]) -> Callable:
    return lambda m, ops: len(ops) >= 2 and ops[0].lower() in names


def _att_only_op_in(names: frozenset[str]) -> Callable:
    return lambda m, ops: len(ops) == 1 and ops[0].lower() in names


def _att_far(m: str, ops: list[str]) -> bool:
    """``ljmp``/``lcall`` always; plain ``jmp``/``call`` only in the two-immediate
    far form (``jmp $sel, $off``), which gas also accepts."""
    if m.startswith("l"):
        return True
    return len(ops) == 2 and all(o.startswith("$") for o in ops)


def _is_int3_immediate(ops: list[str]) -> bool:
    """gas assembles ``int $3`` as the one-byte ``int3`` (0xCC)."""
    if len(ops) != 1 or not ops[0].startswith("$"):
        return False
    try:
        return int(ops[0][1:], 0) == 3
    except ValueError:
        return False


def _suffixed(*bases: str, suffixes: Iterable[str] = ("", "l", "w")) -> frozenset[str]:
    return frozenset(b + s for b in bases for s in suffixes)


# ---------------------------------------------------------------------------
# The table.  Register/flag vocabulary: GPR names; "eflags.arith" (CF PF AF ZF
# SF OF), "eflags.if", "eflags.df", "eflags.of", "eflags.zf", "eflags.all";
# "rm"/"reg" (the ModRM operands), "mem" (memory operand), "sreg"/"cr"/"dr"
# (the special register named by the instruction); gdtr idtr ldtr tr msr tsc
# port; "cs:eip" and "ss:esp" for control transfer.

F = frozenset
P, S = Class.PRIVILEGED, Class.SENSITIVE

_KINDS: list[Kind] = [
    Kind(1, "cli", P, 7, None, F(), F({"eflags.if"}), "clear IF",
         F({X.X86_INS_CLI}), None, F({"cli"})),
    Kind(2, "sti", P, 14, None, F(), F({"eflags.if"}), "set IF; the patch also checks for a pending virtual interrupt",
         F({X.X86_INS_STI}), None, F({"sti"})),
    Kind(3, "pushf", S, 4, None, F({"eflags.all", "esp"}), F({"esp", "mem"}), "push EFLAGS (IF and IOPL must show virtual values)",
         F({X.X86_INS_PUSHF, X.X86_INS_PUSHFD}), None, F({"pushf", "pushfl", "pushfw", "pushfd"})),
    Kind(4, "popf", S, 4, None, F({"esp", "mem"}), F({"eflags.all", "esp"}), "pop EFLAGS (silently ignores IF at CPL>0)",
         F({X.X86_INS_POPF, X.X86_INS_POPFD}), None, F({"popf", "popfl", "popfw", "popfd"})),
    Kind(5, "in", P, 5, None, F({"edx", "port"}), F({"eax"}), "port input, imm8 or dx port, byte/word/dword",
         F({X.X86_INS_IN}), None, F({"in", "inb", "inw", "inl"})),
    Kind(6, "out", P, 5, None, F({"eax", "edx"}), F({"port"}), "port output, imm8 or dx port, byte/word/dword",
         F({X.X86_INS_OUT}), None, F({"out", "outb", "outw", "outl"})),
    Kind(7, "ins", P, 5, None, F({"edx", "edi", "ecx", "eflags.df", "es", "port"}), F({"edi", "ecx", "mem"}),
         "string port input, with or without rep",
         F({X.X86_INS_INSB, X.X86_INS_INSW, X.X86_INS_INSD}), None, F({"ins", "insb", "insw", "insl", "insd"})),
    Kind(8, "outs", P, 5, None, F({"edx", "esi", "ecx", "eflags.df", "ds", "mem"}), F({"esi", "ecx", "port"}),
         "string port output, with or without rep",
         F({X.X86_INS_OUTSB, X.X86_INS_OUTSW, X.X86_INS_OUTSD}), None, F({"outs", "outsb", "outsw", "outsl", "outsd"})),
    Kind(9, "mov_to_cr", P, 3, None, F({"reg"}), F({"cr", "eflags.arith"}), "mov r32 -> CR0-CR4 (arith flags undefined)",
         F({X.X86_INS_MOV}), _cs_dst_reg_in(CONTROL_REGS), _suffixed("mov", suffixes=("", "l")), _att_dst_in(ATT_CR)),
    Kind(10, "mov_from_cr", P, 3, None, F({"cr"}), F({"reg", "eflags.arith"}), "mov CR0-CR4 -> r32 (arith flags undefined)",
         F({X.X86_INS_MOV}), _cs_src_reg_in(CONTROL_REGS), _suffixed("mov", suffixes=("", "l")), _att_src_in(ATT_CR)),
    Kind(11, "mov_to_dr", P, 3, None, F({"reg"}), F({"dr", "eflags.arith"}), "mov r32 -> DR0-DR7",
         F({X.X86_INS_MOV}), _cs_dst_reg_in(DEBUG_REGS), _suffixed("mov", suffixes=("", "l")), _att_dst_in(ATT_DR)),
    Kind(12, "mov_from_dr", P, 3, None, F({"dr"}), F({"reg", "eflags.arith"}), "mov DR0-DR7 -> r32",
         F({X.X86_INS_MOV}), _cs_src_reg_in(DEBUG_REGS), _suffixed("mov", suffixes=("", "l")), _att_src_in(ATT_DR)),
    Kind(13, "mov_to_sreg", S, 12, None, F({"rm"}), F({"sreg"}), "load a segment register (ring compression rewrites RPL/DPL)",
         F({X.X86_INS_MOV}), _cs_dst_reg_in(SEGMENT_REGS), _suffixed("mov"), _att_dst_in(ATT_SEG)),
    Kind(14, "mov_from_sreg", S, 12, None, F({"sreg"}), F({"rm"}), "store a segment register (reveals the real RPL)",
         F({X.X86_INS_MOV}), _cs_src_reg_in(SEGMENT_REGS), _suffixed("mov", suffixes=("", "l", "w", "q")), _att_src_in(ATT_SEG)),
    Kind(15, "push_sreg", S, 5, None, F({"sreg", "esp"}), F({"esp", "mem"}), "push a segment register",
         F({X.X86_INS_PUSH}), _cs_any_reg_in(SEGMENT_REGS), _suffixed("push"), _att_only_op_in(ATT_SEG)),
    Kind(16, "pop_sreg", S, 5, None, F({"esp", "mem"}), F({"sreg", "esp"}), "pop a segment register",
         F({X.X86_INS_POP}), _cs_any_reg_in(SEGMENT_REGS), _suffixed("pop"), _att_only_op_in(ATT_SEG)),
    Kind(17, "lgdt", P, 11, None, F({"mem"}), F({"gdtr"}), "load GDTR",
         F({X.X86_INS_LGDT}), None, _suffixed("lgdt")),
    Kind(18, "lidt", P, 11, None, F({"mem"}), F({"idtr"}), "load IDTR",
         F({X.X86_INS_LIDT}), None, _suffixed("lidt")),
    Kind(19, "lldt", P, 11, None, F({"rm"}), F({"ldtr"}), "load LDTR",
         F({X.X86_INS_LLDT}), None, _suffixed("lldt")),
    Kind(20, "ltr", P, 11, None, F({"rm"}), F({"tr"}), "load the task register",
         F({X.X86_INS_LTR}), None, _suffixed("ltr")),
    Kind(21, "sgdt", S, 11, None, F({"gdtr"}), F({"mem"}), "store GDTR (reveals the real GDT)",
         F({X.X86_INS_SGDT}), None, _suffixed("sgdt")),
    Kind(22, "sidt", S, 11, None, F({"idtr"}), F({"mem"}), "store IDTR (reveals the real IDT)",
         F({X.X86_INS_SIDT}), None, _suffixed("sidt")),
    Kind(23, "sldt", S, 11, None, F({"ldtr"}), F({"rm"}), "store LDTR",
         F({X.X86_INS_SLDT}), None, _suffixed("sldt")),
    Kind(24, "str", S, 11, None, F({"tr"}), F({"rm"}), "store the task register",
         F({X.X86_INS_STR}), None, _suffixed("str")),
    Kind(25, "smsw", S, 11, None, F({"cr0"}), F({"rm"}), "store the machine status word (low CR0)",
         F({X.X86_INS_SMSW}), None, _suffixed("smsw")),
    Kind(26, "lmsw", P, 11, None, F({"rm"}), F({"cr0"}), "load the machine status word",
         F({X.X86_INS_LMSW}), None, _suffixed("lmsw")),
    Kind(27, "clts", P, 4, None, F(), F({"cr0"}), "clear CR0.TS",
         F({X.X86_INS_CLTS}), None, F({"clts"})),
    Kind(28, "invlpg", P, 11, None, F({"mem"}), F({"tlb"}), "invalidate one TLB entry",
         F({X.X86_INS_INVLPG}), None, F({"invlpg"})),
    Kind(29, "invd", P, 4, None, F(), F({"cache"}), "invalidate caches",
         F({X.X86_INS_INVD}), None, F({"invd"})),
    Kind(30, "wbinvd", P, 4, None, F(), F({"cache"}), "write back and invalidate caches",
         F({X.X86_INS_WBINVD}), None, F({"wbinvd"})),
    Kind(31, "hlt", P, 5, None, F({"eflags.if"}), F(), "halt until the next interrupt",
         F({X.X86_INS_HLT}), None, F({"hlt"})),
    Kind(32, "iret", S, 5, None, F({"esp", "mem"}), F({"cs:eip", "ss:esp", "eflags.all"}),
         "interrupt return (restores IF: a re-enable point)",
         F({X.X86_INS_IRET, X.X86_INS_IRETD}), None, F({"iret", "iretl", "iretw", "iretd"})),
    Kind(33, "lret", S, 5, None, F({"esp", "mem"}), F({"cs:eip", "ss:esp"}), "far return",
         F({X.X86_INS_RETF}), None, F({"lret", "lretl", "lretw", "retf"})),
    Kind(34, "ljmp", S, 12, None, F({"mem"}), F({"cs:eip"}), "far jump, direct or through memory",
         F({X.X86_INS_LJMP, X.X86_INS_JMP}), lambda i: i.id == X.X86_INS_LJMP or _cs_far_indirect(5)(i),
         F({"ljmp", "ljmpl", "ljmpw", "jmp"}), _att_far),
    Kind(35, "lcall", S, 12, None, F({"mem", "esp"}), F({"cs:eip", "esp", "mem"}), "far call, direct or through memory",
         F({X.X86_INS_LCALL, X.X86_INS_CALL}), lambda i: i.id == X.X86_INS_LCALL or _cs_far_indirect(3)(i),
         F({"lcall", "lcalll", "lcallw", "call"}), _att_far),
    Kind(36, "lds", S, 12, None, F({"mem"}), F({"reg", "ds"}), "load far pointer into DS:reg",
         F({X.X86_INS_LDS}), None, _suffixed("lds")),
    Kind(37, "les", S, 12, None, F({"mem"}), F({"reg", "es"}), "load far pointer into ES:reg",
         F({X.X86_INS_LES}), None, _suffixed("les")),
    Kind(38, "lfs", S, 11, None, F({"mem"}), F({"reg", "fs"}), "load far pointer into FS:reg",
         F({X.X86_INS_LFS}), None, _suffixed("lfs")),
    Kind(39, "lgs", S, 11, None, F({"mem"}), F({"reg", "gs"}), "load far pointer into GS:reg",
         F({X.X86_INS_LGS}), None, _suffixed("lgs")),
    Kind(40, "lss", S, 11, None, F({"mem"}), F({"reg", "ss"}), "load far pointer into SS:reg",
         F({X.X86_INS_LSS}), None, _suffixed("lss")),
    Kind(41, "int", S, 4, None, F({"idtr", "esp"}), F({"cs:eip", "ss:esp", "eflags.if"}), "software interrupt int $n",
         F({X.X86_INS_INT}), None, F({"int"}), lambda m, ops: not _is_int3_immediate(ops)),
    Kind(42, "int3", S, 5, None, F({"idtr", "esp"}), F({"cs:eip", "ss:esp", "eflags.if"}), "breakpoint trap",
         F({X.X86_INS_INT3}), None, F({"int3", "int"}), lambda m, ops: m == "int3" or _is_int3_immediate(ops)),
    Kind(43, "into", S, 5, None, F({"eflags.of", "idtr"}), F({"cs:eip", "ss:esp"}), "overflow trap",
         F({X.X86_INS_INTO}), None, F({"into"})),
    Kind(44, "cpuid", S, 4, None, F({"eax", "ecx"}), F({"eax", "ebx", "ecx", "edx"}), "identify the CPU (virtualised feature bits)",
         F({X.X86_INS_CPUID}), None, F({"cpuid"})),
    Kind(45, "rdmsr", P, 4, None, F({"ecx", "msr"}), F({"eax", "edx"}), "read a model-specific register",
         F({X.X86_INS_RDMSR}), None, F({"rdmsr"})),
    Kind(46, "wrmsr", P, 4, None, F({"ecx", "eax", "edx"}), F({"msr"}), "write a model-specific register",
         F({X.X86_INS_WRMSR}), None, F({"wrmsr"})),
    Kind(47, "rdtsc", S, 4, None, F({"tsc"}), F({"eax", "edx"}), "read the time-stamp counter (virtual time)",
         F({X.X86_INS_RDTSC}), None, F({"rdtsc"})),
    Kind(48, "lar", S, 11, None, F({"rm", "gdtr"}), F({"reg", "eflags.zf"}), "load access rights",
         F({X.X86_INS_LAR}), None, _suffixed("lar")),
    Kind(49, "lsl", S, 11, None, F({"rm", "gdtr"}), F({"reg", "eflags.zf"}), "load segment limit",
         F({X.X86_INS_LSL}), None, _suffixed("lsl")),
    Kind(50, "verr", S, 11, None, F({"rm", "gdtr"}), F({"eflags.zf"}), "verify a segment for reading",
         F({X.X86_INS_VERR}), None, _suffixed("verr", suffixes=("", "w"))),
    Kind(51, "verw", S, 11, None, F({"rm", "gdtr"}), F({"eflags.zf"}), "verify a segment for writing",
         F({X.X86_INS_VERW}), None, _suffixed("verw", suffixes=("", "w"))),
    Kind(52, "arpl", S, 12, None, F({"rm", "reg"}), F({"rm", "eflags.zf"}), "adjust RPL of a selector",
         F({X.X86_INS_ARPL}), None, _suffixed("arpl", suffixes=("", "w"))),
    Kind(53, "rsm", P, 4, None, F(), F({"eflags.all", "cs:eip"}), "resume from system management mode",
         F({X.X86_INS_RSM}), None, F({"rsm"})),
    # Issue 9: the rest of what a 32-bit kernel can execute.  Each is CALL(1)
    # (w_misc + an operation byte), so the pad is 6 minus the shortest form.
    Kind(54, "sysenter", S, 4, None, F({"msr", "esp"}), F({"cs:eip", "ss:esp"}), "fast system call entry",
         F({X.X86_INS_SYSENTER}), None, F({"sysenter"})),
    Kind(55, "sysexit", P, 4, None, F({"msr", "ecx", "edx"}), F({"cs:eip", "ss:esp"}), "fast return to user mode",
         F({X.X86_INS_SYSEXIT}), None, F({"sysexit", "sysexitl"})),
    Kind(56, "syscall", S, 4, None, F({"msr"}), F({"cs:eip", "ecx", "eflags.all"}), "fast system call (AMD)",
         F({X.X86_INS_SYSCALL}), None, F({"syscall"})),
    Kind(57, "sysret", P, 4, None, F({"msr", "ecx"}), F({"cs:eip", "eflags.all"}), "return from syscall",
         F({X.X86_INS_SYSRET}), None, F({"sysret", "sysretl"})),
    Kind(58, "xsetbv", P, 3, None, F({"ecx", "eax", "edx"}), F({"xcr"}), "write an extended control register (XCR0)",
         F({X.X86_INS_XSETBV}), None, F({"xsetbv"})),
    Kind(59, "xgetbv", S, 3, None, F({"ecx", "xcr"}), F({"eax", "edx"}), "read an extended control register",
         F({X.X86_INS_XGETBV}), None, F({"xgetbv"})),
    Kind(60, "xsaves", P, 3, None, F({"eax", "edx", "xcr", "msr"}), F({"mem"}), "save supervisor state components",
         F({X.X86_INS_XSAVES}), None, F({"xsaves"})),
    Kind(61, "xrstors", P, 3, None, F({"eax", "edx", "mem"}), F({"xstate"}), "restore supervisor state components",
         F({X.X86_INS_XRSTORS}), None, F({"xrstors"})),
    Kind(62, "monitor", P, 3, None, F({"eax", "ecx", "edx"}), F({"monitor"}), "arm address monitoring",
         F({X.X86_INS_MONITOR}), None, F({"monitor"})),
    Kind(63, "mwait", P, 3, None, F({"eax", "ecx", "monitor"}), F(), "wait for a monitored store or an interrupt",
         F({X.X86_INS_MWAIT}), None, F({"mwait"})),
    Kind(64, "rdpmc", P, 4, None, F({"ecx", "pmc"}), F({"eax", "edx"}), "read a performance counter",
         F({X.X86_INS_RDPMC}), None, F({"rdpmc"})),
    Kind(65, "rdtscp", S, 3, None, F({"tsc", "msr"}), F({"eax", "edx", "ecx"}), "read the TSC and TSC_AUX",
         F({X.X86_INS_RDTSCP}), None, F({"rdtscp"})),
    Kind(66, "invpcid", P, 1, None, F({"reg", "mem"}), F({"tlb"}), "invalidate TLB entries by PCID",
         F({X.X86_INS_INVPCID}), None, F({"invpcid"})),
    Kind(67, "clac", P, 3, None, F(), F({"eflags.ac"}), "clear EFLAGS.AC (SMAP)",
         F({X.X86_INS_CLAC}), None, F({"clac"})),
    Kind(68, "stac", P, 3, None, F(), F({"eflags.ac"}), "set EFLAGS.AC (SMAP)",
         F({X.X86_INS_STAC}), None, F({"stac"})),
    Kind(69, "wbnoinvd", P, 3, None, F(), F({"cache"}), "write back caches without invalidating",
         F({X.X86_INS_WBNOINVD}), None, F({"wbnoinvd"})),
    Kind(70, "rdpid", S, 2, None, F({"msr"}), F({"reg"}), "read TSC_AUX (the processor id)",
         F({X.X86_INS_RDPID}), None, F({"rdpid"})),
    Kind(71, "vmcall", S, 3, None, F({"eax"}), F({"cs:eip"}), "call the hypervisor (Intel)",
         F({X.X86_INS_VMCALL}), None, F({"vmcall"})),
    Kind(72, "vmmcall", S, 3, None, F({"eax"}), F({"cs:eip"}), "call the hypervisor (AMD)",
         F({X.X86_INS_VMMCALL}), None, F({"vmmcall"})),
    Kind(73, "vmfunc", S, 3, None, F({"eax", "ecx"}), F({"ept"}), "invoke a VM function",
         F({X.X86_INS_VMFUNC}), None, F({"vmfunc"})),
    Kind(74, "getsec", P, 4, None, F({"eax", "ebx"}), F({"cs:eip"}), "safer mode extensions (SMX)",
         F({X.X86_INS_GETSEC}), None, F({"getsec"})),
    Kind(75, "vmx", P, 3, None, F({"rm", "reg", "vmcs"}), F({"rm", "reg", "vmcs", "cs:eip", "eflags.arith"}),
         "VMX operation (vmxon ... invvpid): a kernel acting as a hypervisor",
         F({X.X86_INS_VMXON, X.X86_INS_VMXOFF, X.X86_INS_VMLAUNCH, X.X86_INS_VMRESUME, X.X86_INS_VMREAD,
            X.X86_INS_VMWRITE, X.X86_INS_VMPTRLD, X.X86_INS_VMPTRST, X.X86_INS_VMCLEAR, X.X86_INS_INVEPT,
            X.X86_INS_INVVPID}), None,
         F({"vmxon", "vmxoff", "vmlaunch", "vmresume", "vmread", "vmreadl", "vmwrite", "vmwritel", "vmptrld",
            "vmptrst", "vmclear", "invept", "invvpid"})),
    Kind(76, "svm", P, 3, None, F({"eax", "vmcb"}), F({"vmcb", "cs:eip", "eflags.if"}),
         "SVM operation (vmrun ... invlpga): a kernel acting as a hypervisor",
         F({X.X86_INS_VMRUN, X.X86_INS_VMLOAD, X.X86_INS_VMSAVE, X.X86_INS_STGI, X.X86_INS_CLGI, X.X86_INS_SKINIT,
            X.X86_INS_INVLPGA}), None, F({"vmrun", "vmload", "vmsave", "stgi", "clgi", "skinit", "invlpga"})),
]  # fmt: skip

# Markers share the record format but are not instructions.
EXCL_BEGIN = Kind(0xF0, "exclude_begin", S, 0, 0, F(), F(), "start of a .afterburn_noannotate region", marker=True)
EXCL_END = Kind(0xF1, "exclude_end", S, 0, 0, F(), F(), "end of a .afterburn_noannotate region", marker=True)

KINDS: tuple[Kind, ...] = tuple(_KINDS)
BY_ID: dict[int, Kind] = {k.id: k for k in (*KINDS, EXCL_BEGIN, EXCL_END)}
BY_NAME: dict[str, Kind] = {k.name: k for k in (*KINDS, EXCL_BEGIN, EXCL_END)}

_BY_CS_ID: dict[int, list[Kind]] = {}
_BY_ATT: dict[str, list[Kind]] = {}
for _k in KINDS:
    for _i in _k.cs_ids:
        _BY_CS_ID.setdefault(_i, []).append(_k)
    for _m in _k.att_mnemonics:
        _BY_ATT.setdefault(_m, []).append(_k)

# The capstone ids worth looking at; anything else is never sensitive.
CS_IDS: frozenset[int] = frozenset(_BY_CS_ID)


def pad_before(kind: Kind, loads_ss: bool) -> bool:
    """Where a site's pad goes (see PAD_BEFORE_KINDS)."""
    return kind.name in PAD_BEFORE_KINDS or (kind.name in _SS_SHADOW_KINDS and loads_ss)


def pad_before_cs(kind: Kind, insn) -> bool:
    return pad_before(kind, kind.name in _SS_SHADOW_KINDS and "ss" in _cs_regs(insn)[:1])


def pad_before_att(kind: Kind, operands: list[str]) -> bool:
    return pad_before(kind, kind.name in _SS_SHADOW_KINDS and bool(operands) and operands[-1].lower() == "%ss")


_LEGACY_PREFIXES = frozenset({0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67})
_SREG_PUSH_POP = frozenset({0x06, 0x07, 0x0E, 0x16, 0x17, 0x1E, 0x1F})


def opcode_bytes(raw: bytes) -> bytes:
    """The instruction's bytes from the opcode on (legacy prefixes skipped)."""
    i = 0
    while i < len(raw) and raw[i] in _LEGACY_PREFIXES:
        i += 1
    return raw[i:]


_SHARED = {X.X86_INS_MOV: "mov", X.X86_INS_PUSH: "push", X.X86_INS_POP: "pop", X.X86_INS_JMP: "jmp",
           X.X86_INS_CALL: "call"}  # fmt: skip


def worth_testing(name: str, raw: bytes) -> bool:
    """A byte-level filter for the mnemonics shared with ordinary
    instructions (mov, push, pop, jmp, call): capstone's operand detail
    costs ~20 us an instruction, and a module has tens of thousands of movs.
    ``name`` is capstone's mnemonic (without prefixes), ``raw`` the bytes."""
    if name not in ("mov", "push", "pop", "jmp", "call"):
        return True
    op = opcode_bytes(raw)
    if not op:
        return False
    if name == "mov":
        return op[0] in (0x8C, 0x8E) or (op[0] == 0x0F and len(op) > 1 and 0x20 <= op[1] <= 0x23)
    if name in ("push", "pop"):
        return op[0] in _SREG_PUSH_POP or (op[0] == 0x0F and len(op) > 1 and op[1] in (0xA0, 0xA1, 0xA8, 0xA9))
    return op[0] == 0xFF  # far jmp/call through memory (FF /5, FF /3)


def classify(insn) -> Kind | None:
    """The kind of a capstone instruction (decoded with detail on), or None."""
    kinds = _BY_CS_ID.get(insn.id)
    if not kinds or (insn.id in _SHARED and not worth_testing(_SHARED[insn.id], bytes(insn.bytes))):
        return None
    for kind in kinds:
        if kind.matches_cs(insn):
            return kind
    return None


def candidate_att(mnemonic: str) -> bool:
    """Whether some kind has this AT&T mnemonic (lower case, no prefixes)."""
    return mnemonic in _BY_ATT


def classify_att(mnemonic: str, operands: list[str]) -> Kind | None:
    """The kind of an AT&T statement (mnemonic lower-cased, prefixes removed,
    operands split at top-level commas), or None."""
    for kind in _BY_ATT.get(mnemonic, ()):
        if kind.matches_att(mnemonic, operands):
            return kind
    return None

