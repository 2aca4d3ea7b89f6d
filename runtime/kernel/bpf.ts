/**
 * The `bpf(2)` commands the runtime uses, with the `union bpf_attr` layouts
 * (offsets checked against `linux/bpf.h`). Each function returns the kernel's
 * result or throws {@link SysError} with the errno.
 *
 * @example
 * ```ts
 * import { mapCreate, mapUpdate, mapLookup } from "./bpf.ts";
 * const fd = mapCreate({ type: 1, keySize: 4, valueSize: 8, maxEntries: 16, name: "counts" });
 * mapUpdate(fd, new Uint8Array(4), new Uint8Array(8), 0);
 * console.log(mapLookup(fd, new Uint8Array(4), 8));
 * ```
 * @module
 */

import { arena, bpf, bpfBig, errno, libc, ptrValue } from "./ffi.ts";
import { errnoName, SysError } from "./errno.ts";

/** `enum bpf_cmd` values used here. */
export const Cmd = {
  MAP_CREATE: 0,
  MAP_LOOKUP_ELEM: 1,
  MAP_UPDATE_ELEM: 2,
  MAP_DELETE_ELEM: 3,
  MAP_GET_NEXT_KEY: 4,
  PROG_LOAD: 5,
  PROG_GET_NEXT_ID: 11,
  MAP_GET_NEXT_ID: 12,
  PROG_GET_FD_BY_ID: 13,
  MAP_GET_FD_BY_ID: 14,
  OBJ_GET_INFO_BY_FD: 15,
  RAW_TRACEPOINT_OPEN: 17,
  BTF_LOAD: 18,
  MAP_FREEZE: 22,
  MAP_LOOKUP_BATCH: 24,
  LINK_CREATE: 28,
  LINK_GET_NEXT_ID: 31,
} as const;

/** `enum bpf_map_type` values the runtime treats specially. */
export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PROG_ARRAY: 3,
  PERF_EVENT_ARRAY: 4,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  STACK_TRACE: 7,
  CGROUP_ARRAY: 8,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  PERCPU_CGROUP_STORAGE: 21,
  RINGBUF: 27,
} as const;

/** Map types whose values are one slot per possible CPU. */
export const PERCPU_MAP_TYPES: ReadonlySet<number> = new Set([
  MapType.PERCPU_HASH,
  MapType.PERCPU_ARRAY,
  MapType.LRU_PERCPU_HASH,
  MapType.PERCPU_CGROUP_STORAGE,
]);

/** Size of the attr block passed to the kernel (zero tail is accepted by all kernels ≥ 4.x). */
export const ATTR_SIZE = 144;

function fail(what: string): never {
  const e = errno();
  throw new SysError(e, `${what}: ${errnoName(e)}`);
}

function call(cmd: number, attr: { ptr: number }, what: string): number {
  const r = bpf(cmd, attr.ptr, ATTR_SIZE);
  if (r < 0) fail(what);
  return r;
}

function setName(u8: Uint8Array, off: number, name: string | undefined) {
  if (!name) return;
  const enc = new TextEncoder().encode(name).subarray(0, 15);
  u8.set(enc, off);
}

/** Parameters of `BPF_MAP_CREATE`. */
export interface MapCreateOptions {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags?: number;
  /** Truncated to 15 bytes; omitted when empty. */
  name?: string;
  innerMapFd?: number;
  btfFd?: number;
  btfKeyTypeId?: number;
  btfValueTypeId?: number;
  mapExtra?: bigint;
}

/** `BPF_MAP_CREATE`: returns the new map fd. */
export function mapCreate(o: MapCreateOptions): number {
  arena.reset();
  const a = arena.alloc(ATTR_SIZE);
  const dv = a.dv;
  dv.setUint32(0, o.type, true);
  dv.setUint32(4, o.keySize, true);
  dv.setUint32(8, o.valueSize, true);
  dv.setUint32(12, o.maxEntries, true);
  dv.setUint32(16, o.flags ?? 0, true);
  dv.setUint32(20, o.innerMapFd ?? 0, true);
  setName(a.u8, 28, o.name);
  dv.setUint32(48, o.btfFd ?? 0, true);
  dv.setUint32(52, o.btfKeyTypeId ?? 0, true);
  dv.setUint32(56, o.btfValueTypeId ?? 0, true);
  dv.setBigUint64(64, o.mapExtra ?? 0n, true);
  return call(Cmd.MAP_CREATE, a, "BPF_MAP_CREATE");
}

