/*
 * portio: port I/O against the devices every backend has: CMOS NVRAM and
 * status registers, PIC mask and OCW3 registers, and string I/O (ins/outs)
 * to the CMOS, the PIC and COM1.  Only deterministic values are printed.
 */
#include "lib.h"

const char guest_name[] = "portio";

/* strio.S */
void rep_outsb(uint16_t port, const void *buf, uint32_t count);
void rep_outsw(uint16_t port, const void *buf, uint32_t count);
void rep_outsl(uint16_t port, const void *buf, uint32_t count);
void rep_insb(uint16_t port, void *buf, uint32_t count);
void rep_insw(uint16_t port, void *buf, uint32_t count);
void rep_insl(uint16_t port, void *buf, uint32_t count);
uint32_t insb_down(uint16_t port, uint8_t *last, uint32_t count);
uint32_t outsb_insb_once(uint16_t port, const uint8_t *src, uint8_t *dst);

#define CMOS_IDX  0x70
#define CMOS_DATA 0x71
#define NVRAM_LO  0x40 /* 0x40..0x4f: unused by the firmware (zero in QEMU) */
#define NVRAM_N   16

static uint8_t cmos_read(uint8_t idx)
{
	outb(CMOS_IDX, idx);
	return inb(CMOS_DATA);
}

static void cmos_write(uint8_t idx, uint8_t v)
{
	outb(CMOS_IDX, idx);
	outb(CMOS_DATA, v);
}

static void cmos_tests(void)
{
	uint8_t saved[NVRAM_N], got[8];
	uint16_t words[8];
	int i, good = 1;

	for (i = 0; i < NVRAM_N; i++)
		saved[i] = cmos_read((uint8_t)(NVRAM_LO + i));

	for (i = 0; i < NVRAM_N; i++)
		cmos_write((uint8_t)(NVRAM_LO + i), (uint8_t)(0xA5 ^ (i * 0x11)));
	for (i = 0; i < NVRAM_N; i++)
		good &= cmos_read((uint8_t)(NVRAM_LO + i)) == (uint8_t)(0xA5 ^ (i * 0x11));
	check(good, "cmos nvram 0x40-0x4f: 16 bytes written and read back");

	/* Bit 7 of the index is the NMI mask: it selects the same register. */
	outb(CMOS_IDX, 0x80 | (NVRAM_LO + 3));
	good = inb(CMOS_DATA) == (uint8_t)(0xA5 ^ 0x33);
	outb(CMOS_IDX, NVRAM_LO + 3);
	check(good, "cmos index bit 7 (NMI mask) ignored for selection");

	/* rep outsw to the index/data pair: each word is index (low), data (high). */
	for (i = 0; i < 8; i++)
		words[i] = (uint16_t)((NVRAM_LO + 8 + i) | ((0x30 + i) << 8));
	rep_outsw(CMOS_IDX, words, 8);
	good = 1;
	for (i = 0; i < 8; i++)
		good &= cmos_read((uint8_t)(NVRAM_LO + 8 + i)) == 0x30 + i;
	check(good, "rep outsw to 0x70: 8 nvram bytes written via index/data words");

	/* rep insb from the data port re-reads the selected register. */
	outb(CMOS_IDX, NVRAM_LO + 10);
	rep_insb(CMOS_DATA, got, 4);
	check(got[0] == 0x32 && got[1] == 0x32 && got[2] == 0x32 && got[3] == 0x32,
	      "rep insb from 0x71: 4 copies of nvram[0x4a]");

	/* Word read of the pair: the data byte is the high byte. */
	outb(CMOS_IDX, NVRAM_LO + 12);
	check((inw(CMOS_IDX) >> 8) == 0x34, "inw 0x70: data byte in the high half");

	for (i = 0; i < NVRAM_N; i++)
		cmos_write((uint8_t)(NVRAM_LO + i), saved[i]);
	good = 1;
	for (i = 0; i < NVRAM_N; i++)
		good &= cmos_read((uint8_t)(NVRAM_LO + i)) == saved[i];
	check(good, "cmos nvram restored");

	/* Status registers: only bits that QEMU and the MC146818 datasheet fix. */
	kprintf("cmos status B: 24-hour bit = %u\n", (cmos_read(0x0B) >> 1) & 1);
	check(cmos_read(0x0B) & 0x02, "cmos status B 24-hour mode");
	check(cmos_read(0x0D) & 0x80, "cmos status D VRT (valid RAM and time)");
}

