/**
 * Transcripts of bpfd sessions: recording one (a `RawClient` `onTraffic` hook) and loading one as
 * an ordered list of events. The format is the scenario engine's (`tests/support/scenario.ts`):
 * `> ` a line sent, `< ` a line received (the banner left out), `# ` notes. Recordings keep
 * lines whole (a replay needs every byte); `abbreviate` shortens them the scenario way for
 * reading.
 *
 * Notes starting with `# replay ` carry normalisation marks and actions (see `normalise.ts`):
 * `# replay self <pid>`, `# replay mask <regex>`, `# replay pid <regex>`, `# replay fd <regex>`,
 * `# replay b64 <fields> <regex>`, `# replay run <shell command>`, `# replay sleep <ms>`.
 *
 * @example
 * ```ts
 * import { Recorder } from "./transcript.ts";
 * import { connectRemote } from "../transport/remote.ts";
 * const rec = new Recorder({ remote: "local" });
 * const c = await connectRemote("local", { onTraffic: rec.onTraffic });
 * await c.send("GET_CPUS");
 * rec.finish(await c.close());
 * await rec.save("session.txt");
 * ```
 * @module
 */

// The scenario engine owns the transcript format; the replay tools read and write the same text.
import { BANNER_LINE, parseTranscript, shorten, type TranscriptEntry } from "./scenario.ts";

/** One line of a transcript, in order. `lineNo` is 1-based in the transcript text. */
export type TranscriptEvent =
  | { kind: "sent"; line: string; lineNo: number }
  | { kind: "received"; line: string; lineNo: number }
  | { kind: "note"; text: string; lineNo: number };

/** A loaded transcript. */
export interface LoadedTranscript {
  /** Every line, in order. */
  events: TranscriptEvent[];
  /** The `# replay …` notes (without the `# replay ` prefix). */
  directives: string[];
  /** From `# daemon exit status N`. */
  exitStatus: number | null;
  /** Where it came from (a path, or `text`). */
  source: string;
}

/** Options of {@link Recorder}. */
export interface RecorderOptions {
  /** Shorten lines over 300 characters (readable, but cannot be replayed byte for byte). */
  abbreviate?: boolean;
  /** The remote spec or transport description, for the header note. */
  remote?: string;
  /** The recording client's pid (default this process): lets a replay substitute its own. */
  selfPid?: number;
  /** Extra notes for the header (e.g. `replay mask …` marks). */
  notes?: string[];
}

/**
 * Records a session. Pass {@link Recorder.onTraffic} as a `RawClient`'s `onTraffic`.
 *
 * @example
 * ```ts
 * import { Recorder } from "./transcript.ts";
 * const rec = new Recorder();
 * rec.onTraffic(">", "GET_CPUS");
 * rec.onTraffic("<", "START_BPFD_OUTPUT");
 * console.log(rec.text());
 * ```
 */
export class Recorder {
  #lines: string[] = [];
  #opts: RecorderOptions;

  /** A recorder; its header notes name the remote and this client's pid. */
  constructor(opts: RecorderOptions = {}) {
    this.#opts = opts;
    this.#lines.push(
      `# bpfpack transcript${opts.remote ? ` (remote ${opts.remote})` : ""}`,
      `# replay self ${opts.selfPid ?? Deno.pid}`,
    );
    for (const n of opts.notes ?? []) this.note(n);
  }

  /** The traffic hook (bound: pass it around as is). Drops the banner. */
  readonly onTraffic = (dir: ">" | "<", line: string): void => {
    if (dir === "<" && line === BANNER_LINE) return;
    this.#lines.push(`${dir} ${this.#opts.abbreviate ? shorten(line) : line}`);
  };

  /** Adds a `# ` note at the current position (`text` without the `# `). */
  note(text: string): void {
    if (/[\r\n]/.test(text)) throw new Error("a transcript note must be one line");
    this.#lines.push(`# ${text}`);
  }

  /** Adds `# daemon exit status N` (as the scenario engine does) when the status is known. */
  finish(exitStatus: number | null): void {
    if (exitStatus !== null) this.#lines.push(`# daemon exit status ${exitStatus}`);
  }

  /** The transcript text so far. */
  text(): string {
    return this.#lines.map((l) => l + "\n").join("");
  }

  /** Writes the transcript to `path`. */
  async save(path: string): Promise<void> {
    await Deno.writeTextFile(path, this.text());
  }
}

/**
 * Parses transcript text into ordered events (with the scenario engine's parser).
 *
 * @example
 * ```ts
 * import { loadTranscript } from "./transcript.ts";
 * const t = loadTranscript("> GET_CPUS\n< START_BPFD_OUTPUT\n< END_BPFD_OUTPUT\n");
 * console.log(t.events.length); // 3
 * ```
 */
export function loadTranscript(text: string, source = "text"): LoadedTranscript {
  const parsed = parseTranscript(text);
  // Line numbers: parseTranscript skips blank lines and keeps `>`/`<` lines in file order.
  const io: number[] = [];
  const notes: number[] = [];
  text.split("\n").forEach((raw, i) => {
    const l = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (l.startsWith("#")) notes.push(i + 1);
    else if (l.startsWith("<") || l.startsWith(">")) io.push(i + 1);
  });
  let ioAt = 0;
  let noteAt = 0;
  const events: TranscriptEvent[] = [];
  const directives: string[] = [];
  const push = (e: TranscriptEntry) => {
    if (e.kind === "note") {
      events.push({ kind: "note", text: e.text, lineNo: notes[noteAt++] ?? 0 });
      if (e.text.startsWith("# replay ")) directives.push(e.text.slice(9));
      return;
    }
    events.push({ kind: "sent", line: e.command, lineNo: io[ioAt++] ?? 0 });
    for (const l of e.lines) events.push({ kind: "received", line: l, lineNo: io[ioAt++] ?? 0 });
  };
  parsed.entries.forEach(push);
  return { events, directives, exitStatus: parsed.exitStatus, source };
}

/**
 * Reads and parses a transcript file.
 *
 * @example
 * ```ts
 * import { readTranscript } from "./transcript.ts";
 * const t = await readTranscript("session.txt");
 * console.log(t.events.filter((e) => e.kind === "sent").length, "commands");
 * ```
 */
export async function readTranscript(path: string): Promise<LoadedTranscript> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`cannot read transcript ${path}: ${(e as Error).message}`);
  }
  try {
    return loadTranscript(text, path);
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message} (is it a bpfpack transcript?)`);
  }
}

/**
 * Whether a transcript line was shortened by `abbreviate` (`…...(N chars)`): its prefix and
 * full length, else null.
 *
 * @example
 * ```ts
 * import { abbreviation } from "./transcript.ts";
 * abbreviation("x".repeat(200) + "...(400 chars)"); // { prefix: "xxx…", length: 400 }
 * ```
 */
export function abbreviation(line: string): { prefix: string; length: number } | null {
  const m = /^([\s\S]*)\.\.\.\((\d+) chars\)$/.exec(line);
  if (!m || [...m[1]].length !== 200) return null;
  return { prefix: m[1], length: Number(m[2]) };
}
