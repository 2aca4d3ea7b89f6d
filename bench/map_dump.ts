/**
 * Benchmark 2: dumping a whole hash map (u32 key → u64 value, 100,000 entries
 * by default) from the runtime to the host, decoded into a JS `Map`, three
 * ways: (a) one `BPF_MAP_DUMP`, (b) one `BPF_GET_FIRST_KEY fd 4 8 1` (the
 * original's dump_all), (c) per-key round trips `BPF_LOOKUP_ELEM` +
 * `BPF_GET_NEXT_KEY` (limited to a number of keys and extrapolated). Each is
 * timed end to end from the host client ({@link RawClient}) including the
 * decoding. The baseline is `BPF_MAP_LOOKUP_BATCH` in the bench process itself
 * (`mapLookupBatch` of runtime/kernel/bpf.ts) on an identical map.
 *
 * @example
 * ```ts
 * import { benchDump } from "./map_dump.ts";
 * const { rows } = await benchDump({ entries: 10_000, walk: 1_000, reps: 2 });
 * console.log(rows);
 * ```
 * @module
 */

import { RawClient } from "../tools/client/raw.ts";
import * as bpf from "../runtime/kernel/bpf.ts";
import { libc } from "../runtime/kernel/ffi.ts";
import { runtimeCommand } from "./native.ts";
import { median, nowMs, procStatusKb, type Row, row } from "./stats.ts";

/** Settings of the dump benchmark. */
export interface DumpOptions {
  /** Entries in the map (default 100,000). */
  entries?: number;
  /** Keys walked by (c) before extrapolating to the whole map (default 10,000). */
  walk?: number;
  /** Timed repetitions of the raw baseline, (a) and (b); the median is reported (default 7). */
  reps?: number;
  /** BPF_UPDATE_ELEM lines per pipelined write when filling (default 5,000). */
  chunk?: number;
  /** Entries per `BPF_MAP_LOOKUP_BATCH` call of the baseline (default 8,192, as the runtime). */
  batch?: number;
  /** Progress messages. */
  log?: (msg: string) => void;
}

/** Extra figures of the dump benchmark (ms unless named otherwise). */
export interface DumpRaw {
  entries: number;
  fillPipelinedMs: number;
  fillInProcessMs: number;
  rawBatchMs: number[];
  rawBatchToMapMs: number[];
  mapDumpMs: number[];
  mapDumpReceiveMs: number[];
  mapDumpDecodeMs: number[];
  mapDumpBytes: number;
  dumpAllMs: number[];
  dumpAllReceiveMs: number[];
  dumpAllDecodeMs: number[];
  dumpAllBytes: number;
  walkKeys: number;
  walkMs: number;
  walkExtrapolatedMs: number;
  runtimeRssAfterMiB: number | null;
}

/** The value stored under `key`. */
export function valueOf(key: number): bigint {
  return (BigInt(key) * 0x9E3779B97F4A7C15n + 1n) & 0xFFFF_FFFF_FFFF_FFFFn;
}

function checkMap(m: Map<number, bigint>, n: number, what: string): void {
  if (m.size !== n) throw new Error(`${what}: decoded ${m.size} entries, expected ${n}`);
  for (let k = 0; k < n; k += Math.max(1, Math.floor(n / 997))) {
    if (m.get(k) !== valueOf(k)) throw new Error(`${what}: wrong value for key ${k}`);
  }
}

function failed(body: string[]): boolean {
  return body.length === 0 || /ret=-\d/.test(body[0]) || body[0].startsWith("Command not");
}

function bodyBytes(body: string[]): number {
  let n = 0;
  for (const l of body) n += l.length + 1;
  return n;
}

/** Decodes a `BPF_MAP_DUMP` body of a u32 → u64 map. */
export function decodeMapDump(body: string[]): Map<number, bigint> {
  const m = /^bpf_map_dump: ret=(\d+)/.exec(body[0] ?? "");
  if (!m) throw new Error(`BPF_MAP_DUMP failed: ${body.slice(0, 3).join(" | ")}`);
  const out = new Map<number, bigint>();
  for (let i = 1; i < body.length; i++) {
    const [ns, k64, v64] = body[i].split(" ");
    const n = Number(ns);
    const keys = Uint8Array.fromBase64(k64);
    const vals = Uint8Array.fromBase64(v64);
    if (keys.length !== n * 4 || vals.length !== n * 8) {
      throw new Error(`BPF_MAP_DUMP line ${i}: ${n} entries but ${keys.length}/${vals.length} B`);
    }
    const kd = new DataView(keys.buffer, keys.byteOffset, keys.byteLength);
    const vd = new DataView(vals.buffer, vals.byteOffset, vals.byteLength);
    for (let j = 0; j < n; j++) out.set(kd.getUint32(j * 4, true), vd.getBigUint64(j * 8, true));
  }
  if (out.size !== Number(m[1])) throw new Error(`BPF_MAP_DUMP: ret=${m[1]}, got ${out.size}`);
  return out;
}

