/**
 * Seeded protocol fuzzing of one runtime process: at least 100,000 lines of
 * garbage bytes, mutated commands (from a corpus covering every command in
 * `COMMANDS`), whitespace-only lines and a few lines over `MAX_LINE`, sent
 * pipelined in batches. Every line that is not empty must get exactly one
 * framed response, in order; the process must survive until the final `exit`,
 * exit 0, and hold exactly the bpf/perf fds that `SESSION_FDS` lists.
 *
 * Safe by construction: attach commands always name an fd the session did not
 * create and a target that does not exist, polls never block (timeout 0), map
 * sizes are bounded, and `exit` is only sent at the end.
 *
 * Environment: `FUZZ_SEED` (default 0x5eed2024), `FUZZ_LINES` (default 100000).
 *
 * @module
 */

import assert from "../support/assert.ts";
import { RawClient } from "../../tools/client/raw.ts";
import { COMMANDS } from "../../runtime/protocol/commands.ts";
import { END, MAX_LINE, NOT_RECOGNIZED, START } from "../../runtime/protocol/framing.ts";
import { counterProgram, ret0Program, toBase64 } from "../../tools/replay/scenario.ts";

const RUNTIME = decodeURIComponent(new URL("../../runtime/main.ts", import.meta.url).pathname);
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 0x5eed2024) >>> 0 || 1;
const TOTAL = Math.max(1, Number(Deno.env.get("FUZZ_LINES") ?? 100_000));
const BATCH = 500;
/** Most live session fds the fuzzer lets accumulate before closing some. */
const MAX_LIVE = 48;
/** Upper bound of a map's key/value size and max_entries, and of its total data. */
const MAP_LIMIT = 4096;
const MAP_BYTES = 1 << 20;
const LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6";
const TRACEFS = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing", "/nonexistent/tracing"];

// ---------------------------------------------------------------- PRNG

/** xorshift32: small, fast and reproducible from the printed seed. */
class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0 || 1;
  }
  u32(): number {
    let x = this.#s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s;
  }
  /** 0 ≤ n < max. */
  int(max: number): number {
    return Math.floor((this.u32() / 0x100000000) * max);
  }
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

// ---------------------------------------------------------------- what the session holds

interface MapFd {
  type: number;
  ks: number;
  vs: number;
}

/** The fuzzer's view of the session's fds (from responses), to pick plausible arguments. */
class State {
  maps = new Map<number, MapFd>();
  progs = new Set<number>();
  readers = new Set<number>();
  other = new Set<number>();

  all(): number[] {
    return [...this.maps.keys(), ...this.progs, ...this.readers, ...this.other];
  }
  forget(fd: number): void {
    this.maps.delete(fd);
    this.progs.delete(fd);
    this.readers.delete(fd);
    this.other.delete(fd);
  }
}

// ---------------------------------------------------------------- corpus

const SPECIAL_NUMS = [
  "0x10",
  "4abc",
  "-1",
  "2147483648",
  "99999999999999999999",
  "-0",
  "+5",
  "007",
  "1e3",
  "-2147483649",
  "18446744073709551616",
  "٣",
  "0",
];
const BAD_B64 = ["====", "!!!!", "A", "AAA", "AA=A", "@@==", "A===", "QQ", "AAAAAA==AAAA", "A\tA="];
/** fds that can never be the session's: attach commands always use one of these. */
const INVALID_FDS = ["-1", "99999999", "1000000", "2147483647", "-2147483648", "0", "1", "2"];

function b64(rng: Rng, n: number): string {
  return toBase64(rng.bytes(n));
}

