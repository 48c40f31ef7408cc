"""The assembler annotator: every table form, and gas's syntax corners."""
from __future__ import annotations

import pytest

from afterburn import isa
from afterburn.annotate_asm import annotate_text
from afterburn.decode import decode_one, nop_cover
from afterburn.elf import Elf
from afterburn.errors import AfterburnError
from afterburn.sitefmt import read_site_table
from afterburn.verify import verify

from .conftest import assemble
from .forms import FORMS


def annotate_and_load(text, tmp_path, as_assembler, name="t"):
    res = annotate_text(text, name, as_assembler)
    obj = assemble(res.text, tmp_path, name + ".ann")
    elf = Elf(obj)
    return res, elf, read_site_table(elf)


@pytest.mark.parametrize("kind", sorted(FORMS))
def test_every_form_is_annotated_and_verifies(kind, tmp_path, as_assembler):
    forms = FORMS[kind]
    text = "\t.text\n\t.globl f\nf:\n" + "".join(f"\t{f}\n\tnop\n" for f in forms) + "\tret\n"
    res, elf, table = annotate_and_load(text, tmp_path, as_assembler)
    assert [s.kind.name for s in res.sites] == [kind] * len(forms)
    assert len(table.sites) == len(forms)
    text_sec = elf.section(".text")
    for site in table.sites:
        assert site.kind.name == kind
        insn = decode_one(text_sec.data, site.insn_offset, site.insn_offset)
        assert insn.size == site.insn_len
        assert isa.classify(insn) is site.kind
        assert site.pad_before == isa.pad_before_cs(site.kind, insn)
        assert site.length == site.insn_len + site.kind.pad32
        assert nop_cover(text_sec.data, site.pad_offset, site.pad_offset + site.pad)
    rep = verify(elf, table)
    assert rep.ok, rep.problems
    # The unannotated program is recovered exactly by deleting the pads.
    plain = Elf(assemble(text, tmp_path, "plain")).section(".text").data
    stripped = bytearray()
    pos = 0
    for site in sorted(table.sites, key=lambda s: s.offset):
        stripped += text_sec.data[pos : site.pad_offset]
        pos = site.pad_offset + site.pad
    stripped += text_sec.data[pos:]
    assert bytes(stripped) == plain


def test_everything_else_passes_through_verbatim(as_assembler):
    src = ("# leading comment\n\t.file \"x.c\"\n\t.text\nf:  movl $1, %eax   # keep me\n"
           "\t.section .rodata\ns:\t.string \"a#b;c\"\n\t.text\n\tcli\n\tret\n")  # fmt: skip
    res = annotate_text(src, "x.s", as_assembler)
    out = res.text.splitlines()
    for line in src.splitlines():
        if line.strip() != "cli":
            assert line in out
    assert len(res.sites) == 1


def test_prefix_on_its_own_line_starts_the_site(tmp_path, as_assembler):
    res, elf, table = annotate_and_load("\t.text\n\trep\n\tinsb\n\trep; outsw\n\tret\n", tmp_path, as_assembler)
    assert [(s.kind.name, s.offset, s.insn_len) for s in table.sites] == [("ins", 0, 2), ("outs", 7, 3)]
    assert verify(elf, table).ok


def test_pad_placement_keeps_next_instruction_addresses(tmp_path, as_assembler):
    """sti/hlt/int/int3/into/lcall and loads of SS put the pad first, so the
    address after the instruction (return address, wake-up EIP, interrupt
    shadow) is where the source says; faulting kinds keep the pad after, so
    their own address (exception tables) is where the source says."""
    src = ("\t.text\nf:\tsti\na:\thlt\nb:\tint3\nc:\tmovw %ax,%ss\nd:\tmovl %eax,%esp\n"
           "e:\trdmsr\n\tmovw %ax,%ds\n\tret\n")  # fmt: skip
    res, elf, table = annotate_and_load(src, tmp_path, as_assembler)
    syms = {s.name: s.value for s in elf.symbols if s.name in "abcde"}
    by_kind = {s.kind.name: s for s in table.sites}
    assert by_kind["sti"].end == syms["a"] and by_kind["hlt"].end == syms["b"] and by_kind["int3"].end == syms["c"]
    assert by_kind["mov_to_sreg"].pad_before is False  # the ds load
    ss_load = next(s for s in table.sites if s.offset == syms["c"])
    assert ss_load.pad_before and ss_load.end == syms["d"]  # mov ss; mov esp stay adjacent
    assert by_kind["rdmsr"].insn_offset == syms["e"] and not by_kind["rdmsr"].pad_before
    assert verify(elf, table).ok


