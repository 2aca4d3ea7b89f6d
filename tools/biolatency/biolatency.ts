/**
 * biolatency: block device I/O latency as a log2 histogram, like BCC's biolatency. The BPF side
 * (`biolatency.bpf.c`) times each request from issue (or, with `-Q`, from insertion into the
 * I/O scheduler) to completion and counts it in a histogram map; this side dumps the map
 * (`BPF_MAP_DUMP`) at each interval or at the end and prints it as BCC does.
 *
 * @example
 * ```sh
 * deno run -A tools/biolatency/biolatency.ts -d 10            # one histogram after 10 s
 * deno run -A tools/biolatency/biolatency.ts -D -m 1 5        # per disk, msecs, 5 × 1 s
 * deno run -A tools/biolatency/biolatency.ts -F --json --remote ssh:root@board --kernel debian:6.1:aarch64
 * ```
 * @module
 */

import {
  clockHMS,
  cstr,
  describeTarget,
  log2Histogram,
  runToolMain,
  type ToolContext,
  type ToolDef,
  UsageError,
} from "../client/tool.ts";

/** `struct biolatency_key` size (biolatency.h). */
export const KEY_SIZE = 40;
/** Buckets per histogram (`BIOLAT_MAX_SLOTS`). */
export const MAX_SLOTS = 32;

/** One decoded histogram: its key (all zero without -D/-F) and bucket counts. */
export interface Histogram {
  /** `major << 20 | minor` of the disk (-D), else 0. */
  dev: number;
  /** The disk's name (-D), else "". */
  disk: string;
  /** Portable request flags (biolatency.h `BIOLAT_*`; -F), else 0. */
  flags: number;
  /** Count per log2 bucket: slot i holds [2^i, 2^(i+1)) (slot 0 also holds 0). */
  slots: number[];
}

/**
 * Decodes one `hists` map entry (`struct biolatency_key` → `struct biolatency_hist`,
 * little-endian target).
 *
 * @example
 * ```ts
 * import { decodeHistogram } from "./biolatency.ts";
 * const h = decodeHistogram(new Uint8Array(40), new Uint8Array(256));
 * console.log(h.slots.length); // 32
 * ```
 */
export function decodeHistogram(key: Uint8Array, value: Uint8Array): Histogram {
  if (key.length < KEY_SIZE || value.length < MAX_SLOTS * 8) {
    throw new Error(
      `biolatency: histogram entry too short (key ${key.length}, value ${value.length} bytes): ` +
        "the bundle does not match this tool; rebuild it (deno task build --tool biolatency)",
    );
  }
  const k = new DataView(key.buffer, key.byteOffset, key.length);
  const v = new DataView(value.buffer, value.byteOffset, value.length);
  const slots: number[] = [];
  for (let i = 0; i < MAX_SLOTS; i++) slots.push(Number(v.getBigUint64(i * 8, true)));
  return {
    dev: k.getUint32(0, true),
    flags: k.getUint32(4, true),
    disk: cstr(key.subarray(8, 40)),
    slots,
  };
}

/** `REQ_OP_*` values (unchanged from 4.10 to 6.18) and the names BCC prints for them. */
const OPS: Record<number, string> = {
  0: "Read",
  1: "Write",
  2: "Flush",
  3: "Discard",
  5: "SecureErase",
  7: "ZoneAppend",
  9: "WriteZeros",
  11: "ZoneOpen",
  13: "ZoneClose",
  15: "ZoneFinish",
  17: "ZoneReset",
  19: "ZoneResetAll",
  34: "DrvIn",
  35: "DrvOut",
};

/** Flag bits (biolatency.h) and their BCC prefixes, innermost first. */
const FLAG_NAMES: [number, string][] = [
  [1 << 8, "Sync"],
  [1 << 9, "Metadata"],
  [1 << 13, "ForcedUnitAccess"],
  [1 << 10, "Priority"],
  [1 << 11, "NoMerge"],
  [1 << 12, "Idle"],
  [1 << 14, "PreFlush"],
  [1 << 15, "ReadAhead"],
  [1 << 16, "Background"],
  [1 << 17, "NoWait"],
];

