/* GDT, IDT and TSS setup, and dispatch of interrupts to C handlers. */
#include "lib.h"

uint64_t gdt[GDT_ENTRIES] __attribute__((aligned(8)));
uint64_t idt[256] __attribute__((aligned(8)));
struct tss tss __attribute__((aligned(128)));
static isr_handler_t handlers[256];

uint64_t gdt_make(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
	uint32_t lo, hi;

	lo = (limit & 0xFFFFu) | ((base & 0xFFFFu) << 16);
	hi = ((base >> 16) & 0xFFu) | ((uint32_t)access << 8) |
	     (limit & 0x000F0000u) | ((uint32_t)(flags & 0xF) << 20) |
	     (base & 0xFF000000u);
	return ((uint64_t)hi << 32) | lo;
}

void gdt_set(int index, uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
	gdt[index] = gdt_make(base, limit, access, flags);
}

void idt_set_gate(int vec, uint32_t handler, uint16_t sel, uint8_t type_attr)
{
	uint32_t lo = (handler & 0xFFFFu) | ((uint32_t)sel << 16);
	uint32_t hi = (handler & 0xFFFF0000u) | ((uint32_t)type_attr << 8);

	idt[vec] = ((uint64_t)hi << 32) | lo;
}

void idt_set_type(int vec, uint8_t type_attr)
{
	idt[vec] = (idt[vec] & ~(0xFFull << 40)) | ((uint64_t)type_attr << 40);
}

void set_handler(int vec, isr_handler_t h)
{
	handlers[vec] = h;
}

/*
 * The standard layout: null, kernel code/data, user code/data, TSS.
 * Accessed bits are preset so that the CPU never has to write them back:
 * a descriptor then reads the same whether or not it was ever loaded.
 */
void desc_init(void)
{
	struct dtr d;
	int i;

	gdt[0] = 0;
	gdt_set(1, 0, 0xFFFFF, 0x9B, 0xC); /* 0x08 ring-0 code, 4 GiB */
	gdt_set(2, 0, 0xFFFFF, 0x93, 0xC); /* 0x10 ring-0 data */
	gdt_set(3, 0, 0xFFFFF, 0xFB, 0xC); /* 0x18 ring-3 code */
	gdt_set(4, 0, 0xFFFFF, 0xF3, 0xC); /* 0x20 ring-3 data */
	for (i = 5; i < GDT_ENTRIES; i++)
		gdt[i] = 0;
	d.limit = sizeof(gdt) - 1;
	d.base = (uint32_t)gdt;
	gdt_load(&d);

	for (i = 0; i < 256; i++)
		idt_set_gate(i, ISR_STUB(i), SEL_KCODE, GATE_INT32);
	d.limit = sizeof(idt) - 1;
	d.base = (uint32_t)idt;
	idt_load(&d);
}

/* Build the TSS descriptor (index 5) and load the task register. */
void tss_init(uint32_t esp0)
{
	memset(&tss, 0, sizeof(tss));
	tss.ss0 = SEL_KDATA;
	tss.esp0 = esp0;
	tss.iomap_base = sizeof(tss); /* no I/O bitmap */
	gdt_set(5, (uint32_t)&tss, sizeof(tss) - 1, 0x89, 0x0);
	__asm__ volatile("ltr %w0" : : "r"(SEL_TSS));
}

static void unexpected(struct frame *f)
{
	kprintf("unexpected vector 0x%02x error 0x%x from ring %u\n",
		f->vec, f->err, f->cs & 3);
	fail("unexpected interrupt or exception");
}

void isr_dispatch(struct frame *f);
void isr_dispatch(struct frame *f)
{
	isr_handler_t h = handlers[f->vec & 0xFF];

	if (h)
		h(f);
	else
		unexpected(f);
}
