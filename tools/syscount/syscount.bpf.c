// SPDX-License-Identifier: GPL-2.0
/*
 * syscount: count syscalls (and sum their latency) by syscall or by
 * process, BCC-style.
 *
 * bpfpack-version: 0.1.0
 *
 * raw_syscalls:sys_exit adds one to the `data` entry of the syscall number
 * (or of the process, by_process) when the filters pass. Latency mode also
 * loads raw_syscalls:sys_enter, which stamps the thread's entry time into
 * `start`; sys_exit adds now - stamp to total_ns. The host reads `data` with
 * one batch dump per interval and prints the differences between dumps:
 * entries only grow, so nothing is lost between a read and a clear.
 *
 * Builds in both bpfpack modes (see tools/include/bpfpack.h): no kernel
 * struct is read, only the raw_syscalls tracepoint contexts (`id`, `args`,
 * `ret`), which have the same layout as bpfpack_sys_enter/_exit.
 */
#include "bpfpack.h"
#include "syscount.h"

/* Filters and modes (set by the loader in .rodata; 0 / false / -1 = off). */
const volatile __u32 targ_tgid = 0;        /* only this process */
const volatile __u32 targ_tid = 0;         /* only this thread */
const volatile __s32 targ_syscall = -1;    /* only this syscall number */
const volatile bool targ_failed = false;   /* only syscalls that returned < 0 */
const volatile __s32 targ_errno = 0;       /* only syscalls that returned -targ_errno */
const volatile bool by_process = false;    /* key by tgid, not by syscall number */
const volatile bool latency = false;       /* sys_enter is loaded: sum latencies */

/*
 * Entry time per thread (latency mode). LRU: a thread that never returns
 * from its last syscall (exit, exit_group, execve of a thread) leaves its
 * stamp behind, and LRU evicts such stale stamps instead of filling up.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);               /* thread id */
	__type(value, __u64);             /* bpf_ktime_get_ns() at sys_enter */
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);               /* syscall number, or tgid (by_process) */
	__type(value, struct syscount_value);
} data SEC(".maps");

/* The pid/tid/syscall filters shared by both programs. */
static __always_inline bool wanted(__u64 pid_tgid, long id)
{
	if (id < 0)
		return false; /* not a syscall (e.g. a restart through the signal path) */
	if (targ_tgid && targ_tgid != (__u32)(pid_tgid >> 32))
		return false;
	if (targ_tid && targ_tid != (__u32)pid_tgid)
		return false;
	if (targ_syscall >= 0 && targ_syscall != id)
		return false;
	return true;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int tracepoint__raw_syscalls__sys_enter(bpfpack_sys_enter_t *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	__u64 ts;

	if (!wanted(pid_tgid, ctx->id))
		return 0;
	ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&start, &tid, &ts, BPF_ANY);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int tracepoint__raw_syscalls__sys_exit(bpfpack_sys_exit_t *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	long id = ctx->id;
	long ret = ctx->ret;
	struct syscount_value *val, zero = {};
	__u64 delta = 0, *ts;
	__u32 key;

	if (!wanted(pid_tgid, id))
		return 0;
	if (latency) {
		ts = bpf_map_lookup_elem(&start, &tid);
		if (!ts)
			return 0; /* entered before tracing started */
		delta = bpf_ktime_get_ns() - *ts;
		bpf_map_delete_elem(&start, &tid);
	}
	if (targ_failed && ret >= 0)
		return 0;
	if (targ_errno && ret != -targ_errno)
		return 0;

	key = by_process ? (__u32)(pid_tgid >> 32) : (__u32)id;
	val = bpf_map_lookup_elem(&data, &key);
	if (!val) {
		/* BPF_NOEXIST: another CPU may have created it meanwhile; look again. */
		bpf_map_update_elem(&data, &key, &zero, BPF_NOEXIST);
		val = bpf_map_lookup_elem(&data, &key);
		if (!val)
			return 0; /* the map is full */
	}
	__sync_fetch_and_add(&val->count, 1);
	if (latency)
		__sync_fetch_and_add(&val->total_ns, delta);
	if (by_process)
		bpf_get_current_comm(&val->comm, sizeof(val->comm));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
