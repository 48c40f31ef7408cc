"""Intel 8253/8254 programmable interval timer (ports 0x40-0x43) and port 0x61.

Three 16-bit down-counters clocked at 1,193,182 Hz.  Nothing ticks: a
channel remembers the virtual time its count was loaded, and every value the
guest can observe is derived from the VirtualClock with integer arithmetic,
``ticks = (now - load_time) * 1193182 // 10**9`` (QEMU's muldiv64 floor).

Behaviour follows QEMU 7.2's hw/timer/i8254.c / i8254_common.c:

* Counter readout per mode: modes 0/1/4/5 ``(count - ticks) & 0xFFFF``;
  mode 2 ``count - ticks % count``; mode 3 ``count - (2*ticks) % count``
  (QEMU's square-wave model, which decrements by two twice per period).
  A reload value of 0 means 65536.
* OUT per QEMU: mode 0 high once ``ticks >= count``; mode 2 high only at
  each period boundary; mode 3 high for the first ``(count+1)//2`` ticks of
  each period; modes 4/5 high only at ``ticks == count``.
* Writing a control word changes the mode at once but does not stop or
  restart the counter (QEMU: "XXX: update irq timer ?"); the new count starts
  when it is written.  Modes 6/7 behave as 2/3 (datasheet "don't care" bit)
  and read back as written.  BCD counting is not implemented: the BCD bit is
  stored and reported by read-back, counting stays binary (as QEMU).
* Counter latch, and the 8254 read-back command (status byte:
  OUT<<7 | rw_mode<<4 | mode<<1 | bcd; null-count bit always 0, as QEMU).
* Power-on: every channel in mode 3, count 65536, loaded at virtual time 0,
  access mode 0 (reads/writes act as lobyte only until programmed), gate high
  for channels 0/1 and low for channel 2.  So IRQ0 runs at ~18.2 Hz from
  power-on exactly as in QEMU before the BIOS reprograms it (SeaBIOS leaves
  channel 0 in mode 2 with lo/hi access: read-back status 0x34, measured).
* Gate: only a rising edge matters (it restarts modes 1, 2, 3 and 5); a low
  gate does not pause counting.  This is QEMU's simplification.  The gate
  of channel 2 is bit 0 of port 0x61; channels 0/1 are hard-wired high.

IRQ convention: ``irq(level)`` is called as a pulse, ``irq(True)`` then
``irq(False)``, at every rising edge of channel 0's OUT.  The 8259 is edge
triggered, so this is what QEMU's level changes amount to; wire it as
``Pit(clock, irq=lambda lvl: pic.set_irq(0, lvl))``.  Rising edges are at
``ticks = k*count`` (k >= 1) in modes 2 and 3, at ``ticks = count`` in modes
0, 4 and 5; and, as in QEMU, loading a count in mode 1 or 3 raises OUT
at once, so if the line was low the load itself is an edge (a kernel that
reprograms channel 0 from mode 2 to mode 3 gets an immediate IRQ0 under QEMU;
measured).  "Was low" is judged with the mode in force before the control
word, and the line counts as low from reset until channel 0 first fires or
is loaded, because QEMU does not drive IRQ0 at reset.

The PIT is :class:`~backends.pc.clock.Timed`: :meth:`Pit.deadline` is the
virtual time of the next channel-0 rising edge, :meth:`Pit.fire` pulses IRQ0
once and schedules the next edge after ``now`` (missed periods merge, like
an edge-triggered line).  The machine must ``clock.register(pit)``.

Port 0x61 (system control port B): bit 0 channel-2 gate, bit 1 speaker data
enable (stored), bit 4 refresh toggle, bit 5 channel-2 OUT; other bits read
0 and are not stored, as in QEMU's pcspk.  The refresh bit flips every
15.085 us of virtual time.  (QEMU instead flips it on every read of 0x61;
pass ``refresh_per_read=True`` to get that behaviour.)
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .bus import Device
from .clock import VirtualClock

PIT_HZ = 1_193_182
NS_PER_S = 1_000_000_000
REFRESH_NS = 15_085  # DRAM refresh request period, the bit-4 half-cycle

# Access-mode / read-write state machine values (QEMU's RW_STATE_*).
RW_LSB, RW_MSB, RW_WORD0, RW_WORD1 = 1, 2, 3, 4

_CHANNEL_FIELDS = (
    "count", "load_time", "mode", "bcd", "rw_mode", "read_state", "write_state",
    "write_latch", "latched_count", "count_latched", "status", "status_latched", "gate",
)


def ticks_between(t0: int, t1: int) -> int:
    """Whole PIT input clocks elapsed from virtual ns t0 to t1."""
    return (t1 - t0) * PIT_HZ // NS_PER_S


def ns_for_ticks(ticks: int) -> int:
    """Smallest ns offset at which ``ticks`` clocks have elapsed (ceil)."""
    return -(-ticks * NS_PER_S // PIT_HZ)


class PitChannel:
    """One counter.  ``mode`` is as written (0-7); behaviour uses :attr:`kind`."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.reset(0)

    def reset(self, now: int) -> None:
        self.count = 0x10000
        self.load_time = now
        self.mode = 3
        self.bcd = 0
        self.rw_mode = 0
        self.read_state = 0
        self.write_state = 0
        self.write_latch = 0
        self.latched_count = 0
        self.count_latched = 0   # 0 or the rw state the latch is read with
        self.status = 0
        self.status_latched = 0
        self.gate = 0 if self.index == 2 else 1

    @property
    def kind(self) -> int:
        """Effective mode: 6 and 7 are aliases of 2 and 3."""
        return self.mode - 4 if self.mode >= 6 else self.mode

    def ticks(self, now: int) -> int:
        return ticks_between(self.load_time, now)

    def counter(self, now: int) -> int:
        d = self.ticks(now)
        kind = self.kind
        if kind == 3:
            return self.count - (2 * d) % self.count
        if kind == 2:
            return self.count - d % self.count
        return (self.count - d) & 0xFFFF

    def out(self, now: int, mode: int | None = None) -> bool:
        """OUT at ``now``; ``mode`` overrides the (effective) mode."""
        d = self.ticks(now)
        kind = self.kind if mode is None else mode
        if kind == 1:
            return d < self.count
        if kind == 2:
            return d != 0 and d % self.count == 0
        if kind == 3:
            return d % self.count < (self.count + 1) >> 1
        if kind in (4, 5):
            return d == self.count
        return d >= self.count            # mode 0

    def next_rising_tick(self, d: int) -> int | None:
        """First tick > d at which OUT goes low->high, or None."""
        kind, count = self.kind, self.count
        if kind in (0, 4, 5):
            return count if d < count else None
        if kind == 2:
            if count == 1:                 # OUT stays high after tick 1
                return 1 if d < 1 else None
            return (d // count + 1) * count
        if kind == 3 and count >= 2:       # count 1: OUT never falls
            return (d // count + 1) * count
        return None                        # mode 1: only the load edge

    def latch_count(self, now: int) -> None:
        if not self.count_latched:        # a second latch is ignored
            self.latched_count = self.counter(now) & 0xFFFF
            self.count_latched = self.rw_mode

    def latch_status(self, now: int) -> None:
        if not self.status_latched:
            self.status = (int(self.out(now)) << 7) | (self.rw_mode << 4) | (self.mode << 1) | self.bcd
            self.status_latched = 1

    def read(self, now: int) -> int:
        if self.status_latched:
            self.status_latched = 0
            return self.status
        if self.count_latched:
            if self.count_latched == RW_MSB:
                self.count_latched = 0
                return self.latched_count >> 8
            if self.count_latched == RW_WORD0:
                self.count_latched = RW_MSB
            else:
                self.count_latched = 0
            return self.latched_count & 0xFF
        count = self.counter(now)
        if self.read_state == RW_MSB:
            return (count >> 8) & 0xFF
        if self.read_state == RW_WORD0:
            self.read_state = RW_WORD1
            return count & 0xFF
        if self.read_state == RW_WORD1:
            self.read_state = RW_WORD0
            return (count >> 8) & 0xFF
        return count & 0xFF               # RW_LSB, or never programmed

    def write(self, val: int) -> int | None:
        """Feed a data-port byte; returns the new reload value once complete."""
        if self.write_state == RW_MSB:
            return val << 8
        if self.write_state == RW_WORD0:
            self.write_latch = val
            self.write_state = RW_WORD1
            return None
        if self.write_state == RW_WORD1:
            self.write_state = RW_WORD0
            return self.write_latch | (val << 8)
        return val                        # RW_LSB, or never programmed

    def state(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in _CHANNEL_FIELDS}

    def load_state(self, st: dict[str, Any]) -> None:
        for f in _CHANNEL_FIELDS:
            setattr(self, f, int(st[f]))


class Pit(Device):
    """8254 PIT plus system control port B (0x61)."""

    name = "pit"

    def __init__(
        self,
        clock: VirtualClock,
        irq: Callable[[bool], None] | None = None,
        refresh_per_read: bool = False,
    ) -> None:
        self.clock = clock
        self.irq = irq
        self.refresh_per_read = refresh_per_read
        self.channels = [PitChannel(i) for i in range(3)]
        self.reset()

    def port_ranges(self) -> Iterable[tuple[int, int]]:
        return [(0x40, 4), (0x61, 1)]

    def reset(self) -> None:
        # Power-on happens at virtual time 0; a later reset restarts the
        # counters now (QEMU loads them at reset time).
        now = self.clock.now
        for ch in self.channels:
            ch.reset(now)
        self.speaker_data = 0
        self.refresh_flip = 0     # only used with refresh_per_read
        self._next_edge: int | None = None
        # Channel 0's mode before a control word that has not been followed
        # by a count yet: QEMU's IRQ0 line keeps the old mode's level until
        # the load, so the load-time edge is judged against it.
        self._line_mode: int | None = None
        # QEMU never drives IRQ0 at reset: the line reads low until channel 0
        # first fires or is loaded, whatever the mode-3 formula says.
        self._line_driven = False
        self._schedule(now)

    # -- channel 0 interrupt scheduling -------------------------------------
    def _schedule(self, now: int) -> None:
        ch = self.channels[0]
        tick = ch.next_rising_tick(ch.ticks(now))
        self._next_edge = None if tick is None else ch.load_time + ns_for_ticks(tick)

    def _pulse(self) -> None:
        if self.irq:
            self.irq(True)
            self.irq(False)

    def deadline(self) -> int | None:
        return self._next_edge

    def fire(self, now: int) -> None:
        if self._next_edge is None or now < self._next_edge:
            return
        self._line_driven = True
        self._pulse()
        self._schedule(now)

    def _load(self, ch: PitChannel, value: int, now: int) -> None:
        was_high = ch.out(now, self._line_mode if ch.index == 0 else None)
        ch.count = value or 0x10000
        ch.load_time = now
        if ch.index == 0:
            was_high = was_high and self._line_driven
            self._line_driven = True
            self._line_mode = None
            if ch.out(now) and not was_high:
                self._pulse()
            self._schedule(now)

    def set_gate(self, index: int, level: bool) -> None:
        ch = self.channels[index]
        now = self.clock.now
        if level and not ch.gate and ch.kind in (1, 2, 3, 5):
            ch.load_time = now            # rising edge retriggers
            if index == 0:
                self._schedule(now)
        ch.gate = int(bool(level))

    # -- ports ----------------------------------------------------------------
    def io_read(self, port: int, size: int) -> int:
        now = self.clock.now
        if port == 0x61:
            return self._read_port_b(now)
        if port == 0x43:
            return 0                      # mode register is write-only
        return self.channels[port - 0x40].read(now)

    def io_write(self, port: int, size: int, value: int) -> None:
        now = self.clock.now
        value &= 0xFF
        if port == 0x61:
            self.speaker_data = (value >> 1) & 1
            self.set_gate(2, bool(value & 1))
        elif port == 0x43:
            self._control(value, now)
        else:
            ch = self.channels[port - 0x40]
            reload = ch.write(value)
            if reload is not None:
                self._load(ch, reload, now)

    def _control(self, val: int, now: int) -> None:
        sel = val >> 6
        if sel == 3:                      # read-back: bits 1-3 pick channels
            for ch in self.channels:
                if val & (2 << ch.index):
                    if not val & 0x20:
                        ch.latch_count(now)
                    if not val & 0x10:
                        ch.latch_status(now)
            return
        ch = self.channels[sel]
        access = (val >> 4) & 3
        if access == 0:
            ch.latch_count(now)
            return
        if sel == 0 and self._line_mode is None:
            self._line_mode = ch.kind
        ch.rw_mode = ch.read_state = ch.write_state = access
        ch.mode = (val >> 1) & 7
        ch.bcd = val & 1
        if sel == 0:
            self._schedule(now)

    def _read_port_b(self, now: int) -> int:
        if self.refresh_per_read:
            self.refresh_flip ^= 1
            refresh = self.refresh_flip
        else:
            refresh = (now // REFRESH_NS) & 1
        ch2 = self.channels[2]
        return ch2.gate | (self.speaker_data << 1) | (refresh << 4) | (int(ch2.out(now)) << 5)

    # -- snapshots ----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "channels": [ch.state() for ch in self.channels],
            "speaker_data": self.speaker_data,
            "refresh_flip": self.refresh_flip,
            "next_edge": self._next_edge,
            "line_mode": self._line_mode,
            "line_driven": int(self._line_driven),
        }

    def load_state(self, st: dict[str, Any]) -> None:
        for ch, cst in zip(self.channels, st["channels"], strict=True):
            ch.load_state(cst)
        self.speaker_data = int(st["speaker_data"])
        self.refresh_flip = int(st["refresh_flip"])
        self._next_edge = st["next_edge"]
        self._line_mode = st["line_mode"]
        self._line_driven = bool(st["line_driven"])
