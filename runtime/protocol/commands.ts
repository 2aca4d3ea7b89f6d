/**
 * The command table of the BPFd protocol (the 27 commands of the original,
 * `exit`, and this runtime's extensions) and a strict line parser.
 *
 * Tokens are separated by spaces (runs collapse, tabs do not separate), the
 * command name is case-sensitive, surplus arguments are ignored (as in the
 * original), and integers are strict decimal: `0x10` and `4abc` are refused
 * instead of being read as 0 and 4.
 *
 * @example
 * ```ts
 * import { parseLine } from "./commands.ts";
 * const p = parseLine("BPF_CREATE_MAP 1 counts 4 8 16 0");
 * if (p.kind === "command") console.log(p.name, p.args); // BPF_CREATE_MAP [1, "counts", 4, 8, 16, 0]
 * ```
 * @module
 */

import { decodeBase64Bytes } from "./base64.ts";

/** Argument kinds. `u64` values are bigints (a leading `-` wraps, as in the original). */
export type ArgType = "int" | "u32" | "u64" | "str" | "b64";

/** One argument: its name (for error messages) and type. */
export interface ArgSpec {
  readonly name: string;
  readonly type: ArgType;
}

/** A command: its argument list, status label, and whether it is an extension. */
export interface CommandSpec {
  readonly args: readonly ArgSpec[];
  /** Prefix of the status line, e.g. `bpf_create_map`. */
  readonly label: string;
  /** Added by bpfpack (not in the original). */
  readonly extension?: boolean;
  /** Takes a variable tail of arguments after `args` (PERF_READER_POLL's fds). */
  readonly variadic?: ArgType;
  /** One-line description for docs and HELLO. */
  readonly help: string;
}

const a = (spec: string): ArgSpec[] =>
  spec.split(" ").filter(Boolean).map((s) => {
    const [name, type] = s.split(":");
    return { name, type: type as ArgType };
  });

