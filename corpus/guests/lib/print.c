/* Tiny output helpers: strings, hex, decimal and a small printf. */
#include "lib.h"

void print_str(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

void print_hex(uint32_t v, int digits)
{
	static const char hex[] = "0123456789abcdef";
	int i;

	if (digits < 1)
		digits = 1;
	if (digits > 8)
		digits = 8;
	for (i = digits - 1; i >= 0; i--)
		serial_putc(hex[(v >> (4 * i)) & 0xF]);
}

/* Only 32-bit division: no libgcc needed. */
static int fmt_dec(char *buf, uint32_t v)
{
	char tmp[10];
	int n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10u);
		v /= 10u;
	} while (v);
	for (i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

void print_dec(uint32_t v)
{
	char buf[10];
	int n = fmt_dec(buf, v), i;

	for (i = 0; i < n; i++)
		serial_putc(buf[i]);
}

static void pad(int n, char c)
{
	while (n-- > 0)
		serial_putc(c);
}

/* Supports %s %c %d %u %x %%, an optional '0' or '-' (left-justify, for %s)
 * flag and a width. */
void kvprintf(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		char zero = ' ', buf[12];
		int width = 0, n, left = 0;

		if (*fmt != '%') {
			serial_putc(*fmt);
			continue;
		}
		fmt++;
		if (*fmt == '0') {
			zero = '0';
			fmt++;
		} else if (*fmt == '-') {
			left = 1;
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		switch (*fmt) {
		case 's': {
			const char *s = va_arg(ap, const char *);

			if (!left)
				pad(width - (int)strlen(s), ' ');
			print_str(s);
			if (left)
				pad(width - (int)strlen(s), ' ');
			break;
		}
		case 'c':
			serial_putc((char)va_arg(ap, int));
			break;
		case 'd': {
			int v = va_arg(ap, int);
			uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;

			n = fmt_dec(buf, u);
			if (v < 0) {
				if (zero == '0') {
					serial_putc('-');
					pad(width - n - 1, '0');
				} else {
					pad(width - n - 1, ' ');
					serial_putc('-');
				}
			} else {
				pad(width - n, zero);
			}
			for (int i = 0; i < n; i++)
				serial_putc(buf[i]);
			break;
		}
		case 'u':
			n = fmt_dec(buf, va_arg(ap, uint32_t));
			pad(width - n, zero);
			for (int i = 0; i < n; i++)
				serial_putc(buf[i]);
			break;
		case 'x': {
			uint32_t v = va_arg(ap, uint32_t);
			int digits = 1;

			while (digits < 8 && (v >> (4 * digits)))
				digits++;
			pad(width - digits, zero);
			print_hex(v, digits);
			break;
		}
		case '%':
			serial_putc('%');
			break;
		case '\0':
			return;
		default:
			serial_putc('%');
			serial_putc(*fmt);
			break;
		}
	}
}

void kprintf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	kvprintf(fmt, ap);
	va_end(ap);
}
