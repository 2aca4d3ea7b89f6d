/**
 * Serves a transcript in place of a runtime: a fake channel that answers each command with the
 * response recorded for it, as long as the command equals (after normalisation) the one
 * recorded at that point. Tools and the typed client can so be tested deterministically, with no
 * kernel and no root.
 *
 * Commands and responses are paired in order (the protocol answers every non-empty line but
 * `exit` with exactly one response), so a client may pipeline differently than the recording
 * did. A command that differs, or one past the end of the transcript, errors the channel with a
 * {@link ReplayDivergenceError} naming the transcript line.
 *
 * @example
 * ```ts
 * import { serveTranscript } from "./serve.ts";
 * import { readTranscript } from "./transcript.ts";
 * import { RawClient } from "../client/raw.ts";
 * const server = serveTranscript(await readTranscript("session.txt"));
 * const client = new RawClient(server.readable, server.writable);
 * console.log(await client.send("HELLO bpfpack-client 0.1.0"));
 * await client.close();
 * console.log(await server.done);
 * ```
 * @module
 */

import { BANNER_LINE, END_LINE, START_LINE } from "./scenario.ts";
import { Normaliser } from "./normalise.ts";
import { type Divergence, divergence } from "./play.ts";
import { abbreviation, type LoadedTranscript } from "./transcript.ts";

/**
 * The client left the transcript's path (the served channel errors with this).
 *
 * @example
 * ```ts
 * import { ReplayDivergenceError } from "./serve.ts";
 * try { /* await client.send("…") *\/ } catch (e) {
 *   if (e instanceof ReplayDivergenceError) console.error(e.divergence.lineNo);
 * }
 * ```
 */
export class ReplayDivergenceError extends Error {
  /** Where and how the client strayed. */
  readonly divergence: Divergence;
  /** An error carrying `d` (its message is `d.message`). */
  constructor(d: Divergence) {
    super(d.message);
    this.name = "ReplayDivergenceError";
    this.divergence = d;
  }
}

/** The outcome of serving. */
export interface ServeReport {
  /** True when the client followed the transcript. */
  ok: boolean;
  /** Commands answered. */
  answered: number;
  /** Commands the transcript still had when the client stopped. */
  remaining: number;
  /** The first stray command, or null. */
  divergence: Divergence | null;
  /** Whether the client ended with `exit` (else EOF). */
  exitSeen: boolean;
}

/** A served transcript: the streams a client uses in place of a runtime's stdout/stdin. */
export interface TranscriptServer {
  /** What the "runtime" writes (the client reads). */
  readable: ReadableStream<Uint8Array>;
  /** What the client writes. */
  writable: WritableStream<Uint8Array>;
  /** Resolves when the client has ended the session (or diverged). */
  done: Promise<ServeReport>;
}

/** Options of {@link serveTranscript}. */
export interface ServeOptions {
  /** The replaying client's pid (bound to the transcript's `# replay self`). */
  selfPid?: number;
  /** Send the `STARTED_BPFD` banner first (default true). */
  banner?: boolean;
  /**
   * Answer a `PERF_READER_POLL` that the transcript does not have at this point (the tool polls
   * longer than the recording did) with an empty poll after its timeout (at most 1 s), instead
   * of diverging. The recorded polls are answered at once, so a tool replayed with the same
   * duration sees every recorded event before it stops. Default false.
   */
  padPolls?: boolean;
}

interface Pair {
  command: string;
  lineNo: number;
  response: { line: string; lineNo: number }[] | null;
}

/** Pairs each responding command with the next framed response. */
function pairs(t: LoadedTranscript): Pair[] {
  const out: Pair[] = [];
  const responses: { line: string; lineNo: number }[][] = [];
  let cur: { line: string; lineNo: number }[] | null = null;
  for (const e of t.events) {
    if (e.kind === "sent") {
      const l = e.line.endsWith("\r") ? e.line.slice(0, -1) : e.line;
      if (l === "" || l.split(" ").filter(Boolean)[0] === "exit") continue;
      out.push({ command: e.line, lineNo: e.lineNo, response: null });
    } else if (e.kind === "received") {
      if (e.line === START_LINE) cur = [];
      if (cur) cur.push({ line: e.line, lineNo: e.lineNo });
      if (e.line === END_LINE && cur) {
        responses.push(cur);
        cur = null;
      }
    }
  }
  out.forEach((p, i) => p.response = responses[i] ?? null);
  return out;
}