/** Every command the runtime answers (except `exit`). */
export const COMMANDS: Readonly<Record<string, CommandSpec>> = {
  BPF_CREATE_MAP: {
    args: a("type:int name:str key_size:int value_size:int max_entries:int map_flags:int"),
    label: "bpf_create_map",
    help: "create a map; name __none__ means no name",
  },
  BPF_PROG_LOAD: {
    args: a("type:int name:str prog_len:int license:str kern_version:u32 insns:b64"),
    label: "bpf_prog_load",
    help: "load a program from base64 bytecode",
  },
  BPF_ATTACH_KPROBE: {
    args: a("prog_fd:int type:int ev_name:str fn_name:str"),
    label: "bpf_attach_kprobe",
    help: "attach to a kprobe (type 0) or kretprobe (type 1)",
  },
  BPF_DETACH_KPROBE: {
    args: a("ev_name:str"),
    label: "bpf_detach_kprobe",
    help: "detach the kprobe created under ev_name",
  },
  BPF_ATTACH_UPROBE: {
    args: a("prog_fd:int type:int ev_name:str binary_path:str offset:u64 pid:int"),
    label: "bpf_attach_uprobe",
    help: "attach to a uprobe at a file offset",
  },
  BPF_DETACH_UPROBE: {
    args: a("ev_name:str"),
    label: "bpf_detach_uprobe",
    help: "detach the uprobe created under ev_name",
  },
  BPF_ATTACH_TRACEPOINT: {
    args: a("prog_fd:int category:str tp_name:str"),
    label: "bpf_attach_tracepoint",
    help: "attach to a tracepoint",
  },
  BPF_DETACH_TRACEPOINT: {
    args: a("category:str tp_name:str"),
    label: "bpf_detach_tracepoint",
    help: "detach every attachment of this session to the tracepoint",
  },
  BPF_ATTACH_PERF_EVENT: {
    args: a(
      "prog_fd:int ev_type:u32 ev_config:u32 sample_period:u64 sample_freq:u64 pid:int cpu:int group_fd:int",
    ),
    label: "bpf_attach_perf_event",
    help: "open a sampling perf event and attach a program",
  },
  BPF_CLOSE_PERF_EVENT_FD: {
    args: a("fd:int"),
    label: "bpf_close_perf_event_fd",
    help: "disable and close a perf event fd of this session",
  },
  BPF_OPEN_PERF_BUFFER: {
    args: a("pid:int cpu:int page_cnt:int"),
    label: "bpf_open_perf_buffer",
    help: "open a BPF output perf buffer (reader fd)",
  },
  BPF_UPDATE_ELEM: {
    args: a("map_fd:int key:b64 klen:int value:b64 vlen:int flags:u64"),
    label: "bpf_update_elem",
    help: "update an element",
  },
  BPF_LOOKUP_ELEM: {
    args: a("map_fd:int key:b64 klen:int vlen:int"),
    label: "bpf_lookup_elem",
    help: "look an element up; prints the value",
  },
  BPF_GET_FIRST_KEY: {
    args: a("map_fd:int klen:int vlen:int dump_all:int"),
    label: "bpf_get_first_key",
    help: "first key, or (dump_all=1) every key/value pair then an empty line",
  },
  BPF_GET_NEXT_KEY: {
    args: a("map_fd:int key:b64 klen:int"),
    label: "bpf_get_next_key",
    help: "the key after key",
  },
  BPF_DELETE_ELEM: {
    args: a("map_fd:int key:b64 klen:int"),
    label: "bpf_delete_elem",
    help: "delete an element",
  },
  BPF_CLEAR_MAP: {
    args: a("map_fd:int klen:int"),
    label: "bpf_clear_map",
    help: "delete every element; ret is the count",
  },
  PERF_READER_POLL: {
    args: a("timeout_ms:int n:int"),
    variadic: "int",
    label: "perf_reader_poll",
    help: "poll readers; prints '<fd> <size> <base64>' per sample",
  },
  GET_KALLSYMS: { args: [], label: "get_kallsyms", help: "contents of /proc/kallsyms" },
  GET_KPROBES_BLACKLIST: {
    args: a("tracefs:str"),
    label: "get_kprobes_blacklist",
    help: "the kprobe blacklist",
  },
  GET_TRACE_EVENTS_CATEGORIES: {
    args: a("tracefs:str"),
    label: "get_trace_events_categories",
    help: "tracepoint categories",
  },
  GET_TRACE_EVENTS: {
    args: a("tracefs:str category:str"),
    label: "get_trace_events",
    help: "tracepoints of a category",
  },
  COMM_FOR_PID: { args: a("pid:int"), label: "comm_for_pid", help: "/proc/<pid>/comm" },
  GET_KSYM_NAME: {
    args: a("addr:u64"),
    label: "GET_KSYM_NAME",
    help: "kernel address → name;offset;module",
  },
  GET_KSYM_ADDR: { args: a("name:str"), label: "GET_KSYM_ADDR", help: "kernel symbol → address" },
  GET_USYM_NAME: {
    args: a("pid:int addr:u64 demangle:int"),
    label: "GET_USYM_NAME",
    help: "user address → name;offset;module",
  },
  GET_USYM_ADDR: {
    args: a("pid:int name:str module:str"),
    label: "GET_USYM_ADDR",
    help: "user symbol → address",
  },
  // ---- extensions (docs/protocol.md) ----
  HELLO: {
    args: [],
    variadic: "str",
    label: "hello",
    extension: true,
    help: "capabilities and target facts; enables protocol-2 features for this session",
  },
  BPF_CLOSE_FD: {
    args: a("fd:int"),
    label: "bpf_close_fd",
    extension: true,
    help: "close any fd this session created (map, program, attachment, reader)",
  },
  BPF_MAP_DUMP: {
    args: a("map_fd:int"),
    label: "bpf_map_dump",
    extension: true,
    help: "every entry in one response: lines '<n> <keys base64> <values base64>'",
  },
  GET_TRACE_EVENT_FORMAT: {
    args: a("tracefs:str category:str event:str"),
    label: "get_trace_event_format",
    extension: true,
    help: "a tracepoint's format file",
  },
  GET_CPUS: {
    args: [],
    label: "get_cpus",
    extension: true,
    help: "possible and online CPU lists",
  },
  BPF_OPEN_RING_BUFFER: {
    args: a("map_fd:int"),
    label: "bpf_open_ring_buffer",
    extension: true,
    help: "make a RINGBUF map pollable with PERF_READER_POLL (ret is its fd)",
  },
  BUNDLE_BEGIN: {
    args: a("digest:str size:int"),
    label: "bundle_begin",
    extension: true,
    help: "announce a bundle upload; answers 'have <path>' or 'send <chunk bytes>'",
  },
  BUNDLE_CHUNK: {
    args: a("digest:str offset:int data:b64"),
    label: "bundle_chunk",
    extension: true,
    help: "one chunk of an upload, in order; ret is the bytes received so far",
  },
  BUNDLE_END: {
    args: a("digest:str"),
    label: "bundle_end",
    extension: true,
    help: "finish an upload: digest checked, stored in the device cache; answers 'path <path>'",
  },
  BUNDLE_LOAD: {
    args: a("path:str"),
    variadic: "str",
    label: "bundle_load",
    extension: true,
    help:
      "load the object fitting this kernel from a bundle; options mode=, attach=, programs=, rodata.<var>=",
  },
  BPF_ATTACH_PROG: {
    args: a("prog_fd:int"),
    variadic: "str",
    label: "bpf_attach_prog",
    extension: true,
    help: "attach a bundle program by its section; options target=, pid=",
  },
  SESSION_FDS: {
    args: [],
    label: "session_fds",
    extension: true,
    help: "every fd this session holds: '<fd> <kind> <description>'",
  },
  KSYM_MATCH: {
    args: a("pattern:str"),
    variadic: "int",
    label: "ksym_match",
    extension: true,
    help: "kernel functions matching a glob (kprobe targets); optional max names (default 1000)",
  },
};

