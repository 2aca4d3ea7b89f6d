/**
 * The scenario engine of `shared/transcripts/drive.py`, in TypeScript: parses
 * `.scn` scenario files, expands their `$var` bindings and `@{macro}` payloads
 * (the BPF bytecode is built exactly as drive.py builds it), runs `!sh` and
 * `!sleep` steps, drives any BPFd-protocol client, and produces transcripts in
 * the same text format as `shared/transcripts/original/*.txt`. It also parses
 * those transcripts back.
 *
 * The engine does not know what it talks to: the client is passed in (a
 * {@link ScenarioClient}, e.g. `RawClient` from `tools/client/raw.ts` on the
 * bpfpack runtime, on the original daemon, or on a recorded replay).
 *
 * Scenario syntax (one step per line; blank lines are skipped):
 * - `COMMAND args…` sends the line and records the response;
 * - `name=COMMAND args…` does the same and binds `$name` to the number after
 *   the first `ret=` in the response (the prefix must not be all upper case);
 * - `!sh <shell command>` runs a local command (output discarded);
 * - `!sleep <seconds>` waits;
 * - `# comment` is copied to the transcript.
 *
 * `$name` and `${name}` are replaced by bound values (`$NCPU` and `$PID` are
 * predefined; unknown names are left as they are), then the macros
 * `@{u32:N}`, `@{u64:N}`, `@{zeros:N}`, `@{pattern:N}`, `@{ret0}`,
 * `@{counter:FD}`, `@{counterlen}`, `@{perfout:FD}` and `@{perfoutlen}`.
 *
 * Transcript format: `> ` a command sent, `< ` a line received (framing
 * markers included, the banner left out), `# ` notes. Commands and lines
 * longer than 300 characters are shown as their first 200 followed by
 * `...(N chars)`.
 *
 * @example
 * ```ts
 * import { RawClient } from "../client/raw.ts";
 * import { formatTranscript, parseScenario, runScenario } from "./scenario.ts";
 * const steps = parseScenario(await Deno.readTextFile("maps.scn"));
 * const client = RawClient.spawn(["deno", "run", "-A", "runtime/main.ts"], { stderr: "null" });
 * const run = await runScenario(steps, client);
 * console.log(formatTranscript(run.entries));
 * ```
 * @module
 */

import { progs } from "../client/asm.ts";
import { decodeBase64, encodeBase64 } from "../../runtime/protocol/base64.ts";

/**
 * What the engine needs from a protocol client. `RawClient` (tools/client/raw.ts)
 * has this shape.
 */
export interface ScenarioClient {
  /** Writes one command line (the client appends `\n`). */
  write(line: string): Promise<void>;
  /** The next line received (without its line ending); rejects on EOF or timeout. */
  readLine(timeoutMs?: number): Promise<string>;
  /** Ends the session (closing the far side's input) and returns its exit status, if known. */
  close(): Promise<number | null>;
}

/** One step of a scenario file. `lineNo` is 1-based. */
export type ScenarioStep =
  | { kind: "comment"; text: string; lineNo: number }
  | { kind: "sh"; command: string; lineNo: number }
  | { kind: "sleep"; seconds: number; lineNo: number }
  | { kind: "command"; template: string; bind?: string; lineNo: number };

/** A `#` line of a transcript (`text` is the whole line, `#` included). */
export interface Note {
  kind: "note";
  text: string;
}

/** A command and every line received for it, framing markers included. */
export interface Exchange {
  kind: "exchange";
  /** The command as sent (in a parsed transcript: as shown, possibly shortened). */
  command: string;
  /** The scenario text it was expanded from (runs only). */
  template?: string;
  /** The variable this exchange binds (runs only). */
  bind?: string;
  /** Scenario line number (runs only). */
  lineNo?: number;
  /** Lines received up to and including `END_BPFD_OUTPUT` (the banner is left out). */
  lines: string[];
}

/** A transcript entry. */
export type TranscriptEntry = Note | Exchange;

/** The response framing markers and banner, as drive.py knows them. */
export const BANNER_LINE = "STARTED_BPFD";
/** First line of each response. */
export const START_LINE = "START_BPFD_OUTPUT";
/** Last line of each response. */
export const END_LINE = "END_BPFD_OUTPUT";

