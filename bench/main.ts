/**
 * `deno task bench`: the performance benchmarks of the runtime. Every figure is
 * printed as a ratio to a baseline measured in the same run:
 *
 * - `lookup`: BPF_LOOKUP_ELEM round trips over a pipe, runtime vs a minimal C
 *   daemon, both driven by the same C client (p50/p90/p99/mean, idle RSS).
 * - `dump`: a 100,000-entry hash map to the host three ways (BPF_MAP_DUMP,
 *   dump_all, key-by-key) vs raw in-process BPF_MAP_LOOKUP_BATCH.
 * - `startup`: exec → first response and idle RSS, runtime vs the C daemon.
 *
 * These are benchmarks, not tests: nothing here fails on a slow figure (the exit
 * status is 0 unless a benchmark could not run). Needs root, gcc and taskset.
 *
 * @example
 * ```sh
 * deno task bench                       # everything, table on stdout
 * deno task bench --only lookup --iterations 50000
 * deno task bench --json > bench.json
 * ```
 * @module
 */

import { parseArgs } from "node:util";
import { buildNative, type Native, type Pin, setRuntimeEntry } from "./native.ts";
import { benchLookup } from "./lookup_latency.ts";
import { benchDump } from "./map_dump.ts";
import { benchStartup } from "./startup.ts";
import { fmtNum, fmtRatio, type Row, table } from "./stats.ts";

/** Names of the benchmarks, in the order they run. */
export const BENCHES = ["lookup", "dump", "startup"] as const;
/** One benchmark name. */
export type BenchName = (typeof BENCHES)[number];

const HELP = `bpfpack benchmarks — runtime figures as ratios to baselines of the same run

Usage: deno task bench [options]
       deno run -A bench/main.ts [options]

Benchmarks (all by default, in this order):
  lookup   BPF_LOOKUP_ELEM round-trip latency over a pipe: runtime vs the C
           daemon bench/c/bpfd_lookup_baseline.c, both driven by the C client
           bench/c/rtt_client.c (goal: p50 ≤ 1.5×); also idle VmRSS after the
           run, and the round trip through the Deno RawClient
  dump     a hash map (u32 → u64) to the host, decoded into a JS Map:
           (a) BPF_MAP_DUMP, (b) BPF_GET_FIRST_KEY … 1, (c) per-key LOOKUP +
           GET_NEXT_KEY (walks --walk keys, extrapolated), vs raw in-process
           BPF_MAP_LOOKUP_BATCH (goal: (a) ≤ 3×)
  startup  exec → first response (GET_CPUS sent at once) and idle VmRSS, vs the
           C daemon

Options:
  --only NAME        run only this benchmark (repeat or comma-separate for several)
  -n, --iterations N lookup: timed round trips per daemon (default 20000)
  --warmup N         lookup: untimed round trips per round (default 2000)
  --rounds N         lookup: alternating C/runtime rounds (default 2)
  --deno-client N    lookup: round trips through the Deno RawClient (default 3000; 0 = skip)
  --entries N        dump: map entries (default 100000)
  --walk N           dump: keys walked by (c) before extrapolating (default 10000)
  --reps N           dump: timed repetitions of the baseline, (a) and (b) (default 7)
  --runs N           startup: start-ups per daemon (default 10)
  --pin MODE         lookup (C client): CPU placement of client and daemon: same
                     (both on CPU 0), split (client CPU 0, daemon CPU 1), none
                     (the scheduler decides) (default same: on a VM, a wake-up
                     across vCPUs costs 50-300 µs and swamps both daemons)
  --runtime FILE     the runtime's main.ts to benchmark (default runtime/main.ts of
                     this checkout; e.g. a patched copy)
  --json             print one JSON document instead of the table
  -q, --quiet        no progress messages on stderr
  -h, --help         this text

Needs root (bpf syscalls), gcc (the C side is compiled with -O2 into a
temporary directory at every run) and taskset for --pin.`;

function int(v: string | undefined, name: string, def: number, min = 0): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    console.error(`bench: --${name} needs an integer ≥ ${min}, got ${v}`);
    Deno.exit(2);
  }
  return n;
}

/** Parsed command line. */
export interface BenchArgs {
  only: BenchName[];
  iterations: number;
  warmup: number;
  rounds: number;
  denoClient: number;
  entries: number;
  walk: number;
  reps: number;
  runs: number;
  pin: Pin;
  runtime: string | null;
  json: boolean;
  quiet: boolean;
}

