// SPDX-License-Identifier: GPL-2.0
/*
 * profile: sample stack traces on a timer, BCC-style.
 *
 * bpfpack-version: 0.1.0
 *
 * The host opens one software cpu-clock perf event per online CPU of the
 * target (BPF_ATTACH_PERF_EVENT, -F hertz or -c period) and attaches
 * do_perf_event to each. Every sample stores the interrupted task's kernel and
 * user stacks in the `stacks` stack-trace map (bpf_get_stackid) and counts the
 * (pid, kernel stack id, user stack id, comm) combination in the `counts`
 * hash. The host reads both maps at the end and symbolises the frames.
 *
 * Filters are `const volatile` globals in .rodata, set by the loader before
 * the program is loaded. `stacks` is sized at load (--stack-storage-size).
 *
 * Builds in both bpfpack modes (see tools/include/bpfpack.h): the program
 * reads no kernel struct, and hands its context to bpf_get_stackid() as is,
 * so the context type is not needed at all.
 */
#include "bpfpack.h"
#include "profile.h"

/* Filters and switches (0 / false = off). */
const volatile __u32 targ_tgid = 0;          /* only this process */
const volatile __u32 targ_tid = 0;           /* only this thread */
const volatile bool user_stacks_only = false;   /* -U: no kernel stacks */
const volatile bool kernel_stacks_only = false; /* -K: no user stacks */
const volatile bool include_idle = false;    /* -I: count the idle task (tid 0) too */

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);          /* default --stack-storage-size */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, PROFILE_MAX_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 40960);
	__type(key, struct profile_key);
	__type(value, __u64);                /* samples */
} counts SEC(".maps");

SEC("perf_event")
int do_perf_event(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u32 tid = (__u32)pid_tgid;
	struct profile_key key = {};
	static const __u64 zero;
	__u64 *count;

	if (!include_idle && tid == 0)
		return 0;
	if (targ_tgid && targ_tgid != tgid)
		return 0;
	if (targ_tid && targ_tid != tid)
		return 0;

	key.pid = tgid;
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	key.kern_stack_id = user_stacks_only ? -1 : bpf_get_stackid(ctx, &stacks, 0);
	key.user_stack_id = kernel_stacks_only ? -1 :
		bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);

	count = bpf_map_lookup_elem(&counts, &key);
	if (!count) {
		/* First sample of this combination (another CPU may race us: NOEXIST). */
		bpf_map_update_elem(&counts, &key, &zero, BPF_NOEXIST);
		count = bpf_map_lookup_elem(&counts, &key);
		if (!count)
			return 0; /* counts is full */
	}
	__sync_fetch_and_add(count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
