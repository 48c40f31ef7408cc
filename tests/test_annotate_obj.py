"""Object annotation (.o/.ko/.mod): layout, remapping, equivalence, refusals.

The strongest check runs the code: a multiboot kernel assembled into one
object is linked twice, from the object as it is and from the annotated
object, and both must behave identically on bare (and, rewritten, on xen).
Its body is built to need every kind of repair: rel8 branches and loop/jecxz
that no longer reach, a jump table in .rodata, a function pointer, sites that
are branch targets.
"""
from __future__ import annotations

import json
import struct
import subprocess

import pytest

from afterburn.annotate_obj import annotate_object
from afterburn.elf import Elf
from afterburn.equiv import check
from afterburn.relobj import RelObject
from afterburn.sitefmt import read_site_table
from afterburn.verify import verify
from backends.pc.observation import compare
from tests import sitebench
from tests.backend_params import REFERENCE, REWRITING
from tests.conftest import run_afterburn
from tests.kernels import PRELUDE

# Each block of 40 three-byte adds is 120 bytes: a rel8 branch across one
# plus the pads of the sites inside it no longer reaches.
ADDS = "    .rept 40\n    addl $1, %esi\n    .endr\n"

BODY = f"""
    movl $0, %esi
    movl $3, %ecx
1:  inb $0x61, %al                  /* site, and the target of loop below */
{ADDS}
    cli
    sti
    loop 1b                         /* rel8 only: must become loop/jmp/jmp */
    movl $0, %ecx
    jecxz 2f                        /* rel8 only, forward */
{ADDS}
    pushfl
    popfl
2:  cmpl $123, %esi
    jne 3f                          /* jcc rel8, forward across sites */
    cli
    pushfl
    popl %eax
{ADDS}
3:  jmp 4f                          /* jmp rel8 across a site */
    movl %cr0, %eax
{ADDS}
4:  movl $2, %eax
    jmp *table(,%eax,4)             /* jump table in .rodata */
case0: PUTC 'x'
    jmp 5f
case1: PUTC 'y'
    jmp 5f
case2: sti                          /* PAD_BEFORE site as a jump-table target */
    PUTC 'z'
5:  movl $fn, %ebx
    call *%ebx                      /* function pointer */
    movl $0, %ebx                   /* (a code address: it moved) */
    movl %esi, scratch
    movl %esi, %eax
    andl $0xff, %eax
    outl %eax, $0xf4

fn: cli
    pushfl
    popl scratch+4
    sti
    ret

    .section .rodata
    .align 4
table: .long case0, case1, case2
    .text
"""


def _objects(tmp_path, body: str = BODY, name: str = "k"):
    obj = sitebench.assemble_text(PRELUDE + body + '\n    .section .note.GNU-stack,"",@progbits\n', tmp_path, name)
    raw = obj.read_bytes()
    res = annotate_object(raw, str(obj))
    ann = tmp_path / f"{name}.ann.o"
    ann.write_bytes(res.data)
    return obj, ann, res


def test_annotated_object_links_and_runs_like_the_original(tmp_path):
    plain_o, ann_o, res = _objects(tmp_path)
    assert res.site_count >= 12 and res.relaxed >= 3, (res.sites, res.relaxed)
    text = bytes(RelObject(res.data).section(".text").data)
    assert b"\xe2\x02\xeb\x05\xe9" in text and b"\xe3\x02\xeb\x05\xe9" in text  # loop and jecxz relaxed
    plain = sitebench.link([plain_o], tmp_path, "plain")
    ann = sitebench.link([ann_o], tmp_path, "ann")
    assert verify(Elf(ann)).ok
    native = sitebench.run(plain, REFERENCE, digest_low=False)
    padded = sitebench.run(ann, REFERENCE, digest_low=False)
    assert native.serial == b"z" and native.ending.reason == "exit"
    # Everything a user sees is the same.  Only addresses moved: EIP (code)
    # and ESP (the stack is in .bss, after the longer .text), and with them
    # the .data digest (the GDT pointer names .data's new address).
    assert (native.serial, native.ending, native.io_trace) == (padded.serial, padded.ending, padded.io_trace)
    moved = {"eip", "esp", "gdt_base", "idt_base"}  # (and the GDT and IDT, in .data and .bss)
    assert {k: v for k, v in native.cpu.items() if k not in moved} == {
        k: v for k, v in padded.cpu.items() if k not in moved}  # fmt: skip
    for backend in REWRITING:
        div = compare(padded, sitebench.run(ann, backend, digest_low=False))
        assert div is None, (backend, div)


