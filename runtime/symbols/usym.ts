/**
 * User-space symbol resolution for processes on the target: `/proc/<pid>/maps`
 * parsing, address → `symbol+offset` in a mapped ELF file, symbol → runtime
 * address in a process, and symbol → ELF file offset (what a uprobe attach
 * needs).
 *
 * Files are opened through `/proc/<pid>/map_files/<range>` when possible
 * (exact file even if deleted or in another mount namespace), then
 * `/proc/<pid>/root/<path>`, then the plain path. Parsed symbol tables are
 * cached per (path, device, inode, mtime, size) and per-process maps per
 * (`/proc/<pid>/exe` identity, start time); both caches are bounded LRUs.
 *
 * Only file-backed mappings are resolved: anonymous memory (JIT code),
 * `[vdso]` and other pseudo-mappings give `null`.
 *
 * C++ demangling is out of scope: the `demangle` option is accepted for
 * protocol compatibility and names are returned as stored in the ELF file.
 *
 * @example
 * ```ts
 * import { resolveAddr, resolveName } from "./usym.ts";
 * const addr = resolveName(Deno.pid, "getpid", "/lib/x86_64-linux-gnu/libc.so.6");
 * if (addr !== null) console.log(resolveAddr(Deno.pid, addr)); // { name: "getpid", offset: 0, module: ".../libc.so.6" }
 * ```
 * @module
 */

import {
  ElfFile,
  ElfSectionIndex,
  ElfSegmentType,
  ElfSymbolBinding,
  ElfSymbolType,
} from "../../artifacts/elf.ts";

/**
 * One line of `/proc/<pid>/maps`. `range` is the raw `start-end` text (the
 * name of the matching `/proc/<pid>/map_files` entry); `path` is empty for
 * anonymous mappings and may be a pseudo-path such as `[heap]` or end in
 * ` (deleted)`.
 *
 * @example
 * ```ts
 * import { parseMaps, type MemoryMapping } from "./usym.ts";
 * const maps: MemoryMapping[] = parseMaps(Deno.readTextFileSync("/proc/self/maps"));
 * ```
 */
export interface MemoryMapping {
  readonly start: bigint;
  readonly end: bigint;
  readonly perms: string;
  readonly offset: number;
  /** `major:minor` in hex, as printed by the kernel. */
  readonly dev: string;
  readonly major: number;
  readonly minor: number;
  readonly inode: number;
  readonly path: string;
  readonly range: string;
}

/**
 * A resolved user-space address: symbol name, distance from the symbol's
 * start, and the path of the mapping it was found in.
 *
 * @example
 * ```ts
 * import { resolveAddr, type UserSymbol } from "./usym.ts";
 * const sym: UserSymbol | null = resolveAddr(Deno.pid, 0x401000n);
 * ```
 */
export interface UserSymbol {
  readonly name: string;
  readonly offset: number;
  readonly module: string;
}

/**
 * Lookup options. `demangle` is accepted for BPFd compatibility but C++
 * demangling is not implemented: names are always returned as stored.
 *
 * @example
 * ```ts
 * import { resolveAddr, type UserSymbolOptions } from "./usym.ts";
 * const opts: UserSymbolOptions = { demangle: false };
 * resolveAddr(Deno.pid, 0x401000n, opts);
 * ```
 */
export interface UserSymbolOptions {
  readonly demangle?: boolean;
}

/**
 * Cache limits for a {@linkcode UserSymbols} resolver.
 *
 * @example
 * ```ts
 * import { UserSymbols, type UserSymbolsConfig } from "./usym.ts";
 * const config: UserSymbolsConfig = { maxFiles: 16, maxProcesses: 8 };
 * const resolver = new UserSymbols(config);
 * ```
 */
export interface UserSymbolsConfig {
  /** Parsed ELF symbol tables kept (default 64). */
  readonly maxFiles?: number;
  /** Processes whose maps are kept (default 64). */
  readonly maxProcesses?: number;
}

const MAPS_LINE =
  /^([0-9a-f]+)-([0-9a-f]+)\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+):([0-9a-f]+)\s+(\d+)[ \t]*(.*)$/i;

/**
 * Parses the text of `/proc/<pid>/maps`; malformed lines are skipped and the
 * result keeps the kernel's (ascending address) order.
 *
 * @example
 * ```ts
 * import { parseMaps } from "./usym.ts";
 * const [m] = parseMaps("00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/dbus-daemon\n");
 * console.log(m.start, m.path); // 4194304n "/usr/bin/dbus-daemon"
 * ```
 */
