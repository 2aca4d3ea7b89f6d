// SPDX-License-Identifier: GPL-2.0
/*
 * opensnoop: trace openat(2) and openat2(2), BCC-style.
 *
 * bpfpack-version: 0.1.0
 *
 * sys_enter_* remembers the file name pointer and flags per thread in the
 * `start` hash map; sys_exit_* picks them up, adds the return value and sends
 * one struct opensnoop_event through the `events` perf event array (the
 * BCC/BPFd protocol reads perf buffers). Filters are `const volatile` globals
 * in .rodata, set by the loader before the program is loaded.
 *
 * Builds in both bpfpack modes (see tools/include/bpfpack.h): nothing here
 * reads a kernel struct, so the two objects differ only in how the tracepoint
 * context type is declared.
 */
#include "bpfpack.h"
#include "opensnoop.h"

/* Filters (0 / false = off). */
const volatile __u32 targ_tgid = 0;        /* only this process */
const volatile __u32 targ_tid = 0;         /* only this thread */
const volatile __u32 targ_uid = 0xffffffff; /* only this uid (0xffffffff = any) */
const volatile bool targ_failed = false;    /* only failed opens */

/* What sys_enter saw, kept until sys_exit of the same thread. */
struct open_args {
	const char *path;
	__s32 flags;
	__u32 syscall;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);               /* thread id */
	__type(value, struct open_args);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

/* Applies the pid/tid/uid filters to the current task. */
static __always_inline bool wanted(__u64 pid_tgid)
{
	__u32 tgid = pid_tgid >> 32;
	__u32 tid = (__u32)pid_tgid;

	if (targ_tgid && targ_tgid != tgid)
		return false;
	if (targ_tid && targ_tid != tid)
		return false;
	if (targ_uid != 0xffffffff && targ_uid != (__u32)bpf_get_current_uid_gid())
		return false;
	return true;
}

static __always_inline int handle_enter(const char *path, __s32 flags, __u32 syscall)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct open_args args = {};

	if (!wanted(pid_tgid))
		return 0;
	args.path = path;
	args.flags = flags;
	args.syscall = syscall;
	bpf_map_update_elem(&start, &tid, &args, BPF_ANY);
	return 0;
}

static __always_inline int handle_exit(void *ctx, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct opensnoop_event event = {};
	struct open_args *args;

	args = bpf_map_lookup_elem(&start, &tid);
	if (!args)
		return 0; /* enter was filtered out or missed */
	if (targ_failed && ret >= 0)
		goto cleanup;

	event.ts_ns = bpf_ktime_get_ns();
	event.pid = pid_tgid >> 32;
	event.tid = tid;
	event.uid = (__u32)bpf_get_current_uid_gid();
	event.ret = (__s32)ret;
	event.flags = args->flags;
	event.syscall = args->syscall;
	bpf_get_current_comm(&event.comm, sizeof(event.comm));
	bpf_probe_read_user_str(&event.path, sizeof(event.path), args->path);
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &event, sizeof(event));
cleanup:
	bpf_map_delete_elem(&start, &tid);
	return 0;
}

/* openat(int dfd, const char *filename, int flags, umode_t mode) */
SEC("tracepoint/syscalls/sys_enter_openat")
int tracepoint__syscalls__sys_enter_openat(bpfpack_sys_enter_t *ctx)
{
	return handle_enter((const char *)ctx->args[1], (__s32)ctx->args[2], 0);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int tracepoint__syscalls__sys_exit_openat(bpfpack_sys_exit_t *ctx)
{
	return handle_exit(ctx, ctx->ret);
}

/*
 * openat2(int dfd, const char *filename, struct open_how *how, size_t usize)
 * (Linux 5.6+; a loader may skip these two programs where the tracepoint does
 * not exist). The flags are the first __u64 of struct open_how.
 */
SEC("tracepoint/syscalls/sys_enter_openat2")
int tracepoint__syscalls__sys_enter_openat2(bpfpack_sys_enter_t *ctx)
{
	__u64 flags = 0;

	bpf_probe_read_user(&flags, sizeof(flags), (const void *)ctx->args[2]);
	return handle_enter((const char *)ctx->args[1], (__s32)flags, 1);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int tracepoint__syscalls__sys_exit_openat2(bpfpack_sys_exit_t *ctx)
{
	return handle_exit(ctx, ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
