/**
 * The typed bpfd client: target facts, maps, bundles, perf and ring buffers, symbols, over any
 * `RawClient` (any transport). Failed commands throw {@link BpfdError} with the errno and the
 * runtime's `error:` text; answers of an unexpected shape throw {@link ProtocolError}.
 *
 * Round trips are what a remote session pays for, so the client pipelines where it can: opening
 * perf buffers is two pipelined writes, symbolising N addresses is one, a bundle upload keeps a
 * window of chunks in flight.
 *
 * @example
 * ```ts
 * import { BpfdClient } from "./client.ts";
 * import { connect } from "../transport/channel.ts";
 * import { processTransport } from "../transport/process.ts";
 * const bpfd = new BpfdClient(await connect(processTransport()));
 * const facts = await bpfd.hello();
 * const fd = await bpfd.createMap({ type: 1, name: "counts", keySize: 4, valueSize: 8, maxEntries: 16 });
 * console.log(facts.release, fd, await bpfd.dump(fd));
 * await bpfd.close();
 * ```
 * @module
 */

import type { RawClient } from "./raw.ts";
import { NOT_RECOGNIZED, OPEN_FAILED, unescapeLine } from "../../runtime/protocol/framing.ts";
import { bundleTar, readBundleFiles, sha256 } from "../../artifacts/oci.ts";
import { COMMANDS } from "../../runtime/protocol/commands.ts";

/**
 * The 27 commands of the original BPFd, plus `exit` (protocol 1).
 *
 * @example
 * ```ts
 * import { PROTOCOL1_COMMANDS } from "./client.ts";
 * console.log(PROTOCOL1_COMMANDS.includes("BPF_MAP_DUMP")); // false: an extension
 * ```
 */
export const PROTOCOL1_COMMANDS: readonly string[] = [
  ...Object.entries(COMMANDS).filter(([, spec]) => !spec.extension).map(([name]) => name),
  "exit",
];

const STATUS_RE = /^(\S+): ret=(-?\d+)(?: errno=(\d+) (\S+))?$/;

/**
 * A command the runtime refused. `errno` is null for `Command not recognized` (unknown command,
 * bad arguments) and for an original BPFd, which reports only `ret=-1`.
 *
 * @example
 * ```ts
 * import { BpfdError } from "./client.ts";
 * try { /* await bpfd.lookup(fd, key) *\/ } catch (e) {
 *   if (e instanceof BpfdError && e.errno === 2) console.log("no such key");
 * }
 * ```
 */
export class BpfdError extends Error {
  /** The command line (shortened to 200 characters). */
  readonly command: string;
  /** The status label (`bpf_create_map`), or null when the command was not recognized. */
  readonly label: string | null;
  /** The `ret=` value, or null. */
  readonly ret: number | null;
  /** The errno, or null when the runtime gave none. */
  readonly errno: number | null;
  /** The errno's name (`EINVAL`), or null. */
  readonly errnoName: string | null;
  /** The runtime's `error:` text (empty when it gave none). */
  readonly detail: string;
  /** The verifier log lines of a rejected program. */
  readonly verifier: string[];
  /** The whole response body. */
  readonly body: string[];
  /** The error for `command` answered with the failure `body`. */
  constructor(command: string, body: string[]) {
    const m = STATUS_RE.exec(body[0] ?? "");
    const detail = body.find((l) => l.startsWith("error: "))?.slice(7) ?? "";
    const cmd = command.length > 200 ? `${command.slice(0, 200)}…` : command;
    const what = m
      ? `ret=${m[2]}${m[3] ? ` errno=${m[3]} ${m[4]}` : ""}`
      : body[0] === OPEN_FAILED
      ? "open failed"
      : "command not recognized";
    super(`${cmd.split(" ")[0]} failed: ${what}${detail ? `: ${detail}` : ""}`);
    this.name = "BpfdError";
    this.command = cmd;
    this.label = m ? m[1] : null;
    this.ret = m ? Number(m[2]) : null;
    this.errno = m?.[3] !== undefined ? Number(m[3]) : null;
    this.errnoName = m?.[4] ?? null;
    this.detail = detail;
    this.verifier = body.filter((l) => l.startsWith("verifier: ")).map((l) => l.slice(10));
    this.body = body;
  }
}

/**
 * A response the client cannot read (a runtime speaking another dialect, or a bug).
 *
 * @example
 * ```ts
 * import { ProtocolError } from "./client.ts";
 * const e = new ProtocolError("GET_CPUS", ["garbage"], "no status line");
 * console.log(e.message);
 * ```
 */
export class ProtocolError extends Error {
  /** The response body. */
  readonly body: string[];
  /** `problem` describes what was expected of `body`. */
  constructor(command: string, body: string[], problem: string) {
    super(
      `unexpected answer to ${command.slice(0, 80)}: ${problem} (body: ${
        JSON.stringify(body.slice(0, 4))
      }${body.length > 4 ? " …" : ""}); is the far side a bpfd of another version?`,
    );
    this.name = "ProtocolError";
    this.body = body;
  }
}

/**
 * Parses a kernel CPU list (`0-3,5`) into CPU numbers.
 *
 * @example
 * ```ts
 * import { parseCpuList } from "./client.ts";
 * parseCpuList("0-2,5"); // [0, 1, 2, 5]
 * ```
 */
