/**
 * funccount: count kernel function calls matching a pattern, like BCC's funccount. The
 * pattern is expanded on the target (`KSYM_MATCH`: its tracefs `available_filter_functions`,
 * else its kallsyms), the one kprobe program of `funccount.bpf.c` is attached to every match
 * (one pipelined round trip of `BPF_ATTACH_PROG <fd> target=<function>`), and the `counts` map
 * (function address → calls) is dumped at each interval; the addresses are named with the
 * target's kallsyms (`GET_KSYM_NAME`, batched).
 *
 * Needs kprobes on the target (`CONFIG_KPROBES`) and Linux 5.15+ (`bpf_get_func_ip` in kprobe
 * programs).
 *
 * In the qemu VM lab (tests/vm/lab.ts), in one process: boot, then run the tool on the VM's
 * `qemu:` hook with a bundle built for that guest's kernel (headers and core objects):
 *
 * ```ts
 * // deno task build --kernel debian:6.1:aarch64 --tool funccount --out out/vm
 * import { bootVm } from "../../tests/vm/lab.ts";
 * import { runFunccount } from "./funccount.ts";
 * const vm = await bootVm({ arch: "aarch64", series: "6.1" });
 * const code = await runFunccount([
 *   "--remote", vm.remote, "--bundle", "out/vm/funccount.oci.tar", "-d", "2", "vfs_read*",
 * ]); // 0; stdout: FUNC/COUNT rows incl. vfs_read (use --json to parse them)
 * await vm.shutdown();
 * ```
 *
 * @example
 * ```sh
 * deno run -A tools/funccount/funccount.ts -d 5 'vfs_*'
 * deno run -A tools/funccount/funccount.ts --remote ssh:root@board \
 *   --kernel debian:6.12:aarch64 -i 1 -d 3 'vfs_read*'
 * ```
 * @module
 */

import { BpfdError, type Sym, type TargetFacts } from "../client/client.ts";
import {
  clockHMS,
  describeTarget,
  intFlag,
  runTool,
  runToolMain,
  type ToolContext,
  type ToolDef,
  UsageError,
} from "../client/tool.ts";

/** At most this many functions are probed (BCC's funccount has the same limit). */
export const MAX_PROBES = 1000;

/** The error funccount fails with on a target without kprobes. */
export const NO_KPROBES_MESSAGE =
  "this kernel has no kprobes (CONFIG_KPROBES is off: no kprobe PMU in " +
  "/sys/bus/event_source/devices and no kprobe_events in tracefs), so funccount cannot probe " +
  "kernel functions here; run it on a kernel built with CONFIG_KPROBES=y (e.g. the qemu " +
  "kernels of tests/vm/), or count tracepoint events instead (e.g. syscount)";

/**
 * The kernel-function glob of a BCC funccount pattern: `vfs_*`, `p:vfs_*` or `k:vfs_*`.
 * Throws {@link UsageError} for what this funccount does not trace (user functions `p:lib:fn`,
 * tracepoints `t:…`, USDT `u:…`) and for characters no kernel symbol has.
 *
 * @example
 * ```ts
 * import { parsePattern } from "./funccount.ts";
 * console.log(parsePattern("p:tcp_send*")); // tcp_send*
 * ```
 */
export function parsePattern(arg: string): string {
  let p = arg;
  const m = /^([a-z]):(.*)$/.exec(p);
  if (m) {
    if ((m[1] === "p" || m[1] === "k") && !m[2].includes(":")) p = m[2];
    else {
      throw new UsageError(
        `${JSON.stringify(arg)}: only kernel functions are counted (PATTERN or p:PATTERN); ` +
          "user functions, tracepoints and USDT probes are not supported by this funccount",
      );
    }
  }
  if (p === "" || !/^[A-Za-z0-9_.*?[\]!$-]+$/.test(p)) {
    throw new UsageError(
      `${JSON.stringify(arg)} is not a kernel function pattern: use letters, digits, _ . and ` +
        "the wildcards * ? [..] (e.g. 'vfs_*')",
    );
  }
  if (!/[A-Za-z0-9_]/.test(p)) {
    throw new UsageError(
      `${JSON.stringify(arg)} would match every kernel function: name part of it (e.g. 'vfs_*')`,
    );
  }
  return p;
}

/** Calls of one function in one interval. */
export interface FuncCount {
  func: string;
  count: number;
}

