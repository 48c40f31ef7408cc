"""A 16550A UART, as COM1 (ports 0x3F8-0x3FF, IRQ4) by default.

Transmission is instantaneous: a byte written to THR goes straight to
``on_tx`` and ``self.output``, so LSR.THRE and LSR.TEMT read as set again by
the time the guest looks.  Behaviour follows QEMU 7.2's hw/char/serial.c
(checked against qemu-system-i386 7.2 with a probe kernel):

* Reset values: IER 0, IIR 0x01, LCR 0, MCR 0x08 (OUT2), LSR 0x60,
  MSR 0xB0 (DCD|DSR|CTS), divisor 12 (9600 baud), FCR 0.
* Interrupt identification, highest first: line status (IER bit 2, LSR
  OE/PE/FE/BI), character timeout (0x0C, FIFO mode only), received data
  (IER bit 0; in FIFO mode only once the trigger level is reached), THR empty
  (IER bit 1), modem status (IER bit 3, never pending here).  IIR bits 7:6
  are 11 while the FIFOs are enabled.
* THRE interrupt: transmitting sets it pending; reading IIR while it is the
  reported source clears it; writing THR clears it and the (instant)
  transmission sets it again, so the line drops and rises: a new edge.
  Changing IER bit 1 re-samples THRE (QEMU does this for Windows); writing
  the same IER value again does not.  FCR with "clear transmit FIFO"
  also sets it pending.
* Receive: ``feed()`` queues host input; like a QEMU chardev it only hands
  the UART as many bytes as it can take (1 without FIFO when RBR is empty;
  up to the trigger level, or 1 beyond it, with the 16-byte FIFO), so input
  is never lost to overrun.  RBR reads pull more.  With the FIFO below its
  trigger level the timeout interrupt fires 4 character times after the last
  receive/read, measured on the VirtualClock (Timed protocol; register the
  UART with the clock).  Reading an empty FIFO returns 0.
* Loopback (MCR bit 4): transmitted bytes are received instead of sent; MSR
  reads reflect MCR (DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD); host input is
  held back while looping.
* MCR.OUT2 does not gate the IRQ line (QEMU does not model that PC wiring).

IRQ convention: ``irq(level: bool)`` follows the UART's INTR output and is
called only when the level changes; connect it to ``pic.set_irq(4, level)``.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .bus import Device
from .clock import VirtualClock

NS_PER_S = 1_000_000_000
BAUD_BASE = 115200
FIFO_LEN = 16

LSR_DR, LSR_OE, LSR_BI, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x10, 0x20, 0x40
LSR_INT_ANY = 0x1E
IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 0x01, 0x02, 0x04, 0x08
IIR_NO_INT, IIR_THRI, IIR_RDI, IIR_RLSI, IIR_CTI, IIR_FIFO = 0x01, 0x02, 0x04, 0x06, 0x0C, 0xC0
FCR_FE, FCR_RFR, FCR_XFR = 0x01, 0x02, 0x04
MCR_LOOP = 0x10
LCR_DLAB = 0x80

_TRIGGER = {0x00: 1, 0x40: 4, 0x80: 8, 0xC0: 14}
_REG_FIELDS = ("rbr", "ier", "iir", "lcr", "mcr", "lsr", "msr", "scr", "divider", "fcr",
               "char_time", "thr_ipending", "timeout_ipending")


class Uart16550(Device):
    """One 16550A serial port."""

    name = "uart"

    def __init__(
        self,
        clock: VirtualClock | None = None,
        irq: Callable[[bool], None] | None = None,
        on_tx: Callable[[int], None] | None = None,
        base: int = 0x3F8,
    ) -> None:
        self.clock = clock or VirtualClock()
        self.irq = irq
        self.on_tx = on_tx
        self.base = base
        self.output = bytearray()
        self.reset()

    def port_ranges(self) -> Iterable[tuple[int, int]]:
        return [(self.base, 8)]

    def reset(self) -> None:
        self.rbr = 0
        self.ier = 0
        self.iir = IIR_NO_INT
        self.lcr = 0
        self.mcr = 0x08
        self.lsr = LSR_TEMT | LSR_THRE
        self.msr = 0xB0
        self.scr = 0
        self.divider = 12
        self.fcr = 0
        self.char_time = (NS_PER_S // 9600) * 10   # 9600 8N1
        self.thr_ipending = 0
        self.timeout_ipending = 0
        self.rx_fifo: deque[int] = deque()
        self.pending_input: deque[int] = deque()
        self.timeout_at: int | None = None
        self._level = False
        if self.irq:
            self.irq(False)

    # -- helpers --------------------------------------------------------------
    @property
    def fifo_enabled(self) -> bool:
        return bool(self.fcr & FCR_FE)

    @property
    def trigger_level(self) -> int:
        return _TRIGGER[self.fcr & 0xC0]

    def _update_parameters(self) -> None:
        """Recompute the frame time after a divisor/LCR write (QEMU keeps the
        previous value while the divisor is invalid)."""
        if not 0 < self.divider <= BAUD_BASE:
            return
        frame = 1 + (self.lcr & 3) + 5 + (2 if self.lcr & 0x04 else 1) + (1 if self.lcr & 0x08 else 0)
        self.char_time = (NS_PER_S // (BAUD_BASE // self.divider)) * frame

    def _update_irq(self) -> None:
        ident = IIR_NO_INT
        if self.ier & IER_RLSI and self.lsr & LSR_INT_ANY:
            ident = IIR_RLSI
        elif self.ier & IER_RDI and self.timeout_ipending:
            ident = IIR_CTI
        elif (self.ier & IER_RDI and self.lsr & LSR_DR
              and (not self.fifo_enabled or len(self.rx_fifo) >= self.trigger_level)):
            ident = IIR_RDI
        elif self.ier & IER_THRI and self.thr_ipending:
            ident = IIR_THRI
        elif self.ier & IER_MSI and self.msr & 0x0F:
            ident = 0x00
        self.iir = ident | (self.iir & 0xF0)
        level = ident != IIR_NO_INT
        if level != self._level:
            self._level = level
            if self.irq:
                self.irq(level)

    # -- receive path -----------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Queue host input for the guest."""
        self.pending_input.extend(data)
        self._pump()

    def _can_receive(self) -> int:
        if self.fifo_enabled:
            n = len(self.rx_fifo)
            if n >= FIFO_LEN:
                return 0
            return self.trigger_level - n if n <= self.trigger_level else 1
        return 0 if self.lsr & LSR_DR else 1

    def _pump(self) -> None:
        if self.mcr & MCR_LOOP:
            return
        while self.pending_input:
            n = min(self._can_receive(), len(self.pending_input))
            if n == 0:
                return
            self._receive(bytes(self.pending_input.popleft() for _ in range(n)))

    def _receive(self, data: bytes) -> None:
        if self.fifo_enabled:
            for b in data:
                if len(self.rx_fifo) < FIFO_LEN:
                    self.rx_fifo.append(b)
                else:
                    self.lsr |= LSR_OE      # overrun keeps the old contents
            self.lsr |= LSR_DR
            self.timeout_at = self.clock.now + 4 * self.char_time
        else:
            if self.lsr & LSR_DR:
                self.lsr |= LSR_OE
            self.rbr = data[0]
            self.lsr |= LSR_DR
        self._update_irq()

    # -- Timed: FIFO character timeout -------------------------------------------
    def deadline(self) -> int | None:
        return self.timeout_at

    def fire(self, now: int) -> None:
        if self.timeout_at is None or now < self.timeout_at:
            return
        self.timeout_at = None
        if self.rx_fifo:
            self.timeout_ipending = 1
            self._update_irq()

    # -- transmit path ----------------------------------------------------------
    def _transmit(self, byte: int) -> None:
        self.thr_ipending = 0
        self.lsr &= ~(LSR_THRE | LSR_TEMT)
        self._update_irq()
        self.lsr |= LSR_THRE
        self.thr_ipending = 1
        self._update_irq()
        if self.mcr & MCR_LOOP:
            self._receive(bytes([byte]))
        else:
            self.output.append(byte)
            if self.on_tx:
                self.on_tx(byte)
        self.lsr |= LSR_TEMT

    # -- ports -------------------------------------------------------------------
    def io_write(self, port: int, size: int, value: int) -> None:
        reg = (port - self.base) & 7
        value &= 0xFF
        dlab = self.lcr & LCR_DLAB
        if reg == 0:
            if dlab:
                self.divider = (self.divider & 0xFF00) | value
                self._update_parameters()
            else:
                self._transmit(value)
        elif reg == 1:
            if dlab:
                self.divider = (self.divider & 0x00FF) | (value << 8)
                self._update_parameters()
            else:
                self._write_ier(value)
        elif reg == 2:
            self._write_fcr(value)
        elif reg == 3:
            self.lcr = value
            self._update_parameters()
        elif reg == 4:
            was_loop = self.mcr & MCR_LOOP
            self.mcr = value & 0x1F
            if was_loop and not self.mcr & MCR_LOOP:
                self._pump()
        elif reg == 7:
            self.scr = value
        # LSR and MSR writes are ignored (QEMU)

    def _write_ier(self, value: int) -> None:
        changed = (self.ier ^ value) & 0x0F
        self.ier = value & 0x0F
        if changed & IER_THRI:
            self.thr_ipending = int(bool(self.ier & IER_THRI and self.lsr & LSR_THRE))
        if changed:
            self._update_irq()

    def _write_fcr(self, value: int) -> None:
        if (value ^ self.fcr) & FCR_FE:    # toggling the FIFOs flushes both
            value |= FCR_RFR | FCR_XFR
        if value & FCR_RFR:
            self.lsr &= ~(LSR_DR | LSR_BI)
            self.timeout_at = None
            self.timeout_ipending = 0
            self.rx_fifo.clear()
        if value & FCR_XFR:
            self.lsr |= LSR_THRE
            self.thr_ipending = 1
        self.fcr = value & 0xC9
        self.iir = (self.iir & 0x0F) | (IIR_FIFO if value & FCR_FE else 0)
        self._update_irq()
        self._pump()

    def io_read(self, port: int, size: int) -> int:
        reg = (port - self.base) & 7
        dlab = self.lcr & LCR_DLAB
        if reg == 0:
            return self.divider & 0xFF if dlab else self._read_rbr()
        if reg == 1:
            return (self.divider >> 8) & 0xFF if dlab else self.ier
        if reg == 2:
            ret = self.iir
            if ret & 0x0F == IIR_THRI:      # reading the THRE source clears it
                self.thr_ipending = 0
                self._update_irq()
            return ret
        if reg == 3:
            return self.lcr
        if reg == 4:
            return self.mcr
        if reg == 5:
            ret = self.lsr
            if self.lsr & (LSR_BI | LSR_OE):
                self.lsr &= ~(LSR_BI | LSR_OE)
                self._update_irq()
            return ret
        if reg == 6:
            return self._read_msr()
        return self.scr

    def _read_rbr(self) -> int:
        if self.fifo_enabled:
            ret = self.rx_fifo.popleft() if self.rx_fifo else 0
            if not self.rx_fifo:
                self.lsr &= ~(LSR_DR | LSR_BI)
            else:
                self.timeout_at = self.clock.now + 4 * self.char_time
            self.timeout_ipending = 0
        else:
            ret = self.rbr
            self.lsr &= ~(LSR_DR | LSR_BI)
        self._update_irq()
        self._pump()
        return ret

    def _read_msr(self) -> int:
        if self.mcr & MCR_LOOP:
            m = self.mcr
            return ((m & 0x0C) << 4) | ((m & 0x02) << 3) | ((m & 0x01) << 5)
        ret = self.msr
        if self.msr & 0x0F:
            self.msr &= 0xF0
            self._update_irq()
        return ret

    # -- snapshots ----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        st: dict[str, Any] = {f: getattr(self, f) for f in _REG_FIELDS}
        st["rx_fifo"] = list(self.rx_fifo)
        st["pending_input"] = list(self.pending_input)
        st["timeout_at"] = self.timeout_at
        st["irq_level"] = int(self._level)
        return st   # self.output is host-side history, not device state

    def load_state(self, st: dict[str, Any]) -> None:
        for f in _REG_FIELDS:
            setattr(self, f, int(st[f]))
        self.rx_fifo = deque(st["rx_fifo"])
        self.pending_input = deque(st["pending_input"])
        self.timeout_at = st["timeout_at"]
        self._level = bool(st["irq_level"])
