/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * syscount.h: the `data` hash map's value, shared by syscount.bpf.c and the
 * host tool, which reads the whole map with one BPF_MAP_DUMP per interval.
 * The key is a __u32: the syscall number (default) or the process id (-P).
 * Values only grow (the host prints differences between dumps), so no
 * increment is lost to a clear racing with the BPF side.
 */
#ifndef SYSCOUNT_H
#define SYSCOUNT_H

#define SYSCOUNT_COMM_LEN 16

struct syscount_value {
	__u64 count;                      /* syscalls that returned */
	__u64 total_ns;                   /* summed latency (latency mode only) */
	char comm[SYSCOUNT_COMM_LEN];     /* by-process mode: comm of the last caller */
};

#endif /* SYSCOUNT_H */
