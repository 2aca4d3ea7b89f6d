/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * biolatency.h: the histogram map biolatency's BPF program fills and the host
 * tool dumps (BPF_MAP_DUMP of `hists`). Shared by biolatency.bpf.c and
 * biolatency.ts, which decodes it field by field. No padding holes.
 */
#ifndef BIOLATENCY_H
#define BIOLATENCY_H

#define BIOLAT_DISK_NAME_LEN 32 /* DISK_NAME_LEN of the kernel */
#define BIOLAT_MAX_SLOTS 32     /* log2 buckets: slot i holds [2^i, 2^(i+1)) */

/*
 * Request flags in a form that does not depend on the kernel release: the
 * kernel's REQ_* bit positions move between releases, so the BPF side maps
 * them onto these bits (the operation, REQ_OP_*, stays in the low 8 bits).
 */
#define BIOLAT_OP_MASK 0xffu
#define BIOLAT_F_SYNC (1u << 8)
#define BIOLAT_F_META (1u << 9)
#define BIOLAT_F_PRIO (1u << 10)
#define BIOLAT_F_NOMERGE (1u << 11)
#define BIOLAT_F_IDLE (1u << 12)
#define BIOLAT_F_FUA (1u << 13)
#define BIOLAT_F_PREFLUSH (1u << 14)
#define BIOLAT_F_RAHEAD (1u << 15)
#define BIOLAT_F_BACKGROUND (1u << 16)
#define BIOLAT_F_NOWAIT (1u << 17)

/* One histogram: all zero but what -D / -F ask for. 40 bytes. */
struct biolatency_key {
	__u32 dev;                          /* major << 20 | minor (-D), else 0 */
	__u32 flags;                        /* BIOLAT_* (-F), else 0 */
	char disk[BIOLAT_DISK_NAME_LEN];    /* gendisk name (-D), else empty */
};

/* Counts per log2 latency bucket (usecs, or msecs with -m). 256 bytes. */
struct biolatency_hist {
	__u64 slots[BIOLAT_MAX_SLOTS];
};

#endif /* BIOLATENCY_H */
