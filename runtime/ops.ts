/**
 * What each protocol command does on the kernel: the bridge between the pure
 * protocol layer and the kernel layer, against one {@link Session}.
 *
 * Every handler returns the response body (without the START/END markers).
 * Failures carry errno and an explanation after the status line.
 *
 * @example
 * ```ts
 * import { Ops } from "./ops.ts";
 * import { Session } from "./session.ts";
 * const ops = new Ops(new Session(), { pollInput: () => false, yieldNow: async () => {} });
 * console.log(ops.run("BPF_CREATE_MAP", [1, "m", 4, 4, 4, 0]));
 * ```
 * @module
 */

import * as bpf from "./kernel/bpf.ts";
import { SysError } from "./kernel/errno.ts";
import { PerfReader, type Sample } from "./kernel/perf.ts";
import { RingBufReader } from "./kernel/ringbuf.ts";
import * as probes from "./kernel/probes.ts";
import { eventFormat, listDirs, mountsOf, tracefsFor } from "./kernel/tracefs.ts";
import { onlineCpus, possibleCpus, targetFacts } from "./kernel/target.ts";
import {
  decodeBase64,
  decodeBase64Into,
  encodeBase64,
  encodeBase64Pairs,
} from "./protocol/base64.ts";
import { type ArgValue, COMMANDS, showToken } from "./protocol/commands.ts";
import { MAX_LINE } from "./protocol/framing.ts";
import { failure, notRecognized, openFailed, status } from "./protocol/response.ts";
import type { MapRes, Session } from "./session.ts";
import { Kallsyms } from "./symbols/kallsyms.ts";
import * as usym from "./symbols/usym.ts";
import { matchKernelFunctions } from "./symbols/ksym_match.ts";
// Types only: the bundle code (loader, OCI reader, zod) is loaded on first use.
import type { BundleOps } from "./bundle_ops.ts";

/** KSYM_MATCH: names answered when the client gives no max, and the largest max accepted. */
const KSYM_MATCH_DEFAULT = 1000;
const KSYM_MATCH_MAX = 100_000;

/** Runtime version reported by HELLO. */
export const RUNTIME_VERSION = "0.1.0";
/** Protocol level of this runtime (1 = the original's, 2 = with extensions). */
export const PROTOCOL_VERSION = 2;

/** What the handlers need from the I/O loop. */
export interface OpsIo {
  /** Waits up to `ms` for one of `fds` or stdin; returns ready fds and whether stdin is readable. */
  wait?: (fds: number[], ms: number) => Promise<{ ready: Set<number>; stdin: boolean }>;
  /** True when a complete command is already buffered (a pipelined client). */
  pollInput: () => boolean;
  /** Writes a diagnostic to stderr (never into the protocol stream). */
  warn?: (msg: string) => void;
  /** Lets the event loop run (signals). */
  yieldNow: () => Promise<void>;
  /** True once the session must end (a signal arrived): long waits give up. */
  stopping?: () => boolean;
}

type Body = string[];

/** Raised by handlers for argument problems that deserve `Command not recognized`. */
class ParseProblem extends Error {}

const round8 = (n: number) => (n + 7) & ~7;
const FD_VALUED_MAPS = new Set([
  bpf.MapType.PROG_ARRAY,
  bpf.MapType.PERF_EVENT_ARRAY,
  12, /* ARRAY_OF_MAPS */
  13, /* HASH_OF_MAPS */
]);

/** Command implementations bound to a session. */
export class Ops {
  #s: Session;
  #io: OpsIo;
  #ksyms: Kallsyms | null = null;
  #bundles: BundleOps | null = null;
  #cacheDir?: string;
  /** Scratch for decoding key and value arguments without allocating. */
  #keyScratch = new Uint8Array(4096);
  #valueScratch = new Uint8Array(1 << 16);

  constructor(session: Session, io: OpsIo, opts: { cacheDir?: string } = {}) {
    this.#s = session;
    this.#io = io;
    this.#cacheDir = opts.cacheDir;
  }

  /**
   * Runs one parsed command; never throws. Synchronous for every command but
   * PERF_READER_POLL and the bundle ones, which return a promise: the caller
   * awaits only those.
   */
  run(name: string, args: ArgValue[]): Body | Promise<Body> {
    try {
      const body = this.#dispatch(name, args);
      return body instanceof Promise ? body.catch((e) => this.#failed(name, e)) : body;
    } catch (e) {
      return this.#failed(name, e);
    }
  }

  /** The response to a command that threw. */
  #failed(name: string, e: unknown): Body {
    const spec = COMMANDS[name];
    if (e instanceof ParseProblem) return notRecognized(e.message);
    if (e instanceof bpf.ProgLoadError) {
      return failure(spec.label, e.errno, explainProgLoad(e), { log: e.log });
    }
    if (e instanceof SysError) return failure(spec.label, e.errno, e.message);
    return failure(spec.label, 5, `internal error: ${(e as Error)?.stack ?? e}`);
  }

