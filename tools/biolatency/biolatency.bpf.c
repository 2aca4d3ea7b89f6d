// SPDX-License-Identifier: GPL-2.0
/*
 * biolatency: block I/O latency as a log2 histogram, BCC-style.
 *
 * bpfpack-version: 0.1.0
 *
 * The block layer's request tracepoints, attached as raw tracepoints so the
 * program gets the `struct request *` itself (the first tracepoint argument):
 *
 *   block_rq_insert    (-Q only) the request entered the I/O scheduler
 *   block_rq_issue     the request went to the device driver
 *   block_rq_complete  the device finished it
 *
 * insert/issue remember a timestamp per request in `start` (keyed by the
 * request's address, unique while it is in flight); complete computes the
 * latency and adds one to its log2 bucket in `hists`, under a key that is all
 * zero unless -D (per disk: the gendisk's dev and name) or -F (per request
 * flags) asked for more. The host dumps `hists` at each interval.
 *
 * Why raw tracepoints and not the tracepoint records: the records' layouts
 * differ between releases (6.1: rwbs at 32; 6.8+: an ioprio field moved it to
 * 34) and kernel header trees lack their generated types, while the request
 * pointer gives the same fields in both build modes:
 *   core     BPF_CORE_READ: the kernel relocates every field offset at load
 *            (request->q->disk on 5.17+, request->rq_disk before), and the
 *            REQ_* flag bit positions are read from the kernel's enum;
 *   headers  bpf_probe_read_kernel with the offsets and REQ_* bits of the
 *            header tree the object was built from (one `uname -r` only).
 * The raw tracepoint arguments are (rq) for issue/insert on 5.11+ (before:
 * (q, rq) for insert) and (rq, error, nr_bytes) for complete.
 */
#include "bpfpack.h"
#ifndef BPFPACK_CORE
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#endif
#include "biolatency.h"

/* Options (set by the loader in .rodata). */
const volatile bool targ_per_disk = false; /* -D: one histogram per disk */
const volatile bool targ_per_flag = false; /* -F: one histogram per request flags */
const volatile bool targ_queued = false;   /* -Q: measure from block_rq_insert */
const volatile bool targ_ms = false;       /* -m: milliseconds instead of microseconds */

/* Template used to create a histogram (too big for the BPF stack). */
static const struct biolatency_hist empty_hist = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);                 /* struct request * */
	__type(value, __u64);               /* bpf_ktime_get_ns() at insert/issue */
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct biolatency_key);
	__type(value, struct biolatency_hist);
} hists SEC(".maps");

