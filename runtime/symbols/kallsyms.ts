/**
 * Kernel symbol resolution over `/proc/kallsyms`
 * (`ffffffff81234567 T name\t[module]` lines).
 *
 * The table keeps the file text and a few typed arrays (addresses split into
 * 32-bit halves, since kernel addresses exceed 2^53), sorted once, so an
 * address lookup is a binary search and no per-symbol objects are created.
 * The name index is built on the first {@linkcode Kallsyms.resolveName}.
 *
 * @example
 * ```ts
 * import { Kallsyms } from "./kallsyms.ts";
 * const ksyms = Kallsyms.load();
 * const addr = ksyms.resolveName("vfs_read");
 * if (addr !== null) console.log(ksyms.resolveAddr(addr + 5n)); // { name: "vfs_read", offset: 5, module: "kernel" }
 * ```
 * @module
 */

/**
 * The result of an address lookup: the symbol with the greatest address not
 * above the queried one, the distance to it, and `"kernel"` or the module
 * name (without brackets, e.g. `"ext4"` or `"bpf"`).
 *
 * @example
 * ```ts
 * import { Kallsyms, type KernelSymbol } from "./kallsyms.ts";
 * const sym: KernelSymbol | null = Kallsyms.load().resolveAddr(0xffffffff81000000n);
 * ```
 */
export interface KernelSymbol {
  readonly name: string;
  readonly offset: number;
  readonly module: string;
}

/**
 * Options for {@linkcode Kallsyms.load}.
 *
 * @example
 * ```ts
 * import { Kallsyms, type KallsymsLoadOptions } from "./kallsyms.ts";
 * const opts: KallsymsLoadOptions = { reload: true }; // pick up newly loaded BPF programs
 * Kallsyms.load("/proc/kallsyms", opts);
 * ```
 */
export interface KallsymsLoadOptions {
  /** Re-read the file even if a cached table exists (modules and BPF programs come and go). */
  readonly reload?: boolean;
}

const TWO_32 = 0x1_0000_0000;
const KERNEL = "kernel";

/**
 * A parsed kallsyms table. Build one with {@linkcode Kallsyms.load} (cached
 * per path) or {@linkcode parseKallsyms}.
 *
 * Symbols at address 0 (all of them when `kptr_restrict` hides addresses)
 * are skipped by address lookups and by {@linkcode Kallsyms.resolveName}.
 * When several symbols share an address, the one listed first wins.
 *
 * @example
 * ```ts
 * import { parseKallsyms } from "./kallsyms.ts";
 * const t = parseKallsyms("ffffffff81000000 T _text\nffffffff81000100 t foo\t[mod]\n");
 * console.log(t.resolveAddr(0xffffffff81000104n)); // { name: "foo", offset: 4, module: "mod" }
 * ```
 */
export class Kallsyms {
  static #cache = new Map<string, Kallsyms>();

  #bytes: Uint8Array;
  #table: ParsedTable;
  #index: AddressIndex;
  #nameTable: Int32Array | null = null;

  /**
   * Parses kallsyms content (bytes as read from the file, or text); prefer
   * {@linkcode parseKallsyms} or {@linkcode Kallsyms.load}.
   */
  constructor(data: Uint8Array | string) {
    this.#bytes = typeof data === "string" ? encodeUtf8(data) : data;
    this.#table = parseLines(this.#bytes);
    this.#index = buildAddressIndex(this.#table);
  }

  /**
   * The table for `path`, parsed on first use and cached per path. Throws
   * when the file cannot be read (e.g. no procfs mounted).
   *
   * @example
   * ```ts
   * import { Kallsyms } from "./kallsyms.ts";
   * const ksyms = Kallsyms.load(); // "/proc/kallsyms"
   * ```
   */
  static load(path = "/proc/kallsyms", options: KallsymsLoadOptions = {}): Kallsyms {
    const cached = Kallsyms.#cache.get(path);
    if (cached && !options.reload) return cached;
    let data: Uint8Array;
    try {
      data = Deno.readFileSync(path);
    } catch (e) {
      throw new Error(
        `cannot read ${path} (${e instanceof Error ? e.message : e}); mount procfs on /proc ` +
          "and run the runtime as root to resolve kernel symbols",
        { cause: e },
      );
    }
    const table = new Kallsyms(data);
    Kallsyms.#cache.set(path, table);
    return table;
  }