/** Plausible command lines (as tokens) for each command of COMMANDS. */
function corpusLine(rng: Rng, st: State, name: string, ctx: { pid: number }): string[] {
  const maps = [...st.maps.keys()];
  const anyFd = () => {
    const all = st.all();
    return all.length && rng.chance(0.8) ? String(rng.pick(all)) : rng.pick(INVALID_FDS);
  };
  const mapFd = () => maps.length && rng.chance(0.85) ? String(rng.pick(maps)) : anyFd();
  const sizes = (fd: string) => st.maps.get(Number(fd)) ?? { type: 1, ks: 4, vs: 8 };
  const readerFd = () =>
    st.readers.size && rng.chance(0.85) ? String(rng.pick([...st.readers])) : anyFd();
  const tracefs = () => rng.pick(TRACEFS);
  switch (name) {
    case "BPF_CREATE_MAP": {
      const type = rng.pick([1, 1, 2, 2, 4, 5, 6, 7, 9, 27, 0, 3, 31, 999]);
      if (type === 27) return [name, "27", "rb", "0", "0", rng.pick(["4096", "4095", "8192"]), "0"];
      return [
        name,
        String(type),
        rng.pick(["fz", "__none__", "a_long_map_name_over_15", "x-y", "名前", "m"]),
        String(rng.pick([4, 4, 8, 1, 16, 0, 64])),
        String(rng.pick([4, 8, 8, 1, 16, 0, 1016])),
        String(rng.pick([1, 4, 16, 256, 4096, 0])),
        String(rng.pick([0, 0, 0, 1, 2, 4, 1024])),
      ];
    }
    case "BPF_PROG_LOAD": {
      const kind = rng.int(4);
      let insns: Uint8Array;
      if (kind === 0) insns = ret0Program();
      else if (kind === 1) {
        insns = counterProgram(maps.length ? rng.pick(maps) : 99999);
      } else if (kind === 2) insns = rng.bytes(8 * (1 + rng.int(16)));
      else insns = new Uint8Array(0);
      return [
        name,
        String(rng.pick([1, 2, 5, 7, 20, 0, 999])),
        rng.pick(["fz_prog", "__none__", "p"]),
        String(insns.length),
        rng.pick(["GPL", "MIT", "Dual_BSD/GPL"]),
        rng.pick(["0", "264721", "-1"]),
        insns.length ? toBase64(insns) : "====",
      ];
    }
    case "BPF_ATTACH_KPROBE":
      return [name, rng.pick(INVALID_FDS), rng.pick(["0", "1"]), "p_fz_nosuch", "fz_no_such_fn"];
    case "BPF_DETACH_KPROBE":
    case "BPF_DETACH_UPROBE":
      return [name, rng.pick(["p_fz_nosuch", "r_fz_nosuch", "p_do_sys_open"])];
    case "BPF_ATTACH_UPROBE":
      return [
        name,
        rng.pick(INVALID_FDS),
        rng.pick(["0", "1"]),
        "p_fz",
        "/nonexistent/fz/lib.so",
        rng.pick(["873696", "0", "-1"]),
        rng.pick(["-1", "1"]),
      ];
    case "BPF_ATTACH_TRACEPOINT":
      return [name, rng.pick(INVALID_FDS), "fz_nosuch_category", "fz_nosuch_event"];
    case "BPF_DETACH_TRACEPOINT":
      return [name, rng.pick(["syscalls", "fz_nosuch_category"]), "sys_enter_openat"];
    case "BPF_ATTACH_PERF_EVENT":
      return [name, rng.pick(INVALID_FDS), "1", "0", "0", "49", "-1", "0", "-1"];
    case "BPF_CLOSE_PERF_EVENT_FD":
      return [name, rng.chance(0.5) ? readerFd() : anyFd()];
    case "BPF_OPEN_PERF_BUFFER":
      return [name, "-1", rng.pick(["0", "1", "99", "-1"]), rng.pick(["1", "2", "8", "3", "0"])];
    case "BPF_UPDATE_ELEM": {
      const fd = mapFd();
      const m = sizes(fd);
      const v = m.type === 4 ? 4 : m.vs;
      const value = m.type === 4 && st.readers.size
        ? (() => {
          const b = new Uint8Array(4);
          new DataView(b.buffer).setUint32(0, rng.pick([...st.readers]), true);
          return toBase64(b);
        })()
        : b64(rng, v);
      return [
        name,
        fd,
        m.type === 2 || m.type === 4
          ? toBase64(new Uint8Array([rng.int(5), 0, 0, 0]))
          : b64(rng, m.ks),
        String(m.ks),
        value,
        String(v),
        rng.pick(["0", "0", "1", "2", "3"]),
      ];
    }
    case "BPF_LOOKUP_ELEM": {
      const fd = mapFd();
      const m = sizes(fd);
      return [name, fd, b64(rng, m.ks), String(m.ks), String(m.vs)];
    }
    case "BPF_GET_FIRST_KEY": {
      const fd = mapFd();
      const m = sizes(fd);
      return [name, fd, String(m.ks), String(m.vs), rng.pick(["0", "1", "2"])];
    }
    case "BPF_GET_NEXT_KEY":
    case "BPF_DELETE_ELEM": {
      const fd = mapFd();
      const m = sizes(fd);
      return [name, fd, b64(rng, m.ks), String(m.ks)];
    }
    case "BPF_CLEAR_MAP": {
      const fd = mapFd();
      return [name, fd, String(sizes(fd).ks)];
    }
    case "PERF_READER_POLL": {
      const n = rng.int(4);
      const fds = Array.from({ length: n }, readerFd);
      return [name, "0", String(rng.chance(0.9) ? n : rng.int(8)), ...fds];
    }
    case "GET_KALLSYMS":
    case "GET_CPUS":
    case "SESSION_FDS":
      return [name];
    case "GET_KPROBES_BLACKLIST":
    case "GET_TRACE_EVENTS_CATEGORIES":
      return [name, tracefs()];
    case "GET_TRACE_EVENTS":
      return [
        name,
        tracefs(),
        rng.pick(["sched", "raw_syscalls", "fz_nosuch", "..", "../..", "syscalls"]),
      ];
    case "GET_TRACE_EVENT_FORMAT":
      return [
        name,
        tracefs(),
        rng.pick(["sched", "raw_syscalls", "..", "fz_nosuch"]),
        rng.pick(["sched_switch", "sys_enter", "..", "fz_nosuch"]),
      ];
    case "COMM_FOR_PID":
      return [name, String(rng.pick([1, ctx.pid, -1, 0, 999999999]))];
    case "GET_KSYM_NAME":
      return [name, rng.pick(["18446744071585880144", "12", "0", "-1", "18446744073709551615"])];
    case "GET_KSYM_ADDR":
      return [name, rng.pick(["vfs_read", "fz_no_such_symbol", "_text"])];
    case "GET_USYM_NAME":
      return [name, String(rng.pick([1, ctx.pid, -1, 999999999])), "4198400", rng.pick(["0", "1"])];
    case "GET_USYM_ADDR":
      return [
        name,
        String(rng.pick([ctx.pid, 1, -1, 999999999])),
        rng.pick(["nanosleep", "fz_nosuch"]),
        rng.pick([LIBC, "/nonexistent/lib.so", "libc"]),
      ];
    case "HELLO":
      return [name, ...(rng.chance(0.5) ? ["fuzz", "1"] : [])];
    case "BPF_CLOSE_FD":
      return [name, anyFd()];
    case "BPF_MAP_DUMP":
      return [name, mapFd()];
    case "BPF_OPEN_RING_BUFFER":
      return [name, mapFd()];
  }
  return [name];
}

