/**
 * Wire conformance with the original BPFd: every scenario in
 * `shared/transcripts/scenarios/` is run against our runtime and compared,
 * response by response, with the original daemon's transcript in
 * `shared/transcripts/original/`.
 *
 * Responses must be equal except for the differences listed in
 * {@link ALLOWED}, each of which is checked explicitly (never normalised away):
 * where the original says `ret=-1`, we must say `ret=-1 errno=N NAME` and
 * explain it on `error: ` lines; fds are compared through the scenario's
 * bindings; hash maps are compared as sets and their key order against our
 * own dump; activity-dependent data (perf samples, counters) and facts of this
 * host (kernel addresses, process names) are checked against this machine.
 *
 * @module
 */

import assert from "../support/assert.ts";
import { RawClient } from "../../tools/client/raw.ts";
import { COMMANDS } from "../../runtime/protocol/commands.ts";
import {
  bodyOf,
  defaultVars,
  type Exchange,
  exchangesOf,
  firstRet,
  formatTranscript,
  fromBase64,
  parseScenario,
  parseTranscript,
  runScenario,
  shorten,
  substitute,
  toBase64,
} from "../../tools/replay/scenario.ts";

const SHARED = new URL("../../../shared/", import.meta.url);
const SCENARIOS = new URL("transcripts/scenarios/", SHARED);
const ORIGINALS = new URL("transcripts/original/", SHARED);
const RUNTIME = decodeURIComponent(new URL("../../runtime/main.ts", import.meta.url).pathname);

const NOT_RECOGNIZED = "Command not recognized";
const OPEN_FAILED = "Open failed, ignoring";

/** The differences from the original that the runtime makes on purpose. */
const ALLOWED = {
  errno: "failure status lines carry ` errno=N NAME` and are followed by `error: ` lines",
  diagnostics: "`Command not recognized` / `Open failed, ignoring` are followed by `error: ` lines",
  verifier: "a verifier rejection is followed by its log on `verifier: ` lines",
  fdNumber: "fd numbers differ (the runtime's fds do not start at 3): compared by binding",
  fdInData: "fd values inside commands/responses differ: mapped through the bindings",
  foreignFd: "an fd the session did not create fails with EBADF before anything else",
  hashOrder: "hash map iteration order is per-map random: dumps compared as sets, " +
    "first/next key checked against our own dump order",
  perfSamples: "perf samples depend on system activity: format and pids checked",
  counter: "the tracepoint counter depends on system activity: checked >= the scenario's events",
  hostFacts: "kernel addresses and process names are this host's (checked against /proc)",
  tracefsLocation: "tracefs is found wherever it is mounted (debugfs not needed)",
} as const;
type Allowed = keyof typeof ALLOWED;

/**
 * The errno our runtime must report where the original failed, per scenario
 * and scenario line (template). Failures not listed only need a well-formed errno.
 */
const EXPECTED_ERRNO: Record<string, Record<string, string[]>> = {
  errors: {
    "BPF_LOOKUP_ELEM 1000 AAAAAA== 4 4": ["EBADF"],
    "BPF_UPDATE_ELEM 1000 ==== 4 AAAAAA== 4 0": ["EBADF"],
  },
  introspection: {
    "GET_KSYM_ADDR no_such_symbol_xyz": ["ENOENT"],
    "GET_KSYM_NAME 12": ["ENOENT"],
  },
  maps: {
    "BPF_UPDATE_ELEM $h @{u32:1} 4 @{u64:3} 8 1": ["EEXIST"],
    "BPF_UPDATE_ELEM $h @{u32:9} 4 @{u64:3} 8 2": ["ENOENT"],
    "BPF_LOOKUP_ELEM $h @{u32:9} 4 8": ["ENOENT"],
    "BPF_GET_NEXT_KEY $h @{u32:5} 4": ["ENOENT"],
    "BPF_GET_NEXT_KEY $h @{u32:1} 4": ["ENOENT"],
    "BPF_DELETE_ELEM $h @{u32:5} 4": ["ENOENT"],
    "BPF_GET_FIRST_KEY $h 4 8 1": ["ENOENT"],
    "BPF_LOOKUP_ELEM $a @{u32:4} 4 4": ["ENOENT"],
    "BPF_DELETE_ELEM $a @{u32:2} 4": ["EINVAL"],
    "BPF_CLEAR_MAP $a 4": ["EINVAL"],
    "BPF_CREATE_MAP 1 zero 4 4 0 0": ["EINVAL"],
    "BPF_CREATE_MAP 999 badtype 4 4 4 0": ["EINVAL"],
  },
  perf_buffer: {
    "BPF_OPEN_PERF_BUFFER -1 99 8": ["EINVAL", "ENODEV"],
  },
  progs: {
    "BPF_PROG_LOAD 20 pe_triv 16 GPL 0 @{ret0}": ["EINVAL"],
    "BPF_PROG_LOAD 1 bad 8 GPL 0 twAAAAAAAAA=": ["EINVAL"],
    "BPF_ATTACH_PERF_EVENT $pe 1 0 0 0 -1 0 -1": ["EINVAL"],
    "BPF_CLOSE_PERF_EVENT_FD 100000": ["EBADF"],
    "BPF_ATTACH_TRACEPOINT $tp nosuchcategory nosuchevent": ["ENOENT"],
  },
};

