// SPDX-License-Identifier: GPL-2.0
/*
 * The arch check ("canary"): compiled with exactly the flags, defines and
 * kernel inputs of every tool object of one (arch, mode, kernel) unit, never
 * shipped. PT_REGS_PARM1/2 become two loads from the kprobe context whose
 * offsets and widths depend on which struct pt_regs the compiler saw and on
 * which register names __TARGET_ARCH_<x> selected in bpf_tracing.h. The
 * compiler compares them with compiler/arch.ts; a mismatch (a wrong
 * __TARGET_ARCH_, a header tree or vmlinux.h of another arch, a wrong parse
 * triple) fails the build instead of shipping objects that read the wrong
 * registers.
 */
#include "bpfpack.h"

SEC("kprobe/bpfpack_arch_check")
int bpfpack_arch_check(struct pt_regs *ctx)
{
	unsigned long a = PT_REGS_PARM1(ctx);
	unsigned long b = PT_REGS_PARM2(ctx);

	return a > b;
}

char LICENSE[] SEC("license") = "GPL";