const round8 = (n: number) => (n + 7) & ~7;

/**
 * Persistent memory of the element commands (lookup, update, delete, next
 * key): the protocol's hot path. One large array (so V8 never moves it; see
 * {@link Arena}) holds four attr blocks whose pointer fields are written
 * once per layout, a key slot, a next-key slot and a value slot. A call
 * writes only the fd, the flags and the key/value bytes, and passes
 * precomputed bigints to the syscall: no allocation, no conversion. The slots
 * grow (and the attrs are re-pointed) when a map's key or value does not fit.
 */
class ElemMemory {
  // The attr blocks, by what their pointer fields point at:
  /** `key` → key slot, `value` → value slot (lookup, update). */
  static readonly ELEM = 0;
  /** `key` → key slot only (delete: the kernel wants the fields after `key` zero). */
  static readonly KEY = 1;
  /** `key` → key slot, `next_key` → next-key slot (GET_NEXT_KEY). */
  static readonly NEXT = 2;
  /** `key` = NULL, `next_key` → next-key slot (the first key). */
  static readonly FIRST = 3;
  static readonly #STRIDE = 256;
  /** Where the slots start, after the four attr blocks. */
  static readonly #SLOTS = 4 * ElemMemory.#STRIDE;

  key!: Uint8Array;
  next!: Uint8Array;
  value!: Uint8Array;
  #dv!: DataView;
  /** Address of each attr block, as the syscall takes it. */
  #attrPtr: bigint[] = [];

  constructor() {
    this.#layout(512, 1 << 16);
  }

  /** Makes the slots hold at least these sizes. */
  fit(keySize: number, valueSize: number): void {
    if (keySize > this.key.length || valueSize > this.value.length) {
      this.#layout(
        keySize > this.key.length ? round8(keySize) : this.key.length,
        valueSize > this.value.length
          ? Math.max(this.value.length * 2, round8(valueSize))
          : this.value.length,
      );
    }
  }

  #layout(keyCap: number, valueCap: number): void {
    const S = ElemMemory.#SLOTS;
    const mem = new Uint8Array(S + 2 * keyCap + valueCap);
    const ptr = ptrValue(Deno.UnsafePointer.of(mem));
    this.#dv = new DataView(mem.buffer);
    this.key = mem.subarray(S, S + keyCap);
    this.next = mem.subarray(S + keyCap, S + 2 * keyCap);
    this.value = mem.subarray(S + 2 * keyCap);
    this.#attrPtr = [0, 1, 2, 3].map((b) => BigInt(ptr + b * ElemMemory.#STRIDE));
    const point = (block: number, field: number, slot: number) =>
      this.#dv.setBigUint64(block * ElemMemory.#STRIDE + field, BigInt(ptr + slot), true);
    point(ElemMemory.ELEM, 8, S);
    point(ElemMemory.ELEM, 16, S + 2 * keyCap);
    point(ElemMemory.KEY, 8, S);
    point(ElemMemory.NEXT, 8, S);
    point(ElemMemory.NEXT, 16, S + keyCap);
    point(ElemMemory.FIRST, 16, S + keyCap);
  }

  /** `bpf(cmd)` on an attr block with `map_fd` (and ELEM's `flags`) set; the raw result. */
  call(cmd: bigint, block: number, fd: number, flags = 0n): number {
    const attr = block * ElemMemory.#STRIDE;
    this.#dv.setUint32(attr, fd, true);
    if (block === ElemMemory.ELEM) this.#dv.setBigUint64(attr + 24, flags, true);
    return bpfBig(cmd, this.#attrPtr[block], BIG_ATTR_SIZE);
  }
}