def test_object_output_is_proved_equivalent(tmp_path):
    plain_o, ann_o, res = _objects(tmp_path)
    rep = check(plain_o.read_bytes(), ann_o.read_bytes(), str(plain_o), str(ann_o))
    assert rep.ok, rep.problems
    assert rep.sites == res.site_count and rep.relaxed >= 3 and rep.relocations > 0
    r = run_afterburn("verify", str(ann_o), "--against", str(plain_o), "--json")
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["ok"] is True


def _corrupt(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


def test_the_equivalence_check_catches_mistakes(tmp_path):
    """Each corruption is something a buggy annotator could do."""
    plain_o, ann_o, _ = _objects(tmp_path)
    old, new = plain_o.read_bytes(), ann_o.read_bytes()
    o = RelObject(new)
    text = o.section(".text")
    text_off = _file_offset(new, text.index)
    table = read_site_table(Elf("x", raw=new))
    site = next(s for s in table.sites if s.kind.name == "cli" and not s.pad_before)
    # 1. A pad byte that is not a NOP.
    bad_pad = _corrupt(new, text_off + site.pad_offset, b"\x40")
    # 2. An instruction byte changed (addl $1 -> addl $2).
    add_at = bytes(text.data).index(bytes.fromhex("83c601"))
    bad_insn = _corrupt(new, text_off + add_at + 2, b"\x02")
    # 3. A relaxed branch that reaches the wrong place.
    jmp32 = bytes(text.data).index(b"\xe9")
    disp = struct.unpack_from("<i", new, text_off + jmp32 + 1)[0]
    bad_branch = _corrupt(new, text_off + jmp32 + 1, struct.pack("<i", disp + 1))
    # 4. A jump-table entry (an in-place addend in .rodata) off by one.
    ro_off = _file_offset(new, o.section(".rodata").index)
    entry = struct.unpack_from("<I", new, ro_off + 8)[0]
    bad_table = _corrupt(new, ro_off + 8, struct.pack("<I", entry + 1))
    for label, data in (("pad", bad_pad), ("insn", bad_insn), ("branch", bad_branch), ("table", bad_table)):
        rep = check(old, data, "in", f"out-{label}")
        assert not rep.ok, label


def _file_offset(raw: bytes, index: int) -> int:
    shoff = struct.unpack_from("<I", raw, 32)[0]
    return struct.unpack_from("<10I", raw, shoff + 40 * index)[4]


def test_assembler_and_object_annotation_agree(tmp_path, as_assembler):
    """Annotating foo.s, and annotating the object as makes from foo.s,
    give the same sites at the same symbols and the same instructions."""
    from afterburn.annotate_asm import annotate_text

    # gas cannot relax loop/jecxz (no rel32 form), so pads inside their reach
    # are an assembler error for the text annotator: leave them out here.
    body = BODY.replace("    loop 1b", "    decl %ecx\n    jnz 1b").replace("    jecxz 2f", "    testl %ecx, %ecx\n    jz 2f")
    src = PRELUDE + body
    text_ann = annotate_text(src, "k.s", assemble=as_assembler).text
    from_text = sitebench.assemble_text(text_ann, tmp_path, "from_text")
    plain_o, from_obj, _ = _objects(tmp_path, body)
    assert check(plain_o.read_bytes(), from_obj.read_bytes()).ok

    def records(path):
        elf = Elf(path)
        return sorted((elf.symbolize(s.section, s.offset), s.kind.name, s.length, s.insn_len, int(s.flags))
                      for s in read_site_table(elf).sites)  # fmt: skip

    def code(path):
        out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-j", ".text", str(path)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        lines = [ln.split("\t", 1)[1].split("<")[0].strip() for ln in out.splitlines() if "\t" in ln]
        return [ln for ln in lines if not ln.startswith(("nop", "xchg   %ax,%ax"))]

    assert records(from_text) == records(from_obj)
    # Branch encodings may differ (gas picks rel8 where ours relaxed), so compare mnemonics.
    assert [ln.split()[0] for ln in code(from_text)] == [ln.split()[0] for ln in code(from_obj)]


@pytest.mark.parametrize("flags,section", [(["-fasynchronous-unwind-tables"], ".eh_frame"),
                                           (["-g", "-fno-asynchronous-unwind-tables"], ".debug_frame")])
def test_frames_are_rewritten(tmp_path, flags, section):
    """gcc's unwind tables for padded functions still cover them exactly
    (other DWARF is dropped, and the result says so)."""
    c = tmp_path / "f.c"
    c.write_text("""
        unsigned long save(void) { unsigned long f; __asm__ volatile("pushfl; popl %0; cli" : "=r"(f)); return f; }
        int io(int n) { int s = 0; for (int i = 0; i < n; i++) { unsigned char v;
            __asm__ volatile("inb $0x61,%0" : "=a"(v)); s += v; if (s > 1000) break; } return s; }
    """)
    obj = tmp_path / "f.o"
    subprocess.run(["gcc", "-m32", "-O2", "-fno-pie", *flags, "-c", str(c), "-o", str(obj)], check=True)
    res = annotate_object(obj.read_bytes(), str(obj))
    rep = check(obj.read_bytes(), res.data)
    assert rep.ok and rep.fdes == 2, rep.problems
    assert RelObject(res.data).section(section).data
    if section == ".debug_frame":
        assert any("dropped DWARF" in m for m in res.messages) and ".debug_info was dropped" in rep.notes
    out = tmp_path / "f.ann.o"
    out.write_bytes(res.data)
    frames = subprocess.run(["readelf", "--debug-dump=frames", str(out)], capture_output=True, text=True).stdout
    fns = {s.name: s for s in RelObject(res.data).symbols if s.name in ("save", "io")}
    for name, sym in fns.items():
        assert f"pc={sym.value:08x}..{sym.value + sym.size:08x}" in frames, (name, frames)


def test_16_bit_code_leaves_its_section_unchanged(tmp_path):
    # Real-mode code the way boot code writes it (GRUB's relocator16.S,
    # memtest's setup): data32/addr32 prefixes and far transfers.
    body = """
    cli
    jmp 1f
    .code16
real:
    movw %cs, %ax
    movw %ax, %ds
    addr32 movl (%esi), %ebx
    inb $0x60, %al
    data32 ljmp $0x10, $1f
    .code32
1:  EXIT 0
"""
    _, _, res = _objects(tmp_path, body)
    assert res.bytes_added == 0 and res.skipped
    assert all("section left unchanged" in s.reason for s in res.skipped)


def test_code_blob_copied_at_run_time_is_kept_verbatim(tmp_path):
    body = """
    cli
    EXIT 0
    .globl hook_start, hook_end
hook_start:
    inb $0x60, %al
    jmp 1f
    outb %al, $0x80
1:  ret
hook_end:
"""
    plain_o, ann_o, res = _objects(tmp_path, body)
    reasons = {s.kind: s.reason for s in res.skipped}
    assert set(reasons) == {"in", "out"} and all("hook_start..hook_end" in r for r in reasons.values())
    assert "cli" in res.sites
    assert check(plain_o.read_bytes(), ann_o.read_bytes()).ok
    assert verify(Elf(ann_o)).ok  # the blob is an excluded region


ALTERNATIVE = """
    pushfl
661: cli
662:
    .skip -(((664f-663f)-(662b-661b)) > 0) * ((664f-663f)-(662b-661b)),0x90
665:
    popfl
    EXIT 0
    .pushsection .altinstr_replacement, "ax"
663: sti
    nop
    nop
664:
    .popsection
    .pushsection .altinstructions, "a"
    .long 661b - .
    .long 663b - .
    .word 0x1234
    .byte 665b - 661b, 664b - 663b
    .popsection
"""


def test_alternatives_one_rule_on_both_paths(tmp_path, as_assembler):
    """Issue 9, failure 13: one rule for code the kernel patches at boot
    (docs/design.md, "Alternatives").  An original is code like any other:
    its sites are padded and the length its .altinstructions entry records
    follows; a replacement is copied over the original at boot, so it is
    an excluded region, whatever it holds.  Both paths agree."""
    from afterburn.annotate_asm import annotate_text
    from afterburn.sitefmt import Why

    plain_o, ann_o, res = _objects(tmp_path, ALTERNATIVE)
    assert res.sites["cli"] == 1 and res.sites["pushf"] == res.sites["popf"] == 1
    assert [(s.section, s.kind) for s in res.skipped] == [(".altinstr_replacement", "sti")]
    table = read_site_table(Elf(ann_o))
    assert [(r.section.name, r.why) for r in table.excluded] == [(".altinstr_replacement", Why.ALTERNATIVES)]
    alt = RelObject(ann_o.read_bytes()).section(".altinstructions").data
    assert alt[10] == 1 + 7 + 2  # cli, its pad, the two NOPs gas added for the longer replacement
    assert check(plain_o.read_bytes(), ann_o.read_bytes()).ok
    assert verify(Elf(ann_o)).ok
    # The cc path: gas recomputes the lengths from the labels, so the pad
    # takes the place of the NOP fill.
    res_text = annotate_text(PRELUDE + ALTERNATIVE, "alt.s", as_assembler)
    cc_o = sitebench.assemble_text(res_text.text, tmp_path, "alt-cc")
    cc_table = read_site_table(Elf(cc_o))
    assert sorted(s.kind.name for s in cc_table.sites) == sorted(s.kind.name for s in table.sites)
    assert [(r.section.name, r.why) for r in cc_table.excluded] == [(".altinstr_replacement", Why.ALTERNATIVES)]
    assert RelObject(cc_o.read_bytes()).section(".altinstructions").data[10] == 1 + 7


def test_a_section_that_cannot_be_read_is_left_alone(tmp_path):
    """What alternatives used to be: a range whose length nothing records.
    A .parainstructions patch site keeps its length: its cli is skipped."""
    body = """
    pushfl
771: cli
772:
    popfl
    EXIT 0
    .pushsection .parainstructions, "a"
    .long 771b
    .byte 1, 772b - 771b
    .short 0
    .popsection
"""
    plain_o, ann_o, res = _objects(tmp_path, body)
    assert [s.kind for s in res.skipped] == ["cli"] and "parainstructions" in res.skipped[0].reason
    assert check(plain_o.read_bytes(), ann_o.read_bytes()).ok


def test_module_signature_is_dropped_and_said(tmp_path):
    plain_o, _, _ = _objects(tmp_path, "    cli\n    EXIT 0\n")
    sig = b"S" * 40
    signed = plain_o.read_bytes() + sig + struct.pack(">BBBBBBBxI", 0, 0, 2, 0, 0, 0, 0, len(sig)) \
        + b"~Module signature appended~\n"  # fmt: skip
    res = annotate_object(signed)
    assert any("signature" in m for m in res.messages)
    assert not res.data.endswith(b"~Module signature appended~\n")
    assert check(signed, res.data).ok


def test_already_annotated_object_is_an_unchanged_copy(tmp_path):
    _, ann_o, _ = _objects(tmp_path, "    cli\n    EXIT 0\n")
    again = annotate_object(ann_o.read_bytes())
    assert again.already_annotated and again.data == ann_o.read_bytes()


def test_cli_single_object_batch_and_bad_inputs(tmp_path):
    plain_o, _, _ = _objects(tmp_path)
    out = tmp_path / "single.o"
    r = run_afterburn("annotate", str(plain_o), "-o", str(out), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["sites"] >= 12
    r = run_afterburn("verify", str(out), "--against", str(plain_o))
    assert r.returncode == 0 and "EQUIVALENT" in r.stderr
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "a.ko").write_bytes(plain_o.read_bytes())
    (tmp_path / "in" / "b.mod").write_bytes(plain_o.read_bytes())
    (tmp_path / "in" / "junk.o").write_bytes(b"\x7fELF" + b"\0" * 60)
    r = run_afterburn("annotate", str(tmp_path / "in"), "--out-dir", str(tmp_path / "out"), "-j", "2", "--json")
    rep = json.loads(r.stdout)
    assert r.returncode == 2  # one bad input: reported in its row, the others done
    rows = {f["input"].split("/in/")[1]: f for f in rep["files"]}
    assert rows["sub/a.ko"]["ok"] and rows["b.mod"]["ok"] and not rows["junk.o"]["ok"]
    assert (tmp_path / "out" / "sub" / "a.ko").exists() and not (tmp_path / "out" / "junk.o").exists()
    for args in ([str(tmp_path / "in" / "junk.o"), "-o", str(tmp_path / "x.o")],
                 [str(plain_o)],
                 [str(plain_o), "-o", str(plain_o)]):  # fmt: skip
        r = run_afterburn("annotate", *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    for backend in REWRITING:
        r = run_afterburn("rewrite", "--backend", backend, "--check", str(out), "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["unpatchable"] == []


@pytest.mark.parametrize("elf_type", ["exec", "x86-64"])
def test_non_i386_objects_are_refused(tmp_path, elf_type):
    if elf_type == "exec":
        kernel = sitebench.build_bench(tmp_path, "k", sitebench.bench_source("cli", "cli"))
        raw = kernel.read_bytes()
    else:
        src = tmp_path / "x.s"
        src.write_text("cli\n")
        subprocess.run(["as", "--64", "-o", str(tmp_path / "x.o"), str(src)], check=True)
        raw = (tmp_path / "x.o").read_bytes()
    (tmp_path / "in.o").write_bytes(raw)
    r = run_afterburn("annotate", str(tmp_path / "in.o"), "-o", str(tmp_path / "out.o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_bytes_that_do_not_decode_leave_their_section_unchanged(tmp_path):
    """Data in code (or an instruction capstone does not know) hides where
    the next instructions start: nothing in that section may move."""
    body = """
    cli
    jmp 1f
    .byte 0xff, 0xff, 0xff
1:  inb $0x60, %al
    EXIT 0
"""
    plain_o, ann_o, res = _objects(tmp_path, body)
    assert res.bytes_added == 0 and "cli" in {s.kind for s in res.skipped}
    assert all("do not decode" in s.reason for s in res.skipped)
    assert check(plain_o.read_bytes(), ann_o.read_bytes()).ok
    assert verify(Elf(ann_o)).ok  # the whole section is an excluded region


def test_comdat_groups_survive(tmp_path):
    """gcc puts __x86.get_pc_thunk.* in a COMDAT group in every object that
    uses one; the group names its signature symbol by index, which a new
    local symbol shifts.  Two annotated objects must still link."""
    src = ("extern int g; static int f(void) { __asm__ volatile(\"cli\"); return g; }\n"
           "int NAME(void) { return f(); }\n")  # fmt: skip
    objs = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.c").write_text(src.replace("NAME", name))
        subprocess.run(["gcc", "-m32", "-O2", "-fpie", "-fno-asynchronous-unwind-tables", "-c", f"{name}.c", "-o", f"{name}.o"], cwd=tmp_path, check=True)
        raw = (tmp_path / f"{name}.o").read_bytes()
        assert b"__x86.get_pc_thunk" in raw
        res = annotate_object(raw, f"{name}.o")
        (tmp_path / f"{name}.ann.o").write_bytes(res.data)
        assert check(raw, res.data).ok
        objs.append(f"{name}.ann.o")
    r = subprocess.run(["ld", "-m", "elf_i386", "-r", "-o", "ab.o", *objs], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_range_a_branch_leaves_is_no_code_blob(tmp_path):
    """X_start/X_end labels around code that jumps out (Linux's
    __irqentry_text_start..end: stubs that jmp handle_exception) mark a
    range; the code is not copied elsewhere.  Treated as a blob, its
    unrelocated jump kept the old displacement and the kernel crashed on
    the first exception."""
    body = """
    jmp past
__stubs_start:
    pushl $1
    jmp common
__stubs_end:
past:
    cli
    pushl $2
common:
    popl %eax
    EXIT 0
"""
    plain_o, ann_o, res = _objects(tmp_path, body)
    assert res.skipped == [] and res.sites["cli"] == 1
    assert check(plain_o.read_bytes(), ann_o.read_bytes()).ok
    native = sitebench.run(sitebench.link([plain_o], tmp_path, "plain"), "bare", digest_low=False)
    padded = sitebench.run(sitebench.link([ann_o], tmp_path, "ann"), "bare", digest_low=False)
    assert native.ending.reason == padded.ending.reason == "exit"


def test_an_address_outside_its_code_section_leaves_it_alone(tmp_path):
    """gas turns Linux's ``_pa(1f)`` (a label minus PAGE_OFFSET) into
    ``.text + 0x4000005a``: which instruction it means cannot be told, so
    the section cannot move (the PVH entry code)."""
    body = """
    movl $(1f - 0xc0000000), %eax
    cli
1:  EXIT 0
"""
    plain_o, ann_o, res = _objects(tmp_path, body)
    assert res.sites == {} and any(s.kind == "cli" and "outside the section" in s.reason for s in res.skipped)
    assert check(plain_o.read_bytes(), ann_o.read_bytes()).ok
