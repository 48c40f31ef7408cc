"""What a reference to code means: where control goes, or one instruction.

A site whose pad comes first (``PAD_BEFORE``: sti, hlt, int*, lcall, SS
loads) has two addresses: its start, where the pad begins, and its
instruction, at the end.  Every reference to the code there means one of
them (docs/design.md, "Labels and pads"):

* ``BRANCH``: a jump or call reaches it (a decoded direct branch, or a
  relocation in a branch's displacement).  Control must enter at the site
  start, so that the rewriter's patch, which covers the whole site, runs.
* ``POINTER``: a code address kept as data: a jump table, a function
  pointer, an exception table's fixup field.  Control goes there too: the
  site start.
* ``INSN``: the address of the instruction itself, as the CPU reports it:
  an address taken in code (``mov $int3_selftest_ip, %eax``, then compared
  with a trap's IP) or an exception table's faulting-instruction field.
  That is the instruction, after the pad.  A function's entry is never
  this: a function symbol starting there makes the reference a pointer.

The assembler annotator, the object annotator, the equivalence proof and
the verifier all take the meaning from here.
"""
from __future__ import annotations

from dataclasses import dataclass

from .decode import is_branch_field
from .elf import I386_PC_BASED

BRANCH, POINTER, INSN = "branch", "pointer", "insn"
EX_TABLE = "__ex_table"
SITES = ".afterburn"  # sitefmt.SECTION (not imported: sitefmt imports the ELF reader this module is used with)


@dataclass(frozen=True)
class Ref:
    section: int  # index of the section referred to
    offset: int  # the offset it names there
    meaning: str  # BRANCH, POINTER or INSN
    source: str  # where the reference is, for messages


def table_stride(offsets: list[int], size: int) -> int:
    """Entry size of a table whose entries each hold two relocated fields,
    from the relocations' spacing (Linux 6.1: 12 for ``.altinstructions``
    and ``__ex_table``)."""
    offs = sorted(set(offsets))
    if len(offs) < 3:
        return 12 if size % 12 == 0 else (13 if size % 13 == 0 else (8 if size % 8 == 0 else 0))
    gaps = {b - a for a, b in zip(offs[::2], offs[2::2], strict=False)}
    return gaps.pop() if len(gaps) == 1 else 0


def meaning(src_name: str, src_exec: bool, src_data: bytes, field: int, rtype: int, ex_stride: int) -> tuple[str, int]:
    """(meaning, bias) of a relocation at ``field`` of section ``src_name``:
    the bias is 4 for a branch displacement, whose target is S + A + 4."""
    if src_exec:
        if rtype in I386_PC_BASED and is_branch_field(src_data, field):
            return BRANCH, 4
        return INSN, 0
    if src_name.startswith(EX_TABLE) and ex_stride and field % ex_stride == 0:
        return INSN, 0  # the faulting instruction; the fixup field after it is a pointer
    return POINTER, 0


def elf_refs(elf) -> dict[int, list[Ref]]:
    """Per executable section of a relocatable :class:`~afterburn.elf.Elf`,
    the references relocations make into it."""
    out: dict[int, list[Ref]] = {}
    if not elf.is_relocatable:
        return out
    syms = elf.symbols
    for sec in elf.sections:
        if sec.type != 1 or not sec.is_alloc or sec.name == SITES:  # PROGBITS holders; site records are not uses
            continue
        relocs = elf.relocations(sec)
        if not relocs:
            continue
        stride = table_stride([r.offset for r in relocs], sec.size) if sec.name.startswith(EX_TABLE) else 0
        data = sec.data if sec.is_exec else b""
        for r in relocs:
            if r.sym >= len(syms):
                continue
            sym = syms[r.sym]
            if not isinstance(sym.shndx, int) or sym.shndx >= len(elf.sections):
                continue
            if not elf.sections[sym.shndx].is_exec:
                continue
            m, bias = meaning(sec.name, sec.is_exec, data, r.offset, r.type, stride)
            out.setdefault(sym.shndx, []).append(Ref(sym.shndx, sym.value + r.addend + bias, m, f"{sec.name}+{r.offset:#x}"))
    return out


def relobj_refs(obj) -> dict[int, list[Ref]]:
    """The same for a :class:`~afterburn.relobj.RelObject` (the object annotator's model)."""
    out: dict[int, list[Ref]] = {}
    for rs in obj.rel_sections:
        src = obj.sections[rs.target]
        if not src.is_alloc or src.name == SITES:
            continue
        stride = table_stride([r.offset for r in rs.relocs], len(src.data)) if src.name.startswith(EX_TABLE) else 0
        data = bytes(src.data) if src.is_exec else b""
        for r in rs.relocs:
            sym = obj.symbols[r.sym]
            idx = sym.defined_in
            if idx is None or not obj.sections[idx].is_exec:
                continue
            m, bias = meaning(src.name, src.is_exec, data, r.offset, r.type, stride)
            out.setdefault(idx, []).append(Ref(idx, sym.value + r.addend + bias, m, f"{src.name}+{r.offset:#x}"))
    return out


def wants_instruction(refs: list[str], function_starts: bool) -> bool:
    """Whether a label at a PAD_BEFORE instruction names the instruction
    (the pad goes before the label) rather than the site start: only
    references that mean the instruction, and no function starting there."""
    return not function_starts and INSN in refs and BRANCH not in refs and POINTER not in refs
