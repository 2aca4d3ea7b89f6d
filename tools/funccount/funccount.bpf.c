// SPDX-License-Identifier: GPL-2.0
/*
 * funccount: count kernel function calls, BCC-style.
 *
 * bpfpack-version: 0.1.0
 *
 * One kprobe program, attached by the host to every function the pattern
 * matched (BPF_ATTACH_PROG <fd> target=<function>, once per function). Each
 * call adds one to `counts` under the probed function's address, which
 * bpf_get_func_ip() gives a kprobe program on Linux 5.15+; the host turns the
 * addresses back into names.
 *
 * Builds in both bpfpack modes (see tools/include/bpfpack.h): it reads no
 * kernel struct, so the two objects differ only in where the types come from.
 */
#include "bpfpack.h"
#include "funccount.h"

const volatile __u32 targ_tgid = 0; /* -p: only this process (0 = all) */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FUNCCOUNT_MAX_FUNCS);
	__type(key, __u64);                 /* function address */
	__type(value, __u64);               /* calls */
} counts SEC(".maps");

SEC("kprobe")
int funccount_entry(struct pt_regs *ctx)
{
	__u64 ip, one = 1, *count;

	if (targ_tgid && (bpf_get_current_pid_tgid() >> 32) != targ_tgid)
		return 0;
	ip = bpf_get_func_ip(ctx);
	count = bpf_map_lookup_elem(&counts, &ip);
	if (count) {
		__sync_fetch_and_add(count, 1);
		return 0;
	}
	/* First call: create the entry; another CPU may have won the race. */
	if (bpf_map_update_elem(&counts, &ip, &one, BPF_NOEXIST)) {
		count = bpf_map_lookup_elem(&counts, &ip);
		if (count)
			__sync_fetch_and_add(count, 1);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