const elem = new ElemMemory();
const BIG_ATTR_SIZE = BigInt(ATTR_SIZE);
const LOOKUP_ELEM = BigInt(Cmd.MAP_LOOKUP_ELEM);
const UPDATE_ELEM = BigInt(Cmd.MAP_UPDATE_ELEM);
const DELETE_ELEM = BigInt(Cmd.MAP_DELETE_ELEM);
const GET_NEXT_KEY = BigInt(Cmd.MAP_GET_NEXT_KEY);

/**
 * `BPF_MAP_LOOKUP_ELEM` without a copy: the value as a view of memory that
 * the next element call overwrites (use it to encode the value at once;
 * {@link mapLookup} returns a copy to keep). `valueSize` is the size the
 * kernel copies: the map's value size, for per-CPU maps
 * round_up(value_size, 8) × possible CPUs.
 */
export function mapLookupView(fd: number, key: Uint8Array, valueSize: number): Uint8Array {
  elem.fit(key.length, valueSize);
  elem.key.set(key);
  if (elem.call(LOOKUP_ELEM, ElemMemory.ELEM, fd) < 0) fail("BPF_MAP_LOOKUP_ELEM");
  return elem.value.subarray(0, valueSize);
}

/** `BPF_MAP_LOOKUP_ELEM`: a copy of the value (`valueSize` as for {@link mapLookupView}). */
export function mapLookup(fd: number, key: Uint8Array, valueSize: number): Uint8Array {
  return mapLookupView(fd, key, valueSize).slice();
}

/** `BPF_MAP_UPDATE_ELEM` with flags 0 any, 1 noexist, 2 exist. */
export function mapUpdate(
  fd: number,
  key: Uint8Array,
  value: Uint8Array,
  flags: number | bigint,
): void {
  elem.fit(key.length, value.length);
  elem.key.set(key);
  elem.value.set(value);
  if (elem.call(UPDATE_ELEM, ElemMemory.ELEM, fd, BigInt(flags)) < 0) fail("BPF_MAP_UPDATE_ELEM");
}

/** `BPF_MAP_DELETE_ELEM`. */
export function mapDelete(fd: number, key: Uint8Array): void {
  elem.fit(key.length, 0);
  elem.key.set(key);
  if (elem.call(DELETE_ELEM, ElemMemory.KEY, fd) < 0) fail("BPF_MAP_DELETE_ELEM");
}

/**
 * `BPF_MAP_GET_NEXT_KEY`; `key` null asks for the first key. Returns null at
 * the end of the map (ENOENT).
 */
export function mapNextKey(fd: number, key: Uint8Array | null, keySize: number): Uint8Array | null {
  elem.fit(Math.max(keySize, key?.length ?? 0), 0);
  if (key) elem.key.set(key);
  if (elem.call(GET_NEXT_KEY, key ? ElemMemory.NEXT : ElemMemory.FIRST, fd) < 0) {
    if (errno() === 2) return null;
    fail("BPF_MAP_GET_NEXT_KEY");
  }
  return elem.next.slice(0, keySize);
}

/** `BPF_MAP_FREEZE`. */
export function mapFreeze(fd: number): void {
  arena.reset();
  const a = arena.alloc(ATTR_SIZE);
  a.dv.setUint32(0, fd, true);
  call(Cmd.MAP_FREEZE, a, "BPF_MAP_FREEZE");
}

/** One page of a batch lookup. */
export interface BatchPage {
  keys: Uint8Array;
  values: Uint8Array;
  count: number;
  /** Opaque resume token for the next call; null when the map is exhausted. */
  next: Uint8Array | null;
}

/**
 * `BPF_MAP_LOOKUP_BATCH`: up to `max` entries after `inBatch` (null = start).
 * `valueSize` is the per-element value size as the kernel copies it (per-CPU
 * maps: round_up(value_size, 8) × possible CPUs). Throws ENOSPC if a bucket
 * does not fit `max`; EINVAL/ENOTSUPP if the map type has no batch ops.
 */