export function parseMaps(text: string): MemoryMapping[] {
  const out: MemoryMapping[] = [];
  for (const line of text.split("\n")) {
    const m = MAPS_LINE.exec(line);
    if (m === null) continue;
    out.push({
      start: BigInt("0x" + m[1]),
      end: BigInt("0x" + m[2]),
      perms: m[3],
      offset: parseInt(m[4], 16),
      dev: `${m[5]}:${m[6]}`,
      major: parseInt(m[5], 16),
      minor: parseInt(m[6], 16),
      inode: Number(m[7]),
      path: m[8],
      range: `${m[1]}-${m[2]}`,
    });
  }
  return out;
}

/** `st_dev` as the kernel encodes it for user space (glibc `makedev`). */
function makedev(major: number, minor: number): number {
  return (minor & 0xff) + (major & 0xfff) * 0x100 + Math.floor(minor / 0x100) * 0x100000 +
    Math.floor(major / 0x1000) * 0x1_0000_0000_000;
}

/** The page size used to round segment file offsets (x86_64, arm64 4K). */
const PAGE = 4096;
/** Upper bound of the backward walk looking for a containing symbol. */
const WALK_LIMIT = 4096;
/** Minimum age of a process's maps before a miss triggers a re-read. */
const MAPS_REFRESH_MS = 100;

interface LoadSegment {
  offset: number;
  vaddr: number;
  filesz: number;
  memsz: number;
}

/** Address-sorted function/object symbols of one ELF file, plus its PT_LOADs. */
class SymbolIndex {
  readonly loads: LoadSegment[];
  #values: Float64Array;
  #ends: Float64Array;
  #maxEnd: Float64Array;
  #names: string[];
  #byName = new Map<string, number>();

