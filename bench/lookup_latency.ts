/**
 * Benchmark 1: round-trip latency of `BPF_LOOKUP_ELEM` over a pipe, the Deno
 * runtime against the C baseline daemon (`bench/c/bpfd_lookup_baseline.c`),
 * both driven by the same C client (`bench/c/rtt_client.c`). Rounds alternate
 * between the two daemons so that background load hits both alike; the
 * latencies of all rounds are pooled before taking percentiles.
 *
 * @example
 * ```ts
 * import { buildNative } from "./native.ts";
 * import { benchLookup } from "./lookup_latency.ts";
 * const nat = await buildNative();
 * const { rows } = await benchLookup(nat, { iterations: 2000, warmup: 200 });
 * console.log(rows);
 * await nat.cleanup();
 * ```
 * @module
 */

import { type Native, type Pin, pinned, runClient, runtimeCommand } from "./native.ts";
import { mean, median, nowMs, percentile, type Row, row } from "./stats.ts";
import { RawClient } from "../tools/client/raw.ts";

/** Settings of the latency benchmark. */
export interface LookupOptions {
  /** Timed round trips per daemon, over all rounds (default 20,000). */
  iterations?: number;
  /** Untimed round trips at the start of each round (default 2,000). */
  warmup?: number;
  /** Rounds per daemon, alternating C and runtime (default 2). */
  rounds?: number;
  /** Distinct keys in the map, looked up in turn (default 64). */
  keys?: number;
  /** CPU placement of the C client runs (default `same`: both on CPU 0). */
  pin?: Pin;
  /** Pause before reading VmRSS, so the daemon is idle (ms, default 200). */
  idleMs?: number;
  /**
   * Timed round trips per daemon through the project's Deno client
   * ({@link RawClient}) instead of the C client, to show the client's share in
   * per-key walks (default 3,000; 0 skips).
   */
  denoClientIterations?: number;
  /** Progress messages. */
  log?: (msg: string) => void;
}

/** What `rtt_client rtt` prints (times in ns, sizes in kB). */
export interface RttJson {
  mode: "rtt";
  iterations: number;
  warmup: number;
  keys: number;
  errors: number;
  exit_status: number;
  min_ns: number;
  p50_ns: number;
  p90_ns: number;
  p99_ns: number;
  p999_ns: number;
  max_ns: number;
  mean_ns: number;
  stdev_ns: number;
  total_ns: number;
  warmup_ns: number;
  startup_ns: number;
  daemon_cpu_ns: number;
  daemon_user_ns: number;
  daemon_sys_ns: number;
  rss_start_kb: number;
  rss_end_kb: number;
  hwm_kb: number;
  latencies_ns?: number[];
}

/** Summary of one daemon over all rounds (µs, MiB). */
export interface LatencySummary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  mean: number;
  min: number;
  max: number;
  /** p50 of each round. */
  roundP50: number[];
  /** CPU time of the daemon (all threads) per timed request, µs; user and system parts. */
  cpuPerReq: number;
  userPerReq: number;
  sysPerReq: number;
  /** Median over rounds of VmRSS right after start-up (GET_CPUS answered, then idle). */
  rssStartMiB: number;
  /** Median over rounds of VmRSS after the latency run (idle). */
  rssEndMiB: number;
  /** Largest VmHWM seen. */
  hwmMiB: number;
}

