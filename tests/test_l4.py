"""The l4 backend's own ABI: X.2 encodings (message tags, fpages, items,
error codes, thread ids, the KIP), the kernel model's system calls and
mapping database, every refusal, and guests that call the kernel
themselves.  (What every backend must do is in tests/test_backends.py.)"""
from __future__ import annotations

import struct
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st
from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_ESI

from afterburn.elf import Elf
from backends.l4 import TIDS, L4Backend, abi
from backends.l4.abi import Fpage, MsgTag
from backends.run import boot
from tests import sitebench
from tests.kernels import PRELUDE
from wedge.layout import SHARED_INFO

# -- encodings ------------------------------------------------------------------------------


@given(st.integers(0, 0xFFFF), st.integers(0, 63), st.integers(0, 63), st.integers(0, 15))
def test_message_tag_round_trips(label, u, t, flags):
    tag = MsgTag(label, u, t, flags)
    assert MsgTag.decode(tag.raw) == tag and tag.raw >> 32 == 0


def test_message_tags_of_the_kernel_protocol():
    # Pistachio's values: a read fault reports rwx 0b101, a write fault 0b010.
    assert MsgTag(abi.LABEL_PAGEFAULT | abi.R | abi.X, 2).raw == 0xFFE50002
    assert MsgTag(abi.LABEL_PAGEFAULT | abi.W, 2).raw == 0xFFE20002
    assert MsgTag(abi.LABEL_INTERRUPT).raw == 0xFFF00000
    assert MsgTag(abi.LABEL_EXCEPTION, 12).raw == 0xFFB0000C
    assert abi.ERROR_TAG == MsgTag(0, flags=abi.FLAG_ERROR).raw


@given(st.integers(12, 31), st.integers(0, 0xFFFFFFFF), st.integers(0, 7))
def test_fpage_round_trips_and_is_aligned(log2, base, rights):
    fp = Fpage(base & ~((1 << log2) - 1), log2, rights)
    assert Fpage.decode(fp.raw) == fp
    assert fp.raw & 7 == rights and (fp.raw >> 4) & 0x3F == log2 and fp.base % fp.size == 0


def test_fpage_special_values():
    assert Fpage(0x12345000, 12, 7).raw == 0x123450C7
    assert Fpage.decode(0) is None  # nilpage
    assert Fpage.decode(0x17) == Fpage(0, 32, 7)  # CompleteAddressSpace
    assert Fpage.decode(0x12345CC5) == Fpage(0x12345000, 12, 5)  # low base bits below the size are ignored
    assert Fpage(0x400000, 22).end == 0x800000


def test_map_and_grant_items():
    w0, w1 = abi.map_item(Fpage(0x5000, 12, abi.R), 0x8000)
    assert (w0, w1) == (0x8008, 0x50C4) and abi.item_type(w0) == abi.MAP_ITEM
    w0, _ = abi.map_item(Fpage(0x5000, 12), 0x8000, grant=True)
    assert w0 & 0xF == 0xA and abi.item_type(w0) == abi.GRANT_ITEM


def test_ipc_error_codes():
    assert abi.ipc_error(abi.IPC_TIMEOUT) == 0x2 and abi.ipc_error(abi.IPC_TIMEOUT, True) == 0x3
    assert abi.ipc_error(abi.IPC_NO_PARTNER) == 0x4
    assert abi.ipc_error(abi.IPC_OVERFLOW, offset=8) == 0x88


def test_thread_ids():
    assert abi.global_id(abi.USER_BASE, 1) == 0xC0001  # sigma0 with the 8259
    assert TIDS["monitor"] == 0xC8001  # the root task's id
    assert abi.irq_thread(5) == 0x14001 and abi.is_global(0x14001)
    assert not abi.is_global(abi.VM_UTCB + abi.UTCB_MR0)  # a local id is an MR0 address


def test_the_wedge_header_is_generated_from_the_abi():
    h = abi.c_header()
    assert f"#define L4_LINK_IPC 0x{abi.SYSCALL_LINKS['Ipc']:x}" in h
    assert f"#define L4_MON_ACTIVATE 0x{abi.MONITOR['activate']:x}" in h
    assert "#define L4_TCR_ERRORCODE (-9)" in h


# -- the model, attached to a machine --------------------------------------------------------