/** Weights of the corpus commands (GET_KALLSYMS is 5 MB: rare and capped). */
function weightOf(name: string): number {
  if (name === "GET_KALLSYMS") return 0.05;
  if (name.startsWith("GET_USYM")) return 0.3;
  if (name === "GET_TRACE_EVENTS" || name === "SESSION_FDS") return 0.5;
  if (name.startsWith("BPF_") && /ELEM|KEY|MAP|PROG|PERF/.test(name)) return 2;
  return 1;
}

function mutate(rng: Rng, toks: string[]): string[] {
  const t = [...toks];
  const n = 1 + rng.int(3);
  for (let k = 0; k < n && t.length; k++) {
    const i = rng.int(t.length);
    switch (rng.int(10)) {
      case 0:
        t.splice(i, 1);
        break;
      case 1:
        t.splice(i, 0, t[i]);
        break;
      case 2: {
        const j = rng.int(t.length);
        [t[i], t[j]] = [t[j], t[i]];
        break;
      }
      case 3:
      case 4:
        if (i > 0) t[i] = rng.pick(SPECIAL_NUMS);
        break;
      case 5:
        if (i > 0) t[i] = rng.pick(BAD_B64);
        break;
      case 6:
        t[i] = rng.pick([t[i].toLowerCase(), t[i] + "\t", "\0" + t[i], t[i] + "\r", t[i] + "x"]);
        break;
      case 7:
        t.push(...Array.from({ length: 1 + rng.int(3) }, () => rng.pick(SPECIAL_NUMS)));
        break;
      case 8:
        t[i] = t[i].repeat(1 + rng.int(4));
        break;
      case 9:
        // A very long token, now and then (they are big: keep the total volume sane).
        if (i > 0 && rng.chance(0.05)) t[i] = "A".repeat(1000 + rng.int(100_000));
        break;
    }
  }
  return t;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The runtime's tokenisation: drop one trailing `\r`, split on spaces only. */
function tokensOf(line: string): string[] {
  const l = line.endsWith("\r") ? line.slice(0, -1) : line;
  return l.split(" ").filter((t) => t.length > 0);
}

/**
 * Makes a generated line safe to send: never `exit`; attach commands name an
 * fd the session cannot own and nonexistent targets; polls never block; map
 * sizes are bounded; perf buffers stay small. Returns the line to send.
 */
function sanitize(rng: Rng, line: string, st: State): string {
  const t = tokensOf(line);
  if (t.length === 0) return line;
  const cr = line.endsWith("\r") ? "\r" : "";
  const name = t[0];
  const dec32 = (s: string | undefined) =>
    s !== undefined && /^[+-]?[0-9]+$/.test(s) ? Number(s) : null;
  const rebuild = () => t.join(" ") + cr;
  if (name === "exit") {
    t[0] = "exit_not";
    return rebuild();
  }
  if (name.startsWith("BPF_ATTACH_")) {
    // Never attach anything: an fd the session does not own, and no real target.
    const owned = new Set(st.all());
    if (t.length > 1) t[1] = rng.pick(INVALID_FDS.filter((f) => !owned.has(Number(f))));
    for (let i = 2; i < t.length; i++) {
      if (/^[A-Za-z_/.]/.test(t[i]) && !/^p_fz|^r_fz|^fz_|^\/nonexistent/.test(t[i])) {
        t[i] = "fz_nosuch_" + i;
      }
    }
    return rebuild();
  }
  if (name === "PERF_READER_POLL" && t.length > 1) {
    const v = dec32(t[1]);
    if (v !== null && v !== 0) t[1] = "0";
    return rebuild();
  }
  if (name === "BPF_CREATE_MAP") {
    const ks = dec32(t[3]);
    const vs = dec32(t[4]);
    const max = dec32(t[5]);
    if (ks !== null && ks > MAP_LIMIT) t[3] = String(4);
    if (vs !== null && vs > MAP_LIMIT) t[4] = String(8);
    const k = Math.max(0, dec32(t[3]) ?? 0);
    const v = Math.max(0, dec32(t[4]) ?? 0);
    if (max !== null) {
      let m = Math.min(max, MAP_LIMIT);
      if (m > 0 && m * (k + v + 64) > MAP_BYTES) {
        m = Math.max(1, Math.floor(MAP_BYTES / (k + v + 64)));
      }
      if (m !== max) t[5] = String(m);
    }
    return rebuild();
  }
  if (name === "BPF_OPEN_PERF_BUFFER" && t.length > 3) {
    const p = dec32(t[3]);
    if (p !== null && p > 64) t[3] = "8";
    return rebuild();
  }
  return line;
}

/** Random bytes without `\n`; some start with a UTF-8 BOM (which must not be dropped). */
function garbage(rng: Rng): Uint8Array {
  const r = rng.int(100);
  const len = r < 70 ? rng.int(65) : r < 97 ? 64 + rng.int(2000) : 2000 + rng.int(200_000);
  const b = new Uint8Array(len);
  const mode = rng.int(3);
  for (let i = 0; i < len; i++) {
    let c: number;
    if (mode === 0) c = rng.u32() & 0xff;
    else if (mode === 1) c = rng.chance(0.9) ? 32 + rng.int(95) : rng.pick([0, 9, 13, 0x80, 0xff]);
    else c = rng.pick([32, 9, 13, 0, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 65, 66, 61]);
    b[i] = c === 10 ? 13 : c;
  }
  if (len >= 3 && rng.chance(0.02)) b.set([0xef, 0xbb, 0xbf]);
  return b;
}

const WHITESPACE = [" ", "   ", "\t", " \t ", "\r", "", " \r", "\r\r", "\t\r", " ".repeat(5000)];

/** One line of the stream: its bytes (no `\n`) and a short description for messages. */
interface Line {
  bytes: Uint8Array;
  text: string;
  /** Expected to get a response. */
  answered: boolean;
  /** Command name if its first token is one (else the response must be `Command not recognized`). */
  command?: string;
}

function lineOf(bytes: Uint8Array): Line {
  const text = dec.decode(bytes);
  const stripped = bytes.length && bytes[bytes.length - 1] === 13 ? bytes.length - 1 : bytes.length;
  const name = tokensOf(text)[0];
  return {
    bytes,
    text,
    answered: stripped > 0,
    command: name !== undefined && Object.hasOwn(COMMANDS, name) ? name : undefined,
  };
}

// ---------------------------------------------------------------- the session

/** Reads one framed response strictly: START, body, END; nothing else in between. */
async function readFramed(c: RawClient, banner: { seen: boolean }): Promise<string[]> {
  let l = await c.readLine(60_000);
  if (!banner.seen && l === "STARTED_BPFD") {
    banner.seen = true;
    l = await c.readLine(60_000);
  }
  if (l !== START) assert.fail(`expected ${START}, got ${JSON.stringify(l.slice(0, 200))}`);
  const body: string[] = [];
  for (l = await c.readLine(60_000); l !== END; l = await c.readLine(60_000)) {
    if (l === START) assert.fail(`${START} inside a response`);
    body.push(l);
  }
  return body;
}

const show = (s: string) => JSON.stringify(s.length > 160 ? `${s.slice(0, 160)}…(${s.length})` : s);

/** bpf/perf anon-inode fds of a process, by fd. */
function bpfFdsOf(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    let t: string;
    try {
      t = Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`);
    } catch {
      continue;
    }
    if (/^anon_inode:(bpf|\[perf_event\]|btf|\[bpf)/.test(t)) out.set(Number(e.name), t);
  }
  return out;
}

/** Non-bpf fds that point at files (not Deno's own caches or /dev/null). */
function fileFdsOf(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const t = Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`);
      if (t.startsWith("/") && !t.includes("/.cache/deno/") && t !== "/dev/null") {
        out.set(Number(e.name), t);
      }
    } catch { /* closed meanwhile */ }
  }
  return out;
}