/** Runs `rtt_client rtt` against one daemon command and returns its JSON. */
export async function rttRun(
  nat: Native,
  daemon: string[],
  o: { iterations: number; warmup: number; keys: number; pin: Pin; idleMs: number },
): Promise<RttJson> {
  const cmd = pinned(
    [
      nat.client,
      "rtt",
      "--iterations",
      String(o.iterations),
      "--warmup",
      String(o.warmup),
      "--keys",
      String(o.keys),
      "--idle-ms",
      String(o.idleMs),
      "--raw",
      "--",
      ...pinned(daemon, o.pin, "daemon"),
    ],
    o.pin,
    "client",
  );
  const out = await runClient(cmd);
  const text = out.text;
  if (!out.success) {
    throw new Error(`rtt_client failed (exit ${out.code}) for ${daemon.join(" ")}: ${text}`);
  }
  const j = JSON.parse(text) as RttJson;
  if (j.errors) throw new Error(`${j.errors} wrong answers from ${daemon.join(" ")}`);
  return j;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

function summarize(runs: RttJson[]): LatencySummary {
  const all: number[] = [];
  for (const r of runs) for (const x of r.latencies_ns ?? []) all.push(x / 1000);
  const kb = (xs: number[]) => median(xs) / 1024;
  return {
    n: all.length,
    p50: percentile(all, 50),
    p90: percentile(all, 90),
    p99: percentile(all, 99),
    p999: percentile(all, 99.9),
    mean: mean(all),
    min: Math.min(...runs.map((r) => r.min_ns / 1000)),
    max: Math.max(...runs.map((r) => r.max_ns / 1000)),
    roundP50: runs.map((r) => r.p50_ns / 1000),
    cpuPerReq: sum(runs.map((r) => r.daemon_cpu_ns)) / sum(runs.map((r) => r.iterations)) / 1000,
    userPerReq: sum(runs.map((r) => r.daemon_user_ns)) / sum(runs.map((r) => r.iterations)) / 1000,
    sysPerReq: sum(runs.map((r) => r.daemon_sys_ns)) / sum(runs.map((r) => r.iterations)) / 1000,
    rssStartMiB: kb(runs.map((r) => r.rss_start_kb)),
    rssEndMiB: kb(runs.map((r) => r.rss_end_kb)),
    hwmMiB: Math.max(...runs.map((r) => r.hwm_kb)) / 1024,
  };
}

/** Round trips of BPF_LOOKUP_ELEM through {@link RawClient}; returns the latencies in µs. */
export async function rawClientRtt(
  daemon: string[],
  iterations: number,
  warmup: number,
): Promise<number[]> {
  const c = RawClient.spawn(daemon, { stderr: "inherit", timeoutMs: 30_000 });
  try {
    const created = await c.send("BPF_CREATE_MAP 1 rtt_deno 4 8 64 0");
    const fd = Number(/ret=(\d+)/.exec(created[0] ?? "")?.[1] ?? -1);
    if (!(fd >= 0)) throw new Error(`BPF_CREATE_MAP failed: ${created.join(" | ")}`);
    const upd = await c.send(`BPF_UPDATE_ELEM ${fd} AQAAAA== 4 AgAAAAAAAAA= 8 0`);
    if (upd[0] !== "bpf_update_elem: ret=0") throw new Error(`update: ${upd.join(" | ")}`);
    const line = `BPF_LOOKUP_ELEM ${fd} AQAAAA== 4 8`;
    const out: number[] = [];
    for (let i = 0; i < warmup + iterations; i++) {
      const t = nowMs();
      const body = await c.send(line);
      const dt = nowMs() - t;
      if (body[0] !== "AgAAAAAAAAA=") throw new Error(`lookup answered ${body.join(" | ")}`);
      if (i >= warmup) out.push(dt * 1000);
    }
    return out;
  } finally {
    await c.close();
  }
}

/** Runs the latency benchmark; returns the table rows and the per-daemon summaries. */
export async function benchLookup(
  nat: Native,
  opts: LookupOptions = {},
): Promise<{
  rows: Row[];
  raw: {
    runtime: LatencySummary;
    c: LatencySummary;
    rawClient: { runtimeP50: number; cP50: number; n: number };
  };
}> {
  const rounds = Math.max(1, opts.rounds ?? 2);
  const iterations = opts.iterations ?? 20_000;
  const per = Math.max(1, Math.ceil(iterations / rounds));
  const o = {
    iterations: per,
    warmup: opts.warmup ?? 2_000,
    keys: opts.keys ?? 64,
    pin: opts.pin ?? "same",
    idleMs: opts.idleMs ?? 200,
  };
  const log = opts.log ?? (() => {});
  const cRuns: RttJson[] = [];
  const rtRuns: RttJson[] = [];
  for (let i = 0; i < rounds; i++) {
    log(`lookup: round ${i + 1}/${rounds}: C baseline, ${per} round trips`);
    cRuns.push(await rttRun(nat, [nat.baseline], o));
    log(`lookup: round ${i + 1}/${rounds}: runtime, ${per} round trips`);
    rtRuns.push(await rttRun(nat, runtimeCommand(), o));
  }
  const rt = summarize(rtRuns);
  const c = summarize(cRuns);
  const dn = opts.denoClientIterations ?? 3_000;
  let denoRt: number[] = [];
  let denoC: number[] = [];
  if (dn > 0) {
    const w = Math.min(1_000, dn);
    log(`lookup: ${dn} round trips per daemon through the Deno RawClient`);
    denoC = await rawClientRtt([nat.baseline], dn, w);
    denoRt = await rawClientRtt(runtimeCommand(), dn, w);
  }
  const base = { bench: "lookup", baselineName: "C daemon, same C client" };
  const note =
    `${rt.n} requests in ${rounds} round(s) after ${o.warmup} warm-up each, pin=${o.pin}`;
  const rows = [
    row({
      ...base,
      metric: "round trip p50",
      unit: "us",
      value: rt.p50,
      baseline: c.p50,
      goal: 1.5,
      note,
    }),
    row({ ...base, metric: "round trip p90", unit: "us", value: rt.p90, baseline: c.p90 }),
    row({ ...base, metric: "round trip p99", unit: "us", value: rt.p99, baseline: c.p99 }),
    row({ ...base, metric: "round trip mean", unit: "us", value: rt.mean, baseline: c.mean }),
    row({
      ...base,
      metric: "daemon CPU time per request",
      unit: "us",
      value: rt.cpuPerReq,
      baseline: c.cpuPerReq,
      note: `all threads, schedstat; user/sys ${rt.userPerReq.toFixed(1)}/` +
        `${rt.sysPerReq.toFixed(1)} µs vs ${c.userPerReq.toFixed(1)}/${
          c.sysPerReq.toFixed(1)
        } µs ` +
        "(clock ticks, coarse)",
    }),
    row({
      ...base,
      metric: "VmRSS idle after latency run",
      unit: "MiB",
      value: rt.rssEndMiB,
      baseline: c.rssEndMiB,
      note: `median over rounds, read ${o.idleMs} ms after the last response`,
    }),
  ];
  if (dn > 0) {
    rows.push(row({
      bench: "lookup",
      metric: "round trip p50, Deno RawClient",
      unit: "us",
      value: median(denoRt),
      baseline: median(denoC),
      baselineName: "C daemon, same RawClient",
      note: `${dn} requests each, not pinned; tools/client/raw.ts, the client of dump (c)`,
    }));
  }
  return {
    rows,
    raw: {
      runtime: rt,
      c,
      rawClient: { runtimeP50: median(denoRt), cP50: median(denoC), n: denoRt.length },
    },
  };
}