@pytest.fixture
def l4(tmp_path):
    """An l4 backend attached to a machine with a small kernel loaded; the
    VM thread is the current thread, as at boot."""
    kernel = sitebench.build_bench(tmp_path, "k", PRELUDE + "    EXIT 0\n")
    machine, be = boot(kernel, "l4")
    machine.backend = be
    be.attach(machine)
    return be


def test_the_kip_holds_x2_fields_and_system_call_stubs(l4):
    uc = l4.m.uc
    word = lambda off: struct.unpack("<I", uc.mem_read(abi.KIP_AREA + off, 4))[0]  # noqa: E731
    assert bytes(uc.mem_read(abi.KIP_AREA, 4)) == b"L4\xe6K"
    assert word(abi.KIP_OFF["api_version"]) == 0x84050000 and word(abi.KIP_OFF["utcb_area_info"]) == 0xC2401
    for name, link in abi.SYSCALL_LINKS.items():
        stub = bytes(uc.mem_read(abi.KIP_AREA + word(link), 3))
        vector = abi.IPC_VECTOR if name in ("Ipc", "Lipc") else abi.SYSCALL_VECTOR
        assert stub == bytes([0xCD, vector, 0xC3]), name


def test_the_kip_is_read_only_to_guest_threads(l4):
    for space in (l4.vm_space, l4.user_space):
        assert space.pages[abi.KIP_AREA >> 12].rights == abi.R | abi.X


def test_the_wedge_links_the_l4_entry_stubs():
    """l4 replaces the default bounce-frame stubs: its w_upcall takes the
    frame from the shared page (pushl %ss:SHARED+entry_eflags)."""
    w = L4Backend().wedge_image()
    addr = w.sym("w_upcall")
    code = next(data[addr - base : addr - base + 7] for base, data, _ in w.segments if base <= addr < base + len(data))
    assert code == b"\x36\xff\x35" + struct.pack("<I", SHARED_INFO + abi.SHARED["entry_eflags"])


def _enter(be, name: str, **regs: int) -> None:
    """The current thread executes the KIP stub of system call ``name``
    with ``regs`` (EIP is just past its int, as the kernel sees it)."""
    k = be.kernel
    stub = next(off for off, n in k.kip_stubs.items() if n == name)
    k.set_regs(eip=abi.KIP_AREA + stub, **regs)
    vector = abi.IPC_VECTOR if name in ("Ipc", "Lipc") else abi.SYSCALL_VECTOR
    k.syscall(vector)


def _ipc(be, to: int, tag: MsgTag, words: list[int] = ()):
    k, t = be.kernel, be.vm_thread
    for i, w in enumerate(words, 1):
        k.set_mr(t, i, w)
    _enter(be, "Ipc", eax=to, edx=to, ecx=0, esi=tag.raw, edi=t.local_id)
    return be.m.uc.reg_read(UC_X86_REG_ESI), k.tcr(t, "ErrorCode")


def test_ipc_to_a_thread_that_does_not_exist_is_refused(l4):
    tag, err = _ipc(l4, abi.global_id(0x123, 1), MsgTag(1))
    assert tag & abi.ERROR_TAG and err == abi.ipc_error(abi.IPC_NO_PARTNER)
    assert l4.m.uc.reg_read(UC_X86_REG_EAX) == abi.NILTHREAD
    assert l4.kernel.refused == 1 and l4.m.stats.exits["l4 refusal"] == 1


def test_ipc_with_message_registers_out_of_range_is_refused(l4):
    tag, err = _ipc(l4, TIDS["monitor"], MsgTag(abi.MONITOR["console"], 60, 4))
    assert tag & abi.ERROR_TAG and err == abi.ipc_error(abi.IPC_OVERFLOW)


def test_receive_only_ipc_is_refused(l4):
    tag, err = _ipc(l4, abi.NILTHREAD, MsgTag(0))
    assert tag & abi.ERROR_TAG and err == abi.ipc_error(abi.IPC_TIMEOUT, True)


def test_a_map_item_for_a_flexpage_the_sender_does_not_own_is_refused(l4):
    item = abi.map_item(Fpage(0x200000, 12), 0)
    tag, err = _ipc(l4, TIDS["monitor"], MsgTag(abi.MONITOR["idle"], 0, 2), list(item))
    assert tag & abi.ERROR_TAG and err == abi.ipc_error(abi.IPC_OVERFLOW)
    assert l4.kernel.refused == 1


