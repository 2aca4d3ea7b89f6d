/**
 * `bpfd`: the target runtime. Reads BPFd protocol commands on stdin, answers
 * on stdout, and cleans up everything it created when the session ends (exit,
 * EOF, SIGTERM, SIGHUP or SIGINT).
 *
 * @example
 * ```sh
 * printf 'HELLO\nexit\n' | deno run -A runtime/main.ts
 * ```
 * @module
 */

import { SLICE_MS, Stdio } from "./io.ts";
import { Ops, RUNTIME_VERSION } from "./ops.ts";
import { Session } from "./session.ts";
import { BANNER, END, frame, frameBody, MAX_LINE, START } from "./protocol/framing.ts";
import { parseLine, parseLookupBytes } from "./protocol/commands.ts";
import { encodeBase64 } from "./protocol/base64.ts";
import { notRecognized } from "./protocol/response.ts";
import { raiseMemlock } from "./kernel/target.ts";
import { setProbeMode } from "./kernel/probes.ts";

const HELP = `bpfd ${RUNTIME_VERSION} — the bpfpack target runtime

Usage: bpfd [--max-fds N] [--probe-mode auto|pmu|tracefs] [--cache-dir DIR]

Reads BPFd protocol commands on stdin, one per line, and answers each with
START_BPFD_OUTPUT / body / END_BPFD_OUTPUT on stdout. Send HELLO for the
target's facts and the command list; see docs/protocol.md. Needs root (or
CAP_BPF + CAP_PERFMON). Ends on 'exit', EOF, SIGTERM, SIGHUP or SIGINT,
detaching and closing everything it created.

Options:
  --max-fds N   most fds one session may hold (default 4096)
  --probe-mode  how kprobes/uprobes are made: auto (perf PMU, else tracefs
                kprobe_events/uprobe_events), pmu, or tracefs
  --cache-dir   where uploaded bundles are kept (default $BPFD_CACHE_DIR,
                else $TMPDIR/bpfpack-bundles); bundles/<sha256>.tar next to
                the main module (embedded by deno task compile) count too
  --version     print the version
  --help        this text`;

const NEWLINE = new Uint8Array([10]);
const SIGNALS: Deno.Signal[] = ["SIGTERM", "SIGHUP", "SIGINT"];
const SIGNO: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/** Queues BPF_LOOKUP_ELEM's answer: the value as one base64 line, or the failure body. */
function queueLookup(io: Stdio, r: Uint8Array | string[]): void {
  if (!(r instanceof Uint8Array)) io.queue(frame(r));
  else if (!io.queueFramedBase64(r)) io.queue(frame([encodeBase64(r)]));
}

/** What the command line sets. */
export interface Options {
  /** Most fds one session may hold. */
  maxFds?: number;
  /** Where uploaded bundles are kept. */
  cacheDir?: string;
}

