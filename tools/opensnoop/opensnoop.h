/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * opensnoop.h: the event record opensnoop's BPF program sends to user space
 * through the `events` perf event array. Shared by opensnoop.bpf.c and the
 * host tool, which decodes it field by field (little- or big-endian as the
 * target's arch says). No padding holes: every field is naturally aligned.
 */
#ifndef OPENSNOOP_H
#define OPENSNOOP_H

#define OPENSNOOP_COMM_LEN 16
#define OPENSNOOP_PATH_LEN 256

struct opensnoop_event {
	__u64 ts_ns;                       /* bpf_ktime_get_ns() at syscall exit */
	__u32 pid;                         /* tgid (what user space calls the PID) */
	__u32 tid;                         /* thread id */
	__u32 uid;                         /* real uid */
	__s32 ret;                         /* fd on success, -errno on failure */
	__s32 flags;                       /* open flags (O_*) */
	__u32 syscall;                     /* 0 = openat, 1 = openat2 */
	char comm[OPENSNOOP_COMM_LEN];     /* task comm */
	char path[OPENSNOOP_PATH_LEN];     /* file name as passed (NUL-terminated) */
};

#endif /* OPENSNOOP_H */