  constructor(elf: ElfFile) {
    this.loads = [];
    for (const p of elf.programHeaders) {
      if (p.type !== ElfSegmentType.LOAD || p.vaddr > BigInt(Number.MAX_SAFE_INTEGER)) continue;
      this.loads.push({
        offset: p.offset,
        vaddr: Number(p.vaddr),
        filesz: p.filesz,
        memsz: p.memsz,
      });
    }
    const wanted = (type: number) =>
      type === ElfSymbolType.FUNC || type === ElfSymbolType.OBJECT ||
      type === ElfSymbolType.GNU_IFUNC;
    const usable = (table: string) =>
      elf.symbols(table).filter((s) =>
        wanted(s.type) && s.shndx !== ElfSectionIndex.UNDEF && s.value !== 0n &&
        s.value <= BigInt(Number.MAX_SAFE_INTEGER)
      );
    const symtab = usable(".symtab");
    const dynsym = usable(".dynsym");
    const syms = symtab.length > 0 ? symtab : dynsym;
    for (const s of [...symtab, ...dynsym]) {
      if (!this.#byName.has(s.name)) this.#byName.set(s.name, Number(s.value));
    }
    const rank = (bind: number) =>
      bind === ElfSymbolBinding.GLOBAL ? 0 : bind === ElfSymbolBinding.WEAK ? 1 : 2;
    // Ascending value; at equal values GLOBAL before WEAK before LOCAL, sized first.
    const order = syms.map((_, i) => i).sort((a, b) => {
      const x = syms[a];
      const y = syms[b];
      if (x.value !== y.value) return x.value < y.value ? -1 : 1;
      return (rank(x.bind) - rank(y.bind)) || (Number(y.size > 0) - Number(x.size > 0)) ||
        (x.index - y.index);
    });
    const n = order.length;
    this.#values = new Float64Array(n);
    this.#ends = new Float64Array(n);
    this.#maxEnd = new Float64Array(n);
    this.#names = new Array(n);
    let max = 0;
    for (let j = 0; j < n; j++) {
      const s = syms[order[j]];
      const v = Number(s.value);
      this.#values[j] = v;
      this.#ends[j] = v + s.size;
      this.#names[j] = s.name;
      max = Math.max(max, v + s.size);
      this.#maxEnd[j] = max;
    }
  }

  /** The symbol for a virtual address: a sized one containing it, else the nearest below. */
  lookup(vaddr: number): { name: string; offset: number } | null {
    const values = this.#values;
    let lo = 0;
    let hi = values.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (values[mid] <= vaddr) lo = mid + 1;
      else hi = mid;
    }
    const last = lo - 1;
    if (last < 0) return null;
    let found = -1;
    for (let j = last, steps = 0; j >= 0 && steps < WALK_LIMIT; j--, steps++) {
      if (this.#maxEnd[j] <= vaddr) break; // nothing at or before j reaches vaddr
      if (this.#ends[j] > vaddr) {
        // Best-ranked containing symbol among those sharing this start.
        found = j;
        for (let k = j - 1; k >= 0 && values[k] === values[j]; k--) {
          if (this.#ends[k] > vaddr) found = k;
        }
        break;
      }
    }
    if (found < 0) {
      found = last;
      while (found > 0 && values[found - 1] === values[last]) found--;
    }
    return { name: this.#names[found], offset: vaddr - values[found] };
  }

  /** Virtual address of the first defined function/object called `name`. */
  addressOf(name: string): number | null {
    return this.#byName.get(name) ?? null;
  }

  /** File offset → virtual address via the PT_LOAD containing it (page-rounded fallback). */
  vaddrOf(fileOffset: number): number | null {
    for (const p of this.loads) {
      if (fileOffset >= p.offset && fileOffset < p.offset + p.filesz) {
        return fileOffset - p.offset + p.vaddr;
      }
    }
    for (const p of this.loads) {
      const base = p.offset - (p.offset % PAGE);
      if (fileOffset >= base && fileOffset < p.offset + p.filesz) {
        return fileOffset - p.offset + p.vaddr;
      }
    }
    return null;
  }

  /** Virtual address → file offset via the PT_LOAD whose file part contains it. */
  fileOffsetOf(vaddr: number): number | null {
    for (const p of this.loads) {
      if (vaddr >= p.vaddr && vaddr < p.vaddr + p.filesz) return vaddr - p.vaddr + p.offset;
    }
    return null;
  }
}

interface ProcessEntry {
  identity: string;
  maps: MemoryMapping[];
  loadedAt: number;
  /** Symbol index per mapping path (null: not an ELF file or unreadable). */
  files: Map<string, SymbolIndex | null>;
}

/** A bounded least-recently-used map. */
class Lru<K, V> {
  #map = new Map<K, V>();
  #max: number;
  constructor(max: number) {
    this.#max = Math.max(1, max);
  }
  get(key: K): V | undefined {
    const v = this.#map.get(key);
    if (v !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, v);
    }
    return v;
  }
  set(key: K, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, value);
    while (this.#map.size > this.#max) this.#map.delete(this.#map.keys().next().value as K);
  }
  delete(key: K): void {
    this.#map.delete(key);
  }
  clear(): void {
    this.#map.clear();
  }
}

function statOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch {
    return null;
  }
}

function realPathOrNull(path: string): string | null {
  try {
    return Deno.realPathSync(path);
  } catch {
    return null;
  }
}

/**
 * A user-space symbol resolver with its own bounded caches. The module-level
 * functions use one shared instance.
 *
 * @example
 * ```ts
 * import { UserSymbols } from "./usym.ts";
 * const resolver = new UserSymbols({ maxFiles: 32 });
 * console.log(resolver.symbolFileOffset("/lib/x86_64-linux-gnu/libc.so.6", "getpid"));
 * ```
 */
export class UserSymbols {
  #files: Lru<string, SymbolIndex | null>;
  #processes: Lru<number, ProcessEntry>;

  /** Creates a resolver; see {@linkcode UserSymbolsConfig} for the cache limits. */
  constructor(config: UserSymbolsConfig = {}) {
    this.#files = new Lru(config.maxFiles ?? 64);
    this.#processes = new Lru(config.maxProcesses ?? 64);
  }

  /**
   * Resolves an address in process `pid` to `symbol+offset` and the mapping's
   * path. `null` when the process is gone, the address is not in a
   * file-backed mapping, the file is not a readable ELF file, or no
   * function/object symbol lies at or below it.
   */
  resolveAddr(pid: number, addr: bigint, _options: UserSymbolOptions = {}): UserSymbol | null {
    const proc = this.#process(pid);
    if (proc === null) return null;
    let mapping = findMapping(proc.maps, addr);
    if ((mapping === null || !isFileBacked(mapping)) && this.#refresh(pid, proc)) {
      mapping = findMapping(proc.maps, addr);
    }
    if (mapping === null || !isFileBacked(mapping)) return null;
    const index = this.#indexForMapping(pid, proc, mapping);
    if (index === null) return null;
    const vaddr = index.vaddrOf(Number(addr - mapping.start) + mapping.offset);
    if (vaddr === null) return null;
    const sym = index.lookup(vaddr);
    return sym === null ? null : { name: sym.name, offset: sym.offset, module: mapping.path };
  }

