"""The xen backend's own ABI: hypercalls and their refusals, the MMU's
translation and page-table validation, and guests that call the hypervisor
directly.  (What every backend must do is in tests/test_backends.py.)"""
from __future__ import annotations

import struct

import pytest

from backends import BACKENDS
from backends.pc.machine import Machine
from backends.run import boot
from backends.wedged import Kill
from backends.wedged.mmu import Refusal
from backends.xen import XenBackend, abi
from backends.xen.hypercalls import HANDLERS
from backends.xen.mmu import XenMmu
from tests import sitebench
from tests.kernels import PRELUDE
from wedge.layout import HOLE_BASE, REAL_GDT, SHARED_INFO, START_INFO, UFRAME, WEDGE_BASE

XEN = [n for n, cls in BACKENDS.items() if issubclass(cls, XenBackend)]


# -- guests that call the hypervisor themselves ------------------------------------------


def _code_bytes(code: bytes) -> str:
    return ", ".join(f"{b:#04x}" for b in code)


def _run_copied_code(tmp_path, code: bytes, backend: str, data: str = "", fixup: str = ""):
    """A kernel that copies ``code`` into a buffer and calls it: code no
    annotator or rewriter ever saw, as a hostile guest would run it.
    ``fixup`` runs between the copy and the call (patching the copy)."""
    body = f"""
    movl $code, %esi
    movl $buf, %edi
    movl $code_end - code, %ecx
    cld
    rep movsb
    {fixup}
    call buf
    EXIT 0
    .data
code: .byte {_code_bytes(code)}, 0xc3
code_end:
    .align 8
{data}
    .bss
buf: .fill 64, 1, 0
    .text
"""
    kernel = sitebench.build_bench(tmp_path, "hostile", PRELUDE + body)
    return sitebench.run(kernel, backend, digest_low=False)


@pytest.mark.parametrize("backend", XEN)
def test_invalid_hypercall_kills_the_guest(tmp_path, backend):
    obs = _run_copied_code(tmp_path, bytes.fromhex("b8e7030000") + bytes.fromhex("cd82"), backend)  # eax=999; int 0x82
    assert obs.ending.reason == "killed" and "invalid hypercall 999" in obs.ending.detail


@pytest.mark.parametrize("backend", XEN)
def test_native_sensitive_instruction_in_copied_code_is_an_escape(tmp_path, backend):
    obs = _run_copied_code(tmp_path, bytes.fromhex("fa"), backend)  # cli
    assert obs.ending.reason == "escape" and "cli" in obs.ending.detail


# mmu_update(req, 1, NULL, DOMID_SELF): mov eax, 1; mov ebx, req; mov ecx, 1;
# xor edx, edx; mov esi, 0x7ff0; int 0x82.  The address of req is stored into
# the copied code at run time (buf + 6, the operand of "mov ebx").
MMU_UPDATE = bytes.fromhex("b801000000" "bb00000000" "b901000000" "31d2" "bef07f0000" "cd82")


def _mmu_update(tmp_path, ptr: int, val: int, backend: str = "xen"):
    return _run_copied_code(tmp_path, MMU_UPDATE, backend, f"req: .quad {ptr:#x}, {val:#x}",
                            fixup="movl $req, buf + 6")  # fmt: skip


@pytest.mark.parametrize("frame", [0x4000, 0xFFC00])  # beyond the guest's 32 MiB; the wedge in the hole
def test_mmu_update_mapping_a_foreign_frame_kills_the_guest(tmp_path, frame):
    obs = _mmu_update(tmp_path, 0x2000, frame << 12 | 1)
    assert obs.ending.reason == "killed", obs.ending.describe()
    assert f"maps frame {frame:#x}, which the guest does not own" in obs.ending.detail


def test_mmu_update_of_memory_outside_the_guest_kills_it(tmp_path):
    obs = _mmu_update(tmp_path, 0xFFC00000, 0x5003)
    assert obs.ending.reason == "killed" and "not a guest frame" in obs.ending.detail


