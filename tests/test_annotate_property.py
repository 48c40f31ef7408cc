"""Property: on random programs, annotation changes nothing but adds pads.

Random AT&T programs mix sensitive forms, ordinary instructions, labels and
branches (so gas must relax rel8 branches across new pads).  For each one we
assemble the original and the annotated text and check, instruction by
instruction, that the annotated object is the original plus NOP pads: same
instructions in the same order, every branch landing on the image of its
original target, and the verifier clean.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from afterburn.annotate_asm import annotate_text
from afterburn.decode import decode_one
from afterburn.elf import Elf
from afterburn.sitefmt import read_site_table
from afterburn.verify import verify

from .conftest import assemble
from .forms import FORMS

PLAIN = ["movl %eax,%ebx", "addl $3,%ecx", "cmpl $1,%eax", "testl %edx,%edx", "incl %esi", "xorl %eax,%eax",
         "movl 4(%esp),%eax", "leal 8(%ebp),%edi", "pushl %eax", "popl %ecx", "nop", "adcl $0,%edx"]  # fmt: skip
SENSITIVE = [f for forms in FORMS.values() for f in forms if not f.startswith(("ljmp $", "lcall $", "jmp $", "call $"))]

item = st.one_of(
    st.tuples(st.just("insn"), st.sampled_from(PLAIN)),
    st.tuples(st.just("sens"), st.sampled_from(SENSITIVE)),
    st.tuples(st.just("label"), st.integers(0, 5)),
    st.tuples(st.sampled_from(["jmp", "jne", "jc", "call"]), st.integers(0, 5)),
    st.tuples(st.just("fill"), st.integers(1, 40)),  # bulk that pushes branches past rel8 range
)


def render(items) -> str:
    lines, defined = ["\t.text", "\t.globl f", "f:"], set()
    for kind, arg in items:
        if kind == "label" and arg not in defined:
            defined.add(arg)
            lines.append(f"L{arg}:")
        elif kind in ("insn", "sens"):
            lines.append("\t" + arg)
        elif kind == "fill":
            lines += ["\tmovl $0x12345678,%eax"] * arg
        elif kind in ("jmp", "jne", "jc", "call"):
            lines.append(f"\t{kind} L{arg}")
    for n in range(6):
        if n not in defined:
            lines.append(f"L{n}:")
    lines.append("\tret")
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(item, max_size=30))
def test_annotation_only_adds_pads(tmp_path, as_assembler, items):
    src = render(items)
    res = annotate_text(src, "rand.s", as_assembler)
    plain = Elf(assemble(src, tmp_path, "plain")).section(".text").data
    elf = Elf(assemble(res.text, tmp_path, "ann"))
    table = read_site_table(elf)
    ann = elf.section(".text").data
    site_at = {s.offset: s for s in table.sites}
    # Walk both streams in step, skipping pads in the annotated one.
    mapping, pairs, po, ao = {}, [], 0, 0
    while po < len(plain):
        site = site_at.get(ao)
        p, a = decode_one(plain, po, po), decode_one(ann, site.insn_offset if site else ao, 0)
        assert p is not None and a is not None
        assert p.mnemonic == a.mnemonic, (po, p.mnemonic, a.mnemonic)
        mapping[po] = ao
        a = decode_one(ann, site.insn_offset if site else ao, site.insn_offset if site else ao)
        pairs.append((p, a))
        po += p.size
        ao = site_at[ao].end if ao in site_at else ao + a.size
    mapping[po] = ao
    assert ao == len(ann)
    assert len(table.sites) == sum(1 for k, _ in items if k == "sens")
    for p, a in pairs:
        if p.mnemonic in ("jmp", "jne", "jb", "call") and p.operands and p.operands[0].type == 2:
            assert mapping[p.operands[0].imm] == a.operands[0].imm
        else:  # only relaxed branches may change bytes
            assert p.bytes == a.bytes, (p.mnemonic, p.op_str, a.op_str)
    rep = verify(elf, table)
    assert rep.ok, rep.problems