/**
 * Names request flags as BCC's `biolatency -F` does: the operation, prefixed by each flag
 * (`Sync-Write`, `ReadAhead-Read`, `Unknown`).
 *
 * @example
 * ```ts
 * import { flagsName } from "./biolatency.ts";
 * console.log(flagsName(1 | (1 << 8))); // Sync-Write
 * ```
 */
export function flagsName(flags: number): string {
  let desc = OPS[flags & 0xff] ?? "Unknown";
  for (const [bit, name] of FLAG_NAMES) if (flags & bit) desc = `${name}-${desc}`;
  return desc;
}

/** How histograms are shown. */
export interface FormatOptions {
  /** "usecs" or "msecs". */
  unit: string;
  /** -D: a `disk = NAME` line before each histogram. */
  perDisk?: boolean;
  /** -F: a `flags = NAME` line before each histogram. */
  perFlag?: boolean;
}

/** The disk label of `h` (its name, else `major,minor`, else `?`). */
function diskLabel(h: Histogram): string {
  if (h.disk) return h.disk;
  return h.dev ? `${h.dev >>> 20},${h.dev & 0xfffff}` : "?";
}

/** Sorts histograms by disk, then flags (a stable order for output and tests). */
export function sortHistograms(hs: Histogram[]): Histogram[] {
  return [...hs].sort((a, b) =>
    diskLabel(a) < diskLabel(b) ? -1 : diskLabel(a) > diskLabel(b) ? 1 : a.flags - b.flags
  );
}

/**
 * The text BCC prints for one interval: per histogram an optional `disk = …` / `flags = …`
 * line, then the log2 table. Returns lines (no trailing newline).
 *
 * @example
 * ```ts
 * import { formatHistograms } from "./biolatency.ts";
 * const slots = Array(32).fill(0);
 * slots[6] = 3;
 * console.log(formatHistograms([{ dev: 0, disk: "", flags: 0, slots }], { unit: "usecs" }).join("\n"));
 * ```
 */
export function formatHistograms(hs: Histogram[], opts: FormatOptions): string[] {
  const out: string[] = [];
  for (const h of sortHistograms(hs)) {
    if (opts.perDisk || opts.perFlag) out.push("");
    if (opts.perDisk) out.push(`disk = ${diskLabel(h)}`);
    if (opts.perFlag) out.push(`flags = ${flagsName(h.flags)}`);
    out.push(...log2Histogram(h.slots, opts.unit).split("\n"));
  }
  return out;
}

/** One histogram as a JSON object (`--json`): buckets with numeric bounds and counts. */
export interface HistogramJson {
  unit: string;
  disk?: string;
  flags?: string;
  total: number;
  buckets: { low: number; high: number; count: number }[];
}

/**
 * A histogram as `--json` prints it: every bucket from 0 to the last non-empty one, bounds as
 * in the text table (slot 0 is 0 → 1, slot i is 2^i → 2^(i+1)-1).
 *
 * @example
 * ```ts
 * import { histogramJson } from "./biolatency.ts";
 * const slots = Array(32).fill(0);
 * slots[2] = 1;
 * console.log(JSON.stringify(histogramJson({ dev: 0, disk: "", flags: 0, slots }, { unit: "usecs" })));
 * ```
 */
export function histogramJson(h: Histogram, opts: FormatOptions): HistogramJson {
  let last = h.slots.length - 1;
  while (last >= 0 && h.slots[last] === 0) last--;
  const buckets = h.slots.slice(0, last + 1).map((count, i) => ({
    low: i === 0 ? 0 : 2 ** i,
    high: 2 ** (i + 1) - 1,
    count,
  }));
  return {
    unit: opts.unit,
    ...(opts.perDisk ? { disk: diskLabel(h) } : {}),
    ...(opts.perFlag ? { flags: flagsName(h.flags) } : {}),
    total: h.slots.reduce((a, b) => a + b, 0),
    buckets,
  };
}

/** Parses `[interval [count]]`; throws {@link UsageError}. */
export function parseIntervalCount(positionals: string[]): { interval: number; count: number } {
  if (positionals.length > 2) {
    throw new UsageError(`at most two arguments (interval, count), got ${positionals.length}`);
  }
  const num = (s: string, what: string) => {
    if (!/^\d+$/.test(s) || Number(s) < 1) {
      throw new UsageError(`${what} needs a positive whole number, not ${JSON.stringify(s)}`);
    }
    return Number(s);
  };
  return {
    interval: positionals[0] === undefined ? 0 : num(positionals[0], "interval"),
    count: positionals[1] === undefined ? 0 : num(positionals[1], "count"),
  };
}

