/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * bpfpack.h: the one switch between the two build modes, shared by every
 * tool's BPF C.
 *
 *   core     (compiler passes -DBPFPACK_CORE, -target bpf): all kernel types
 *            come from the target arch's vmlinux.h; field reads go through
 *            BPF_CORE_READ, and the kernel relocates them at load time, so one
 *            object fits many kernel releases.
 *   headers  (BCC style, host-triple parse + llc): kernel types come from the
 *            kernel's own header tree; struct offsets are baked in, so the
 *            object fits exactly one `uname -r`.
 *
 * A tool includes this file first, then (headers mode only) whatever extra
 * kernel headers it needs, e.g. <linux/sched.h> for struct task_struct.
 *
 * Syscall tracepoint contexts: vmlinux.h has trace_event_raw_sys_enter/_exit;
 * kernel header trees do not (those types are generated inside the kernel
 * build), so headers mode declares structs with the same layout, taken from
 * /sys/kernel/tracing/events/syscalls/sys_enter_openat/format:
 *   common fields 0..7, __syscall_nr at 8 (padded to 16), then six 8-byte args.
 */
#ifndef BPFPACK_H
#define BPFPACK_H

#ifdef BPFPACK_CORE

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

/*
 * Macros, not typedefs: a CO-RE relocation names its root type, and the
 * kernel's BTF knows trace_event_raw_sys_enter, not an alias of ours.
 */
#define bpfpack_sys_enter_t struct trace_event_raw_sys_enter
#define bpfpack_sys_exit_t struct trace_event_raw_sys_exit

#else /* headers mode */

/*
 * The host triple's predefined macros must agree with __TARGET_ARCH_<x>: a
 * mismatch would make PT_REGS_* read the wrong registers without any error.
 * (The compiler pipeline checks the same thing on the object; this is the
 * early, in-source half of that check.)
 */
#if defined(__TARGET_ARCH_x86) && !defined(__x86_64__)
#error "__TARGET_ARCH_x86 but the parse triple is not x86_64"
#elif defined(__TARGET_ARCH_arm64) && !defined(__aarch64__)
#error "__TARGET_ARCH_arm64 but the parse triple is not aarch64"
#elif defined(__TARGET_ARCH_arm) && !defined(__arm__)
#error "__TARGET_ARCH_arm but the parse triple is not arm"
#elif defined(__TARGET_ARCH_riscv) && !(defined(__riscv) && __riscv_xlen == 64)
#error "__TARGET_ARCH_riscv but the parse triple is not riscv64"
#elif defined(__TARGET_ARCH_s390) && !defined(__s390x__)
#error "__TARGET_ARCH_s390 but the parse triple is not s390x"
#endif

#include <linux/types.h>
#include <linux/ptrace.h>
#include <uapi/linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/* Same layout as the kernel's trace_event_raw_sys_enter (see above). */
struct bpfpack_sys_enter {
	unsigned short common_type;
	unsigned char common_flags;
	unsigned char common_preempt_count;
	int common_pid;
	long id;
	unsigned long args[6];
};

/* Same layout as the kernel's trace_event_raw_sys_exit. */
struct bpfpack_sys_exit {
	unsigned short common_type;
	unsigned char common_flags;
	unsigned char common_preempt_count;
	int common_pid;
	long id;
	long ret;
};

#define bpfpack_sys_enter_t struct bpfpack_sys_enter
#define bpfpack_sys_exit_t struct bpfpack_sys_exit

#endif /* BPFPACK_CORE */

#endif /* BPFPACK_H */