static void pic_tests(void)
{
	static const uint8_t pats[4] = {0x00, 0xA5, 0x5A, 0xFF};
	uint8_t seq[3] = {0x12, 0x34, 0xFB}, got[4], one = 0, src = 0xEF;
	uint16_t w;
	int i, good = 1;

	for (i = 0; i < 4; i++) {
		uint8_t inv = (uint8_t)~pats[i];

		outb(PIC1_DATA, pats[i]);
		outb(PIC2_DATA, inv);
		good &= inb(PIC1_DATA) == pats[i] && inb(PIC2_DATA) == inv;
	}
	pic_set_masks(0xFF, 0xFF);
	check(good, "PIC IMR write/read-back on both PICs (4 patterns)");

	kprintf("PIC at rest: ISR=0x%04x, IRR without IRQ0=0x%04x\n", pic_read_isr(),
		pic_read_irr() & 0xFFFE);
	check(pic_read_isr() == 0 && (pic_read_irr() & 0xFFFE) == 0, "PIC OCW3 ISR/IRR at rest");

	/* rep outsb to the IMR: the last byte wins; rep insb reads it back. */
	rep_outsb(PIC1_DATA, seq, 3);
	rep_insb(PIC1_DATA, got, 4);
	check(got[0] == 0xFB && got[1] == 0xFB && got[2] == 0xFB && got[3] == 0xFB,
	      "rep outsb/insb on the master IMR");

	/* Single outsb/insb: ESI and EDI each advance by one. */
	i = (int)outsb_insb_once(PIC2_DATA, &src, &one);
	check(one == 0xEF && i == 0x0101, "outsb/insb without rep (slave IMR)");

	/* std; rep insb: fills downwards. */
	got[0] = got[1] = got[2] = got[3] = 0;
	outb(PIC1_DATA, 0xC3);
	i = (int)(insb_down(PIC1_DATA, &got[3], 3) - (uint32_t)&got[3]);
	check(i == -3 && got[3] == 0xC3 && got[2] == 0xC3 && got[1] == 0xC3 && got[0] == 0,
	      "std; rep insb fills downwards");

	/* outw to 0x20: OCW3 "read ISR" in the low byte, the IMR in the high byte. */
	outw(PIC1_CMD, (uint16_t)(0x0B | (0x7E << 8)));
	w = inw(PIC1_CMD);
	check(w == 0x7E00, "outw/inw 0x20: OCW3 + IMR in one word (ISR 0, IMR 0x7e)");
	outb(PIC2_CMD, 0x0B);
	pic_set_masks(0xFF, 0xFF);
	rep_insw(PIC2_CMD, &w, 1);
	check(w == 0xFF00, "rep insw 0xa0: slave ISR 0 and IMR 0xff");
	pic_set_masks(0xFF, 0xFF);
	outb(PIC1_CMD, 0x0A);
	outb(PIC2_CMD, 0x0A);
}

static void wait_thre(void)
{
	while (!(inb(COM1 + 5) & 0x20))
		;
}

static void uart_tests(void)
{
	static const char line16[] = "[rep outsb 16B]\n";
	static const char longer[] = "[rep outsb: 64 bytes in 4 chunks of 16, each after THRE.......]\n";
	uint32_t d, i, n;

	/* A 16-byte burst fits the transmit FIFO once THRE (FIFO empty) is set. */
	wait_thre();
	rep_outsb(COM1, line16, 16);
	n = sizeof(longer) - 1;
	for (i = 0; i < n; i += 16) {
		wait_thre();
		rep_outsb(COM1, longer + i, n - i < 16 ? n - i : 16);
	}
	wait_thre();

	/* Scratch register by byte, then a dword read of MCR|LSR|MSR|SCR:
	 * only MCR (byte 0) and SCR (byte 3) have fixed values. */
	outb(COM1 + 7, 0x5C);
	d = inl(COM1 + 4);
	check((d & 0xFF) == 0x03 && (d >> 24) == 0x5C, "inl 0x3fc: MCR=0x03 and SCR=0x5c");

	/* With DLAB=1, a dword at 0x3f8 covers DLL, DLM, IIR/FCR, LCR. */
	serial_flush(); /* TEMT: nothing left to shift out */
	outb(COM1 + 3, 0x83);
	d = inl(COM1);
	outl(COM1, 0x03C70001u); /* DLL=1, DLM=0, FCR=0xc7, LCR=0x03 (DLAB off) */
	kprintf("inl 0x3f8 (DLAB=1): DLL=0x%02x DLM=0x%02x LCR=0x%02x\n", d & 0xFF,
		(d >> 8) & 0xFF, d >> 24);
	check((d & 0xFFFF) == 0x0001 && (d >> 24) == 0x83 && (((d >> 16) & 0xC1) == 0xC1),
	      "dword read of the divisor latch, IIR (FIFO on, none pending) and LCR");
	check(inb(COM1 + 3) == 0x03, "outl 0x3f8 restored 8N1 with DLAB off");

	/* rep outsl/insl with DLAB=1: two dwords of DLL, DLM, FCR, LCR written,
	 * two dwords of DLL, DLM, IIR, LCR read back; then DLAB off again.
	 * (No dword ever writes LSR/MSR, which are read-only on a 16550.) */
	{
		static const uint32_t src[2] = {0x83C70001u, 0x83C70001u};
		uint32_t dst[2] = {0, 0};

		rep_outsl(COM1, src, 2);
		rep_insl(COM1, dst, 2);
		outl(COM1, 0x03C70001u);
		check((dst[0] & 0xFF00FFFFu) == 0x83000001u && dst[1] == dst[0] &&
		      inb(COM1 + 3) == 0x03, "rep outsl/insl on 0x3f8 with DLAB=1");
	}
	print_str("uart still prints after the dword accesses\n");
}

void guest_main(void)
{
	cli();
	pic_remap(0x20, 0x28);
	cmos_tests();
	pic_tests();
	uart_tests();
}
