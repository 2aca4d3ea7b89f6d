/**
 * syscount: summarise syscall counts (and latencies) on a target, by syscall or by process, like
 * BCC's syscount. The BPF side (`syscount.bpf.c`) counts on the raw_syscalls tracepoints into one
 * hash map; the host reads the whole map with one batch dump (`BPF_MAP_DUMP`) per interval and
 * prints what changed since the previous dump. Syscall numbers become names with the table of
 * the target's arch (HELLO's `arch`): x86_64 and aarch64 number syscalls differently.
 *
 * @example
 * ```sh
 * deno run -A tools/syscount/syscount.ts -d 5                # top 10 syscalls for 5 s
 * deno run -A tools/syscount/syscount.ts -P -L -i 1 --remote adb:,su --kernel debian:6.1:aarch64
 * ```
 * @module
 */

import { BpfdError, type MapEntry } from "../client/client.ts";
import type { RawClient } from "../client/raw.ts";
import { cstr, intFlag, runToolMain, type ToolDef, UsageError } from "../client/tool.ts";
import { ERRNO_PAIRS, SYSCALL_PAIRS } from "./syscall_table.ts";

/** Size of `struct syscount_value` (syscount.h). */
export const SYSCOUNT_VALUE_SIZE = 32;

function parsePairs(text: string): Map<number, string> {
  const f = text.trim().split(/\s+/);
  const out = new Map<number, string>();
  for (let i = 0; i + 1 < f.length; i += 2) out.set(Number(f[i]), f[i + 1]);
  return out;
}

const tables = new Map<string, Map<number, string>>();

/** The canonical arch name of a `uname -m` (`arm64` → `aarch64`), or null if no table. */
function tableArch(arch: string | null | undefined): "x86_64" | "aarch64" | null {
  if (arch === "x86_64" || arch === "amd64") return "x86_64";
  if (arch === "aarch64" || arch === "arm64") return "aarch64";
  return null;
}

/**
 * Syscall number → name for a target arch (`uname -m`); null when there is no table for it.
 *
 * @example
 * ```ts
 * import { syscallTable } from "./syscount.ts";
 * console.log(syscallTable("x86_64")?.get(110), syscallTable("aarch64")?.get(173)); // getppid getppid
 * ```
 */
export function syscallTable(arch: string | null | undefined): Map<number, string> | null {
  const a = tableArch(arch);
  if (!a) return null;
  let t = tables.get(a);
  if (!t) tables.set(a, t = parsePairs(SYSCALL_PAIRS[a]));
  return t;
}

/**
 * The name of syscall `nr` on `arch`, or `[unknown: nr]` as BCC prints it.
 *
 * @example
 * ```ts
 * import { syscallName } from "./syscount.ts";
 * console.log(syscallName("aarch64", 56), syscallName("x86_64", 9999)); // openat [unknown: 9999]
 * ```
 */
export function syscallName(arch: string | null | undefined, nr: number): string {
  return syscallTable(arch)?.get(nr) ?? `[unknown: ${nr}]`;
}

/**
 * The number of syscall `name` on `arch`; throws {@link UsageError} naming what to do when the
 * name or the arch is unknown.
 *
 * @example
 * ```ts
 * import { syscallNumber } from "./syscount.ts";
 * console.log(syscallNumber("x86_64", "openat"), syscallNumber("aarch64", "openat")); // 257 56
 * ```
 */
export function syscallNumber(arch: string | null | undefined, name: string): number {
  const t = syscallTable(arch);
  if (!t) {
    throw new UsageError(
      `no syscall table for the target's arch (${arch ?? "not reported by the runtime"}): ` +
        "--syscall works on x86_64 and aarch64 targets",
    );
  }
  for (const [n, s] of t) if (s === name) return n;
  throw new UsageError(
    `no syscall named ${JSON.stringify(name)} on ${arch} (use the kernel's names without ` +
      "sys_, e.g. openat, getppid, newfstatat)",
  );
}

let errnos: Map<number, string> | null = null;

/**
 * Parses an errno flag as BCC does: a number (its absolute value) or a name such as `ENOENT`.
 * Throws {@link UsageError} for anything else.
 *
 * @example
 * ```ts
 * import { parseErrno } from "./syscount.ts";
 * console.log(parseErrno("ENOENT"), parseErrno("-13")); // 2 13
 * ```
 */
