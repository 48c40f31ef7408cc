"""MC146818 RTC/CMOS: time formats, UIP, NVRAM, status C, periodic IRQ8."""
from __future__ import annotations

import datetime

from hypothesis import given
from hypothesis import strategies as st

from backends.pc.bus import PortBus
from backends.pc.clock import VirtualClock
from backends.pc.cmos import NS_PER_S, UIP_HOLD_NS, Cmos, mktimegm

NS = NS_PER_S
MIB = 1024 * 1024
TIME_REGS = (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32)
UTC = datetime.UTC


class Rig:
    def __init__(self, **kw) -> None:
        self.clock = VirtualClock()
        self.levels: list[bool] = []
        self.cmos = Cmos(self.clock, irq=self.levels.append, **kw)
        self.clock.register(self.cmos)
        self.bus = PortBus()
        self.bus.attach(self.cmos)

    def r(self, idx: int) -> int:
        self.bus.write(0x70, 1, idx)
        return self.bus.read(0x71, 1)

    def w(self, idx: int, val: int) -> None:
        self.bus.write(0x70, 1, idx)
        self.bus.write(0x71, 1, val)

    def time(self) -> list[int]:
        return [self.r(i) for i in TIME_REGS]

    def at(self, t: int) -> Rig:
        self.clock.advance_to(t)
        return self

    def run_until(self, t_end: int) -> None:
        while (d := self.clock.next_deadline()) is not None and d <= t_end:
            self.clock.advance_to(d)
            self.clock.fire_due()
        self.clock.advance_to(t_end)


def test_default_epoch_is_2026_new_year_thursday():
    c = Rig()
    # sec, min, hour, weekday (Thu = 5), day, month, year, century
    assert c.time() == [0x00, 0x00, 0x00, 0x05, 0x01, 0x01, 0x26, 0x20]
    assert c.r(0x0A) == 0x26 and c.r(0x0B) == 0x02 and c.r(0x0C) == 0 and c.r(0x0D) == 0x80


def test_bcd_binary_and_12h_formats_at_epoch_plus_offset():
    c = Rig()
    c.at((86400 + 13 * 3600 + 45 * 60 + 30) * NS + 999_999_999)   # 2026-01-02 13:45:30.999
    assert c.time() == [0x30, 0x45, 0x13, 0x06, 0x02, 0x01, 0x26, 0x20]
    c.w(0x0B, 0x06)                                              # binary, 24 h
    assert c.time() == [30, 45, 13, 6, 2, 1, 26, 20]
    c.w(0x0B, 0x00)                                              # BCD, 12 h
    assert c.r(0x04) == 0x81                                     # 1 PM
    c.w(0x0B, 0x04)                                              # binary, 12 h
    assert c.r(0x04) == 0x81


def test_12h_midnight_and_noon():
    c = Rig()
    c.w(0x0B, 0x00)
    assert c.r(0x04) == 0x12                                     # 12 AM
    c.at(12 * 3600 * NS)
    assert c.r(0x04) == 0x92                                     # 12 PM
    c.at(23 * 3600 * NS)
    assert c.r(0x04) == 0x91                                     # 11 PM


def test_century_rollover():
    c = Rig(epoch=datetime.datetime(1999, 12, 31, 23, 59, 59))
    assert c.time() == [0x59, 0x59, 0x23, 0x06, 0x31, 0x12, 0x99, 0x19]
    c.at(NS)
    assert c.time() == [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]


def test_uip_window_is_last_244us_of_each_second():
    c = Rig()
    edge = NS - UIP_HOLD_NS
    assert UIP_HOLD_NS == 244_140
    c.at(edge - 1)
    assert c.r(0x0A) == 0x26
    c.at(edge)
    assert c.r(0x0A) == 0xA6
    c.at(NS - 1)
    assert c.r(0x0A) == 0xA6
    c.at(NS)
    assert c.r(0x0A) == 0x26
    c.w(0x0B, 0x82)                                              # SET: no updates, no UIP
    c.at(2 * NS - 1)
    assert c.r(0x0A) == 0x26


