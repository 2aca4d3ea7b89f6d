/**
 * Benchmark 3: start-up, from exec to the end of the first response (the C
 * client spawns the daemon and writes `GET_CPUS` at once), and idle VmRSS
 * right after start-up; the Deno runtime against the C baseline daemon. Runs
 * alternate between the two daemons.
 *
 * @example
 * ```ts
 * import { buildNative } from "./native.ts";
 * import { benchStartup } from "./startup.ts";
 * const nat = await buildNative();
 * console.log((await benchStartup(nat, { runs: 3 })).rows);
 * await nat.cleanup();
 * ```
 * @module
 */

import { type Native, type Pin, pinned, runClient, runtimeCommand } from "./native.ts";
import { median, type Row, row } from "./stats.ts";

/** Settings of the start-up benchmark. */
export interface StartupOptions {
  /** Start-ups per daemon (default 10). */
  runs?: number;
  /** Pause after the first response before reading VmRSS (ms, default 100). */
  idleMs?: number;
  /** CPU placement (default `none`). */
  pin?: Pin;
  /** Progress messages. */
  log?: (msg: string) => void;
}

/** What `rtt_client startup` prints (times in ns, sizes in kB), one entry per run. */
export interface StartupJson {
  mode: "startup";
  runs: number;
  ok: boolean;
  first_response_ns: number[];
  banner_ns: number[];
  exit_ns: number[];
  rss_kb: number[];
}

/** Medians of one daemon (ms, MiB) plus the samples. */
export interface StartupSummary {
  firstResponseMs: number;
  bannerMs: number;
  exitMs: number;
  rssMiB: number;
  samplesMs: number[];
}

async function startupRun(nat: Native, daemon: string[], pin: Pin, idleMs: number) {
  const cmd = pinned(
    [
      nat.client,
      "startup",
      "--runs",
      "1",
      "--idle-ms",
      String(idleMs),
      "--line",
      "GET_CPUS",
      "--",
      ...pinned(daemon, pin, "daemon"),
    ],
    pin,
    "client",
  );
  const out = await runClient(cmd);
  const text = out.text;
  const j = JSON.parse(text) as StartupJson;
  if (!out.success || !j.ok) throw new Error(`start-up run of ${daemon.join(" ")} failed: ${text}`);
  return j;
}

function summarize(runs: StartupJson[]): StartupSummary {
  const ms = (k: "first_response_ns" | "banner_ns" | "exit_ns") => runs.map((r) => r[k][0] / 1e6);
  return {
    firstResponseMs: median(ms("first_response_ns")),
    bannerMs: median(ms("banner_ns")),
    exitMs: median(ms("exit_ns")),
    rssMiB: median(runs.map((r) => r.rss_kb[0])) / 1024,
    samplesMs: ms("first_response_ns"),
  };
}

/** Runs the start-up benchmark. */
export async function benchStartup(
  nat: Native,
  opts: StartupOptions = {},
): Promise<{ rows: Row[]; raw: { runtime: StartupSummary; c: StartupSummary } }> {
  const runs = Math.max(1, opts.runs ?? 10);
  const idleMs = opts.idleMs ?? 100;
  const pin = opts.pin ?? "none";
  const log = opts.log ?? (() => {});
  // One untimed start of each first: page cache and Deno's module cache.
  log("startup: warming the caches");
  await startupRun(nat, [nat.baseline], pin, 0);
  await startupRun(nat, runtimeCommand(), pin, 0);
  const c: StartupJson[] = [];
  const rt: StartupJson[] = [];
  for (let i = 0; i < runs; i++) {
    log(`startup: run ${i + 1}/${runs}`);
    c.push(await startupRun(nat, [nat.baseline], pin, idleMs));
    rt.push(await startupRun(nat, runtimeCommand(), pin, idleMs));
  }
  const R = summarize(rt);
  const C = summarize(c);
  const base = { bench: "startup", baselineName: "C daemon" };
  const rows = [
    row({
      ...base,
      metric: "exec → first response (median)",
      unit: "ms",
      value: R.firstResponseMs,
      baseline: C.firstResponseMs,
      note: `GET_CPUS sent at once; median of ${runs} runs after one untimed run each`,
    }),
    row({
      ...base,
      metric: "exec → banner (median)",
      unit: "ms",
      value: R.bannerMs,
      baseline: C.bannerMs,
    }),
    row({
      ...base,
      metric: "exit → reaped (median)",
      unit: "ms",
      value: R.exitMs,
      baseline: C.exitMs,
    }),
    row({
      ...base,
      metric: "VmRSS idle after start-up",
      unit: "MiB",
      value: R.rssMiB,
      baseline: C.rssMiB,
      note: `median; read ${idleMs} ms after the first response`,
    }),
  ];
  return { rows, raw: { runtime: R, c: C } };
}
