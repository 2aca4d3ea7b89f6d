/**
 * profile: a CPU profiler that samples stack traces at a timed interval on a target, like BCC's
 * profile. The BPF side (`profile.bpf.c`) runs on one software cpu-clock perf event per online
 * CPU of the target and counts (pid, kernel stack, user stack, comm) combinations; at the end the
 * host reads the counts and the stack map with one dump each, symbolises every distinct frame in
 * batches (one pipelined round trip for all kernel frames, one per process for user frames) and
 * prints the stacks BCC's way, folded lines for flame graphs, or JSON.
 *
 * @example
 * ```sh
 * deno run -A tools/profile/profile.ts 5                 # all CPUs, 49 Hz, 5 seconds
 * deno run -A tools/profile/profile.ts -p 1234 -F 99 -U -f -d 10 > out.folded
 * deno run -A tools/profile/profile.ts --json -d 2 --remote ssh:root@board --kernel debian:6.1:aarch64
 * ```
 * @module
 */

import {
  cstr,
  intFlag,
  runToolMain,
  type ToolContext,
  type ToolDef,
  UsageError,
  type Values,
} from "../client/tool.ts";
import { type BpfdClient, BpfdError, type MapEntry, type Sym } from "../client/client.ts";

/** Size of `struct profile_key` (profile.h). */
export const KEY_SIZE = 28;
/** Frames per stack in the `stacks` map (PROFILE_MAX_STACK_DEPTH of profile.h). */
export const MAX_STACK_DEPTH = 127;
/** Default `-F` (BCC's). */
export const DEFAULT_FREQUENCY = 49;
/** Default `--stack-storage-size` (BCC's, and the map's size in profile.bpf.c). */
export const DEFAULT_STACK_STORAGE = 16384;

const PERF_TYPE_SOFTWARE = 1;
const PERF_COUNT_SW_CPU_CLOCK = 0;
const EFAULT = 14;
const ENOMEM = 12;

/** One decoded `struct profile_key` with its sample count. */
export interface ProfileKey {
  /** Process id (tgid). */
  pid: number;
  /** Index in the stack map, or -errno (see profile.h); -1 when not collected. */
  kernStackId: number;
  /** Index in the stack map, or -errno; -1 when not collected. */
  userStackId: number;
  /** Task comm at the sample. */
  comm: string;
}

/**
 * Decodes one `counts` entry (little-endian target): the key and its u64 sample count.
 *
 * @example
 * ```ts
 * import { decodeCount } from "./profile.ts";
 * const key = new Uint8Array(28);
 * new DataView(key.buffer).setUint32(0, 42, true);
 * console.log(decodeCount({ key, value: new Uint8Array(8) }).key.pid); // 42
 * ```
 */
export function decodeCount(e: MapEntry): { key: ProfileKey; count: number } {
  if (e.key.length !== KEY_SIZE || e.value.length < 8) {
    throw new Error(
      `profile: a counts entry of ${e.key.length}+${e.value.length} bytes, expected ` +
        `${KEY_SIZE}+8: the bundle does not match this tool (rebuild it)`,
    );
  }
  const k = new DataView(e.key.buffer, e.key.byteOffset, e.key.length);
  const v = new DataView(e.value.buffer, e.value.byteOffset, e.value.length);
  return {
    key: {
      pid: k.getUint32(0, true),
      kernStackId: k.getInt32(4, true),
      userStackId: k.getInt32(8, true),
      comm: cstr(e.key.subarray(12, 28)),
    },
    count: Number(v.getBigUint64(0, true)),
  };
}

/**
 * Decodes one stack map value: the instruction pointers up to the first zero, innermost first.
 *
 * @example
 * ```ts
 * import { decodeStack } from "./profile.ts";
 * const v = new Uint8Array(24);
 * new DataView(v.buffer).setBigUint64(0, 0x401000n, true);
 * console.log(decodeStack(v)); // [0x401000n]
 * ```
 */
export function decodeStack(value: Uint8Array): bigint[] {
  const dv = new DataView(value.buffer, value.byteOffset, value.length);
  const out: bigint[] = [];
  for (let o = 0; o + 8 <= value.length; o += 8) {
    const ip = dv.getBigUint64(o, true);
    if (ip === 0n) break;
    out.push(ip);
  }
  return out;
}

