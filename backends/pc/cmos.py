"""Motorola MC146818 RTC + CMOS NVRAM at ports 0x70 (index) / 0x71 (data), IRQ8.

Time is virtual: the guest's wall clock is ``epoch + clock.now`` (default
epoch 2026-01-01 00:00:00 UTC), never the host's.  Behaviour follows QEMU
7.2's hw/rtc/mc146818rtc.c:

* Index port: bits 0-6 select one of 128 bytes; bit 7 (NMI mask) is kept
  in :attr:`Cmos.nmi_disabled` and otherwise ignored.  Reading 0x70 gives 0xFF.
  Index 0x37 (IBM PS/2 century) aliases 0x32 and moves the index there.
* Time registers 0x00/02/04/06/07/08/09/32 are computed from the virtual
  clock on every read while the clock runs, formatted per status B: bit 2
  binary vs BCD, bit 1 24-hour vs 12-hour (PM = bit 7 of the hour).  Day of
  week is 1 = Sunday.  The clock runs unless B.SET (bit 7) is set or the
  divider bits A[6:4] are above 010; while stopped, reads return the latched
  bytes, and writes are just stored.
* Guest time writes: while running, a write to a time register re-bases the
  clock at once from all the time registers (QEMU's rtc_set_time; the
  sub-second phase becomes the stored ``offset``, 0 after power-on).  QEMU
  decodes the other registers as last latched; we latch them from the
  current time first, which is the same whenever the guest read them
  recently.  Clearing SET re-bases keeping the sub-second phase; releasing
  the divider reset re-bases with the first update half a second later.
* Status A (default 0x26): bits 0-6 writable; UIP (bit 7) reads 1 during the
  last 244 us (8 cycles of 32.768 kHz) of every virtual second while running.
* Status B (default 0x02): setting SET clears UIE.  Writing B raises IRQ8 at
  once if an already-set flag becomes enabled, and otherwise drops IRQF and
  the line (QEMU).
* Status C: IRQF|PF|AF|UF, cleared on read, and the read lowers IRQ8.
  UF is set at every second boundary (also while SET, as in QEMU); AF when
  the time matches the alarm bytes 0x01/0x03/0x05 (0xC0-0xFF = don't care;
  not checked while SET).  12-hour alarms use the alarm's own PM bit
  (QEMU mistakenly uses the current hour's).
* Periodic interrupt: only while B.PIE is set, every 2^(rate-1) cycles of
  32.768 kHz (rates 1/2 act as 8/9; rate 0 is off), timed exactly as QEMU:
  the first tick one period after the 32 kHz tick at which it was enabled,
  each at ``tick * 1e9 // 32768 + 1`` ns; changing the period keeps the
  elapsed part of the current one.
* Status D reads 0x80 (battery good).  C and D ignore writes.

IRQ convention: ``irq(level: bool)`` is the IRQ8 line, called only when it
changes.  It rises when a flag enabled in B is set (IRQF) and falls when C
is read, so an edge-triggered PIC sees one edge per C read, as on a PC.

The RTC is :class:`~backends.pc.clock.Timed` (register it with the clock);
it only has a deadline while an enabled interrupt could fire.

NVRAM 0x0E-0x7F is plain storage, initialised like QEMU's pc machine with
``ram_size`` bytes of RAM and no disks or floppies (values below were checked
against a CMOS dump from qemu-system-i386 7.2 -m 32 after SeaBIOS).  The
3.5 GiB / 3 GiB low-memory split for very large RAM is from memory of
pc_piix.c and unverified.
"""
from __future__ import annotations

import calendar
import datetime
from collections.abc import Callable, Iterable
from typing import Any

from .bus import Device
from .clock import VirtualClock

NS_PER_S = 1_000_000_000
RTC_HZ = 32768
UIP_HOLD_NS = 8 * NS_PER_S // RTC_HZ          # 244140 ns
EPOCH_2026 = 1_767_225_600                    # 2026-01-01 00:00:00 UTC
KIB, MIB = 1024, 1024 * 1024

