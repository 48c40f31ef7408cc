"""The emulated PC: multiboot entry, delivery through the guest IDT, hlt,
limits and determinism (issue: the emulated PC and the bare backend)."""
from __future__ import annotations

import struct

import pytest

from afterburn.errors import FormatError
from backends.pc.loader import load_image
from backends.pc.observation import compare

from .kernels import build_kernel, read_u32, run_kernel, symbol

IF = 0x200


def test_multiboot_entry_state(tmp_path):
    k = build_kernel(tmp_path, "    EXIT 7\n")
    obs, m = run_kernel(k)
    assert obs.ending.reason == "exit" and obs.ending.code == 7 and obs.ending.status == 7
    assert read_u32(m, symbol(k, "boot_eax")) == 0x2BADB002
    mbi = read_u32(m, symbol(k, "boot_ebx"))
    flags, mem_lower, mem_upper = struct.unpack("<III", bytes(m.uc.mem_read(mbi, 12)))
    # As QEMU 7.2 + SeaBIOS hand it over (SeaBIOS keeps the top 128 KiB).
    assert flags == 0x24F and (mem_lower, mem_upper) == (639, (32 << 20) // 1024 - 1024 - 128)
    cmdline = read_u32(m, mbi, 4)
    assert bytes(m.uc.mem_read(cmdline, len(str(k)) + 2)) == str(k).encode() + b" \0"
    assert bytes(m.uc.mem_read(0x400, 2)) == b"\xf8\x03"  # BIOS data area: COM1


def test_unknown_ports_read_all_ones_and_are_logged(tmp_path):
    body = """
    inb $0x92, %al
    movl %eax, scratch
    inw $0xe9, %ax
    movl %eax, scratch+4
    movb $1, %al
    outb %al, $0xe9
    EXIT 0
"""
    k = build_kernel(tmp_path, body)
    obs, m = run_kernel(k)
    s = symbol(k, "scratch")
    assert read_u32(m, s) & 0xFF == 0xFF and read_u32(m, s, 1) & 0xFFFF == 0xFFFF
    assert obs.stats.unknown_ports == {"in 0x92": 1, "in 0xe9": 1, "out 0xe9": 1}
    assert (0xE9, 1, 1) in obs.io_trace


def test_interrupt_gate_clears_if_trap_gate_keeps_it(tmp_path):
    body = """
    GATE 0x40, h40, 0x8E
    GATE 0x41, h41, 0x8F
    sti
    int $0x40
    int $0x41
    EXIT 0
h40: pushfl
    popl scratch
    iret
h41: pushfl
    popl scratch+4
    iret
"""
    k = build_kernel(tmp_path, body)
    obs, m = run_kernel(k)
    assert obs.ending.code == 0
    s = symbol(k, "scratch")
    assert read_u32(m, s) & IF == 0 and read_u32(m, s, 1) & IF
    assert obs.stats.exceptions == {"int 0x40": 1, "int 0x41": 1}


def test_error_codes_and_fault_eips(tmp_path):
    body = """
    GATE 13, h13, 0x8E
    GATE 6, h6, 0x8E
    GATE 0, h0, 0x8E
gp: movw $0x33, %ax
    movw %ax, %ds
ud: ud2
    xorl %edx, %edx
    xorl %ecx, %ecx
de: divl %ecx
    EXIT 0
h13: popl scratch          /* error code */
    movl (%esp), %eax
    movl %eax, scratch+4
    addl $2, (%esp)
    iret
h6: movl (%esp), %eax      /* no error code */
    movl %eax, scratch+8
    addl $2, (%esp)
    iret
h0: movl (%esp), %eax
    movl %eax, scratch+12
    addl $2, (%esp)
    iret
"""
    k = build_kernel(tmp_path, body)
    obs, m = run_kernel(k)
    s = symbol(k, "scratch")
    assert obs.ending.code == 0
    assert read_u32(m, s) == 0x30  # #GP(selector index 6), from the GDT limit check
    assert read_u32(m, s, 1) == symbol(k, "gp") + 4
    assert read_u32(m, s, 2) == symbol(k, "ud")
    assert read_u32(m, s, 3) == symbol(k, "de")
    assert obs.stats.exceptions == {"#GP": 1, "#UD": 1, "#DE": 1}


USER = """
    GATE 0x80, h80, 0xEF
    GATE 0x41, h41, 0x8E
    GATE 13, h13, 0x8E
    pushl $0x23
    pushl $ustack_top
    pushl $0x202
    pushl $0x1b
    pushl $user
    iret
user:
    int $0x80
    movl %esp, scratch+16
uint: int $0x41              /* DPL0 gate from ring 3: #GP */
    cli                      /* IOPL 0 at ring 3: #GP */
    int $0x80
h80: movl 4(%esp), %eax      /* saved CS */
    movl %eax, scratch
    movl 16(%esp), %eax      /* saved SS */
    movl %eax, scratch+4
    movl %esp, scratch+8
    incl scratch+20
    cmpl $2, scratch+20
    je done
    iret
h41: EXIT 99
h13: popl scratch+24
    movl (%esp), %eax
    movl %eax, scratch+28
    incl scratch+32
    movl scratch+32, %eax
    cmpl $1, %eax
    jne 2f
    addl $2, (%esp)          /* skip int $0x41 */
    iret
2:  incl (%esp)              /* skip cli */
    iret
done: EXIT 0
"""


def test_ring3_entry_uses_tss_stack_and_checks_gate_dpl(tmp_path):
    k = build_kernel(tmp_path, USER)
    obs, m = run_kernel(k)
    s = symbol(k, "scratch")
    assert obs.ending.code == 0, obs.ending
    assert read_u32(m, s) == 0x1B and read_u32(m, s, 1) == 0x23
    assert read_u32(m, s, 2) == symbol(k, "kstack_top") - 20  # ss esp eflags cs eip on the TSS stack
    assert read_u32(m, s, 4) == symbol(k, "ustack_top")
    assert read_u32(m, s, 6) == 0  # cli at CPL3: #GP(0)
    assert read_u32(m, s, 8) == 2  # the guest saw two #GP: int $0x41, then cli
    # Unicorn raised one of them (cli); the other came from our own gate check.
    assert obs.stats.exceptions == {"int 0x80": 2, "int 0x41": 1, "#GP": 1}


def test_gate_dpl_violation_reports_the_int_instruction(tmp_path):
    k = build_kernel(tmp_path, USER.replace("cli                      /* IOPL 0 at ring 3: #GP */", "nop"))
    obs, m = run_kernel(k)
    s = symbol(k, "scratch")
    # The #GP from int $0x41 (error code: IDT entry, 0x41*8+2) saves the int's own address.
    assert obs.ending.code == 0
    assert read_u32(m, s, 6) == 0x41 * 8 + 2 and read_u32(m, s, 7) == symbol(k, "uint")


def test_repeated_faults_never_become_double_faults(tmp_path):
    # Unicorn promotes the 2nd fault to #DF unless old_exception is reset.
    body = """
    GATE 13, h13, 0x8E
    GATE 8, h8, 0x8E
    movl $5, %ecx
1:  cli
    movw $0x33, %ax
    movw %ax, %fs
    loop 1b
    EXIT 0
h13: addl $4, %esp
    addl $2, (%esp)
    incl scratch
    iret
h8: EXIT 8
"""
    k = build_kernel(tmp_path, body)
    obs, m = run_kernel(k)
    assert obs.ending.code == 0 and read_u32(m, symbol(k, "scratch")) == 5


def test_fault_during_delivery_is_a_double_fault(tmp_path):
    # The #GP gate is absent: delivering #GP raises #NP, contributory twice: #DF.
    body = """
    GATE 8, h8, 0x8E
    movw $0x33, %ax
    movw %ax, %ds
    EXIT 1
h8: popl scratch
    EXIT 0x42
"""
    k = build_kernel(tmp_path, body)
    obs, m = run_kernel(k)
    assert obs.ending.code == 0x42 and read_u32(m, symbol(k, "scratch")) == 0


def test_triple_fault_ends_the_run(tmp_path):
    k = build_kernel(tmp_path, "    ud2\n")  # no gates at all
    obs, _ = run_kernel(k)
    assert obs.ending.reason == "fault" and obs.ending.status == 251
    assert "triple fault" in obs.ending.detail


def test_hlt_with_interrupts_disabled_halts(tmp_path):
    obs, _ = run_kernel(build_kernel(tmp_path, "    cli\n    hlt\n"))
    assert obs.ending.reason == "halted" and obs.ending.status == 250 and "disabled" in obs.ending.detail


def test_hlt_with_no_interrupt_source_halts(tmp_path):
    obs, _ = run_kernel(build_kernel(tmp_path, "    sti\n    hlt\n    EXIT 1\n"))
    assert obs.ending.reason == "halted" and "no interrupt source" in obs.ending.detail


TIMER = """
    GATE 8, tick, 0x8E          /* IRQ0 at the BIOS's vector base 0x08 */
    movb $0x34, %al             /* PIT channel 0, mode 2, divisor 1193 (1 kHz) */
    outb %al, $0x43
    movb $0xa9, %al
    outb %al, $0x40
    movb $0x04, %al
    outb %al, $0x40
    movb $0xfe, %al             /* unmask IRQ0 */
    outb %al, $0x21
1:  sti
    hlt
    cli
    cmpl $5, scratch
    jb 1b
    rdtsc
    movl %eax, scratch+4
    movl %edx, scratch+8
    EXIT 0
tick: incl scratch
    pushl %eax
    movb $0x20, %al
    outb %al, $0x20
    popl %eax
    iret
"""


def test_hlt_waits_for_the_timer_and_runs_are_deterministic(tmp_path):
    k = build_kernel(tmp_path, TIMER)
    a, ma = run_kernel(k)
    b, mb = run_kernel(k)
    assert a.ending.code == 0 and read_u32(ma, symbol(k, "scratch")) == 5
    assert a.stats.halts >= 5 and a.stats.idle_ns > 4_000_000  # ~5 ms of 1 kHz ticks spent in hlt
    # Bit-for-bit repeatable: same instruction count, same virtual time, same TSC.
    assert a.stats.instructions == b.stats.instructions and a.stats.virtual_ns == b.stats.virtual_ns
    tsc = lambda m: read_u32(m, symbol(k, "scratch"), 1) | read_u32(m, symbol(k, "scratch"), 2) << 32  # noqa: E731
    assert tsc(ma) == tsc(mb) and 4_990_000 <= tsc(ma) < 7_000_000  # five 1193-count ticks: 4.9997 ms
    assert compare(a, b) is None


def test_instruction_limit_is_exact(tmp_path):
    obs, _ = run_kernel(build_kernel(tmp_path, "1:  jmp 1b\n"), max_insns=123_457)
    assert obs.ending.reason == "max-insns" and obs.ending.status == 253
    assert obs.stats.instructions == 123_457


def test_wall_clock_timeout(tmp_path):
    obs, _ = run_kernel(build_kernel(tmp_path, "1:  jmp 1b\n"), max_insns=None, timeout=0.3)
    assert obs.ending.reason == "timeout" and obs.ending.status == 252


def test_unmapped_memory_is_reported(tmp_path):
    obs, _ = run_kernel(build_kernel(tmp_path, "    movl 0x40000000, %eax\n"))
    assert obs.ending.reason == "error" and "0x40000000" in obs.ending.detail and obs.ending.status == 254


def test_loader_rejects_what_it_cannot_boot(tmp_path):
    (tmp_path / "plain.s").write_text("\t.text\n\t.globl _start\n_start: hlt\n")
    import subprocess

    subprocess.run(["as", "--32", "-o", tmp_path / "plain.o", tmp_path / "plain.s"], check=True)
    with pytest.raises(FormatError, match="executable"):
        load_image(tmp_path / "plain.o")
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0x100000", "-o", tmp_path / "plain.elf", tmp_path / "plain.o"],
                   check=True)  # fmt: skip
    with pytest.raises(FormatError, match="no multiboot"):
        load_image(tmp_path / "plain.elf")