@pytest.mark.parametrize("backend", XEN)
def test_valid_mmu_update_is_applied(tmp_path, backend):
    """The same raw call on a frame the guest owns goes through."""
    obs = _mmu_update(tmp_path, 0x2000, 0x5003, backend)
    assert (obs.ending.reason, obs.ending.code) == ("exit", 0), obs.ending.describe()


# -- the MMU's translation, unit by unit ---------------------------------------------------


class _Owner:
    """The little of a backend the MMU asks for."""

    def __init__(self, user: bool = False) -> None:
        self.m = Machine(ram_size=8 << 20)
        self.user = user

    def in_user_mode(self) -> bool:
        return self.user


def _mmu(user: bool = False) -> tuple[XenMmu, _Owner]:
    owner = _Owner(user)
    return XenMmu(owner), owner


PD, PT = 0x10000, 0x11000


def _map(mmu: XenMmu, entries: dict[int, int], pde_flags: int = 7, pin: bool = True) -> None:
    """Paging on with one page table for the first 4 MiB: va page -> PTE
    (pinned, as the hypervisor would, unless ``pin`` is off)."""
    uc = mmu.uc
    uc.mem_write(PD, b"\0" * 4096)
    uc.mem_write(PT, b"\0" * 4096)
    uc.mem_write(PD, struct.pack("<I", PT | pde_flags))
    for page, pte in entries.items():
        uc.mem_write(PT + 4 * page, struct.pack("<I", pte))
    if pin:
        assert mmu.pin(PD) is None
    else:
        mmu.base = PD
    mmu.set_mode(True, True, False)


def _pte(mmu: XenMmu, page: int) -> int:
    return struct.unpack("<I", mmu.uc.mem_read(PT + 4 * page, 4))[0]


def test_translate_without_paging_is_the_identity_within_ram():
    mmu, _ = _mmu()
    assert mmu.translate(0x123456, True, False)[0] == 0x123000
    r = mmu.translate(0x900000, False, False)  # beyond 8 MiB
    assert isinstance(r, Refusal) and r.why == "unmapped"


def test_translate_walks_the_guests_page_tables_and_sets_a_and_d():
    mmu, _ = _mmu()
    _map(mmu, {0x20: 0x345000 | 7, 0x21: 0x346000 | 5})
    pa, perms = mmu.translate(0x20ABC, False, False, update=True)
    assert pa == 0x345000 and not perms & 2  # a read fill is read-only, so the first write comes back
    assert _pte(mmu, 0x20) & 0x60 == 0x20  # accessed, not dirty
    pa, perms = mmu.translate(0x20ABC, True, False, update=True)
    assert perms & 2 and _pte(mmu, 0x20) & 0x60 == 0x60
    assert mmu.translate(0x21000, False, False, update=False)[0] == 0x346000
    assert _pte(mmu, 0x21) & 0x20 == 0  # a hypervisor probe sets no bits


def test_translate_refusals_carry_the_hardware_error_code():
    mmu, owner = _mmu()
    _map(mmu, {0x20: 0x345000 | 5, 0x21: 0x346000 | 3})  # 0x20 user read-only, 0x21 supervisor writable
    absent = mmu.translate(0x22000, False, False)
    assert (absent.why, absent.error_code) == ("page", 0)
    ro = mmu.translate(0x20000, True, False)  # CR0.WP: supervisor writes fault too
    assert (ro.why, ro.error_code) == ("page", 3)
    owner.user = True
    sup = mmu.translate(0x21000, False, True)
    assert (sup.why, sup.error_code) == ("page", 5)
    mmu.wp = False
    assert not isinstance(mmu.translate(0x20000, True, False), Refusal)  # WP clear: the kernel may write


def test_translate_refuses_frames_the_guest_does_not_own():
    mmu, _ = _mmu()
    _map(mmu, {0x20: (0x900 << 12) | 7}, pin=False)  # frame past the 8 MiB of RAM (pinning would refuse it)
    r = mmu.translate(0x20000, False, False)
    assert (r.why, r.frame) == ("foreign", 0x900)