export function mapLookupBatch(
  fd: number,
  inBatch: Uint8Array | null,
  keySize: number,
  valueSize: number,
  max: number,
): BatchPage {
  arena.reset();
  // The batch token is a key-sized cursor for hash maps and a u32 for arrays.
  const tokSize = Math.max(keySize, 8);
  const inb = inBatch ? arena.copy(inBatch) : null;
  const outb = arena.alloc(tokSize);
  const keys = arena.alloc(keySize * max);
  const values = arena.alloc(valueSize * max);
  const a = arena.alloc(ATTR_SIZE);
  a.dv.setBigUint64(0, BigInt(inb ? inb.ptr : 0), true);
  a.dv.setBigUint64(8, BigInt(outb.ptr), true);
  a.dv.setBigUint64(16, BigInt(keys.ptr), true);
  a.dv.setBigUint64(24, BigInt(values.ptr), true);
  a.dv.setUint32(32, max, true);
  a.dv.setUint32(36, fd, true);
  const r = bpf(Cmd.MAP_LOOKUP_BATCH, a.ptr, ATTR_SIZE);
  const count = a.dv.getUint32(32, true);
  if (r < 0) {
    const e = errno();
    if (e !== 2) throw new SysError(e, `BPF_MAP_LOOKUP_BATCH: ${errnoName(e)}`);
    // ENOENT: this was the last page (count may be > 0).
    return {
      keys: keys.u8.slice(0, count * keySize),
      values: values.u8.slice(0, count * valueSize),
      count,
      next: null,
    };
  }
  return {
    keys: keys.u8.slice(0, count * keySize),
    values: values.u8.slice(0, count * valueSize),
    count,
    next: outb.u8.slice(),
  };
}

/** What `BPF_OBJ_GET_INFO_BY_FD` says about a map. */
export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

function cString(u8: Uint8Array): string {
  const end = u8.indexOf(0);
  return new TextDecoder().decode(end < 0 ? u8 : u8.subarray(0, end));
}

function objInfo(fd: number, size: number): DataView {
  arena.reset();
  const info = arena.alloc(size);
  const a = arena.alloc(ATTR_SIZE);
  a.dv.setUint32(0, fd, true);
  a.dv.setUint32(4, size, true);
  a.dv.setBigUint64(8, BigInt(info.ptr), true);
  call(Cmd.OBJ_GET_INFO_BY_FD, a, "BPF_OBJ_GET_INFO_BY_FD");
  return new DataView(info.u8.slice().buffer);
}

/** Map facts for an fd (EINVAL if it is not a map). */
export function mapInfo(fd: number): MapInfo {
  const dv = objInfo(fd, 88);
  return {
    type: dv.getUint32(0, true),
    id: dv.getUint32(4, true),
    keySize: dv.getUint32(8, true),
    valueSize: dv.getUint32(12, true),
    maxEntries: dv.getUint32(16, true),
    flags: dv.getUint32(20, true),
    name: cString(new Uint8Array(dv.buffer, 24, 16)),
  };
}

/** Program facts for an fd. */
export function progInfo(fd: number): { type: number; id: number; name: string } {
  const dv = objInfo(fd, 232);
  return {
    type: dv.getUint32(0, true),
    id: dv.getUint32(4, true),
    name: cString(new Uint8Array(dv.buffer, 64, 16)),
  };
}

/** Parameters of `BPF_PROG_LOAD`. */
export interface ProgLoadOptions {
  type: number;
  insns: Uint8Array;
  license: string;
  kernVersion?: number;
  name?: string;
  expectedAttachType?: number;
  flags?: number;
  btfFd?: number;
  funcInfo?: { recSize: number; data: Uint8Array; count: number };
  lineInfo?: { recSize: number; data: Uint8Array; count: number };
  attachBtfId?: number;
  /**
   * `bpf_core_relo` records (16 bytes each, `insn_off` in bytes) for the
   * kernel to apply (5.17+); the kernel reads them only when func_info or
   * line_info is given too.
   */
  coreRelos?: { recSize: number; data: Uint8Array; count: number };
  /** `fd_array`: map/BTF fds referenced by index from `BPF_PSEUDO_MAP_IDX*` instructions. */
  fdArray?: readonly number[];
  /** Verifier log level used on the retry after a failure (default 1). */
  logLevel?: number;
  /** Log buffer size for the retry (default 1 MiB). */
  logSize?: number;
}

