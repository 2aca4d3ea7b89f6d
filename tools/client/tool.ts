/**
 * What every BCC-style host tool shares: the common flags (`-d`, `--json`, `--remote`,
 * `--bundle`, `--kernel`, `--record`, `-h`), building or reusing the tool's bundle, connecting
 * over any transport, uploading and loading the bundle with the tool's `.rodata` settings,
 * Ctrl-C and duration handling, lost-event accounting, recording the session to a transcript,
 * and a clean teardown (the runtime detaches and closes everything it created when the session
 * ends, whatever way it ends).
 *
 * A tool supplies its own flags, what to set in `.rodata`, and a `run` function that attaches,
 * reads and prints.
 *
 * @example
 * ```ts
 * import { runToolMain } from "./tool.ts";
 * await runToolMain({
 *   name: "hello",
 *   summary: "hello — count nothing for a while",
 *   usage: "deno task tool hello [options]",
 *   options: {},
 *   run: async (ctx) => {
 *     await ctx.wait(ctx.durationMs || 1000);
 *     ctx.print("done");
 *   },
 * });
 * ```
 * @module
 */

import { parseArgs } from "../../artifacts/cli.ts";
import {
  BpfdClient,
  type LoadedBundle,
  type PollEvent,
  type Reader,
  type TargetFacts,
} from "./client.ts";
import { connectRemote, parseRemote } from "../transport/remote.ts";
import { TransportError } from "../transport/channel.ts";
import { buildBundles } from "./bundle_build.ts";
import { Recorder } from "../replay/transcript.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** Option declarations in `node:util` `parseArgs` form. */
export type OptionSpec = Record<
  string,
  { type: "string" | "boolean"; short?: string; multiple?: boolean; default?: string | boolean }
>;

