/* Ending a guest: QEMU's isa-debug-exit at port 0xF4. */
#include "lib.h"

void exit(int code)
{
	outl(0xF4, (uint32_t)code);
	for (;;)
		__asm__ volatile("cli; hlt");
}

void pass(void)
{
	kprintf("PASS %s\n", guest_name);
	exit(0);
}

void fail(const char *reason)
{
	kprintf("FAIL %s: %s\n", guest_name, reason);
	exit(1);
}

/* Print "<what> ok" or fail with <what> as the reason. */
void check(int cond, const char *what)
{
	if (!cond)
		fail(what);
	kprintf("%s ok\n", what);
}
