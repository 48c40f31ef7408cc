"""8254 PIT: counter values from virtual time, IRQ0 deadlines, port 0x61."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backends.pc.bus import PortBus
from backends.pc.clock import VirtualClock
from backends.pc.pic import PicPair
from backends.pc.pit import PIT_HZ, Pit, ns_for_ticks, ticks_between

NS = 1_000_000_000


class Rig:
    def __init__(self, refresh_per_read: bool = False) -> None:
        self.clock = VirtualClock()
        self.pulses: list[int] = []
        self.levels: list[bool] = []
        self.pit = Pit(self.clock, irq=self._irq, refresh_per_read=refresh_per_read)
        self.clock.register(self.pit)
        self.bus = PortBus()
        self.bus.attach(self.pit)

    def _irq(self, level: bool) -> None:
        self.levels.append(level)
        if level:
            self.pulses.append(self.clock.now)

    def at(self, t: int) -> Rig:
        self.clock.advance_to(t)
        return self

    def program(self, channel: int, mode: int, count: int, access: int = 3) -> None:
        self.bus.write(0x43, 1, (channel << 6) | (access << 4) | (mode << 1))
        port = 0x40 + channel
        if access in (1, 3):
            self.bus.write(port, 1, count & 0xFF)
        if access in (2, 3):
            self.bus.write(port, 1, (count >> 8) & 0xFF)

    def latch_read(self, channel: int) -> int:
        self.bus.write(0x43, 1, channel << 6)
        lo = self.bus.read(0x40 + channel, 1)
        hi = self.bus.read(0x40 + channel, 1)
        return lo | (hi << 8)

    def run_until(self, t_end: int) -> None:
        """What the machine loop does: jump to deadlines and fire them."""
        while (d := self.clock.next_deadline()) is not None and d <= t_end:
            self.clock.advance_to(d)
            self.clock.fire_due()
        self.clock.advance_to(t_end)
        self.clock.fire_due()


def test_tick_conversion_is_exact_integer_math():
    assert ticks_between(0, NS) == PIT_HZ
    assert ticks_between(0, 838) == 0 and ticks_between(0, 839) == 1   # 1 tick = 838.095 ns
    for ticks in (1, 1000, 65536, 11932, PIT_HZ * 3):
        t = ns_for_ticks(ticks)
        assert ticks_between(0, t) == ticks and ticks_between(0, t - 1) == ticks - 1


def test_power_on_channel0_mode3_65536():
    r = Rig()
    assert r.pit.deadline() == ns_for_ticks(65536)
    r.bus.write(0x43, 1, 0xE2)               # read-back status of channel 0
    assert r.bus.read(0x40, 1) == 0x86        # OUT=1, rw=0 (unprogrammed), mode 3 (QEMU)
    assert r.bus.read(0x43, 1) == 0


def test_counter_readout_mode2_at_given_times():
    r = Rig()
    r.at(5_000)
    r.program(0, 2, 1000)
    t0 = 5_000
    for dt in (0, 838, 839, 100_000, 837_999, 838_095, 1_000_000, 3_141_592):
        r.at(t0 + dt)
        d = ticks_between(t0, t0 + dt)
        assert r.latch_read(0) == 1000 - d % 1000, dt


def test_counter_readout_mode3_counts_by_two():
    r = Rig()
    r.program(0, 3, 1000)
    r.at(ns_for_ticks(100))
    assert r.latch_read(0) == 1000 - 200
    r.at(ns_for_ticks(600))
    assert r.latch_read(0) == 1000 - 200     # (2*600) % 1000 == 200


def test_lobyte_hibyte_sequencing_without_latch():
    r = Rig()
    r.program(0, 2, 0x1234)
    r.at(ns_for_ticks(0x34))                  # counter = 0x1200
    assert r.bus.read(0x40, 1) == 0x00
    r.at(ns_for_ticks(0x35))                  # counter = 0x11FF between the reads
    assert r.bus.read(0x40, 1) == 0x11        # hibyte, taken live
    assert r.bus.read(0x40, 1) == 0xFF        # back to lobyte


def test_lobyte_only_and_hibyte_only_access():
    r = Rig()
    r.program(1, 2, 0x80, access=1)           # lobyte only: count 0x0080
    r.at(ns_for_ticks(0x10))
    assert r.bus.read(0x41, 1) == 0x70 and r.bus.read(0x41, 1) == 0x70
    r.program(1, 2, 0x0300, access=2)         # hibyte only: count 0x0300
    r.at(r.clock.now + ns_for_ticks(0x100) + 1)
    assert r.bus.read(0x41, 1) == 0x02 and r.bus.read(0x41, 1) == 0x02


def test_latch_freezes_value_and_second_latch_is_ignored():
    r = Rig()
    r.program(2, 0, 50000)
    r.at(ns_for_ticks(1000))
    r.bus.write(0x43, 1, 0x80)                # latch channel 2
    r.at(ns_for_ticks(2000))
    r.bus.write(0x43, 1, 0x80)                # ignored: still latched
    assert r.bus.read(0x42, 1) == (49000 & 0xFF)
    r.at(ns_for_ticks(3000))
    assert r.bus.read(0x42, 1) == 49000 >> 8
    assert r.latch_read(2) == 47000


def test_readback_status_and_count():
    r = Rig()
    r.program(2, 0, 100)
    r.bus.write(0x43, 1, 0xC8)                # read-back, count+status, channel 2
    assert r.bus.read(0x42, 1) == 0x30        # OUT low, lo/hi, mode 0, binary
    assert r.bus.read(0x42, 1) == 100
    assert r.bus.read(0x42, 1) == 0
    r.at(ns_for_ticks(100))
    r.bus.write(0x43, 1, 0xE8)                # status only
    assert r.bus.read(0x42, 1) == 0xB0        # terminal count reached: OUT high
    r.bus.write(0x43, 1, 0x05 << 1 | 0x30)    # channel 0, lo/hi, mode 5 -> status bits
    r.bus.write(0x43, 1, 0xE2)
    assert r.bus.read(0x40, 1) & 0x3F == 0x3A


def test_mode2_periodic_deadlines_and_pulses():
    r = Rig()
    r.at(1_000)
    r.program(0, 2, 11932)                    # ~100 Hz
    period0 = [1_000 + ns_for_ticks(k * 11932) for k in (1, 2, 3)]
    assert r.pit.deadline() == period0[0]
    r.run_until(period0[2])
    assert r.pulses == period0
    assert r.levels == [True, False] * 3      # pulses: raise then lower


def test_mode3_deadlines_are_full_periods_and_load_is_an_edge():
    r = Rig()
    r.program(0, 2, 1000)                     # OUT low in mode 2
    assert r.pulses == []
    r.at(10_000)
    r.program(0, 3, 1000)                     # QEMU: OUT goes high at load -> IRQ0
    assert r.pulses == [10_000]
    assert r.pit.deadline() == 10_000 + ns_for_ticks(1000)
    r.run_until(10_000 + ns_for_ticks(2000))
    assert r.pulses == [10_000, 10_000 + ns_for_ticks(1000), 10_000 + ns_for_ticks(2000)]


def test_mode0_one_shot_fires_once():
    r = Rig()
    r.program(0, 0, 5000)
    assert r.pit.deadline() == ns_for_ticks(5000)
    r.run_until(NS)
    assert r.pulses == [ns_for_ticks(5000)]
    assert r.pit.deadline() is None
    r.program(0, 0, 5000)                     # rearm
    assert r.pit.deadline() == NS + ns_for_ticks(5000)


def test_fire_catches_up_with_one_edge():
    r = Rig()
    r.program(0, 2, 1000)
    late = ns_for_ticks(5500)
    r.at(late)
    r.clock.fire_due()
    assert r.pulses == [late]                 # five missed periods merge into one
    assert r.pit.deadline() == ns_for_ticks(6000)


def test_reload_zero_means_65536():
    r = Rig()
    r.program(0, 2, 0)
    assert r.pit.deadline() == ns_for_ticks(65536)
    r.at(ns_for_ticks(1))
    assert r.latch_read(0) == 65535


def test_pic_sees_irq0():
    clock = VirtualClock()
    pic = PicPair()
    pit = Pit(clock, irq=lambda lvl: pic.set_irq(0, lvl))
    clock.register(pit)
    bus = PortBus()
    bus.attach(pic)
    bus.attach(pit)
    for port, val in ((0x20, 0x11), (0x21, 0x20), (0x21, 4), (0x21, 1), (0x21, 0xFE)):
        bus.write(port, 1, val)
    bus.write(0x43, 1, 0x34)
    bus.write(0x40, 1, 0x9C)
    bus.write(0x40, 1, 0x2E)                  # 11932
    assert not pic.has_interrupt()
    clock.advance_to(clock.next_deadline())
    clock.fire_due()
    assert pic.acknowledge() == 0x20


def test_port61_gate_speaker_and_out2_calibration_loop():
    r = Rig()
    assert r.bus.read(0x61, 1) & 0x03 == 0      # gate 2 low at power-on
    # Linux pit_calibrate_tsc(): gate on, speaker off, ch2 mode 0, 10 ms.
    r.bus.write(0x61, 1, (r.bus.read(0x61, 1) & ~0x02) | 0x01)
    r.bus.write(0x43, 1, 0xB0)
    latch = PIT_HZ // 100
    r.bus.write(0x42, 1, latch & 0xFF)
    r.bus.write(0x42, 1, latch >> 8)
    start = r.clock.now
    loops = 0
    while not r.bus.read(0x61, 1) & 0x20:
        r.clock.advance_insns(5)              # the guest's loop body costs time
        loops += 1
        assert loops < 1_000_000
    elapsed = r.clock.now - start
    assert ns_for_ticks(latch) <= elapsed < ns_for_ticks(latch) + 50
    assert r.bus.read(0x61, 1) & 0x23 == 0x21
    r.bus.write(0x61, 1, 0x03)
    assert r.bus.read(0x61, 1) & 0x03 == 0x03


def test_port61_refresh_bit_flips_every_15085ns():
    r = Rig()
    assert r.bus.read(0x61, 1) & 0x10 == 0
    r.at(15_084)
    assert r.bus.read(0x61, 1) & 0x10 == 0
    r.at(15_085)
    assert r.bus.read(0x61, 1) & 0x10 == 0x10
    assert r.bus.read(0x61, 1) & 0x10 == 0x10  # time-based, not per read
    r.at(30_170)
    assert r.bus.read(0x61, 1) & 0x10 == 0


def test_port61_refresh_per_read_like_qemu():
    r = Rig(refresh_per_read=True)
    seq = [r.bus.read(0x61, 1) & 0x10 for _ in range(4)]
    assert seq == [0x10, 0, 0x10, 0]


def test_gate_rising_edge_restarts_mode2():
    r = Rig()
    r.bus.write(0x61, 1, 0x01)
    r.program(2, 2, 1000)
    r.at(ns_for_ticks(400))
    r.bus.write(0x61, 1, 0x00)
    r.bus.write(0x61, 1, 0x01)                # rising edge reloads
    r.at(ns_for_ticks(400) + ns_for_ticks(10))
    assert r.latch_read(2) == 990


def test_state_round_trip_preserves_counting():
    r = Rig()
    r.program(0, 2, 3000)
    r.program(2, 3, 777)
    r.at(123_456_789)
    r.bus.write(0x43, 1, 0x00)                # leave a latch pending
    st = r.pit.state()
    other = Pit(r.clock)
    other.load_state(st)
    assert other.state() == st
    assert other.deadline() == r.pit.deadline()
    assert other.io_read(0x40, 1) == r.pit.io_read(0x40, 1)
    assert other.io_read(0x42, 1) == r.pit.io_read(0x42, 1)


@given(
    count=st.integers(2, 0x10000),
    mode=st.sampled_from([2, 3]),
    t1=st.integers(0, 10**8),
    dt=st.integers(0, 10**8),
)
def test_counter_counts_down_within_a_period(count: int, mode: int, t1: int, dt: int):
    r = Rig()
    r.program(0, mode, count & 0xFFFF)
    ch = r.pit.channels[0]
    d1, d2 = ticks_between(0, t1), ticks_between(0, t1 + dt)
    c1, c2 = ch.counter(t1), ch.counter(t1 + dt)
    assert 1 <= c1 <= count and 1 <= c2 <= count
    step = 1 if mode == 2 else 2              # QEMU's mode 3 counts down by two
    assert c1 == count - (step * d1) % count
    if (step * d1) // count == (step * d2) // count:
        assert c2 <= c1                        # never counts up inside a period


@given(count=st.integers(2, 0x10000), t=st.integers(0, 10**9))
def test_deadline_is_next_period_boundary(count: int, t: int):
    r = Rig()
    r.program(0, 2, count & 0xFFFF)
    r.at(t)
    r.clock.fire_due()
    d = r.pit.deadline()
    assert d is not None and d > t
    k = ticks_between(0, d)
    assert k % count == 0 and ticks_between(0, d - 1) == k - 1
    assert k - count <= ticks_between(0, t) < k