/** Parsed flag values. */
export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** A usage error: the tool prints it with a hint to `--help` and exits 2. */
export class UsageError extends Error {
  /** A usage error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** What a tool's {@link ToolDef.configure} returns. */
export interface ToolConfig {
  /**
   * `.rodata` values set at load (filters and switches of the BPF side); a function when they
   * depend on the target (e.g. a syscall number of its arch), called after HELLO.
   */
  rodata?:
    | Record<string, number | bigint | boolean | Uint8Array>
    | ((facts: TargetFacts) => Record<string, number | bigint | boolean | Uint8Array>);
  /** Load only these programs of the object (default: all). */
  programs?: string[];
  /** `max_entries` overrides by map name (e.g. a stack map sized by a flag). */
  maxEntries?: Record<string, number>;
}

/** A host tool. */
export interface ToolDef {
  /** Name; also the bundle's tool name (`tools/<name>/<name>.bpf.c`). */
  name: string;
  /** The first line of `--help`. */
  summary: string;
  /** The usage line. */
  usage: string;
  /** Help lines for the tool's own flags (already aligned). */
  optionHelp?: string;
  /** Text after the options (columns, examples). */
  epilog?: string;
  /** The tool's own flags. */
  options: OptionSpec;
  /** Whether positional arguments are accepted (default false). */
  positionals?: boolean;
  /** Checks flags and derives the load settings; throw {@link UsageError} for bad flags. */
  configure?(values: Values, positionals: string[]): ToolConfig;
  /** Attaches, reads and prints, until {@link ToolContext.stopped}. */
  run(ctx: ToolContext): Promise<void>;
}

/** What {@link ToolDef.run} gets. */
export interface ToolContext {
  /** All flag values (common and the tool's). */
  values: Values;
  /** Positional arguments. */
  positionals: string[];
  /** The typed client, after HELLO. */
  client: BpfdClient;
  /** The loaded bundle. */
  bundle: LoadedBundle;
  /** `--json`: one JSON object per line on stdout. */
  json: boolean;
  /** `-d`: how long to trace, in ms (0: until Ctrl-C). */
  durationMs: number;
  /** Milliseconds since tracing started. */
  elapsedMs(): number;
  /** True once Ctrl-C/SIGTERM arrived or the duration has passed. */
  readonly stopped: boolean;
  /** Sleeps `ms`, returning early when the tool is stopped. */
  wait(ms: number): Promise<void>;
  /** Restarts the clock of `-d` (tools that attach by themselves call it once attached). */
  startClock(): void;
  /** Attaches every loaded program by its section; `optional(name)` programs may fail. */
  attachAll(opts?: { optional?: (prog: string) => boolean }): Promise<void>;
  /**
   * Polls `readers` until stopped, calling `onSample` with each record; lost counts are added
   * to {@link ToolContext.lost} (and reported at the end).
   */
  pollLoop(
    readers: Reader[],
    onSample: (data: Uint8Array, ev: PollEvent & { kind: "sample" }) => void | Promise<void>,
    timeoutMs?: number,
  ): Promise<void>;
  /** Events the target dropped so far. */
  lost: number;
  /** A status line on stderr (`<tool>: …`). */
  status(message: string): void;
  /** A line on stdout. */
  print(line: string): void;
}

/** The flags every tool has. */
export const COMMON_OPTIONS: OptionSpec = {
  duration: { type: "string", short: "d" },
  json: { type: "boolean" },
  remote: { type: "string" },
  bundle: { type: "string" },
  kernel: { type: "string" },
  record: { type: "string" },
  help: { type: "boolean", short: "h" },
};

const COMMON_HELP = `  -d, --duration SECS  stop after SECS seconds (default: until Ctrl-C)
      --json           machine-readable output: one JSON object per line
      --remote SPEC    where bpfd runs: local (default), ssh:[user@]host[:port][,key=…][,bpfd=CMD],
                       adb:[serial][,su][,bpfd=PATH], qemu:NAME, replay:FILE (a transcript)
      --bundle PATH    use this bundle (.oci dir or .tar) instead of building one
      --kernel SPEC    build the bundle for this kernel (compiler --kernel spec, e.g.
                       debian:6.1:aarch64); default: the running kernel, for local targets
      --record FILE    write the session's transcript to FILE (replay it with --remote replay:FILE)
  -h, --help           this text`;

/** The full `--help` text of `def`. */
export function helpText(def: ToolDef): string {
  return [
    def.summary,
    "",
    `Usage: ${def.usage}`,
    "",
    "Options:",
    ...(def.optionHelp ? [def.optionHelp] : []),
    COMMON_HELP,
    ...(def.epilog ? ["", def.epilog] : []),
  ].join("\n");
}

/**
 * Parses a non-negative integer flag (`undefined` when absent); throws {@link UsageError}.
 *
 * @example
 * ```ts
 * import { intFlag } from "./tool.ts";
 * console.log(intFlag({ pid: "42" }, "pid")); // 42
 * ```
 */
export function intFlag(values: Values, name: string): number | undefined {
  const s = values[name];
  if (s === undefined) return undefined;
  const n = Number(s);
  if (typeof s !== "string" || !/^\d+$/.test(s) || !Number.isSafeInteger(n)) {
    throw new UsageError(`--${name} needs a non-negative integer, not ${JSON.stringify(s)}`);
  }
  return n;
}

/** Seconds from `-d` (0 when absent). */
function durationOf(values: Values): number {
  const s = values.duration;
  if (s === undefined) return 0;
  const n = Number(s);
  if (typeof s !== "string" || !Number.isFinite(n) || n < 0) {
    throw new UsageError(`--duration needs a number of seconds, not ${JSON.stringify(s)}`);
  }
  return n * 1000;
}

/** The bundle to use: `--bundle`, else one built for `--kernel` or the running kernel. */
async function resolveBundle(def: ToolDef, values: Values, remoteKind: string): Promise<string> {
  if (typeof values.bundle === "string") return values.bundle;
  const kernel = typeof values.kernel === "string" ? values.kernel : undefined;
  if (!kernel && remoteKind !== "local") {
    throw new UsageError(
      `the target is remote (${remoteKind}): pass --bundle PATH, or --kernel SPEC to build one for ` +
        "its kernel (e.g. --kernel debian:6.1:aarch64; see deno task build --help)",
    );
  }
  const out = `${ROOT}.cache/tools/${(kernel ?? "running").replace(/[^A-Za-z0-9._-]/g, "_")}`;
  console.error(
    `${def.name}: building the BPF bundle for ${kernel ?? "this kernel"} ` +
      "(cached after the first time)…",
  );
  return `${await buildBundles([def.name], { kernel, out })}/${def.name}.oci.tar`;
}

/**
 * Runs `def` with `args`: returns the exit status (0 done, 1 failure, 2 usage error). Prints
 * errors; never throws.
 */
export async function runTool(def: ToolDef, args: string[] = Deno.args): Promise<number> {
  let values: Values;
  let positionals: string[];
  let config: ToolConfig;
  let durationMs: number;
  try {
    const parsed = parseArgs({
      args,
      options: { ...COMMON_OPTIONS, ...def.options },
      allowPositionals: def.positionals ?? false,
      strict: true,
    });
    values = parsed.values as Values;
    positionals = parsed.positionals;
    if (values.help) {
      console.log(helpText(def));
      return 0;
    }
    durationMs = durationOf(values);
    config = def.configure?.(values, positionals) ?? {};
    if (typeof values.remote === "string") parseRemote(values.remote);
  } catch (e) {
    console.error(`${def.name}: ${(e as Error).message} (see --help)`);
    return 2;
  }
  const remote = typeof values.remote === "string" ? values.remote : "local";
  const recorder = typeof values.record === "string"
    ? new Recorder({ remote, notes: [`tool ${def.name} ${args.join(" ")}`] })
    : null;

  let stopRequested = false;
  let signals = 0;
  const onSignal = () => {
    stopRequested = true;
    if (++signals >= 2) {
      console.error(`${def.name}: interrupted twice: exiting now (the runtime cleans up on EOF)`);
      Deno.exit(130);
    }
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  let client: BpfdClient | null = null;
  let lostTotal = 0;
  let status = 0;
  try {
    const bundlePath = await resolveBundle(def, values, parseRemote(remote).kind);
    const raw = await connectRemote(remote, {
      timeoutMs: 30_000,
      onTraffic: recorder?.onTraffic,
    });
    client = new BpfdClient(raw, { clientName: `${def.name} 0.1.0` });
    const c = client;
    const facts = await c.hello();
    const up = await c.uploadBundle(bundlePath);
    const bundle = await c.loadBundle(up.path, {
      rodata: typeof config.rodata === "function" ? config.rodata(facts) : config.rodata,
      programs: config.programs,
      maxEntries: config.maxEntries,
    });
    let t0 = performance.now();
    const ctx: ToolContext = {
      values,
      positionals,
      client: c,
      bundle,
      json: values.json === true,
      durationMs,
      elapsedMs: () => performance.now() - t0,
      get stopped() {
        return stopRequested || (durationMs > 0 && performance.now() - t0 >= durationMs);
      },
      wait: async (ms) => {
        const end = performance.now() + ms;
        while (!ctx.stopped && performance.now() < end) {
          await new Promise((r) => setTimeout(r, Math.min(100, end - performance.now())));
        }
      },
      startClock: () => {
        t0 = performance.now();
      },
      attachAll: async (opts = {}) => {
        for (const p of bundle.progs.values()) {
          try {
            await c.attachProg(p.fd);
          } catch (e) {
            if (!opts.optional?.(p.name)) throw e;
          }
        }
        t0 = performance.now(); // tracing starts now
      },
      pollLoop: async (readers, onSample, timeoutMs = 200) => {
        // Two polls in flight: the runtime drains the next batch while this side prints.
        await c.pollStream(timeoutMs, async (events) => {
          for (const ev of events) {
            if (ev.kind === "lost") ctx.lost += ev.count;
            else await onSample(ev.data, ev);
          }
        }, { readers, stop: () => ctx.stopped });
      },
      lost: 0,
      status: (m) => console.error(`${def.name}: ${m}`),
      print: (l) => console.log(l),
    };
    await def.run(ctx);
    lostTotal = ctx.lost;
  } catch (e) {
    if (stopRequested && e instanceof TransportError && e.failure === "exited") {
      // Ctrl-C in a terminal reaches a local runtime too (same process group): it tore its
      // session down and exited on the signal, which is a clean end, not a failure.
    } else {
      console.error(`${def.name}: ${(e as Error).message}`);
      status = e instanceof UsageError ? 2 : 1;
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    if (client) {
      try {
        await client.close(); // the runtime detaches and closes everything it created
      } catch (e) {
        if (!(stopRequested && e instanceof TransportError && e.failure === "exited")) {
          console.error(`${def.name}: closing the session: ${(e as Error).message}`);
          status ||= 1;
        }
      }
    }
    if (lostTotal) {
      console.error(`${def.name}: ${lostTotal} events lost (the target's buffers overflowed)`);
    }
    if (recorder) {
      await recorder.save(values.record as string);
      console.error(`${def.name}: session recorded to ${values.record}`);
    }
  }
  return status;
}

/** {@link runTool} then exit with its status: the `import.meta.main` entry of every tool. */
export async function runToolMain(def: ToolDef): Promise<never> {
  Deno.exit(await runTool(def));
}

/**
 * A NUL-terminated string field of an event.
 *
 * @example
 * ```ts
 * import { cstr } from "./tool.ts";
 * console.log(cstr(new TextEncoder().encode("sh\0junk"))); // sh
 * ```
 */
export function cstr(b: Uint8Array): string {
  const z = b.indexOf(0);
  return new TextDecoder().decode(z < 0 ? b : b.subarray(0, z));
}

/**
 * A log2 histogram as BCC prints it (`print_log2_hist`): one row per power-of-two bucket from
 * the first to the last non-empty one, with a bar of `*` scaled to the largest count.
 *
 * @example
 * ```ts
 * import { log2Histogram } from "./tool.ts";
 * console.log(log2Histogram([0, 3, 1], "usecs"));
 * ```
 */
export function log2Histogram(counts: ArrayLike<number | bigint>, unit: string): string {
  const n = Array.from(counts, Number);
  let last = n.length - 1;
  while (last >= 0 && n[last] === 0) last--;
  // BCC's layout: "%10d -> %-10d : %-8d |%-40s|" (widths 20 past 32 buckets), stars truncated.
  const w = last > 32 ? 20 : 10;
  const header = `${" ".repeat(w - 5)}${unit.padEnd(w + 9)} : count     distribution`;
  if (last < 0) return `${header}\n(no events)`;
  const max = Math.max(...n);
  const width = 40;
  const rows = [header];
  for (let i = 0; i <= last; i++) {
    const low = i === 0 ? 0 : 2 ** i;
    const high = 2 ** (i + 1) - 1;
    const stars = max ? Math.floor((n[i] * width) / max) : 0;
    rows.push(
      `${String(low).padStart(w)} -> ${String(high).padEnd(w)} : ${String(n[i]).padEnd(8)} |${
        "*".repeat(stars).padEnd(width)
      }|`,
    );
  }
  return rows.join("\n");
}

/**
 * The target and the object loaded on it, for status lines:
 * `x86_64 6.1.0-56-cloud-amd64 (core object built for 6.1.0-56-cloud-amd64)`.
 */
export function describeTarget(ctx: Pick<ToolContext, "bundle" | "client">): string {
  const o = ctx.bundle.object;
  const release = ctx.client.facts?.release ?? o.release;
  return `${o.arch} ${release} (${o.mode} object${
    release === o.release ? "" : ` built for ${o.release}`
  })`;
}

/**
 * Local time as BCC's `-T` prints it (`%H:%M:%S`).
 *
 * @example
 * ```ts
 * import { clockHMS } from "./tool.ts";
 * console.log(clockHMS(new Date(2026, 0, 1, 9, 5, 7))); // 09:05:07
 * ```
 */
export function clockHMS(d: Date = new Date()): string {
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0"))
    .join(":");
}
