/* The few mem/str functions the compiler may also call on its own. */
#include "lib.h"

/* Keep GCC from turning these loops back into calls to themselves. */
#define NO_LDP __attribute__((optimize("no-tree-loop-distribute-patterns")))

NO_LDP void *memset(void *d, int c, uint32_t n)
{
	uint8_t *p = d;

	while (n--)
		*p++ = (uint8_t)c;
	return d;
}

NO_LDP void *memcpy(void *d, const void *s, uint32_t n)
{
	uint8_t *p = d;
	const uint8_t *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}

int memcmp(const void *a, const void *b, uint32_t n)
{
	const uint8_t *p = a, *q = b;

	for (; n; n--, p++, q++)
		if (*p != *q)
			return *p < *q ? -1 : 1;
	return 0;
}

uint32_t strlen(const char *s)
{
	uint32_t n = 0;

	while (s[n])
		n++;
	return n;
}