/** A failed program load: errno plus the verifier's log. */
export class ProgLoadError extends SysError {
  /** The verifier log of the retry with logging on. */
  readonly log: string;
  constructor(errno: number, log: string) {
    super(errno, `BPF_PROG_LOAD: ${errnoName(errno)}`);
    this.log = log;
  }
}

function progLoadOnce(o: ProgLoadOptions, logSize: number): { fd: number; log: string } {
  arena.reset();
  const insns = arena.copy(o.insns);
  const lic = arena.cstr(o.license);
  const log = logSize > 0 ? arena.alloc(logSize) : null;
  const fi = o.funcInfo ? arena.copy(o.funcInfo.data) : null;
  const li = o.lineInfo ? arena.copy(o.lineInfo.data) : null;
  const cr = o.coreRelos ? arena.copy(o.coreRelos.data) : null;
  let fds: { ptr: number } | null = null;
  if (o.fdArray?.length) {
    const b = arena.alloc(4 * o.fdArray.length);
    o.fdArray.forEach((fd, i) => b.dv.setInt32(4 * i, fd, true));
    fds = b;
  }
  const a = arena.alloc(ATTR_SIZE);
  const dv = a.dv;
  dv.setUint32(0, o.type, true);
  dv.setUint32(4, Math.floor(o.insns.length / 8), true);
  dv.setBigUint64(8, BigInt(insns.ptr), true);
  dv.setBigUint64(16, BigInt(lic.ptr), true);
  if (log) {
    dv.setUint32(24, o.logLevel ?? 1, true);
    dv.setUint32(28, logSize, true);
    dv.setBigUint64(32, BigInt(log.ptr), true);
  }
  dv.setUint32(40, o.kernVersion ?? 0, true);
  dv.setUint32(44, o.flags ?? 0, true);
  setName(a.u8, 48, o.name);
  dv.setUint32(68, o.expectedAttachType ?? 0, true);
  dv.setUint32(72, o.btfFd ?? 0, true);
  if (o.funcInfo && fi) {
    dv.setUint32(76, o.funcInfo.recSize, true);
    dv.setBigUint64(80, BigInt(fi.ptr), true);
    dv.setUint32(88, o.funcInfo.count, true);
  }
  if (o.lineInfo && li) {
    dv.setUint32(92, o.lineInfo.recSize, true);
    dv.setBigUint64(96, BigInt(li.ptr), true);
    dv.setUint32(104, o.lineInfo.count, true);
  }
  dv.setUint32(108, o.attachBtfId ?? 0, true);
  if (o.coreRelos && cr) {
    dv.setUint32(116, o.coreRelos.count, true);
    dv.setBigUint64(128, BigInt(cr.ptr), true);
    dv.setUint32(136, o.coreRelos.recSize, true);
  }
  if (fds) dv.setBigUint64(120, BigInt(fds.ptr), true);
  const fd = bpf(Cmd.PROG_LOAD, a.ptr, ATTR_SIZE);
  const e = fd < 0 ? errno() : 0;
  const text = log ? cString(log.u8) : "";
  if (fd < 0) throw new ProgLoadError(e, text);
  return { fd, log: text };
}

/**
 * `BPF_PROG_LOAD`. Tries without a log first (fast path); on failure retries
 * with the verifier log on and throws {@link ProgLoadError} carrying it.
 */
export function progLoad(o: ProgLoadOptions): number {
  try {
    return progLoadOnce(o, 0).fd;
  } catch (e) {
    if (!(e instanceof ProgLoadError)) throw e;
    if (e.errno === 7 /* E2BIG */ || e.errno === 1 /* EPERM */) throw e;
    try {
      return progLoadOnce(o, o.logSize ?? (1 << 20)).fd;
    } catch (e2) {
      if (e2 instanceof ProgLoadError && e2.errno === 28 /* ENOSPC: log too small */) {
        throw new ProgLoadError(e.errno, e2.log);
      }
      throw e2;
    }
  }
}