def test_labels_stay_before_the_site(tmp_path, as_assembler):
    src = "\t.text\nf:\n1:\tcli\n\tjmp 1b\ng:\tsti\n\tjmp g\n"
    res, elf, table = annotate_and_load(src, tmp_path, as_assembler)
    rep = verify(elf, table)
    assert rep.ok, rep.problems
    syms = {s.name: s.value for s in elf.symbols if s.name in ("f", "g")}
    assert syms["g"] == table.sites[1].offset


def test_macro_and_rept_bodies_annotate_every_expansion(tmp_path, as_assembler):
    src = """\t.macro irqsave reg
\tpushfl
\tpopl \\reg
\tcli
\t.endm
\t.text
f:\tirqsave %eax
\tirqsave %ebx
\t.rept 3
\toutb %al,$0x80
\t.endr
\tret
"""
    res, elf, table = annotate_and_load(src, tmp_path, as_assembler)
    names = [s.kind.name for s in sorted(table.sites, key=lambda s: s.offset)]
    assert names == ["pushf", "cli", "pushf", "cli", "out", "out", "out"]
    assert verify(elf, table).ok


def test_macro_defined_in_a_data_section_is_annotated_where_it_expands(tmp_path, as_assembler):
    """A macro body runs in the section it is expanded in; where it was
    defined (and section directives inside it) do not matter."""
    src = """\t.section .multiboot, "a"
\t.long 0x1BADB002
\t.macro EXIT code
\tmovl $\\code, %eax
\toutl %eax, $0xf4
\t.endm
\t.data
x:\t.long 0
\t.text
f:\tEXIT 3
\tret
"""
    res, elf, table = annotate_and_load(src, tmp_path, as_assembler)
    assert [s.kind.name for s in table.sites] == ["out"]
    assert table.sites[0].section.name == ".text"
    assert verify(elf, table).ok


def test_noannotate_region_is_recorded_and_verifies(tmp_path, as_assembler):
    src = "\t.text\nf:\tcli\n\t.afterburn_noannotate\n\tinb $0x60,%al\n\thlt\n\t.afterburn_annotate\n\tsti\n\tret\n"
    res, elf, table = annotate_and_load(src, tmp_path, as_assembler)
    assert [s.kind.name for s in table.sites] == ["cli", "sti"]
    assert len(table.excluded) == 1 and res.excluded[0][:2] == (3, 6)
    r = table.excluded[0]
    assert r.end - r.start == 3  # inb (2) + hlt (1), unpadded
    assert ".afterburn_noannotate" not in res.text.replace("# afterburn: afterburn_noannotate", "")
    assert verify(elf, table).ok


def test_section_switch_inside_excluded_region(tmp_path, as_assembler):
    src = ("\t.text\n\t.afterburn_noannotate\n\tcli\n\t.pushsection .data\n\t.long 1\n\t.popsection\n\tsti\n"
           "\t.section .text.other,\"ax\",@progbits\n\thlt\n\t.afterburn_annotate\n\tcli\n\t.previous\n\tret\n")  # fmt: skip
    res, elf, table = annotate_and_load(src, tmp_path, as_assembler)
    assert [s.kind.name for s in table.sites] == ["cli"]
    assert table.sites[0].section.name == ".text.other"
    spans = sorted((r.section.name, r.end - r.start) for r in table.excluded)
    assert spans == [(".text", 1), (".text", 1), (".text.other", 1)]
    assert verify(elf, table).ok