/** Failures that the kernel's verifier explains: our body must carry `verifier: ` lines. */
const VERIFIER_FAILURES: Record<string, string[]> = {
  progs: ["BPF_PROG_LOAD 1 bad 8 GPL 0 twAAAAAAAAA="],
};

/** The counter program ran at least this often (the scenario runs 5 `sh -c true`). */
const COUNTER_MIN = 5n;

/** Linux errno numbers (x86_64/arm64) for checking that N and NAME agree. */
const ERRNO: Record<string, number> = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENODATA: 61,
  EOVERFLOW: 75,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  ENOTSUPP: 524,
};

/** Commands whose success status is a new fd. */
const FD_RESULT = new Set([
  "BPF_CREATE_MAP",
  "BPF_PROG_LOAD",
  "BPF_ATTACH_KPROBE",
  "BPF_ATTACH_UPROBE",
  "BPF_ATTACH_TRACEPOINT",
  "BPF_ATTACH_PERF_EVENT",
  "BPF_OPEN_PERF_BUFFER",
]);
/** Commands that close an fd. */
const FD_CLOSE = new Set(["BPF_CLOSE_PERF_EVENT_FD", "BPF_CLOSE_FD"]);
/** Commands that change a map's contents (and so possibly its iteration order). */
const MAP_MUTATORS = new Set(["BPF_UPDATE_ELEM", "BPF_DELETE_ELEM", "BPF_CLEAR_MAP"]);
/** Map types whose iteration order is hash order (random per map). */
const HASH_MAP_TYPES = new Set([1, 5, 9, 10]);
/** Argument names that hold an fd of the session (`group_fd` -1 means none). */
const FD_ARGS = new Set(["map_fd", "prog_fd", "fd", "group_fd"]);

const b64Line = /^[A-Za-z0-9+/]+={0,2}$/;
const toks = (s: string) => s.split(" ").filter((t) => t.length > 0);

/** Where the command's fd arguments come from: a bound variable or a literal. */
interface FdArg {
  index: number;
  argName: string;
  variable?: string;
  literal?: number;
}

function fdArgs(template: string): FdArg[] {
  const t = toks(template);
  const spec = COMMANDS[t[0]];
  if (!spec) return [];
  const out: FdArg[] = [];
  const add = (i: number, argName: string) => {
    const tok = t[i];
    if (tok === undefined) return;
    const v = /^\$\{?(\w+)\}?$/.exec(tok);
    if (v) out.push({ index: i, argName, variable: v[1] });
    else if (/^-?\d+$/.test(tok)) out.push({ index: i, argName, literal: Number(tok) });
  };
  spec.args.forEach((a, i) => {
    if (FD_ARGS.has(a.name)) add(i + 1, a.name);
  });
  if (t[0] === "PERF_READER_POLL") { for (let i = 3; i < t.length; i++) add(i, "fd"); }
  return out;
}

