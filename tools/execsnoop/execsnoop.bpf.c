// SPDX-License-Identifier: GPL-2.0
/*
 * execsnoop: trace execve(2), BCC-style.
 *
 * bpfpack-version: 0.1.0
 *
 * sys_enter_execve builds the event (file name, a bounded number of argv
 * strings, pid, ppid, uid) in the `execs` hash map under the thread id;
 * sys_exit_execve adds the return value and the (new) comm and sends the used
 * part of the event through the `events` perf event array.
 *
 * The parent pid is task->real_parent->tgid, read on the target:
 *   core     BPF_CORE_READ(task, real_parent, tgid): the kernel relocates
 *            both field offsets for the running kernel at load time;
 *   headers  two bpf_probe_read_kernel() calls with the offsets of the kernel
 *            tree the object was compiled against (one `uname -r` only).
 */
#include "bpfpack.h"
#ifndef BPFPACK_CORE
#include <linux/sched.h>
#endif
#include "execsnoop.h"

/* Filters / options (set by the loader in .rodata). */
const volatile __u32 targ_uid = 0xffffffff; /* only this uid (0xffffffff = any) */
const volatile bool ignore_failed = true;    /* drop execs that failed */
const volatile __u32 max_args = EXECSNOOP_MAX_ARGS; /* argv entries to read */

/* Template used to zero a new map value (the event is too big for the stack). */
static const struct execsnoop_event empty_event = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);                /* thread id */
	__type(value, struct execsnoop_event);
} execs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

/* The tgid of the current task's real parent. */
static __always_inline __u32 parent_tgid(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
#ifdef BPFPACK_CORE
	return BPF_CORE_READ(task, real_parent, tgid);
#else
	struct task_struct *parent = NULL;
	int tgid = 0;

	bpf_probe_read_kernel(&parent, sizeof(parent), &task->real_parent);
	bpf_probe_read_kernel(&tgid, sizeof(tgid), &parent->tgid);
	return tgid;
#endif
}

/* execve(const char *filename, const char *const *argv, const char *const *envp) */
SEC("tracepoint/syscalls/sys_enter_execve")
int tracepoint__syscalls__sys_enter_execve(bpfpack_sys_enter_t *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	const char *const *argv = (const char *const *)ctx->args[1];
	struct execsnoop_event *event;
	const char *arg;
	long len;
	int i;

	if (targ_uid != 0xffffffff && targ_uid != uid)
		return 0;
	if (bpf_map_update_elem(&execs, &tid, &empty_event, BPF_NOEXIST))
		return 0;
	event = bpf_map_lookup_elem(&execs, &tid);
	if (!event)
		return 0;

	event->pid = pid_tgid >> 32;
	event->ppid = parent_tgid();
	event->uid = uid;

	/* args[0]: the file name as passed to execve. */
	len = bpf_probe_read_user_str(event->args, EXECSNOOP_ARGSIZE, (const char *)ctx->args[0]);
	if (len < 0)
		return 0;
	event->args_size = len;
	event->args_count = 1;

	/* Then argv[1..max_args): each read is bounded to one ARGSIZE slot. */
	for (i = 1; i < EXECSNOOP_MAX_ARGS && i < max_args; i++) {
		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			return 0;
		if (event->args_size > EXECSNOOP_ARGS_BUF - EXECSNOOP_ARGSIZE)
			break;
		len = bpf_probe_read_user_str(&event->args[event->args_size], EXECSNOOP_ARGSIZE, arg);
		if (len < 0)
			return 0;
		event->args_count++;
		event->args_size += len;
	}
	/* Out of room or over max_args: note whether anything was left out. */
	if (!bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) && arg)
		event->truncated = 1;
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int tracepoint__syscalls__sys_exit_execve(bpfpack_sys_exit_t *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct execsnoop_event *event;
	__u32 size;

	event = bpf_map_lookup_elem(&execs, &tid);
	if (!event)
		return 0;
	if (ignore_failed && ctx->ret < 0)
		goto cleanup;

	event->ret = (__s32)ctx->ret;
	event->ts_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(&event->comm, sizeof(event->comm));
	size = sizeof(*event) - EXECSNOOP_ARGS_BUF + event->args_size;
	if (size <= sizeof(*event))
		bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, event, size);
cleanup:
	bpf_map_delete_elem(&execs, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