def test_code16_is_excluded_with_a_warning(tmp_path, as_assembler):
    src = "\t.text\n\t.code16\n\tcli\n\tinb $0x60,%al\n\t.code32\n\tsti\n"
    res, elf, table = annotate_and_load(src, tmp_path, as_assembler)
    assert [s.kind.name for s in table.sites] == ["sti"]
    assert any(".code16" in w for w in res.warnings)
    assert verify(elf, table).ok


def test_comments_and_strings_are_not_code(tmp_path, as_assembler):
    src = ("\t.text\n\tmovb $'#', %al  # cli\n/* sti\n   hlt */\tnop\n\t.section .rodata\n\t.ascii \"cli; sti\"\n"
           "\t.text\n\tnop # ; hlt\n\tout %al, $0x80 /* a comment\n that spans */ ; cli\n\tret\n")  # fmt: skip
    res, elf, table = annotate_and_load(src, tmp_path, as_assembler)
    assert [s.kind.name for s in table.sites] == ["out", "cli"]
    assert verify(elf, table).ok


def test_flags_liveness(tmp_path, as_assembler):
    cases = {
        "sti\n\ttestl %eax,%eax\n\tjne 1f\n1:": False,  # test writes all six before jne reads
        "sti\n\tjne 1f\n1:": True,
        "sti\n\tret": True,  # unknown successor
        "cli\n\tadcl $0,%eax\n\taddl %eax,%eax": True,  # adc reads CF
        "cli\n\tincl %eax\n\tcmpl $1,%eax": False,  # inc spares CF, cmp then writes it
        "cli\n\tincl %eax\n\tjc 1f\n1:": True,
        "sti\n\tjmp 2f\n2:\txorl %eax,%eax": False,  # follows the direct jump
        "pushfl\n\tpopl %eax\n\torl %eax,%eax": False,
        "cli\n\tcall g\n\tcmpl $0,%eax\ng:": True,
        "int $0x80\n\txorl %eax,%eax": True,  # control transfer: the handler's view counts
        "popfl\n\tjz 1f\n1:": True,
    }
    for body, live in cases.items():
        res = annotate_text(f"\t.text\nf:\t{body}\n\tret\n", "t.s", as_assembler)
        assert res.sites[0].flags_live is live, body
    # and the verifier agrees with what was recorded
    res, elf, table = annotate_and_load("\t.text\nf:\tsti\n\txorl %eax,%eax\n\tret\n", tmp_path, as_assembler)
    assert not table.sites[0].flags_live and verify(elf, table).ok


def test_already_annotated_is_a_noop(as_assembler):
    res = annotate_text("\t.text\n\tcli\n", "t.s", as_assembler)
    again = annotate_text(res.text, "t.s", as_assembler)
    assert again.already_annotated and again.text == res.text


def test_hand_written_byte_sites_are_caught(as_assembler):
    with pytest.raises(AfterburnError, match="not visible in the text"):
        annotate_text("\t.text\nf:\t.byte 0xfa\n\tret\n", "t.s", as_assembler)


def test_intel_syntax_is_refused(as_assembler):
    with pytest.raises(AfterburnError, match="Intel syntax"):
        annotate_text("\t.intel_syntax noprefix\n\tcli\n", "t.s", as_assembler)


def test_site_in_data_section_is_left_alone_with_warning(tmp_path, as_assembler):
    res, elf, table = annotate_and_load("\t.data\n\tcli\n\t.text\n\tsti\n", tmp_path, as_assembler)
    assert [s.kind.name for s in table.sites] == ["sti"]
    assert any("non-executable" in w for w in res.warnings)


def test_dot_end_keeps_the_note_reachable(tmp_path, as_assembler):
    res, elf, table = annotate_and_load("\t.text\n\tcli\n\t.end\n\tthis is ignored by gas\n", tmp_path, as_assembler)
    assert table.annotated and len(table.sites) == 1


def test_without_assembler_sites_are_conservatively_live():
    res = annotate_text("\t.text\n\tsti\n\txorl %eax,%eax\n", "t.s", None)
    assert res.sites[0].flags_live