const B64 = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) {
  B64["ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".charCodeAt(i)] = i;
}
const scratch = new Uint8Array(16);
const scratchView = new DataView(scratch.buffer);

/**
 * Decodes a short base64 token (at most 16 bytes) into a shared scratch buffer
 * without allocating; returns the byte count. For the one-value-per-line
 * responses, where `Uint8Array.fromBase64` per line would dominate.
 */
function decodeSmall(s: string): number {
  let acc = 0;
  let bits = 0;
  let n = 0;
  for (let i = 0; i < s.length && n < 16; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? B64[c] : -1;
    if (v < 0) {
      if (c === 61) break;
      throw new Error(`bad base64 ${JSON.stringify(s)}`);
    }
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      scratch[n++] = (acc >> bits) & 0xff;
    }
  }
  return n;
}

function decodeU32(b64: string): number {
  if (decodeSmall(b64) !== 4) throw new Error(`not a 4-byte key: ${b64}`);
  return scratchView.getUint32(0, true);
}

function decodeU64(b64: string): bigint {
  if (decodeSmall(b64) !== 8) throw new Error(`not an 8-byte value: ${b64}`);
  return scratchView.getBigUint64(0, true);
}

/** Decodes a `BPF_GET_FIRST_KEY … 1` body (key / value lines, then an empty line). */
export function decodeDumpAll(body: string[]): Map<number, bigint> {
  if (failed(body)) throw new Error(`dump_all failed: ${body.slice(0, 3).join(" | ")}`);
  const out = new Map<number, bigint>();
  for (let i = 0; i + 1 < body.length && body[i] !== ""; i += 2) {
    out.set(decodeU32(body[i]), decodeU64(body[i + 1]));
  }
  return out;
}

/** The raw baseline: the whole map through `BPF_MAP_LOOKUP_BATCH` pages; returns the entry count. */
function rawBatch(fd: number, batch: number, visit?: (p: bpf.BatchPage) => void): number {
  let token: Uint8Array | null = null;
  let n = 0;
  do {
    const page: bpf.BatchPage = bpf.mapLookupBatch(fd, token, 4, 8, batch);
    n += page.count;
    visit?.(page);
    token = page.next;
  } while (token);
  return n;
}