/** One exchange, as seen from both sides. */
interface Pair {
  index: number;
  template: string;
  name: string;
  ourCmd: string;
  origCmd: string;
  ours: string[];
  orig: string[];
  lineNo?: number;
}

function explain(scn: string, p: Pair, why: string): string {
  const show = (b: string[]) =>
    b.length ? b.map((l) => `    | ${shorten(l)}`).join("\n") : "    (empty body)";
  return `${scn}.scn line ${p.lineNo ?? "?"}: \`${shorten(p.ourCmd)}\`` +
    ` (original sent \`${shorten(p.origCmd)}\`): ${why}\n` +
    `  original response:\n${show(p.orig)}\n  our response:\n${show(p.ours)}`;
}

/** Per-scenario comparison state. */
class Comparison {
  readonly seen = new Map<Allowed, number>();
  readonly origVars: Record<string, string> = defaultVars();
  readonly ourVars: Record<string, string> = defaultVars();
  /** Original fd → our fd, for every fd both sides created. */
  readonly fdMap = new Map<number, number>();
  /** Our fds currently open (created and not closed). */
  readonly live = new Set<number>();
  /** Map variable → BPF map type (from its BPF_CREATE_MAP). */
  readonly mapType = new Map<string, number>();
  /** Variables of maps written by a loaded program (their contents are live). */
  readonly programMaps = new Set<string>();
  readonly counterMaps = new Set<string>();
  readonly epoch = new Map<string, number>();
  /** Dumps (key order and pairs) per `var@epoch`, for each side. */
  readonly dumps = { ours: new Map<string, string[]>(), orig: new Map<string, string[]>() };
  readonly deferred: Array<() => void> = [];

  constructor(readonly scn: string, readonly runtimePid: number) {}

  note(kind: Allowed): void {
    this.seen.set(kind, (this.seen.get(kind) ?? 0) + 1);
  }

  fail(p: Pair, why: string): never {
    assert.fail(explain(this.scn, p, why));
  }

  /** The `error: ` (and `verifier: `) lines after a status; at least one `error: ` first. */
  checkDiagnostics(p: Pair, lines: string[], what: string): void {
    if (lines.length === 0 || !lines[0].startsWith("error: ") || lines[0].length <= 7) {
      this.fail(p, `${what} must be followed by an \`error: <reason>\` line`);
    }
    for (const l of lines) {
      if (!l.startsWith("error: ") && !l.startsWith("verifier: ")) {
        this.fail(p, `unexpected line after ${what}: ${JSON.stringify(l)}`);
      }
    }
    if (lines.some((l) => l.startsWith("verifier: "))) this.note("verifier");
  }

  /** Our failure status with errno; returns the errno name. */
  checkFailure(p: Pair, label: string, origRet: number): string {
    const m = /^(\S+): ret=(-\d+) errno=(\d+) (E[A-Z0-9]+)$/.exec(p.ours[0] ?? "");
    if (!m || m[1] !== label) {
      this.fail(p, `expected \`${label}: ret=-1 errno=<n> <NAME>\` (${ALLOWED.errno})`);
    }
    const ret = Number(m[2]);
    if (ret !== -1 && ret !== origRet) this.fail(p, `failure ret must be -1 (or ${origRet})`);
    const n = Number(m[3]);
    if (n <= 0) this.fail(p, `errno must be positive`);
    if (ERRNO[m[4]] !== undefined && ERRNO[m[4]] !== n) {
      this.fail(p, `errno ${n} is not ${m[4]} (${m[4]} is ${ERRNO[m[4]]})`);
    }
    this.checkDiagnostics(p, p.ours.slice(1), "a failure status");
    const want = EXPECTED_ERRNO[this.scn]?.[p.template];
    if (want && !want.includes(m[4])) {
      this.fail(p, `expected errno ${want.join(" or ")}, got ${m[4]}`);
    }
    if (VERIFIER_FAILURES[this.scn]?.includes(p.template)) {
      if (!p.ours.some((l) => l.startsWith("verifier: "))) {
        this.fail(p, `a verifier rejection must carry the log on \`verifier: \` lines`);
      }
    }
    this.note("errno");
    return m[4];
  }

  mapVar(template: string): string | undefined {
    return fdArgs(template).find((a) => a.argName === "map_fd")?.variable;
  }