/** Runs one session on the given channel; resolves with the exit status. */
export async function serve(io: Stdio, opts: Options = {}): Promise<number> {
  let stopSignal: Deno.Signal | null = null;
  const handlers = SIGNALS.map((sig) => {
    const h = () => {
      stopSignal = sig;
    };
    Deno.addSignalListener(sig, h);
    return [sig, h] as const;
  });
  const yieldNow = () => new Promise<void>((r) => setTimeout(r, 0));
  const session = new Session(opts.maxFds);
  const ops = new Ops(session, {
    pollInput: () => io.lines.hasLine(),
    wait: (fds, ms) => Promise.resolve(io.wait(fds, ms)),
    warn: (m) => io.warn(m),
    yieldNow,
    stopping: () => stopSignal !== null,
  }, { cacheDir: opts.cacheDir });
  raiseMemlock();
  io.write(BANNER + "\n");
  let lastYield = performance.now();
  let waits = 0;
  let flushed = false;
  try {
    // Responses are queued, and flushed whenever the loop would wait: for
    // input (no complete command is buffered: never delay a response then),
    // for an asynchronous command, or for the event loop. A pipelined batch
    // is thus answered with one write per batch, a lone request at once.
    loop: while (stopSignal === null && !io.broken) {
      // The hot path: a BPF_LOOKUP_ELEM in its canonical form is read from
      // the line's bytes, and the value goes from the kernel's buffer into
      // the output queue as base64: no strings, tokens or body in between.
      // Every other line, and every other form of it, takes the general path.
      const raw = io.lines.peek();
      const lookup = raw && parseLookupBytes(raw);
      if (lookup) {
        io.lines.skip();
        queueLookup(io, ops.lookupValue(lookup.fd, lookup.key, lookup.klen, lookup.vlen));
        continue;
      }
      const r = io.lines.next();
      if (r === null) {
        io.flush();
        if (io.eof) {
          // A last line without its newline is still a command (as in the original).
          if (!flushed && io.lines.hasPartial()) {
            io.lines.push(NEWLINE);
            flushed = true;
            continue;
          }
          break;
        }
        // Wait for input in slices so signals get a turn; a client that
        // keeps the loop busy gets one every SLICE_MS too (the clock is read
        // every 16th time only: it is a call into the runtime, and this runs
        // once per request of a client that waits for each answer).
        if (++waits % 16 === 0 && performance.now() - lastYield > SLICE_MS) {
          await yieldNow();
          lastYield = performance.now();
        }
        while (stopSignal === null && !io.waitStdin(SLICE_MS)) {
          await yieldNow();
          lastYield = performance.now();
        }
        if (stopSignal !== null) break;
        io.readSome();
        continue;
      }
      if ("tooLong" in r) {
        io.queue(frame(notRecognized(
          `line of ${r.tooLong} bytes is longer than the limit of ${MAX_LINE} bytes; it was discarded`,
        )));
        continue;
      }
      const p = parseLine(r.line);
      switch (p.kind) {
        case "empty":
          continue;
        case "exit":
          break loop;
        case "error":
          io.queue(frame(notRecognized(p.message)));
          continue;
      }
      if (p.name === "PERF_READER_POLL") {
        // As the original: the start marker goes out before a poll that may block.
        io.write(START + "\n");
        const body = await ops.run(p.name, p.args);
        io.queue(frameBody(body) + END + "\n");
      } else {
        // Synchronous commands answer at once; only a few (bundles) return a promise.
        let body = ops.run(p.name, p.args);
        if (body instanceof Promise) {
          io.flush();
          body = await body;
        }
        io.queue(frame(body));
      }
      const now = performance.now();
      if (now - lastYield > SLICE_MS) {
        io.flush();
        await yieldNow();
        lastYield = now;
      }
    }
  } finally {
    io.flush();
    session.teardown();
    for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
  }
  return stopSignal === null ? 0 : 128 + SIGNO[stopSignal];
}

/**
 * Parses the command line; exits on --help, --version and bad options. The
 * argument parser (node:util) is loaded only here: it costs start-up time and
 * memory, and bpfd is usually started without arguments.
 */
async function parseOptions(args: string[]): Promise<Options> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(HELP);
    Deno.exit(0);
  }
  if (args.includes("--version")) {
    console.log(`bpfd ${RUNTIME_VERSION}`);
    Deno.exit(0);
  }
  const { parseArgs } = await import("../artifacts/cli.ts");
  const { values, positionals } = parseArgs({
    args,
    options: {
      "max-fds": { type: "string" },
      "probe-mode": { type: "string" },
      "cache-dir": { type: "string" },
    },
    strict: false,
  });
  const bad = Object.keys(values).find((k) => !["max-fds", "probe-mode", "cache-dir"].includes(k));
  if (bad || positionals.length) {
    console.error(`bpfd: unknown option ${bad ? `--${bad}` : positionals[0]} (see --help)`);
    Deno.exit(2);
  }
  let maxFds: number | undefined;
  if (values["max-fds"] !== undefined) {
    maxFds = Number(values["max-fds"]);
    if (!Number.isInteger(maxFds) || maxFds <= 0) {
      console.error("bpfd: --max-fds needs a positive integer");
      Deno.exit(2);
    }
  }
  const pm = values["probe-mode"];
  if (pm !== undefined) {
    if (pm !== "auto" && pm !== "pmu" && pm !== "tracefs") {
      console.error("bpfd: --probe-mode must be auto, pmu or tracefs");
      Deno.exit(2);
    }
    setProbeMode(pm);
  }
  return { maxFds, cacheDir: values["cache-dir"] as string | undefined };
}

if (import.meta.main) {
  const opts = Deno.args.length > 0 ? await parseOptions(Deno.args) : {};
  const io = new Stdio();
  let code = 1;
  try {
    code = await serve(io, opts);
  } catch (e) {
    io.warn(`bpfd: fatal: ${(e as Error)?.stack ?? e}`);
  }
  Deno.exit(code);
}