#ifdef BPFPACK_CORE
/* The request of kernels before 5.17, which kept its disk in rq_disk. */
struct request___old {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

static __always_inline struct gendisk *request_disk(struct request *rq)
{
	struct request___old *old = (void *)rq;

	if (bpf_core_field_exists(old->rq_disk))
		return BPF_CORE_READ(old, rq_disk);
	return BPF_CORE_READ(rq, q, disk);
}

static __always_inline __u32 request_flags(struct request *rq)
{
	return BPF_CORE_READ(rq, cmd_flags);
}

/* The kernel's REQ_<name> bit, wherever this release puts it. */
#define REQ_BIT(name) (1u << bpf_core_enum_value(enum req_flag_bits, __REQ_##name))
#else
static __always_inline struct gendisk *request_disk(struct request *rq)
{
	struct request_queue *q = NULL;
	struct gendisk *disk = NULL;

	bpf_probe_read_kernel(&q, sizeof(q), &rq->q);
	if (q)
		bpf_probe_read_kernel(&disk, sizeof(disk), &q->disk);
	return disk;
}

static __always_inline __u32 request_flags(struct request *rq)
{
	__u32 flags = 0;

	bpf_probe_read_kernel(&flags, sizeof(flags), &rq->cmd_flags);
	return flags;
}

#define REQ_BIT(name) (1u << __REQ_##name)
#endif

/* The request's flags as BIOLAT_* bits (see biolatency.h). */
static __always_inline __u32 portable_flags(__u32 f)
{
	__u32 out = f & BIOLAT_OP_MASK;

	if (f & REQ_BIT(SYNC))
		out |= BIOLAT_F_SYNC;
	if (f & REQ_BIT(META))
		out |= BIOLAT_F_META;
	if (f & REQ_BIT(PRIO))
		out |= BIOLAT_F_PRIO;
	if (f & REQ_BIT(NOMERGE))
		out |= BIOLAT_F_NOMERGE;
	if (f & REQ_BIT(IDLE))
		out |= BIOLAT_F_IDLE;
	if (f & REQ_BIT(FUA))
		out |= BIOLAT_F_FUA;
	if (f & REQ_BIT(PREFLUSH))
		out |= BIOLAT_F_PREFLUSH;
	if (f & REQ_BIT(RAHEAD))
		out |= BIOLAT_F_RAHEAD;
	if (f & REQ_BIT(BACKGROUND))
		out |= BIOLAT_F_BACKGROUND;
	if (f & REQ_BIT(NOWAIT))
		out |= BIOLAT_F_NOWAIT;
	return out;
}

/* floor(log2(v)), 0 for 0 and 1. */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

/* Remembers when `rq` started; with -Q an insert time is not overwritten at issue. */
static __always_inline int trace_start(struct request *rq, bool from_issue)
{
	__u64 key = (__u64)(unsigned long)rq;
	__u64 ts = bpf_ktime_get_ns();

	bpf_map_update_elem(&start, &key, &ts, from_issue && targ_queued ? BPF_NOEXIST : BPF_ANY);
	return 0;
}

SEC("raw_tracepoint/block_rq_insert")
int block_rq_insert(struct bpf_raw_tracepoint_args *ctx)
{
	return trace_start((struct request *)ctx->args[0], false);
}

SEC("raw_tracepoint/block_rq_issue")
int block_rq_issue(struct bpf_raw_tracepoint_args *ctx)
{
	return trace_start((struct request *)ctx->args[0], true);
}

SEC("raw_tracepoint/block_rq_complete")
int block_rq_complete(struct bpf_raw_tracepoint_args *ctx)
{
	struct request *rq = (struct request *)ctx->args[0];
	__u64 rqkey = (__u64)(unsigned long)rq;
	struct biolatency_key key = {};
	struct biolatency_hist *hist;
	__u64 *tsp, delta;
	__u32 slot;

	tsp = bpf_map_lookup_elem(&start, &rqkey);
	if (!tsp)
		return 0; /* issued before tracing started */
	delta = bpf_ktime_get_ns() - *tsp;
	bpf_map_delete_elem(&start, &rqkey);
	if ((__s64)delta < 0)
		return 0;

	if (targ_per_disk) {
		struct gendisk *disk = request_disk(rq);

		if (disk) {
#ifdef BPFPACK_CORE
			key.dev = ((__u32)BPF_CORE_READ(disk, major) << 20) |
				  (__u32)BPF_CORE_READ(disk, first_minor);
			bpf_core_read_str(key.disk, sizeof(key.disk), &disk->disk_name);
#else
			int major = 0, minor = 0;

			bpf_probe_read_kernel(&major, sizeof(major), &disk->major);
			bpf_probe_read_kernel(&minor, sizeof(minor), &disk->first_minor);
			key.dev = ((__u32)major << 20) | (__u32)minor;
			bpf_probe_read_kernel_str(key.disk, sizeof(key.disk), disk->disk_name);
#endif
		}
	}
	if (targ_per_flag)
		key.flags = portable_flags(request_flags(rq));

	hist = bpf_map_lookup_elem(&hists, &key);
	if (!hist) {
		bpf_map_update_elem(&hists, &key, &empty_hist, BPF_NOEXIST);
		hist = bpf_map_lookup_elem(&hists, &key);
		if (!hist)
			return 0;
	}
	delta /= targ_ms ? 1000000 : 1000;
	slot = log2_u64(delta);
	if (slot >= BIOLAT_MAX_SLOTS)
		slot = BIOLAT_MAX_SLOTS - 1;
	__sync_fetch_and_add(&hist->slots[slot], 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