  epochKey(v: string): string {
    return `${v}@${this.epoch.get(v) ?? 0}`;
  }

  compare(p: Pair): void {
    const spec = COMMANDS[p.name];
    const label = spec?.label ?? "";
    const fds = fdArgs(p.template);

    // 1. fds this session did not create: EBADF before anything else.
    const foreign = fds.find((a) => {
      if (a.literal !== undefined) return !(a.argName === "group_fd" && a.literal === -1);
      const v = this.ourVars[a.variable!];
      return v === undefined || Number(v) < 0;
    });
    if (foreign) {
      const want = `${label}: ret=-1 errno=9 EBADF`;
      if (p.ours[0] !== want) {
        this.fail(
          p,
          `fd argument ${foreign.argName} was not created by this session: ` +
            `expected \`${want}\` (${ALLOWED.foreignFd})`,
        );
      }
      this.checkDiagnostics(p, p.ours.slice(1), "a failure status");
      const want2 = EXPECTED_ERRNO[this.scn]?.[p.template];
      if (want2 && !want2.includes("EBADF")) this.fail(p, `expected ${want2.join("/")}`);
      this.note("foreignFd");
      return;
    }

    // 2. The original's error literals: same literals, then our explanation.
    if (p.orig.length === 1 && p.orig[0] === NOT_RECOGNIZED) {
      if (p.ours[0] !== NOT_RECOGNIZED) this.fail(p, `expected \`${NOT_RECOGNIZED}\``);
      this.checkDiagnostics(p, p.ours.slice(1), `\`${NOT_RECOGNIZED}\``);
      this.note("diagnostics");
      return;
    }
    if (p.orig.length === 2 && p.orig[0] === OPEN_FAILED && p.orig[1] === NOT_RECOGNIZED) {
      if (p.ours[0] !== OPEN_FAILED || p.ours[1] !== NOT_RECOGNIZED) {
        this.fail(p, `expected \`${OPEN_FAILED}\` then \`${NOT_RECOGNIZED}\``);
      }
      this.checkDiagnostics(p, p.ours.slice(2), `\`${NOT_RECOGNIZED}\``);
      this.note("diagnostics");
      return;
    }

    // 3. Order-dependent map reads on hash maps.
    const mv = this.mapVar(p.template);
    const isHash = mv !== undefined && HASH_MAP_TYPES.has(this.mapType.get(mv) ?? -1) &&
      !this.programMaps.has(mv);
    if (isHash && p.name === "BPF_GET_FIRST_KEY" && toks(p.ourCmd)[4] === "1") {
      // A full dump: compared as a set (an empty map's failure falls to the rules below).
      if (this.compareDump(p, mv!)) return;
    } else if (isHash && (p.name === "BPF_GET_FIRST_KEY" || p.name === "BPF_GET_NEXT_KEY")) {
      this.deferKeyCheck(p, mv!);
      return;
    }

    // 4. Activity- and host-dependent answers.
    if (p.name === "PERF_READER_POLL") return this.comparePoll(p);
    if (p.name === "BPF_LOOKUP_ELEM" && mv && this.counterMaps.has(mv) && p.orig.length === 1) {
      return this.compareCounter(p);
    }
    if (p.name === "COMM_FOR_PID" && p.orig.length === 1 && p.orig[0] !== NOT_RECOGNIZED) {
      const pid = Number(toks(p.ourCmd)[1]);
      const comm = Deno.readTextFileSync(`/proc/${pid}/comm`).replace(/\n$/, "");
      if (p.ours.length !== 1 || p.ours[0] !== comm) {
        this.fail(p, `expected /proc/${pid}/comm of this host: ${JSON.stringify(comm)}`);
      }
      if (comm !== p.orig[0]) this.note("hostFacts");
      return;
    }
    if (p.name === "GET_KSYM_ADDR" && p.orig[0] === "GET_KSYM_ADDR: ret=0") {
      const name = toks(p.ourCmd)[1];
      const addrs = kallsymsAddrs(name);
      if (addrs.length === 0) this.fail(p, `${name} is not in this host's /proc/kallsyms`);
      if (p.ours.length !== 2 || p.ours[0] !== "GET_KSYM_ADDR: ret=0") {
        this.fail(p, "expected `GET_KSYM_ADDR: ret=0` and one address line");
      }
      if (!addrs.includes(p.ours[1])) {
        this.fail(
          p,
          `address must be ${name}'s in this host's /proc/kallsyms: ${addrs.join(" or ")}`,
        );
      }
      if (p.ours[1] !== p.orig[1]) this.note("hostFacts");
      return;
    }

    // 5. Failures: ret=-1 becomes ret=-1 errno=N NAME + diagnostics.
    const fm = /^(\S+): ret=(-\d+)$/.exec(p.orig[0] ?? "");
    if (fm && p.orig.length === 1) {
      if (fm[1] !== label) this.fail(p, `original label ${fm[1]} is not ${label}`);
      this.checkFailure(p, label, Number(fm[2]));
      return;
    }

    // 6. New fds: any fd, compared by binding.
    const sm = /^(\S+): ret=(\d+)$/.exec(p.orig[0] ?? "");
    if (sm && p.orig.length === 1 && FD_RESULT.has(p.name)) {
      const m = /^(\S+): ret=(\d+)$/.exec(p.ours[0] ?? "");
      if (!m || m[1] !== sm[1] || p.ours.length !== 1) {
        this.fail(p, `expected \`${sm[1]}: ret=<new fd>\` alone`);
      }
      const fd = Number(m[2]);
      if (fd < 3) this.fail(p, `fd ${fd} is one of the runtime's stdio fds`);
      if (this.live.has(fd)) this.fail(p, `fd ${fd} is already one of this session's open fds`);
      this.fdMap.set(Number(sm[2]), fd);
      this.live.add(fd);
      if (fd !== Number(sm[2])) this.note("fdNumber");
      return;
    }

    // 7. Everything else: equal, or equal once the original's fds are mapped to ours.
    if (sameLines(p.ours, p.orig)) return;
    const mapped = p.orig.map((l) => this.translateFds(l));
    if (sameLines(p.ours, mapped)) {
      this.note("fdInData");
      return;
    }
    this.fail(p, "responses differ");
  }