/** Parses the command line (exits on `--help` and on errors). */
export function parseBenchArgs(argv: string[]): BenchArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        only: { type: "string", multiple: true },
        iterations: { type: "string", short: "n" },
        warmup: { type: "string" },
        rounds: { type: "string" },
        "deno-client": { type: "string" },
        entries: { type: "string" },
        walk: { type: "string" },
        reps: { type: "string" },
        runs: { type: "string" },
        pin: { type: "string" },
        runtime: { type: "string" },
        json: { type: "boolean" },
        quiet: { type: "boolean", short: "q" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    console.error(`bench: ${(e as Error).message} (see --help)`);
    Deno.exit(2);
  }
  const v = parsed.values;
  if (v.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const only = (v.only ?? []).flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
  for (const o of only) {
    if (!(BENCHES as readonly string[]).includes(o)) {
      console.error(`bench: unknown benchmark ${o} (one of ${BENCHES.join(", ")})`);
      Deno.exit(2);
    }
  }
  const pin = v.pin ?? "same";
  if (!["none", "same", "split"].includes(pin)) {
    console.error(`bench: --pin is none, same or split, got ${pin}`);
    Deno.exit(2);
  }
  return {
    only: only.length ? BENCHES.filter((b) => only.includes(b)) : [...BENCHES],
    iterations: int(v.iterations, "iterations", 20_000, 1),
    warmup: int(v.warmup, "warmup", 2_000),
    rounds: int(v.rounds, "rounds", 2, 1),
    denoClient: int(v["deno-client"], "deno-client", 3_000),
    entries: int(v.entries, "entries", 100_000, 1),
    walk: int(v.walk, "walk", 10_000, 1),
    reps: int(v.reps, "reps", 7, 1),
    runs: int(v.runs, "runs", 10, 1),
    pin: pin as Pin,
    runtime: v.runtime ?? null,
    json: v.json ?? false,
    quiet: v.quiet ?? false,
  };
}

function unitLabel(u: Row["unit"]): string {
  return u === "us" ? "µs" : u;
}

/** The summary table of all rows. */
export function renderTable(rows: Row[]): string {
  const body = rows.map((r) => [
    r.bench,
    r.metric,
    `${fmtNum(r.value)} ${unitLabel(r.unit)}`,
    r.baseline === null ? "-" : `${fmtNum(r.baseline)} ${unitLabel(r.unit)}`,
    fmtRatio(r.ratio),
    r.goal === undefined ? "" : `≤ ${r.goal}× ${r.pass ? "met" : "MISSED"}`,
  ]);
  const notes = rows
    .filter((r) => r.note || r.baselineName)
    .map((r) =>
      `  ${r.bench} / ${r.metric}: baseline = ${r.baselineName || "-"}` +
      (r.note ? `; ${r.note}` : "")
    );
  return table(["bench", "metric", "runtime", "baseline", "ratio", "goal"], body) +
    "\n\nBaselines and notes:\n" + notes.join("\n");
}

async function main(): Promise<number> {
  const a = parseBenchArgs(Deno.args);
  const log = a.quiet ? () => {} : (m: string) => console.error(`[bench] ${m}`);
  if (a.runtime) setRuntimeEntry(await Deno.realPath(a.runtime));
  const t0 = performance.now();
  const rows: Row[] = [];
  const raw: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  const needNative = a.only.includes("lookup") || a.only.includes("startup");
  log(needNative ? "compiling bench/c with gcc -O2" : "no C side needed");
  let nat: Native | null = null;
  let buildError = "";
  if (needNative) {
    try {
      nat = await buildNative();
    } catch (e) {
      buildError = `cannot build bench/c: ${(e as Error).message}`;
    }
  }
  try {
    for (const b of a.only) {
      const t = performance.now();
      try {
        if (b !== "dump" && !nat) throw new Error(buildError);
        if (b === "lookup") {
          const r = await benchLookup(nat!, {
            iterations: a.iterations,
            warmup: a.warmup,
            rounds: a.rounds,
            pin: a.pin,
            denoClientIterations: a.denoClient,
            log,
          });
          rows.push(...r.rows);
          raw.lookup = r.raw;
        } else if (b === "dump") {
          const r = await benchDump({ entries: a.entries, walk: a.walk, reps: a.reps, log });
          rows.push(...r.rows);
          raw.dump = r.raw;
        } else {
          const r = await benchStartup(nat!, { runs: a.runs, log });
          rows.push(...r.rows);
          raw.startup = r.raw;
        }
      } catch (e) {
        errors[b] = (e as Error)?.stack ?? String(e);
        console.error(`[bench] ${b} failed: ${errors[b]}`);
      }
      log(`${b} took ${((performance.now() - t) / 1000).toFixed(1)} s`);
    }
  } finally {
    await nat?.cleanup();
  }
  const seconds = (performance.now() - t0) / 1000;
  if (a.json) {
    console.log(JSON.stringify(
      {
        host: {
          deno: Deno.version.deno,
          v8: Deno.version.v8,
          kernel: Deno.osRelease(),
          cpus: navigator.hardwareConcurrency,
          loadavg: Deno.loadavg(),
          gcc: nat?.gcc ?? null,
        },
        config: a,
        seconds,
        rows,
        raw,
        errors,
      },
      null,
      2,
    ));
  } else {
    console.log(renderTable(rows));
    console.log(
      `\n${rows.length} figures in ${seconds.toFixed(1)} s on Linux ${Deno.osRelease()}, ` +
        `${navigator.hardwareConcurrency} CPUs, Deno ${Deno.version.deno}, ` +
        `load average ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
    );
    for (const [b, e] of Object.entries(errors)) console.log(`${b}: FAILED: ${e.split("\n")[0]}`);
  }
  return Object.keys(errors).length ? 1 : 0;
}

if (import.meta.main) {
  Deno.exit(await main());
}
