/**
 * Turns an {@link ObjectSpec} into kernel objects: loads the object's BTF,
 * creates its maps (global data maps initialised, `.rodata` frozen after its
 * `const volatile` variables were set), applies map references to a copy of
 * each program's instructions and loads the programs with func_info,
 * line_info and CO-RE relocations (the kernel applies CO-RE itself, 5.17+).
 *
 * Everything that depends on the running kernel happens here. On any failure
 * everything created so far is closed and the error names the map or
 * program; on success every fd is handed to the caller's `register` callback
 * (e.g. the runtime's Session), in creation order.
 *
 * @example
 * ```ts
 * import { parseObjectFile } from "../../artifacts/bpf_object.ts";
 * import { loadObject } from "./load.ts";
 * const obj = loadObject(parseObjectFile("opensnoop.bpf.o"), {
 *   rodata: { target_pid: 1234 },
 *   register: (r) => console.log("created", r.kind, r.name, r.fd),
 * });
 * console.log(obj.maps.events.fd, obj.programs.handle_openat.fd);
 * ```
 * @module
 */

import {
  btfLoad,
  mapCreate,
  mapFreeze,
  MapType,
  mapUpdate,
  progLoad,
  ProgLoadError,
} from "../kernel/bpf.ts";
import { SysError } from "../kernel/errno.ts";
import { libc } from "../kernel/ffi.ts";
import { possibleCpus } from "../kernel/target.ts";
import { BtfKind, findTypeId } from "../../artifacts/btf.ts";
import {
  type AttachPoint,
  type DataVariable,
  type MapSpec,
  type ObjectSpec,
  type ProgramSpec,
  ProgType,
} from "../../artifacts/bpf_object.ts";

/**
 * A kernel object the loader created, as handed to the `register` callback.
 *
 * @example
 * ```ts
 * import type { LoadedResource } from "./load.ts";
 * const seen: LoadedResource[] = [];
 * const register = (r: LoadedResource) => void seen.push(r);
 * ```
 */
export interface LoadedResource {
  readonly kind: "map" | "prog" | "btf";
  readonly fd: number;
  /** Map or program name from the object (the object's source for BTF). */
  readonly name: string;
  /** Map type or program type (0 for BTF). */
  readonly type: number;
}

/**
 * A value for a `const volatile` variable: bytes of exactly its size, or an
 * integer (number/bigint/boolean) stored little-endian in its size.
 *
 * @example
 * ```ts
 * import type { RodataValue } from "./load.ts";
 * const v: RodataValue = 1234;
 * ```
 */
export type RodataValue = Uint8Array | number | bigint | boolean;

/**
 * Options of {@link loadObject}.
 *
 * @example
 * ```ts
 * import type { LoadOptions } from "./load.ts";
 * const o: LoadOptions = { rodata: { target_pid: 42 }, programs: ["handle_exec"] };
 * ```
 */
export interface LoadOptions {
  /** Values for `.rodata*` variables by name, written before the map is frozen. */
  readonly rodata?: Readonly<Record<string, RodataValue>>;
  /** Receives every created fd once the whole object loaded (ownership passes to it). */
  readonly register?: (r: LoadedResource) => void;
  /** Load only these programs (default: all). */
  readonly programs?: readonly string[];
  /**
   * `max_entries` overrides by map name, applied when the maps are created (libbpf's
   * `bpf_map__set_max_entries`), e.g. a tool's `--stack-storage-size`. Not for global data maps.
   */
  readonly maxEntries?: Readonly<Record<string, number>>;
  /** Verifier log level on the retry after a failed load (default 1). */
  readonly logLevel?: number;
  /** Verifier log size on that retry (default 1 MiB). */
  readonly logSize?: number;
}

/**
 * A created map.
 *
 * @example
 * ```ts
 * import type { LoadedMap } from "./load.ts";
 * const fdOf = (m: LoadedMap) => m.fd;
 * ```
 */
export interface LoadedMap {
  readonly name: string;
  readonly fd: number;
  /** `max_entries` as created (PERF_EVENT_ARRAY: possible CPUs when the spec said 0). */
  readonly maxEntries: number;
  /** Whether the map was created with BTF key/value types. */
  readonly btf: boolean;
  readonly spec: MapSpec;
}