  /** Replaces the original's fd values (decimal tokens, 4-byte base64 tokens) with ours. */
  translateFds(line: string): string {
    return line.split(" ").map((t) => {
      if (/^\d+$/.test(t) && this.fdMap.has(Number(t))) return String(this.fdMap.get(Number(t)));
      if (/^[A-Za-z0-9+/]{6}==$/.test(t)) {
        const b = fromBase64(t);
        const v = new DataView(b.buffer).getUint32(0, true);
        const ours = this.fdMap.get(v);
        if (ours !== undefined) {
          const o = new Uint8Array(4);
          new DataView(o.buffer).setUint32(0, ours, true);
          return toBase64(o);
        }
      }
      return t;
    }).join(" ");
  }

  /** A full dump of a hash map: same (key, value) set; returns false if not a dump. */
  compareDump(p: Pair, mv: string): boolean {
    const parse = (b: string[]): string[] | null => {
      if (b.length < 3 || b.length % 2 === 0 || b[b.length - 1] !== "") return null;
      const kv = b.slice(0, -1);
      return kv.every((l) => b64Line.test(l)) ? kv : null;
    };
    const orig = parse(p.orig);
    if (!orig) return false; // a failure (empty map): the generic rules apply
    const ours = parse(p.ours);
    if (!ours) {
      this.fail(p, "expected alternating key/value base64 lines ending with one empty line");
    }
    const pairs = (kv: string[]) => {
      const m = new Map<string, string>();
      for (let i = 0; i < kv.length; i += 2) {
        if (m.has(kv[i])) this.fail(p, `key ${kv[i]} appears twice in one dump`);
        m.set(kv[i], kv[i + 1]);
      }
      return m;
    };
    const a = pairs(orig);
    const b = pairs(ours);
    const sorted = (m: Map<string, string>) => [...m].map(([k, v]) => `${k}=${v}`).sort();
    if (JSON.stringify(sorted(a)) !== JSON.stringify(sorted(b))) {
      this.fail(p, `the dumps hold different (key, value) sets (${ALLOWED.hashOrder})`);
    }
    const key = this.epochKey(mv);
    this.dumps.ours.set(key, ours.filter((_, i) => i % 2 === 0));
    this.dumps.orig.set(key, orig.filter((_, i) => i % 2 === 0));
    this.note("hashOrder");
    return true;
  }