/**
 * Whether a stack id stands for a stack that was lost (BCC's `stack_id_err`): negative, but not
 * -EFAULT (which means there was no stack of that kind, e.g. no user stack of a kernel thread).
 *
 * @example
 * ```ts
 * import { stackMissing } from "./profile.ts";
 * console.log(stackMissing(-17), stackMissing(-14), stackMissing(5)); // true false false
 * ```
 */
export function stackMissing(id: number): boolean {
  return id < 0 && id !== -EFAULT;
}

/** A symbolised frame. */
export interface Frame {
  /** The instruction pointer. */
  addr: bigint;
  /** The symbol, or null when the target could not resolve it. */
  sym: Sym | null;
}

/** One stack of the report: what BCC prints as one block. */
export interface ProfileStack {
  /** The counts key. */
  key: ProfileKey;
  /** Samples. */
  count: number;
  /** Kernel frames, innermost first; null when not collected or lost (see `kernelMissing`). */
  kernel: Frame[] | null;
  /** User frames, innermost first; null when not collected or lost. */
  user: Frame[] | null;
  /** The kernel stack was asked for but lost (collision, full map). */
  kernelMissing: boolean;
  /** The user stack was asked for but lost. */
  userMissing: boolean;
}

/** Output switches of {@link renderText} and {@link renderFolded}. */
export interface RenderOptions {
  /** `-U`: user stacks only. */
  userOnly?: boolean;
  /** `-K`: kernel stacks only. */
  kernelOnly?: boolean;
  /** `-a`: `_[k]` after kernel symbols. */
  annotations?: boolean;
  /** `--delimited`: a delimiter between kernel and user stacks. */
  delimited?: boolean;
}

function ksymName(f: Frame, o: RenderOptions): string {
  const name = f.sym?.name || "[unknown]";
  return o.annotations ? `${name}_[k]` : name;
}

function usymName(f: Frame): string {
  return f.sym?.name || "[unknown]";
}

/**
 * BCC's default output: per stack, the kernel frames then the user frames (innermost first),
 * then `-  comm (pid)` and the count, in increasing count order (the hottest last).
 *
 * @example
 * ```ts
 * import { renderText } from "./profile.ts";
 * const key = { pid: 7, kernStackId: -14, userStackId: 1, comm: "burn" };
 * const user = [{ addr: 0x401000n, sym: { name: "spin", offset: 0, module: "/bin/burn" } }];
 * console.log(renderText([{ key, count: 3, kernel: [], user, kernelMissing: false, userMissing: false }]));
 * ```
 */
export function renderText(stacks: ProfileStack[], o: RenderOptions = {}): string {
  const out: string[] = [];
  for (const s of stacks) {
    if (!o.userOnly) {
      if (s.kernelMissing) out.push("    [Missed Kernel Stack]");
      else for (const f of s.kernel ?? []) out.push(`    ${ksymName(f, o)}`);
    }
    if (!o.kernelOnly) {
      if (o.delimited && s.key.kernStackId >= 0 && s.key.userStackId >= 0) out.push("    --");
      if (s.userMissing) out.push("    [Missed User Stack]");
      else for (const f of s.user ?? []) out.push(`    ${usymName(f)}`);
    }
    out.push(`    ${"-".padEnd(16)} ${s.key.comm} (${s.key.pid})`);
    out.push(`        ${s.count}`, "");
  }
  return out.join("\n");
}

/**
 * Folded output for flame graphs (`flamegraph.pl`): one line per stack, `comm;` then the user
 * frames and the kernel frames outermost first, separated by `;`, then a space and the count.
 *
 * @example
 * ```ts
 * import { renderFolded } from "./profile.ts";
 * const key = { pid: 7, kernStackId: -14, userStackId: 1, comm: "burn" };
 * const user = [{ addr: 0x401000n, sym: { name: "spin", offset: 0, module: "/bin/burn" } }];
 * console.log(renderFolded([{ key, count: 3, kernel: [], user, kernelMissing: false, userMissing: false }]));
 * // burn;spin 3
 * ```
 */