  /**
   * The address of symbol `name` of `modulePath` in process `pid`. With
   * `pid` -1 (or any negative pid) the result is the symbol's ELF file
   * offset instead (what uprobes take). `null` when the symbol does not
   * exist, the process is gone, or the module is not mapped in it.
   *
   * The module matches a mapping by equal path, equal real path, or equal
   * (device, inode), so `/lib/...` finds a library mapped as `/usr/lib/...`.
   */
  resolveName(
    pid: number,
    name: string,
    modulePath: string,
    _options: UserSymbolOptions = {},
  ): bigint | null {
    if (pid < 0) {
      const off = this.symbolFileOffset(modulePath, name);
      return off === null ? null : BigInt(off);
    }
    const proc = this.#process(pid);
    if (proc === null) return null;
    let mappings = this.#moduleMappings(pid, proc, modulePath);
    if (mappings.length === 0 && this.#refresh(pid, proc)) {
      mappings = this.#moduleMappings(pid, proc, modulePath);
    }
    if (mappings.length === 0) return null;
    const index = this.#indexForMapping(pid, proc, mappings[0]);
    const vaddr = index?.addressOf(name) ?? null;
    if (index === null || vaddr === null) return null;
    const fileOffset = index.fileOffsetOf(vaddr);
    if (fileOffset !== null) {
      for (const m of mappings) {
        if (fileOffset >= m.offset && BigInt(fileOffset - m.offset) < m.end - m.start) {
          return m.start + BigInt(fileOffset - m.offset);
        }
      }
    }
    // Not in a file-backed page (e.g. .bss): apply the load bias of the first mapping.
    const first = mappings.reduce((a, b) => (b.offset < a.offset ? b : a));
    const base = index.vaddrOf(first.offset);
    if (base === null) return null;
    return first.start + BigInt(vaddr - base);
  }

  /**
   * The ELF file offset of the function or object `name` in the file at
   * `path` (symbol value translated through its `PT_LOAD` segment), or
   * `null` when the file is not a readable ELF file or has no such symbol.
   */
  symbolFileOffset(path: string, name: string): number | null {
    const index = this.#index(path, path);
    const vaddr = index?.addressOf(name) ?? null;
    if (index === null || vaddr === null) return null;
    return index.fileOffsetOf(vaddr);
  }

  /** Forgets every cached symbol table and process map. */
  clear(): void {
    this.#files.clear();
    this.#processes.clear();
  }

  // ---- internals ---------------------------------------------------------

  /** Parsed symbols of the file at `openPath`, cached under `logicalPath` and its identity. */
  #index(openPath: string, logicalPath: string): SymbolIndex | null {
    const st = statOrNull(openPath);
    if (st === null || !st.isFile) return null;
    const key = `${logicalPath}\0${st.dev}\0${st.ino}\0${st.mtime?.getTime()}\0${st.size}`;
    const cached = this.#files.get(key);
    if (cached !== undefined) return cached;
    let index: SymbolIndex | null = null;
    try {
      index = new SymbolIndex(ElfFile.open(openPath));
    } catch {
      index = null; // not ELF, corrupted or unreadable: remembered as "no symbols"
    }
    this.#files.set(key, index);
    return index;
  }