/** A parsed argument value. */
export type ArgValue = number | bigint | string;

/** Result of parsing one line. */
export type Parsed =
  | { kind: "empty" }
  | { kind: "exit" }
  | { kind: "command"; name: string; spec: CommandSpec; args: ArgValue[] }
  | { kind: "error"; name?: string; message: string };

const DEC = /^[+-]?[0-9]+$/;
/** {@link COMMANDS} for lookups by the name a client sent. */
const SPECS: ReadonlyMap<string, CommandSpec> = new Map(Object.entries(COMMANDS));

/**
 * The value of a strict decimal token (an optional sign, then digits only:
 * `0x10`, `4abc`, `1e3` are refused), or NaN. Equal to `Number(tok)` for
 * every such token of up to 15 significant digits, that is for every value
 * the int and u32 range checks can accept.
 */
function decimal(tok: string): number {
  const sign = tok.charCodeAt(0);
  let i = sign === 43 /* + */ || sign === 45 /* - */ ? 1 : 0;
  if (i === tok.length) return NaN;
  let n = 0;
  for (; i < tok.length; i++) {
    const d = tok.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return NaN;
    n = n * 10 + d;
  }
  return sign === 45 ? -n : n;
}

/**
 * The tokens of a line: separated by spaces, runs of spaces collapse, tabs
 * are not separators. (A scan rather than `split` + `filter`: every command
 * passes here, and `split` is a call into the engine's runtime.)
 */
function tokens(line: string): string[] {
  const out: string[] = [];
  for (let start = 0; start < line.length;) {
    let end = line.indexOf(" ", start);
    if (end < 0) end = line.length;
    if (end > start) out.push(line.slice(start, end));
    start = end + 1;
  }
  return out;
}

/** A client token as shown in an error message: quoted, escaped, at most 64 characters. */
export function showToken(tok: string): string {
  return JSON.stringify(tok.length > 64 ? `${tok.slice(0, 64)}…` : tok);
}
const U64 = 1n << 64n;

/** BPF_LOOKUP_ELEM's arguments as {@link parseLookupBytes} reads them. */
export interface LookupArgs {
  fd: number;
  /** The decoded key: a view valid until the next call. */
  key: Uint8Array;
  klen: number;
  vlen: number;
}

const LOOKUP_PREFIX = new TextEncoder().encode("BPF_LOOKUP_ELEM ");
const LOOKUP_KEY_MAX = 512;
/** The longest canonical line: the prefix, three 9-digit numbers, the base64 key, 3 spaces. */
const LOOKUP_LINE_MAX = LOOKUP_PREFIX.length + 3 * 9 + Math.ceil(LOOKUP_KEY_MAX / 3) * 4 + 3;
const lookupKey = new Uint8Array(LOOKUP_KEY_MAX);

/**
 * BPF_LOOKUP_ELEM read straight from a line's bytes, for the hot path: no
 * string, no token array, the key decoded on the way. Only the canonical form
 * is taken: `BPF_LOOKUP_ELEM <fd> <key> <klen> <vlen>` with single spaces,
 * unsigned decimals of 1 to 9 digits, canonical base64 of at most 512 bytes,
 * nothing after vlen. Any other line gives null and is left to
 * {@link parseLine}, which reads the canonical form to the same arguments.
 */