/**
 * Merges counts by function name (addresses without a symbol keep their hex address) and
 * sorts them as BCC does: by count ascending, then by name.
 *
 * @example
 * ```ts
 * import { countsByName } from "./funccount.ts";
 * const syms = new Map([[0x10n, { name: "vfs_read", offset: 0, module: "kernel" }]]);
 * console.log(countsByName([{ addr: 0x10n, count: 3n }], syms)); // [{ func: "vfs_read", count: 3 }]
 * ```
 */
export function countsByName(
  entries: { addr: bigint; count: bigint }[],
  syms: ReadonlyMap<bigint, Sym | null>,
): FuncCount[] {
  const by = new Map<string, number>();
  for (const e of entries) {
    const s = syms.get(e.addr);
    const name = s ? s.name : `0x${e.addr.toString(16)}`;
    by.set(name, (by.get(name) ?? 0) + Number(e.count));
  }
  return [...by].map(([func, count]) => ({ func, count })).filter((c) => c.count > 0)
    .sort((a, b) => a.count - b.count || (a.func < b.func ? -1 : a.func > b.func ? 1 : 0));
}

/**
 * The table BCC's funccount prints: `FUNC` / `COUNT` header (`%-36s %8s`) and one row per
 * function.
 *
 * @example
 * ```ts
 * import { formatCounts } from "./funccount.ts";
 * console.log(formatCounts([{ func: "vfs_read", count: 12 }]).join("\n"));
 * ```
 */
export function formatCounts(rows: FuncCount[]): string[] {
  return [
    `${"FUNC".padEnd(36)} ${"COUNT".padStart(8)}`,
    ...rows.map((r) => `${r.func.padEnd(36)} ${String(r.count).padStart(8)}`),
  ];
}

/** Whether the target's HELLO says it has no kprobes at all (false when unknown). */
export function lacksKprobes(facts: TargetFacts | null): boolean {
  if (!facts || facts.protocol < 2) return false;
  return facts.features.kprobe_pmu === false && facts.features.kprobe_events === false;
}

/** Attaches `progFd` to each of `names` in one pipelined round trip; returns the failures. */
async function attachEach(
  ctx: ToolContext,
  progFd: number,
  names: string[],
): Promise<{ name: string; error: BpfdError }[]> {
  const lines = names.map((n) => `BPF_ATTACH_PROG ${progFd} target=${n}`);
  const bodies = await ctx.client.raw.pipeline(lines);
  const failed: { name: string; error: BpfdError }[] = [];
  bodies.forEach((b, i) => {
    if (!/^bpf_attach_prog: ret=\d+$/.test(b[0] ?? "")) {
      failed.push({ name: names[i], error: new BpfdError(lines[i], b) });
    }
  });
  return failed;
}

/** Dumps `counts`, optionally clears it, and prints one interval. */
async function report(ctx: ToolContext, clear: boolean, n: number): Promise<void> {
  const m = ctx.bundle.maps.get("counts")!;
  const entries = await ctx.client.dump(m.fd);
  if (clear && entries.length) await ctx.client.command(`BPF_CLEAR_MAP ${m.fd} ${m.keySize}`);
  const raw = entries.map((e) => {
    const k = new DataView(e.key.buffer, e.key.byteOffset, 8);
    const v = new DataView(e.value.buffer, e.value.byteOffset, 8);
    return { addr: k.getBigUint64(0, true), count: v.getBigUint64(0, true) };
  });
  const syms = await ctx.client.ksyms(raw.map((r) => r.addr));
  const rows = countsByName(raw, syms);
  const stamp = ctx.values.timestamp === true ? clockHMS() : null;
  if (ctx.json) {
    ctx.print(JSON.stringify({
      interval: n,
      ...(stamp ? { time: stamp } : {}),
      functions: rows,
    }));
    return;
  }
  ctx.print("");
  if (stamp) ctx.print(stamp);
  for (const l of formatCounts(rows)) ctx.print(l);
}

