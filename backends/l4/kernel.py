"""A model of an L4 X.2 microkernel (L4Ka::Pistachio on IA-32).

What it keeps, as the real kernel does: threads (global ids, UTCBs, pager
and exception-handler TCRs, a state), address spaces made of mappings
(each derived from the mapping it was mapped from, so Unmap revokes
recursively), and IPC.  Guest threads (the VM thread that runs the guest
kernel and the wedge, the user thread that runs guest user mode) execute on
the emulated CPU and enter the kernel through the KIP's system-call stubs;
server threads (the monitor, its IRQ thread, the resource manager) are
Python objects whose ``receive(sender, msg)`` is the IPC receive.

One CPU: at most one guest thread runs.  A guest thread that blocks in IPC
(the VM thread while guest user mode runs) keeps its CPU context here until
a server replies.  docs/wedge.md ("l4") lists where this departs from
Pistachio.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from unicorn.x86_const import (
    UC_X86_REG_EAX, UC_X86_REG_EBP, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDI, UC_X86_REG_EDX,
    UC_X86_REG_EIP, UC_X86_REG_ESI,
)  # fmt: skip

from wedge.layout import HOLE_BASE

from . import abi
from .abi import Fpage, MsgTag


@dataclass
class Message:
    """MR0's tag and MR1..MRn."""

    tag: MsgTag
    words: list[int] = field(default_factory=list)

    @property
    def label(self) -> int:
        return self.tag.label


@dataclass
class Mapping:
    frame: int  # physical page number
    rights: int  # abi.R | abi.W | abi.X
    parent: tuple[Space, int] | None = None  # (space, vpn) it was mapped from
    children: list[tuple[Space, int]] = field(default_factory=list)
    referenced: int = 0  # reference bits for Unmap's report: R (accessed), W (written)


class Space:
    """An address space: virtual page number -> mapping."""

    def __init__(self, name: str, privileged: bool = False) -> None:
        self.name = name
        self.privileged = privileged
        self.pages: dict[int, Mapping] = {}
        self.kip_area: Fpage | None = None
        self.utcb_area: Fpage | None = None

    def __repr__(self) -> str:
        return f"Space({self.name})"


@dataclass
class Thread:
    tid: int
    name: str
    space: Space
    server: object | None = None  # a Python server thread: has receive(sender, msg)
    utcb: int | None = None  # UtcbLocation (guest threads)
    pager: int = abi.NILTHREAD
    exception_handler: int = abi.NILTHREAD
    waiting_for: int | None = None  # blocked in a call, waiting for this thread's reply
    context: object | None = None  # the saved CPU context while off the CPU

    @property
    def local_id(self) -> int:
        return (self.utcb or 0) + abi.UTCB_MR0


