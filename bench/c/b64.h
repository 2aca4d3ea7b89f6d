/*
 * Standard padded base64 encoding shared by the C baseline daemon and the C
 * benchmark client (header-only: each is compiled as one file).
 */
#ifndef BPFPACK_BENCH_B64_H
#define BPFPACK_BENCH_B64_H

#include <stddef.h>
#include <stdint.h>

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Encodes len bytes as padded base64 into out (4 * ceil(len / 3) + 1 bytes). */
static void b64encode(const unsigned char *in, size_t len, char *out)
{
	size_t i = 0;
	char *o = out;
	for (; i + 2 < len; i += 3) {
		uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
		*o++ = B64[(v >> 18) & 63];
		*o++ = B64[(v >> 12) & 63];
		*o++ = B64[(v >> 6) & 63];
		*o++ = B64[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		*o++ = B64[(v >> 18) & 63];
		*o++ = B64[(v >> 12) & 63];
		*o++ = i + 1 < len ? B64[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	*o = '\0';
}

#endif /* BPFPACK_BENCH_B64_H */
