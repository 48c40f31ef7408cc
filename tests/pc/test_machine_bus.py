"""All ISA devices on one bus: no port conflicts, IRQ wiring, state round trips."""
from __future__ import annotations

import json

from backends.pc.bus import PortBus
from backends.pc.clock import VirtualClock
from backends.pc.cmos import Cmos
from backends.pc.misc import DebugExit, PostPort
from backends.pc.pic import PicPair
from backends.pc.pit import Pit
from backends.pc.uart import Uart16550


def build():
    clock = VirtualClock()
    bus = PortBus()
    pic = PicPair()
    devs = {
        "pic": pic,
        "pit": Pit(clock, irq=lambda lvl: pic.set_irq(0, lvl)),
        "uart": Uart16550(clock, irq=lambda lvl: pic.set_irq(4, lvl)),
        "cmos": Cmos(clock, irq=lambda lvl: pic.set_irq(8, lvl)),
        "exit": DebugExit(),
        "post": PostPort(),
    }
    for dev in devs.values():
        bus.attach(dev)
        if hasattr(dev, "deadline"):
            clock.register(dev)
    return clock, bus, devs


def boot(clock, bus, devs) -> None:
    """A hobby kernel's device bring-up."""
    for port, val in ((0x20, 0x11), (0xA0, 0x11), (0x21, 0x20), (0xA1, 0x28), (0x21, 4),
                      (0xA1, 2), (0x21, 1), (0xA1, 1), (0x21, 0xE8), (0xA1, 0xFE)):
        bus.write(port, 1, val)
    bus.write(0x43, 1, 0x36)
    bus.write(0x40, 1, 0x9C)
    bus.write(0x40, 1, 0x2E)
    bus.write(0x3F9, 1, 0x01)
    bus.write(0x70, 1, 0x0B)
    bus.write(0x71, 1, 0x42)
    bus.write(0x80, 1, 0x42)
    for ch in b"ok":
        bus.write(0x3F8, 1, ch)
    devs["uart"].feed(b"in")


def test_all_devices_attach_without_conflicts():
    _, bus, devs = build()
    expected = {*range(0x20, 0x22), *range(0xA0, 0xA2), *range(0x40, 0x44), 0x61,
                *range(0x3F8, 0x400), 0x70, 0x71, *range(0xF4, 0xF8), 0x80}
    assert set(bus.devices) == expected
    assert len(set(map(id, bus.devices.values()))) == len(devs)


def test_interrupts_flow_from_devices_through_the_pic():
    clock, bus, devs = build()
    boot(clock, bus, devs)
    pic = devs["pic"]
    seen = []
    while clock.now < 30_500_000:
        if pic.has_interrupt():
            vec = pic.acknowledge()
            seen.append(vec)
            if vec == 0x24:
                bus.read(0x3F8, 1)                   # drain the UART
            if vec == 0x28:
                bus.write(0x70, 1, 0x0C)
                bus.read(0x71, 1)                    # ack the RTC
                bus.write(0xA0, 1, 0x20)
            bus.write(0x20, 1, 0x20)
            continue
        clock.advance_to(clock.next_deadline())
        clock.fire_due()
    assert seen[0] == 0x20                           # mode-3 load edge
    assert 0x24 in seen                              # UART received data
    assert seen.count(0x24) == 2                     # one RDI per input byte
    assert 30 <= seen.count(0x28) <= 32              # 1024 Hz RTC for ~30 ms
    assert seen.count(0x20) == 1 + 3                 # load edge + 100 Hz timer


def test_state_round_trips_through_json():
    clock, bus, devs = build()
    boot(clock, bus, devs)
    clock.advance_to(12_345_678)
    clock.fire_due()
    snap = json.loads(json.dumps({name: dev.state() for name, dev in devs.items()}))

    clock2, bus2, devs2 = build()
    clock2.advance_to(clock.now)
    for name, dev in devs2.items():
        dev.load_state(snap[name])
        assert dev.state() == snap[name], name
    # Both machines now behave identically.
    for port in (0x40, 0x40, 0x61, 0x3FA, 0x3FD, 0x3F8, 0x3FA, 0x21, 0x20, 0xA1):
        assert bus2.read(port, 1) == bus.read(port, 1), hex(port)
    for idx in (0x00, 0x0A, 0x0B, 0x0C, 0x17):
        bus.write(0x70, 1, idx)
        bus2.write(0x70, 1, idx)
        assert bus2.read(0x71, 1) == bus.read(0x71, 1)
    assert clock2.next_deadline() == clock.next_deadline()


def test_bus_reset_returns_devices_to_power_on():
    clock, bus, devs = build()
    fresh = {name: dev.state() for name, dev in devs.items()}
    boot(clock, bus, devs)
    bus.reset()
    for name in ("pic", "exit", "post"):
        assert devs[name].state() == fresh[name], name
    assert bus.read(0x3FD, 1) == 0x60 and bus.read(0x3FA, 1) == 0x01