const KIND_INODE: Record<string, RegExp> = {
  map: /^anon_inode:bpf-map$/,
  prog: /^anon_inode:bpf-prog$/,
  perf_reader: /^anon_inode:\[perf_event\]$/,
  attachment: /^anon_inode:(\[perf_event\]|bpf_link)$/,
  link: /^anon_inode:bpf_link$/,
  btf: /^anon_inode:btf$/,
};

function parseSessionFds(body: string[]): Map<number, string> {
  const m = /^session_fds: ret=(\d+)$/.exec(body[0] ?? "");
  assert.ok(m, `SESSION_FDS answered ${show(body.join(" | "))}`);
  assert.ok(
    body.length === Number(m[1]) + 1,
    `SESSION_FDS: ret=${m[1]} but ${body.length - 1} lines`,
  );
  const out = new Map<number, string>();
  for (const l of body.slice(1)) {
    const r = /^(\d+) (\S+)/.exec(l);
    assert.ok(r, `SESSION_FDS line ${show(l)} is not "<fd> <kind> ..."`);
    out.set(Number(r[1]), r[2]);
  }
  return out;
}

/** Learns fds created/closed from a command and its response. */
function learn(st: State, line: Line, body: string[]): void {
  if (!line.command) return;
  const t = tokensOf(line.text);
  const ret = /^\S+: ret=(-?\d+)$/.exec(body[0] ?? "");
  if (!ret || Number(ret[1]) < 0) return;
  const fd = Number(ret[1]);
  switch (line.command) {
    case "BPF_CREATE_MAP":
      st.maps.set(fd, { type: Number(t[1]), ks: Number(t[3]), vs: Number(t[4]) });
      break;
    case "BPF_PROG_LOAD":
      st.progs.add(fd);
      break;
    case "BPF_OPEN_PERF_BUFFER":
      st.readers.add(fd);
      break;
    case "BPF_CLOSE_FD":
    case "BPF_CLOSE_PERF_EVENT_FD":
      st.forget(Number(t[1]));
      break;
    default:
      if (line.command.startsWith("BPF_ATTACH_")) {
        assert.fail(
          `an attach succeeded (${show(line.text)} → ${show(body.join(" | "))}): ` +
            "the fuzzer must never attach",
        );
      }
  }
}