def test_status_a_rate_bits_writable_uip_read_only():
    c = Rig()
    c.w(0x0A, 0xAF)
    assert c.r(0x0A) == 0x2F


def test_nvram_matches_qemu_dump_for_32mib():
    c = Rig(ram_size=32 * MIB)
    # CMOS 0x0E-0x7F dumped from qemu-system-i386 7.2 -m 32 -nodefaults, except
    # 0x32 (century) and 0x37 (its PS/2 alias), which are time registers.
    want = bytearray(128)
    want[0x14:0x19] = bytes([0x06, 0x80, 0x02, 0x00, 0x7C])
    want[0x30:0x32] = bytes([0x00, 0x7C])
    want[0x34:0x36] = bytes([0x00, 0x01])
    want[0x38] = 0x30
    want[0x3D] = 0x12
    for i in range(0x0E, 0x80):
        if i not in (0x32, 0x37):
            assert c.r(i) == want[i], hex(i)


def test_nvram_memory_fields_for_other_sizes():
    c = Rig(ram_size=128 * MIB)
    assert (c.r(0x17), c.r(0x18)) == (0xFF, 0xFF)                # capped at 65535 KiB
    assert (c.r(0x30), c.r(0x31)) == (0xFF, 0xFF)
    assert (c.r(0x34), c.r(0x35)) == (0x00, 0x07)                # 112 MiB / 64 KiB
    c = Rig(ram_size=8 * MIB)
    assert (c.r(0x17), c.r(0x18)) == (0x00, 0x1C)                # 7168 KiB
    assert (c.r(0x34), c.r(0x35)) == (0, 0)
    c = Rig(ram_size=4608 * MIB)                                 # 4.5 GiB: 3 GiB low
    assert (c.r(0x5B), c.r(0x5C), c.r(0x5D)) == (0x00, 0x60, 0x00)


def test_nvram_is_plain_storage():
    c = Rig()
    for i in range(0x40, 0x80):
        c.w(i, i ^ 0x5A)
    assert all(c.r(i) == i ^ 0x5A for i in range(0x40, 0x80))
    c.w(0x0D, 0x00)
    c.w(0x0C, 0xFF)
    assert c.r(0x0D) == 0x80 and c.r(0x0C) == 0x00                # read-only


def test_index_port_nmi_bit_and_ps2_century_alias():
    c = Rig()
    assert c.bus.read(0x70, 1) == 0xFF
    c.bus.write(0x70, 1, 0x8D)
    assert c.cmos.nmi_disabled and c.cmos.index == 0x0D
    assert c.bus.read(0x71, 1) == 0x80
    c.bus.write(0x70, 1, 0x37)
    assert c.bus.read(0x71, 1) == 0x20 and c.cmos.index == 0x32