  /**
   * Drops every cached table, so the next {@linkcode Kallsyms.load} re-reads.
   *
   * @example
   * ```ts
   * import { Kallsyms } from "./kallsyms.ts";
   * Kallsyms.clearCache();
   * ```
   */
  static clearCache(): void {
    Kallsyms.#cache.clear();
  }

  /** Number of parsed symbol lines (including those at address 0). */
  get size(): number {
    return this.#table.count;
  }

  /**
   * True when there are symbols but every address is 0: `kptr_restrict` or
   * missing privileges hide them (run as root, or set
   * `/proc/sys/kernel/kptr_restrict` to 0).
   */
  get restricted(): boolean {
    return this.#table.count > 0 && this.#index.count === 0;
  }

  /**
   * The symbol with the greatest address `<= addr`, or `null` when `addr` is
   * below the first symbol, outside 0..2^64-1, or all addresses are hidden.
   * `offset` is exact up to 2^53. O(log n).
   */
  resolveAddr(addr: bigint): KernelSymbol | null {
    const total = this.#index.count;
    if (total === 0 || addr < 0n || addr > 0xffff_ffff_ffff_ffffn) return null;
    const h = Number(addr >> 32n);
    const l = Number(addr & 0xffff_ffffn);
    const sh = this.#index.hi;
    const sl = this.#index.lo;
    // Last position whose address is <= addr.
    let lo = 0;
    let hi = total;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sh[mid] < h || (sh[mid] === h && sl[mid] <= l)) lo = mid + 1;
      else hi = mid;
    }
    if (lo === 0) return null;
    const fh = sh[lo - 1];
    const fl = sl[lo - 1];
    // First position holding that same address (aliases keep file order).
    let a = 0;
    let b = lo - 1;
    while (a < b) {
      const mid = (a + b) >>> 1;
      if (sh[mid] < fh || (sh[mid] === fh && sl[mid] < fl)) a = mid + 1;
      else b = mid;
    }
    const i = this.#index.order === null ? a : this.#index.order[a];
    return {
      name: this.#name(i),
      offset: (h - fh) * TWO_32 + (l - fl),
      module: this.#table.modules[this.#table.module[i]],
    };
  }

  /**
   * The address of the first symbol called `name` with a non-zero address,
   * or `null`. The name index is built on the first call (O(n)); later calls
   * are O(1).
   */
  resolveName(name: string): bigint | null {
    const i = this.#find(name);
    return i < 0 ? null : (BigInt(this.#table.hi[i]) << 32n) | BigInt(this.#table.lo[i]);
  }

  /**
   * The kallsyms type letter (`T`, `t`, `D`, `b`, ...) of the symbol that
   * {@linkcode Kallsyms.resolveName} would return, or `null`.
   */
  typeOf(name: string): string | null {
    const i = this.#find(name);
    return i < 0 ? null : String.fromCharCode(this.#table.type[i]);
  }

  /** Index of the first named symbol with a non-zero address, or -1. */
  #find(name: string): number {
    const table = this.#nameTable ??= this.#buildNameTable();
    const q = encodeUtf8(name);
    const mask = table.length - 1;
    const b = this.#bytes;
    for (let h = hashBytes(q, 0, q.length);; h++) {
      const slot = table[h & mask];
      if (slot === 0) return -1;
      const i = slot - 1;
      const s = this.#table.nameStart[i];
      if (this.#table.nameEnd[i] - s !== q.length) continue;
      let k = 0;
      while (k < q.length && b[s + k] === q[k]) k++;
      if (k === q.length) return i;
    }
  }

  /** Open-addressing hash of name bytes → first symbol index + 1 (no strings built). */
  #buildNameTable(): Int32Array {
    let size = 2;
    const { count, hi, lo, nameStart: start, nameEnd: end } = this.#table;
    while (size < count * 2) size *= 2;
    const table = new Int32Array(size);
    const mask = size - 1;
    const b = this.#bytes;
    for (let i = 0; i < count; i++) {
      if (hi[i] === 0 && lo[i] === 0) continue;
      const s = start[i];
      const len = end[i] - s;
      for (let h = hashBytes(b, s, end[i]);; h++) {
        const slot = table[h & mask];
        if (slot === 0) {
          table[h & mask] = i + 1;
          break;
        }
        const o = start[slot - 1];
        if (end[slot - 1] - o !== len) continue;
        let k = 0;
        while (k < len && b[o + k] === b[s + k]) k++;
        if (k === len) break; // already indexed: keep the first
      }
    }
    return table;
  }

  #name(i: number): string {
    return decode(this.#bytes, this.#table.nameStart[i], this.#table.nameEnd[i]);
  }
}

/**
 * Parses kallsyms-format text (e.g. synthetic input in tests). Malformed
 * lines are skipped.
 *
 * @example
 * ```ts
 * import { parseKallsyms } from "./kallsyms.ts";
 * const t = parseKallsyms("ffffffff81000000 T _text\n");
 * console.log(t.resolveName("_text")); // 18446744071578845184n
 * ```
 */
export function parseKallsyms(text: string): Kallsyms {
  return new Kallsyms(text);
}

/** Column arrays of the parsed lines (addresses split into 32-bit halves). */
interface ParsedTable {
  count: number;
  hi: Uint32Array;
  lo: Uint32Array;
  nameStart: Uint32Array;
  nameEnd: Uint32Array;
  type: Uint8Array;
  module: Uint32Array;
  modules: string[];
  /** Non-zero addresses appear in ascending order (the usual case). */
  sorted: boolean;
  nonZero: number;
}

/** Ascending addresses of the non-zero symbols; `order` maps back to lines (null: identity). */
interface AddressIndex {
  count: number;
  hi: Uint32Array;
  lo: Uint32Array;
  order: Uint32Array | null;
}

function parseLines(b: Uint8Array): ParsedTable {
  const len = b.length;
  // Lines are ~40 bytes; start at len/24 entries and grow if needed.
  let cap = Math.max(64, Math.ceil(len / 24));
  let hi = new Uint32Array(cap);
  let lo = new Uint32Array(cap);
  let nameStart = new Uint32Array(cap);
  let nameEnd = new Uint32Array(cap);
  let type = new Uint8Array(cap);
  let mod = new Uint32Array(cap);
  const modules = [KERNEL];
  const moduleIds = new Map<string, number>();
  let n = 0;
  let nonZero = 0;
  let sorted = true;
  let prevHi = 0;
  let prevLo = 0;
  let pos = 0;
  while (pos < len) {
    let eol = b.indexOf(10, pos);
    if (eol === -1) eol = len;
    // Address: up to 16 hex digits, accumulated as two 32-bit halves.
    let p = pos;
    let h = 0;
    let l = 0;
    for (; p < eol; p++) {
      const c = b[p];
      let d: number;
      if (c >= 48 && c <= 57) d = c - 48;
      else if ((c | 32) >= 97 && (c | 32) <= 102) d = (c | 32) - 87;
      else break;
      h = ((h << 4) | (l >>> 28)) >>> 0;
      l = ((l << 4) | d) >>> 0;
    }
    const digits = p - pos;
    // Then " T name" and an optional "\t[module]".
    let ne = p + 3;
    while (ne < eol && b[ne] > 32) ne++;
    if (digits === 0 || digits > 16 || ne <= p + 3 || b[p] !== 32 || b[p + 2] !== 32) {
      pos = eol + 1;
      continue; // blank or malformed line
    }
    let m = 0;
    let open = ne;
    while (open < eol && b[open] !== 91) open++; // "["
    if (open < eol) {
      let close = open + 1;
      while (close < eol && b[close] !== 93) close++; // "]"
      const name = decode(b, open + 1, close);
      let id = moduleIds.get(name);
      if (id === undefined) {
        id = modules.length;
        modules.push(name);
        moduleIds.set(name, id);
      }
      m = id;
    }
    if (n === cap) {
      cap *= 2;
      hi = grow(hi, cap);
      lo = grow(lo, cap);
      nameStart = grow(nameStart, cap);
      nameEnd = grow(nameEnd, cap);
      mod = grow(mod, cap);
      const t = new Uint8Array(cap);
      t.set(type);
      type = t;
    }
    hi[n] = h;
    lo[n] = l;
    nameStart[n] = p + 3;
    nameEnd[n] = ne;
    type[n] = b[p + 1];
    mod[n] = m;
    if (h !== 0 || l !== 0) {
      if (nonZero > 0 && (h < prevHi || (h === prevHi && l < prevLo))) sorted = false;
      prevHi = h;
      prevLo = l;
      nonZero++;
    }
    n++;
    pos = eol + 1;
  }
  return { count: n, hi, lo, nameStart, nameEnd, type, module: mod, modules, sorted, nonZero };
}

function grow(a: Uint32Array, cap: number): Uint32Array<ArrayBuffer> {
  const out = new Uint32Array(cap);
  out.set(a);
  return out;
}

function buildAddressIndex(t: ParsedTable): AddressIndex {
  const { hi, lo, count, nonZero } = t;
  if (t.sorted && nonZero === count) return { count, hi, lo, order: null };
  let order = new Uint32Array(nonZero);
  for (let i = 0, j = 0; i < count; i++) if (hi[i] !== 0 || lo[i] !== 0) order[j++] = i;
  if (!t.sorted) {
    // Ties keep file order through the index key.
    order = order.sort((a, b) => (hi[a] - hi[b]) || (lo[a] - lo[b]) || (a - b));
  }
  const sh = new Uint32Array(nonZero);
  const sl = new Uint32Array(nonZero);
  for (let j = 0; j < nonZero; j++) {
    sh[j] = hi[order[j]];
    sl[j] = lo[order[j]];
  }
  return { count: nonZero, hi: sh, lo: sl, order };
}

/** FNV-1a over bytes `[start, end)`. */
function hashBytes(b: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return h >>> 0;
}

/** Bytes `[start, end)` as a string: ASCII directly, else UTF-8 (lenient). */
function decode(b: Uint8Array, start: number, end: number): string {
  let out = "";
  let ascii = true;
  for (let i = start; i < end; i++) {
    const c = b[i];
    if (c >= 0x80) {
      ascii = false;
      break;
    }
    out += String.fromCharCode(c);
  }
  if (ascii) return out;
  let escaped = "";
  for (let i = start; i < end; i++) escaped += "%" + (b[i] < 16 ? "0" : "") + b[i].toString(16);
  try {
    return decodeURIComponent(escaped);
  } catch {
    let raw = "";
    for (let i = start; i < end; i++) raw += String.fromCharCode(b[i]);
    return raw;
  }
}

/** UTF-8 encoding without `TextEncoder` (not in this project's type libs). */
function encodeUtf8(s: string): Uint8Array {
  const out = new Uint8Array(s.length * 3);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out[n++] = c;
      continue;
    }
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6);
    } else if (c < 0x10000) {
      out[n++] = 0xe0 | (c >> 12);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
    } else {
      out[n++] = 0xf0 | (c >> 18);
      out[n++] = 0x80 | ((c >> 12) & 0x3f);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
    }
    out[n++] = 0x80 | (c & 0x3f);
  }
  return out.subarray(0, n);
}