/** Outcome counts per command name (`?` for lines that are not commands). */
type Stats = Map<string, { ok: number; failed: number; refused: number }>;

function count(stats: Stats, line: Line, body: string[]): void {
  const k = line.command ?? "?";
  let c = stats.get(k);
  if (!c) stats.set(k, c = { ok: 0, failed: 0, refused: 0 });
  if (body[0] === NOT_RECOGNIZED || body[1] === NOT_RECOGNIZED) c.refused++;
  else if (/^\S+: ret=-\d+/.test(body[0] ?? "")) c.failed++;
  else c.ok++;
}

/** Generic checks on one response (the runtime's response contract). */
function checkResponse(line: Line, body: string[], problems: string[]): void {
  const where = () => `${show(line.text)} → ${show(body.slice(0, 4).join(" | "))}`;
  if (!line.command) {
    if (body[0] !== NOT_RECOGNIZED || !body[1]?.startsWith("error: ")) {
      problems.push(`not a command, but not "Command not recognized" + error: ${where()}`);
    }
    return;
  }
  const label = COMMANDS[line.command].label;
  const st = /^([^:\s]+): ret=(-?\d+)(.*)$/.exec(body[0] ?? "");
  if (st) {
    if (st[1] !== label) problems.push(`status label ${st[1]} is not ${label}: ${where()}`);
    if (Number(st[2]) < 0) {
      if (!/^ errno=\d+ E[A-Z0-9]+$/.test(st[3]) || !body[1]?.startsWith("error: ")) {
        problems.push(`failure without errno or error: line: ${where()}`);
      }
    } else if (st[3] !== "") problems.push(`success status with a suffix: ${where()}`);
  }
  for (const l of body) {
    if (l.startsWith("error: internal error")) {
      problems.push(`internal error (an unexpected exception in the runtime): ${where()}`);
      break;
    }
  }
}