/** Dumps `hists`, optionally clears it, and prints one interval. */
async function report(ctx: ToolContext, clear: boolean, n: number): Promise<void> {
  const m = ctx.bundle.maps.get("hists");
  if (!m) throw new Error("the bundle has no `hists` map: rebuild it for this tool version");
  const entries = await ctx.client.dump(m.fd);
  if (clear && entries.length) await ctx.client.command(`BPF_CLEAR_MAP ${m.fd} ${m.keySize}`);
  const hs = entries.map((e) => decodeHistogram(e.key, e.value));
  const opts: FormatOptions = {
    unit: ctx.values.milliseconds ? "msecs" : "usecs",
    perDisk: ctx.values.disks === true,
    perFlag: ctx.values.flags === true,
  };
  const stamp = ctx.values.timestamp === true ? clockHMS() : null;
  if (ctx.json) {
    for (const h of sortHistograms(hs)) {
      ctx.print(JSON.stringify({
        interval: n,
        ...(stamp ? { time: stamp } : {}),
        ...histogramJson(h, opts),
      }));
    }
    return;
  }
  ctx.print("");
  if (stamp) ctx.print(stamp);
  if (hs.length === 0) {
    ctx.print(log2Histogram([], opts.unit));
    return;
  }
  for (const l of formatHistograms(hs, opts)) ctx.print(l);
}

/** The biolatency tool. */
export const biolatency: ToolDef = {
  name: "biolatency",
  summary: "biolatency — summarize block device I/O latency as a histogram (BCC's biolatency, " +
    "remotely)",
  usage: "deno task tool biolatency [options] [interval [count]]   " +
    "(or: deno run -A tools/biolatency/biolatency.ts)",
  optionHelp: `  -T, --timestamp      include a timestamp (HH:MM:SS) with each histogram
  -m, --milliseconds   millisecond histogram (default: microseconds)
  -Q, --queued         include OS queued time (from block_rq_insert) in the latency
  -D, --disks          one histogram per disk
  -F, --flags          one histogram per set of I/O flags (Read, Sync-Write, …)`,
  epilog: `Arguments: interval (seconds between histograms; each clears the counts) and count
(histograms to print). Without an interval one histogram is printed at the end (-d or Ctrl-C).

Latency is measured from block_rq_issue (driver issue) or, with -Q, block_rq_insert to
block_rq_complete, using raw tracepoints on the request. --json prints one object per
histogram: {"interval":1,"unit":"usecs","total":N,"buckets":[{"low":0,"high":1,"count":0},…]}.`,
  options: {
    timestamp: { type: "boolean", short: "T" },
    milliseconds: { type: "boolean", short: "m" },
    queued: { type: "boolean", short: "Q" },
    disks: { type: "boolean", short: "D" },
    flags: { type: "boolean", short: "F" },
  },
  positionals: true,
  configure(v, positionals) {
    parseIntervalCount(positionals);
    return {
      rodata: {
        targ_per_disk: v.disks === true,
        targ_per_flag: v.flags === true,
        targ_queued: v.queued === true,
        targ_ms: v.milliseconds === true,
      },
      programs: v.queued
        ? ["block_rq_insert", "block_rq_issue", "block_rq_complete"]
        : ["block_rq_issue", "block_rq_complete"],
    };
  },
  async run(ctx) {
    const { interval, count } = parseIntervalCount(ctx.positionals);
    await ctx.attachAll();
    ctx.status(
      `tracing block device I/O on ${describeTarget(ctx)}` +
        `${ctx.durationMs ? ` for ${ctx.durationMs / 1000} s` : ""}; Ctrl-C to end`,
    );
    for (let n = 1;; n++) {
      await ctx.wait(interval ? interval * 1000 : Number.POSITIVE_INFINITY);
      await report(ctx, interval > 0, n);
      if (ctx.stopped || (count && n >= count)) break;
    }
  },
};

if (import.meta.main) await runToolMain(biolatency);
