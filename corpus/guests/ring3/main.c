/*
 * ring3: TSS + user segments, iret to CPL3, int 0x80 system calls through
 * DPL3 gates, and #GP from privileged instructions executed in ring 3.
 * Paging stays off.
 */
#include "lib.h"
#include "ring3.h"

const char guest_name[] = "ring3";

static uint8_t kstack[8192] __attribute__((aligned(16)));  /* TSS.esp0 */
static uint8_t ustack[8192] __attribute__((aligned(16)));

static uint32_t n_syscalls, n_gp_cli, n_gp_hlt, n_gp_int, bad_frames;

static int frame_ok(struct frame *f)
{
	uint32_t fa = (uint32_t)f;

	/* From ring 3, on the TSS.esp0 stack, with the user's selectors saved. */
	return (f->cs & 3) == 3 && f->cs == SEL_UCODE && f->user_ss == SEL_UDATA &&
	       f->ds == SEL_UDATA && fa >= (uint32_t)kstack &&
	       fa + sizeof(*f) == (uint32_t)kstack + sizeof(kstack);
}

static void finish(uint32_t code)
{
	kprintf("user exit syscall, code %u\n", code);
	kprintf("syscalls %u, #GP: cli %u hlt %u int %u\n", n_syscalls, n_gp_cli, n_gp_hlt,
		n_gp_int);
	if (code != 0)
		fail("user program reported a failure");
	check(bad_frames == 0, "every kernel entry came from CPL3 on the TSS.esp0 stack");
	check(n_gp_cli == 1 && n_gp_hlt == 1 && n_gp_int == 1, "three #GP caught");
	pass();
}

static void syscall_handler(struct frame *f)
{
	if (!frame_ok(f))
		bad_frames++;
	n_syscalls++;
	switch (f->eax) {
	case SYS_WRITE:
		kprintf("[user] %s\n", (const char *)f->ebx);
		f->eax = 0;
		break;
	case SYS_EXIT:
		finish(f->ebx);
		break;
	case SYS_ADD:
		f->eax = f->ebx + f->ecx;
		break;
	case SYS_GETIF:
		f->eax = (read_eflags() & EFLAGS_IF) ? 1 : 0;
		break;
	default:
		fail("unknown system call");
	}
}

static void gp_handler(struct frame *f)
{
	const uint8_t *ip = (const uint8_t *)f->eip;

	if (!frame_ok(f)) {
		kprintf("#GP err 0x%x from ring %u\n", f->err, f->cs & 3);
		fail("#GP not from ring 3");
	}
	if (ip[0] == 0xFA && f->err == 0) {
		n_gp_cli++;
		kprintf("#GP caught: cli at CPL3, error code 0, saved CS RPL 3\n");
		f->eip += 1;
	} else if (ip[0] == 0xF4 && f->err == 0) {
		n_gp_hlt++;
		kprintf("#GP caught: hlt at CPL3, error code 0, saved CS RPL 3\n");
		f->eip += 1;
	} else if (ip[0] == 0xCD && ip[1] == VEC_KERNELONLY &&
		   f->err == ((VEC_KERNELONLY << 3) | 2)) {
		n_gp_int++;
		kprintf("#GP caught: int 0x81 at CPL3, error code 0x%x (IDT entry)\n", f->err);
		f->eip += 2;
	} else {
		kprintf("#GP err 0x%x, opcode 0x%02x\n", f->err, ip[0]);
		fail("unexpected #GP");
	}
}

void guest_main(void)
{
	uint16_t tr;

	cli();
	pic_remap(0x20, 0x28); /* all lines masked: IF=1 in ring 3 is safe */
	tss_init((uint32_t)kstack + sizeof(kstack));
	__asm__ volatile("str %0" : "=r"(tr));
	check(tr == SEL_TSS, "TSS loaded (str = 0x28)");

	idt_set_type(VEC_SYSCALL, GATE_TRAP32 | GATE_DPL3);
	idt_set_type(VEC_INTGATE, GATE_INT32 | GATE_DPL3);
	set_handler(VEC_SYSCALL, syscall_handler);
	set_handler(VEC_INTGATE, syscall_handler);
	set_handler(13, gp_handler);

	print_str("iret to ring 3\n");
	enter_user(user_start, (uint32_t)ustack + sizeof(ustack));
}