Deno.test({
  name: `fuzz: ${TOTAL} lines to one runtime (seed 0x${SEED.toString(16)})`,
  fn: async () => {
    console.log(`fuzz seed 0x${SEED.toString(16)} (FUZZ_SEED=${SEED}), ${TOTAL} lines`);
    const rng = new Rng(SEED);
    const t0 = performance.now();
    const client = RawClient.spawn([Deno.execPath(), "run", "-A", "--no-check", RUNTIME], {
      stderr: "null",
      timeoutMs: 60_000,
    });
    const pid = client.child!.pid;
    let exited = false;
    client.child!.status.then(() => exited = true);
    const banner = { seen: false };
    const st = new State();
    const problems: string[] = [];
    const stats: Stats = new Map();
    let sent = 0;
    let answered = 0;
    let bytesSent = 0;
    let kallsyms = 0;
    let bigLines = 0;
    const names = Object.keys(COMMANDS);
    const weights = names.map(weightOf);
    const wsum = weights.reduce((a, b) => a + b, 0);
    const pickName = () => {
      let x = rng.u32() / 0x100000000 * wsum;
      for (let i = 0; i < names.length; i++) if ((x -= weights[i]) < 0) return names[i];
      return names[names.length - 1];
    };
    const ctx = { pid };

    /** Sends lines in one write while reading their responses; checks count and order. */
    const exchange = async (lines: Line[], label: string): Promise<string[][]> => {
      const total = lines.reduce((n, l) => n + l.bytes.length + 1, 0);
      const buf = new Uint8Array(total);
      let o = 0;
      for (const l of lines) {
        buf.set(l.bytes, o);
        o += l.bytes.length;
        buf[o++] = 10;
      }
      bytesSent += total;
      sent += lines.length;
      const w = client.writeRaw(buf);
      const bodies: string[][] = [];
      const expected = lines.filter((l) => l.answered);
      try {
        for (const l of expected) {
          const body = await readFramed(client, banner);
          bodies.push(body);
          checkResponse(l, body, problems);
          count(stats, l, body);
          learn(st, l, body);
        }
        await w;
      } catch (e) {
        const i = bodies.length;
        assert.fail(
          `${label}: after ${answered + i} responses (${
            exited ? "the runtime EXITED" : "runtime alive"
          }): ` +
            `${(e as Error).message}; last lines sent: ` +
            expected.slice(Math.max(0, i - 3), i + 1).map((l) => show(l.text)).join(", "),
        );
      }
      answered += bodies.length;
      return bodies;
    };
    const textLine = (s: string) => lineOf(enc.encode(s));

    // Set-up: a few real resources for the corpus to use.
    const setup = [
      "BPF_CREATE_MAP 1 fz_hash 4 8 64 0",
      "BPF_CREATE_MAP 2 fz_arr 4 8 4 0",
      "BPF_CREATE_MAP 4 fz_events 4 4 2 0",
      "BPF_CREATE_MAP 5 fz_pcpu 4 8 16 0",
      "BPF_CREATE_MAP 27 fz_ring 0 0 4096 0",
      "BPF_OPEN_PERF_BUFFER -1 0 8",
      "BPF_OPEN_PERF_BUFFER -1 1 8",
      `BPF_PROG_LOAD 1 fz_ret0 16 GPL 0 ${toBase64(ret0Program())}`,
    ].map(textLine);
    await exchange(setup, "set-up");
    assert.ok(st.maps.size === 5 && st.readers.size >= 1, "set-up failed");
    const fileFdsBefore = fileFdsOf(pid);

    const batches = Math.ceil(TOTAL / BATCH);
    const bigAt = new Set([Math.floor(batches / 3), Math.floor((2 * batches) / 3)]);
    for (let b = 0; b < batches; b++) {
      const lines: Line[] = [];
      // Keep the kernel objects bounded: close surplus fds first.
      const live = st.all();
      if (live.length > MAX_LIVE) {
        for (let i = 0; i < live.length - MAX_LIVE / 2; i++) {
          const fd = live.splice(rng.int(live.length), 1)[0];
          lines.push(textLine(`BPF_CLOSE_FD ${fd}`));
        }
      }
      const n = Math.min(BATCH, TOTAL - b * BATCH);
      while (lines.length < n) {
        const r = rng.int(100);
        let line: Line;
        if (r < 20) {
          line = lineOf(garbage(rng));
          if (line.command || tokensOf(line.text)[0] === "exit") continue;
        } else if (r < 25) {
          line = textLine(rng.pick(WHITESPACE));
        } else {
          let name = pickName();
          if (name === "GET_KALLSYMS" && kallsyms >= 2) name = "GET_CPUS";
          let toks = corpusLine(rng, st, name, ctx);
          if (r >= 45) toks = mutate(rng, toks);
          const sep = rng.chance(0.1) ? "  " : " ";
          let s = (rng.chance(0.05) ? " " : "") + toks.join(sep) +
            (rng.chance(0.05) ? "\r" : rng.chance(0.03) ? " " : "");
          s = sanitize(rng, s, st);
          line = textLine(s);
          if (line.command === "GET_KALLSYMS") kallsyms++;
        }
        lines.push(line);
      }
      await exchange(lines, `batch ${b}`);
      if (bigAt.has(b)) {
        // Over-limit lines (one looking like a command), then a command to check the stream.
        const big: Line[] = [];
        const n = MAX_LINE + (bigLines === 0 ? 10 : 1);
        const bytes = new Uint8Array(n).fill(0x41);
        const prefix = enc.encode(`BPF_UPDATE_ELEM ${[...st.maps.keys()][0] ?? 3} `);
        bytes.set(prefix);
        if (bigLines === 1) bytes[n - 1] = 13;
        big.push({ bytes, text: `<${n}-byte line>`, answered: true });
        big.push(textLine("GET_CPUS"));
        if (bigLines === 0) {
          // Exactly MAX_LINE bytes is accepted (and is not a command).
          big.push({
            bytes: new Uint8Array(MAX_LINE).fill(0x58),
            text: "<MAX_LINE X>",
            answered: true,
          });
        }
        const bodies = await exchange(big, `over-limit lines`);
        assert.ok(
          bodies[0][0] === NOT_RECOGNIZED && /longer than the limit/.test(bodies[0][1] ?? ""),
          `a ${n}-byte line must be refused as too long, got ${show(bodies[0].join(" | "))}`,
        );
        assert.ok(bodies[1][0] === "get_cpus: ret=0", `after an over-limit line: ${bodies[1][0]}`);
        if (bigLines === 0) {
          assert.ok(
            bodies[2][0] === NOT_RECOGNIZED && /unknown command/.test(bodies[2][1] ?? ""),
            `a line of exactly MAX_LINE bytes must be parsed: ${show(bodies[2].join(" | "))}`,
          );
        }
        bigLines++;
      }
    }
    assert.ok(!exited, "the runtime exited before the final exit");
    const elapsed = (performance.now() - t0) / 1000;

    // fd accounting: SESSION_FDS must list exactly the bpf/perf fds the process holds.
    const [listing] = await exchange([textLine("SESSION_FDS")], "SESSION_FDS");
    const session = parseSessionFds(listing);
    const held = bpfFdsOf(pid);
    for (const [fd, inode] of held) {
      assert.ok(
        session.has(fd),
        `fd ${fd} (${inode}) is held by the runtime but not in SESSION_FDS`,
      );
      const re = KIND_INODE[session.get(fd)!];
      assert.ok(!re || re.test(inode), `fd ${fd} is listed as ${session.get(fd)} but is ${inode}`);
    }
    for (const [fd, kind] of session) {
      assert.ok(
        held.has(fd),
        `SESSION_FDS lists fd ${fd} (${kind}) but the process does not hold it`,
      );
    }
    const closes = await exchange(
      [...session.keys()].map((fd) => textLine(`BPF_CLOSE_FD ${fd}`)),
      "closing every session fd",
    );
    closes.forEach((b, i) =>
      assert.ok(b[0] === "bpf_close_fd: ret=0", `BPF_CLOSE_FD ${[...session.keys()][i]}: ${b[0]}`)
    );
    const left = bpfFdsOf(pid);
    assert.ok(
      left.size === 0,
      `after closing every listed fd the runtime still holds ${
        [...left].map(([f, t]) => `${f}=${t}`)
      }`,
    );
    const [empty] = await exchange([textLine("SESSION_FDS")], "SESSION_FDS");
    assert.ok(empty[0] === "session_fds: ret=0", `SESSION_FDS after closing all: ${empty[0]}`);
    const fileFdsAfter = fileFdsOf(pid);
    const newFiles = [...fileFdsAfter].filter(([fd, t]) => fileFdsBefore.get(fd) !== t);
    assert.ok(newFiles.length === 0, `file fds leaked: ${newFiles.map(([f, t]) => `${f}=${t}`)}`);

    // The end: exit, nothing more on stdout, status 0.
    await client.write("exit");
    let extra: string | null = null;
    try {
      extra = await client.readLine(30_000);
    } catch { /* EOF: expected */ }
    assert.ok(extra === null, `output after exit: ${show(extra ?? "")}`);
    const code = await client.close();
    assert.ok(code === 0, `the runtime exited with ${code}`);

    console.log(
      `fuzz: ${sent} lines (${(bytesSent / 1e6).toFixed(1)} MB, ${bigLines} over MAX_LINE), ` +
        `${answered} responses, ${session.size} fds listed and closed at the end; ` +
        `${elapsed.toFixed(1)} s, ${Math.round(sent / elapsed)} lines/s`,
    );
    const row = ([k, c]: [string, { ok: number; failed: number; refused: number }]) =>
      `${k} ${c.ok}/${c.failed}/${c.refused}`;
    console.log(
      "outcomes per command (succeeded/failed with errno/not recognized):\n  " +
        [...stats].sort(([a], [b]) => a.localeCompare(b)).map(row).join(", "),
    );
    if (problems.length) {
      assert.fail(
        `${problems.length} responses break the runtime's response contract; first ones:\n  ` +
          problems.slice(0, 15).join("\n  "),
      );
    }
  },
});
