"""A cascaded pair of Intel 8259A programmable interrupt controllers.

Master at ports 0x20/0x21 (IRQ0-7), slave at 0xA0/0xA1 (IRQ8-15), the slave's
INT output wired to master input 2, as on every PC since the AT.

Behaviour follows QEMU 7.2's hw/intc/i8259.c, which is our oracle:

* Edge triggered only.  A low->high transition of a line sets its IRR bit;
  IRR stays set when the line drops again (QEMU does not clear it either).
  The ICW1 LTIM (level) bit is accepted and ignored; the ELCR ports
  (0x4D0/0x4D1) are not modelled.
* ICW1 resets the chip: IMR, ISR, IRR, rotation, AEOI and the vector base
  all go to 0 and the remembered line levels are forgotten, so a line that is
  still high produces a fresh edge when next raised.
* Power-on (reset) state is QEMU's: vector base 0, IMR 0 (all unmasked),
  read register IRR.  A BIOS normally reprograms this; under QEMU, SeaBIOS
  leaves bases 0x08/0x70 and IMRs 0xB8/0x8E (measured).
* Priority: fixed, lowest IRQ number first, with the optional rotation of
  OCW2 (priority_add).  A request is delivered only if unmasked and of
  strictly higher priority than everything in service.  Special mask mode
  excludes masked in-service bits from that comparison; special fully
  nested mode (ICW4 bit 4) ignores the slave's in-service bit on the master.
* INTA with nothing deliverable returns the spurious vector base+7 without
  setting ISR; a cascade with nothing on the slave returns slave base+7 and
  still marks master IRQ2 in service, as QEMU and real chips do.
* Poll mode (OCW3 bit 2): the next read of either port acknowledges the
  highest request and returns 0x80|irq, or 0 when nothing is pending.

The CPU side uses :meth:`PicPair.set_irq`, :meth:`PicPair.has_interrupt` and
:meth:`PicPair.acknowledge`; an optional ``on_intr(level)`` callback follows
the INTR output for machines that prefer to be told.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .bus import Device

# Field names that make up one chip's state; also the state() dict keys.
_CHIP_FIELDS = (
    "irr", "imr", "isr", "last_irr", "priority_add", "irq_base",
    "read_isr", "poll", "special_mask", "init_state", "auto_eoi",
    "rotate_on_aeoi", "special_fully_nested", "init4", "single",
)


class I8259:
    """One 8259A chip.  Not a bus device itself: :class:`PicPair` routes ports."""

    def __init__(self, master: bool) -> None:
        self.master = master
        self.reset()

    def reset(self) -> None:
        """ICW1/power-on reset (QEMU's pic_reset_common)."""
        self.irr = 0
        self.imr = 0
        self.isr = 0
        self.last_irr = 0          # line levels seen, for edge detection
        self.priority_add = 0      # rotation: IRQ with top priority
        self.irq_base = 0
        self.read_isr = False      # OCW3 RR/RIS: command port reads ISR?
        self.poll = False
        self.special_mask = False
        self.init_state = 0        # 0 = operational, 1..3 = expecting ICW2..4
        self.auto_eoi = False
        self.rotate_on_aeoi = False
        self.special_fully_nested = False
        self.init4 = False
        self.single = False

    # -- priority logic ---------------------------------------------------
    def _priority(self, mask: int) -> int:
        """Priority level (0 = highest) of the best bit in mask, 8 if none."""
        if mask == 0:
            return 8
        prio = 0
        while not mask & (1 << ((prio + self.priority_add) & 7)):
            prio += 1
        return prio

    def pending(self) -> int:
        """The IRQ (0-7) this chip would deliver now, or -1."""
        prio = self._priority(self.irr & ~self.imr)
        if prio == 8:
            return -1
        in_service = self.isr
        if self.special_mask:
            in_service &= ~self.imr
        if self.special_fully_nested and self.master:
            in_service &= ~(1 << 2)
        if prio < self._priority(in_service):
            return (prio + self.priority_add) & 7
        return -1

    def set_line(self, irq: int, level: bool) -> None:
        mask = 1 << irq
        if level:
            if not self.last_irr & mask:
                self.irr |= mask
            self.last_irr |= mask
        else:
            self.last_irr &= ~mask

    def intack(self, irq: int) -> None:
        if self.auto_eoi:
            if self.rotate_on_aeoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= 1 << irq
        self.irr &= ~(1 << irq)

    # -- register interface -------------------------------------------------
    def write_command(self, val: int) -> None:
        if val & 0x10:                       # ICW1
            self.reset()
            self.init_state = 1
            self.init4 = bool(val & 0x01)
            self.single = bool(val & 0x02)
        elif val & 0x08:                     # OCW3
            if val & 0x04:
                self.poll = True
            if val & 0x02:
                self.read_isr = bool(val & 0x01)
            if val & 0x40:
                self.special_mask = bool(val & 0x20)
        else:                                # OCW2
            self._ocw2(val)

    def _ocw2(self, val: int) -> None:
        cmd = val >> 5
        if cmd in (0, 4):                    # clear / set rotate in AEOI mode
            self.rotate_on_aeoi = cmd == 4
        elif cmd in (1, 5):                  # non-specific EOI (5: and rotate)
            prio = self._priority(self.isr)
            if prio != 8:
                irq = (prio + self.priority_add) & 7
                self.isr &= ~(1 << irq)
                if cmd == 5:
                    self.priority_add = (irq + 1) & 7
        elif cmd == 3:                       # specific EOI
            self.isr &= ~(1 << (val & 7))
        elif cmd == 6:                       # set priority: val&7 becomes lowest
            self.priority_add = (val + 1) & 7
        elif cmd == 7:                       # rotate on specific EOI
            irq = val & 7
            self.isr &= ~(1 << irq)
            self.priority_add = (irq + 1) & 7
        # cmd 2 is a no-op

    def write_data(self, val: int) -> None:
        if self.init_state == 0:             # OCW1
            self.imr = val
        elif self.init_state == 1:           # ICW2
            self.irq_base = val & 0xF8
            self.init_state = (3 if self.init4 else 0) if self.single else 2
        elif self.init_state == 2:           # ICW3: wiring is fixed, ignore
            self.init_state = 3 if self.init4 else 0
        else:                                # ICW4
            self.special_fully_nested = bool(val & 0x10)
            self.auto_eoi = bool(val & 0x02)
            self.init_state = 0

    def read(self, command_port: bool) -> int:
        if self.poll:
            self.poll = False
            irq = self.pending()
            if irq < 0:
                return 0
            self.intack(irq)
            return 0x80 | irq
        if command_port:
            return self.isr if self.read_isr else self.irr
        return self.imr

    def state(self) -> dict[str, Any]:
        # bools become 0/1 so the dict is plain JSON with QEMU-like field values
        return {f: int(getattr(self, f)) for f in _CHIP_FIELDS}

    def load_state(self, st: dict[str, Any]) -> None:
        for f in _CHIP_FIELDS:
            cur = getattr(self, f)
            setattr(self, f, bool(st[f]) if isinstance(cur, bool) else int(st[f]))


class PicPair(Device):
    """Master + slave 8259A; IRQ lines 0-15."""

    name = "pic"

    def __init__(self, on_intr: Callable[[bool], None] | None = None) -> None:
        self.master = I8259(master=True)
        self.slave = I8259(master=False)
        self.on_intr = on_intr
        self._intr = False

    def port_ranges(self) -> Iterable[tuple[int, int]]:
        return [(0x20, 2), (0xA0, 2)]

    def reset(self) -> None:
        self.master.reset()
        self.slave.reset()
        self._update()

    # -- wiring ------------------------------------------------------------
    def _update(self) -> None:
        """Propagate slave INT to master IRQ2, then master INT to the CPU."""
        self.master.set_line(2, self.slave.pending() >= 0)
        intr = self.master.pending() >= 0
        if intr != self._intr:
            self._intr = intr
            if self.on_intr:
                self.on_intr(intr)

    def _chip(self, port: int) -> I8259:
        return self.master if port < 0x80 else self.slave

    # -- port interface ----------------------------------------------------
    def io_read(self, port: int, size: int) -> int:
        val = self._chip(port).read(command_port=not port & 1)
        self._update()
        return val

    def io_write(self, port: int, size: int, value: int) -> None:
        chip = self._chip(port)
        if port & 1:
            chip.write_data(value & 0xFF)
        else:
            chip.write_command(value & 0xFF)
        self._update()

    # -- CPU / device side ---------------------------------------------------
    def set_irq(self, line: int, level: bool) -> None:
        if not 0 <= line < 16:
            raise ValueError(f"IRQ line {line} out of range")
        chip = self.master if line < 8 else self.slave
        chip.set_line(line & 7, bool(level))
        self._update()

    def pulse_irq(self, line: int) -> None:
        self.set_irq(line, True)
        self.set_irq(line, False)

    def line_masked(self, line: int) -> bool:
        """True if ``line`` cannot reach the CPU (masked here or, for the
        slave's lines, at the cascade input IRQ2)."""
        if line < 8:
            return bool(self.master.imr >> line & 1)
        return bool(self.slave.imr >> (line - 8) & 1) or bool(self.master.imr >> 2 & 1)

    def has_interrupt(self) -> bool:
        return self.master.pending() >= 0

    def acknowledge(self) -> int:
        """INTA cycle: return the vector and move the request into service."""
        m, s = self.master, self.slave
        irq = m.pending()
        if irq < 0:
            return m.irq_base + 7            # spurious IRQ7 on the master
        if irq == 2:
            irq2 = s.pending()
            if irq2 >= 0:
                s.intack(irq2)
            else:
                irq2 = 7                     # spurious IRQ15 on the slave
            vector = s.irq_base + irq2
        else:
            vector = m.irq_base + irq
        # The slave's output drops once it has acknowledged, before the master
        # clears its own IRR2 -- the order QEMU uses.
        self.master.set_line(2, s.pending() >= 0)
        m.intack(irq)
        self._update()
        return vector

    # -- snapshots ------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"master": self.master.state(), "slave": self.slave.state()}

    def load_state(self, st: dict[str, Any]) -> None:
        self.master.load_state(st["master"])
        self.slave.load_state(st["slave"])
        self._intr = self.master.pending() >= 0
