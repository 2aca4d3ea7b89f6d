/**
 * Plays a transcript against a live runtime: sends the recorded commands (rewritten with the
 * bound fds and pids) in the recorded interleaving, reads each recorded line back, and stops at
 * the first line that differs after normalisation (`normalise.ts`).
 *
 * `# replay run <shell command>` notes run the command at that point (e.g. to cause an event);
 * `# replay sleep <ms>` waits.
 *
 * @example
 * ```ts
 * import { playTranscript } from "./play.ts";
 * import { readTranscript } from "./transcript.ts";
 * import { connectRemote } from "../transport/remote.ts";
 * const client = await connectRemote("ssh:root@board");
 * const report = await playTranscript(await readTranscript("session.txt"), client);
 * console.log(report.ok ? "identical" : report.divergence!.message);
 * await client.close();
 * ```
 * @module
 */

import { BANNER_LINE } from "./scenario.ts";
import { Normaliser } from "./normalise.ts";
import { abbreviation, type LoadedTranscript } from "./transcript.ts";

export type { LoadedTranscript };

/** What a replay needs of a client (`RawClient` and `ChannelClient` have it). */
export interface LineClient {
  /** Writes one line (a `\n` is appended). */
  write(line: string): Promise<void>;
  /** The next line received; rejects on EOF or timeout. */
  readLine(timeoutMs?: number): Promise<string>;
}

/** Where a replay first differed from its transcript. */
export interface Divergence {
  /** Transcript line number (1-based). */
  lineNo: number;
  /** The recorded line (`> …` or `< …`). */
  expected: string;
  /** What happened instead (`< …`, or null when nothing came). */
  actual: string | null;
  /** Why they differ. */
  reason: string;
  /** One paragraph for people. */
  message: string;
}

/** The outcome of {@link playTranscript}. */
export interface PlayReport {
  /** True when every recorded line matched. */
  ok: boolean;
  /** Commands sent. */
  sent: number;
  /** Received lines compared. */
  compared: number;
  /** The first difference, or null. */
  divergence: Divergence | null;
  /** Recorded → actual bindings at the end (fds and pids). */
  bindings: Record<string, string>;
  /** Wall time of the replay. */
  elapsedMs: number;
}

/** Options of {@link playTranscript}. */
export interface PlayOptions {
  /** Per-line read timeout (default 10 s). */
  timeoutMs?: number;
  /** This client's pid, substituted for `# replay self` (default this process). */
  selfPid?: number;
  /** Runs `# replay run` commands (default `sh -c`). */
  onRun?: (command: string) => Promise<void>;
}

/**
 * Builds a {@link Divergence} (with its message).
 *
 * @example
 * ```ts
 * import { divergence } from "./play.ts";
 * console.log(divergence("t.txt", 12, "< ret=3", "< ret=4", "field 2 differs").message);
 * ```
 */
export function divergence(
  source: string,
  lineNo: number,
  expected: string,
  actual: string | null,
  reason: string,
): Divergence {
  const cut = (s: string) => s.length > 240 ? `${s.slice(0, 240)}…(${s.length} chars)` : s;
  return {
    lineNo,
    expected,
    actual,
    reason,
    message: `${source}:${lineNo}: diverged: ${reason}\n  expected: ${cut(expected)}\n  actual:   ${
      actual === null ? "(nothing)" : cut(actual)
    }`,
  };
}

async function runShell(command: string): Promise<void> {
  const r = await new Deno.Command("sh", { args: ["-c", command], stdout: "null", stderr: "piped" })
    .output();
  if (r.code !== 0) {
    throw new Error(
      `# replay run ${command}: exit ${r.code}: ${new TextDecoder().decode(r.stderr).trim()}`,
    );
  }
}

/**
 * Plays `transcript` through `client` (a `RawClient` or anything with `write`/`readLine`).
 * Does not close the client.
 *
 * @example
 * ```ts
 * import { playTranscript } from "./play.ts";
 * import { loadTranscript } from "./transcript.ts";
 * import { connectRemote } from "../transport/remote.ts";
 * const c = await connectRemote("local");
 * const r = await playTranscript(loadTranscript("> GET_CPUS\n< START_BPFD_OUTPUT\n"), c);
 * console.log(r.ok);
 * await c.close();
 * ```
 */
export async function playTranscript(
  transcript: LoadedTranscript,
  client: LineClient,
  opts: PlayOptions = {},
): Promise<PlayReport> {
  const t0 = performance.now();
  const norm = Normaliser.fromDirectives(transcript.directives, { selfPid: opts.selfPid });
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const writes: Promise<void>[] = [];
  let sent = 0;
  let compared = 0;
  let div: Divergence | null = null;
  const fail = (lineNo: number, expected: string, actual: string | null, reason: string) =>
    div = divergence(transcript.source, lineNo, expected, actual, reason);
  for (const e of transcript.events) {
    if (e.kind === "note") {
      const m = /^# replay (run|sleep) (.*)$/.exec(e.text);
      if (m?.[1] === "run") await (opts.onRun ?? runShell)(m[2]);
      if (m?.[1] === "sleep") await new Promise((r) => setTimeout(r, Number(m[2])));
      continue;
    }
    if (e.kind === "sent") {
      if (abbreviation(e.line)) {
        fail(
          e.lineNo,
          `> ${e.line}`,
          null,
          "the transcript abbreviates this command, so it " +
            "cannot be sent again: record without --abbreviate",
        );
        break;
      }
      const p = client.write(norm.rewrite(e.line));
      p.catch(() => {}); // a dead far side shows up as a failed read
      writes.push(p);
      sent++;
      continue;
    }
    let actual: string;
    try {
      do actual = await client.readLine(timeoutMs); while (actual === BANNER_LINE);
    } catch (err) {
      fail(e.lineNo, `< ${e.line}`, null, (err as Error).message);
      break;
    }
    compared++;
    const why = norm.compare(e.line, actual);
    if (why) {
      fail(e.lineNo, `< ${e.line}`, `< ${actual}`, why);
      break;
    }
  }
  await Promise.allSettled(writes);
  return {
    ok: div === null,
    sent,
    compared,
    divergence: div,
    bindings: Object.fromEntries(norm.bindings),
    elapsedMs: Math.round(performance.now() - t0),
  };
}