  /** First/next key on a hash map: checked against our own dump in the same map state. */
  deferKeyCheck(p: Pair, mv: string): void {
    const key = this.epochKey(mv);
    const label = COMMANDS[p.name].label;
    const t = toks(p.ourCmd);
    const after = p.name === "BPF_GET_NEXT_KEY" ? t[2] : null;
    const expectFrom = (order: string[]): string | null => {
      if (after === null) return order[0] ?? null;
      const i = order.indexOf(after);
      if (i < 0) return order[0] ?? null; // a missing key restarts from the first
      return order[i + 1] ?? null;
    };
    const check = (side: "ours" | "orig") => {
      const order = this.dumps[side].get(key);
      const body = side === "ours" ? p.ours : p.orig;
      if (!order) {
        // No dump of this map state to compare with: check the shape only.
        if (side === "ours" && !(body.length === 1 && b64Line.test(body[0]))) {
          const fm = /^(\S+): ret=(-\d+)$/.exec(p.orig[0] ?? "");
          this.checkFailure(p, label, fm ? Number(fm[2]) : -1);
        }
        return;
      }
      const want = expectFrom(order);
      if (want !== null) {
        if (body.length !== 1 || body[0] !== want) {
          this.fail(
            p,
            `${side === "ours" ? "our" : "the original's"} answer must be ` +
              `${want}, the key ${after === null ? "first" : `after ${after}`} in ` +
              `${side === "ours" ? "our" : "its"} own dump order [${order.join(" ")}]`,
          );
        }
      } else if (side === "ours") {
        if (!/^\S+: ret=-/.test(body[0] ?? "")) {
          this.fail(
            p,
            `${after} is the last key in our own dump order [${order.join(" ")}]: ` +
              "expected the end-of-map failure",
          );
        }
        this.checkFailure(p, label, -1);
      } else if (!/^\S+: ret=-\d+$/.test(body[0] ?? "")) {
        this.fail(p, `the original's answer should be a failure (end of its dump order)`);
      }
    };
    this.deferred.push(() => {
      check("orig");
      check("ours");
      const same = p.ours.length === p.orig.length && p.ours[0] === p.orig[0];
      if (!same) this.note("hashOrder");
    });
  }

  comparePoll(p: Pair): void {
    const ourFds = new Set(toks(p.ourCmd).slice(3).map(Number));
    const origFds = new Set(toks(p.origCmd).slice(3).map(Number));
    const pidMax = Number(Deno.readTextFileSync("/proc/sys/kernel/pid_max").trim());
    const samples = (body: string[], fds: Set<number>, side: string) =>
      body.map((l) => {
        const m = /^(\d+) 12 ([A-Za-z0-9+/]{16})$/.exec(l);
        if (!m) this.fail(p, `${side} sample line is not \`<fd> 12 <base64 of 12 bytes>\`: ${l}`);
        if (!fds.has(Number(m[1]))) this.fail(p, `${side} sample from fd ${m[1]}, not polled`);
        const b = fromBase64(m[2]);
        const dv = new DataView(b.buffer);
        const tid = dv.getUint32(0, true);
        const tgid = dv.getUint32(4, true);
        if (tid <= 0 || tgid <= 0 || tid > 4194304 || tgid > 4194304) {
          this.fail(p, `${side} sample has an implausible pid_tgid (${tgid}/${tid})`);
        }
        if (dv.getUint32(8, true) !== 0) this.fail(p, `${side} sample padding is not zero`);
        return { fd: Number(m[1]), tid, tgid };
      });
    samples(p.orig, origFds, "original");
    const ours = samples(p.ours, ourFds, "our");
    if (p.orig.length >= 3) {
      // The scenario triggered these events: they must show up.
      if (ours.length < 3) this.fail(p, `expected at least 3 samples (the scenario's cat runs)`);
      const local = new Set([this.runtimePid, Deno.pid]);
      const triggered = ours.some((s) => {
        if (local.has(s.tgid) || s.tgid > pidMax) return false;
        try {
          Deno.statSync(`/proc/${s.tgid}`);
          return false; // still running: not one of the scenario's short-lived cat processes
        } catch {
          return true;
        }
      });
      if (!triggered) {
        this.fail(p, "no sample comes from a short-lived process (the scenario's `cat` runs)");
      }
    }
    if (p.ours.join("\n") !== p.orig.join("\n")) this.note("perfSamples");
  }

