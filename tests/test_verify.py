"""The verifier must catch every defect it claims to, on objects and linked ELF."""
from __future__ import annotations

import subprocess

import pytest

from afterburn.elf import Elf
from afterburn.errors import FormatError
from afterburn.sitefmt import note_directives, read_site_table
from afterburn.verify import verify

from .conftest import assemble

NOTE = "\n".join("\t" + d for d in note_directives()) + "\n"
PAD6 = "\t.byte 0x66,0x0f,0x1f,0x44,0x00,0x00\n"


def record(start="1b", end="3b", iend="2b", kind=1, flags=1):
    return (f'\t.pushsection .afterburn,"a",@progbits\n\t.balign 4\n\t.long {start} - .\n'
            f"\t.byte {kind}, ({end}) - ({start}), ({iend}) - ({start}), {flags}\n\t.popsection\n")  # fmt: skip


GOOD_CLI = "1:\tcli\n2:" + PAD6 + "3:\n" + record()


def checks(text, tmp_path):
    rep = verify(Elf(assemble("\t.text\nf:\n" + text + "\tret\n" + NOTE, tmp_path)))
    return sorted({p.check for p in rep.problems}), rep


def test_clean_file_passes(tmp_path):
    assert checks(GOOD_CLI, tmp_path)[0] == []


def test_unannotated_instruction(tmp_path):
    found, rep = checks(GOOD_CLI + "\tinb $0x60,%al\n", tmp_path)
    assert found == ["unannotated"]
    assert "in" in rep.problems[0].message and rep.problems[0].where.startswith("f+")


def test_wrong_kind(tmp_path):
    assert checks("1:\tcli\n2:" + PAD6 + "3:\n" + record(kind=2), tmp_path)[0] == ["kind"]


def test_wrong_instruction_length(tmp_path):
    text = "1:\tcli\n\tnop\n2:\t.byte 0x0f,0x1f,0x44,0x00,0x00\n3:\n" + record()
    assert checks(text, tmp_path)[0] == ["length"]


def test_pad_not_nops(tmp_path):
    text = "1:\tcli\n2:\tmovl %eax,%eax\n\tmovl %eax,%eax\n\tmovl %eax,%eax\n3:\n" + record()
    assert checks(text, tmp_path)[0] == ["pad"]


def test_branch_into_pad(tmp_path):
    found, rep = checks(GOOD_CLI + "\tjmp 2b+2\n", tmp_path)
    assert found == ["branch-into-pad"]


def test_relocation_into_pad(tmp_path):
    text = GOOD_CLI + "\t.section .rodata\n\t.long 2b+1\n\t.text\n"
    found, rep = checks(text, tmp_path)
    assert found == ["branch-into-pad"] and ".rodata" in rep.problems[0].message


def test_overlap_and_duplicate(tmp_path):
    text = ("1:\tcli\n2:" + PAD6 + "3:\n" + record() + record()
            + "4:\tsti\n5:\t.byte 0x90\n6:\n" + record("4b", "6b", "5b", 2) + record("4b+1", "6b", "4b+2", 2))  # fmt: skip
    found, _ = checks(text, tmp_path)
    assert "duplicate" in found and "overlap" in found


def test_false_flags_dead_claim(tmp_path):
    text = "\tcmpl $1,%eax\n1:\tcli\n2:" + PAD6 + "3:\n" + record(flags=0) + "\tjne 4f\n4:\n"
    assert checks(text, tmp_path)[0] == ["flags"]


def test_unknown_version_is_refused(tmp_path):
    note = NOTE.replace(".short 1", ".short 7")
    obj = assemble("\t.text\n" + GOOD_CLI + note, tmp_path)
    with pytest.raises(FormatError, match="unsupported site format version 7"):
        read_site_table(Elf(obj))


def test_records_without_note_are_refused(tmp_path):
    obj = assemble("\t.text\n" + GOOD_CLI, tmp_path)
    with pytest.raises(FormatError, match="no .afterburn.note"):
        read_site_table(Elf(obj))


def test_unterminated_exclusion_is_refused(tmp_path):
    text = '\t.text\n7:\tcli\n\t.pushsection .afterburn,"a"\n\t.long 7b - .\n\t.byte 0xf0,0,0,0\n\t.popsection\n'
    with pytest.raises(FormatError, match="unterminated"):
        read_site_table(Elf(assemble(text + NOTE, tmp_path)))


def test_unannotated_file_reports_every_site(tmp_path):
    rep = verify(Elf(assemble("\t.text\n\tcli\n\tsti\n\thlt\n", tmp_path)))
    assert not rep.annotated and [p.check for p in rep.problems] == ["unannotated"] * 3


