"""The emulated PC every backend runs on: Unicorn CPU, RAM, ISA devices.

The run loop is shaped by what Unicorn 2.1.4 really does
(../research/unicorn.md):

* the guest runs in slices, ``emu_start(count=N)``, sized to end at the next
  device deadline, so timer interrupts land at deterministic instructions;
  external interrupts are injected between slices, never from inside an
  IN/OUT hook (EIP writes there are late);
* exceptions and ``int n`` arrive in a hook with nothing pushed; the backend
  gets first refusal, then :meth:`Cpu.deliver` delivers through the guest
  IDT; ``old_exception`` is reset on every one, so nested faults work;
* ``hlt`` ends ``emu_start`` silently: the retired-instruction counter tells
  it apart from the end of a slice; the machine then skips virtual time to
  the next device deadline (hlt with IF=0 ends the run as halted);
* the interrupt shadow after ``sti``/``mov ss`` is honoured before injecting.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from unicorn import (
    UC_ARCH_X86, UC_HOOK_BLOCK, UC_HOOK_INSN, UC_HOOK_INSN_INVALID, UC_HOOK_INTR, UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ_UNMAPPED, UC_HOOK_MEM_WRITE_UNMAPPED, UC_MODE_32, Uc, UcError,
)  # fmt: skip
from unicorn.x86_const import (
    UC_X86_INS_IN, UC_X86_INS_OUT, UC_X86_REG_CR0, UC_X86_REG_CR2, UC_X86_REG_CR3, UC_X86_REG_CR4,
    UC_X86_REG_CS, UC_X86_REG_DS, UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_EFLAGS, UC_X86_REG_EIP,
    UC_X86_REG_ES, UC_X86_REG_ESP, UC_X86_REG_FS, UC_X86_REG_GDTR, UC_X86_REG_GS, UC_X86_REG_IDTR, UC_X86_REG_SS,
)  # fmt: skip

from .bus import PortBus
from .clock import VirtualClock
from .cmos import Cmos
from .cpu import HAS_ERROR_CODE, Cpu, TripleFault, vector_name
from .loader import (
    BOOT_CS, BOOT_DS, BOOT_GDT, BOOT_GDT_BYTES, BOOT_STACK, MB1_BOOT_MAGIC, MBI_ADDR, Image, bios_data_area,
    multiboot_info,
)  # fmt: skip
from .misc import DebugExit, PostPort
from .observation import Ending, Observation, Stats
from .pic import PicPair
from .pit import Pit
from .uart import Uart16550
from .uc_ext import InsnCounter, hook_rdtsc, translate

DEFAULT_RAM = 32 << 20
MAX_SLICE = 200_000  # instructions between looks at interrupts and wall time
IDLE_EVENTS = 100_000  # device events a halted CPU waits through before giving up
HLT = 0xF4


@dataclass
class Limits:
    max_insns: int | None = None
    timeout: float | None = None  # wall-clock seconds


class MachineStop(Exception):
    """Raised inside the run loop to end the run."""

    def __init__(self, ending: Ending) -> None:
        super().__init__(ending.describe())
        self.ending = ending


class Machine:
    """A 32-bit PC: RAM from 0, the ISA devices, and the run loop."""

    def __init__(self, ram_size: int = DEFAULT_RAM, ns_per_insn: int = 10,
                 on_serial: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.ram_size = ram_size
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self.uc.mem_map(0, ram_size)
        self.cpu = Cpu(self.uc)
        self.counter = InsnCounter(self.uc)
        self.clock = VirtualClock(ns_per_insn)
        self.stats = Stats()
        self.bus = PortBus(on_unknown=lambda d, port, size, value: self.stats.unknown_ports.update({f"{d} {port:#x}": 1}))
        self.pic = PicPair()
        self.pit = Pit(self.clock, irq=lambda level: self.pic.set_irq(0, level))
        self.uart = Uart16550(self.clock, irq=lambda level: self.pic.set_irq(4, level), on_tx=on_serial)
        self.cmos = Cmos(self.clock, irq=lambda level: self.pic.set_irq(8, level), ram_size=ram_size)
        self.debug_exit = DebugExit(on_exit=self._on_debug_exit)
        self.post = PostPort()
        for dev in (self.pic, self.pit, self.uart, self.cmos, self.debug_exit, self.post):
            self.bus.attach(dev)
        for dev in (self.pit, self.uart, self.cmos):
            self.clock.register(dev)
        self._irq_lines = ((self.pit, 0), (self.uart, 4), (self.cmos, 8))
        self.image: Image | None = None
        self.backend = None
        self._stop: Ending | None = None
        self._slice_start = 0
        self._unmapped: str | None = None
        self._watch_hook = None
        self._ended_early = False
        self._watch_armed = True
        self._digest_ranges: dict[str, tuple[int, int]] = {}
        self._spans: list[tuple[int, int, int]] = []
        self._span_starts: list[int] = []
        self._install_hooks()
        self._firmware_state()

    # -- set-up ----------------------------------------------------------------

    def _firmware_state(self) -> None:
        """Leave the devices as SeaBIOS leaves them before a multiboot kernel
        starts under QEMU (measured): PICs at vectors 0x08/0x70 with masks
        0xB8/0x8E, PIT channel 0 in mode 2 at 18.2 Hz."""
        for port, value in ((0x20, 0x11), (0x21, 0x08), (0x21, 0x04), (0x21, 0x01), (0xA0, 0x11), (0xA1, 0x70),
                            (0xA1, 0x02), (0xA1, 0x01), (0x21, 0xB8), (0xA1, 0x8E),
                            (0x43, 0x34), (0x40, 0x00), (0x40, 0x00)):  # fmt: skip
            self.bus.write(port, 1, value)
        self.bus.trace.clear()
        self.bus.writes = 0

    def load(self, image: Image, cmdline: str | None = None) -> None:
        """Place a multiboot image in RAM and set the multiboot entry state."""
        for seg in image.segments:
            if seg.paddr < 0x1000 or seg.end > self.ram_size:
                raise MachineStop(Ending("error", detail=f"segment at {seg.paddr:#x}..{seg.end:#x} does not fit in "
                                                         f"{self.ram_size >> 20} MiB of RAM"))  # fmt: skip
        kernel_end = max(seg.end for seg in image.segments)
        info = multiboot_info(self.ram_size, cmdline if cmdline is not None else image.path, kernel_end)
        for addr, data in {**bios_data_area(), **info}.items():
            self.uc.mem_write(addr, data)
        self.uc.mem_write(BOOT_GDT, BOOT_GDT_BYTES)
        for seg in image.segments:
            self.uc.mem_write(seg.paddr, seg.data + b"\0" * (seg.memsz - len(seg.data)))
        uc = self.uc
        uc.reg_write(UC_X86_REG_GDTR, (0, BOOT_GDT, len(BOOT_GDT_BYTES) - 1, 0))
        for reg in (UC_X86_REG_SS, UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GS):
            uc.reg_write(reg, BOOT_DS)
        uc.reg_write(UC_X86_REG_CS, BOOT_CS)
        uc.reg_write(UC_X86_REG_EFLAGS, 0x2)
        uc.reg_write(UC_X86_REG_CR4, 0)  # as QEMU hands over; Unicorn resets it to 0x50200
        uc.reg_write(UC_X86_REG_EAX, MB1_BOOT_MAGIC)
        uc.reg_write(UC_X86_REG_EBX, MBI_ADDR)
        uc.reg_write(UC_X86_REG_ESP, BOOT_STACK)
        uc.reg_write(UC_X86_REG_EIP, image.entry)
        self.image = image
        self._site_index(image)
        data = image.elf.section(".data")
        if data is not None and data.size and data.is_alloc:
            self._digest_ranges[".data"] = (data.addr, data.size)

    def _site_index(self, image: Image) -> None:
        """Where each site's instruction ends and the site ends: an EIP in
        between (in the pad, or in a patch) is architecturally the site's end."""
        if image.patched:
            # A rewritten site is all patch: anywhere inside it, the guest
            # has not yet got past it.
            spans = [(p.start, p.start, p.end) for p in image.patched]
        else:
            from afterburn.sitefmt import read_site_table

            try:
                table = read_site_table(image.elf)
            except Exception:  # noqa: BLE001 - an unreadable table only costs EIP canonicalisation
                table = None
            spans = []
            for s in table.sites if table else []:
                ins = s.section.addr + s.insn_offset
                spans.append((s.address, ins, s.end + s.section.addr))
        spans.sort()
        self._spans = spans
        self._span_starts = [sp[0] for sp in spans]

    def canonical_eip(self, eip: int) -> int:
        import bisect

        i = bisect.bisect_right(self._span_starts, eip) - 1
        if i >= 0:
            start, ins, end = self._spans[i]
            if ins < eip < end:
                return end
        return eip

    def symbolize(self, addr: int) -> str:
        elf = self.image.elf if self.image else None
        sec = elf.section_at(addr) if elf else None
        return elf.symbolize(sec, addr - sec.addr) if sec else f"{addr:#x}"

    def digest(self, spec: str) -> None:
        """Add guest memory to the Observation's digests: a symbol of the
        loaded image (its st_size bytes) or ``ADDR:LEN`` (physical)."""
        from afterburn.errors import AfterburnError

        if ":" in spec:
            try:
                start, length = (int(x, 0) for x in spec.split(":", 1))
            except ValueError:
                raise AfterburnError(f"--digest {spec}: expected ADDR:LEN or a symbol") from None
        else:
            sym = next((s for s in (self.image.elf.symbols if self.image else []) if s.name == spec), None)
            if sym is None or not sym.size:
                raise AfterburnError(f"--digest {spec}: no sized symbol of that name in the kernel")
            start, length = sym.value, sym.size
        if length <= 0 or start + length > self.ram_size:
            raise AfterburnError(f"--digest {spec}: outside guest RAM")
        self._digest_ranges[spec] = (start, length)

    def _install_hooks(self) -> None:
        uc = self.uc
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(UC_HOOK_INSN, self._on_in, None, 1, 0, UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._on_out, None, 1, 0, UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED,
                    self._on_unmapped)  # fmt: skip
        self._rdtsc_hook = hook_rdtsc(uc, self.tsc)

    # -- time ------------------------------------------------------------------

    def now(self) -> int:
        """Virtual ns, exact to the instruction even in the middle of a slice."""
        return self._slice_start + max(self.counter.raw() - 1, 0) * self.clock.ns_per_insn

    def tsc(self) -> int:
        """The time-stamp counter: a 1 GHz clock on virtual time."""
        return self.now()

    # -- hooks -------------------------------------------------------------------

    def sync_clock(self) -> None:
        """Bring the clock to the current instruction (devices read it)."""
        self.clock.now = max(self.clock.now, self.now())

    def _on_in(self, uc, port: int, size: int, _user) -> int:
        self.sync_clock()
        value = self.backend.on_port_io(port, size, None)
        return 0 if value is None else value

    def _on_out(self, uc, port: int, size: int, value: int, _user) -> None:
        self.sync_clock()
        self.backend.on_port_io(port, size, value)

    def _on_debug_exit(self, value: int) -> None:
        if self._stop is None:
            self._stop = Ending("exit", code=value)
            self.uc.emu_stop()

    def _on_intr(self, uc, vector: int, _user) -> None:
        err, software = self.cpu.ctx.exception()
        if software or vector not in HAS_ERROR_CODE:
            err = None
        self.stats.exceptions[vector_name(vector) if not software else f"int {vector:#x}"] += 1
        if self.backend.on_trap(vector, err, software):
            return
        self._deliver_or_stop(vector, err, software)

    def _on_invalid(self, uc, _user) -> bool:
        self.cpu.ctx.exception()
        self.stats.exceptions["#UD"] += 1
        if not self.backend.on_trap(6, None, False):
            self._deliver_or_stop(6, None, False)
        return True

    def _deliver_or_stop(self, vector: int, err: int | None, software: bool) -> None:
        try:
            self.cpu.deliver(vector, err, soft=software)
        except TripleFault as e:
            self.stop("fault", f"triple fault: {e} at eip {self.cpu.eip:#x}")

    def _on_unmapped(self, uc, access, address, size, value, _user) -> bool:
        kind = {19: "read", 20: "write", 21: "fetch"}.get(access, "access")
        self._unmapped = f"{kind} of unmapped guest-physical memory at {address:#x}"
        return False

    def watch(self, predicate: Callable[[], bool]) -> None:
        """Stop the current slice at the first basic block where
        ``predicate()`` holds.  QEMU ends a translation block after every
        instruction that can set IF (sti, popf, iret), so checking at block
        starts sees an interrupt window open at the exact instruction.  The
        hook costs ~0.5 us a block, so it is installed only while needed."""
        self.unwatch()

        def _check(uc, _addr, _size, _user):
            if self._watch_armed and predicate():
                self.end_slice()

        self._watch_hook = self.uc.hook_add(UC_HOOK_BLOCK, _check)
        self.uc.ctl_flush_tb()  # blocks translated earlier would not call the hook

    def unwatch(self) -> None:
        if self._watch_hook is not None:
            self.uc.hook_del(self._watch_hook)
            self.uc.ctl_flush_tb()
            self._watch_hook = None

    def end_slice(self) -> None:
        """End the current slice now (from a hook): not a halt, not an error."""
        self._ended_early = True
        self.uc.emu_stop()

    @property
    def stopped(self) -> bool:
        return self._stop is not None

    @property
    def ending(self) -> Ending | None:
        """Why the run stopped (or will stop when the current slice returns)."""
        return self._stop

    def stop(self, reason: str, detail: str = "", code: int | None = None) -> None:
        """End the run (from a hook or a backend)."""
        if self._stop is None:
            self._stop = Ending(reason, code, detail)
        self.uc.emu_stop()

    # -- the run loop --------------------------------------------------------------

    def run(self, backend, limits: Limits | None = None) -> Observation:
        limits = limits or Limits()
        self.backend = backend
        backend.attach(self)
        start = time.perf_counter()
        try:
            self._loop(limits, start)
        except MachineStop as s:
            self._stop = s.ending
        self.stats.wall_s = time.perf_counter() - start
        self.stats.virtual_ns = self.clock.now
        return self.observe()

    def _loop(self, limits: Limits, start: float) -> None:
        while self._stop is None:
            self.backend.poll_interrupts()
            if self._stop is not None:
                break
            budget = self.backend.slice_limit() or MAX_SLICE
            deadline = self.clock.next_deadline()
            if deadline is not None:
                ahead = -(-(deadline - self.clock.now) // self.clock.ns_per_insn)
                budget = max(1, min(budget, ahead))
            if limits.max_insns is not None:
                left = limits.max_insns - self.stats.instructions
                if left <= 0:
                    raise MachineStop(Ending("max-insns", detail=f"{limits.max_insns} instructions"))
                budget = min(budget, left)
            if limits.timeout is not None and time.perf_counter() - start > limits.timeout:
                raise MachineStop(Ending("timeout", detail=f"{limits.timeout:g} s of wall time"))
            self._run_slice(budget)
            if self._stop is None and self._halted_in_last_slice:
                self.stats.halts += 1
                self.backend.on_halt()
            self.clock.fire_due()

    def _run_slice(self, budget: int) -> None:
        self._slice_start = self.clock.now
        self._halted_in_last_slice = False
        self._ended_early = False
        eip = self.cpu.eip
        # Unicorn invalidates the translation block at ``until - 1`` after
        # every emu_start, walking the guest's page tables to find it; a walk
        # that fails writes CR2, so the guest would read a fault it never
        # took (0xffffffff for until = 2**32).  Exit address 0 is exempt, so
        # slices stop at EIP 0 instead, unless they start there.
        until = 0 if eip else 1 << 32
        try:
            self.uc.emu_start(eip, until, count=budget)
        except UcError as e:
            retired = self.counter.retired(budget)
            self._account(retired)
            if self._stop is None and not self.backend.on_emulation_error(e):
                raise MachineStop(Ending("error", detail=self._unmapped or f"{e} at eip {self.cpu.eip:#x}")) from None
            return
        retired = self.counter.retired(budget)
        self._account(retired)
        if self._stop is None and not self._ended_early and not self.counter.expired(budget):
            # Nothing asked Unicorn to stop and the count did not run out:
            # the only other ways out are the until address and hlt (see
            # uc_ext.InsnCounter).
            eip = self.cpu.eip
            if eip == until:
                # Unicorn leaves the block it compiled to stop at 0 in its
                # cache (it skips exit 0 when cleaning up); drop it, or the
                # next slice would stop there at once.  The guest is about
                # to run at 0, so the lookup finds it mapped.
                self.uc.ctl_remove_cache(0, 1)
                return
            if bytes(self.uc.mem_read(self._phys(eip - 1), 1))[0] != HLT:
                raise MachineStop(Ending("error", detail=f"emulation stopped unexpectedly at eip {eip:#x}"))
            self._halted_in_last_slice = True

    def _phys(self, vaddr: int) -> int:
        return translate(self.uc, vaddr)

    def _account(self, retired: int) -> None:
        self.stats.instructions += retired
        self.stats.slices += 1
        self.clock.now = self._slice_start + retired * self.clock.ns_per_insn

    def idle_until_interrupt(self, extra_sources: tuple = (), woken: Callable[[], bool] | None = None) -> None:
        """The CPU waits: skip virtual time to the next device event that
        raises an interrupt the PIC lets through (or, for a backend's own
        timers in ``extra_sources``, until ``woken()``); end the run if
        nothing can ever wake it."""
        for _ in range(IDLE_EVENTS):
            if self.pic.has_interrupt() or (woken is not None and woken()):
                return
            # Only devices whose IRQ line is open can wake the CPU; the rest
            # still get to act as time passes (fire_due below).
            deadlines = [d for dev, line in self._irq_lines
                         if not self.pic.line_masked(line) and (d := dev.deadline()) is not None]  # fmt: skip
            deadlines += [d for dev in extra_sources if (d := dev.deadline()) is not None]
            if not deadlines:
                raise MachineStop(Ending("halted", detail="hlt with no interrupt source armed"))
            self.stats.idle_ns += max(0, min(deadlines) - self.clock.now)
            self.clock.advance_to(min(deadlines))
            self.clock.fire_due()
        raise MachineStop(Ending("halted", detail=f"hlt: no interrupt after {IDLE_EVENTS} device events"))

    def step(self) -> None:
        """Run exactly one guest instruction (the IF-window watch stays quiet)."""
        self._watch_armed = False
        try:
            self._run_slice(1)
        finally:
            self._watch_armed = True

    @property
    def watching(self) -> bool:
        return self._watch_hook is not None

    # -- observation ----------------------------------------------------------------

    def observe(self) -> Observation:
        ending = self._stop or Ending("error", detail="run ended without a reason")
        memory = {}
        for name, (start, length) in sorted(self._digest_ranges.items()):
            try:
                memory[name] = hashlib.sha256(bytes(self.uc.mem_read(start, length))).hexdigest()[:16]
            except UcError:
                memory[name] = "unreadable"
        cpu = self.backend.vcpu_state() if self.backend else {}
        return Observation(self.backend.name if self.backend else "none", bytes(self.uart.output), ending,
                           [w.as_tuple() for w in self.bus.trace], cpu, memory, self.stats)  # fmt: skip

    def arch_state(self) -> dict[str, int]:
        """The real architectural registers (what bare reports)."""
        uc = self.uc
        st = self.cpu.gprs()
        st.update(eip=self.canonical_eip(uc.reg_read(UC_X86_REG_EIP)), eflags=uc.reg_read(UC_X86_REG_EFLAGS) & ~0x10000,
                  cs=uc.reg_read(UC_X86_REG_CS), ss=uc.reg_read(UC_X86_REG_SS), ds=uc.reg_read(UC_X86_REG_DS),
                  es=uc.reg_read(UC_X86_REG_ES), fs=uc.reg_read(UC_X86_REG_FS), gs=uc.reg_read(UC_X86_REG_GS),
                  cr0=uc.reg_read(UC_X86_REG_CR0), cr2=uc.reg_read(UC_X86_REG_CR2), cr3=uc.reg_read(UC_X86_REG_CR3),
                  cr4=uc.reg_read(UC_X86_REG_CR4))  # fmt: skip
        _, gdt_base, gdt_limit, _ = uc.reg_read(UC_X86_REG_GDTR)
        _, idt_base, idt_limit, _ = uc.reg_read(UC_X86_REG_IDTR)
        st.update(gdt_base=gdt_base, gdt_limit=gdt_limit, idt_base=idt_base, idt_limit=idt_limit)
        return st
