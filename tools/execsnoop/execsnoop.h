/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * execsnoop.h: the event record execsnoop's BPF program sends to user space
 * through the `events` perf event array. Only the first `args_size` bytes of
 * `args` are sent: `args_count` NUL-terminated strings, the first being the
 * file name passed to execve, then argv[1], argv[2], ...
 */
#ifndef EXECSNOOP_H
#define EXECSNOOP_H

#define EXECSNOOP_COMM_LEN 16
#define EXECSNOOP_ARGSIZE 128   /* longest single argument kept (incl. NUL) */
#define EXECSNOOP_MAX_ARGS 16   /* hard bound on arguments read */
#define EXECSNOOP_ARGS_BUF (EXECSNOOP_MAX_ARGS * EXECSNOOP_ARGSIZE)

struct execsnoop_event {
	__u64 ts_ns;                       /* bpf_ktime_get_ns() at syscall exit */
	__u32 pid;                         /* tgid */
	__u32 ppid;                        /* task->real_parent->tgid, read at entry */
	__u32 uid;                         /* real uid */
	__s32 ret;                         /* 0 on success, -errno on failure */
	__u32 args_count;                  /* strings in args */
	__u32 args_size;                   /* bytes of args in use */
	__u32 truncated;                   /* 1 if arguments were left out */
	__u32 __pad;
	char comm[EXECSNOOP_COMM_LEN];     /* comm after exec (before it on failure) */
	char args[EXECSNOOP_ARGS_BUF];
};

#endif /* EXECSNOOP_H */
