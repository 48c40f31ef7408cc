/* C entry: set up the console and descriptor tables, then run the guest. */
#include "lib.h"

void lib_main(int magic_ok) __attribute__((noreturn));
void lib_main(int magic_ok)
{
	desc_init();
	serial_init();
	if (!magic_ok)
		fail("not loaded by a multiboot loader");
	guest_main();
	pass();
}