/**
 * A loaded program.
 *
 * @example
 * ```ts
 * import type { LoadedProgram } from "./load.ts";
 * const describe = (p: LoadedProgram) => `${p.name} fd ${p.fd} (${p.section})`;
 * ```
 */
export interface LoadedProgram {
  readonly name: string;
  readonly fd: number;
  readonly section: string;
  readonly type: number;
  readonly expectedAttachType: number;
  readonly attach: AttachPoint;
  readonly spec: ProgramSpec;
}

/**
 * The result of {@link loadObject}.
 *
 * @example
 * ```ts
 * import type { LoadedObject } from "./load.ts";
 * const names = (o: LoadedObject) => Object.keys(o.programs);
 * ```
 */
export interface LoadedObject {
  readonly source: string;
  /** The object's BTF in the kernel (null when it had none or the kernel refused it). */
  readonly btfFd: number | null;
  readonly maps: Readonly<Record<string, LoadedMap>>;
  readonly programs: Readonly<Record<string, LoadedProgram>>;
  /** Things that were degraded rather than failed (BTF refused, map created without BTF). */
  readonly warnings: readonly string[];
}

/**
 * A program the kernel refused: still a {@link ProgLoadError} (errno and
 * verifier `log`), with a message naming the program and section.
 *
 * @example
 * ```ts
 * import { ProgramLoadError } from "./load.ts";
 * const explain = (e: unknown) =>
 *   e instanceof ProgramLoadError ? `${e.program}: ${e.log.split("\n").slice(-3).join(" ")}` : "";
 * ```
 */
export class ProgramLoadError extends ProgLoadError {
  readonly program: string;
  readonly section: string;
  /**
   * Wraps the kernel's refusal; `hint` says what to do, `source` (the object)
   * prefixes the message.
   */
  constructor(program: string, section: string, cause: ProgLoadError, hint = "", source = "") {
    super(cause.errno, cause.log);
    this.name = "ProgramLoadError";
    this.program = program;
    this.section = section;
    const tail = verifierSummary(cause.log);
    this.message = `${source ? `${source}: ` : ""}program ${JSON.stringify(program)} ` +
      `(section ${JSON.stringify(section)}): ` +
      `the kernel refused it (${cause.message})` +
      (tail ? `; the verifier says: ${tail} (full log in .log)` : "") +
      (hint ? `; ${hint}` : "");
  }
}

/** The verifier's last meaningful lines (without the statistics lines). */
function verifierSummary(log: string): string {
  return log.trim().split("\n")
    .filter((l) => l && !/^(processed \d+ insns|verification time)/.test(l))
    .slice(-2).join(" | ");
}

/**
 * Any other load failure (BTF, map creation, bad `rodata` option); carries
 * the errno when the kernel gave one (0 otherwise).
 *
 * @example
 * ```ts
 * import { ObjectLoadError } from "./load.ts";
 * const errnoOf = (e: unknown) => (e instanceof ObjectLoadError ? e.errno : -1);
 * ```
 */