class L4Kernel:
    def __init__(self, backend) -> None:
        self.b = backend
        self.uc = backend.m.uc
        self.stats = backend.m.stats
        self.threads: dict[int, Thread] = {}
        self.spaces: dict[str, Space] = {}
        self.current: Thread | None = None  # the guest thread on the CPU
        self.kip_stubs: dict[int, str] = {}  # offset in the KIP of an int -> syscall name
        self.refused = 0

    # -- objects -----------------------------------------------------------------------

    def space(self, name: str, privileged: bool = False) -> Space:
        s = self.spaces.setdefault(name, Space(name, privileged))
        return s

    def thread(self, tid: int, name: str, space: Space, **kw) -> Thread:
        t = Thread(tid, name, space, **kw)
        self.threads[tid] = t
        return t

    def count(self, what: str) -> None:
        self.stats.hypercalls[what] += 1

    # -- the KIP ------------------------------------------------------------------------------

    def build_kip(self, kip_phys: int) -> None:
        """The kernel interface page: X.2 fields, and a stub per system call
        (``int $0x30`` for IPC, ``int $0x31`` for the rest, then ``ret``)."""
        page = bytearray(4096)
        fields = {"magic": abi.KIP_MAGIC, "api_version": abi.API_VERSION, "api_flags": abi.API_FLAGS,
                  "utcb_area_info": abi.UTCB_AREA_INFO, "kip_area_info": abi.KIP_AREA_INFO, "proc_desc": 0x120,
                  "thread_info": (abi.SYSTEM_BASE + 32) << 20 | abi.SYSTEM_BASE << 8 | 17,
                  "page_info": abi.PAGE_INFO}  # fmt: skip
        for name, value in fields.items():
            struct.pack_into("<I", page, abi.KIP_OFF[name], value)
        stub = 0x200
        for name, link in abi.SYSCALL_LINKS.items():
            vector = abi.IPC_VECTOR if name in ("Ipc", "Lipc") else abi.SYSCALL_VECTOR
            page[stub : stub + 3] = bytes([0xCD, vector, 0xC3])
            struct.pack_into("<I", page, link, stub)
            self.kip_stubs[stub + 2] = name  # the kernel dispatches by the EIP after the int
            stub += 8
        self.uc.mem_write(kip_phys, bytes(page))

    # -- registers of the thread on the CPU ----------------------------------------------

    def regs(self) -> dict[str, int]:
        r = self.uc.reg_read
        return {"eax": r(UC_X86_REG_EAX), "ecx": r(UC_X86_REG_ECX), "edx": r(UC_X86_REG_EDX), "ebx": r(UC_X86_REG_EBX),
                "esi": r(UC_X86_REG_ESI), "edi": r(UC_X86_REG_EDI), "ebp": r(UC_X86_REG_EBP),
                "eip": r(UC_X86_REG_EIP)}  # fmt: skip

    def set_regs(self, **values: int) -> None:
        names = {"eax": UC_X86_REG_EAX, "ecx": UC_X86_REG_ECX, "edx": UC_X86_REG_EDX, "ebx": UC_X86_REG_EBX,
                 "esi": UC_X86_REG_ESI, "edi": UC_X86_REG_EDI, "ebp": UC_X86_REG_EBP, "eip": UC_X86_REG_EIP}  # fmt: skip
        for name, value in values.items():
            self.uc.reg_write(names[name], value & 0xFFFFFFFF)

    # -- the UTCB of a guest thread (kernel-owned memory in the hole: physical = virtual) ------

    def mr(self, t: Thread, i: int) -> int:
        return struct.unpack("<I", self.uc.mem_read(t.local_id + 4 * i, 4))[0]

    def set_mr(self, t: Thread, i: int, value: int) -> None:
        self.uc.mem_write(t.local_id + 4 * i, struct.pack("<I", value & 0xFFFFFFFF))

    def tcr(self, t: Thread, name: str) -> int:
        return self.mr(t, abi.TCR[name])

    def set_tcr(self, t: Thread, name: str, value: int) -> None:
        self.set_mr(t, abi.TCR[name], value)

    def write_utcb(self, t: Thread) -> None:
        """What thread activation leaves in the UTCB."""
        self.set_tcr(t, "MyGlobalId", t.tid)
        self.set_tcr(t, "Pager", t.pager)
        self.set_tcr(t, "ExceptionHandler", t.exception_handler)
        self.set_tcr(t, "ProcessorNo", 0)

    # -- the mapping database ---------------------------------------------------------------

    def lookup(self, space: Space, va: int) -> Mapping | None:
        return space.pages.get(va >> 12)

    def map(self, src: Space, fpage: Fpage, dst: Space, dst_base: int, grant: bool = False) -> int:
        """Map (or grant) what ``src`` has in ``fpage`` to ``dst`` at
        ``dst_base`` (the receive window is the whole space); returns pages.
        Rights are the fpage's and never more than the sender's own."""
        done = 0
        for i in range(fpage.size >> 12):
            svpn = (fpage.base >> 12) + i
            m = src.pages.get(svpn)
            if m is None:
                continue
            dvpn = ((dst_base & ~(fpage.size - 1)) >> 12) + i
            if self._protected(dst, dvpn << 12):
                continue
            old = dst.pages.get(dvpn)
            rights = fpage.rights & m.rights
            if old is not None and old.frame == m.frame and old.parent == (src, svpn):
                old.rights |= rights
                continue
            if old is not None:
                self._remove(dst, dvpn)
            if grant:
                self._remove(src, svpn, keep_children=True)
                dst.pages[dvpn] = Mapping(m.frame, rights, m.parent, m.children)
                if m.parent is not None:
                    ps, pv = m.parent
                    ps.pages[pv].children.append((dst, dvpn))
            else:
                dst.pages[dvpn] = Mapping(m.frame, rights, (src, svpn))
                m.children.append((dst, dvpn))
            done += 1
        return done

    def _protected(self, space: Space, va: int) -> bool:
        """The KIP and UTCB areas are the kernel's: nothing is mapped over them."""
        return any(a is not None and a.base <= va < a.end for a in (space.kip_area, space.utcb_area))

    def _remove(self, space: Space, vpn: int, keep_children: bool = False) -> int:
        m = space.pages.pop(vpn, None)
        if m is None:
            return 0
        ref = m.referenced
        if m.parent is not None:
            ps, pv = m.parent
            parent = ps.pages.get(pv)
            if parent is not None and (space, vpn) in parent.children:
                parent.children.remove((space, vpn))
        if not keep_children:
            for cs, cv in list(m.children):
                ref |= self._remove(cs, cv)
        return ref

    def unmap(self, space: Space, fpage: Fpage, flush: bool) -> int:
        """Revoke ``fpage``'s rights from the mappings derived from
        ``space``'s (and, with ``flush``, from its own); returns the
        accumulated reference bits, reset."""
        ref = 0
        end = min(fpage.end, 1 << 32)
        for vpn in [v for v in space.pages if fpage.base >> 12 <= v < end >> 12]:
            if self._protected(space, vpn << 12):
                continue
            m = space.pages[vpn]
            ref |= m.referenced
            m.referenced = 0
            for cs, cv in list(m.children):
                ref |= self._revoke(cs, cv, fpage.rights)
            if flush:
                if fpage.rights & abi.W and not fpage.rights & abi.R:
                    m.rights &= ~abi.W
                elif fpage.rights & abi.R:
                    ref |= self._remove(space, vpn)
        self.b.mmu.flush()
        return ref

    def _revoke(self, space: Space, vpn: int, rights: int) -> int:
        m = space.pages.get(vpn)
        if m is None:
            return 0
        if rights & abi.R:  # read revoked: the mapping goes, with what derives from it
            return self._remove(space, vpn)
        ref = m.referenced
        m.referenced = 0
        if rights & abi.W:
            m.rights &= ~abi.W
        for cs, cv in list(m.children):
            ref |= self._revoke(cs, cv, rights)
        return ref

    # -- system calls from the guest thread on the CPU -----------------------------------------

    def refuse(self, what: str, error: int | None = None) -> None:
        """A malformed or forged call: refused with X.2's error, counted; a
        guest that keeps at it is killed."""
        self.refused += 1
        self.stats.exits["l4 refusal"] += 1
        t = self.current
        if error is not None and t is not None:
            self.set_tcr(t, "ErrorCode", error)
        if self.refused > REFUSAL_LIMIT:
            self.b.m.stop("killed", f"the guest kept making refused L4 calls; the last: {what}")

    def syscall(self, vector: int) -> None:
        t = self.current
        r = self.regs()
        name = self.kip_stubs.get(r["eip"] - abi.KIP_AREA)
        if name is None:
            # Only the KIP's stubs enter the kernel (a departure for int 0x30,
            # which Pistachio takes from anywhere): an int elsewhere is the
            # thread's own business, an exception for its handler, so a guest
            # kernel's own use of the vector behaves as it does natively.
            self.b.deliver_trap(vector, None, 2)
            return
        self.count(name)
        if vector == abi.IPC_VECTOR:
            self.ipc(t, r)
            return
        getattr(self, f"sys_{name.lower()}", self.sys_unknown)(t, r)

    def sys_unknown(self, t: Thread, r: dict) -> None:
        """ProcessorControl and MemoryControl: Pistachio's ia32 kernel does
        not dispatch the first; the second needs privilege."""
        self.refuse("ProcessorControl/MemoryControl", abi.E_NO_PRIVILEGE)
        self.set_regs(eax=0)

    def sys_threadcontrol(self, t: Thread, r: dict) -> None:
        if not t.space.privileged:
            self.refuse("ThreadControl without privilege", abi.E_NO_PRIVILEGE)
            self.set_regs(eax=0)

    def sys_spacecontrol(self, t: Thread, r: dict) -> None:
        if not t.space.privileged:
            self.refuse("SpaceControl without privilege", abi.E_NO_PRIVILEGE)
            self.set_regs(eax=0, ecx=0)

    def sys_schedule(self, t: Thread, r: dict) -> None:
        self.refuse("Schedule: the VM thread is not its own scheduler", abi.E_NO_PRIVILEGE)
        self.set_regs(eax=0)

    def sys_threadswitch(self, t: Thread, r: dict) -> None:
        """One CPU and nothing else runnable: the thread keeps running."""

    def sys_systemclock(self, t: Thread, r: dict) -> None:
        us = self.b.m.now() // 1000
        self.set_regs(eax=us & 0xFFFFFFFF, edx=us >> 32)

    def sys_exchangeregisters(self, t: Thread, r: dict) -> None:
        """Only threads of the caller's own space may be examined; the VM
        thread is alone in its space, so the only valid target is itself."""
        dest = r["eax"]
        target = self.threads.get(dest) if abi.is_global(dest) else (t if dest == t.local_id else None)
        if target is not t:
            self.refuse(f"ExchangeRegisters on {dest:#x}", abi.E_INVALID_THREAD)
            self.set_regs(eax=0, ecx=0, edx=0, esi=0, edi=0, ebx=0, ebp=0)
            return
        control = r["ecx"]
        old = {"ecx": 0, "edx": self.b.sp(), "esi": self.b.ip(), "edi": self.b.flags(),
               "ebx": self.tcr(t, "UserDefinedHandle"), "ebp": t.pager}  # fmt: skip
        if control & abi.EXREGS["u"]:
            self.set_tcr(t, "UserDefinedHandle", r["ebx"])
        if control & abi.EXREGS["p"]:
            t.pager = r["ebp"]
            self.set_tcr(t, "Pager", r["ebp"])
        if control & (abi.EXREGS["S"] | abi.EXREGS["I"] | abi.EXREGS["F"]):
            # A thread moving its own SP/IP under itself: the call returns there.
            self.b.exregs(sp=r["edx"] if control & abi.EXREGS["S"] else None,
                          ip=r["esi"] if control & abi.EXREGS["I"] else None,
                          flags=r["edi"] if control & abi.EXREGS["F"] else None)  # fmt: skip
        self.set_regs(eax=t.tid if not abi.is_global(dest) else t.local_id, **old)

    def sys_unmap(self, t: Thread, r: dict) -> None:
        control = r["eax"]
        k = control & 0x3F
        self.set_mr(t, 0, r["esi"])
        for i in range(k + 1):
            fp = Fpage.decode(self.mr(t, i))
            if fp is None:
                continue
            if fp.log2 < abi.MIN_FPAGE:  # Pistachio rounds it up (with a warning)
                fp = Fpage(fp.base & ~0xFFF, abi.MIN_FPAGE, fp.rights)
            ref = self.unmap(t.space, fp, bool(control & abi.UNMAP_FLUSH))
            self.set_mr(t, i, (fp.raw & ~7) | ref)
        self.set_regs(esi=self.mr(t, 0))

    # -- IPC --------------------------------------------------------------------------------

    def ipc(self, t: Thread, r: dict) -> None:
        """Ipc from a guest thread: a send to a server (which answers, or
        keeps the caller waiting when it calls for a reply), or a receive."""
        to, from_spec, tag = r["eax"], r["edx"], MsgTag.decode(r["esi"])
        self.set_mr(t, 0, r["esi"])
        if to == abi.NILTHREAD:
            self.refuse("receive-only IPC: no server sends to the VM unasked", abi.ipc_error(abi.IPC_TIMEOUT, True))
            self.ipc_error_return()
            return
        dest = self.threads.get(to)
        if dest is None or dest.server is None:
            self.refuse(f"IPC to {to:#x}, which does not exist", abi.ipc_error(abi.IPC_NO_PARTNER))
            self.ipc_error_return()
            return
        if tag.u + tag.t > abi.MRS - 1:
            self.refuse(f"IPC with {tag.u} untyped and {tag.t} typed words", abi.ipc_error(abi.IPC_OVERFLOW))
            self.ipc_error_return()
            return
        words = [self.mr(t, i) for i in range(1, 1 + tag.u + tag.t)]
        bad = self.bad_items(t, words[tag.u :])
        if bad is not None:
            self.refuse(bad, abi.ipc_error(abi.IPC_OVERFLOW, offset=4 * tag.u))
            self.ipc_error_return()
            return
        msg = Message(tag, words)
        self.stats.hypercalls[f"ipc {self.b.label_name(dest, tag.label)}"] += 1
        self.stats.exits["ipc"] += 1
        waiting = from_spec != abi.NILTHREAD
        if waiting:
            t.waiting_for = dest.tid
        reply = dest.server.receive(t, msg)
        if reply is not None and waiting and not self.b.m.stopped:
            self.deliver_reply(t, dest, reply)

    def bad_items(self, t: Thread, typed: list[int]) -> str | None:
        """Why the typed items of ``t``'s message cannot be transferred, or
        None.  No server here accepts mappings from a guest thread (their
        receive windows are nil, which X.2 answers with message overflow),
        and the reasons name the worse forgeries first."""
        if len(typed) % 2:
            return "a typed item cut in half"
        for i in range(0, len(typed), 2):
            w0, w1 = typed[i], typed[i + 1]
            if abi.item_type(w0) not in (abi.MAP_ITEM, abi.GRANT_ITEM):
                return "a string item (no server accepts strings)"
            fp = Fpage.decode(w1)
            if fp is None or fp.log2 < abi.MIN_FPAGE:
                return f"a map item with an invalid fpage {w1:#x}"
            vpns = range(fp.base >> 12, min(fp.end, 1 << 32) >> 12)
            held = [v for v in vpns if v in t.space.pages] if fp.size <= 1 << 22 else \
                [v for v in t.space.pages if v in vpns]  # fmt: skip
            if not held:
                return f"a map item for fpage {fp.base:#x}/{fp.log2}, which {t.name} does not own"
            if any(self._protected(t.space, v << 12) or t.space.pages[v].frame >= HOLE_BASE >> 12 for v in held):
                return f"a map item for the monitor's memory at {fp.base:#x}/{fp.log2}"
            return f"a map item to a server that accepts none ({fp.base:#x}/{fp.log2})"
        return None

    def ipc_error_return(self) -> None:
        self.set_regs(esi=abi.ERROR_TAG, eax=abi.NILTHREAD)

    def deliver_reply(self, t: Thread, sender: Thread, msg: Message) -> None:
        """The receive phase of ``t``'s call: the message lands in its MRs and
        in the registers Pistachio's stub returns (EAX from, ESI MR0, EBX MR1,
        EBP MR2).  ``t`` must be the thread on the CPU."""
        t.waiting_for = None
        if len(msg.words) > abi.MRS - 1:
            self.set_tcr(t, "ErrorCode", abi.ipc_error(abi.IPC_OVERFLOW, True))
            self.ipc_error_return()
            return
        self.set_mr(t, 0, msg.tag.raw)
        for i, w in enumerate(msg.words, 1):
            self.set_mr(t, i, w)
        mr = lambda i: msg.words[i - 1] if i <= len(msg.words) else self.mr(t, i)  # noqa: E731
        self.set_regs(eax=sender.tid, esi=msg.tag.raw, ebx=mr(1), ebp=mr(2), edi=t.local_id)


REFUSAL_LIMIT = 64