/** Runs the dump benchmark. */
export async function benchDump(opts: DumpOptions = {}): Promise<{ rows: Row[]; raw: DumpRaw }> {
  const N = opts.entries ?? 100_000;
  const walk = Math.min(N, opts.walk ?? 10_000);
  const reps = Math.max(1, opts.reps ?? 7);
  const chunk = opts.chunk ?? 5_000;
  const batch = opts.batch ?? 8192;
  const log = opts.log ?? (() => {});

  // Keys and values as base64, shared by both fills.
  const k64: string[] = new Array(N);
  const v64: string[] = new Array(N);
  const kb = new Uint8Array(4);
  const vb = new Uint8Array(8);
  const kdv = new DataView(kb.buffer);
  const vdv = new DataView(vb.buffer);
  for (let k = 0; k < N; k++) {
    kdv.setUint32(0, k, true);
    vdv.setBigUint64(0, valueOf(k), true);
    k64[k] = kb.toBase64();
    v64[k] = vb.toBase64();
  }

  // The baseline's own map, filled with direct syscalls.
  log(`dump: in-process map of ${N} entries`);
  const own = bpf.mapCreate({
    type: 1,
    keySize: 4,
    valueSize: 8,
    maxEntries: N,
    name: "dump_base",
  });
  const c = RawClient.spawn(runtimeCommand(), { stderr: "inherit", timeoutMs: 300_000 });
  try {
    let t = nowMs();
    for (let k = 0; k < N; k++) {
      kdv.setUint32(0, k, true);
      vdv.setBigUint64(0, valueOf(k), true);
      bpf.mapUpdate(own, kb, vb, 0);
    }
    const fillInProcessMs = nowMs() - t;

    // The runtime's map, filled with pipelined BPF_UPDATE_ELEM.
    const created = await c.send(`BPF_CREATE_MAP 1 dump_bench 4 8 ${N} 0`);
    const fd = Number(/ret=(\d+)/.exec(created[0] ?? "")?.[1] ?? -1);
    if (!(fd >= 0)) throw new Error(`BPF_CREATE_MAP failed: ${created.join(" | ")}`);
    log(`dump: filling the runtime's map (fd ${fd}) with pipelined BPF_UPDATE_ELEM`);
    t = nowMs();
    for (let s = 0; s < N; s += chunk) {
      const lines: string[] = [];
      for (let k = s; k < Math.min(N, s + chunk); k++) {
        lines.push(`BPF_UPDATE_ELEM ${fd} ${k64[k]} 4 ${v64[k]} 8 0`);
      }
      const res = await c.pipeline(lines);
      const bad = res.findIndex((b) => b[0] !== "bpf_update_elem: ret=0");
      if (bad >= 0) throw new Error(`${lines[bad]} answered ${res[bad].join(" | ")}`);
    }
    const fillPipelinedMs = nowMs() - t;

    // Baseline: raw batch lookups (and, for reference, decoding them into a Map).
    log(`dump: raw BPF_MAP_LOOKUP_BATCH × ${reps}`);
    const rawBatchMs: number[] = [];
    const rawBatchToMapMs: number[] = [];
    for (let r = -1; r < reps; r++) {
      t = nowMs();
      const n = rawBatch(own, batch);
      const dt = nowMs() - t;
      if (n !== N) throw new Error(`raw batch: ${n} entries, expected ${N}`);
      if (r >= 0) rawBatchMs.push(dt);
    }
    for (let r = -1; r < reps; r++) {
      t = nowMs();
      const m = new Map<number, bigint>();
      rawBatch(own, batch, (p) => {
        const kd = new DataView(p.keys.buffer, p.keys.byteOffset, p.keys.byteLength);
        const vd = new DataView(p.values.buffer, p.values.byteOffset, p.values.byteLength);
        for (let j = 0; j < p.count; j++) {
          m.set(kd.getUint32(j * 4, true), vd.getBigUint64(j * 8, true));
        }
      });
      const dt = nowMs() - t;
      checkMap(m, N, "raw batch");
      if (r >= 0) rawBatchToMapMs.push(dt);
    }

    // (a) BPF_MAP_DUMP.
    log(`dump: (a) BPF_MAP_DUMP × ${reps}`);
    const mapDumpMs: number[] = [];
    const mapDumpReceiveMs: number[] = [];
    const mapDumpDecodeMs: number[] = [];
    let mapDumpBytes = 0;
    for (let r = -1; r < reps; r++) {
      t = nowMs();
      const body = await c.send(`BPF_MAP_DUMP ${fd}`);
      const t1 = nowMs();
      const m = decodeMapDump(body);
      const t2 = nowMs();
      checkMap(m, N, "BPF_MAP_DUMP");
      mapDumpBytes = bodyBytes(body);
      if (r >= 0) {
        mapDumpMs.push(t2 - t);
        mapDumpReceiveMs.push(t1 - t);
        mapDumpDecodeMs.push(t2 - t1);
      }
    }

    // (b) BPF_GET_FIRST_KEY with dump_all.
    log(`dump: (b) BPF_GET_FIRST_KEY ${fd} 4 8 1 × ${reps}`);
    const dumpAllMs: number[] = [];
    const dumpAllReceiveMs: number[] = [];
    const dumpAllDecodeMs: number[] = [];
    let dumpAllBytes = 0;
    for (let r = -1; r < reps; r++) {
      t = nowMs();
      const body = await c.send(`BPF_GET_FIRST_KEY ${fd} 4 8 1`);
      const t1 = nowMs();
      const m = decodeDumpAll(body);
      const t2 = nowMs();
      checkMap(m, N, "dump_all");
      dumpAllBytes = bodyBytes(body);
      if (r >= 0) {
        dumpAllMs.push(t2 - t);
        dumpAllReceiveMs.push(t1 - t);
        dumpAllDecodeMs.push(t2 - t1);
      }
    }

    // (c) Key by key: GET_FIRST_KEY, then LOOKUP + GET_NEXT_KEY per key.
    log(`dump: (c) walking ${walk} keys with BPF_LOOKUP_ELEM + BPF_GET_NEXT_KEY`);
    t = nowMs();
    const walked = new Map<number, bigint>();
    let first = await c.send(`BPF_GET_FIRST_KEY ${fd} 4 8 0`);
    if (failed(first)) throw new Error(`BPF_GET_FIRST_KEY failed: ${first.join(" | ")}`);
    let key = first[0];
    while (walked.size < walk) {
      const v = await c.send(`BPF_LOOKUP_ELEM ${fd} ${key} 4 8`);
      if (failed(v)) throw new Error(`BPF_LOOKUP_ELEM failed: ${v.join(" | ")}`);
      walked.set(decodeU32(key), decodeU64(v[0]));
      if (walked.size >= walk) break;
      first = await c.send(`BPF_GET_NEXT_KEY ${fd} ${key} 4`);
      if (failed(first)) break;
      key = first[0];
    }
    const walkMs = nowMs() - t;
    for (const [k, v] of walked) if (v !== valueOf(k)) throw new Error(`walk: wrong value at ${k}`);
    const walkExtrapolatedMs = walkMs * N / walked.size;
    const pid = c.child?.pid;
    const rss = pid ? procStatusKb(pid) : null;

    const raw: DumpRaw = {
      entries: N,
      fillPipelinedMs,
      fillInProcessMs,
      rawBatchMs,
      rawBatchToMapMs,
      mapDumpMs,
      mapDumpReceiveMs,
      mapDumpDecodeMs,
      mapDumpBytes,
      dumpAllMs,
      dumpAllReceiveMs,
      dumpAllDecodeMs,
      dumpAllBytes,
      walkKeys: walked.size,
      walkMs,
      walkExtrapolatedMs,
      runtimeRssAfterMiB: rss === null ? null : rss / 1024,
    };
    const base = {
      bench: "dump",
      unit: "ms" as const,
      baseline: median(rawBatchMs),
      baselineName: `raw BPF_MAP_LOOKUP_BATCH in-process (${batch}/call)`,
    };
    const split = (all: number[], recv: number[], dec: number[], bytes: number) =>
      `receive ${median(recv).toFixed(1)} + decode ${median(dec).toFixed(1)} ms; ` +
      `${(bytes / 1e6).toFixed(2)} MB body; median of ${reps} (min ${
        Math.min(...all).toFixed(1)
      } ms; baseline min ${Math.min(...rawBatchMs).toFixed(1)} ms)`;
    const rows = [
      row({
        ...base,
        metric: `(a) BPF_MAP_DUMP, ${N} entries → Map`,
        value: median(mapDumpMs),
        goal: 3,
        note: split(mapDumpMs, mapDumpReceiveMs, mapDumpDecodeMs, mapDumpBytes),
      }),
      row({
        ...base,
        metric: `(b) BPF_GET_FIRST_KEY dump_all → Map`,
        value: median(dumpAllMs),
        note: split(dumpAllMs, dumpAllReceiveMs, dumpAllDecodeMs, dumpAllBytes),
      }),
      row({
        ...base,
        metric: `(c) per-key LOOKUP + GET_NEXT_KEY → Map`,
        value: walkExtrapolatedMs,
        note: walked.size < N
          ? `EXTRAPOLATED from ${walked.size} keys (${walkMs.toFixed(0)} ms, ` +
            `${(walkMs * 500 / walked.size).toFixed(0)} µs per round trip) to ${N}`
          : `all ${N} keys`,
      }),
      row({
        ...base,
        metric: "(ref) raw batch + decode → Map",
        value: median(rawBatchToMapMs),
        note: "in-process: what any host-side Map building costs on top of the syscalls",
      }),
      row({
        bench: "dump",
        metric: `fill ${N} entries (pipelined UPDATE)`,
        unit: "ms",
        value: fillPipelinedMs,
        baseline: fillInProcessMs,
        baselineName: "in-process BPF_MAP_UPDATE_ELEM loop",
        note: `${chunk} BPF_UPDATE_ELEM lines per write`,
      }),
    ];
    return { rows, raw };
  } finally {
    libc.close(own);
    await c.close();
  }
}