/**
 * Serves `transcript` on a fake channel (see the module doc).
 *
 * @example
 * ```ts
 * import { serveTranscript } from "./serve.ts";
 * import { loadTranscript } from "./transcript.ts";
 * const s = serveTranscript(loadTranscript("> GET_CPUS\n< START_BPFD_OUTPUT\n< END_BPFD_OUTPUT\n"));
 * console.log(typeof s.readable, typeof s.writable);
 * ```
 */
export function serveTranscript(
  transcript: LoadedTranscript,
  opts: ServeOptions = {},
): TranscriptServer {
  const norm = Normaliser.fromDirectives(transcript.directives, { selfPid: opts.selfPid });
  const script = pairs(transcript);
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  let next = 0;
  let ended = false;
  let exitSeen = false;
  let div: Divergence | null = null;
  let resolveDone!: (r: ServeReport) => void;
  const done = new Promise<ServeReport>((r) => resolveDone = r);
  const finish = () => {
    if (ended) return;
    ended = true;
    resolveDone({
      ok: div === null,
      answered: next,
      remaining: script.length - next,
      divergence: div,
      exitSeen,
    });
  };
  const diverge = (d: Divergence) => {
    div = d;
    try {
      ctl.error(new ReplayDivergenceError(d));
    } catch { /* already closed */ }
    finish();
  };
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      ctl = c;
      if (opts.banner !== false) c.enqueue(enc.encode(BANNER_LINE + "\n"));
    },
  });
  // Responses go out in command order, also when a padded poll waits for its timeout.
  let chain = Promise.resolve();
  const send = (text: string, delayMs = 0) => {
    chain = chain.then(async () => {
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      if (ended) return;
      try {
        ctl.enqueue(enc.encode(text));
      } catch { /* the client has gone */ }
    });
  };
  const onLine = (raw: string) => {
    if (ended) return;
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line === "") return;
    if (line.split(" ").filter(Boolean)[0] === "exit") {
      exitSeen = true;
      chain = chain.then(() => {
        try {
          ctl.close();
        } catch { /* closed */ }
        finish();
      });
      return;
    }
    const p = script[next];
    const src = transcript.source;
    const poll = /^PERF_READER_POLL (-?\d+) /.exec(line);
    if (opts.padPolls && poll && !p?.command.startsWith("PERF_READER_POLL ")) {
      const t = Number(poll[1]);
      send(`${START_LINE}\n${END_LINE}\n`, t < 0 ? 1000 : Math.min(t, 1000));
      return;
    }
    if (!p) {
      const last = script[script.length - 1];
      diverge(
        divergence(
          src,
          last?.lineNo ?? 0,
          "(end of transcript)",
          `> ${line}`,
          "the client " +
            "sent more commands than the transcript holds",
        ),
      );
      return;
    }
    const why = norm.compare(p.command, line);
    if (why) {
      diverge(divergence(src, p.lineNo, `> ${p.command}`, `> ${line}`, why));
      return;
    }
    if (!p.response) {
      diverge(divergence(
        src,
        p.lineNo,
        `> ${p.command}`,
        `> ${line}`,
        "the transcript has no " +
          "response for this command (it ends here)",
      ));
      return;
    }
    const cut = p.response.find((r) => abbreviation(r.line));
    if (cut) {
      diverge(divergence(
        src,
        cut.lineNo,
        `< ${cut.line}`,
        null,
        "the transcript abbreviates " +
          "this response line, so it cannot be served: record without --abbreviate",
      ));
      return;
    }
    next++;
    send(p.response.map((r) => r.line + "\n").join(""));
  };
  let buf = "";
  const writable = new WritableStream<Uint8Array>({
    write(chunk) {
      buf += dec.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0 && !ended) {
        const l = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        onLine(l);
      }
    },
    close() {
      if (buf !== "") onLine(buf);
      buf = "";
      chain = chain.then(() => {
        try {
          ctl.close();
        } catch { /* closed or errored */ }
        finish();
      });
    },
    abort() {
      finish();
    },
  });
  return { readable, writable, done };
}