def test_a_map_of_the_monitors_memory_is_refused(l4):
    """The VM space holds the monitor's pages in the hole (the shared page);
    passing them on is refused, and the request does not reach the monitor."""
    console = bytes(l4.console)
    item = abi.map_item(Fpage(SHARED_INFO, 12), 0)
    tag, err = _ipc(l4, TIDS["monitor"], MsgTag(abi.MONITOR["console"], 1, 2), [0, *item])
    assert tag & abi.ERROR_TAG and err == abi.ipc_error(abi.IPC_OVERFLOW, offset=4)
    assert bytes(l4.console) == console


def test_map_items_of_own_pages_and_string_items_are_refused_too(l4):
    k = l4.kernel
    k.map(l4.monitor_space, Fpage(abi.MONITOR_PHYS + 0x5000, 12), l4.vm_space, 0x5000)
    item = abi.map_item(Fpage(0x5000, 12), 0)
    assert _ipc(l4, TIDS["monitor"], MsgTag(abi.MONITOR["idle"], 0, 2), list(item))[0] & abi.ERROR_TAG
    string = (8 << 10, 0x5000)  # a string item: type bit 3 clear
    assert _ipc(l4, TIDS["monitor"], MsgTag(abi.MONITOR["idle"], 0, 2), list(string))[0] & abi.ERROR_TAG
    assert _ipc(l4, TIDS["monitor"], MsgTag(abi.MONITOR["idle"], 0, 1), [item[0]])[0] & abi.ERROR_TAG
    assert k.refused == 3


def test_a_monitor_request_with_an_unknown_label_is_refused(l4):
    tag, _ = _ipc(l4, TIDS["monitor"], MsgTag(0x7777))
    assert tag >> 16 == abi.MONITOR_ERROR and l4.kernel.refused == 1 and not l4.m.stopped


def test_a_guest_that_keeps_making_refused_calls_is_killed(l4):
    for _ in range(64):
        _ipc(l4, abi.global_id(0x123, 1), MsgTag(1))
    assert not l4.m.stopped
    _ipc(l4, abi.global_id(0x123, 1), MsgTag(1))
    assert l4.m.stopped and l4.m.ending.reason == "killed"
    assert "kept making refused L4 calls" in l4.m.ending.detail and "does not exist" in l4.m.ending.detail


def test_exchange_registers_on_another_thread_is_refused(l4):
    _enter(l4, "ExchangeRegisters", eax=TIDS["monitor"], ecx=abi.EXREGS["I"], esi=0x1234)
    assert l4.m.uc.reg_read(UC_X86_REG_EAX) == 0
    assert l4.kernel.tcr(l4.vm_thread, "ErrorCode") == abi.E_INVALID_THREAD


def test_exchange_registers_on_itself_reads_and_sets(l4):
    l4.kernel.set_tcr(l4.vm_thread, "UserDefinedHandle", 0)
    _enter(l4, "ExchangeRegisters", eax=l4.vm_thread.local_id, ecx=abi.EXREGS["u"], ebx=0xABCD)
    assert l4.m.uc.reg_read(UC_X86_REG_EAX) == TIDS["vm"]  # a local dest gives the global id
    assert l4.kernel.tcr(l4.vm_thread, "UserDefinedHandle") == 0xABCD


@pytest.mark.parametrize("name", ["ThreadControl", "SpaceControl", "Schedule", "MemoryControl"])
def test_privileged_system_calls_are_refused_to_the_vm(l4, name):
    _enter(l4, name, eax=TIDS["vm"])
    assert l4.m.uc.reg_read(UC_X86_REG_EAX) == 0
    assert l4.kernel.tcr(l4.vm_thread, "ErrorCode") == abi.E_NO_PRIVILEGE and l4.kernel.refused == 1


def test_system_clock_reads_the_machine_clock(l4):
    _enter(l4, "SystemClock")
    assert l4.m.uc.reg_read(UC_X86_REG_EAX) == l4.m.now() // 1000


# -- the mapping database ----------------------------------------------------------------------


def _chain(l4, va: int = 0x7000):
    """monitor -> VM space -> user space, one page."""
    k = l4.kernel
    k.map(l4.monitor_space, Fpage(abi.MONITOR_PHYS + va, 12), l4.vm_space, va)
    k.map(l4.vm_space, Fpage(va, 12), l4.user_space, va)
    return va >> 12


def test_mappings_derive_from_the_resource_managers(l4):
    vpn = _chain(l4)
    m = l4.vm_space.pages[vpn]
    assert m.frame == vpn and m.parent == (l4.monitor_space, (abi.MONITOR_PHYS >> 12) + vpn)
    assert l4.user_space.pages[vpn].parent == (l4.vm_space, vpn)


