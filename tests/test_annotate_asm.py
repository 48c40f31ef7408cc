"""The assembler annotator: every table form, and gas's syntax corners."""
from __future__ import annotations

import pytest

from afterburn import isa
from afterburn.annotate_asm import annotate_text
from afterburn.decode import decode_one, nop_cover
from afterburn.elf import Elf
from afterburn.errors import AfterburnError
from afterburn.annotate_obj import annotate_object
from afterburn.equiv import check
from afterburn.sitefmt import Why, read_site_table
from afterburn.verify import verify

from .conftest import assemble
from .forms import ALL_FORMS as FORMS


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
    hlt, int3 = by_kind["hlt"], by_kind["int3"]
    ss_load = next(s for s in table.sites if s.kind.name == "mov_to_sreg" and s.pad_before)
    assert by_kind["sti"].end == hlt.offset and hlt.end == int3.offset and int3.end == ss_load.offset
    # A label names the instruction it is written on, after a pad that comes first.
    assert (hlt.insn_offset, int3.insn_offset, ss_load.insn_offset) == (syms["a"], syms["b"], syms["c"])
    assert by_kind["mov_to_sreg"].pad_before is False  # the ds load
    assert ss_load.end == syms["d"]  # mov ss; mov esp stay adjacent
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
    """Bytes that are one sensitive instruction are that instruction (a
    site); bytes that hide one among others are refused, never left."""
    res = annotate_text("\t.text\nf:\t.byte 0xfa\n\tret\n", "t.s", as_assembler)
    assert [s.kind.name for s in res.sites] == ["cli"]
    with pytest.raises(AfterburnError, match="not visible in the text"):
        annotate_text("\t.text\nf:\t.byte 0x90, 0xfa\n\tret\n", "t.s", as_assembler)


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


# -- issue 9: what Linux 6.1 showed ------------------------------------------------

def test_strings_in_code_are_data_not_instructions(tmp_path, as_assembler):
    """Failure 5: Kbuild's asm-offsets.c emits ``.ascii "->SYM value"`` into
    .text; decoded as code it holds arpl and insb, and the cross-check
    refused it.  A string is data: an excluded region saying so."""
    text = '\t.text\nmain:\n\t.ascii "->TI_flags $8 offsetof(struct thread_info, flags)"\n\tcli\n\tret\n'
    res, elf, table = annotate_and_load(text, tmp_path, as_assembler)
    assert [s.kind.name for s in table.sites] == ["cli"]
    (region,) = table.excluded
    assert region.why == Why.DATA and region.end - region.start == len("->TI_flags $8 offsetof(struct thread_info, flags)")
    assert verify(elf, table).ok


ALT = """\t.macro ALT oldinstr, newinstr
140:
\t\\oldinstr
141:
\t.pushsection .altinstr_replacement,"ax"
143:
\t\\newinstr
144:
\t.popsection
\t.endm
\t.macro STR insn
\trep \\insn
\t.endm
\t.text
f:
"""


def test_macro_arguments_of_several_tokens(tmp_path, as_assembler):
    """Failure 6: per-expansion sites pasted the argument into symbol names,
    which broke for ``.byte 0x0f,0x01,0xcb``, ``movl %esp,%ebp; sysenter``
    or ``.rept``.  Each expansion is now decided by its bytes."""
    text = ALT + ('\tALT ".byte 0x0f,0x01,0xcb", "nop"\n'
                  '\tALT "movl %esp,%ebp; cli", "nop"\n'  # sensitive last: pad after
                  '\tALT "sti; nop", "nop"\n'  # pad before, sensitive first
                  '\tALT ".rept 2; nop; .endr", "nop"\n'
                  '\tALT "hlt", ".byte 0x0f,0x01,0xcb"\n'
                  "\tSTR insb\n\tSTR movsb\n\tret\n")  # fmt: skip
    res, elf, table = annotate_and_load(text, tmp_path, as_assembler)
    assert [s.kind.name for s in table.sites] == ["stac", "cli", "sti", "hlt", "ins"]  # stac: from .byte, one expansion
    assert verify(elf, table).ok
    # The replacements are copied at boot: excluded, with that reason.
    assert {r.why for r in table.excluded} == {Why.ALTERNATIVES}
    assert {r.section.name for r in table.excluded} == {".altinstr_replacement"}


def test_macro_argument_that_cannot_be_padded_is_refused(as_assembler):
    with pytest.raises(AfterburnError, match=r"t.s:3: `.oldinstr` expands at f to cli among other instructions"):
        annotate_text(ALT + '\tALT "cli; nop", "nop"\n\tret\n', "t.s", as_assembler)
    with pytest.raises(AfterburnError, match="2 sensitive instructions"):
        annotate_text(ALT + '\tALT "cli; sti", "nop"\n\tret\n', "t.s", as_assembler)


STUBS = """\t.text
\t.globl stubs
stubs:
\ti = 0
\t.rept 4
\t.if i & 1
\tpushl $0
\t.endif
\tpushl $i
\tjmp common
\ti = i + 1
\t.fill stubs + i*9 - ., 1, 0xcc
\t.endr
common:
\tcli
\tiret
"""