  #indexForMapping(pid: number, proc: ProcessEntry, m: MemoryMapping): SymbolIndex | null {
    if (proc.files.has(m.path)) return proc.files.get(m.path) ?? null;
    const candidates = [`/proc/${pid}/map_files/${m.range}`];
    if (!m.path.endsWith(" (deleted)")) candidates.push(`/proc/${pid}/root${m.path}`, m.path);
    let index: SymbolIndex | null = null;
    for (const c of candidates) {
      const st = statOrNull(c);
      if (st === null || !st.isFile) continue;
      // Guard against a different file now living at the same path.
      if (st.ino !== null && m.inode !== 0 && st.ino !== m.inode && c === m.path) continue;
      index = this.#index(c, m.path);
      if (index !== null) break;
    }
    proc.files.set(m.path, index);
    return index;
  }

  #moduleMappings(pid: number, proc: ProcessEntry, modulePath: string): MemoryMapping[] {
    const exact = proc.maps.filter((m) => m.path === modulePath);
    if (exact.length > 0) return exact;
    const real = realPathOrNull(modulePath) ?? realPathOrNull(`/proc/${pid}/root${modulePath}`);
    const st = statOrNull(modulePath) ?? statOrNull(`/proc/${pid}/root${modulePath}`);
    return proc.maps.filter((m) =>
      isFileBacked(m) && (
        (real !== null && m.path === real) ||
        (st !== null && st.ino === m.inode && st.dev === makedev(m.major, m.minor))
      )
    );
  }

  /** The cached maps of `pid`, re-read when the process identity changed. */
  #process(pid: number): ProcessEntry | null {
    if (!Number.isSafeInteger(pid) || pid < 0) return null;
    const identity = processIdentity(pid);
    if (identity === null) {
      this.#processes.delete(pid);
      return null;
    }
    const cached = this.#processes.get(pid);
    if (cached !== undefined && cached.identity === identity) return cached;
    const maps = readMaps(pid);
    if (maps === null) return null;
    const entry = { identity, maps, loadedAt: Date.now(), files: new Map() };
    this.#processes.set(pid, entry);
    return entry;
  }

  /** Re-reads the maps after a miss (at most every MAPS_REFRESH_MS); true if re-read. */
  #refresh(pid: number, proc: ProcessEntry): boolean {
    if (Date.now() - proc.loadedAt < MAPS_REFRESH_MS) return false;
    const maps = readMaps(pid);
    if (maps === null) return false;
    proc.maps = maps;
    proc.loadedAt = Date.now();
    proc.files.clear();
    return true;
  }
}

function readMaps(pid: number): MemoryMapping[] | null {
  try {
    return parseMaps(Deno.readTextFileSync(`/proc/${pid}/maps`));
  } catch {
    return null;
  }
}

/** `exe` (dev, inode) plus start time: changes on exec and on pid reuse. */
function processIdentity(pid: number): string | null {
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const exe = statOrNull(`/proc/${pid}/exe`);
  return `${fields[19] ?? ""}:${exe?.dev ?? ""}:${exe?.ino ?? ""}`;
}

function isFileBacked(m: MemoryMapping): boolean {
  return m.path.startsWith("/");
}

function findMapping(maps: MemoryMapping[], addr: bigint): MemoryMapping | null {
  let lo = 0;
  let hi = maps.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (maps[mid].start <= addr) lo = mid + 1;
    else hi = mid;
  }
  const m = maps[lo - 1];
  return m !== undefined && addr < m.end ? m : null;
}

const shared = new UserSymbols();

/**
 * Resolves an address in process `pid` with the shared resolver; see
 * {@linkcode UserSymbols.resolveAddr}.
 *
 * @example
 * ```ts
 * import { resolveAddr } from "./usym.ts";
 * console.log(resolveAddr(1234, 0x55d0c0a01139n)); // { name: "main", offset: 0, module: "/usr/bin/app" } or null
 * ```
 */
export function resolveAddr(
  pid: number,
  addr: bigint,
  options: UserSymbolOptions = {},
): UserSymbol | null {
  return shared.resolveAddr(pid, addr, options);
}

/**
 * The runtime address of `name` from `modulePath` in process `pid` (the ELF
 * file offset when `pid` is -1) with the shared resolver; see
 * {@linkcode UserSymbols.resolveName}.
 *
 * @example
 * ```ts
 * import { resolveName } from "./usym.ts";
 * const off = resolveName(-1, "getpid", "/lib/x86_64-linux-gnu/libc.so.6"); // file offset
 * ```
 */
export function resolveName(
  pid: number,
  name: string,
  modulePath: string,
  options: UserSymbolOptions = {},
): bigint | null {
  return shared.resolveName(pid, name, modulePath, options);
}

/**
 * The ELF file offset of function/object `name` in `path` (the offset a
 * uprobe attaches at) with the shared resolver; see
 * {@linkcode UserSymbols.symbolFileOffset}.
 *
 * @example
 * ```ts
 * import { symbolFileOffset } from "./usym.ts";
 * console.log(symbolFileOffset("/lib/x86_64-linux-gnu/libc.so.6", "getpid")); // e.g. 873696
 * ```
 */
export function symbolFileOffset(path: string, name: string): number | null {
  return shared.symbolFileOffset(path, name);
}

/**
 * Drops the shared resolver's caches.
 *
 * @example
 * ```ts
 * import { clearUserSymbolCaches } from "./usym.ts";
 * clearUserSymbolCaches();
 * ```
 */
export function clearUserSymbolCaches(): void {
  shared.clear();
}