export function parseErrno(text: string): number {
  if (/^-?\d+$/.test(text)) {
    const n = Math.abs(Number(text));
    if (n > 0 && n < 4096) return n;
  }
  errnos ??= parsePairs(ERRNO_PAIRS);
  for (const [n, s] of errnos) if (s === text.toUpperCase()) return n;
  throw new UsageError(
    `-e needs an errno number (1-4095) or name such as EPERM or ENOENT, not ${
      JSON.stringify(text)
    }`,
  );
}

/** One decoded entry of the `data` map. */
export interface CountEntry {
  /** The syscall number, or the process id (by-process mode). */
  key: number;
  /** Syscalls counted. */
  count: bigint;
  /** Summed latency in ns (latency mode). */
  totalNs: bigint;
  /** By-process mode: comm of the last caller. */
  comm: string;
}

/**
 * Decodes a dumped `data` entry (little-endian target).
 *
 * @example
 * ```ts
 * import { decodeCountEntry } from "./syscount.ts";
 * const key = new Uint8Array([39, 0, 0, 0]);
 * const value = new Uint8Array(32);
 * value[0] = 5;
 * console.log(decodeCountEntry({ key, value }).count); // 5n
 * ```
 */
export function decodeCountEntry(e: MapEntry): CountEntry {
  if (e.key.length < 4 || e.value.length < SYSCOUNT_VALUE_SIZE) {
    throw new Error(`syscount map entry too short: key ${e.key.length}, value ${e.value.length}`);
  }
  const k = new DataView(e.key.buffer, e.key.byteOffset, e.key.length);
  const v = new DataView(e.value.buffer, e.value.byteOffset, e.value.length);
  return {
    key: k.getUint32(0, true),
    count: v.getBigUint64(0, true),
    totalNs: v.getBigUint64(8, true),
    comm: cstr(e.value.subarray(16, 32)),
  };
}

/** One printed row: the change of one entry over an interval. */
export interface CountRow {
  /** The syscall number, or the process id (by-process mode). */
  key: number;
  /** Syscalls in the interval. */
  count: bigint;
  /** Summed latency in the interval, ns. */
  totalNs: bigint;
  /** By-process mode: comm. */
  comm: string;
}

/**
 * The rows of an interval: each entry minus what it held at the previous dump (`prev`, updated
 * in place), without the unchanged ones, sorted by count (or by total latency, `byLatency`),
 * then by key, cut to `top`.
 *
 * @example
 * ```ts
 * import { intervalRows } from "./syscount.ts";
 * const prev = new Map();
 * const e = (key: number, count: bigint) => ({ key, count, totalNs: 0n, comm: "" });
 * intervalRows([e(1, 5n)], prev, { top: 10 });
 * console.log(intervalRows([e(1, 7n), e(2, 1n)], prev, { top: 10 }).map((r) => r.count)); // [2n, 1n]
 * ```
 */
export function intervalRows(
  entries: CountEntry[],
  prev: Map<number, { count: bigint; totalNs: bigint }>,
  opts: { top: number; byLatency?: boolean },
): CountRow[] {
  const rows: CountRow[] = [];
  for (const e of entries) {
    const p = prev.get(e.key);
    // An entry below its last value was deleted and created again: all of it is new.
    const fresh = !p || e.count < p.count;
    const count = fresh ? e.count : e.count - p.count;
    const totalNs = fresh ? e.totalNs : e.totalNs - p.totalNs;
    prev.set(e.key, { count: e.count, totalNs: e.totalNs });
    if (count > 0n) rows.push({ key: e.key, count, totalNs, comm: e.comm });
  }
  const cmp = (a: bigint, b: bigint) => (a < b ? 1 : a > b ? -1 : 0);
  rows.sort((a, b) =>
    (opts.byLatency ? cmp(a.totalNs, b.totalNs) : 0) || cmp(a.count, b.count) || a.key - b.key
  );
  return rows.slice(0, opts.top);
}