  /**
   * Runs `f` on the bundle commands, loading their code on first use (the
   * loader, the OCI reader and zod would cost every start-up ~25 ms).
   */
  #withBundles(f: (b: BundleOps) => Body | Promise<Body>): Body | Promise<Body> {
    if (this.#bundles) return f(this.#bundles);
    return (async () => {
      const [{ BundleOps }, { BundleStore }] = await Promise.all([
        import("./bundle_ops.ts"),
        import("./bundle_store.ts"),
      ]);
      this.#bundles ??= new BundleOps(
        this.#s,
        new BundleStore(this.#cacheDir ?? BundleStore.defaultDir()),
      );
      return f(this.#bundles);
    })();
  }

  #dispatch(name: string, a: ArgValue[]): Body | Promise<Body> {
    const n = (i: number) => a[i] as number;
    const s = (i: number) => a[i] as string;
    const big = (i: number) => a[i] as bigint;
    switch (name) {
      case "BPF_CREATE_MAP":
        return this.createMap(n(0), s(1), n(2), n(3), n(4), n(5));
      case "BPF_PROG_LOAD":
        return this.progLoad(n(0), s(1), n(2), s(3), n(4), s(5));
      case "BPF_ATTACH_KPROBE":
        return this.attach(
          "bpf_attach_kprobe",
          n(0),
          s(2),
          (prog) => probes.attachKprobe(prog, s(3), n(1) === 1, s(2)),
        );
      case "BPF_DETACH_KPROBE":
      case "BPF_DETACH_UPROBE":
        return this.detachByKey(COMMANDS[name].label, s(0));
      case "BPF_ATTACH_UPROBE":
        return this.attach(
          "bpf_attach_uprobe",
          n(0),
          s(2),
          (prog) => probes.attachUprobe(prog, s(3), big(4), n(1) === 1, n(5), s(2)),
        );
      case "BPF_ATTACH_TRACEPOINT":
        return this.attach(
          "bpf_attach_tracepoint",
          n(0),
          `${s(1)}:${s(2)}`,
          (prog) => probes.attachTracepoint(prog, s(1), s(2)),
        );
      case "BPF_DETACH_TRACEPOINT":
        return this.detachByKey("bpf_detach_tracepoint", `${s(0)}:${s(1)}`);
      case "BPF_ATTACH_PERF_EVENT":
        return this.attachPerfEvent(a);
      case "BPF_CLOSE_PERF_EVENT_FD":
        this.#s.get(n(0), "attachment", "perf_reader");
        this.#s.close(n(0));
        return [status("bpf_close_perf_event_fd", 0)];
      case "BPF_OPEN_PERF_BUFFER":
        return this.openPerfBuffer(n(0), n(1), n(2));
      case "BPF_UPDATE_ELEM":
        return this.update(n(0), s(1), n(2), s(3), n(4), big(5));
      case "BPF_LOOKUP_ELEM":
        return this.lookup(n(0), s(1), n(2), n(3));
      case "BPF_GET_FIRST_KEY":
        return this.firstKey(n(0), n(1), n(2), n(3));
      case "BPF_GET_NEXT_KEY":
        return this.nextKey(n(0), s(1), n(2));
      case "BPF_DELETE_ELEM":
        return this.deleteElem(n(0), s(1), n(2));
      case "BPF_CLEAR_MAP":
        return this.clearMap(n(0), n(1));
      case "PERF_READER_POLL":
        return this.poll(n(0), n(1), a.slice(2) as number[]);
      case "GET_KALLSYMS":
        return this.readFile("/proc/kallsyms");
      case "GET_KPROBES_BLACKLIST":
        return this.kprobesBlacklist(s(0));
      case "GET_TRACE_EVENTS_CATEGORIES":
        return this.listEvents(s(0));
      case "GET_TRACE_EVENTS":
        return this.listEvents(s(0), s(1));
      case "COMM_FOR_PID":
        return this.readFile(`/proc/${n(0)}/comm`);
      case "GET_KSYM_NAME":
        return this.ksymName(big(0));
      case "GET_KSYM_ADDR":
        return this.ksymAddr(s(0));
      case "GET_USYM_NAME":
        return this.usymName(n(0), big(1));
      case "GET_USYM_ADDR":
        return this.usymAddr(n(0), s(1), s(2));
      case "HELLO":
        // The handshake of a tool that is about to load bundles: their code is
        // loaded now, once, rather than in the middle of the first BUNDLE_LOAD.
        return this.#withBundles(() => this.hello(a as string[]));
      case "BPF_CLOSE_FD":
        this.#s.close(n(0));
        this.#bundles?.forget(n(0));
        return [status("bpf_close_fd", 0)];
      case "BPF_MAP_DUMP":
        return this.mapDump(n(0));
      case "GET_TRACE_EVENT_FORMAT":
        return [
          status("get_trace_event_format", 0),
          ...eventFormat(s(1), s(2), tracefsFor(s(0))).replace(/\n$/, "").split("\n"),
        ];
      case "GET_CPUS":
        return [
          status("get_cpus", 0),
          `possible=${possibleCpus().text}`,
          `online=${onlineCpus().text}`,
        ];
      case "BPF_OPEN_RING_BUFFER":
        return this.openRingBuffer(n(0));
      case "SESSION_FDS":
        return this.sessionFds();
      case "KSYM_MATCH":
        return this.ksymMatch(s(0), a.length > 1 ? n(1) : KSYM_MATCH_DEFAULT);
      case "BUNDLE_BEGIN":
        return this.#withBundles((b) => b.begin(s(0), n(1)));
      case "BUNDLE_CHUNK":
        return this.#withBundles((b) => b.chunk(s(0), n(1), s(2)));
      case "BUNDLE_END":
        return this.#withBundles((b) => b.end(s(0)));
      case "BUNDLE_LOAD":
        return this.#withBundles((b) => b.load(s(0), a.slice(1) as string[]));
      case "BPF_ATTACH_PROG":
        return this.#withBundles((b) => b.attachProg(n(0), a.slice(1) as string[]));
    }
    throw new SysError(38, `${name} is not implemented`);
  }