def _link(obj, tmp_path, extra=()):
    out = tmp_path / "k.elf"
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0x100000", "-e", "f", *extra, "-o", str(out), str(obj)], check=True)
    return Elf(out)


def test_linked_elf_with_multiboot_header_in_text(tmp_path):
    # The checksum 0xe4524ffb ends in 0xfb, an sti if decoded as code.
    header = "\t.long 0x1BADB002, 0x00000003, -(0x1BADB002 + 3)\n"
    obj = assemble("\t.text\nhdr:\n" + header + "\t.globl f\nf:\n" + GOOD_CLI + "\tret\n" + NOTE, tmp_path)
    elf = _link(obj, tmp_path)
    table = read_site_table(elf)
    assert [hex(s.address) for s in table.sites] == ["0x10000c"]
    rep = verify(elf, table)
    assert rep.ok, rep.problems


def test_linked_elf_branch_into_pad(tmp_path):
    obj = assemble("\t.text\n\t.globl f\nf:\n" + GOOD_CLI + "\tjmp 2b+3\n\tret\n" + NOTE, tmp_path)
    rep = verify(_link(obj, tmp_path))
    assert [p.check for p in rep.problems] == ["branch-into-pad"]
    assert rep.problems[0].address == 0x100007


def test_linker_fill_between_input_sections_is_not_code(tmp_path):
    """Issue 9, failure 11: on a linked vmlinux, verify reported ld's 0xcc
    fill between input sections as unannotated int3 (70 false problems),
    including fill after a call that never returns and fill named by a
    linker script's boundary symbol (``__sched_text_end = .``)."""
    a = assemble("\t.text\n\t.globl f\n\t.type f, @function\nf:\tcall g\n\t.size f, . - f\n"
                 "\t.section .sched.text,\"ax\"\n\t.globl s\n\t.type s, @function\ns:\tret\n\t.size s, . - s\n"
                 + NOTE, tmp_path, "a")  # fmt: skip
    b = assemble("\t.text\n\t.globl g\n\t.type g, @function\ng:\tmovl $1, %eax\n\tret\n\t.size g, . - g\n"
                 + NOTE, tmp_path, "b")  # fmt: skip
    script = tmp_path / "k.lds"
    script.write_text("SECTIONS { . = 0x100000; .text : { *a.o(.text) . = ALIGN(16); "
                      "__sched_text_start = .; *(.sched.text) __sched_text_end = .; . = ALIGN(16); *b.o(.text) } "
                      "=0xcccccccc }\n")  # fmt: skip
    out = tmp_path / "k.elf"
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(script), "-e", "f", "-o", str(out), str(a), str(b)], check=True)
    elf = Elf(out)
    text = elf.section(".text").data
    assert text.count(b"\xcc") >= 20  # the fill is there, after "call g" and at __sched_text_end
    rep = verify(elf)
    assert rep.ok, rep.problems
    # A real int3 between the same functions is still found.
    c = assemble("\t.text\n\t.globl g\n\t.type g, @function\ng:\tint3\n\tret\n\t.size g, . - g\n" + NOTE, tmp_path, "b")
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(script), "-e", "f", "-o", str(out), str(a), str(c)], check=True)
    assert [p.check for p in verify(Elf(out)).problems] == ["unannotated"]


def test_linked_region_that_ends_its_section(tmp_path, as_assembler):
    """An excluded region may end where its section ends, which in a linked
    file is where the next section begins (vmlinux: .altinstr_replacement,
    then .exit.text): the end belongs to the region's own section."""
    from afterburn.annotate_asm import annotate_text

    src = ("\t.text\n\t.globl f\nf:\tcli\n\tret\n\t.pushsection .altinstr_replacement,\"ax\"\n\tsti\n\t.popsection\n"
           "\t.section .exit.text,\"ax\"\ng:\tnop\n\tret\n")  # fmt: skip
    obj = assemble(annotate_text(src, "t.s", as_assembler).text, tmp_path, "t")
    script = tmp_path / "k.lds"
    script.write_text("SECTIONS { . = 0x100000; .text : { *(.text) } .altinstr_replacement : { *(.altinstr_replacement) }"
                      " .exit.text : { *(.exit.text) } }\n")  # fmt: skip
    out = tmp_path / "k.elf"
    subprocess.run(["ld", "-m", "elf_i386", "-T", str(script), "-e", "f", "-o", str(out), str(obj)], check=True)
    elf = Elf(out)
    assert elf.section(".exit.text").addr == elf.section(".altinstr_replacement").addr + 1
    table = read_site_table(elf)
    assert [(r.section.name, r.end - r.start) for r in table.excluded] == [(".altinstr_replacement", 1)]
    assert verify(elf, table).ok