  compareCounter(p: Pair): void {
    const value = (l: string | undefined, side: string) => {
      if (l === undefined || !b64Line.test(l)) this.fail(p, `${side} value is not base64`);
      const b = fromBase64(l);
      if (b.length !== 8) this.fail(p, `${side} counter is ${b.length} bytes, not 8`);
      return new DataView(b.buffer).getBigUint64(0, true);
    };
    const o = value(p.orig[0], "the original's");
    if (p.ours.length !== 1) this.fail(p, "expected exactly one value line");
    const v = value(p.ours[0], "our");
    if (o < COUNTER_MIN) this.fail(p, `the original's counter ${o} < ${COUNTER_MIN}`);
    if (v < COUNTER_MIN) {
      this.fail(
        p,
        `counter ${v} < ${COUNTER_MIN}: the program did not count the scenario's events`,
      );
    }
    if (v !== o) this.note("counter");
  }

  /** Bookkeeping after a compared exchange (bindings, fds, map state). */
  after(p: Pair, bind: string | undefined): void {
    const t = toks(p.ourCmd);
    if (bind !== undefined) {
      const o = firstRet(p.orig);
      const u = firstRet(p.ours);
      if (o !== null) this.origVars[bind] = o;
      if (u !== null) this.ourVars[bind] = u;
      if (p.name === "BPF_CREATE_MAP" && u !== null && Number(u) >= 0) {
        this.mapType.set(bind, Number(t[1]));
        this.epoch.set(bind, 0);
      }
    }
    if (p.name === "BPF_PROG_LOAD") {
      for (const m of p.template.matchAll(/@\{(counter|perfout):\$\{?(\w+)\}?\}/g)) {
        this.programMaps.add(m[2]);
        if (m[1] === "counter") this.counterMaps.add(m[2]);
      }
    }
    if (FD_CLOSE.has(p.name) && /: ret=0$/.test(p.ours[0] ?? "")) this.live.delete(Number(t[1]));
    const mv = this.mapVar(p.template);
    if (mv && MAP_MUTATORS.has(p.name)) this.epoch.set(mv, (this.epoch.get(mv) ?? 0) + 1);
  }
}

function sameLines(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((l, i) => l === b[i]);
}

let kallsyms: string | null = null;
/** Decimal addresses of `name` in this host's /proc/kallsyms (core kernel first). */
function kallsymsAddrs(name: string): string[] {
  kallsyms ??= Deno.readTextFileSync("/proc/kallsyms");
  const out: string[] = [];
  for (const line of kallsyms.split("\n")) {
    const f = line.split(/\s+/);
    if (f[2] === name) out.push(BigInt("0x" + f[0]).toString());
  }
  return out;
}

function tracefsArgMissing(cmd: string): boolean {
  const t = toks(cmd);
  if (!["GET_TRACE_EVENTS", "GET_TRACE_EVENTS_CATEGORIES"].includes(t[0]) || !t[1]) return false;
  try {
    Deno.statSync(`${t[1]}/events`);
    return false;
  } catch {
    return true;
  }
}