def test_the_hole_is_there_in_kernel_mode_only():
    mmu, _ = _mmu()
    _map(mmu, {})
    assert mmu.translate(WEDGE_BASE, True, False)[0] == WEDGE_BASE  # the wedge: kernel read/write
    assert isinstance(mmu.translate(START_INFO, True, False), Refusal)  # start info: read-only
    assert isinstance(mmu.translate(REAL_GDT, True, False), Refusal)  # hypervisor-private: read-only
    for va in (WEDGE_BASE, SHARED_INFO, START_INFO):
        r = mmu.translate(va, False, True)
        assert isinstance(r, Refusal) and r.why == "hole"
    # The CPU reads the real descriptor tables for user-mode segment loads.
    assert mmu.translate(REAL_GDT, False, True)[0] == REAL_GDT
    assert isinstance(mmu.translate(REAL_GDT, True, True), Refusal)


def test_pinned_page_tables_are_write_protected():
    mmu, _ = _mmu()
    _map(mmu, {0x10: PD | 3, 0x11: PT | 3, 0x20: 0x345000 | 3})
    assert mmu.protected == {PD >> 12: "pt", PT >> 12: "pt"}
    r = mmu.translate(PT, True, False)
    assert isinstance(r, Refusal) and r.why == "protected" and r.frame == PT >> 12
    assert not isinstance(mmu.translate(PT, False, False), Refusal)  # reading is fine
    mmu.writable_frame = PT >> 12  # the one frame a single step may write
    assert not isinstance(mmu.translate(PT, True, False), Refusal)


@pytest.mark.parametrize("pde,reason", [
    ((0x900 << 12) | 7, "not the guest's"),  # a page table outside guest RAM
    (None, "maps frame 0x900"),  # a PTE that maps a frame outside guest RAM
])  # fmt: skip
def test_check_table_refuses_what_a_guest_may_not_map(pde, reason):
    mmu, _ = _mmu()
    uc = mmu.uc
    uc.mem_write(PD, b"\0" * 4096)
    uc.mem_write(PT, b"\0" * 4096)
    if pde is None:
        uc.mem_write(PD, struct.pack("<I", PT | 7))
        uc.mem_write(PT + 8, struct.pack("<I", (0x900 << 12) | 7))
    else:
        uc.mem_write(PD, struct.pack("<I", pde))
    assert reason in mmu.check_table(PD)


def test_check_table_refuses_a_mapping_of_the_hole():
    mmu, _ = _mmu()
    mmu.uc.mem_write(PD, b"\0" * 4092 + struct.pack("<I", PT | 7))
    mmu.uc.mem_write(PT, b"\0" * 4096)
    assert "hypervisor hole" in mmu.check_table(PD)
    assert mmu.check_table(0x900000) == "page directory 0x900000 is not a guest frame"


# -- hypercall handlers: what they refuse ---------------------------------------------------


@pytest.fixture
def xen(tmp_path):
    """A xen backend attached to a machine with a small kernel loaded."""
    kernel = sitebench.build_bench(tmp_path, "k", PRELUDE + "    EXIT 0\n")
    machine, be = boot(kernel, "xen")
    machine.backend = be
    be.attach(machine)
    return be


def _call(be, name: str, *args: int):
    return HANDLERS[abi.HC[name]][1](be, *args, *([0] * (5 - len(args))))


SCRATCH = 0x3000  # guest memory the tests fill with hypercall arguments


def test_set_trap_table_refuses_ring_0_and_unterminated_tables(xen):
    uc = xen.m.uc
    uc.mem_write(SCRATCH, struct.pack("<BBHI", 14, 0, 0x08, 0x1234) + b"\0" * 8)  # ring-0 CS
    with pytest.raises(Kill, match="ring-0 code selector"):
        _call(xen, "set_trap_table", SCRATCH)
    uc.mem_write(SCRATCH, struct.pack("<BBHI", 14, 0, 0x09, 0x1234) * 300)
    with pytest.raises(Kill, match="not terminated"):
        _call(xen, "set_trap_table", SCRATCH)
    with pytest.raises(Kill, match="not mapped"):
        _call(xen, "set_trap_table", HOLE_BASE - 4096 * 1024)  # past guest RAM, unmapped