def test_fill_0xcc_in_code_is_padding(tmp_path, as_assembler):
    """Failure 8: early_idt_handler_array's ``.fill ..., 1, 0xcc`` between
    fixed-stride stubs was refused (cc) or padded (object path), which
    breaks the 9-byte stride.  0xCC after a jmp is padding on both paths."""
    res, elf, table = annotate_and_load(STUBS, tmp_path, as_assembler)
    assert [s.kind.name for s in table.sites] == ["cli", "iret"]
    code = elf.section(".text").data
    assert [code[i * 9] for i in range(4)] == [0x6A, 0x6A, 0x6A, 0x6A]  # every stub starts with push
    assert verify(elf, table).ok
    plain = assemble(STUBS, tmp_path, "plain")
    out = annotate_object(plain.read_bytes(), "plain.o")
    assert out.sites == {"cli": 1, "iret": 1}
    assert Elf("o.o", raw=out.data).section(".text").data[: 4 * 9] == Elf(plain).section(".text").data[: 4 * 9]


def test_int3_that_runs_is_a_site_and_padding_is_not(tmp_path, as_assembler):
    """The padding rule on the cc path: an int3 after ret is a speculation
    trap; a named or ordinary one is an instruction."""
    text = "\t.text\nf:\tret\n\tint3\ng:\tmovl $1, %eax\n\tint3\n\tret\nh:\tret\nnamed:\tint3\n\tret\n"
    res, elf, table = annotate_and_load(text, tmp_path, as_assembler)
    assert [elf.symbolize(elf.section(".text"), s.insn_offset) for s in table.sites] == ["g+0xa", "named"]
    assert verify(elf, table).ok


LABELS = """\t.text
\t.globl selftest
\t.type selftest, @function
selftest:
\tmovl $selftest_ip, %eax
selftest_ip:
\tint3
\tnop
\tret
\t.size selftest, . - selftest
loop:
\tsti
\tdecl %ecx
\tjnz loop
1:\tmovl %eax, %ss
2:\tret
\t.pushsection __ex_table, "a"
\t.long 1b - ., 2b - ., 0
\t.popsection
"""


def test_labels_name_the_instruction_after_a_pad_that_comes_first(tmp_path, as_assembler):
    """Failure 10: a PAD_BEFORE pad went between an instruction and the
    label that names it, so Linux's int3_selftest_ip named the pad, the
    int3 self-test oopsed and the annotated kernel panicked.  A label names
    its instruction unless control is sent there (a jump, a code pointer,
    a function); both paths agree, and verify catches the old layout."""
    res, elf, table = annotate_and_load(LABELS, tmp_path, as_assembler)
    text = elf.section(".text")
    sym = {s.name: s.value for s in elf.symbols}
    by_kind = {s.kind.name: s for s in table.sites}
    int3, sti, ss = by_kind["int3"], by_kind["sti"], by_kind["mov_to_sreg"]
    assert sym["selftest_ip"] == int3.insn_offset  # the address the int3 handler compares
    assert sym["loop"] == sti.offset  # a branch target: the site start
    mov = next(r for r in elf.relocations(text) if r.offset == 1)  # movl $selftest_ip: the instruction
    assert mov.addend == int3.insn_offset
    ex = sorted(elf.relocations(elf.section("__ex_table")), key=lambda r: r.offset)
    assert ex[0].addend + 0 == ss.insn_offset  # the faulting instruction (".long 1b - .": S + A - P, P = 0)
    assert verify(elf, table).ok
    # The object path: the same places, proven equivalent.
    plain = assemble(LABELS, tmp_path, "plain")
    out = annotate_object(plain.read_bytes(), "plain.o")
    oelf = Elf("o.o", raw=out.data)
    osym = {s.name: s.value for s in oelf.symbols}
    osites = {s.kind.name: s for s in read_site_table(oelf).sites}
    assert osym["selftest_ip"] == osites["int3"].insn_offset and osym["loop"] == osites["sti"].offset
    assert check(plain.read_bytes(), out.data).ok and verify(oelf).ok
    # What the annotator wrote before: the label before the pad.  Caught.
    old = res.text.replace("selftest_ip:\n", "").replace("19770101:\n\t.set", "selftest_ip:\n19770101:\n\t.set", 1)
    assert old != res.text
    bad = verify(Elf(assemble(old, tmp_path, "old")))
    assert [p.check for p in bad.problems] == ["label-before-pad", "label-before-pad"]


def test_an_instruction_written_as_bytes_is_a_site(tmp_path, as_assembler):
    """Linux writes xsaves/xrstors as ``.byte 0x0f,0xc7,0x1f`` (XSTATE_OP,
    for old assemblers): once they were kinds, the cross-check refused
    fpu/signal.c.  A .byte list that is exactly one sensitive instruction is
    that instruction; anything else stays bytes, and is still checked."""
    text = ("\t.text\nf:\n1:\t.byte 0x0f,0xc7,0x1f\n\txorl %eax,%eax\n2:\n\t.byte 0x0f,0x01,0xcb\n\t.byte 0x90\n\tret\n"
            "\t.pushsection __ex_table,\"a\"\n\t.long 1b - ., 2b - ., 0\n\t.popsection\n")  # fmt: skip
    res, elf, table = annotate_and_load(text, tmp_path, as_assembler)
    assert [s.kind.name for s in table.sites] == ["xrstors", "stac"]
    assert verify(elf, table).ok
    with pytest.raises(AfterburnError, match="not visible in the text"):
        annotate_text("\t.text\nf:\t.byte 0x0f,0xc7,0x1f,0x90\n\tret\n", "t.s", as_assembler)  # two instructions