// ---------------------------------------------------------------- bytecode

/** drive.py's `perfout(mapfd)` program (the same bytes: tools/client/asm.ts). */
export const perfoutProgram: (mapFd: number) => Uint8Array = progs.perfout;
/** drive.py's `counter(mapfd)` program. */
export const counterProgram: (mapFd: number) => Uint8Array = progs.counter;
/** drive.py's `@{ret0}` program: `r0 = 0; exit`. */
export const ret0Program: () => Uint8Array = progs.ret0;

/** Standard base64 (with padding) of `bytes`. */
export const toBase64: (bytes: Uint8Array) => string = encodeBase64;
/** Strict standard base64 decoding; throws on anything else. */
export const fromBase64: (text: string) => Uint8Array = decodeBase64;

// ---------------------------------------------------------------- macros and variables

/** Python's `int(arg)` for the macro argument syntax `-?\d+` (as a bigint). */
function macroInt(arg: string | undefined): bigint {
  return arg === undefined ? 0n : BigInt(arg);
}

/** Python's `a & mask` on a (possibly negative) integer, as a number of `bits` bits. */
function maskLE(a: bigint, bytes: number): Uint8Array {
  const v = BigInt.asUintN(bytes * 8, a);
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** The fd argument of a program macro, as drive.py packs it (`<i`). */
function fdArg(a: bigint): number {
  if (a < -(1n << 31n) || a >= 1n << 31n) {
    throw new Error(`macro argument ${a} does not fit in a 32-bit immediate`);
  }
  return Number(a);
}

/**
 * Expands one macro (`@{name}` or `@{name:arg}`) as drive.py's `macro()`.
 * Throws on an unknown macro name.
 */
export function expandMacro(name: string, arg?: string): string {
  const a = macroInt(arg);
  switch (name) {
    case "perfout":
      return toBase64(perfoutProgram(fdArg(a)));
    case "perfoutlen":
      return String(perfoutProgram(0).length);
    case "counter":
      return toBase64(counterProgram(fdArg(a)));
    case "counterlen":
      return String(counterProgram(0).length);
    case "ret0":
      return toBase64(ret0Program());
    case "u32":
      return toBase64(maskLE(a, 4));
    case "u64":
      return toBase64(maskLE(a, 8));
    case "zeros":
      if (a < 0n) throw new Error(`@{zeros:${a}}: negative size`);
      return toBase64(new Uint8Array(Number(a)));
    case "pattern": {
      if (a < 0n) return "";
      const b = new Uint8Array(Number(a));
      for (let i = 0; i < b.length; i++) b[i] = i & 0xff;
      return toBase64(b);
    }
  }
  throw new Error(`unknown macro ${name}`);
}

const VAR_RE = /\$\{(\w+)\}|\$(\w+)/gu;
const MACRO_RE = /@\{(\w+)(?::(-?\d+))?\}/gu;

/**
 * drive.py's `subst()`: replaces `$name`/`${name}` by bound values (unknown
 * names stay as written), then expands the `@{…}` macros.
 */
export function substitute(text: string, vars: Readonly<Record<string, string>>): string {
  const s = text.replace(
    VAR_RE,
    (whole, a?: string, b?: string) => {
      const name = (a ?? b)!;
      return Object.hasOwn(vars, name) ? vars[name] : whole;
    },
  );
  return s.replace(MACRO_RE, (_whole, name: string, arg?: string) => expandMacro(name, arg));
}

/** The variables drive.py predefines: `NCPU` (this host's CPU count) and `PID` (the driver's pid). */
export function defaultVars(): Record<string, string> {
  return { NCPU: String(navigator.hardwareConcurrency), PID: String(Deno.pid) };
}

/** drive.py's binding rule: the number after the first `ret=` in any line, or null. */
export function firstRet(lines: readonly string[]): string | null {
  for (const l of lines) {
    const m = /ret=(-?\d+)/.exec(l);
    if (m) return m[1];
  }
  return null;
}

/** drive.py's display rule: lines over 300 characters become their first 200 + `...(N chars)`. */
export function shorten(s: string): string {
  if (s.length <= 300) return s;
  const cps = [...s]; // Python counts code points
  return cps.length <= 300 ? s : `${cps.slice(0, 200).join("")}...(${cps.length} chars)`;
}

// ---------------------------------------------------------------- scenarios

/** Python's `str.isupper()` (some cased character, none lower case). */
function isUpper(s: string): boolean {
  return s.toUpperCase() === s && s.toLowerCase() !== s;
}

/** Python's `str.split()` (any whitespace, no empty fields). */
function pySplit(s: string): string[] {
  return s.split(/\s+/u).filter((t) => t.length > 0);
}

/** Parses a `.scn` scenario with drive.py's rules. */
export function parseScenario(text: string): ScenarioStep[] {
  const steps: ScenarioStep[] = [];
  const lines = text.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  lines.forEach((raw, i) => {
    const lineNo = i + 1;
    if (raw.trim() === "") return;
    if (raw.startsWith("#")) {
      steps.push({ kind: "comment", text: raw, lineNo });
    } else if (raw.startsWith("!sh ")) {
      steps.push({ kind: "sh", command: raw.slice(4), lineNo });
    } else if (raw.startsWith("!sleep ")) {
      const seconds = Number(pySplit(raw)[1]);
      if (!Number.isFinite(seconds)) throw new Error(`line ${lineNo}: bad !sleep: ${raw}`);
      steps.push({ kind: "sleep", seconds, lineNo });
    } else {
      const m = /^(\w+)=(.*)$/u.exec(raw);
      if (m && !isUpper(pySplit(raw)[0])) {
        steps.push({ kind: "command", template: m[2], bind: m[1], lineNo });
      } else {
        steps.push({ kind: "command", template: raw, lineNo });
      }
    }
  });
  return steps;
}

/** Options of {@link runScenario}. */
export interface RunOptions {
  /** Initial variables (default {@link defaultVars}). */
  vars?: Record<string, string>;
  /** Per-line read timeout in ms (drive.py: 30 s). */
  timeoutMs?: number;
  /** Runs a `!sh` step (default: `sh -c`, output discarded). */
  runShell?: (command: string) => Promise<void>;
  /** Runs a `!sleep` step (default: a timer). */
  sleep?: (seconds: number) => Promise<void>;
  /** Called with each transcript entry as it is produced. */
  onEntry?: (entry: TranscriptEntry) => void;
}

/** The result of {@link runScenario}. */
export interface ScenarioRun {
  /** The transcript, notes included (the final `# daemon exit status` / `# ERROR` too). */
  entries: TranscriptEntry[];
  /** Variables at the end. */
  vars: Record<string, string>;
  /** Exit status reported by the client's `close()`, if any. */
  exitStatus: number | null;
  /** Set when the session broke (the `# ERROR` note). */
  error?: string;
}

/** Runs `sh -c command`, discarding its output (drive.py's `!sh`). */
export async function runShellCommand(command: string): Promise<void> {
  await new Deno.Command("sh", {
    args: ["-c", command],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output();
}

/**
 * Runs a scenario against a client, as drive.py does: sends each command,
 * reads every line up to `END_BPFD_OUTPUT` (dropping `STARTED_BPFD`), binds
 * variables, stops after `exit`, on a read error, or at the end of the
 * scenario, then closes the client.
 */
export async function runScenario(
  scenario: string | readonly ScenarioStep[],
  client: ScenarioClient,
  opts: RunOptions = {},
): Promise<ScenarioRun> {
  const steps = typeof scenario === "string" ? parseScenario(scenario) : scenario;
  const vars: Record<string, string> = { ...(opts.vars ?? defaultVars()) };
  const entries: TranscriptEntry[] = [];
  const emit = (e: TranscriptEntry) => {
    entries.push(e);
    opts.onEntry?.(e);
  };
  const runShell = opts.runShell ?? runShellCommand;
  const sleep = opts.sleep ??
    ((s: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, s * 1000))));
  const timeoutMs = opts.timeoutMs ?? 30_000;
  let error: string | undefined;

  for (const step of steps) {
    if (step.kind === "comment") {
      emit({ kind: "note", text: step.text });
      continue;
    }
    if (step.kind === "sh") {
      await runShell(substitute(step.command, vars));
      continue;
    }
    if (step.kind === "sleep") {
      await sleep(step.seconds);
      continue;
    }
    const command = substitute(step.template, vars);
    const ex: Exchange = {
      kind: "exchange",
      command,
      template: step.template,
      lineNo: step.lineNo,
      lines: [],
    };
    if (step.bind !== undefined) ex.bind = step.bind;
    await client.write(command);
    if (pySplit(command)[0] === "exit") {
      emit(ex);
      break;
    }
    try {
      while (true) {
        const l = await client.readLine(timeoutMs);
        if (l === BANNER_LINE) continue;
        ex.lines.push(l);
        if (l === END_LINE) break;
      }
    } catch (e) {
      error = (e as Error)?.message ?? String(e);
      emit(ex);
      emit({ kind: "note", text: `# ERROR ${error}` });
      break;
    }
    emit(ex);
    if (step.bind !== undefined) {
      const r = firstRet(ex.lines);
      if (r !== null) vars[step.bind] = r;
    }
  }
  const exitStatus = await client.close();
  if (exitStatus !== null) emit({ kind: "note", text: `# daemon exit status ${exitStatus}` });
  return { entries, vars, exitStatus, error };
}

// ---------------------------------------------------------------- transcripts

/** Formats entries as transcript text (drive.py's output). */
export function formatTranscript(entries: readonly TranscriptEntry[]): string {
  const out: string[] = [];
  for (const e of entries) {
    if (e.kind === "note") {
      out.push(e.text);
      continue;
    }
    out.push(`> ${shorten(e.command)}`);
    for (const l of e.lines) out.push(`< ${shorten(l)}`);
  }
  return out.map((l) => l + "\n").join("");
}

/** A parsed transcript file. */
export interface Transcript {
  entries: TranscriptEntry[];
  /** From `# daemon exit status N`, if present. */
  exitStatus: number | null;
  /** The text of each `# ERROR …` note. */
  errors: string[];
}

/**
 * Parses transcript text (`> `, `< `, `#` lines). A bare `<` is an empty
 * received line (editors strip the trailing space). Throws on anything else.
 */
export function parseTranscript(text: string): Transcript {
  const entries: TranscriptEntry[] = [];
  const errors: string[] = [];
  let exitStatus: number | null = null;
  let cur: Exchange | null = null;
  const lines = text.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  lines.forEach((raw, i) => {
    const l = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (l.startsWith("> ") || l === ">") {
      cur = { kind: "exchange", command: l.slice(2), lines: [] };
      entries.push(cur);
    } else if (l.startsWith("< ") || l === "<") {
      if (!cur) throw new Error(`transcript line ${i + 1}: a received line before any command`);
      cur.lines.push(l.slice(2));
    } else if (l.startsWith("#")) {
      entries.push({ kind: "note", text: l });
      const m = /^# daemon exit status (-?\d+)$/.exec(l);
      if (m) exitStatus = Number(m[1]);
      if (l.startsWith("# ERROR ")) errors.push(l.slice(8));
    } else if (l.trim() !== "") {
      throw new Error(`transcript line ${i + 1}: not a transcript line: ${JSON.stringify(l)}`);
    }
  });
  return { entries, exitStatus, errors };
}

/** The exchanges of a transcript, in order. */
export function exchangesOf(entries: readonly TranscriptEntry[]): Exchange[] {
  return entries.filter((e): e is Exchange => e.kind === "exchange");
}

/**
 * Splits an exchange's lines into its response body: the lines between
 * `START_BPFD_OUTPUT` and `END_BPFD_OUTPUT`. Returns null when the lines are
 * not exactly one framed response (stray lines, missing or repeated markers).
 */
export function bodyOf(lines: readonly string[]): string[] | null {
  if (lines.length < 2 || lines[0] !== START_LINE || lines[lines.length - 1] !== END_LINE) {
    return null;
  }
  const body = lines.slice(1, -1);
  if (body.includes(START_LINE) || body.includes(END_LINE)) return null;
  return body;
}