const hms = (d: Date) =>
  [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");

/** Seconds from a flag (a positive number), in ms; undefined when absent. */
function secondsFlag(v: unknown, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || !Number.isFinite(n) || n <= 0) {
    throw new UsageError(`--${name} needs a positive number of seconds, not ${JSON.stringify(v)}`);
  }
  return n * 1000;
}

const EXIT_PROG = "tracepoint__raw_syscalls__sys_exit";

/** The syscount tool. */
export const syscount: ToolDef = {
  name: "syscount",
  summary:
    "syscount — summarise syscall counts and latencies on a target (BCC's syscount, remotely)",
  usage: "deno task tool syscount [options]   (or: deno run -A tools/syscount/syscount.ts)",
  optionHelp: `  -p, --pid PID        only this process
  -t, --tid TID        only this thread
  -i, --interval SECS  print a summary every SECS seconds (then count afresh)
  -T, --top N          print only the top N syscalls (or processes) by count or latency
                       (default 10)
  -x, --failures       only failed syscalls (return < 0)
  -e, --errno ERRNO    only syscalls that return this error (a number, or EPERM, ENOENT, …)
  -L, --latency        also sum syscall latency (loads the sys_enter program too)
  -m, --milliseconds   latency in milliseconds (default: microseconds)
  -P, --process        count by process, not by syscall
      --syscall NAME   only this syscall (its name on the target's arch, e.g. openat)`,
  epilog:
    `Without -i one summary is printed at the end (-d or Ctrl-C). Columns: SYSCALL (or PID COMM with
-P), COUNT, and with -L the summed latency TIME (us) or TIME (ms). Syscall names follow the
target's arch (x86_64 or aarch64). With --json, each summary is one JSON object.

Examples:
  deno task tool syscount -d 10            # top 10 syscalls over 10 s
  deno task tool syscount -P -i 1          # top processes by syscall count, every second
  deno task tool syscount -x -e ENOENT     # only syscalls failing with ENOENT
  deno task tool syscount -L -p 1234       # counts and latency of process 1234`,
  options: {
    pid: { type: "string", short: "p" },
    tid: { type: "string", short: "t" },
    interval: { type: "string", short: "i" },
    top: { type: "string", short: "T" },
    failures: { type: "boolean", short: "x" },
    errno: { type: "string", short: "e" },
    latency: { type: "boolean", short: "L" },
    milliseconds: { type: "boolean", short: "m" },
    process: { type: "boolean", short: "P" },
    syscall: { type: "string" },
  },
  configure(v) {
    secondsFlag(v.interval, "interval");
    const top = intFlag(v, "top");
    if (top === 0) throw new UsageError("--top needs at least 1");
    const rodata: Record<string, number | boolean> = {};
    const pid = intFlag(v, "pid");
    const tid = intFlag(v, "tid");
    if (pid !== undefined) rodata.targ_tgid = pid;
    if (tid !== undefined) rodata.targ_tid = tid;
    if (v.failures) rodata.targ_failed = true;
    if (typeof v.errno === "string") rodata.targ_errno = parseErrno(v.errno);
    if (v.process) rodata.by_process = true;
    if (v.latency) rodata.latency = true;
    const name = typeof v.syscall === "string" ? v.syscall : null;
    return {
      // Without -L only sys_exit runs: sys_enter would cost every syscall for nothing.
      programs: v.latency ? undefined : [EXIT_PROG],
      // A syscall number depends on the target's arch, known after HELLO.
      rodata: name === null ? rodata : (facts) => ({
        ...rodata,
        targ_syscall: syscallNumber(facts.arch, name),
      }),
    };
  },
  async run(ctx) {
    const data = ctx.bundle.maps.get("data");
    if (!data) throw new Error("the bundle has no `data` map: is it a syscount bundle?");
    const v = ctx.values;
    const top = intFlag(v, "top") ?? 10;
    const latency = v.latency === true;
    const ms = v.milliseconds === true;
    const byProcess = v.process === true;
    const arch = ctx.client.facts?.arch ?? ctx.bundle.object.arch ?? null;
    if (!syscallTable(arch) && !byProcess) {
      ctx.status(`no syscall table for arch ${arch ?? "(unknown)"}: printing numbers`);
    }
    const intervalMs = secondsFlag(v.interval, "interval") ?? (ctx.durationMs || Infinity);
    await ctx.attachAll();
    const o = ctx.bundle.object;
    const what = typeof v.syscall === "string"
      ? `syscall ${v.syscall}`
      : `syscalls, printing top ${top}`;
    ctx.status(
      `tracing ${v.failures ? "failed " : ""}${what} on ${o.arch} ${o.release} (${o.mode} ` +
        `object)${ctx.durationMs ? ` for ${ctx.durationMs / 1000} s` : ""}; Ctrl-C to end`,
    );

    const agg = byProcess ? "PID    COMM" : "SYSCALL";
    const timeCol = ms ? "TIME (ms)" : "TIME (us)";
    const prev = new Map<number, { count: bigint; totalNs: bigint }>();
    let elapsed = 0;
    let warnedFull = false;
    for (;;) {
      await ctx.wait(intervalMs);
      elapsed += intervalMs;
      // As BCC: a summary per interval; the last one when the duration is reached or on Ctrl-C.
      const exiting = ctx.stopped || (ctx.durationMs > 0 && elapsed >= ctx.durationMs);
      const entries = (await ctx.client.dump(data.fd)).map(decodeCountEntry);
      const idle = entries.filter((e) => prev.get(e.key)?.count === e.count).map((e) => e.key);
      const rows = intervalRows(entries, prev, { top, byLatency: latency });
      const now = new Date();
      if (ctx.json) {
        ctx.print(JSON.stringify({
          time: now.toISOString(),
          arch,
          by: byProcess ? "process" : "syscall",
          rows: rows.map((r) => ({
            ...(byProcess
              ? { pid: r.key, comm: r.comm }
              : { nr: r.key, syscall: syscallName(arch, r.key) }),
            count: Number(r.count),
            ...(latency ? { total_ns: Number(r.totalNs) } : {}),
          })),
        }));
      } else {
        ctx.print(`[${hms(now)}]`);
        ctx.print(
          `${agg.padEnd(22)} ${"COUNT".padStart(8)}${latency ? ` ${timeCol.padStart(16)}` : ""}`,
        );
        for (const r of rows) {
          const label = byProcess
            ? `${String(r.key).padEnd(6)} ${r.comm.padEnd(15)}`
            : syscallName(arch, r.key);
          const t = latency
            ? ` ${
              (ms ? Number(r.totalNs) / 1e6 : Number(r.totalNs) / 1e3).toFixed(ms ? 6 : 3)
                .padStart(16)
            }`
            : "";
          ctx.print(`${label.padEnd(22)} ${String(r.count).padStart(8)}${t}`);
        }
        ctx.print("");
      }
      if (entries.length >= data.maxEntries && !warnedFull) {
        warnedFull = true;
        ctx.status(
          `the data map is full (${data.maxEntries} entries): new ${
            byProcess ? "processes" : "syscalls"
          } are not counted${byProcess ? "; use -i so idle processes are pruned" : ""}`,
        );
      }
      if (exiting) break;
      // By process, exited processes would fill the map: past half full, drop the idle ones
      // (one pipelined round trip). Their next syscall, if any, starts a fresh entry.
      if (byProcess && entries.length > data.maxEntries / 2) {
        await pruneIdle(ctx.client.raw, data.fd, idle, prev);
      }
    }
    ctx.status("detaching");
  },
};

/** Deletes the entries `idle` (unchanged over the last interval) and forgets them. */
async function pruneIdle(
  raw: RawClient,
  fd: number,
  idle: number[],
  prev: Map<number, { count: bigint; totalNs: bigint }>,
): Promise<void> {
  const key = (n: number) => new Uint8Array(new Uint32Array([n]).buffer).toBase64();
  const lines = idle.map((k) => `BPF_DELETE_ELEM ${fd} ${key(k)} 4`);
  const bodies = await raw.pipeline(lines);
  bodies.forEach((b, i) => {
    const err = /ret=-\d+ errno=(\d+)/.exec(b[0] ?? "");
    if (err && err[1] !== "2") throw new BpfdError(lines[i], b); // ENOENT: gone already
    prev.delete(idle[i]);
  });
}

if (import.meta.main) await runToolMain(syscount);
