/* hello: the smallest guest.  Greets and reports the multiboot handshake. */
#include "lib.h"

const char guest_name[] = "hello";

void greet_banner(void); /* banner.S */

void guest_main(void)
{
	const volatile uint32_t *info = (const volatile uint32_t *)mb_info;

	print_str("Hello from the Afterburn corpus guest 'hello'\n");
	check(mb_magic == MULTIBOOT_BOOTLOADER_MAGIC, "multiboot magic 0x2badb002");
	check(mb_info != 0, "multiboot info pointer present");
	/* Header flag bit 1 asked for mem_lower/mem_upper (values not printed). */
	check((info[0] & 1u) != 0, "multiboot info has memory fields");
	greet_banner();
}
