"""isa-debug-exit and the POST port."""
from __future__ import annotations

from backends.pc.bus import PortBus
from backends.pc.misc import DebugExit, PostPort


def test_debug_exit_accepts_every_width_at_every_port():
    codes: list[int] = []
    bus = PortBus()
    dev = bus.attach(DebugExit(on_exit=codes.append))
    bus.write(0xF4, 1, 0x10)
    bus.write(0xF5, 2, 0x1234)
    bus.write(0xF6, 4, 0xDEADBEEF)
    bus.write(0xF7, 1, 0x1FF)                 # the bus masks to the access size
    assert codes == [0x10, 0x1234, 0xDEADBEEF, 0xFF]
    assert dev.exit_code == 0xFF
    assert dev.state() == {"exit_code": 0xFF}


def test_debug_exit_reads_zero_and_qemu_status():
    bus = PortBus()
    bus.attach(DebugExit())
    assert [bus.read(0xF4, 1), bus.read(0xF4, 2), bus.read(0xF4, 4), bus.read(0xF5, 1)] == [0, 0, 0, 0]
    assert DebugExit.qemu_status(0x10) == 0x21        # measured: QEMU exited with 33
    assert DebugExit.qemu_status(0) == 1


def test_debug_exit_custom_iobase():
    bus = PortBus()
    bus.attach(DebugExit(iobase=0x501, iosize=2))
    assert set(bus.devices) == {0x501, 0x502}


def test_post_port_records_codes_and_reads_all_ones():
    bus = PortBus()
    post = bus.attach(PostPort())
    for code in (0x00, 0x55, 0xAA):
        bus.write(0x80, 1, code)
    assert post.last == 0xAA and post.codes == [0x00, 0x55, 0xAA]
    assert bus.read(0x80, 1) == 0xFF
    assert bus.read(0x80, 2) == 0xFFFF                 # 0x81 undriven here too
    bus.write(0x80, 2, 0x1234)                         # byte device: low byte to 0x80
    assert post.last == 0x34
    post.reset()
    assert post.state() == {"last": None, "codes": []}