def test_unmap_revokes_derived_mappings_and_flush_the_callers_own(l4):
    k = l4.kernel
    vpn = _chain(l4)
    l4.vm_space.pages[vpn].referenced = abi.R
    k.set_mr(l4.vm_thread, 0, Fpage(vpn << 12, 12, 7).raw)
    _enter(l4, "Unmap", eax=0, esi=Fpage(vpn << 12, 12, 7).raw, edi=l4.vm_thread.local_id)
    assert vpn not in l4.user_space.pages and vpn in l4.vm_space.pages  # without flush, its own stays
    assert l4.m.uc.reg_read(UC_X86_REG_ESI) & 7 == abi.R  # the reference bits come back in MR0
    _enter(l4, "Unmap", eax=abi.UNMAP_FLUSH, esi=Fpage(vpn << 12, 12, 7).raw, edi=l4.vm_thread.local_id)
    assert vpn not in l4.vm_space.pages
    assert l4.vm_space.pages[abi.KIP_AREA >> 12]  # never the KIP area


def test_unmap_of_write_rights_only_downgrades(l4):
    k = l4.kernel
    vpn = _chain(l4)
    k.unmap(l4.vm_space, Fpage(vpn << 12, 12, abi.W), flush=True)
    assert l4.vm_space.pages[vpn].rights == abi.R | abi.X
    assert l4.user_space.pages[vpn].rights == abi.R | abi.X


def test_nothing_is_mapped_over_the_kip_or_utcb_areas(l4):
    k = l4.kernel
    assert k.map(l4.monitor_space, Fpage(abi.MONITOR_PHYS, 12), l4.vm_space, abi.KIP_AREA) == 0
    assert l4.vm_space.pages[abi.KIP_AREA >> 12].frame == abi.KIP_AREA >> 12


# -- guests that call the kernel themselves ----------------------------------------------------

# KernelInterface (lock; nop: EAX = KIP), the Ipc stub's address from the
# KIP's link, then 70 forged IPCs to a thread that does not exist.
FORGED_IPC = f"""
    lock; nop
    movl {abi.SYSCALL_LINKS["Ipc"]:#x}(%eax), %ebx
    addl %eax, %ebx
    movl $70, %edi
1:  pushl %edi
    movl ${abi.global_id(0x123, 1):#x}, %eax
    movl %eax, %edx
    xorl %ecx, %ecx
    movl $0x10000, %esi
    movl ${abi.VM_UTCB + abi.UTCB_MR0:#x}, %edi
    pushl %ebp
    call *%ebx
    popl %ebp
    popl %edi
    decl %edi
    jnz 1b
"""


def _assemble(tmp_path, text: str) -> bytes:
    """Position-independent code, as bytes (gas, as the corpus is built)."""
    src, obj = tmp_path / "code.S", tmp_path / "code.o"
    src.write_text("    .text\n" + text)
    subprocess.run(["gcc", "-m32", "-c", str(src), "-o", str(obj)], check=True)
    return Elf(obj).section(".text").data


def test_a_guest_making_forged_ipc_in_a_loop_is_killed(tmp_path):
    from tests.test_xen import _run_copied_code

    obs = _run_copied_code(tmp_path, _assemble(tmp_path, FORGED_IPC), "l4")
    assert obs.ending.reason == "killed", obs.ending.describe()
    assert "kept making refused L4 calls" in obs.ending.detail
    assert obs.stats.hypercalls["KernelInterface"] == 2  # the wedge's and the guest's
    assert obs.stats.exits["l4 refusal"] == 65


def test_a_guest_kernels_own_int_0x30_goes_through_its_idt(tmp_path):
    """Only the KIP's stubs enter the kernel: a guest's own unannotated
    ``int $0x30`` reaches its own gate, as on bare hardware."""
    body = """
    GATE 0x30, handler, 0x8E
    lidt idtr
    movl $copy, %esi
    movl $buf, %edi
    movl $2, %ecx
    rep movsb
    call buf
    EXIT 1
handler:
    EXIT 0
    .data
copy: .byte 0xcd, 0x30
    .bss
buf: .fill 8, 1, 0
    .text
"""
    kernel = sitebench.build_bench(tmp_path, "own30", PRELUDE + body)
    obs = sitebench.run(kernel, "l4", digest_low=False)
    assert (obs.ending.reason, obs.ending.code) == ("exit", 0), obs.ending.describe()