export function parseCpuList(text: string): number[] {
  const out: number[] = [];
  for (const part of text.trim().split(",")) {
    if (part === "") continue;
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new Error(`bad CPU list ${JSON.stringify(text)}`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    for (let c = a; c <= b; c++) out.push(c);
  }
  return out;
}

/** Facts about the target, from `HELLO` (or guessed for an original BPFd). */
export interface TargetFacts {
  /** Protocol level: 2 for bpfpack's runtime, 1 for an original BPFd. */
  protocol: number;
  /** `bpfpack-bpfd <version>`, or null for an original BPFd. */
  runtime: string | null;
  /** `uname -m`, `-r`, `-v` of the target (null when unknown). */
  arch: string | null;
  /** `uname -r`. */
  release: string | null;
  /** `uname -v`. */
  version: string | null;
  /** Possible CPUs (size per-CPU values with their count). */
  possibleCpus: number[];
  /** Online CPUs (where perf buffers can be opened). */
  onlineCpus: number[];
  /** True when the CPU lists are the host's guess (an original BPFd cannot tell). */
  cpusGuessed: boolean;
  /** Page size in bytes (null when unknown). */
  pageSize: number | null;
  /** Booleans of HELLO: btf, kprobe_pmu, uprobe_pmu, kprobe_events, uprobe_events, ringbuf, … */
  features: Record<string, boolean>;
  /** The runtime's pid (suffix of its tracefs event names), or null. */
  pid: number | null;
  /** Every command the runtime accepts. */
  commands: Set<string>;
  /** The raw `key=value` pairs. */
  raw: Record<string, string>;
}

/** A map's shape, as the client needs it for lookups and dumps. */
export interface MapInfo {
  /** The map's fd in the session. */
  fd: number;
  /** Its name (sanitised by the runtime). */
  name: string;
  /** `BPF_MAP_TYPE_*` number. */
  type: number;
  /** Key size in bytes. */
  keySize: number;
  /** Value size in bytes (per CPU for per-CPU maps). */
  valueSize: number;
  /** Capacity. */
  maxEntries: number;
}

/** A program loaded from a bundle. */
export interface ProgInfo {
  /** The program's fd in the session. */
  fd: number;
  /** Its name in the object. */
  name: string;
  /** `BPF_PROG_TYPE_*` number. */
  type: number;
  /** ELF section (says where it attaches). */
  section: string;
}

/** One map entry (values of per-CPU maps hold every possible CPU's value). */
export interface MapEntry {
  /** Key bytes. */
  key: Uint8Array;
  /** Value bytes. */
  value: Uint8Array;
}

/** What `BUNDLE_LOAD` loaded. */
export interface LoadedBundle {
  /** The `object` line's fields (`name`, `arch`, `mode`, `release`, `digest`, `tool`, …). */
  object: Record<string, string>;
  /** Maps by name. */
  maps: Map<string, MapInfo>;
  /** Programs by name. */
  progs: Map<string, ProgInfo>;
  /** Attachments made with `attach=`. */
  attachments: { fd: number; prog: string; what: string }[];
  /** Degradations the runtime reported (e.g. BTF refused). */
  warnings: string[];
}

/** Options of {@link BpfdClient.loadBundle}. */
export interface LoadOptions {
  /** Which object kind to pick (default auto). */
  mode?: "auto" | "core" | "headers";
  /** `.rodata` values set before the load (numbers, bigints, booleans, or raw bytes). */
  rodata?: Record<string, number | bigint | boolean | Uint8Array>;
  /** Attach programs at load: `"all"`, `"none"`, or program names. */
  attach?: "all" | "none" | string[];
  /** Load only these programs. */
  programs?: string[];
  /** `max_entries` overrides by map name (`max.<map>=<n>`; e.g. a stack map's size). */
  maxEntries?: Record<string, number>;
}

/** Progress of an upload. */
export interface UploadProgress {
  /** Bytes the device has received. */
  sent: number;
  /** Bundle size. */
  total: number;
}

/** Result of {@link BpfdClient.uploadBundle}. */
export interface UploadResult {
  /** The bundle's path on the device (pass it to `loadBundle`). */
  path: string;
  /** `sha256:<hex>` of the tar. */
  digest: string;
  /** Bundle size in bytes. */
  size: number;
  /** False when the device already had it (`have`). */
  sent: boolean;
}

/** A perf buffer or ring buffer reader. */
export interface Reader {
  /** The fd to poll (a perf reader, or the ring buffer map). */
  fd: number;
  /** The CPU of a perf buffer; null for a ring buffer. */
  cpu: number | null;
  /** Perf buffer or ring buffer. */
  kind: "perf" | "ring";
}

/** One record or loss report from {@link BpfdClient.poll}. */
export type PollEvent =
  | { kind: "sample"; fd: number; cpu: number | null; size: number; data: Uint8Array }
  | { kind: "lost"; fd: number; cpu: number | null; count: number };

/** A resolved symbol. */
export interface Sym {
  /** Symbol name. */
  name: string;
  /** Offset of the address from the symbol's start. */
  offset: number;
  /** `kernel`, a module name, or the path of a user binary or library. */
  module: string;
}

/** Options of {@link BpfdClient}. */
export interface BpfdClientOptions {
  /** Text sent with HELLO (for the runtime's logs). */
  clientName?: string;
}

function b64(bytes: Uint8Array): string {
  return bytes.toBase64();
}

function unb64(text: string, what: string): Uint8Array {
  try {
    return Uint8Array.fromBase64(text);
  } catch {
    throw new ProtocolError(what, [text], "not base64");
  }
}

function isStatus(line: string | undefined): boolean {
  return line !== undefined && STATUS_RE.test(line);
}

function fieldsOf(parts: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of parts) {
    const eq = p.indexOf("=");
    if (eq > 0) out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}

function parseSym(line: string | undefined, command: string, body: string[]): Sym {
  const m = /^(.*);(-?\d+);(.*)$/.exec(unescapeLine(line ?? ""));
  if (!m) throw new ProtocolError(command, body, "expected <name>;<offset>;<module>");
  return { name: m[1], offset: Number(m[2]), module: m[3] };
}

/**
 * The typed client.
 *
 * @example
 * ```ts
 * import { BpfdClient } from "./client.ts";
 * import { connectRemote } from "../transport/remote.ts";
 * const bpfd = new BpfdClient(await connectRemote("ssh:root@board"));
 * await bpfd.hello();
 * console.log(await bpfd.ksyms([0xffffffff81000000n]));
 * await bpfd.close();
 * ```
 */
export class BpfdClient {
  #raw: RawClient;
  #opts: BpfdClientOptions;
  #facts: TargetFacts | null = null;
  #maps = new Map<number, MapInfo>();
  #readers = new Map<number, Reader>();
  #ksyms = new Map<bigint, Sym | null>();
  #usyms = new Map<string, Sym | null>();

  /** A client over `raw` (call {@link hello} first to learn what the target has). */
  constructor(raw: RawClient, opts: BpfdClientOptions = {}) {
    this.#raw = raw;
    this.#opts = opts;
  }

  /** The raw client underneath (for commands this class does not wrap). */
  get raw(): RawClient {
    return this.#raw;
  }

  /** The facts from {@link hello}, or null before it. */
  get facts(): TargetFacts | null {
    return this.#facts;
  }

  /** The readers opened so far (perf and ring), by fd. */
  get readers(): ReadonlyMap<number, Reader> {
    return this.#readers;
  }

  /** Sends one command; returns the body, throwing {@link BpfdError} on a failure status. */
  async command(line: string, timeoutMs?: number): Promise<string[]> {
    const body = await this.#raw.send(line, timeoutMs);
    this.#check(line, body);
    return body;
  }

  #check(line: string, body: string[]): void {
    const first = body[0];
    if (first === NOT_RECOGNIZED || first === OPEN_FAILED) throw new BpfdError(line, body);
    const m = first === undefined ? null : STATUS_RE.exec(first);
    if (m && Number(m[2]) < 0) throw new BpfdError(line, body);
  }

  /** Sends a command that answers `<label>: ret=N` with N ≥ 0; returns N. */
  async #ret(line: string): Promise<number> {
    const body = await this.command(line);
    return this.#retOf(line, body);
  }

  #retOf(line: string, body: string[]): number {
    const m = STATUS_RE.exec(body[0] ?? "");
    if (!m) throw new ProtocolError(line, body, "no status line");
    return Number(m[2]);
  }

  /** Whether the runtime accepts `name` (from HELLO's `commands=`; protocol 1: the 27). */
  hasCommand(name: string): boolean {
    return (this.#facts?.commands ?? new Set(PROTOCOL1_COMMANDS)).has(name);
  }

  /**
   * Negotiates: sends `HELLO` and parses the target's facts. An original BPFd answers
   * `Command not recognized`: that is protocol 1, with CPUs guessed from GET_CPUS if it has it,
   * else from this host (as BCC does).
   */
  async hello(): Promise<TargetFacts> {
    const line = `HELLO ${this.#opts.clientName ?? "bpfpack-client 0.1.0"}`;
    const body = await this.#raw.send(line);
    if (body[0] === NOT_RECOGNIZED) {
      const facts: TargetFacts = {
        protocol: 1,
        runtime: null,
        arch: null,
        release: null,
        version: null,
        possibleCpus: [],
        onlineCpus: [],
        cpusGuessed: true,
        pageSize: null,
        features: {},
        pid: null,
        commands: new Set(PROTOCOL1_COMMANDS),
        raw: {},
      };
      const c = await this.cpus(); // tries GET_CPUS: #facts is still null
      this.#facts = facts;
      facts.possibleCpus = c.possible;
      facts.onlineCpus = c.online;
      facts.cpusGuessed = c.guessed;
      return facts;
    }
    this.#check(line, body);
    if (!/^hello: ret=0$/.test(body[0] ?? "")) {
      throw new ProtocolError(line, body, "expected hello: ret=0");
    }
    const raw: Record<string, string> = {};
    for (const l of body.slice(1)) {
      const eq = l.indexOf("=");
      if (eq > 0) raw[l.slice(0, eq)] = l.slice(eq + 1);
    }
    const num = (k: string) => raw[k] !== undefined && /^\d+$/.test(raw[k]) ? Number(raw[k]) : null;
    const features: Record<string, boolean> = {};
    for (const [k, v] of Object.entries(raw)) {
      if ((v === "0" || v === "1") && k !== "protocol") features[k] = v === "1";
    }
    this.#facts = {
      protocol: num("protocol") ?? 2,
      runtime: raw.runtime ?? null,
      arch: raw.arch ?? null,
      release: raw.release ?? null,
      version: raw.version ?? null,
      possibleCpus: raw.possible_cpus ? parseCpuList(raw.possible_cpus) : [],
      onlineCpus: raw.online_cpus ? parseCpuList(raw.online_cpus) : [],
      cpusGuessed: false,
      pageSize: num("page_size"),
      features,
      pid: num("pid"),
      commands: new Set((raw.commands ?? PROTOCOL1_COMMANDS.join(",")).split(",")),
      raw,
    };
    return this.#facts;
  }

  /**
   * The target's possible and online CPUs, read now (GET_CPUS). Without GET_CPUS (an original
   * BPFd) this host's CPUs are assumed, and `guessed` says so.
   */
  async cpus(): Promise<{ possible: number[]; online: number[]; guessed: boolean }> {
    if (this.hasCommand("GET_CPUS") || this.#facts === null) {
      const body = await this.#raw.send("GET_CPUS");
      if (body[0] !== NOT_RECOGNIZED) {
        this.#check("GET_CPUS", body);
        const f = fieldsOf(body.slice(1));
        if (f.possible === undefined || f.online === undefined) {
          throw new ProtocolError("GET_CPUS", body, "expected possible= and online=");
        }
        return {
          possible: parseCpuList(f.possible),
          online: parseCpuList(f.online),
          guessed: false,
        };
      }
    }
    const all = [...Array(navigator.hardwareConcurrency).keys()];
    return { possible: all, online: all, guessed: true };
  }

  // ------------------------------------------------------------------ maps

  /** Records a map's shape (maps created elsewhere, e.g. by raw commands). */
  registerMap(info: MapInfo): void {
    this.#maps.set(info.fd, info);
  }

  /** The known shape of map `fd`. */
  mapInfo(fd: number): MapInfo {
    const m = this.#maps.get(fd);
    if (!m) {
      throw new Error(
        `map fd ${fd} is unknown to this client: create it with createMap, load it with ` +
          "loadBundle, or describe it with registerMap",
      );
    }
    return m;
  }

  /** `BPF_CREATE_MAP`; returns the fd. */
  async createMap(
    spec: {
      type: number;
      name?: string;
      keySize: number;
      valueSize: number;
      maxEntries: number;
      flags?: number;
    },
  ): Promise<number> {
    const name = spec.name ?? "__none__";
    const fd = await this.#ret(
      `BPF_CREATE_MAP ${spec.type} ${name} ${spec.keySize} ${spec.valueSize} ${spec.maxEntries} ${
        spec.flags ?? 0
      }`,
    );
    this.#maps.set(fd, {
      fd,
      name,
      type: spec.type,
      keySize: spec.keySize,
      valueSize: spec.valueSize,
      maxEntries: spec.maxEntries,
    });
    return fd;
  }

  /** `BPF_UPDATE_ELEM` (flags: 0 any, 1 no-exist, 2 exist). */
  async update(fd: number, key: Uint8Array, value: Uint8Array, flags = 0): Promise<void> {
    await this.#ret(
      `BPF_UPDATE_ELEM ${fd} ${b64(key)} ${key.length} ${b64(value)} ${value.length} ${flags}`,
    );
  }

  /** `BPF_LOOKUP_ELEM`; null when the key is absent (ENOENT). Per-CPU values come in full. */
  async lookup(fd: number, key: Uint8Array): Promise<Uint8Array | null> {
    const m = this.mapInfo(fd);
    const line = `BPF_LOOKUP_ELEM ${fd} ${b64(key)} ${key.length} ${m.valueSize}`;
    const body = await this.#raw.send(line);
    if (isStatus(body[0]) || body[0] === NOT_RECOGNIZED) {
      const err = new BpfdError(line, body);
      if (err.errno === 2 || (err.errno === null && err.ret === -1 && err.label)) return null;
      throw err;
    }
    if (body.length !== 1) throw new ProtocolError(line, body, "expected one base64 line");
    return unb64(body[0], line);
  }

  /** `BPF_DELETE_ELEM`; false when the key was absent. */
  async delete(fd: number, key: Uint8Array): Promise<boolean> {
    try {
      await this.#ret(`BPF_DELETE_ELEM ${fd} ${b64(key)} ${key.length}`);
      return true;
    } catch (e) {
      if (e instanceof BpfdError && e.errno === 2) return false;
      throw e;
    }
  }

  /**
   * Every entry of a map: one `BPF_MAP_DUMP` when the runtime has it, else the original's
   * `BPF_GET_FIRST_KEY … 1` dump.
   */
  async dump(fd: number): Promise<MapEntry[]> {
    const m = this.mapInfo(fd);
    if (this.hasCommand("BPF_MAP_DUMP")) {
      const line = `BPF_MAP_DUMP ${fd}`;
      const body = await this.command(line);
      const count = this.#retOf(line, body);
      const out: MapEntry[] = [];
      for (const l of body.slice(1)) {
        const [n, k, v] = l.split(" ");
        const cnt = Number(n);
        const keys = unb64(k ?? "", line);
        const values = unb64(v ?? "", line);
        if (!(cnt > 0) || keys.length !== cnt * m.keySize || values.length % cnt !== 0) {
          throw new ProtocolError(line, body, `bad chunk line ${JSON.stringify(l.slice(0, 60))}`);
        }
        const vs = values.length / cnt;
        for (let i = 0; i < cnt; i++) {
          out.push({
            key: keys.subarray(i * m.keySize, (i + 1) * m.keySize),
            value: values.subarray(i * vs, (i + 1) * vs),
          });
        }
      }
      if (out.length !== count) {
        throw new ProtocolError(line, body, `ret=${count} but ${out.length} entries`);
      }
      return out;
    }
    const line = `BPF_GET_FIRST_KEY ${fd} ${m.keySize} ${m.valueSize} 1`;
    const body = await this.#raw.send(line);
    if (isStatus(body[0])) {
      const err = new BpfdError(line, body);
      if (err.errno === 2 || err.errno === null) return []; // the map is empty
      throw err;
    }
    if (body[0] === NOT_RECOGNIZED) throw new BpfdError(line, body);
    const lines = body[body.length - 1] === "" ? body.slice(0, -1) : body;
    if (lines.length % 2 !== 0) {
      throw new ProtocolError(line, body, "odd number of key/value lines");
    }
    const out: MapEntry[] = [];
    for (let i = 0; i < lines.length; i += 2) {
      out.push({ key: unb64(lines[i], line), value: unb64(lines[i + 1], line) });
    }
    return out;
  }

  /** `BPF_CLOSE_FD` (any fd of the session); forgets what the client knew about it. */
  async closeFd(fd: number): Promise<void> {
    await this.#ret(`BPF_CLOSE_FD ${fd}`);
    this.#maps.delete(fd);
    this.#readers.delete(fd);
  }

  // ------------------------------------------------------------------ bundles

  /**
   * Uploads a bundle (a `.tar`, an OCI layout directory, or the tar's bytes) into the device's
   * cache. Skips the transfer when the device answers `have`. Chunks are pipelined with a window
   * of `window` chunks in flight.
   */
  async uploadBundle(
    source: string | Uint8Array,
    opts: { onProgress?: (p: UploadProgress) => void; window?: number; chunkSize?: number } = {},
  ): Promise<UploadResult> {
    let bytes: Uint8Array;
    if (typeof source === "string") {
      const st = await Deno.stat(source);
      bytes = st.isDirectory
        ? bundleTar(await readBundleFiles(source))
        : await Deno.readFile(source);
    } else {
      bytes = source;
    }
    const digest = await sha256(bytes);
    const begin = `BUNDLE_BEGIN ${digest} ${bytes.length}`;
    const body = await this.command(begin);
    const have = body.find((l) => l.startsWith("have "));
    if (have) {
      opts.onProgress?.({ sent: bytes.length, total: bytes.length });
      return { path: have.slice(5), digest, size: bytes.length, sent: false };
    }
    const send = body.find((l) => l.startsWith("send "));
    if (!send) throw new ProtocolError(begin, body, "expected send <n> or have <path>");
    const chunk = Math.min(Number(send.slice(5)), opts.chunkSize ?? Infinity);
    if (!(chunk > 0)) throw new ProtocolError(begin, body, "bad chunk size");
    const n = Math.ceil(bytes.length / chunk);
    const window = Math.max(1, opts.window ?? 4);
    const lineOf = (i: number) =>
      `BUNDLE_CHUNK ${digest} ${i * chunk} ${
        b64(bytes.subarray(i * chunk, Math.min(bytes.length, (i + 1) * chunk)))
      }`;
    const writes: Promise<void>[] = [];
    let next = 0;
    const sendNext = () => {
      const p = this.#raw.write(lineOf(next++));
      p.catch(() => {}); // a dead far side is reported by the read below
      writes.push(p);
    };
    while (next < Math.min(window, n)) sendNext();
    for (let i = 0; i < n; i++) {
      const r = await this.#raw.readResponse();
      this.#check(`BUNDLE_CHUNK ${digest} ${i * chunk}`, r);
      const got = this.#retOf("BUNDLE_CHUNK", r);
      opts.onProgress?.({ sent: got, total: bytes.length });
      if (next < n) sendNext();
    }
    await Promise.all(writes);
    const endLine = `BUNDLE_END ${digest}`;
    const end = await this.command(endLine);
    const path = end.find((l) => l.startsWith("path "));
    if (!path) throw new ProtocolError(endLine, end, "expected path <path>");
    return { path: path.slice(5), digest, size: bytes.length, sent: true };
  }

  /** `BUNDLE_LOAD` of a bundle on the device (a path from {@link uploadBundle}). */
  async loadBundle(path: string, opts: LoadOptions = {}): Promise<LoadedBundle> {
    if (/\s/.test(path)) throw new Error(`bundle path ${JSON.stringify(path)} contains a space`);
    const args = [path];
    if (opts.mode) args.push(`mode=${opts.mode}`);
    if (opts.attach) {
      args.push(`attach=${typeof opts.attach === "string" ? opts.attach : opts.attach.join(",")}`);
    }
    if (opts.programs) args.push(`programs=${opts.programs.join(",")}`);
    for (const [k, v] of Object.entries(opts.maxEntries ?? {})) args.push(`max.${k}=${v}`);
    for (const [k, v] of Object.entries(opts.rodata ?? {})) {
      const text = v instanceof Uint8Array ? `b64:${b64(v)}` : String(v);
      args.push(`rodata.${k}=${text}`);
    }
    const line = `BUNDLE_LOAD ${args.join(" ")}`;
    const body = await this.command(line);
    this.#retOf(line, body);
    const out: LoadedBundle = {
      object: {},
      maps: new Map(),
      progs: new Map(),
      attachments: [],
      warnings: [],
    };
    for (const l of body.slice(1)) {
      const f = l.split(" ");
      if (f[0] === "object") out.object = { name: f[1], ...fieldsOf(f.slice(2)) };
      else if (f[0] === "map") {
        const kv = fieldsOf(f.slice(3));
        const info: MapInfo = {
          fd: Number(f[1]),
          name: f[2],
          type: Number(kv.type),
          keySize: Number(kv.key),
          valueSize: Number(kv.value),
          maxEntries: Number(kv.max),
        };
        out.maps.set(info.name, info);
        this.#maps.set(info.fd, info);
      } else if (f[0] === "prog") {
        const kv = fieldsOf(f.slice(3));
        out.progs.set(f[2], {
          fd: Number(f[1]),
          name: f[2],
          type: Number(kv.type),
          section: kv.section ?? "",
        });
      } else if (f[0] === "attach") {
        out.attachments.push({ fd: Number(f[1]), prog: f[2], what: f.slice(3).join(" ") });
      } else if (f[0] === "warning") out.warnings.push(f.slice(1).join(" "));
    }
    return out;
  }

  /** `BPF_ATTACH_PROG`: attaches a bundle program by its section (or `target`). */
  async attachProg(
    progFd: number,
    opts: { target?: string; pid?: number } = {},
  ): Promise<{ fd: number; what: string }> {
    let line = `BPF_ATTACH_PROG ${progFd}`;
    if (opts.target) line += ` target=${opts.target}`;
    if (opts.pid !== undefined) line += ` pid=${opts.pid}`;
    const body = await this.command(line);
    const what = body.find((l) => l.startsWith("attached "))?.slice(9) ?? "";
    return { fd: this.#retOf(line, body), what };
  }

  /** `BPF_PROG_LOAD` of raw instructions; returns the fd. */
  loadProgram(type: number, name: string, insns: Uint8Array, license = "GPL"): Promise<number> {
    return this.#ret(`BPF_PROG_LOAD ${type} ${name} ${insns.length} ${license} 0 ${b64(insns)}`);
  }

  /** `BPF_ATTACH_TRACEPOINT`; returns the attachment fd. */
  attachTracepoint(progFd: number, category: string, name: string): Promise<number> {
    return this.#ret(`BPF_ATTACH_TRACEPOINT ${progFd} ${category} ${name}`);
  }

  // ------------------------------------------------------------------ events

  /**
   * Attaches a `perf_event` program (e.g. a bundle program of section `perf_event`) to one
   * sampling event per CPU (default: every online CPU of the target) with
   * `BPF_ATTACH_PERF_EVENT`, all in one pipelined round trip. Returns the attachments in CPU
   * order. If any CPU fails, the ones that succeeded are closed again and the first failure is
   * thrown.
   *
   * @example
   * ```ts
   * // software cpu-clock (type 1, config 0) at 49 Hz on every online CPU:
   * // await bpfd.attachPerfEvent(prog.fd, { type: 1, config: 0, sampleFreq: 49 });
   * ```
   */
  async attachPerfEvent(
    progFd: number,
    ev: {
      type: number;
      config: number;
      sampleFreq?: number;
      samplePeriod?: number | bigint;
      pid?: number;
      cpus?: number[];
    },
  ): Promise<{ cpu: number; fd: number }[]> {
    if ((ev.sampleFreq ?? 0) > 0 === BigInt(ev.samplePeriod ?? 0) > 0n) {
      throw new Error("attachPerfEvent: give exactly one of sampleFreq and samplePeriod");
    }
    const cpus = ev.cpus ?? (await this.cpus()).online;
    const lines = cpus.map((cpu) =>
      `BPF_ATTACH_PERF_EVENT ${progFd} ${ev.type} ${ev.config} ${ev.samplePeriod ?? 0} ${
        ev.sampleFreq ?? 0
      } ${ev.pid ?? -1} ${cpu} -1`
    );
    const bodies = await this.#raw.pipeline(lines);
    const out: { cpu: number; fd: number }[] = [];
    let failed: Error | null = null;
    bodies.forEach((b, i) => {
      try {
        this.#check(lines[i], b);
        out.push({ cpu: cpus[i], fd: this.#retOf(lines[i], b) });
      } catch (e) {
        failed ??= e as Error;
      }
    });
    if (failed) {
      if (out.length) await this.#raw.pipeline(out.map((a) => `BPF_CLOSE_PERF_EVENT_FD ${a.fd}`));
      throw failed;
    }
    return out;
  }

  /**
   * Opens one perf buffer per online CPU of the target and stores each reader fd in the
   * `PERF_EVENT_ARRAY` map `eventsMapFd` (key = CPU). Two pipelined round trips in all.
   */
  async openPerfBuffers(eventsMapFd: number, pageCount: number): Promise<Reader[]> {
    const { online } = await this.cpus();
    const opens = online.map((cpu) => `BPF_OPEN_PERF_BUFFER -1 ${cpu} ${pageCount}`);
    const bodies = await this.#raw.pipeline(opens);
    const readers: Reader[] = [];
    const failed: BpfdError[] = [];
    bodies.forEach((b, i) => {
      try {
        this.#check(opens[i], b);
        readers.push({ fd: this.#retOf(opens[i], b), cpu: online[i], kind: "perf" });
      } catch (e) {
        if (e instanceof BpfdError) failed.push(e);
        else throw e;
      }
    });
    if (failed.length) {
      await this.#raw.pipeline(readers.map((r) => `BPF_CLOSE_PERF_EVENT_FD ${r.fd}`));
      throw failed[0];
    }
    const u32 = (n: number) => {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, n, true);
      return b64(b);
    };
    const stores = readers.map((r) =>
      `BPF_UPDATE_ELEM ${eventsMapFd} ${u32(r.cpu!)} 4 ${u32(r.fd)} 4 0`
    );
    const results = await this.#raw.pipeline(stores);
    results.forEach((b, i) => this.#check(stores[i], b));
    for (const r of readers) this.#readers.set(r.fd, r);
    return readers;
  }

  /** `BPF_OPEN_RING_BUFFER`: makes a RINGBUF map pollable. */
  async openRingBuffer(mapFd: number): Promise<Reader> {
    await this.#ret(`BPF_OPEN_RING_BUFFER ${mapFd}`);
    const r: Reader = { fd: mapFd, cpu: null, kind: "ring" };
    this.#readers.set(mapFd, r);
    return r;
  }

  /**
   * `PERF_READER_POLL` on `readers` (default: every reader opened by this client). Returns the
   * records and loss reports; an empty array on timeout. `timeoutMs` < 0 waits until an event.
   */
  async poll(timeoutMs: number, readers?: Reader[]): Promise<PollEvent[]> {
    const line = this.#pollLine(timeoutMs, readers);
    return this.#parsePoll(line, await this.#raw.send(line, this.#pollTimeout(timeoutMs)));
  }

  /**
   * Polls continuously until `stop()` returns true, keeping `depth` polls in flight (default 2),
   * so the runtime drains the next batch while this side decodes the last one. Each response's
   * events go to `onEvents` in order (also empty ones, so the caller can check the time).
   * Returns once the polls in flight have been answered.
   */
  async pollStream(
    timeoutMs: number,
    onEvents: (events: PollEvent[]) => void | Promise<void>,
    opts: { readers?: Reader[]; stop: () => boolean; depth?: number },
  ): Promise<void> {
    const line = this.#pollLine(timeoutMs, opts.readers);
    const depth = Math.max(1, opts.depth ?? 2);
    let inFlight = 0;
    let lastWrite: Promise<void> = Promise.resolve(); // writes complete in order
    const send = () => {
      lastWrite = this.#raw.write(line);
      lastWrite.catch(() => {}); // a dead far side is reported by the read
      inFlight++;
    };
    try {
      while (inFlight < depth && !opts.stop()) send();
      while (inFlight > 0) {
        const body = await this.#raw.readResponse(this.#pollTimeout(timeoutMs));
        inFlight--;
        const events = this.#parsePoll(line, body);
        // `depth` polls while events flow; one when idle: a poll returns at once while another
        // command waits behind it (docs/protocol.md §4.5), so idle polls in pairs would spin.
        const want = events.length ? depth : 1;
        while (inFlight < want && !opts.stop()) send();
        await onEvents(events);
      }
    } finally {
      await lastWrite.catch(() => {});
    }
  }

  #pollLine(timeoutMs: number, readers?: Reader[]): string {
    const rs = readers ?? [...this.#readers.values()];
    if (rs.length === 0) throw new Error("poll: no readers: open perf or ring buffers first");
    return `PERF_READER_POLL ${Math.trunc(timeoutMs)} ${rs.length} ${
      rs.map((r) => r.fd).join(" ")
    }`;
  }

  #pollTimeout(timeoutMs: number): number {
    return timeoutMs < 0 ? 0 : timeoutMs + 30_000;
  }

  #parsePoll(line: string, body: string[]): PollEvent[] {
    if (isStatus(body[0]) || body[0] === NOT_RECOGNIZED) throw new BpfdError(line, body);
    const out: PollEvent[] = [];
    for (const l of body) {
      const f = l.split(" ");
      const fd = Number(f[0]);
      const cpu = this.#readers.get(fd)?.cpu ?? null;
      if (f.length === 3 && f[1] === "lost" && /^\d+$/.test(f[2])) {
        out.push({ kind: "lost", fd, cpu, count: Number(f[2]) });
      } else if (f.length === 3 && /^\d+$/.test(f[0]) && /^\d+$/.test(f[1])) {
        out.push({ kind: "sample", fd, cpu, size: Number(f[1]), data: unb64(f[2], line) });
      } else {
        throw new ProtocolError(line, body, `bad record line ${JSON.stringify(l.slice(0, 80))}`);
      }
    }
    return out;
  }

  // ------------------------------------------------------------------ processes and symbols

  /** The comm of `pid` on the target, or null when the process is gone. */
  async comm(pid: number): Promise<string | null> {
    const line = `COMM_FOR_PID ${pid}`;
    const body = await this.#raw.send(line);
    if (body[0] === OPEN_FAILED) return null;
    this.#check(line, body);
    return unescapeLine(body[0] ?? "");
  }

  /** Kernel symbol of one address (cached). */
  async ksym(addr: bigint): Promise<Sym | null> {
    return (await this.ksyms([addr])).get(addr) ?? null;
  }

  /**
   * Kernel symbols of many addresses: the uncached ones in one pipelined round trip.
   * Addresses with no symbol map to null.
   */
  async ksyms(addrs: Iterable<bigint>): Promise<Map<bigint, Sym | null>> {
    const all = [...new Set(addrs)];
    const todo = all.filter((a) => !this.#ksyms.has(a));
    if (todo.length) {
      const lines = todo.map((a) => `GET_KSYM_NAME ${BigInt.asUintN(64, a)}`);
      const bodies = await this.#raw.pipeline(lines);
      bodies.forEach((b, i) => this.#ksyms.set(todo[i], this.#symOf(lines[i], b)));
    }
    return new Map(all.map((a) => [a, this.#ksyms.get(a) ?? null]));
  }

  #symOf(line: string, body: string[]): Sym | null {
    const m = STATUS_RE.exec(body[0] ?? "");
    if (!m) {
      if (body[0] === NOT_RECOGNIZED) throw new BpfdError(line, body);
      throw new ProtocolError(line, body, "no status line");
    }
    if (Number(m[2]) < 0) {
      const e = new BpfdError(line, body);
      if (e.errno === 2 || e.errno === null) return null;
      throw e;
    }
    return parseSym(body[1], line, body);
  }

  /**
   * `KSYM_MATCH`: the target's kernel functions matching a glob (`vfs_*`), sorted, at most
   * `max`; `matched` is how many there are in all (more than `names.length` when truncated) and
   * `excluded` how many were left out as kprobe-blacklisted.
   */
  async ksymMatch(
    pattern: string,
    max = 1000,
  ): Promise<{ source: string; matched: number; excluded: number; names: string[] }> {
    if (/\s/.test(pattern) || pattern === "") {
      throw new Error(`pattern ${JSON.stringify(pattern)} is empty or contains white space`);
    }
    if (!this.hasCommand("KSYM_MATCH")) {
      throw new Error(
        "the target's runtime has no KSYM_MATCH (an original BPFd or an older bpfd): " +
          "update bpfd on the target",
      );
    }
    const line = `KSYM_MATCH ${pattern} ${max}`;
    const body = await this.command(line);
    const n = this.#retOf(line, body);
    const meta = fieldsOf((body[1] ?? "").split(" "));
    const names = body.slice(2);
    if (meta.matched === undefined || names.length !== n) {
      throw new ProtocolError(line, body, "expected source=… matched=… then ret= names");
    }
    return {
      source: meta.source ?? "",
      matched: Number(meta.matched),
      excluded: Number(meta.excluded ?? 0),
      names,
    };
  }

  /** The address of kernel symbol `name`, or null. */
  async ksymAddr(name: string): Promise<bigint | null> {
    return await this.#addr(`GET_KSYM_ADDR ${name}`);
  }

  async #addr(line: string): Promise<bigint | null> {
    const body = await this.#raw.send(line);
    if (isStatus(body[0]) && (this.#retOf(line, body) < 0)) {
      const e = new BpfdError(line, body);
      if (e.errno === 2 || e.errno === null) return null;
      throw e;
    }
    this.#check(line, body);
    if (!/^\d+$/.test(body[1] ?? "")) throw new ProtocolError(line, body, "expected an address");
    return BigInt(body[1]);
  }

  /** User symbols of addresses in process `pid`: the uncached ones in one pipelined round trip. */
  async usyms(pid: number, addrs: Iterable<bigint>): Promise<Map<bigint, Sym | null>> {
    const all = [...new Set(addrs)];
    const key = (a: bigint) => `${pid}:${a}`;
    const todo = all.filter((a) => !this.#usyms.has(key(a)));
    if (todo.length) {
      const lines = todo.map((a) => `GET_USYM_NAME ${pid} ${BigInt.asUintN(64, a)} 1`);
      const bodies = await this.#raw.pipeline(lines);
      bodies.forEach((b, i) => this.#usyms.set(key(todo[i]), this.#symOf(lines[i], b)));
    }
    return new Map(all.map((a) => [a, this.#usyms.get(key(a)) ?? null]));
  }

  /** The address of `name` in `module` as mapped in process `pid`, or null. */
  async usymAddr(pid: number, name: string, module: string): Promise<bigint | null> {
    return await this.#addr(`GET_USYM_ADDR ${pid} ${name} ${module}`);
  }

  /** Drops cached symbols (e.g. after a process exec'd). */
  clearSymbolCache(): void {
    this.#ksyms.clear();
    this.#usyms.clear();
  }

  /** Ends the session (the runtime tears everything down); returns its exit status if known. */
  async close(): Promise<number | null> {
    return await this.#raw.close();
  }
}
