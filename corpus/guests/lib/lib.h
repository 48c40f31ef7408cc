/* Shared support library of the corpus guests. */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

#include <stdint.h>
#include <stdarg.h>
#include "io.h"

#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002u

/* Selectors of the standard GDT built by desc_init(). */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UCODE 0x1B /* index 3, RPL 3 */
#define SEL_UDATA 0x23 /* index 4, RPL 3 */
#define SEL_TSS   0x28
#define GDT_ENTRIES 16 /* indexes 6..15 are free for the guests */

/* Every guest defines these two. */
extern const char guest_name[];
void guest_main(void);

/* Set by the multiboot entry. */
extern uint32_t mb_magic;
extern uint32_t mb_info;

/* exit.c */
void exit(int code) __attribute__((noreturn));
void pass(void) __attribute__((noreturn));
void fail(const char *reason) __attribute__((noreturn));
void check(int cond, const char *what);

/* serial.c: polled 16550 on COM1 */
#define COM1 0x3F8
void serial_init(void);
void serial_putc(char c);
void serial_flush(void);

/* print.c */
void print_str(const char *s);
void print_hex(uint32_t v, int digits);
void print_dec(uint32_t v);
void kprintf(const char *fmt, ...);
void kvprintf(const char *fmt, va_list ap);

/* desc.c: GDT, IDT, TSS */
struct tss {
	uint32_t prev, esp0, ss0, esp1, ss1, esp2, ss2;
	uint32_t cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
	uint32_t es, cs, ss, ds, fs, gs, ldt;
	uint16_t trap, iomap_base;
} __attribute__((packed));

struct dtr {
	uint16_t limit;
	uint32_t base;
} __attribute__((packed));

extern uint64_t gdt[GDT_ENTRIES];
extern struct tss tss;
uint64_t gdt_make(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags);
void gdt_set(int index, uint32_t base, uint32_t limit, uint8_t access, uint8_t flags);
void desc_init(void);
void tss_init(uint32_t esp0);

#define GATE_INT32  0x8E /* present, DPL0, 32-bit interrupt gate */
#define GATE_TRAP32 0x8F /* present, DPL0, 32-bit trap gate */
#define GATE_DPL3   0x60
void idt_set_gate(int vec, uint32_t handler, uint16_t sel, uint8_t type_attr);
void idt_set_type(int vec, uint8_t type_attr);
extern uint64_t idt[256];

/* isr.S + desc.c: interrupt frames and handlers */
struct frame {
	uint32_t gs, fs, es, ds;
	uint32_t edi, esi, ebp, esp_pusha, ebx, edx, ecx, eax;
	uint32_t vec, err;
	uint32_t eip, cs, eflags;
	uint32_t user_esp, user_ss; /* only pushed on a privilege change */
};
typedef void (*isr_handler_t)(struct frame *f);
void set_handler(int vec, isr_handler_t h);
extern char isr_stubs[]; /* 256 stubs, 16 bytes apart */
#define ISR_STUB(vec) ((uint32_t)isr_stubs + 16u * (uint32_t)(vec))

/* desc_asm.S */
void gdt_load(const struct dtr *d); /* lgdt + reload all segment registers */
void idt_load(const struct dtr *d);

/* pic.c: 8259A pair and 8254 PIT */
#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xA0
#define PIC2_DATA 0xA1
void pic_remap(uint8_t master_base, uint8_t slave_base);
void pic_set_masks(uint8_t master, uint8_t slave);
void pic_eoi(int irq);
uint16_t pic_read_irr(void);
uint16_t pic_read_isr(void);
#define PIT_HZ 1193182u
void pit_program(int channel, int mode, uint16_t divisor);

/* misc */
void *memset(void *d, int c, uint32_t n);
void *memcpy(void *d, const void *s, uint32_t n);
int memcmp(const void *a, const void *b, uint32_t n);
uint32_t strlen(const char *s);

#endif
