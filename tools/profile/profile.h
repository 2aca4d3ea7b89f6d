/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * profile.h: the key of profile's `counts` map, shared by profile.bpf.c and
 * the host tool (which decodes it field by field). No padding holes: every
 * field is naturally aligned, 28 bytes in all.
 */
#ifndef PROFILE_H
#define PROFILE_H

#define PROFILE_COMM_LEN 16
/* Frames kept per stack (the kernel's PERF_MAX_STACK_DEPTH default). */
#define PROFILE_MAX_STACK_DEPTH 127

/*
 * One sampled (process, kernel stack, user stack) combination. A stack id is
 * an index into the `stacks` map, or a negative errno from bpf_get_stackid():
 * -EFAULT (no stack of that kind: a kernel thread has no user stack, a sample
 * taken in user mode no kernel stack), -EEXIST (a hash collision in the stack
 * map: the stack was lost), -ENOMEM (the stack map is full); -1 when the tool
 * did not ask for that kind of stack (-U / -K).
 */
struct profile_key {
	__u32 pid;                     /* tgid (what user space calls the PID) */
	__s32 kern_stack_id;           /* stacks map index, or -errno */
	__s32 user_stack_id;           /* stacks map index, or -errno */
	char comm[PROFILE_COMM_LEN];   /* task comm at the sample */
};

#endif /* PROFILE_H */
