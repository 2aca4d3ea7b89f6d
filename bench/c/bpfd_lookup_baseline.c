/*
 * bpfd_lookup_baseline: the smallest daemon that answers the BPFd commands the
 * benchmarks use, written the way the original daemon was (stdio, fgets,
 * strtok, one bpf(2) syscall per command) but without libbpf or anything else.
 * It is the C baseline the Deno runtime is compared against: the same lines in,
 * the same syscall, the same framing out.
 *
 * Commands:
 *   BPF_CREATE_MAP <type> <name|__none__> <key_size> <value_size> <max_entries> <flags>
 *   BPF_UPDATE_ELEM <fd> <key b64> <klen> <value b64> <vlen> <flags>
 *   BPF_LOOKUP_ELEM <fd> <key b64> <klen> <vlen>
 *   GET_CPUS                      (the runtime's start-up probe command)
 *   exit
 *
 * Every response is START_BPFD_OUTPUT / body / END_BPFD_OUTPUT, written with
 * stdio and flushed once, after the response is complete.
 *
 * Build: gcc -O2 -o bpfd_lookup_baseline bpfd_lookup_baseline.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "b64.h"

#define LINE_MAX_BYTES 2000000

static char line[LINE_MAX_BYTES];

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}


/* Value of one base64 character, or -1 for anything outside the alphabet. */
static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Decodes base64 text into out (at most cap bytes). Characters outside the
 * alphabet are skipped and '=' ends the input, as in the original. Returns the
 * number of bytes decoded (bytes beyond cap are dropped).
 */
static size_t b64decode(const char *in, unsigned char *out, size_t cap)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;
	for (; *in && *in != '='; in++) {
		int v = b64val((unsigned char)*in);
		if (v < 0)
			continue;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n < cap)
				out[n] = (unsigned char)(acc >> bits);
			n++;
			acc &= (1u << bits) - 1;
		}
	}
	return n < cap ? n : cap;
}


/* Next space-separated token as an int; returns 0 when it is missing or not numeric. */
static int arg_int(int *out)
{
	char *t = strtok(NULL, " ");
	return t && sscanf(t, "%d", out) == 1;
}

static int arg_ull(unsigned long long *out)
{
	char *t = strtok(NULL, " ");
	return t && sscanf(t, "%llu", out) == 1;
}

static int cmd_create_map(void)
{
	int type, ks, vs, max, flags;
	char *name;
	if (!arg_int(&type) || !(name = strtok(NULL, " ")) || !arg_int(&ks) || !arg_int(&vs) ||
	    !arg_int(&max) || !arg_int(&flags))
		return -1;
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = (uint32_t)type;
	a.key_size = (uint32_t)ks;
	a.value_size = (uint32_t)vs;
	a.max_entries = (uint32_t)max;
	a.map_flags = (uint32_t)flags;
	if (strcmp(name, "__none__") != 0)
		strncpy(a.map_name, name, BPF_OBJ_NAME_LEN - 1);
	long fd = sys_bpf(BPF_MAP_CREATE, &a);
	printf("bpf_create_map: ret=%ld\n", fd < 0 ? -1L : fd);
	return 0;
}

static int cmd_update_elem(void)
{
	int fd, klen, vlen;
	unsigned long long flags;
	char *k64, *v64;
	if (!arg_int(&fd) || !(k64 = strtok(NULL, " ")) || !arg_int(&klen) ||
	    !(v64 = strtok(NULL, " ")) || !arg_int(&vlen) || !arg_ull(&flags))
		return -1;
	if (klen <= 0 || vlen <= 0) {
		printf("bpf_update_elem: ret=-22\n");
		return 0;
	}
	unsigned char *key = calloc(1, (size_t)klen), *val = calloc(1, (size_t)vlen);
	if (!key || !val) {
		printf("bpf_update_elem: ret=-12\n");
		free(key);
		free(val);
		return 0;
	}
	long ret;
	if (b64decode(k64, key, (size_t)klen) == 0 || b64decode(v64, val, (size_t)vlen) == 0) {
		ret = -22;
	} else {
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.map_fd = (uint32_t)fd;
		a.key = (uint64_t)(uintptr_t)key;
		a.value = (uint64_t)(uintptr_t)val;
		a.flags = flags;
		ret = sys_bpf(BPF_MAP_UPDATE_ELEM, &a) < 0 ? -1 : 0;
	}
	printf("bpf_update_elem: ret=%ld\n", ret);
	free(key);
	free(val);
	return 0;
}

static int cmd_lookup_elem(void)
{
	int fd, klen, vlen;
	char *k64;
	if (!arg_int(&fd) || !(k64 = strtok(NULL, " ")) || !arg_int(&klen) || !arg_int(&vlen))
		return -1;
	if (klen <= 0 || vlen <= 0) {
		printf("bpf_lookup_elem: ret=-1\n");
		return 0;
	}
	unsigned char *key = calloc(1, (size_t)klen), *val = calloc(1, (size_t)vlen);
	char *out = malloc(((size_t)vlen + 2) / 3 * 4 + 1);
	if (!key || !val || !out) {
		printf("bpf_lookup_elem: ret=-12\n");
	} else {
		b64decode(k64, key, (size_t)klen);
		union bpf_attr a;
		memset(&a, 0, sizeof(a));
		a.map_fd = (uint32_t)fd;
		a.key = (uint64_t)(uintptr_t)key;
		a.value = (uint64_t)(uintptr_t)val;
		if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &a) < 0) {
			printf("bpf_lookup_elem: ret=-1\n");
		} else {
			b64encode(val, (size_t)vlen, out);
			puts(out);
		}
	}
	free(key);
	free(val);
	free(out);
	return 0;
}

/* Prints the first line of a sysfs file (without its newline). */
static void print_first_line(const char *label, const char *path)
{
	char buf[256] = "";
	FILE *f = fopen(path, "r");
	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = '\0';
		fclose(f);
	}
	buf[strcspn(buf, "\n")] = '\0';
	printf("%s=%s\n", label, buf);
}

static int cmd_get_cpus(void)
{
	printf("get_cpus: ret=0\n");
	print_first_line("possible", "/sys/devices/system/cpu/possible");
	print_first_line("online", "/sys/devices/system/cpu/online");
	return 0;
}

int main(void)
{
	printf("STARTED_BPFD\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '\0')
			continue;
		char *cmd = strtok(line, " ");
		if (!cmd)
			continue;
		if (strcmp(cmd, "exit") == 0)
			break;
		fputs("START_BPFD_OUTPUT\n", stdout);
		int r = -1;
		if (strcmp(cmd, "BPF_LOOKUP_ELEM") == 0)
			r = cmd_lookup_elem();
		else if (strcmp(cmd, "BPF_UPDATE_ELEM") == 0)
			r = cmd_update_elem();
		else if (strcmp(cmd, "BPF_CREATE_MAP") == 0)
			r = cmd_create_map();
		else if (strcmp(cmd, "GET_CPUS") == 0)
			r = cmd_get_cpus();
		if (r < 0)
			puts("Command not recognized");
		fputs("END_BPFD_OUTPUT\n", stdout);
		fflush(stdout);
	}
	return 0;
}