export function parseLookupBytes(line: Uint8Array): LookupArgs | null {
  const n = LOOKUP_PREFIX.length;
  if (line.length <= n || line.length > LOOKUP_LINE_MAX) return null;
  for (let i = 0; i < n; i++) if (line[i] !== LOOKUP_PREFIX[i]) return null;
  const fdEnd = spaceFrom(line, n);
  const keyEnd = spaceFrom(line, fdEnd + 1);
  const klenEnd = spaceFrom(line, keyEnd + 1);
  if (klenEnd >= line.length || keyEnd === fdEnd + 1) return null;
  const fd = digits(line, n, fdEnd);
  const klen = digits(line, keyEnd + 1, klenEnd);
  const vlen = digits(line, klenEnd + 1, line.length);
  if (fd < 0 || klen < 0 || vlen < 0) return null;
  const keyBytes = decodeBase64Bytes(line, fdEnd + 1, keyEnd, lookupKey);
  if (keyBytes < 0) return null;
  return { fd, key: lookupKey.subarray(0, keyBytes), klen, vlen };
}

/**
 * Index of the first space in `line` from `i`, else at least `line.length`.
 * (A loop over a short line beats `indexOf`, a call into the engine's runtime.)
 */
function spaceFrom(line: Uint8Array, i: number): number {
  while (i < line.length && line[i] !== 32) i++;
  return i;
}

/** The value of `line[start, end)` if it is 1 to 9 ASCII digits, else -1. */
function digits(line: Uint8Array, start: number, end: number): number {
  if (end <= start || end - start > 9) return -1;
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = line[i] - 48;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** Parses one argument token; returns an error message instead of throwing. */
export function parseArg(tok: string, type: ArgType): ArgValue | { error: string } {
  switch (type) {
    case "str":
    case "b64":
      return tok;
    case "int": {
      const n = decimal(tok);
      if (Number.isNaN(n)) return { error: `${showToken(tok)} is not a decimal integer` };
      if (n < -0x80000000 || n > 0x7fffffff) {
        return { error: `${showToken(tok)} is out of int range` };
      }
      return n;
    }
    case "u32": {
      const n = decimal(tok);
      if (Number.isNaN(n)) return { error: `${showToken(tok)} is not a decimal integer` };
      if (n < -0x80000000 || n > 0xffffffff) {
        return { error: `${showToken(tok)} is out of u32 range` };
      }
      return n < 0 ? n + 0x100000000 : n;
    }
    case "u64": {
      if (!DEC.test(tok)) return { error: `${showToken(tok)} is not a decimal integer` };
      const n = BigInt(tok);
      if (n < -(1n << 63n) || n >= U64) return { error: `${showToken(tok)} is out of u64 range` };
      return n < 0n ? n + U64 : n;
    }
  }
}

/**
 * Parses a command line (without its `\n`). A trailing `\r` is dropped (pty
 * clients); an empty line is `empty` (no response, as in the original); a
 * whitespace-only line is an error (the original crashed on it).
 */
export function parseLine(raw: string): Parsed {
  const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
  if (line.length === 0) return { kind: "empty" };
  const toks = tokens(line);
  if (toks.length === 0) return { kind: "error", message: "the line holds only spaces" };
  const name = toks[0];
  if (name === "exit") return { kind: "exit" };
  const spec = SPECS.get(name);
  if (!spec) {
    return {
      kind: "error",
      message: `unknown command ${showToken(name)} (send HELLO for the list)`,
    };
  }
  const want = spec.args.length;
  if (toks.length - 1 < want) {
    const usage = spec.args.map((s) => `<${s.name}>`).join(" ");
    return {
      kind: "error",
      name,
      message: `${name} needs ${want} arguments, got ${toks.length - 1}: ${name} ${usage}`,
    };
  }
  const args: ArgValue[] = [];
  for (let i = 0; i < want; i++) {
    const v = parseArg(toks[i + 1], spec.args[i].type);
    if (typeof v === "object") {
      return { kind: "error", name, message: `${name}: ${spec.args[i].name}: ${v.error}` };
    }
    args.push(v);
  }
  if (spec.variadic) {
    for (let i = want + 1; i < toks.length; i++) {
      const v = parseArg(toks[i], spec.variadic);
      if (typeof v === "object") {
        return { kind: "error", name, message: `${name}: argument ${i}: ${v.error}` };
      }
      args.push(v);
    }
  }
  return { kind: "command", name, spec, args };
}