def test_status_c_update_flag_is_cleared_on_read():
    c = Rig()
    c.at(2 * NS + NS // 2)
    assert c.r(0x0C) == 0x10                                     # UF, but no IRQ (UIE off)
    assert c.r(0x0C) == 0x00
    assert c.levels == []
    assert c.cmos.deadline() is None                             # nothing enabled: no wakeups


def test_update_interrupt_once_per_second():
    c = Rig()
    c.at(NS // 3)
    c.w(0x0B, 0x12)                                              # UIE
    assert c.cmos.deadline() == NS
    c.run_until(NS)
    assert c.levels == [True]
    assert c.cmos.deadline() is None                             # UF pending: nothing new can fire
    assert c.r(0x0C) == 0x90
    assert c.levels == [True, False]
    assert c.cmos.deadline() == 2 * NS


def test_periodic_interrupt_deadlines_1024hz():
    c = Rig()
    t0 = 1_000_000
    c.at(t0)
    c.w(0x0B, 0x42)                                              # PIE, rate 6 from A=0x26
    # 32 kHz tick at t0 is 32; one period (32 ticks) later is tick 64.
    assert c.cmos.deadline() == 64 * NS // 32768 + 1 == 1_953_126
    c.run_until(1_953_126)
    assert c.levels == [True]
    assert c.r(0x0C) == 0xC0                                     # IRQF | PF
    assert c.levels == [True, False]
    assert c.cmos.deadline() == 96 * NS // 32768 + 1
    c.run_until(96 * NS // 32768 + 1)
    assert c.levels == [True, False, True]
    # Without a C read the line stays high: the next period is no new edge.
    c.run_until(160 * NS // 32768 + 1)
    assert c.levels == [True, False, True]


def test_periodic_catch_up_and_rate_change():
    c = Rig()
    c.w(0x0B, 0x42)
    assert c.cmos.deadline() == 32 * NS // 32768 + 1
    late = 1000 * NS // 32768 + 5                                # ~31 periods late
    c.at(late)
    c.clock.fire_due()
    assert c.levels == [True]
    assert c.cmos.deadline() == 1024 * NS // 32768 + 1
    # Change to rate 7 (64 ticks) half-way through a period: the elapsed part counts.
    c.run_until(1040 * NS // 32768 + 1)                          # tick 1040: 16 into the period
    c.w(0x0A, 0x27)
    assert c.cmos.deadline() == (1040 + 64 - 16) * NS // 32768 + 1


def test_rates_one_and_two_alias_eight_and_nine_and_zero_is_off():
    c = Rig()
    c.w(0x0A, 0x21)
    c.w(0x0B, 0x42)
    assert c.cmos.deadline() == 128 * NS // 32768 + 1
    c.w(0x0A, 0x20)
    assert c.cmos.deadline() is None


def test_enabling_an_already_set_flag_interrupts_at_once():
    c = Rig()
    c.at(NS)
    c.w(0x0B, 0x12)                                              # UF already set by the boundary
    assert c.levels == [True]
    c.w(0x0B, 0x02)                                              # disabling drops IRQF and the line
    assert c.levels == [True, False]
    assert c.r(0x0C) == 0x10


def test_alarm_interrupt():
    c = Rig()
    c.w(0x01, 0x05)
    c.w(0x03, 0x00)
    c.w(0x05, 0x00)                                              # 00:00:05
    c.w(0x0B, 0x22)                                              # AIE
    assert c.cmos.deadline() == 5 * NS
    c.run_until(5 * NS)
    assert c.levels == [True]
    assert c.r(0x0C) == 0xB0                                     # IRQF | AF | UF
    c.w(0x01, 0xC0)                                              # seconds "don't care"
    assert c.cmos.deadline() == 6 * NS


def test_guest_sets_time_with_set_bit():
    c = Rig()
    c.at(3 * NS)
    c.w(0x0B, 0x82)                                              # SET
    for idx, val in ((0x00, 0x00), (0x02, 0x00), (0x04, 0x12), (0x07, 0x15),
                     (0x08, 0x06), (0x09, 0x30), (0x32, 0x20)):
        c.w(idx, val)
    c.at(4 * NS)
    assert c.r(0x04) == 0x12 and c.r(0x09) == 0x30               # stopped: reads latched bytes
    c.at(5 * NS)
    c.w(0x0B, 0x02)                                              # run from 2030-06-15 12:00:00
    c.at(7 * NS + NS // 2)
    assert c.time() == [0x02, 0x00, 0x12, 0x07, 0x15, 0x06, 0x30, 0x20]   # Saturday
    assert c.cmos.time_seconds() == mktimegm(2030, 6, 15, 12, 0, 2)


def test_guest_writes_seconds_while_running():
    c = Rig()
    c.at(10 * NS + 300_000_000)
    c.w(0x00, 0x45)
    assert c.r(0x00) == 0x45
    c.at(11 * NS + 300_000_000)
    assert c.r(0x00) == 0x46
    assert c.r(0x02) == 0x00 and c.r(0x09) == 0x26               # other fields kept


def test_divider_reset_stops_and_release_starts_half_second_later():
    c = Rig()
    c.at(2 * NS + 300_000_000)
    c.w(0x0A, 0x76)                                              # divider chain reset
    c.at(10 * NS)
    assert c.r(0x00) == 0x02
    assert c.r(0x0A) == 0x76                                     # no UIP while stopped
    c.w(0x0A, 0x26)
    c.at(10 * NS + NS // 2 - 1)
    assert c.r(0x00) == 0x02
    c.at(10 * NS + NS // 2)
    assert c.r(0x00) == 0x03


def test_state_round_trip():
    c = Rig()
    c.w(0x0B, 0x52)
    c.w(0x50, 0x77)
    c.at(1_234_567_890)
    c.clock.fire_due()
    st = c.cmos.state()
    other = Cmos(c.clock)
    other.load_state(st)
    assert other.state() == st
    assert other.deadline() == c.cmos.deadline()
    for idx in (*TIME_REGS, 0x0A, 0x0B, 0x0C, 0x50):
        c.bus.write(0x70, 1, idx)
        other.io_write(0x70, 1, idx)
        assert other.io_read(0x71, 1) == c.bus.read(0x71, 1)


def _decode(regs: list[int], b: int) -> datetime.datetime:
    sec, mnt, hour, _wday, mday, mon, year, cent = regs
    dec = (lambda v: v) if b & 0x04 else (lambda v: (v >> 4) * 10 + (v & 15))
    h = dec(hour & 0x7F)
    if not b & 0x02:
        h = h % 12 + (12 if hour & 0x80 else 0)
    return datetime.datetime(dec(cent) * 100 + dec(year), dec(mon), dec(mday), h, dec(mnt), dec(sec), tzinfo=UTC)


@given(
    epoch=st.integers(0, 2**32 - 1),
    elapsed=st.integers(0, 10**14),
    fmt=st.sampled_from([0x02, 0x06, 0x00, 0x04]),
)
def test_time_registers_agree_with_python_datetime(epoch: int, elapsed: int, fmt: int):
    c = Rig(epoch=epoch)
    c.w(0x0B, fmt)
    c.at(elapsed)
    regs = c.time()
    want = datetime.datetime.fromtimestamp(epoch + elapsed // NS, tz=UTC)
    assert _decode(regs, fmt) == want
    assert regs[3] == want.isoweekday() % 7 + 1                  # 1 = Sunday


@given(
    when=st.datetimes(min_value=datetime.datetime(1980, 1, 1), max_value=datetime.datetime(2099, 12, 31, 23, 59, 59)),
    fmt=st.sampled_from([0x02, 0x06, 0x00, 0x04]),
)
def test_written_time_reads_back(when: datetime.datetime, fmt: int):
    when = when.replace(microsecond=0)
    c = Rig()
    c.w(0x0B, 0x80 | fmt)
    enc = (lambda v: v) if fmt & 0x04 else (lambda v: ((v // 10) << 4) | (v % 10))
    if fmt & 0x02:
        hour = enc(when.hour)
    else:
        hour = enc(when.hour % 12 or 12) | (0x80 if when.hour >= 12 else 0)
    for idx, val in ((0x00, enc(when.second)), (0x02, enc(when.minute)), (0x04, hour),
                     (0x07, enc(when.day)), (0x08, enc(when.month)),
                     (0x09, enc(when.year % 100)), (0x32, enc(when.year // 100))):
        c.w(idx, val)
    c.w(0x0B, fmt)
    assert _decode(c.time(), fmt) == when.replace(tzinfo=UTC)
    assert c.cmos.time_seconds() == int(when.replace(tzinfo=UTC).timestamp())