async function conformance(scn: string): Promise<void> {
  const steps = parseScenario(await Deno.readTextFile(new URL(`${scn}.scn`, SCENARIOS)));
  const original = parseTranscript(await Deno.readTextFile(new URL(`${scn}.txt`, ORIGINALS)));
  const client = RawClient.spawn(
    [Deno.execPath(), "run", "-A", "--no-check", RUNTIME],
    { stderr: "null" },
  );
  const runtimePid = client.child!.pid;
  const run = await runScenario(steps, client);
  const outDir = Deno.env.get("CONFORMANCE_TRANSCRIPTS");
  if (outDir) {
    await Deno.mkdir(outDir, { recursive: true });
    await Deno.writeTextFile(`${outDir}/${scn}.txt`, formatTranscript(run.entries));
  }
  assert.ok(run.error === undefined, `${scn}: the session broke: ${run.error}`);

  const ours = exchangesOf(run.entries);
  const orig = exchangesOf(original.entries);
  const cmp = new Comparison(scn, runtimePid);
  const n = Math.max(ours.length, orig.length);
  for (let i = 0; i < n; i++) {
    const u: Exchange | undefined = ours[i];
    const o: Exchange | undefined = orig[i];
    if (!u || !o) {
      assert.fail(
        `${scn}: ${ours.length} commands were run but the original transcript has ` +
          `${orig.length}; first unmatched: ${shorten((u ?? o)!.command)}`,
      );
    }
    const template = u.template!;
    // The scenario expanded with the original's bindings must give the original's command:
    // this checks the macro engine (bytecode, base64) and the pairing of exchanges.
    const origCmd = substitute(template, cmp.origVars);
    if (shorten(origCmd) !== o.command) {
      assert.fail(
        `${scn}.scn line ${u.lineNo}: expanding \`${template}\` with the original's bindings ` +
          `gives \`${shorten(origCmd)}\`, but the original sent \`${o.command}\``,
      );
    }
    const name = toks(u.command)[0];
    if (name === "exit") {
      assert.ok(u.lines.length + o.lines.length === 0, `${scn}: exit got a response`);
      continue;
    }
    const ourBody = bodyOf(u.lines);
    const origBody = bodyOf(o.lines);
    const pair: Pair = {
      index: i,
      template,
      name,
      ourCmd: u.command,
      origCmd,
      ours: ourBody ?? u.lines,
      orig: origBody ?? o.lines,
      lineNo: u.lineNo,
    };
    if (!origBody) cmp.fail(pair, "the original transcript's response is not one framed response");
    if (!ourBody) cmp.fail(pair, "our response is not exactly one START/END framed response");
    if (tracefsArgMissing(u.command)) cmp.note("tracefsLocation");
    if (u.command !== origCmd) cmp.note(/@\{\w+:\$/.test(template) ? "fdInData" : "fdNumber");
    cmp.compare(pair);
    cmp.after(pair, u.bind);
  }
  for (const check of cmp.deferred) check();
  assert.ok(
    run.exitStatus === (original.exitStatus ?? 0),
    `${scn}: runtime exit status ${run.exitStatus}, the original's ${original.exitStatus}`,
  );
  const summary = [...cmp.seen].map(([k, c]) => `${k}×${c}`).join(", ") || "none";
  console.log(`${scn}: ${ours.length} commands conform; allowed differences seen: ${summary}`);
}

function listScenarios(): string[] | string {
  try {
    return [...Deno.readDirSync(SCENARIOS)]
      .filter((e) => e.isFile && e.name.endsWith(".scn"))
      .map((e) => e.name.slice(0, -4))
      .sort();
  } catch (e) {
    return `cannot read ${decodeURIComponent(SCENARIOS.pathname)}: ${(e as Error).message}. ` +
      "The conformance tests need the shared/ directory next to the repository " +
      "(../shared, holding transcripts/scenarios/*.scn and transcripts/original/*.txt).";
  }
}

const scenarios = listScenarios();
if (typeof scenarios === "string") {
  Deno.test("conformance: shared transcripts are present", () => {
    assert.fail(scenarios);
  });
} else {
  Deno.test("conformance: shared transcripts are present", () => {
    assert.ok(scenarios.length > 0, `no scenarios in ${SCENARIOS.pathname}`);
    for (const s of scenarios) {
      try {
        Deno.statSync(new URL(`${s}.txt`, ORIGINALS));
      } catch {
        assert.fail(`scenario ${s}.scn has no original transcript ${s}.txt`);
      }
    }
  });
  for (const scn of scenarios) {
    Deno.test(`conformance: ${scn}.scn matches the original daemon`, async () => {
      await conformance(scn);
    });
  }
}