SEC, SEC_ALARM, MIN, MIN_ALARM, HOUR, HOUR_ALARM = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
WDAY, MDAY, MONTH, YEAR, CENTURY, PS2_CENTURY = 0x06, 0x07, 0x08, 0x09, 0x32, 0x37
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
TIME_REGS = (SEC, MIN, HOUR, WDAY, MDAY, MONTH, YEAR, CENTURY)

B_SET, B_PIE, B_AIE, B_UIE, B_SQWE, B_DM, B_24H = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02
C_IRQF, C_PF, C_AF, C_UF = 0x80, 0x40, 0x20, 0x10
C_MASK = 0x70


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def mktimegm(year: int, mon: int, mday: int, hour: int, minute: int, sec: int) -> int:
    """Seconds since 1970 for a UTC date; out-of-range fields are folded in
    arithmetically the way QEMU's mktimegm() does (month 1-based)."""
    y, m = year, mon
    if m < 3:
        m += 12
        y -= 1
    days = mday + _cdiv(153 * m - 457, 5) + 365 * y + _cdiv(y, 4) - _cdiv(y, 100) + _cdiv(y, 400) - 719469
    return days * 86400 + hour * 3600 + minute * 60 + sec


def civil_from_days(z: int) -> tuple[int, int, int]:
    """(year, month, day) of day number z since 1970-01-01 (proleptic Gregorian)."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _epoch_seconds(epoch: int | datetime.datetime) -> int:
    if isinstance(epoch, datetime.datetime):
        # Naive datetimes are taken as UTC: the host's zone must not leak in.
        return calendar.timegm(epoch.utctimetuple())
    return int(epoch)


class Cmos(Device):
    """MC146818 RTC with 128 bytes of CMOS."""

    name = "cmos"

    def __init__(
        self,
        clock: VirtualClock,
        irq: Callable[[bool], None] | None = None,
        ram_size: int = 32 * MIB,
        epoch: int | datetime.datetime = EPOCH_2026,
    ) -> None:
        self.clock = clock
        self.irq = irq
        self.ram_size = ram_size
        self.epoch = _epoch_seconds(epoch)
        self.reset()

    def port_ranges(self) -> Iterable[tuple[int, int]]:
        return [(0x70, 2)]

    # -- power-on --------------------------------------------------------------
    def reset(self) -> None:
        self.data = bytearray(128)
        self.data[REG_A] = 0x26
        self.data[REG_B] = 0x02
        self.data[REG_D] = 0x80
        self._init_nvram()
        self.index = 0
        self.nmi_disabled = False
        # Guest time in ns = base_sec*1e9 + (now - last_update) + offset, the
        # same decomposition as QEMU.  Power-on maps the epoch to virtual 0.
        self.base_sec = self.epoch
        self.last_update = 0
        self.offset = 0
        self.last_sec = self._guest_ns(self.clock.now) // NS_PER_S
        self.periodic_next: int | None = None   # 32 kHz tick of the next PF
        self.period = 0
        self._level = False
        self._latch_time()

    def _init_nvram(self) -> None:
        ram = self.ram_size
        lowmem = 0xC000_0000 if ram >= 0xE000_0000 else 0xE000_0000
        below, above = (lowmem, ram - lowmem) if ram >= lowmem else (ram, 0)

        def put16(lo: int, val: int) -> None:
            self.data[lo] = val & 0xFF
            self.data[lo + 1] = (val >> 8) & 0xFF

        put16(0x15, min(below // KIB, 640))                       # base memory, KiB
        ext = min((below - MIB) // KIB if below > MIB else 0, 65535)
        put16(0x17, ext)                                          # 1 MiB..: KiB
        put16(0x30, ext)
        put16(0x34, min((below - 16 * MIB) // (64 * KIB) if below > 16 * MIB else 0, 65535))
        high = above // 65536                                     # above 4 GiB, 64 KiB units
        self.data[0x5B], self.data[0x5C], self.data[0x5D] = high & 0xFF, (high >> 8) & 0xFF, (high >> 16) & 0xFF
        self.data[0x14] = 0x06        # equipment: FPU, PS/2 mouse; no floppies
        self.data[0x3D] = 0x12        # boot order "cad": hd, floppy (, cdrom below)
        self.data[0x38] = 0x30        # (3rd boot device << 4) | fd sig check on
        self.data[0x5F] = 0           # CPUs - 1

    # -- time base ----------------------------------------------------------------
    def _guest_ns(self, now: int) -> int:
        return self.base_sec * NS_PER_S + now - self.last_update + self.offset

    def _running(self) -> bool:
        return not self.data[REG_B] & B_SET and (self.data[REG_A] & 0x70) <= 0x20

    def _divider_reset(self) -> bool:
        return (self.data[REG_A] & 0x60) == 0x60

    def _to_bcd(self, v: int) -> int:
        return v & 0xFF if self.data[REG_B] & B_DM else (((v // 10) << 4) | (v % 10)) & 0xFF

    def _from_bcd(self, v: int) -> int:
        if v & 0xC0 == 0xC0:
            return -1                                # "don't care"
        return v if self.data[REG_B] & B_DM else (v >> 4) * 10 + (v & 0x0F)

    def _format_time(self, secs: int) -> dict[int, int]:
        """Register bytes for a time in seconds since 1970, per status B."""
        days, tod = divmod(secs, 86400)
        year, month, mday = civil_from_days(days)
        hour, rem = divmod(tod, 3600)
        minute, sec = divmod(rem, 60)
        if self.data[REG_B] & B_24H:
            hour_reg = self._to_bcd(hour)
        else:
            hour_reg = self._to_bcd(hour % 12 or 12) | (0x80 if hour >= 12 else 0)
        return {
            SEC: self._to_bcd(sec), MIN: self._to_bcd(minute), HOUR: hour_reg,
            WDAY: self._to_bcd((days + 4) % 7 + 1), MDAY: self._to_bcd(mday),
            MONTH: self._to_bcd(month), YEAR: self._to_bcd(year % 100),
            CENTURY: self._to_bcd(year // 100),
        }

    def _latch_time(self) -> None:
        """Copy the running time into the registers (QEMU's rtc_update_time)."""
        for reg, val in self._format_time(self._guest_ns(self.clock.now) // NS_PER_S).items():
            self.data[reg] = val

    def _decode_hour(self, raw: int) -> int:
        hour = self._from_bcd(raw & 0x7F)
        if not self.data[REG_B] & B_24H:
            hour %= 12
            if raw & 0x80:
                hour += 12
        return hour

    def _set_time(self) -> None:
        """Re-base the clock from the time registers (QEMU's rtc_set_time)."""
        d, fb = self.data, self._from_bcd
        year = fb(d[YEAR]) + fb(d[CENTURY]) * 100
        self.base_sec = mktimegm(year, fb(d[MONTH]), fb(d[MDAY]), self._decode_hour(d[HOUR]), fb(d[MIN]), fb(d[SEC]))
        self.last_update = self.clock.now
        # The jump itself is not an update cycle: no UF for it.
        self.last_sec = self._guest_ns(self.clock.now) // NS_PER_S

    def time_seconds(self) -> int:
        """Current guest wall-clock time, seconds since 1970 (for observers)."""
        return self._guest_ns(self.clock.now) // NS_PER_S

    # -- alarm --------------------------------------------------------------------
    def _next_alarm(self, after: int) -> int | None:
        """First second > after whose time of day matches the alarm bytes."""
        s_al = self._from_bcd(self.data[SEC_ALARM])
        m_al = self._from_bcd(self.data[MIN_ALARM])
        raw_h = self.data[HOUR_ALARM]
        h_al = -1 if raw_h & 0xC0 == 0xC0 else self._decode_hour(raw_h)
        if s_al >= 60 or m_al >= 60 or h_al >= 24:
            return None                               # can never match
        hours = range(24) if h_al < 0 else (h_al,)
        mins = range(60) if m_al < 0 else (m_al,)
        secs = range(60) if s_al < 0 else (s_al,)
        day0, tod0 = after - after % 86400, after % 86400
        for day in (0, 86400):
            for h in hours:
                for m in mins:
                    t = day + h * 3600 + m * 60
                    if t + 59 <= tod0:
                        continue
                    for s in secs:
                        if t + s > tod0:
                            return day0 + t + s
        return None

    # -- interrupt flags ------------------------------------------------------------
    def _set_line(self, level: bool) -> None:
        if level != self._level:
            self._level = level
            if self.irq:
                self.irq(level)

    def _raise_flags(self, flags: int) -> None:
        new = flags & ~self.data[REG_C]
        self.data[REG_C] |= flags
        if new & self.data[REG_B] & C_MASK:
            self.data[REG_C] |= C_IRQF
            self._set_line(True)

    def _sync(self, now: int) -> None:
        """Apply the second boundaries that passed since last time (UF, AF)."""
        if self._divider_reset():
            return
        cur = self._guest_ns(now) // NS_PER_S
        if cur <= self.last_sec:
            return
        flags = C_UF
        if not self.data[REG_B] & B_SET:
            alarm = self._next_alarm(self.last_sec)
            if alarm is not None and alarm <= cur:
                flags |= C_AF
        self.last_sec = cur
        self._raise_flags(flags)

    # -- periodic interrupt -----------------------------------------------------------
    def _period_ticks(self) -> int:
        if not self.data[REG_B] & B_PIE:
            return 0
        code = self.data[REG_A] & 0x0F
        if code == 0:
            return 0
        if code <= 2:
            code += 7
        return 1 << (code - 1)

    @staticmethod
    def _tick_ns(tick: int) -> int:
        return tick * NS_PER_S // RTC_HZ + 1

    def _periodic_update(self, now: int, old_period: int) -> None:
        """Re-arm after PIE or the rate changed (QEMU's periodic_timer_update)."""
        period = self._period_ticks()
        self.period = period
        if not period:
            self.periodic_next = None
            return
        cur = now * RTC_HZ // NS_PER_S
        lost = 0
        if old_period and self.periodic_next is not None:
            lost = min(max(cur - (self.periodic_next - old_period), 0), period)
        self.periodic_next = cur + period - lost

    # -- Timed --------------------------------------------------------------------
    def _second_ns(self, sec: int) -> int:
        """Virtual time at which guest time reaches the start of ``sec``."""
        return sec * NS_PER_S - self.base_sec * NS_PER_S + self.last_update - self.offset

    def deadline(self) -> int | None:
        times = []
        if self.periodic_next is not None:
            times.append(self._tick_ns(self.periodic_next))
        if not self._divider_reset():
            b, c = self.data[REG_B], self.data[REG_C]
            if b & B_UIE and not c & C_UF:
                times.append(self._second_ns(self.last_sec + 1))
            if b & B_AIE and not c & C_AF and not b & B_SET:
                alarm = self._next_alarm(self.last_sec)
                if alarm is not None:
                    times.append(self._second_ns(alarm))
        return min(times) if times else None

    def fire(self, now: int) -> None:
        if self.periodic_next is not None and self._tick_ns(self.periodic_next) <= now:
            tick = self.periodic_next + self.period
            if self._tick_ns(tick) <= now:           # missed periods merge
                behind = now * RTC_HZ // NS_PER_S - tick
                tick += (behind // self.period) * self.period
                while self._tick_ns(tick) <= now:
                    tick += self.period
            self.periodic_next = tick
            self._raise_flags(C_PF)
        self._sync(now)

    # -- ports ----------------------------------------------------------------------
    def io_read(self, port: int, size: int) -> int:
        if port == 0x70:
            return 0xFF
        now = self.clock.now
        self._sync(now)
        if self.index == PS2_CENTURY:
            self.index = CENTURY
        idx = self.index
        if idx in TIME_REGS:
            if self._running():
                self._latch_time()
            return self.data[idx]
        if idx == REG_A:
            return self.data[REG_A] | (0x80 if self._uip(now) else 0)
        if idx == REG_C:
            ret = self.data[REG_C]
            self.data[REG_C] = 0
            self._set_line(False)
            return ret
        return self.data[idx]

    def _uip(self, now: int) -> bool:
        return self._running() and self._guest_ns(now) % NS_PER_S >= NS_PER_S - UIP_HOLD_NS

    def io_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == 0x70:
            self.index = value & 0x7F
            self.nmi_disabled = bool(value & 0x80)
            return
        now = self.clock.now
        self._sync(now)
        if self.index == PS2_CENTURY:
            self.index = CENTURY
        idx = self.index
        if idx in TIME_REGS:
            running = self._running()
            if running:
                self._latch_time()
            self.data[idx] = value
            if running:
                self._set_time()
        elif idx == REG_A:
            self._write_a(value, now)
        elif idx == REG_B:
            self._write_b(value, now)
        elif idx in (REG_C, REG_D):
            pass                                     # read-only
        else:
            self.data[idx] = value

    def _write_a(self, value: int, now: int) -> None:
        old_period = self._period_ticks()
        rate_changed = (self.data[REG_A] ^ value) & 0x0F
        if (value & 0x60) == 0x60:
            if self._running():
                self._latch_time()
        elif self._divider_reset() and (value & 0x70) <= 0x20:
            if not self.data[REG_B] & B_SET:
                # The first update cycle begins half a second after release.
                self.offset = NS_PER_S // 2
                self._set_time()
        self.data[REG_A] = value & 0x7F              # UIP is read-only
        if rate_changed:
            self._periodic_update(now, old_period)

    def _write_b(self, value: int, now: int) -> None:
        old_period = self._period_ticks()
        pie_changed = (self.data[REG_B] ^ value) & B_PIE
        if value & B_SET:
            if self._running():
                self._latch_time()
            value &= ~B_UIE
        elif self.data[REG_B] & B_SET and (self.data[REG_A] & 0x70) <= 0x20:
            self.offset = self._guest_ns(now) % NS_PER_S
            self._set_time()
        if value & self.data[REG_C] & C_MASK:
            self.data[REG_C] |= C_IRQF
            self._set_line(True)
        else:
            self.data[REG_C] &= ~C_IRQF
            self._set_line(False)
        self.data[REG_B] = value
        if pie_changed:
            self._periodic_update(now, old_period)

    # -- snapshots --------------------------------------------------------------------
    def visible(self) -> list[int]:
        """The 128 bytes as the guest would read them now (no side effects)."""
        out = list(self.data)
        now = self.clock.now
        if self._running():
            for reg, val in self._format_time(self._guest_ns(now) // NS_PER_S).items():
                out[reg] = val
        out[REG_A] |= 0x80 if self._uip(now) else 0
        return out

    def state(self) -> dict[str, Any]:
        return {
            "data": list(self.data),
            "index": self.index,
            "nmi_disabled": int(self.nmi_disabled),
            "base_sec": self.base_sec,
            "last_update": self.last_update,
            "offset": self.offset,
            "last_sec": self.last_sec,
            "periodic_next": self.periodic_next,
            "period": self.period,
            "irq_level": int(self._level),
            "time": self.time_seconds(),
            "visible": self.visible(),
        }

    def load_state(self, st: dict[str, Any]) -> None:
        self.data = bytearray(st["data"])
        self.index = int(st["index"])
        self.nmi_disabled = bool(st["nmi_disabled"])
        self.base_sec = int(st["base_sec"])
        self.last_update = int(st["last_update"])
        self.offset = int(st["offset"])
        self.last_sec = int(st["last_sec"])
        self.periodic_next = st["periodic_next"]
        self.period = int(st["period"])
        self._level = bool(st["irq_level"])
