/*
 * ring3/user.c: the user program.  Runs at CPL3 in the same ELF (paging is
 * off, segments are flat), and talks to the kernel only through int 0x80.
 */
#include "ring3.h"

static inline uint32_t syscall2(uint32_t nr, uint32_t a, uint32_t b)
{
	uint32_t ret;

	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b) : "memory");
	return ret;
}

static void sys_write(const char *s)
{
	syscall2(SYS_WRITE, (uint32_t)s, 0);
}

static void sys_exit(uint32_t code)
{
	syscall2(SYS_EXIT, code, 0);
	for (;;)
		;
}

static inline uint32_t user_eflags(void)
{
	uint32_t f;

	__asm__ volatile("pushfl; popl %0" : "=r"(f) : : "memory");
	return f;
}

#define IF_MASK   0x200u
#define IOPL_MASK 0x3000u

void user_main(void)
{
	uint32_t v, f;
	uint16_t cs, ds, ss;

	sys_write("hello from ring 3 (C, int 0x80)");
	sys_write_asm("hello from ring 3 (asm, int 0x80)");

	__asm__ volatile("movw %%cs, %0; movw %%ds, %1; movw %%ss, %2"
			 : "=r"(cs), "=r"(ds), "=r"(ss));
	if ((cs & 3) != 3 || ds != 0x23 || ss != 0x23)
		sys_exit(10);
	sys_write("user CS RPL is 3, DS=SS=0x23");

	if (syscall2(SYS_ADD, 40, 2) != 42)
		sys_exit(11);
	sys_write("syscall return value 40+2=42");

	v = 0;
	__asm__ volatile("int $0x82" : "=a"(v) : "a"(SYS_GETIF) : "memory");
	if (v != 0)
		sys_exit(12);
	sys_write("interrupt gate (DPL3): IF=0 in handler");
	if (syscall2(SYS_GETIF, 0, 0) != 1)
		sys_exit(13);
	sys_write("trap gate (DPL3): IF=1 in handler");

	/* popf at CPL3 with IOPL=0: IF and IOPL are silently kept, no fault. */
	f = user_eflags();
	if (!(f & IF_MASK) || (f & IOPL_MASK))
		sys_exit(14);
	__asm__ volatile("pushl %0; popfl" : : "r"((f & ~IF_MASK) | IOPL_MASK) : "cc", "memory");
	f = user_eflags();
	if (!(f & IF_MASK) || (f & IOPL_MASK))
		sys_exit(15);
	sys_write("popf at CPL3 kept IF=1 and IOPL=0 without faulting");

	/* Privileged instructions: each raises #GP, the kernel skips it. */
	__asm__ volatile("cli" : : : "memory");
	if (!(user_eflags() & IF_MASK))
		sys_exit(16);
	sys_write("back from #GP on cli, IF still 1");
	__asm__ volatile("hlt" : : : "memory");
	sys_write("back from #GP on hlt");
	__asm__ volatile("int $0x81" : : : "memory");
	sys_write("back from #GP on int 0x81 (DPL0 gate)");

	__asm__ volatile("movw %%ds, %0; movw %%ss, %1" : "=r"(ds), "=r"(ss));
	if (ds != 0x23 || ss != 0x23)
		sys_exit(17);
	sys_write("user segments intact after kernel entries");
	sys_exit(0);
}