/** The funccount tool. */
export const funccount: ToolDef = {
  name: "funccount",
  summary: "funccount — count kernel function calls matching a pattern (BCC's funccount, " +
    "remotely; needs kprobes)",
  usage: "deno task tool funccount [options] PATTERN   " +
    "(or: deno run -A tools/funccount/funccount.ts)",
  optionHelp: `  -i, --interval SECS  print (and clear) the counts every SECS seconds
  -p, --pid PID        only calls made by this process
  -T, --timestamp      print a timestamp (HH:MM:SS) with each output`,
  epilog:
    `PATTERN: a kernel function name with wildcards * ? [..], optionally prefixed by p: ('vfs_*',
'p:tcp_send*'). It is expanded on the target (at most ${MAX_PROBES} functions; kprobe-blacklisted
ones are skipped). Columns: FUNC COUNT, ascending by count. --json prints one object per output:
{"interval":1,"functions":[{"func":"vfs_read","count":12},…]}.`,
  options: {
    interval: { type: "string", short: "i" },
    pid: { type: "string", short: "p" },
    timestamp: { type: "boolean", short: "T" },
  },
  positionals: true,
  configure(v, positionals) {
    if (positionals.length !== 1) {
      throw new UsageError(
        positionals.length ? "give exactly one PATTERN" : "give a PATTERN (e.g. 'vfs_*')",
      );
    }
    parsePattern(positionals[0]);
    const interval = intFlag(v, "interval");
    if (interval === 0) throw new UsageError("--interval needs at least 1 second");
    const pid = intFlag(v, "pid");
    const rodata: Record<string, number> = {};
    if (pid !== undefined) rodata.targ_tgid = pid;
    return { rodata };
  },
  async run(ctx) {
    if (lacksKprobes(ctx.client.facts)) throw new Error(NO_KPROBES_MESSAGE);
    const pattern = parsePattern(ctx.positionals[0]);
    const prog = ctx.bundle.progs.get("funccount_entry");
    if (!ctx.bundle.maps.get("counts") || !prog) {
      throw new Error("the bundle has no counts map or funccount_entry program: rebuild it");
    }
    const match = await ctx.client.ksymMatch(pattern, MAX_PROBES + 1);
    const excluded = match.excluded ? ` (${match.excluded} kprobe-blacklisted left out)` : "";
    if (match.matched === 0) {
      throw new Error(
        `no kernel function on the target matches ${JSON.stringify(pattern)}${excluded} ` +
          `(looked in ${match.source}); check the name, e.g. with a wider pattern`,
      );
    }
    if (match.matched > MAX_PROBES) {
      throw new UsageError(
        `${JSON.stringify(pattern)} matches ${match.matched} functions; funccount probes at ` +
          `most ${MAX_PROBES}: use a narrower pattern`,
      );
    }
    const failed = await attachEach(ctx, prog.fd, match.names);
    ctx.startClock(); // -d counts from the moment every probe is in place
    if (failed.length === match.names.length) {
      throw new Error(
        `could not probe any of the ${failed.length} matching functions: ` +
          `${failed[0].name}: ${failed[0].error.message}`,
      );
    }
    if (failed.length) {
      ctx.status(
        `${failed.length} of ${match.names.length} functions could not be probed (e.g. ` +
          `${failed[0].name}: ${failed[0].error.detail || failed[0].error.message}); ` +
          "counting the others",
      );
    }
    const traced = match.names.length - failed.length;
    ctx.status(
      `tracing ${traced} functions for ${JSON.stringify(pattern)}${excluded} on ${
        describeTarget(ctx)
      }` +
        `${ctx.durationMs ? ` for ${ctx.durationMs / 1000} s` : ""}; Ctrl-C to end`,
    );
    const interval = intFlag(ctx.values, "interval") ?? 0;
    for (let n = 1;; n++) {
      await ctx.wait(interval ? interval * 1000 : Number.POSITIVE_INFINITY);
      await report(ctx, interval > 0, n);
      if (ctx.stopped) break;
    }
  },
};

/**
 * Runs funccount with command-line `args` (as after `funccount.ts`) and returns its exit status
 * (0 done, 1 failure, 2 usage). Output goes to this process's stdout/stderr. For the VM lab:
 *
 * @example
 * ```ts
 * import { runFunccount } from "./funccount.ts";
 * const code = await runFunccount([
 *   "--remote", "qemu:debian-6.12-arm64", "--bundle", "out/bundles/funccount.oci.tar",
 *   "-d", "2", "vfs_read*",
 * ]);
 * ```
 */
export function runFunccount(args: string[]): Promise<number> {
  return runTool(funccount, args);
}

if (import.meta.main) await runToolMain(funccount);
