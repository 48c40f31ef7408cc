"""8259A pair: init sequences, masking, priority, EOI, cascade, spurious."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backends.pc.bus import PortBus
from backends.pc.pic import PicPair


def make() -> tuple[PicPair, PortBus]:
    bus = PortBus()
    pic = PicPair()
    bus.attach(pic)
    return pic, bus


def init_linux(bus: PortBus) -> None:
    """arch/x86/kernel/i8259.c init_8259A(auto_eoi=0): vectors 0x30/0x38."""
    bus.write(0x21, 1, 0xFF)
    bus.write(0xA1, 1, 0xFF)
    bus.write(0x20, 1, 0x11)      # ICW1: edge, cascade, ICW4 needed
    bus.write(0x21, 1, 0x30)      # ICW2
    bus.write(0x21, 1, 0x04)      # ICW3: slave on IR2
    bus.write(0x21, 1, 0x01)      # ICW4: 8086 mode, normal EOI
    bus.write(0xA0, 1, 0x11)
    bus.write(0xA1, 1, 0x38)
    bus.write(0xA1, 1, 0x02)      # ICW3: cascade identity 2
    bus.write(0xA1, 1, 0x01)
    bus.write(0x21, 1, 0xFB)      # cached masks: all masked but cascade
    bus.write(0xA1, 1, 0xFF)


def init_hobby(bus: PortBus, master_mask: int = 0x00, slave_mask: int = 0x00) -> None:
    """The OSDev-wiki remap to 0x20/0x28, interleaving both chips."""
    bus.write(0x20, 1, 0x11)
    bus.write(0xA0, 1, 0x11)
    bus.write(0x21, 1, 0x20)
    bus.write(0xA1, 1, 0x28)
    bus.write(0x21, 1, 0x04)
    bus.write(0xA1, 1, 0x02)
    bus.write(0x21, 1, 0x01)
    bus.write(0xA1, 1, 0x01)
    bus.write(0x21, 1, master_mask)
    bus.write(0xA1, 1, slave_mask)


def read_isr(bus: PortBus, port: int) -> int:
    bus.write(port, 1, 0x0B)
    return bus.read(port, 1)


def read_irr(bus: PortBus, port: int) -> int:
    bus.write(port, 1, 0x0A)
    return bus.read(port, 1)


def test_power_on_state_matches_qemu():
    pic, bus = make()
    assert bus.read(0x21, 1) == 0 and bus.read(0xA1, 1) == 0
    assert bus.read(0x20, 1) == 0            # IRR by default
    assert not pic.has_interrupt()
    assert pic.acknowledge() == 7            # base 0 -> spurious vector 7
    pic.pulse_irq(0)
    assert pic.has_interrupt()
    assert pic.acknowledge() == 0            # uninitialised base is 0


def test_linux_init_and_specific_eoi():
    pic, bus = make()
    init_linux(bus)
    assert bus.read(0x21, 1) == 0xFB and bus.read(0xA1, 1) == 0xFF
    pic.pulse_irq(0)
    assert not pic.has_interrupt()           # masked, but latched in IRR
    assert read_irr(bus, 0x20) == 0x01
    bus.write(0x21, 1, 0xFA)                 # unmask IRQ0 (Linux enable_8259A_irq)
    assert pic.has_interrupt()
    assert pic.acknowledge() == 0x30
    assert read_isr(bus, 0x20) == 0x01
    assert read_irr(bus, 0x20) == 0x00
    bus.write(0x20, 1, 0x60 + 0)             # specific EOI for IRQ0
    assert read_isr(bus, 0x20) == 0x00
    assert not pic.has_interrupt()


def test_hobby_remap_vectors_and_nonspecific_eoi():
    pic, bus = make()
    init_hobby(bus)
    pic.pulse_irq(1)
    assert pic.acknowledge() == 0x21
    bus.write(0x20, 1, 0x20)                 # non-specific EOI
    pic.pulse_irq(12)
    assert pic.acknowledge() == 0x2C
    assert read_isr(bus, 0xA0) == 1 << 4 and read_isr(bus, 0x20) == 1 << 2
    bus.write(0xA0, 1, 0x20)
    bus.write(0x20, 1, 0x20)
    assert read_isr(bus, 0xA0) == 0 and read_isr(bus, 0x20) == 0


def test_icw1_clears_imr_and_irr():
    pic, bus = make()
    init_hobby(bus, master_mask=0xFF)
    pic.pulse_irq(3)
    assert read_irr(bus, 0x20) == 0x08
    bus.write(0x20, 1, 0x11)
    assert bus.read(0x21, 1) == 0            # IMR cleared (measured on QEMU)
    assert bus.read(0x20, 1) == 0            # IRR cleared, read-IRR selected


def test_masking_latches_until_unmasked():
    pic, bus = make()
    init_hobby(bus, master_mask=0x08)
    pic.pulse_irq(3)
    assert not pic.has_interrupt()
    bus.write(0x21, 1, 0x00)
    assert pic.has_interrupt()
    assert pic.acknowledge() == 0x23


def test_fixed_priority_lowest_line_first():
    pic, bus = make()
    init_hobby(bus)
    for line in (5, 3, 1):
        pic.pulse_irq(line)
    assert read_irr(bus, 0x20) == 0b101010
    assert pic.acknowledge() == 0x21
    # IRQ1 in service blocks 3 and 5 until EOI.
    assert not pic.has_interrupt()
    bus.write(0x20, 1, 0x20)
    assert pic.acknowledge() == 0x23
    bus.write(0x20, 1, 0x20)
    assert pic.acknowledge() == 0x25


def test_nested_higher_priority_interrupts_lower_in_service():
    pic, bus = make()
    init_hobby(bus)
    pic.pulse_irq(4)
    assert pic.acknowledge() == 0x24
    pic.pulse_irq(6)
    assert not pic.has_interrupt()           # lower priority waits
    pic.pulse_irq(1)
    assert pic.has_interrupt()               # higher priority nests
    assert pic.acknowledge() == 0x21
    assert read_isr(bus, 0x20) == 0b10010
    bus.write(0x20, 1, 0x20)                 # non-specific EOI: highest (1)
    assert read_isr(bus, 0x20) == 0b10000
    assert not pic.has_interrupt()
    bus.write(0x20, 1, 0x20)
    assert pic.acknowledge() == 0x26


def test_specific_eoi_clears_only_named_bit():
    pic, bus = make()
    init_hobby(bus)
    pic.pulse_irq(5)
    pic.acknowledge()
    pic.pulse_irq(2)  # a master IRQ2 edge with nothing on the slave
    pic.pulse_irq(0)
    pic.acknowledge()
    assert read_isr(bus, 0x20) == 0b100001
    bus.write(0x20, 1, 0x65)                 # specific EOI IRQ5
    assert read_isr(bus, 0x20) == 0b000001


def test_ocw3_selects_irr_or_isr_and_sticks():
    pic, bus = make()
    init_hobby(bus)
    pic.pulse_irq(3)
    pic.pulse_irq(6)
    pic.acknowledge()
    bus.write(0x20, 1, 0x0B)
    assert bus.read(0x20, 1) == 0x08 and bus.read(0x20, 1) == 0x08
    bus.write(0x20, 1, 0x0A)
    assert bus.read(0x20, 1) == 0x40
    bus.write(0x20, 1, 0x08)                 # OCW3 without RR: selection unchanged
    assert bus.read(0x20, 1) == 0x40


def test_edge_triggered_line_needs_new_edge():
    pic, bus = make()
    init_hobby(bus)
    pic.set_irq(4, True)
    assert pic.acknowledge() == 0x24
    bus.write(0x20, 1, 0x20)
    pic.set_irq(4, True)                     # still high: no new request
    assert not pic.has_interrupt()
    pic.set_irq(4, False)
    assert not pic.has_interrupt()
    pic.set_irq(4, True)
    assert pic.acknowledge() == 0x24


def test_spurious_irq7_when_request_vanishes():
    pic, bus = make()
    init_hobby(bus)
    pic.pulse_irq(3)
    assert pic.has_interrupt()
    bus.write(0x21, 1, 0x08)                 # masked between INTR and INTA
    assert pic.acknowledge() == 0x27
    assert read_isr(bus, 0x20) == 0          # spurious: nothing in service


def test_spurious_on_slave_marks_cascade_in_service():
    pic, bus = make()
    init_hobby(bus)
    pic.pulse_irq(9)
    bus.write(0xA1, 1, 0x02)                 # slave request withdrawn
    assert pic.has_interrupt()               # master IRR2 was latched by the edge
    assert pic.acknowledge() == 0x2F
    assert read_isr(bus, 0x20) == 0x04 and read_isr(bus, 0xA0) == 0


def test_cascade_all_slave_lines():
    pic, bus = make()
    init_hobby(bus)
    for line in range(8, 16):
        pic.pulse_irq(line)
        assert pic.acknowledge() == 0x28 + line - 8
        assert read_isr(bus, 0xA0) == 1 << (line - 8)
        assert read_isr(bus, 0x20) == 0x04
        bus.write(0xA0, 1, 0x20)
        bus.write(0x20, 1, 0x20)
        assert not pic.has_interrupt()


def test_cascade_nesting_and_priority_vs_master():
    pic, bus = make()
    init_hobby(bus)
    pic.pulse_irq(3)
    pic.pulse_irq(8)
    assert pic.acknowledge() == 0x28         # IRQ8 rides IR2: beats IRQ3
    pic.pulse_irq(1)
    assert pic.acknowledge() == 0x21         # IR1 nests over IR2
    bus.write(0x20, 1, 0x20)                 # EOI IRQ1
    pic.pulse_irq(9)
    assert not pic.has_interrupt()           # slave busy with IRQ8
    bus.write(0xA0, 1, 0x20)                 # slave EOI: IRQ9 now wanted, master IR2 still in service
    assert not pic.has_interrupt()
    bus.write(0x20, 1, 0x20)
    assert pic.acknowledge() == 0x29
    bus.write(0xA0, 1, 0x20)
    bus.write(0x20, 1, 0x20)
    assert pic.acknowledge() == 0x23


def test_auto_eoi_leaves_isr_clear():
    pic, bus = make()
    bus.write(0x20, 1, 0x11)
    bus.write(0x21, 1, 0x40)
    bus.write(0x21, 1, 0x04)
    bus.write(0x21, 1, 0x03)                 # ICW4: AEOI
    pic.pulse_irq(2)
    pic.pulse_irq(5)
    assert pic.acknowledge() == 0x07         # IR2, empty slave: slave spurious, slave base 0
    assert read_isr(bus, 0x20) == 0
    assert pic.acknowledge() == 0x45
    assert read_isr(bus, 0x20) == 0


def test_single_mode_without_icw4_skips_icw3():
    pic, bus = make()
    bus.write(0x20, 1, 0x12)                 # ICW1: single, no ICW4
    bus.write(0x21, 1, 0x50)                 # ICW2 and done
    bus.write(0x21, 1, 0xFD)                 # this is OCW1 now
    assert bus.read(0x21, 1) == 0xFD
    pic.pulse_irq(1)
    assert pic.acknowledge() == 0x51


def test_poll_mode_acknowledges():
    pic, bus = make()
    init_hobby(bus, master_mask=0xFF)
    bus.write(0x21, 1, 0x00)
    pic.pulse_irq(6)
    bus.write(0x20, 1, 0x0C)                 # OCW3 poll
    assert bus.read(0x20, 1) == 0x86
    assert read_isr(bus, 0x20) == 0x40
    bus.write(0x20, 1, 0x0C)
    assert bus.read(0x21, 1) == 0x00         # poll with nothing pending
    assert bus.read(0x21, 1) == 0x00         # and next read is IMR again


def test_rotate_on_nonspecific_eoi():
    pic, bus = make()
    init_hobby(bus)
    pic.pulse_irq(0)
    assert pic.acknowledge() == 0x20
    bus.write(0x20, 1, 0xA0)                 # rotate on non-specific EOI: IRQ0 lowest
    pic.pulse_irq(0)
    pic.pulse_irq(5)
    assert pic.acknowledge() == 0x25


def test_intr_callback_follows_output():
    levels: list[bool] = []
    pic = PicPair(on_intr=levels.append)
    bus = PortBus()
    bus.attach(pic)
    init_hobby(bus)
    pic.pulse_irq(3)
    pic.acknowledge()
    assert levels == [True, False]


def test_state_round_trip():
    pic, bus = make()
    init_hobby(bus, master_mask=0x10)
    pic.pulse_irq(9)
    pic.pulse_irq(4)
    pic.acknowledge()
    clone = PicPair()
    clone.load_state(pic.state())
    assert clone.state() == pic.state()
    assert clone.has_interrupt() == pic.has_interrupt()


@given(
    pending=st.sets(st.integers(0, 15).filter(lambda n: n != 2), max_size=15),
    mask=st.integers(0, 0xFFFF),
)
def test_first_ack_is_lowest_deliverable_line(pending: set[int], mask: int):
    pic, bus = make()
    init_hobby(bus, master_mask=(mask & 0xFB), slave_mask=mask >> 8)
    for line in sorted(pending):
        pic.pulse_irq(line)
    # Delivery order on a PC: 0, 1, (8..15 via IR2), 3..7.
    order = [0, 1, *range(8, 16), *range(3, 8)]
    want = next((ln for ln in order if ln in pending and not mask & (1 << ln)), None)
    assert pic.has_interrupt() == (want is not None)
    if want is not None:
        base = 0x20 if want < 8 else 0x28
        assert pic.acknowledge() == base + (want & 7)