export function renderFolded(stacks: ProfileStack[], o: RenderOptions = {}): string {
  return stacks.map((s) => {
    const line = [s.key.comm];
    if (!o.kernelOnly) {
      if (s.userMissing) line.push("[Missed User Stack]");
      else line.push(...(s.user ?? []).map(usymName).reverse());
    }
    if (!o.userOnly) {
      if (o.delimited && s.key.kernStackId >= 0 && s.key.userStackId >= 0) line.push("-");
      if (s.kernelMissing) line.push("[Missed Kernel Stack]");
      else line.push(...(s.kernel ?? []).map((f) => ksymName(f, o)).reverse());
    }
    return `${line.join(";")} ${s.count}`;
  }).join("\n");
}

function frameJson(f: Frame) {
  return {
    addr: `0x${f.addr.toString(16)}`,
    name: f.sym?.name ?? null,
    offset: f.sym?.offset ?? null,
    module: f.sym?.module ?? null,
  };
}

/**
 * `--json`: one object per stack, the hottest first: `pid`, `comm`, `count`, the stack ids,
 * `kernel` and `user` frame lists (innermost first; `{addr, name, offset, module}`, `name` null
 * when unresolved; the list is null when that stack was not collected or was lost) and
 * `kernel_missing` / `user_missing`.
 *
 * @example
 * ```ts
 * import { renderJson } from "./profile.ts";
 * const key = { pid: 7, kernStackId: -1, userStackId: -14, comm: "burn" };
 * console.log(renderJson([{ key, count: 3, kernel: null, user: [], kernelMissing: false, userMissing: false }]));
 * ```
 */
export function renderJson(stacks: ProfileStack[]): string[] {
  return [...stacks].reverse().map((s) =>
    JSON.stringify({
      pid: s.key.pid,
      comm: s.key.comm,
      count: s.count,
      kernel_stack_id: s.key.kernStackId,
      user_stack_id: s.key.userStackId,
      kernel: s.kernel?.map(frameJson) ?? null,
      user: s.user?.map(frameJson) ?? null,
      kernel_missing: s.kernelMissing,
      user_missing: s.userMissing,
    })
  );
}

/** What {@link collectProfile} found besides the stacks. */
export interface ProfileSummary {
  /** Samples counted. */
  samples: number;
  /** Keys with a lost kernel or user stack (BCC's `missing_stacks`). */
  missing: number;
  /** Some stack was lost because the stack map was full (-ENOMEM). */
  enomem: boolean;
  /** Distinct frames symbolised. */
  frames: number;
  /** Protocol round trips spent on symbols (kernel batch + one per process). */
  symbolRoundTrips: number;
  /**
   * How the stacks were read: one dump, pipelined lookups of the ids the dump lacked, lookups
   * only (the dump failed), or not at all (no stack was collected).
   */
  stackRead: "dump" | "dump+lookup" | "lookup" | "none";
}

/**
 * Reads the stacks of `ids` from the stack map: one dump; ids the dump did not return (a
 * runtime that cannot dump this map type, or an original BPFd whose dump came back empty) are
 * looked up, all in one pipelined round trip.
 */
async function readStacks(
  client: BpfdClient,
  fd: number,
  ids: number[],
): Promise<{ stacks: Map<number, bigint[]>; how: ProfileSummary["stackRead"] }> {
  const stacks = new Map<number, bigint[]>();
  let dumped = true;
  try {
    for (const e of await client.dump(fd)) {
      stacks.set(
        new DataView(e.key.buffer, e.key.byteOffset, 4).getUint32(0, true),
        decodeStack(e.value),
      );
    }
  } catch (e) {
    if (!(e instanceof BpfdError)) throw e;
    dumped = false;
  }
  const rest = ids.filter((id) => !stacks.has(id));
  if (rest.length === 0) return { stacks, how: "dump" };
  const info = client.mapInfo(fd);
  const u32 = (n: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n, true);
    return b.toBase64();
  };
  const lines = rest.map((id) => `BPF_LOOKUP_ELEM ${fd} ${u32(id)} 4 ${info.valueSize}`);
  const bodies = await client.raw.pipeline(lines);
  bodies.forEach((b, i) => {
    // A value is one base64 line; anything else (ENOENT: the stack is gone) leaves it missing.
    if (b.length === 1 && /^[A-Za-z0-9+/]+=*$/.test(b[0])) {
      stacks.set(rest[i], decodeStack(Uint8Array.fromBase64(b[0])));
    }
  });
  return { stacks, how: dumped ? "dump+lookup" : "lookup" };
}