  // ---------------------------------------------------------------- maps

  createMap(type: number, name: string, ks: number, vs: number, max: number, flags: number): Body {
    this.#s.checkRoom();
    for (const [v, what] of [[ks, "key_size"], [vs, "value_size"], [max, "max_entries"]] as const) {
      if (v < 0) throw new SysError(22, `${what} ${v} is negative`);
    }
    const nm = name === "__none__" ? "" : sanitizeName(name);
    const create = (name: string) =>
      bpf.mapCreate({ type, keySize: ks, valueSize: vs, maxEntries: max, flags, name });
    let fd = -1;
    try {
      fd = create(nm);
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
      if (nm && (e.errno === 22 || e.errno === 7)) {
        // Old kernels refuse names: retry without one, as the original did.
        try {
          fd = create("");
        } catch { /* report the first error */ }
      }
      if (fd < 0) {
        throw new SysError(
          e.errno,
          `BPF_MAP_CREATE type ${type} key ${ks} value ${vs} max_entries ${max} flags ${flags}: ` +
            explainMapCreate(e.errno, type, max),
        );
      }
    }
    let info: bpf.MapInfo;
    try {
      info = bpf.mapInfo(fd);
    } catch {
      info = { type, id: 0, keySize: ks, valueSize: vs, maxEntries: max, flags, name: nm };
    }
    this.#s.add({ kind: "map", fd, info });
    return [status("bpf_create_map", fd)];
  }

