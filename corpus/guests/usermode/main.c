/*
 * usermode: what user mode sees of the state it may not change, and which
 * segment loads touch the accessed bit.
 *
 * Phase 1: the kernel enters ring 3 with IF=0 and IOPL=0.  A user popf that
 * sets IF changes nothing (pushf still shows IF=0), and loading a kernel
 * data selector raises #GP with the selector as error code.
 * Phase 2: ring 3 with IF=1 and IOPL=3: cli, sti and popf change IF there.
 * Then the kernel loads a data segment (its descriptor's accessed bit is
 * set) and far-jumps through a code segment (QEMU leaves that bit alone).
 * A deprivileged backend must show all of this exactly: user mode runs
 * with its own IF and IOPL, never the hypervisor's.
 */
#include "lib.h"

const char guest_name[] = "usermode";

#define SYS_REPORT 1 /* ebx = tag, ecx = value */
#define SYS_DONE   2 /* the user part of this phase is over */

#define SEL_KDATA2 0x30 /* index 6: ring-0 data, accessed bit clear */
#define SEL_KCODE2 0x38 /* index 7: ring-0 code, accessed bit clear */

void user_iopl0(void); /* user.S */
void user_iopl3(void);
void enter_user(void (*entry)(void), uint32_t user_esp, uint32_t eflags) __attribute__((noreturn));
void far_jump_through(uint16_t sel); /* user.S: ljmp to sel:1f and back to SEL_KCODE */

static uint8_t kstack[8192] __attribute__((aligned(16)));
static uint8_t ustack[8192] __attribute__((aligned(16)));
static uint32_t phase, n_gp;

static uint8_t access_byte(uint16_t sel)
{
	return (uint8_t)(gdt[sel >> 3] >> 40);
}

static void report(uint32_t tag, uint32_t v)
{
	switch (tag) {
	case 1:
		kprintf("user eflags on entry: IF=%u IOPL=%u\n", (v >> 9) & 1, (v >> 12) & 3);
		break;
	case 2:
		kprintf("user popf of IF=1 at IOPL %u: IF=%u\n", (v >> 12) & 3, (v >> 9) & 1);
		break;
	case 3:
		kprintf("user DS after the refused load: 0x%x\n", v);
		break;
	case 4:
		kprintf("user cli at IOPL 3: IF=%u\n", (v >> 9) & 1);
		break;
	case 5:
		kprintf("user sti at IOPL 3: IF=%u\n", (v >> 9) & 1);
		break;
	case 6:
		kprintf("user popf of IF=0 at IOPL 3: IF=%u\n", (v >> 9) & 1);
		break;
	default:
		fail("unknown report");
	}
}

static void next_phase(void);

static void syscall_handler(struct frame *f)
{
	if ((f->cs & 3) != 3)
		fail("system call not from ring 3");
	if (f->eax == SYS_REPORT)
		report(f->ebx, f->ecx);
	else if (f->eax == SYS_DONE)
		next_phase(); /* never returns: the kernel stack starts afresh each entry */
	else
		fail("unknown system call");
}

static void gp_handler(struct frame *f)
{
	const uint8_t *ip = (const uint8_t *)f->eip;

	/* movw %ax,%ds (8e d8) with a ring-0 selector in AX */
	if ((f->cs & 3) != 3 || ip[0] != 0x8E || ip[1] != 0xD8 || f->err != SEL_KDATA)
		fail("unexpected #GP");
	n_gp++;
	kprintf("#GP from ring 3 loading DS with 0x%x: error code 0x%x\n", f->eax & 0xFFFF, f->err);
	f->eip += 2;
}

static void next_phase(void)
{
	uint32_t ustack_top = (uint32_t)ustack + sizeof(ustack);

	switch (phase++) {
	case 0:
		print_str("ring 3 with IF=0 IOPL=0\n");
		enter_user(user_iopl0, ustack_top, 0x0002);
	case 1:
		print_str("ring 3 with IF=1 IOPL=3\n");
		enter_user(user_iopl3, ustack_top, 0x3202);
	default:
		break;
	}
	cli();
	check(n_gp == 1, "one #GP from ring 3");
	kprintf("before: data 0x%x code 0x%x\n", access_byte(SEL_KDATA2), access_byte(SEL_KCODE2));
	__asm__ volatile("movw %w0, %%fs" : : "r"(SEL_KDATA2));
	far_jump_through(SEL_KCODE2);
	kprintf("after a data load and a far jump: data 0x%x code 0x%x\n", access_byte(SEL_KDATA2),
		access_byte(SEL_KCODE2));
	__asm__ volatile("movw %w0, %%fs" : : "r"(SEL_KDATA));
	pass();
}

void guest_main(void)
{
	cli();
	pic_remap(0x20, 0x28); /* every line masked */
	tss_init((uint32_t)kstack + sizeof(kstack));
	gdt_set(6, 0, 0xFFFFF, 0x92, 0xC);
	gdt_set(7, 0, 0xFFFFF, 0x9A, 0xC);
	idt_set_type(0x80, GATE_TRAP32 | GATE_DPL3);
	set_handler(0x80, syscall_handler);
	set_handler(13, gp_handler);
	next_phase();
}