/**
 * Reads the `counts` and `stacks` maps of a loaded profile bundle and symbolises every distinct
 * frame: all kernel frames in one pipelined batch (`ksyms`), the user frames of each process in
 * one batch (`usyms`). Returns the stacks in BCC's order (increasing count).
 *
 * @example
 * ```ts
 * import { collectProfile } from "./profile.ts";
 * // const { stacks, summary } = await collectProfile(client, countsFd, stacksFd);
 * ```
 */
export async function collectProfile(
  client: BpfdClient,
  countsFd: number,
  stacksFd: number,
): Promise<{ stacks: ProfileStack[]; summary: ProfileSummary }> {
  const counts = (await client.dump(countsFd)).map(decodeCount);
  const ids = new Set<number>();
  for (const { key } of counts) {
    if (key.kernStackId >= 0) ids.add(key.kernStackId);
    if (key.userStackId >= 0) ids.add(key.userStackId);
  }
  const sortedIds = [...ids].sort((a, b) => a - b);
  const read = sortedIds.length
    ? await readStacks(client, stacksFd, sortedIds)
    : { stacks: new Map<number, bigint[]>(), how: "none" as const };

  // Every distinct frame, resolved in batches.
  const kaddrs = new Set<bigint>();
  const uaddrs = new Map<number, Set<bigint>>();
  for (const { key } of counts) {
    for (const a of read.stacks.get(key.kernStackId) ?? []) kaddrs.add(a);
    const u = read.stacks.get(key.userStackId);
    if (key.userStackId >= 0 && u) {
      const set = uaddrs.get(key.pid) ?? new Set<bigint>();
      for (const a of u) set.add(a);
      uaddrs.set(key.pid, set);
    }
  }
  const sortAddrs = (s: Set<bigint>) => [...s].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  let trips = 0;
  const ksyms = kaddrs.size ? await client.ksyms(sortAddrs(kaddrs)) : new Map<bigint, Sym | null>();
  if (kaddrs.size) trips++;
  const usyms = new Map<number, Map<bigint, Sym | null>>();
  for (const pid of [...uaddrs.keys()].sort((a, b) => a - b)) {
    usyms.set(pid, await client.usyms(pid, sortAddrs(uaddrs.get(pid)!)));
    trips++;
  }

  let missing = 0;
  let enomem = false;
  let samples = 0;
  const stacks: ProfileStack[] = counts.map(({ key, count }) => {
    samples += count;
    const kLost = stackMissing(key.kernStackId) ||
      (key.kernStackId >= 0 && !read.stacks.has(key.kernStackId));
    const uLost = stackMissing(key.userStackId) ||
      (key.userStackId >= 0 && !read.stacks.has(key.userStackId));
    // -1 means "not collected" (-U/-K), not lost.
    const kernelMissing = kLost && key.kernStackId !== -1;
    const userMissing = uLost && key.userStackId !== -1;
    if (kernelMissing || userMissing) missing++;
    if (key.kernStackId === -ENOMEM || key.userStackId === -ENOMEM) enomem = true;
    const frames = (id: number, syms: Map<bigint, Sym | null> | undefined): Frame[] | null =>
      id >= 0 && read.stacks.has(id)
        ? read.stacks.get(id)!.map((addr) => ({ addr, sym: syms?.get(addr) ?? null }))
        : id === -EFAULT
        ? []
        : null;
    return {
      key,
      count,
      kernel: frames(key.kernStackId, ksyms),
      user: frames(key.userStackId, usyms.get(key.pid)),
      kernelMissing,
      userMissing,
    };
  });
  // BCC's order (increasing count); ties broken so that output is deterministic.
  stacks.sort((a, b) =>
    a.count - b.count || a.key.pid - b.key.pid || a.key.comm.localeCompare(b.key.comm) ||
    a.key.kernStackId - b.key.kernStackId || a.key.userStackId - b.key.userStackId
  );
  return {
    stacks,
    summary: {
      samples,
      missing,
      enomem,
      frames: kaddrs.size + [...uaddrs.values()].reduce((n, s) => n + s.size, 0),
      symbolRoundTrips: trips,
      stackRead: read.how,
    },
  };
}

