/* 8259A interrupt controllers and the 8254 timer. */
#include "lib.h"

/* ICW1..ICW4: edge triggered, cascade on IRQ2, 8086 mode; all lines masked. */
void pic_remap(uint8_t master_base, uint8_t slave_base)
{
	outb(PIC1_CMD, 0x11);
	io_wait();
	outb(PIC2_CMD, 0x11);
	io_wait();
	outb(PIC1_DATA, master_base);
	io_wait();
	outb(PIC2_DATA, slave_base);
	io_wait();
	outb(PIC1_DATA, 0x04); /* slave on IR2 */
	io_wait();
	outb(PIC2_DATA, 0x02); /* slave identity 2 */
	io_wait();
	outb(PIC1_DATA, 0x01); /* 8086 mode, normal EOI */
	io_wait();
	outb(PIC2_DATA, 0x01);
	io_wait();
	pic_set_masks(0xFF, 0xFF);
}

void pic_set_masks(uint8_t master, uint8_t slave)
{
	outb(PIC1_DATA, master);
	outb(PIC2_DATA, slave);
}

void pic_eoi(int irq)
{
	if (irq >= 8)
		outb(PIC2_CMD, 0x20);
	outb(PIC1_CMD, 0x20);
}

/* OCW3: 0x0A selects the IRR, 0x0B the ISR, for the next read of port 0. */
uint16_t pic_read_irr(void)
{
	outb(PIC1_CMD, 0x0A);
	outb(PIC2_CMD, 0x0A);
	return (uint16_t)(inb(PIC1_CMD) | (inb(PIC2_CMD) << 8));
}

uint16_t pic_read_isr(void)
{
	uint16_t v;

	outb(PIC1_CMD, 0x0B);
	outb(PIC2_CMD, 0x0B);
	v = (uint16_t)(inb(PIC1_CMD) | (inb(PIC2_CMD) << 8));
	outb(PIC1_CMD, 0x0A);
	outb(PIC2_CMD, 0x0A);
	return v;
}

/* Control word: channel, lobyte/hibyte access, mode, binary. */
void pit_program(int channel, int mode, uint16_t divisor)
{
	outb(0x43, (uint8_t)((channel << 6) | 0x30 | (mode << 1)));
	outb((uint16_t)(0x40 + channel), (uint8_t)(divisor & 0xFF));
	outb((uint16_t)(0x40 + channel), (uint8_t)(divisor >> 8));
}