PAGE_FAULT_THEN_SPIN = r"""
    GATE 14, pf, 0x8E
    movl $pt, %edi                /* identity-map 0..4 MiB, page 0x300 not present */
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $12, %eax
    orl $3, %eax
    cmpl $0x300, %ecx
    jne 2f
    xorl %eax, %eax
2:  movl %eax, (%edi,%ecx,4)
    incl %ecx
    cmpl $1024, %ecx
    jne 1b
    leal 3(%edi), %eax
    movl %eax, pd
    movl $pd, %eax
    movl %eax, %cr3
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
    movl 0x300123, %eax           /* faults once; the handler maps the page */
    movl $300000, %ecx            /* more than one slice before CR2 is read again */
3:  loop 3b
    movl %cr2, %eax
    movl %eax, scratch
    EXIT 0
pf:
    movl $0x300003, pt + 0x300*4
    addl $4, %esp
    iret
    .bss
    .align 4096
pd: .fill 1024, 4, 0
pt: .fill 1024, 4, 0
    .text
"""


def test_cr2_survives_slice_boundaries(tmp_path):
    """CR2 is what the guest's fault left there, across slices and at the
    end: Unicorn's end-of-slice translation lookup (at ``until - 1``) must
    never write it."""
    k = build_kernel(tmp_path, PAGE_FAULT_THEN_SPIN)
    obs, m = run_kernel(k)
    assert obs.ending.code == 0 and obs.stats.slices > 1
    assert read_u32(m, symbol(k, "scratch")) == 0x300123
    assert obs.cpu["cr2"] == 0x300123


def test_code_at_address_zero_runs(tmp_path):
    """Slices stop at EIP 0 (the exit address that costs no lookup); a guest
    that jumps there just carries on."""
    body = """
    movl $0x00f4e7, 0             /* out %eax, $0xf4 */
    movl $7, %eax
    xorl %ebx, %ebx
    jmp *%ebx
"""
    obs, _ = run_kernel(build_kernel(tmp_path, body))
    assert (obs.ending.reason, obs.ending.code) == ("exit", 7), obs.ending.describe()