def test_set_callbacks_refuses_ring_0(xen):
    with pytest.raises(Kill, match="ring 0"):
        _call(xen, "set_callbacks", 0x08, 0x1234)


def test_set_gdt_refuses_bad_sizes_and_unreadable_tables(xen):
    assert _call(xen, "set_gdt", SCRATCH, 0) == -abi.EINVAL
    assert _call(xen, "set_gdt", SCRATCH, xen.gdt_capacity() + 1) == -abi.EINVAL
    assert _call(xen, "set_gdt", 0x7FFFF000, 2) == -abi.EFAULT  # beyond guest RAM
    assert _call(xen, "update_descriptor", 0x7FFFF000) == -abi.EINVAL  # not in the shadowed tables


def test_mmu_update_refuses_unknown_request_kinds(xen):
    xen.m.uc.mem_write(SCRATCH, struct.pack("<QQ", 0x2000 | 1, 0))  # MMU_MACHPHYS_UPDATE: not modelled
    assert _call(xen, "mmu_update", SCRATCH, 1, 0, 0x7FF0) == -abi.ENOSYS


def test_update_va_mapping_needs_paging(xen):
    assert _call(xen, "update_va_mapping", 0x1000, 0x1003, 0, 0) == -abi.EINVAL


def test_console_io_refuses_other_commands_and_huge_writes(xen):
    assert _call(xen, "console_io", 1, 4, SCRATCH) == -abi.EINVAL
    assert _call(xen, "console_io", abi.CONSOLEIO_write, 5000, SCRATCH) == -abi.EINVAL
    xen.m.uc.mem_write(SCRATCH, b"hi")
    assert _call(xen, "console_io", abi.CONSOLEIO_write, 2, SCRATCH) == 2 and xen.console == b"hi"


def test_mmuext_op_refuses_unknown_commands_and_bad_tables(xen):
    xen.m.uc.mem_write(SCRATCH, struct.pack("<III", 99, 0, 0))
    with pytest.raises(Kill, match="command 99"):
        _call(xen, "mmuext_op", SCRATCH, 1, 0, 0x7FF0)
    xen.m.uc.mem_write(SCRATCH, struct.pack("<III", abi.MMUEXT["new_baseptr"], 0x90000, 0))  # past guest RAM
    with pytest.raises(Kill, match="new page directory refused"):
        _call(xen, "mmuext_op", SCRATCH, 1, 0, 0x7FF0)
    xen.m.uc.mem_write(SCRATCH, struct.pack("<III", abi.MMUEXT["set_ldt"], 0x7FFFF000, 4))
    with pytest.raises(Kill, match="LDT"):
        _call(xen, "mmuext_op", SCRATCH, 1, 0, 0x7FF0)
    xen.m.uc.mem_write(SCRATCH, struct.pack("<III", abi.MMUEXT["afterburn_paging"], 0x80000001, 0x20))
    with pytest.raises(Kill, match="PAE"):
        _call(xen, "mmuext_op", SCRATCH, 1, 0, 0x7FF0)


def test_sched_op_event_channel_op_physdev_op_refuse_what_they_do_not_know(xen):
    with pytest.raises(Kill, match="sched_op command 7"):
        _call(xen, "sched_op", 7, 0)
    assert _call(xen, "event_channel_op", 77, 0) == -abi.ENOSYS
    assert _call(xen, "physdev_op", 0x1FF, 0) == -abi.ENOSYS


def test_port_io_refuses_odd_sizes(xen):
    from wedge.layout import PIO

    xen.m.uc.mem_write(SCRATCH, PIO.pack(port=0x80, size=3, flags=0))
    with pytest.raises(Kill, match="size 3"):
        _call(xen, "physdev_op", abi.PHYSDEVOP["afterburn_pio"], SCRATCH)


def test_iret_refuses_kernel_selectors(xen):
    xen.m.uc.mem_write(SCRATCH, UFRAME.pack(cs=0x08, ss=0x10, eip=0x1000, esp=0x2000, eflags=0x202))
    with pytest.raises(Kill, match="return to user mode with selectors 0x8:0x10"):
        _call(xen, "iret", SCRATCH)