/** Seconds of the positional duration (0 when absent). */
function positionalSeconds(positionals: string[]): number {
  if (positionals.length === 0) return 0;
  if (positionals.length > 1) {
    throw new UsageError(
      `one positional argument (the duration) at most, got ${positionals.length}`,
    );
  }
  const n = Number(positionals[0]);
  if (!/^\d+(\.\d+)?$/.test(positionals[0]) || !(n > 0)) {
    throw new UsageError(
      `the duration needs a number of seconds, not ${JSON.stringify(positionals[0])}`,
    );
  }
  return n;
}

function settings(v: Values) {
  const freq = intFlag(v, "frequency");
  const period = intFlag(v, "count");
  if (freq !== undefined && period !== undefined) {
    throw new UsageError("-F (frequency) and -c (sample period) exclude each other; give one");
  }
  if (freq === 0 || period === 0) throw new UsageError("-F and -c need a positive number");
  if (v["user-stacks-only"] && v["kernel-stacks-only"]) {
    throw new UsageError("-U (user stacks only) and -K (kernel stacks only) exclude each other");
  }
  return { freq: period === undefined ? freq ?? DEFAULT_FREQUENCY : undefined, period };
}

async function run(ctx: ToolContext): Promise<void> {
  const v = ctx.values;
  const { client, bundle } = ctx;
  const prog = bundle.progs.get("do_perf_event");
  const countsMap = bundle.maps.get("counts");
  const stacksMap = bundle.maps.get("stacks");
  if (!prog || !countsMap || !stacksMap) {
    throw new Error(
      "the bundle lacks do_perf_event, counts or stacks: rebuild it from tools/profile",
    );
  }
  const pid = intFlag(v, "pid");
  if (pid !== undefined && (await client.comm(pid)) === null) {
    throw new UsageError(`no process ${pid} on the target`);
  }
  const { freq, period } = settings(v);
  const cpu = intFlag(v, "cpu");
  const online = (await client.cpus()).online;
  if (cpu !== undefined && !online.includes(cpu)) {
    throw new UsageError(`CPU ${cpu} is not online on the target (online: ${online.join(",")})`);
  }
  await client.attachPerfEvent(prog.fd, {
    type: PERF_TYPE_SOFTWARE,
    config: PERF_COUNT_SW_CPU_CLOCK,
    sampleFreq: freq,
    samplePeriod: period,
    cpus: cpu === undefined ? online : [cpu],
  });
  const seconds = ctx.durationMs / 1000 || positionalSeconds(ctx.positionals);
  const userOnly = v["user-stacks-only"] === true;
  const kernelOnly = v["kernel-stacks-only"] === true;
  const tid = intFlag(v, "tid");
  ctx.status(
    `sampling at ${freq ? `${freq} Hertz` : `every ${period} ns of CPU time`} of ` +
      `${pid !== undefined ? `PID ${pid}` : tid !== undefined ? `TID ${tid}` : "all threads"} by ` +
      `${userOnly ? "user" : kernelOnly ? "kernel" : "user + kernel"} stack` +
      `${cpu !== undefined ? ` on CPU ${cpu}` : ""}` +
      (seconds ? ` for ${seconds} secs` : "; Ctrl-C to end"),
  );
  if (seconds) await ctx.wait(seconds * 1000);
  else while (!ctx.stopped) await ctx.wait(1000);

  const { stacks, summary } = await collectProfile(client, countsMap.fd, stacksMap.fd);
  const o: RenderOptions = {
    userOnly,
    kernelOnly,
    annotations: v.annotations === true,
    delimited: v.delimited === true,
  };
  if (ctx.json) { for (const l of renderJson(stacks)) ctx.print(l); }
  else if (v.folded) {
    if (stacks.length) ctx.print(renderFolded(stacks, o));
  } else if (stacks.length) ctx.print(renderText(stacks, o));
  ctx.status(
    `${summary.samples} samples, ${stacks.length} distinct stacks; ${summary.frames} frames ` +
      `symbolised in ${summary.symbolRoundTrips} round trip${
        summary.symbolRoundTrips === 1 ? "" : "s"
      }`,
  );
  if (summary.missing) {
    console.error(
      `WARNING: ${summary.missing} stack traces could not be displayed.` +
        (summary.enomem ? " Consider increasing --stack-storage-size." : ""),
    );
  }
  if (stacks.length >= countsMap.maxEntries) {
    console.error(
      `WARNING: the counts map is full (${countsMap.maxEntries} entries): later stacks were ` +
        "not counted; profile for a shorter time or filter with -p",
    );
  }
}