  #map(fd: number): MapRes {
    const r = this.#s.peek(fd);
    return r?.kind === "map" ? r : this.#s.get(fd, "map"); // get() throws with the reason
  }

  /** Bytes the kernel copies for one value of this map. */
  #valueBytes(m: MapRes): number {
    return bpf.PERCPU_MAP_TYPES.has(m.info.type)
      ? round8(m.info.valueSize) * targetFacts().nPossible
      : m.info.valueSize;
  }

  /** The key argument (base64, or bytes already decoded) checked against the map, or a failure. */
  #key(m: MapRes, k: string | Uint8Array, klen: number, label: string): Uint8Array | Body {
    let key: Uint8Array;
    try {
      key = typeof k === "string" ? decodeBase64Into(k, this.#keyScratch) : k;
    } catch (e) {
      return failure(label, 22, `key: ${(e as Error).message}`, { ret: -22 });
    }
    if (key.length === 0) return failure(label, 22, "key decodes to 0 bytes", { ret: -22 });
    if (key.length !== klen) {
      return failure(label, 22, `key decodes to ${key.length} bytes but klen is ${klen}`);
    }
    if (klen !== m.info.keySize) {
      return failure(label, 22, `klen ${klen} but map fd ${m.fd} has key_size ${m.info.keySize}`);
    }
    return key;
  }

  #checkVlen(m: MapRes, vlen: number, label: string): Body | null {
    const full = this.#valueBytes(m);
    if (vlen === m.info.valueSize || vlen === full) return null;
    const per = bpf.PERCPU_MAP_TYPES.has(m.info.type)
      ? ` (per-CPU map: ${m.info.valueSize} or ${full} = round_up(${m.info.valueSize}, 8) × ${targetFacts().nPossible} possible CPUs of the target)`
      : "";
    return failure(
      label,
      22,
      `vlen ${vlen} but map fd ${m.fd} has value_size ${m.info.valueSize}${per}`,
    );
  }

  update(fd: number, k64: string, klen: number, v64: string, vlen: number, flags: bigint): Body {
    const L = "bpf_update_elem";
    const m = this.#map(fd);
    const key = this.#key(m, k64, klen, L);
    if (!(key instanceof Uint8Array)) return key;
    let value: Uint8Array;
    try {
      value = decodeBase64Into(v64, this.#valueScratch);
    } catch (e) {
      return failure(L, 22, `value: ${(e as Error).message}`, { ret: -22 });
    }
    if (value.length === 0) return failure(L, 22, "value decodes to 0 bytes", { ret: -22 });
    if (value.length !== vlen) {
      return failure(L, 22, `value decodes to ${value.length} bytes but vlen is ${vlen}`);
    }
    const bad = this.#checkVlen(m, vlen, L);
    if (bad) return bad;
    const full = this.#valueBytes(m);
    if (value.length !== full) {
      // Per-CPU map given one value: the same value on every possible CPU.
      const v = new Uint8Array(full);
      const step = round8(m.info.valueSize);
      for (let o = 0; o < full; o += step) v.set(value, o);
      value = v;
    }
    if (FD_VALUED_MAPS.has(m.info.type) && value.length >= 4) {
      const ref = new DataView(value.buffer, value.byteOffset).getUint32(0, true);
      const kinds = m.info.type === bpf.MapType.PROG_ARRAY
        ? ["prog"] as const
        : m.info.type === bpf.MapType.PERF_EVENT_ARRAY
        ? ["perf_reader", "attachment"] as const
        : ["map"] as const;
      this.#s.get(ref, ...kinds);
    }
    try {
      bpf.mapUpdate(fd, key, value, flags);
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
      throw new SysError(e.errno, explainUpdate(e.errno, flags, m));
    }
    return [status(L, 0)];
  }

  lookup(fd: number, k64: string, klen: number, vlen: number): Body {
    const r = this.#lookupValue(fd, k64, klen, vlen);
    return r instanceof Uint8Array ? [encodeBase64(r)] : r;
  }

  /**
   * BPF_LOOKUP_ELEM for the hot path, with the key already decoded (by
   * `parseLookupBytes` of protocol/commands.ts): on success the value itself
   * (a view of the kernel-call buffer, valid until the next element command)
   * instead of a body, so that the caller can encode it straight into its
   * output; on failure the same body as {@link run} gives. Never throws.
   */
  lookupValue(fd: number, key: Uint8Array, klen: number, vlen: number): Uint8Array | Body {
    try {
      return this.#lookupValue(fd, key, klen, vlen);
    } catch (e) {
      return this.#failed("BPF_LOOKUP_ELEM", e);
    }
  }

  #lookupValue(
    fd: number,
    k: string | Uint8Array,
    klen: number,
    vlen: number,
  ): Uint8Array | Body {
    const L = "bpf_lookup_elem";
    const m = this.#map(fd);
    const key = this.#key(m, k, klen, L);
    if (!(key instanceof Uint8Array)) return key;
    const bad = this.#checkVlen(m, vlen, L);
    if (bad) return bad;
    try {
      return bpf.mapLookupView(fd, key, this.#valueBytes(m));
    } catch (e) {
      if (e instanceof SysError && e.errno === 2) {
        return failure(L, 2, "no such key");
      }
      throw e;
    }
  }

  firstKey(fd: number, klen: number, vlen: number, dumpAll: number): Body {
    const L = "bpf_get_first_key";
    const m = this.#map(fd);
    if (klen !== m.info.keySize) {
      return failure(L, 22, `klen ${klen} but map fd ${fd} has key_size ${m.info.keySize}`);
    }
    if (dumpAll !== 1) {
      const k = bpf.mapNextKey(fd, null, m.info.keySize);
      return k ? [encodeBase64(k)] : failure(L, 2, "the map is empty");
    }
    const bad = this.#checkVlen(m, vlen, L);
    if (bad) return bad;
    const pages: string[][] = [];
    this.#pages(m, (keys, values, count) => {
      pages.push(encodeBase64Pairs(keys, m.info.keySize, values, this.#valueBytes(m), count));
    });
    if (pages.length === 0) return failure(L, 2, "the map is empty");
    const out = pages.flat();
    out.push(""); // the original ends the dump with an empty line
    return out;
  }

  /**
   * Visits every entry, a page at a time: `count` keys back to back in
   * `keys`, their values (of {@link #valueBytes}) back to back in `values`.
   * Batch lookups where the kernel has them (pages of up to 8192 entries),
   * else key iteration (pages of one).
   */
  #pages(m: MapRes, visit: (keys: Uint8Array, values: Uint8Array, count: number) => void): void {
    const ks = m.info.keySize;
    const vb = this.#valueBytes(m);
    if (targetFacts().batchOps && BATCHABLE.has(m.info.type)) {
      let token: Uint8Array | null = null;
      let max = Math.max(64, Math.min(m.info.maxEntries, 8192));
      let first = true;
      while (first || token) {
        let page: bpf.BatchPage;
        try {
          page = bpf.mapLookupBatch(m.fd, token, ks, vb, max);
        } catch (e) {
          if (e instanceof SysError && e.errno === 28 /* ENOSPC: bucket larger than page */) {
            max *= 2;
            continue;
          }
          if (first && e instanceof SysError && (e.errno === 22 || e.errno === 524)) break;
          throw e;
        }
        if (page.count > 0) visit(page.keys, page.values, page.count);
        if (!page.next) return;
        token = page.next;
        first = false;
      }
      if (!first) return;
    }
    let k = bpf.mapNextKey(m.fd, null, ks);
    let guard = 0;
    const limit = m.info.maxEntries * 4 + 16;
    while (k && guard++ < limit) {
      try {
        visit(k, bpf.mapLookup(m.fd, k, vb), 1);
      } catch (e) {
        if (!(e instanceof SysError && e.errno === 2)) throw e; // deleted under us: skip
      }
      k = bpf.mapNextKey(m.fd, k, ks);
    }
  }

  nextKey(fd: number, k64: string, klen: number): Body {
    const L = "bpf_get_next_key";
    const m = this.#map(fd);
    const key = this.#key(m, k64, klen, L);
    if (!(key instanceof Uint8Array)) return key;
    const n = bpf.mapNextKey(fd, key, m.info.keySize);
    return n ? [encodeBase64(n)] : failure(L, 2, "no key after this one (end of map)");
  }

  deleteElem(fd: number, k64: string, klen: number): Body {
    const L = "bpf_delete_elem";
    const m = this.#map(fd);
    const key = this.#key(m, k64, klen, L);
    if (!(key instanceof Uint8Array)) return key;
    try {
      bpf.mapDelete(fd, key);
    } catch (e) {
      if (e instanceof SysError && e.errno === 2) return failure(L, 2, "no such key");
      if (e instanceof SysError && e.errno === 22 && NOT_DELETABLE.has(m.info.type)) {
        return failure(L, 22, "elements of array maps cannot be deleted (overwrite them instead)");
      }
      throw e;
    }
    return [status(L, 0)];
  }

  clearMap(fd: number, klen: number): Body {
    const L = "bpf_clear_map";
    const m = this.#map(fd);
    if (klen !== m.info.keySize) {
      return failure(L, 22, `klen ${klen} but map fd ${fd} has key_size ${m.info.keySize}`);
    }
    if (NOT_DELETABLE.has(m.info.type)) {
      return failure(L, 22, "array maps cannot be cleared (their elements cannot be deleted)");
    }
    // Snapshot the keys first: bounded even while a program keeps adding entries.
    const keys: Uint8Array[] = [];
    let k = bpf.mapNextKey(fd, null, m.info.keySize);
    while (k && keys.length <= m.info.maxEntries) {
      keys.push(k);
      k = bpf.mapNextKey(fd, k, m.info.keySize);
    }
    let n = 0;
    for (const key of keys) {
      try {
        bpf.mapDelete(fd, key);
        n++;
      } catch (e) {
        if (!(e instanceof SysError && e.errno === 2)) throw e;
      }
    }
    return [status(L, n)];
  }

  mapDump(fd: number): Body {
    const L = "bpf_map_dump";
    const m = this.#map(fd);
    const ks = m.info.keySize;
    const vb = this.#valueBytes(m);
    const perLine = Math.max(1, Math.floor((MAX_LINE / 2) / Math.max(1, ks + vb)));
    const lines: string[] = [];
    // The current line's entries, as runs of whole pages (not one piece per entry).
    let keys: Uint8Array[] = [];
    let vals: Uint8Array[] = [];
    let inLine = 0;
    let count = 0;
    const flush = () => {
      if (!inLine) return;
      lines.push(`${inLine} ${encodeBase64(concat(keys))} ${encodeBase64(concat(vals))}`);
      keys = [];
      vals = [];
      inLine = 0;
    };
    this.#pages(m, (pageKeys, pageValues, n) => {
      for (let i = 0; i < n;) {
        const take = Math.min(n - i, perLine - inLine);
        keys.push(pageKeys.subarray(i * ks, (i + take) * ks));
        vals.push(pageValues.subarray(i * vb, (i + take) * vb));
        inLine += take;
        count += take;
        i += take;
        if (inLine === perLine) flush();
      }
    });
    flush();
    return [status(L, count), ...lines];
  }

  // ---------------------------------------------------------------- programs

  progLoad(
    type: number,
    name: string,
    len: number,
    license: string,
    kver: number,
    b64: string,
  ): Body {
    const L = "bpf_prog_load";
    this.#s.checkRoom();
    let insns: Uint8Array;
    try {
      insns = decodeBase64(b64);
    } catch (e) {
      return failure(L, 22, `insns: ${(e as Error).message}`);
    }
    if (insns.length === 0) return failure(L, 22, "insns decode to 0 bytes");
    if (insns.length !== len) {
      return failure(
        L,
        22,
        `prog_len is ${len} but the instructions decode to ${insns.length} bytes`,
      );
    }
    if (len % 8 !== 0) return failure(L, 22, `prog_len ${len} is not a multiple of 8`);
    // Map references (ld_imm64 with BPF_PSEUDO_MAP_FD/VALUE) must be this session's maps.
    const dv = new DataView(insns.buffer, insns.byteOffset, insns.length);
    for (let i = 0; i < len / 8; i++) {
      const code = insns[i * 8];
      const src = insns[i * 8 + 1] >> 4;
      if (code === 0x18 && (src === 1 || src === 2)) {
        const ref = dv.getInt32(i * 8 + 4, true);
        if (this.#s.peek(ref)?.kind !== "map") {
          return failure(
            L,
            9,
            `instruction ${i} references fd ${ref}, which is not a map of this session`,
          );
        }
      }
      if (code === 0x18) i++; // second half of ld_imm64
    }
    const nm = name === "__none__" ? "" : sanitizeName(name);
    const fd = bpf.progLoad({ type, insns, license, kernVersion: kver, name: nm });
    this.#s.add({ kind: "prog", fd, type, name: nm });
    return [status(L, fd)];
  }

  attach(label: string, progFd: number, key: string, f: (prog: number) => probes.Attachment): Body {
    this.#s.get(progFd, "prog");
    this.#s.checkRoom();
    const att = f(progFd);
    this.#s.add({ kind: "attachment", fd: att.fd, att, key });
    return [status(label, att.fd)];
  }

  detachByKey(label: string, key: string): Body {
    for (const r of this.#s.list()) {
      if (r.kind === "attachment" && r.key === key) this.#s.close(r.fd);
    }
    return [status(label, 0)];
  }

  attachPerfEvent(a: ArgValue[]): Body {
    const [prog, type, config, period, freq, pid, cpu, group] = a as [
      number,
      number,
      number,
      bigint,
      bigint,
      number,
      number,
      number,
    ];
    if (group !== -1) this.#s.get(group, "attachment");
    return this.attach(
      "bpf_attach_perf_event",
      prog,
      `perf:${type}:${config}`,
      (p) =>
        probes.attachPerfEvent(p, {
          type,
          config,
          samplePeriod: period,
          sampleFreq: freq,
          pid,
          cpu,
          groupFd: group,
        }),
    );
  }

  // ---------------------------------------------------------------- readers

  openPerfBuffer(pid: number, cpu: number, pages: number): Body {
    this.#s.checkRoom();
    let reader: PerfReader;
    try {
      reader = PerfReader.open(pid, cpu, pages);
    } catch (e) {
      if (e instanceof SysError && (e.errno === 22 || e.errno === 19) && cpu >= 0) {
        const online = onlineCpus();
        if (!online.cpus.includes(cpu)) {
          throw new SysError(
            e.errno,
            `cpu ${cpu} is not online on the target (online: ${online.text})`,
          );
        }
      }
      throw e;
    }
    this.#s.add({ kind: "perf_reader", fd: reader.fd, reader });
    return [status("bpf_open_perf_buffer", reader.fd)];
  }

  openRingBuffer(fd: number): Body {
    const m = this.#map(fd);
    if (m.info.type !== bpf.MapType.RINGBUF) {
      throw new SysError(22, `map fd ${fd} is type ${m.info.type}, not a RINGBUF (27)`);
    }
    m.ring ??= RingBufReader.open(fd, m.info.maxEntries);
    return [status("bpf_open_ring_buffer", fd)];
  }

  #drain(fd: number, out: string[]): void {
    const r = this.#s.peek(fd);
    const emit = (s: Sample) => out.push(`${fd} ${s.size} ${encodeBase64(s.data)}`);
    let lost = 0;
    if (r?.kind === "perf_reader") lost = r.reader.drain(emit).lost;
    else if (r?.kind === "map" && r.ring) r.ring.drain(emit);
    if (lost > 0) {
      if (this.#s.protocol >= 2) out.push(`${fd} lost ${lost}`);
      else this.#io.warn?.(`bpfd: lost ${lost} samples on perf reader fd ${fd}`);
    }
  }

  #pending(fd: number): boolean {
    const r = this.#s.peek(fd);
    if (r?.kind === "perf_reader") return r.reader.pending();
    if (r?.kind === "map" && r.ring) return r.ring.pending();
    return false;
  }

  async poll(timeout: number, n: number, fds: number[]): Promise<Body> {
    if (n < 0) throw new ParseProblem(`PERF_READER_POLL: n ${n} is negative`);
    if (fds.length < n) {
      throw new ParseProblem(`PERF_READER_POLL: n is ${n} but ${fds.length} fds follow`);
    }
    const use = fds.slice(0, n);
    for (const fd of use) {
      const r = this.#s.peek(fd);
      if (!(r?.kind === "perf_reader" || (r?.kind === "map" && r.ring))) {
        throw new SysError(
          9,
          `fd ${fd} is not a perf or ring buffer reader of this session ` +
            "(BPF_OPEN_PERF_BUFFER / BPF_OPEN_RING_BUFFER)",
        );
      }
    }
    const out: string[] = [];
    const deadline = timeout < 0 ? Infinity : performance.now() + timeout;
    while (true) {
      const ready = use.filter((fd) => this.#pending(fd));
      if (ready.length) {
        for (const fd of ready) this.#drain(fd, out);
        return out;
      }
      // A command already waiting in the input ends the poll at once.
      if (this.#io.pollInput() || this.#io.stopping?.()) return out;
      const left = deadline - performance.now();
      if (left <= 0 || !this.#io.wait) return out;
      const w = await this.#io.wait(use, Math.min(left, 200));
      if (w.stdin) {
        for (const fd of use) if (this.#pending(fd)) this.#drain(fd, out);
        return out;
      }
      if (!w.ready.size) await this.#io.yieldNow();
    }
  }

  // ---------------------------------------------------------------- files and symbols

  readFile(path: string): Body {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (e) {
      return openFailed(`cannot read ${path}: ${(e as Error).message}`);
    }
    if (text.length === 0) return [];
    return (text.endsWith("\n") ? text.slice(0, -1) : text).split("\n");
  }

  kprobesBlacklist(hint: string): Body {
    const candidates = [
      `${hint}/../kprobes/blacklist`,
      ...mountsOf("debugfs").map((d) => `${d}/kprobes/blacklist`),
    ];
    for (const c of candidates) {
      try {
        Deno.statSync(c);
        return this.readFile(c);
      } catch { /* next */ }
    }
    return openFailed(
      targetFacts().kprobePmu || targetFacts().kprobeEvents
        ? "kprobes/blacklist not found: mount debugfs (mount -t debugfs none /sys/kernel/debug)"
        : "this kernel has no kprobes, so no kprobe blacklist",
    );
  }

  listEvents(hint: string, category?: string): Body {
    let root: string;
    try {
      root = tracefsFor(hint);
    } catch (e) {
      return notRecognized((e as Error).message);
    }
    if (category !== undefined && (category.includes("/") || category === "..")) {
      return notRecognized(`invalid category ${showToken(category)}`);
    }
    const dir = category === undefined ? `${root}/events` : `${root}/events/${category}`;
    const names = listDirs(dir);
    if (!names) {
      return notRecognized(
        category === undefined
          ? `cannot list ${dir}`
          : `no tracepoint category ${showToken(category)} in ${root}/events`,
      );
    }
    return names;
  }

  #kallsyms(): Kallsyms {
    if (this.#ksyms) return this.#ksyms;
    try {
      return (this.#ksyms = Kallsyms.load());
    } catch (e) {
      throw new SysError(13, `cannot read /proc/kallsyms: ${(e as Error).message}`);
    }
  }

  ksymName(addr: bigint): Body {
    const L = "GET_KSYM_NAME";
    const r = this.#kallsyms().resolveAddr(addr);
    if (!r) return failure(L, 2, `no kernel symbol at 0x${addr.toString(16)}`);
    return [status(L, 0), `${r.name};${r.offset};${r.module}`];
  }

  ksymAddr(name: string): Body {
    const L = "GET_KSYM_ADDR";
    const a = this.#kallsyms().resolveName(name);
    if (a === null) return failure(L, 2, `no kernel symbol named ${name}`);
    return [status(L, 0), a.toString()];
  }

  /** KSYM_MATCH: kernel functions matching a glob (runtime/symbols/ksym_match.ts). */
  ksymMatch(pattern: string, max: number): Body {
    const L = "ksym_match";
    if (max < 0 || max > KSYM_MATCH_MAX) {
      return failure(L, 22, `max ${max} is out of range: give 0 to ${KSYM_MATCH_MAX}`);
    }
    const m = matchKernelFunctions(pattern, max);
    return [
      status(L, m.names.length),
      `source=${m.source} matched=${m.matched} excluded=${m.excluded}`,
      ...m.names,
    ];
  }

  usymName(pid: number, addr: bigint): Body {
    const L = "GET_USYM_NAME";
    const r = usym.resolveAddr(pid, addr);
    if (!r) return failure(L, 2, `no symbol at 0x${addr.toString(16)} in pid ${pid}`);
    return [status(L, 0), `${r.name};${r.offset};${r.module}`];
  }

  usymAddr(pid: number, name: string, module: string): Body {
    const L = "GET_USYM_ADDR";
    const a = usym.resolveName(pid, name, module);
    if (a === null) return failure(L, 2, `no symbol ${name} in ${module} (pid ${pid})`);
    return [status(L, 0), a.toString()];
  }

  // ---------------------------------------------------------------- session

  hello(args: string[]): Body {
    this.#s.protocol = PROTOCOL_VERSION;
    const t = targetFacts();
    const b = (x: boolean) => (x ? 1 : 0);
    let tfs = "";
    try {
      tfs = tracefsFor();
    } catch (e) {
      tfs = `unavailable (${(e as Error).message})`;
    }
    return [
      status("hello", 0),
      `protocol=${PROTOCOL_VERSION}`,
      `runtime=bpfpack-bpfd ${RUNTIME_VERSION}`,
      `deno=${Deno.version.deno}`,
      `client=${args.join(" ")}`,
      `arch=${t.machine}`,
      `release=${t.release}`,
      `version=${t.version}`,
      `possible_cpus=${t.possibleCpus}`,
      `online_cpus=${onlineCpus().text}`,
      `page_size=${t.pageSize}`,
      `btf=${b(t.btf)}`,
      `kprobe_pmu=${b(t.kprobePmu)}`,
      `uprobe_pmu=${b(t.uprobePmu)}`,
      `kprobe_events=${b(t.kprobeEvents)}`,
      `uprobe_events=${b(t.uprobeEvents)}`,
      `ringbuf=${b(t.ringbuf)}`,
      `batch_ops=${b(t.batchOps)}`,
      `link_api=${b(t.linkApi)}`,
      `tracefs=${tfs}`,
      `max_line=${MAX_LINE}`,
      `pid=${Deno.pid}`,
      `commands=${Object.keys(COMMANDS).join(",")},exit`,
    ];
  }

  sessionFds(): Body {
    const rows = this.#s.list().sort((x, y) => x.fd - y.fd).map((r) => {
      switch (r.kind) {
        case "map":
          return `${r.fd} map type=${r.info.type} name=${
            r.info.name || "-"
          } key=${r.info.keySize} value=${r.info.valueSize} max=${r.info.maxEntries}${
            r.ring ? " ring" : ""
          }`;
        case "prog":
          return `${r.fd} prog type=${r.type} name=${r.name || "-"}`;
        case "attachment":
          return `${r.fd} attachment ${r.att.what}${
            r.att.legacyEvent ? ` event=${r.att.legacyEvent.name}` : ""
          }`;
        case "perf_reader":
          return `${r.fd} perf_reader cpu=${r.reader.cpu} pages=${r.reader.pages} lost=${r.reader.lostTotal}`;
        default:
          return `${r.fd} ${r.kind} ${r.what}`;
      }
    });
    return [status("session_fds", rows.length), ...rows];
  }
}

const BATCHABLE = new Set<number>([
  bpf.MapType.HASH,
  bpf.MapType.ARRAY,
  bpf.MapType.PERCPU_HASH,
  bpf.MapType.PERCPU_ARRAY,
  bpf.MapType.LRU_HASH,
  bpf.MapType.LRU_PERCPU_HASH,
]);
/** Arrays whose elements always exist (deleting one is EINVAL). */
const NOT_DELETABLE = new Set<number>([bpf.MapType.ARRAY, bpf.MapType.PERCPU_ARRAY]);
const ARRAY_LIKE = new Set<number>([
  bpf.MapType.ARRAY,
  bpf.MapType.PERCPU_ARRAY,
  bpf.MapType.PROG_ARRAY,
  bpf.MapType.PERF_EVENT_ARRAY,
  bpf.MapType.CGROUP_ARRAY,
]);

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Kernel object names: `[A-Za-z0-9_.]`, at most 15 bytes. */
export function sanitizeName(name: string): string {
  return name.replace(/[^A-Za-z0-9_.]/g, "_").slice(0, 15);
}

function explainMapCreate(e: number, type: number, max: number): string {
  if (e === 22 && max === 0) return "max_entries must be greater than 0";
  if (e === 22) {
    return "the kernel refused these parameters (type, sizes or flags invalid for this map type)";
  }
  if (e === 1) return "permission denied: run bpfd as root (or with CAP_BPF)";
  if (e === 12) return "out of memory: lower max_entries";
  if (e === 524 || e === 95) return `map type ${type} is not supported by this kernel`;
  return "the kernel refused the map";
}

function explainUpdate(e: number, flags: bigint, m: MapRes): string {
  if (e === 17) return `the key exists and flags=${flags} (BPF_NOEXIST) forbids replacing it`;
  if (e === 2 && flags === 2n) return "the key does not exist and flags=2 (BPF_EXIST) needs it to";
  if ((e === 7 || e === 22) && ARRAY_LIKE.has(m.info.type)) {
    return `index out of range (max_entries ${m.info.maxEntries}) or invalid flags ${flags}`;
  }
  if (e === 7) return `the map is full (max_entries ${m.info.maxEntries})`;
  return `BPF_MAP_UPDATE_ELEM failed (flags ${flags})`;
}

function explainProgLoad(e: bpf.ProgLoadError): string {
  if ("program" in e) return e.message; // from the bundle loader: names the program
  if (e.errno === 1) return "permission denied: run bpfd as root (or with CAP_BPF + CAP_PERFMON)";
  if (e.errno === 7) return "program too large for this kernel";
  if (e.log) return "the verifier rejected the program (its log follows)";
  return "the kernel refused the program (bad program type or attributes)";
}
