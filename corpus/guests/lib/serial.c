/* Polled 16550 UART driver for COM1. */
#include "lib.h"

void serial_init(void)
{
	outb(COM1 + 1, 0x00); /* IER: no interrupts */
	outb(COM1 + 3, 0x80); /* LCR: DLAB=1 */
	outb(COM1 + 0, 0x01); /* DLL: divisor 1 (115200 baud) */
	outb(COM1 + 1, 0x00); /* DLM */
	outb(COM1 + 3, 0x03); /* LCR: 8 data bits, no parity, 1 stop bit */
	outb(COM1 + 2, 0xC7); /* FCR: enable and clear FIFOs, 14-byte trigger */
	outb(COM1 + 4, 0x03); /* MCR: DTR, RTS (OUT2 off: no IRQ) */
}

void serial_putc(char c)
{
	while (!(inb(COM1 + 5) & 0x20)) /* LSR.THRE */
		;
	outb(COM1, (uint8_t)c);
}

/* Wait until the transmitter is completely idle (LSR.TEMT): needed before
 * touching the divisor latch or FIFO control. */
void serial_flush(void)
{
	while (!(inb(COM1 + 5) & 0x40))
		;
}