/** The profile tool. */
export const profile: ToolDef = {
  name: "profile",
  summary:
    "profile — sample stack traces at a timed interval on a target (BCC's profile, remotely)",
  usage: "deno task tool profile [options] [duration]   (or: deno run -A tools/profile/profile.ts)",
  optionHelp: `  -p, --pid PID        only this process
  -L, --tid TID        only this thread
  -U, --user-stacks-only     user stacks only (no kernel stacks)
  -K, --kernel-stacks-only   kernel stacks only (no user stacks)
  -F, --frequency HZ   sample frequency per CPU (default ${DEFAULT_FREQUENCY})
  -c, --count NS       sample period instead: one sample every NS ns of CPU time
  -C, --cpu CPU        only this CPU
  -I, --include-idle   include the CPU idle stacks (pid 0)
  -f, --folded         folded output, one line per stack (for flamegraph.pl)
  -a, --annotations    add _[k] to kernel frames
      --delimited      a delimiter between kernel and user stacks (BCC's -d)
      --stack-storage-size N   stack traces the target keeps (default ${DEFAULT_STACK_STORAGE})
  duration             seconds to sample, as -d (default: until Ctrl-C)`,
  epilog:
    `Output: per stack, the kernel then the user frames (innermost first), "- comm (pid)" and the
number of samples, the hottest stack last; -f prints "comm;outer;...;inner count" lines;
--json one object per stack, the hottest first. Stacks the target lost (hash collisions, a full
stack map) show as [Missed Kernel Stack] / [Missed User Stack] and are counted in a warning.`,
  options: {
    pid: { type: "string", short: "p" },
    tid: { type: "string", short: "L" },
    "user-stacks-only": { type: "boolean", short: "U" },
    "kernel-stacks-only": { type: "boolean", short: "K" },
    frequency: { type: "string", short: "F" },
    count: { type: "string", short: "c" },
    cpu: { type: "string", short: "C" },
    "include-idle": { type: "boolean", short: "I" },
    folded: { type: "boolean", short: "f" },
    annotations: { type: "boolean", short: "a" },
    delimited: { type: "boolean" },
    "stack-storage-size": { type: "string" },
  },
  positionals: true,
  configure(v, positionals) {
    settings(v);
    positionalSeconds(positionals);
    if (positionals.length && v.duration !== undefined) {
      throw new UsageError("give the duration once: -d SECS or a positional argument");
    }
    const rodata: Record<string, number | boolean> = {};
    const pid = intFlag(v, "pid");
    const tid = intFlag(v, "tid");
    if (pid === 0 || tid === 0) throw new UsageError("-p/-L need a positive id (idle is -I)");
    if (pid !== undefined) rodata.targ_tgid = pid;
    if (tid !== undefined) rodata.targ_tid = tid;
    if (v["user-stacks-only"]) rodata.user_stacks_only = true;
    if (v["kernel-stacks-only"]) rodata.kernel_stacks_only = true;
    if (v["include-idle"]) rodata.include_idle = true;
    const size = intFlag(v, "stack-storage-size");
    if (size === 0) throw new UsageError("--stack-storage-size needs a positive number");
    return { rodata, maxEntries: size !== undefined ? { stacks: size } : undefined };
  },
  run,
};

if (import.meta.main) await runToolMain(profile);