export class ObjectLoadError extends SysError {
  constructor(errno: number, message: string, options?: { cause?: unknown }) {
    super(errno, message);
    this.name = "ObjectLoadError";
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

/** Map types the kernel refuses BTF key/value types for (libbpf drops them too). */
const NO_BTF_MAP_TYPES: ReadonlySet<number> = new Set([
  MapType.PERF_EVENT_ARRAY,
  MapType.CGROUP_ARRAY,
  MapType.STACK_TRACE,
  12, // ARRAY_OF_MAPS
  13, // HASH_OF_MAPS
  14, // DEVMAP
  15, // SOCKMAP
  16, // CPUMAP
  17, // XSKMAP
  18, // SOCKHASH
  22, // QUEUE
  23, // STACK
  25, // DEVMAP_HASH
  33, // ARENA
]);
const PSEUDO_MAP_FD = 1;
const PSEUDO_MAP_VALUE = 2;
const VMLINUX_BTF = "/sys/kernel/btf/vmlinux";

function q(s: string): string {
  return JSON.stringify(s);
}

/** A kernel object name: `[A-Za-z0-9_.]`, at most 15 bytes. */
function kernelName(name: string): string {
  return name.replace(/[^A-Za-z0-9_.]/g, "_").slice(0, 15);
}

function errnoOf(e: unknown): number {
  return e instanceof SysError ? e.errno : 0;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** LINUX_VERSION_CODE of the running kernel, from its release string. */
function kernelVersionCode(): number {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(Deno.osRelease());
  if (!m) return 0;
  return (Number(m[1]) << 16) + (Number(m[2]) << 8) + Math.min(Number(m[3] ?? 0), 255);
}

function encodeRodata(
  name: string,
  v: DataVariable,
  value: RodataValue,
  map: string,
): Uint8Array {
  const where = `rodata variable ${q(name)} (${v.size} bytes in ${map})`;
  if (value instanceof Uint8Array) {
    if (value.length !== v.size) {
      throw new ObjectLoadError(
        22,
        `${where}: got ${value.length} bytes; pass exactly ${v.size} bytes or a number`,
      );
    }
    return value;
  }
  if (![1, 2, 4, 8].includes(v.size)) {
    throw new ObjectLoadError(
      22,
      `${where}: only 1-, 2-, 4- and 8-byte variables take a number; pass a Uint8Array`,
    );
  }
  let n: bigint;
  if (typeof value === "boolean") n = value ? 1n : 0n;
  else if (typeof value === "bigint") n = value;
  else if (Number.isSafeInteger(value)) n = BigInt(value);
  else throw new ObjectLoadError(22, `${where}: ${value} is not an integer`);
  const bits = BigInt(v.size * 8);
  if (n < -(1n << (bits - 1n)) || n >= 1n << bits) {
    throw new ObjectLoadError(22, `${where}: ${value} does not fit in ${v.size} bytes`);
  }
  const out = new Uint8Array(v.size);
  const u = BigInt.asUintN(Number(bits), n);
  for (let i = 0; i < v.size; i++) out[i] = Number((u >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** Initial contents of every data map with the `rodata` overrides applied. */
function dataContents(
  spec: ObjectSpec,
  rodata: Readonly<Record<string, RodataValue>>,
): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const m of spec.maps) if (m.contents) out.set(m.name, m.contents.slice());
  const rodataMaps = spec.maps.filter((m) => m.origin === "data" && m.freeze);
  for (const [name, value] of Object.entries(rodata)) {
    let hit: { map: MapSpec; v: DataVariable } | undefined;
    for (const map of rodataMaps) {
      const v = map.variables.find((x) => x.name === name);
      if (v) hit = { map, v };
    }
    if (!hit) {
      const known = rodataMaps.flatMap((m) => m.variables.map((v) => v.name))
        .filter((n) => !n.includes("."));
      throw new ObjectLoadError(
        22,
        `${spec.source}: no const volatile variable ${q(name)} in .rodata; ` +
          (known.length ? `known: ${known.join(", ")}` : "the object has none (needs BTF, -g)"),
      );
    }
    out.get(hit.map.name)!.set(encodeRodata(name, hit.v, value, hit.map.name), hit.v.offset);
  }
  return out;
}

let vmlinuxCache: Uint8Array | null = null;

/** The vmlinux BTF id a TRACING program attaches to. */
function attachBtfId(source: string, p: ProgramSpec): number {
  const a = p.attach;
  if (a.kind !== "tp_btf" && a.kind !== "fentry" && a.kind !== "fexit") return 0;
  const where = `${source}: program ${q(p.name)} (section ${q(p.section)})`;
  if (!a.target) {
    throw new ObjectLoadError(
      22,
      `${where}: ${a.kind} needs a target in its section name (e.g. ${a.kind}/sched_switch)`,
    );
  }
  try {
    vmlinuxCache ??= Deno.readFileSync(VMLINUX_BTF);
  } catch (e) {
    throw new ObjectLoadError(
      95,
      `${where}: ${a.kind} programs need kernel BTF (${VMLINUX_BTF}), which this kernel does ` +
        "not have (CONFIG_DEBUG_INFO_BTF); use a tracepoint or raw_tracepoint section",
      { cause: e },
    );
  }
  const name = a.kind === "tp_btf" ? `btf_trace_${a.target}` : a.target;
  const kind = a.kind === "tp_btf" ? BtfKind.TYPEDEF : BtfKind.FUNC;
  const id = findTypeId(vmlinuxCache, name, kind);
  if (!id) {
    throw new ObjectLoadError(
      2,
      `${where}: the kernel's BTF has no ${a.kind === "tp_btf" ? "tracepoint" : "function"} ` +
        `${q(a.target)} (looked for ${name}); check the name against /sys/kernel/tracing/events ` +
        "or /proc/kallsyms",
    );
  }
  return id;
}

function records(count: number, size: number, fill: (dv: DataView, i: number) => void) {
  const data = new Uint8Array(count * size);
  const dv = new DataView(data.buffer);
  for (let i = 0; i < count; i++) fill(dv, i);
  return { recSize: size, data, count };
}

/**
 * Creates the kernel objects of `spec`. Throws {@link ProgramLoadError} for a
 * refused program (with the verifier log) and {@link ObjectLoadError} for
 * anything else; nothing stays open on failure.
 *
 * @example
 * ```ts
 * import { parseObjectFile } from "../../artifacts/bpf_object.ts";
 * import { loadObject, closeObject } from "./load.ts";
 * const obj = loadObject(parseObjectFile("tool.bpf.o"));
 * closeObject(obj); // when no register callback owns the fds
 * ```
 */
export function loadObject(spec: ObjectSpec, options: LoadOptions = {}): LoadedObject {
  const created: LoadedResource[] = [];
  const warnings: string[] = [];
  const maps: Record<string, LoadedMap> = {};
  const programs: Record<string, LoadedProgram> = {};
  let btfFd: number | null = null;
  const wanted = options.programs ? new Set(options.programs) : null;
  if (wanted) {
    for (const n of wanted) {
      if (!spec.programs.some((p) => p.name === n)) {
        throw new ObjectLoadError(
          2,
          `${spec.source}: no program ${q(n)}; it has ${
            spec.programs.map((p) => p.name).join(", ") || "none"
          }`,
        );
      }
    }
  }
  const progs = spec.programs.filter((p) => !wanted || wanted.has(p.name));
  try {
    const contents = dataContents(spec, options.rodata ?? {});
    if (spec.btf) {
      try {
        btfFd = btfLoad(spec.btf.toBytes());
        created.push({ kind: "btf", fd: btfFd, name: spec.source, type: 0 });
      } catch (e) {
        const log = e instanceof ProgLoadError ? verifierSummary(e.log) : "";
        const why = `${messageOf(e)}${log ? `: ${log}` : ""}`;
        const core = progs.find((p) => p.coreRelos.length > 0);
        if (core) {
          throw new ObjectLoadError(
            errnoOf(e),
            `${spec.source}: the kernel refused the object's BTF (${why}); program ` +
              `${q(core.name)} has CO-RE relocations that need it. The kernel may be too old ` +
              "for some BTF kinds clang emitted; rebuild in headers mode for this kernel",
            { cause: e },
          );
        }
        warnings.push(
          `the kernel refused the object's BTF (${why}); loaded without it: no func/line ` +
            "info in verifier logs, maps without BTF types",
        );
      }
    }
    const sizes = maxEntriesOverrides(spec, options.maxEntries ?? {});
    for (const m of spec.maps) {
      const lm = createMap(spec, m, btfFd, contents.get(m.name), warnings, sizes.get(m.name));
      created.push({ kind: "map", fd: lm.fd, name: m.name, type: m.type });
      maps[m.name] = lm;
    }
    const kver = spec.kernelVersion || kernelVersionCode();
    for (const p of progs) {
      const fd = loadProgram(spec, p, maps, btfFd, kver, options);
      created.push({ kind: "prog", fd, name: p.name, type: p.type });
      programs[p.name] = {
        name: p.name,
        fd,
        section: p.section,
        type: p.type,
        expectedAttachType: p.expectedAttachType,
        attach: p.attach,
        spec: p,
      };
    }
  } catch (e) {
    for (const r of created.reverse()) libc.close(r.fd);
    throw e;
  }
  if (options.register) {
    for (let i = 0; i < created.length; i++) {
      try {
        options.register(created[i]);
      } catch (e) {
        for (const r of created.slice(i)) libc.close(r.fd);
        throw e;
      }
    }
  }
  return { source: spec.source, btfFd, maps, programs, warnings };
}

/** Checks the `maxEntries` overrides against the object's maps. */
function maxEntriesOverrides(
  spec: ObjectSpec,
  sizes: Readonly<Record<string, number>>,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const [name, n] of Object.entries(sizes)) {
    const m = spec.maps.find((x) => x.name === name);
    if (!m || m.origin === "data") {
      const known = spec.maps.filter((x) => x.origin !== "data").map((x) => x.name);
      throw new ObjectLoadError(
        22,
        `${spec.source}: cannot size map ${q(name)}: ${
          m ? "it holds global data (its size is fixed)" : "no such map"
        }; sizable maps: ${known.join(", ") || "none"}`,
      );
    }
    if (!Number.isInteger(n) || n < 1 || n > 0xffffffff) {
      throw new ObjectLoadError(
        22,
        `${spec.source}: max_entries of map ${q(name)} must be an integer from 1 to 4294967295, ` +
          `not ${n}`,
      );
    }
    out.set(name, n);
  }
  return out;
}

function createMap(
  spec: ObjectSpec,
  m: MapSpec,
  btfFd: number | null,
  contents: Uint8Array | undefined,
  warnings: string[],
  sizeOverride?: number,
): LoadedMap {
  const where = `${spec.source}: map ${q(m.name)} (section ${m.section})`;
  let maxEntries = sizeOverride ?? m.maxEntries;
  if (m.type === MapType.PERF_EVENT_ARRAY && maxEntries === 0) {
    maxEntries = possibleCpus().cpus.length;
  }
  const base = {
    type: m.type,
    keySize: m.keySize,
    valueSize: m.valueSize,
    maxEntries,
    flags: m.flags,
    name: kernelName(m.name),
    mapExtra: m.mapExtra,
  };
  const withBtf = btfFd !== null && !NO_BTF_MAP_TYPES.has(m.type) &&
    (m.btfKeyTypeId !== 0 || m.btfValueTypeId !== 0);
  let fd = -1;
  let btf = false;
  try {
    if (withBtf) {
      try {
        fd = mapCreate({
          ...base,
          btfFd: btfFd!,
          btfKeyTypeId: m.btfKeyTypeId,
          btfValueTypeId: m.btfValueTypeId,
        });
        btf = true;
      } catch (e) {
        if (![22, 95, 524].includes(errnoOf(e))) throw e;
        warnings.push(`map ${q(m.name)}: the kernel refused its BTF types; created without them`);
      }
    }
    if (fd < 0) fd = mapCreate(base);
  } catch (e) {
    const hint = errnoOf(e) === 1
      ? "run as root (or with CAP_BPF) and raise RLIMIT_MEMLOCK on kernels before 5.11"
      : errnoOf(e) === 22
      ? "check its type, key/value sizes, max_entries (ring buffers: a power-of-two multiple " +
        "of the page size) and flags against this kernel"
      : "check the map definition against this kernel";
    throw new ObjectLoadError(errnoOf(e), `${where}: ${messageOf(e)}; ${hint}`, { cause: e });
  }
  try {
    if (contents) {
      mapUpdate(fd, new Uint8Array(4), contents, 0);
      if (m.freeze) mapFreeze(fd);
    }
  } catch (e) {
    libc.close(fd);
    throw new ObjectLoadError(
      errnoOf(e),
      `${where}: initialising the global data failed: ${messageOf(e)}` +
        (m.freeze ? " (BPF_MAP_FREEZE needs Linux 5.2+)" : ""),
      { cause: e },
    );
  }
  return { name: m.name, fd, maxEntries, btf, spec: m };
}

function loadProgram(
  spec: ObjectSpec,
  p: ProgramSpec,
  maps: Record<string, LoadedMap>,
  btfFd: number | null,
  kver: number,
  options: LoadOptions,
): number {
  const where = `program ${q(p.name)} (section ${q(p.section)})`;
  const insns = p.insns.slice();
  const dv = new DataView(insns.buffer);
  for (const r of p.references) {
    const m = maps[r.map];
    if (!m) {
      throw new ObjectLoadError(
        22,
        `${spec.source}: ${where} uses map ${q(r.map)}, which is missing`,
      );
    }
    const o = r.insn * 8;
    if (r.kind === "data" && (r.offset < 0 || r.offset >= m.spec.valueSize)) {
      throw new ObjectLoadError(
        22,
        `${spec.source}: ${where} instruction ${r.insn} points ${r.offset} bytes into ` +
          `${q(r.map)}, which is ${m.spec.valueSize} bytes; the object is corrupted`,
      );
    }
    const src = r.kind === "map" ? PSEUDO_MAP_FD : PSEUDO_MAP_VALUE;
    insns[o + 1] = (insns[o + 1] & 0x0f) | (src << 4);
    dv.setInt32(o + 4, m.fd, true);
    dv.setInt32(o + 12, r.kind === "map" ? 0 : r.offset, true);
  }
  const withBtf = btfFd !== null && p.funcInfo.length > 0;
  const funcInfo = withBtf
    ? records(p.funcInfo.length, 8, (d, i) => {
      d.setUint32(8 * i, p.funcInfo[i].insnOff, true);
      d.setUint32(8 * i + 4, p.funcInfo[i].typeId, true);
    })
    : undefined;
  const lineInfo = withBtf && p.lineInfo.length
    ? records(p.lineInfo.length, 16, (d, i) => {
      const r = p.lineInfo[i];
      d.setUint32(16 * i, r.insnOff, true);
      d.setUint32(16 * i + 4, r.fileNameOff, true);
      d.setUint32(16 * i + 8, r.lineOff, true);
      d.setUint32(16 * i + 12, r.lineCol, true);
    })
    : undefined;
  if (p.coreRelos.length && !withBtf) {
    throw new ObjectLoadError(
      22,
      `${spec.source}: ${where} has CO-RE relocations but no BTF func_info to load them ` +
        "with; build with -g and keep .BTF/.BTF.ext",
    );
  }
  const coreRelos = p.coreRelos.length
    ? records(p.coreRelos.length, 16, (d, i) => {
      const r = p.coreRelos[i];
      d.setUint32(16 * i, r.insnOff * 8, true);
      d.setUint32(16 * i + 4, r.typeId, true);
      d.setUint32(16 * i + 8, r.accessStrOff, true);
      d.setUint32(16 * i + 12, r.kind, true);
    })
    : undefined;
  try {
    return progLoad({
      type: p.type,
      insns,
      license: spec.license,
      kernVersion: p.type === ProgType.KPROBE ? kver : 0,
      name: kernelName(p.name),
      expectedAttachType: p.expectedAttachType,
      btfFd: withBtf ? btfFd! : 0,
      funcInfo,
      lineInfo,
      coreRelos,
      attachBtfId: attachBtfId(spec.source, p),
      logLevel: options.logLevel,
      logSize: options.logSize,
    });
  } catch (e) {
    if (e instanceof ProgLoadError) {
      throw new ProgramLoadError(p.name, p.section, e, loadHint(p, e.errno, e.log), spec.source);
    }
    if (e instanceof ObjectLoadError) throw e;
    throw new ObjectLoadError(errnoOf(e), `${spec.source}: ${where}: ${messageOf(e)}`, {
      cause: e,
    });
  }
}

/** What to do about a refused program, when the errno alone says it. */
function loadHint(p: ProgramSpec, errno: number, log: string): string {
  const k = p.attach.kind;
  if (errno === 1 && (k === "fentry" || k === "fexit")) {
    return "this kernel refuses fentry/fexit programs (typically a kernel built without " +
      "CONFIG_FUNCTION_TRACER, so no BPF trampolines); use a tracepoint, raw_tracepoint or " +
      "tp_btf section instead";
  }
  if (errno === 1) {
    return "run as root (or with CAP_BPF + CAP_PERFMON) and check kernel lockdown";
  }
  if (/GPL-compatible|gpl_only|cannot call GPL-restricted/i.test(log)) {
    return 'declare a GPL-compatible license: char LICENSE[] SEC("license") = "GPL";';
  }
  if (errno === 7) return "the program is too large for this kernel; split it";
  return "";
}

/**
 * Closes every fd of a loaded object (programs, maps, BTF). Only for objects
 * loaded without a `register` callback; otherwise the owner closes them.
 *
 * @example
 * ```ts
 * import { parseObjectFile } from "../../artifacts/bpf_object.ts";
 * import { closeObject, loadObject } from "./load.ts";
 * const obj = loadObject(parseObjectFile("tool.bpf.o"));
 * closeObject(obj);
 * ```
 */
export function closeObject(obj: LoadedObject): void {
  for (const p of Object.values(obj.programs)) libc.close(p.fd);
  for (const m of Object.values(obj.maps)) libc.close(m.fd);
  if (obj.btfFd !== null) libc.close(obj.btfFd);
}