/** `BPF_BTF_LOAD`: returns the BTF fd; throws with the kernel's BTF log on failure. */
export function btfLoad(data: Uint8Array): number {
  const attempt = (logSize: number) => {
    arena.reset();
    const d = arena.copy(data);
    const log = logSize ? arena.alloc(logSize) : null;
    const a = arena.alloc(ATTR_SIZE);
    a.dv.setBigUint64(0, BigInt(d.ptr), true);
    if (log) {
      a.dv.setBigUint64(8, BigInt(log.ptr), true);
      a.dv.setUint32(20, logSize, true);
      a.dv.setUint32(24, 1, true);
    }
    a.dv.setUint32(16, data.length, true);
    const fd = bpf(Cmd.BTF_LOAD, a.ptr, ATTR_SIZE);
    return { fd, e: fd < 0 ? errno() : 0, log: log ? cString(log.u8) : "" };
  };
  let r = attempt(0);
  if (r.fd >= 0) return r.fd;
  r = attempt(1 << 16);
  if (r.fd >= 0) return r.fd;
  throw new ProgLoadError(r.e, r.log);
}

/** `BPF_RAW_TRACEPOINT_OPEN`: attaches a raw tracepoint program, returns the link fd. */
export function rawTracepointOpen(progFd: number, name: string): number {
  arena.reset();
  const n = arena.cstr(name);
  const a = arena.alloc(ATTR_SIZE);
  a.dv.setBigUint64(0, BigInt(n.ptr), true);
  a.dv.setUint32(8, progFd, true);
  return call(Cmd.RAW_TRACEPOINT_OPEN, a, "BPF_RAW_TRACEPOINT_OPEN");
}

/**
 * `BPF_RAW_TRACEPOINT_OPEN` with no name: attaches a `BPF_PROG_TYPE_TRACING`
 * program (tp_btf, fentry, fexit) at the BTF target it was loaded for
 * (`attachBtfId`); returns the link fd.
 */
export function rawTracepointOpenBtf(progFd: number): number {
  arena.reset();
  const a = arena.alloc(ATTR_SIZE);
  a.dv.setBigUint64(0, 0n, true);
  a.dv.setUint32(8, progFd, true);
  return call(Cmd.RAW_TRACEPOINT_OPEN, a, "BPF_RAW_TRACEPOINT_OPEN");
}

function nextId(cmd: number, id: number): number | null {
  arena.reset();
  const a = arena.alloc(ATTR_SIZE);
  a.dv.setUint32(0, id, true);
  const r = bpf(cmd, a.ptr, ATTR_SIZE);
  if (r < 0) {
    if (errno() === 2) return null;
    fail("BPF_*_GET_NEXT_ID");
  }
  return a.dv.getUint32(4, true);
}

/** IDs of every loaded object of one kind: `prog`, `map` or `link` (system-wide). */
export function listIds(kind: "prog" | "map" | "link"): number[] {
  const cmd = kind === "prog"
    ? Cmd.PROG_GET_NEXT_ID
    : kind === "map"
    ? Cmd.MAP_GET_NEXT_ID
    : Cmd.LINK_GET_NEXT_ID;
  const ids: number[] = [];
  for (let n = nextId(cmd, 0); n !== null; n = nextId(cmd, n)) ids.push(n);
  return ids;
}

/**
 * Whether the kernel supports `BPF_MAP_LOOKUP_BATCH` (5.6+), probed on a tiny
 * hash map.
 */
export function probeBatchOps(): boolean {
  let fd = -1;
  try {
    fd = mapCreate({ type: MapType.HASH, keySize: 4, valueSize: 4, maxEntries: 1 });
    mapLookupBatch(fd, null, 4, 4, 1);
    return true;
  } catch {
    return false;
  } finally {
    if (fd >= 0) libc.close(fd);
  }
}
