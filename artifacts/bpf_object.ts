/**
 * What a BPF object file asks for, as plain data: its license and kernel
 * version, BTF (already fixed up for `BPF_BTF_LOAD`), maps (BTF-defined
 * `.maps`, legacy `maps`, and one array map per `.rodata*`/`.data*`/`.bss*`
 * section), and programs (one per FUNC symbol of each program section, with
 * `.text` callees appended, calls fixed, map references recorded, and their
 * func_info / line_info / CO-RE records moved to program instruction indices).
 *
 * Parsing is pure and deterministic (cilium/ebpf's *spec*): no kernel call, no
 * file access beyond {@link parseObjectFile} reading its argument. Everything
 * that depends on the running kernel happens in `load.ts`.
 *
 * @example
 * ```ts
 * import { parseObjectFile } from "./bpf_object.ts";
 * const spec = parseObjectFile("opensnoop.bpf.o");
 * for (const p of spec.programs) console.log(p.name, p.section, p.insns.length / 8);
 * ```
 * @module
 */

import { ElfFile, ElfSectionFlag, ElfSectionType, type ElfSymbol, ElfSymbolType } from "./elf.ts";
import {
  Btf,
  type BtfCoreRelo,
  type BtfExt,
  type BtfFuncInfo,
  BtfKind,
  type BtfLineInfo,
  fixDatasecs,
  parseBtfExt,
} from "./btf.ts";

/**
 * An object file the loader cannot use: the message names the file, the
 * section/symbol/program and what to do about it.
 *
 * @example
 * ```ts
 * import { BpfObjectError, parseObject } from "./bpf_object.ts";
 * try {
 *   parseObject(Deno.readFileSync("/bin/true"), "/bin/true");
 * } catch (e) {
 *   console.log(e instanceof BpfObjectError, (e as Error).message);
 * }
 * ```
 */
export class BpfObjectError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BpfObjectError";
  }
}

/**
 * `enum bpf_prog_type` values the section table uses.
 *
 * @example
 * ```ts
 * import { ProgType } from "./bpf_object.ts";
 * console.log(ProgType.TRACEPOINT); // 5
 * ```
 */
export const ProgType = {
  SOCKET_FILTER: 1,
  KPROBE: 2,
  SCHED_CLS: 3,
  SCHED_ACT: 4,
  TRACEPOINT: 5,
  XDP: 6,
  PERF_EVENT: 7,
  RAW_TRACEPOINT: 17,
  TRACING: 26,
} as const;

/**
 * `enum bpf_attach_type` values the section table uses.
 *
 * @example
 * ```ts
 * import { AttachType } from "./bpf_object.ts";
 * console.log(AttachType.TRACE_RAW_TP); // 23
 * ```
 */
export const AttachType = {
  NONE: 0,
  TRACE_RAW_TP: 23,
  TRACE_FENTRY: 24,
  TRACE_FEXIT: 25,
} as const;

/**
 * Where a program wants to be attached, as derived from its section name.
 * Missing fields (a bare `SEC("uprobe")`, `SEC("tracepoint")`) mean the caller
 * must name the target at attach time.
 *
 * @example
 * ```ts
 * import type { AttachPoint } from "./bpf_object.ts";
 * const tp: AttachPoint = { kind: "tracepoint", category: "sched", name: "sched_switch" };
 * ```
 */
export type AttachPoint =
  | { readonly kind: "tracepoint"; readonly category?: string; readonly name?: string }
  | { readonly kind: "raw_tracepoint"; readonly name?: string }
  | {
    readonly kind: "kprobe";
    readonly retprobe: boolean;
    readonly function?: string;
    readonly offset: number;
  }
  | {
    readonly kind: "uprobe";
    readonly retprobe: boolean;
    readonly binary?: string;
    readonly symbol?: string;
    readonly offset: number;
  }
  | { readonly kind: "tp_btf" | "fentry" | "fexit"; readonly target?: string }
  | { readonly kind: "perf_event" }
  | { readonly kind: "none" };

/**
 * One row of the section table: a section prefix and the program type,
 * expected attach type and attach point it implies.
 *
 * @example
 * ```ts
 * import { SECTION_TABLE } from "./bpf_object.ts";
 * console.log(SECTION_TABLE.map((d) => d.prefix).join(" "));
 * ```
 */
export interface SectionDef {
  /** Matches the section name exactly or followed by `/`. */
  readonly prefix: string;
  readonly type: number;
  readonly expectedAttachType: number;
  /** Builds the attach point from what follows `prefix/` (undefined for a bare prefix). */
  readonly attach: (rest: string | undefined, section: string) => AttachPoint;
}

function tracepoint(rest: string | undefined, section: string): AttachPoint {
  if (rest === undefined) return { kind: "tracepoint" };
  const parts = rest.split("/");
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    throw new BpfObjectError(
      `section ${JSON.stringify(section)}: a tracepoint section must be ` +
        "tracepoint/<category>/<name> (e.g. tracepoint/syscalls/sys_enter_openat)",
    );
  }
  return { kind: "tracepoint", category: parts[0], name: parts[1] };
}

function parseOffset(s: string, section: string): number {
  const n = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s, 16) : /^\d+$/.test(s) ? parseInt(s, 10) : NaN;
  if (!Number.isSafeInteger(n)) {
    throw new BpfObjectError(
      `section ${JSON.stringify(section)}: ${JSON.stringify(s)} is not an offset ` +
        "(use decimal or 0x-hex)",
    );
  }
  return n;
}

function kprobe(retprobe: boolean) {
  return (rest: string | undefined, section: string): AttachPoint => {
    if (rest === undefined || rest === "") return { kind: "kprobe", retprobe, offset: 0 };
    const m = /^([^+]+)(?:\+(.+))?$/.exec(rest);
    if (!m) throw new BpfObjectError(`section ${JSON.stringify(section)}: bad kprobe target`);
    return {
      kind: "kprobe",
      retprobe,
      function: m[1],
      offset: m[2] ? parseOffset(m[2], section) : 0,
    };
  };
}

function uprobe(retprobe: boolean) {
  return (rest: string | undefined, section: string): AttachPoint => {
    if (rest === undefined || rest === "") return { kind: "uprobe", retprobe, offset: 0 };
    const colon = rest.lastIndexOf(":");
    if (colon <= 0 || colon === rest.length - 1) {
      throw new BpfObjectError(
        `section ${JSON.stringify(section)}: a uprobe section must be ` +
          "uprobe/<binary>:<symbol>[+offset] or uprobe/<binary>:<0xoffset>",
      );
    }
    const binary = rest.slice(0, colon);
    const target = rest.slice(colon + 1);
    if (/^(0x[0-9a-f]+|\d+)$/i.test(target)) {
      return { kind: "uprobe", retprobe, binary, offset: parseOffset(target, section) };
    }
    const m = /^([^+]+)(?:\+(.+))?$/.exec(target)!;
    return {
      kind: "uprobe",
      retprobe,
      binary,
      symbol: m[1],
      offset: m[2] ? parseOffset(m[2], section) : 0,
    };
  };
}

function rawTracepoint(rest: string | undefined): AttachPoint {
  return rest ? { kind: "raw_tracepoint", name: rest } : { kind: "raw_tracepoint" };
}

function tracing(kind: "tp_btf" | "fentry" | "fexit") {
  return (rest: string | undefined): AttachPoint => (rest ? { kind, target: rest } : { kind });
}

const none = (): AttachPoint => ({ kind: "none" });

/**
 * The one table from section names to program types and attach points.
 *
 * @example
 * ```ts
 * import { SECTION_TABLE } from "./bpf_object.ts";
 * console.log(SECTION_TABLE.map((d) => d.prefix).join(", "));
 * ```
 */
export const SECTION_TABLE: readonly SectionDef[] = [
  { prefix: "tracepoint", type: ProgType.TRACEPOINT, expectedAttachType: 0, attach: tracepoint },
  { prefix: "tp", type: ProgType.TRACEPOINT, expectedAttachType: 0, attach: tracepoint },
  {
    prefix: "raw_tracepoint",
    type: ProgType.RAW_TRACEPOINT,
    expectedAttachType: 0,
    attach: rawTracepoint,
  },
  {
    prefix: "raw_tp",
    type: ProgType.RAW_TRACEPOINT,
    expectedAttachType: 0,
    attach: rawTracepoint,
  },
  { prefix: "kprobe", type: ProgType.KPROBE, expectedAttachType: 0, attach: kprobe(false) },
  { prefix: "kretprobe", type: ProgType.KPROBE, expectedAttachType: 0, attach: kprobe(true) },
  { prefix: "uprobe", type: ProgType.KPROBE, expectedAttachType: 0, attach: uprobe(false) },
  { prefix: "uretprobe", type: ProgType.KPROBE, expectedAttachType: 0, attach: uprobe(true) },
  {
    prefix: "tp_btf",
    type: ProgType.TRACING,
    expectedAttachType: AttachType.TRACE_RAW_TP,
    attach: tracing("tp_btf"),
  },
  {
    prefix: "fentry",
    type: ProgType.TRACING,
    expectedAttachType: AttachType.TRACE_FENTRY,
    attach: tracing("fentry"),
  },
  {
    prefix: "fexit",
    type: ProgType.TRACING,
    expectedAttachType: AttachType.TRACE_FEXIT,
    attach: tracing("fexit"),
  },
  {
    prefix: "perf_event",
    type: ProgType.PERF_EVENT,
    expectedAttachType: 0,
    attach: () => ({ kind: "perf_event" }),
  },
  { prefix: "socket", type: ProgType.SOCKET_FILTER, expectedAttachType: 0, attach: none },
  { prefix: "xdp", type: ProgType.XDP, expectedAttachType: 0, attach: none },
  { prefix: "tc", type: ProgType.SCHED_CLS, expectedAttachType: 0, attach: none },
  { prefix: "classifier", type: ProgType.SCHED_CLS, expectedAttachType: 0, attach: none },
];

/**
 * The program type, expected attach type and attach point for a section
 * name, or null when no row of {@link SECTION_TABLE} matches.
 *
 * @example
 * ```ts
 * import { programTypeOf } from "./bpf_object.ts";
 * console.log(programTypeOf("tp/sched/sched_switch")?.attach);
 * // { kind: "tracepoint", category: "sched", name: "sched_switch" }
 * ```
 */
export function programTypeOf(
  section: string,
): { type: number; expectedAttachType: number; attach: AttachPoint } | null {
  for (const d of SECTION_TABLE) {
    if (section !== d.prefix && !section.startsWith(d.prefix + "/")) continue;
    const rest = section === d.prefix ? undefined : section.slice(d.prefix.length + 1);
    return {
      type: d.type,
      expectedAttachType: d.expectedAttachType,
      attach: d.attach(rest, section),
    };
  }
  return null;
}

/**
 * A global variable of a data section (from its BTF DATASEC).
 *
 * @example
 * ```ts
 * import type { DataVariable } from "./bpf_object.ts";
 * const v: DataVariable = { name: "target_pid", offset: 0, size: 4, typeId: 12 };
 * ```
 */
export interface DataVariable {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
  readonly typeId: number;
}

/**
 * A map the object asks for.
 *
 * @example
 * ```ts
 * import type { MapSpec } from "./bpf_object.ts";
 * const describe = (m: MapSpec) => `${m.name}: type ${m.type}, ${m.maxEntries} entries`;
 * ```
 */
export interface MapSpec {
  /** The map variable's name, or the section name for global data (`.rodata`). */
  readonly name: string;
  readonly section: string;
  /** `btf`: `.maps`; `legacy`: `maps` (`struct bpf_map_def`); `data`: global data. */
  readonly origin: "btf" | "legacy" | "data";
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  /** 0 for a PERF_EVENT_ARRAY means "one per possible CPU" (decided at load). */
  readonly maxEntries: number;
  readonly flags: number;
  readonly mapExtra: bigint;
  readonly btfKeyTypeId: number;
  readonly btfValueTypeId: number;
  /** Initial value of key 0 (global data maps); null otherwise. */
  readonly contents: Uint8Array | null;
  /** Freeze after initialisation (`.rodata*`). */
  readonly freeze: boolean;
  /** Variables of a global data map, by offset. */
  readonly variables: readonly DataVariable[];
}

/**
 * A load-time reference from an instruction to a map: `map` sets the
 * `ld_imm64` to the map fd (`BPF_PSEUDO_MAP_FD`); `data` to the address of
 * `offset` in the map's value (`BPF_PSEUDO_MAP_VALUE`).
 *
 * @example
 * ```ts
 * import type { MapReference } from "./bpf_object.ts";
 * const r: MapReference = { insn: 12, kind: "data", map: ".bss", offset: 8 };
 * ```
 */
export interface MapReference {
  /** Instruction index (the first half of the ld_imm64) in the program. */
  readonly insn: number;
  readonly kind: "map" | "data";
  readonly map: string;
  readonly offset: number;
}

/**
 * A function placed in a program: where it came from and where it starts.
 *
 * @example
 * ```ts
 * import type { PlacedFunction } from "./bpf_object.ts";
 * const f: PlacedFunction = { name: "helper", section: ".text", insn: 39, count: 9 };
 * ```
 */
export interface PlacedFunction {
  readonly name: string;
  readonly section: string;
  readonly insn: number;
  readonly count: number;
}

/**
 * A program the object asks for. `insns` has its `.text` callees appended
 * and calls fixed; map references are applied at load. Record offsets in
 * `funcInfo`/`lineInfo`/`coreRelos` are instruction indices into `insns`.
 *
 * @example
 * ```ts
 * import type { ProgramSpec } from "./bpf_object.ts";
 * const size = (p: ProgramSpec) => p.insns.length / 8;
 * ```
 */
export interface ProgramSpec {
  readonly name: string;
  readonly section: string;
  readonly type: number;
  readonly expectedAttachType: number;
  readonly attach: AttachPoint;
  readonly insns: Uint8Array;
  readonly functions: readonly PlacedFunction[];
  readonly references: readonly MapReference[];
  readonly funcInfo: readonly BtfFuncInfo[];
  readonly lineInfo: readonly BtfLineInfo[];
  readonly coreRelos: readonly BtfCoreRelo[];
}

/**
 * Everything an object file asks for.
 *
 * @example
 * ```ts
 * import { parseObjectFile, type ObjectSpec } from "./bpf_object.ts";
 * const spec: ObjectSpec = parseObjectFile("tool.bpf.o");
 * console.log(spec.license, spec.maps.map((m) => m.name));
 * ```
 */
export interface ObjectSpec {
  /** The label used in messages (a path or `<memory>`). */
  readonly source: string;
  readonly license: string;
  /** The `version` section (0 when absent). */
  readonly kernelVersion: number;
  /** BTF with DATASEC sizes/offsets fixed, or null when the object has none. */
  readonly btf: Btf | null;
  readonly maps: readonly MapSpec[];
  readonly programs: readonly ProgramSpec[];
}

const EM_BPF = 247;
const ET_REL = 1;
const R_BPF_64_64 = 1;
const R_BPF_64_32 = 10;
const BPF_F_RDONLY_PROG = 1 << 7;
const MAP_TYPE_PERF_EVENT_ARRAY = 4;
const PSEUDO_CALL = 1;
const PSEUDO_KFUNC_CALL = 2;
const PSEUDO_FUNC = 4;
const OP_CALL = 0x85;
const OP_LD_IMM64 = 0x18;
const LEGACY_DEF_FIELDS = ["type", "key_size", "value_size", "max_entries", "map_flags"] as const;

const DATA_SECTION = /^\.(rodata|data|bss)(\..*)?$/;
const IGNORED = new Set([".BTF", ".BTF.ext", "license", "version", ".maps", "maps"]);

interface Func {
  name: string;
  shndx: number;
  section: string;
  start: number;
  size: number;
}

interface Reloc {
  type: number;
  symbol: ElfSymbol;
  addend: bigint;
}

function q(s: string): string {
  return JSON.stringify(s);
}

/**
 * Parses a BPF object file from a path; see {@link parseObject}.
 *
 * @example
 * ```ts
 * import { parseObjectFile } from "./bpf_object.ts";
 * const spec = parseObjectFile("tool.bpf.o");
 * ```
 */
export function parseObjectFile(path: string): ObjectSpec {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (e) {
    throw new BpfObjectError(
      `${path}: cannot read the BPF object (${(e as Error).message}); check the path`,
      { cause: e },
    );
  }
  return parseObject(bytes, path);
}

/**
 * Parses a BPF object (clang `-target bpf` output, little-endian) into an
 * {@link ObjectSpec}. Pure and deterministic: the same bytes give deep-equal
 * specs. Throws {@link BpfObjectError} naming what is wrong.
 *
 * @example
 * ```ts
 * import { parseObject } from "./bpf_object.ts";
 * const spec = parseObject(Deno.readFileSync("tool.bpf.o"), "tool.bpf.o");
 * console.log(spec.programs.map((p) => `${p.section}:${p.name}`));
 * ```
 */
export function parseObject(bytes: Uint8Array, source = "<memory>"): ObjectSpec {
  try {
    return new ObjectParser(bytes, source).parse();
  } catch (e) {
    if (e instanceof BpfObjectError) {
      if (e.message.startsWith(`${source}:`)) throw e;
      throw new BpfObjectError(`${source}: ${e.message}`, { cause: e.cause });
    }
    const msg = e instanceof Error ? e.message : String(e);
    throw new BpfObjectError(
      msg.startsWith(`${source}:`) ? msg : `${source}: ${msg}`,
      { cause: e },
    );
  }
}

class ObjectParser {
  #elf: ElfFile;
  #source: string;
  #symbols: ElfSymbol[] = [];
  #btf: Btf | null = null;
  #ext: BtfExt | null = null;
  #maps: MapSpec[] = [];
  /** `${shndx}:${offset}` → map name, for `.maps`/`maps` symbols. */
  #mapAt = new Map<string, string>();
  /** Data section index → map name. */
  #dataMaps = new Map<number, string>();
  #funcs = new Map<number, Func[]>();
  #relocs = new Map<number, Map<number, Reloc>>();

  constructor(bytes: Uint8Array, source: string) {
    this.#source = source;
    if (bytes.length >= 6 && bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[5] === 2) {
      throw new BpfObjectError(
        "big-endian BPF objects (bpfeb) are not supported; build with -target bpfel " +
          "(or -target bpf on a little-endian host)",
      );
    }
    this.#elf = new ElfFile(bytes, source);
  }

  parse(): ObjectSpec {
    const elf = this.#elf;
    const h = elf.header;
    if (h.machine !== EM_BPF) {
      throw new BpfObjectError(
        `not a BPF object: e_machine is ${h.machine}, not 247 (EM_BPF); build it with ` +
          "clang -target bpf -c",
      );
    }
    if (h.type !== ET_REL) {
      throw new BpfObjectError(
        `e_type is ${h.type}, not 1 (ET_REL): pass the object clang wrote with -c, not a ` +
          "linked file",
      );
    }
    if (!elf.section(".symtab")) {
      throw new BpfObjectError(
        "the object has no symbol table (.symtab); do not strip BPF objects with " +
          "--strip-all (llvm-strip -g is fine)",
      );
    }
    this.#symbols = elf.symbols(".symtab");
    const license = this.#license();
    const kernelVersion = this.#version();
    this.#classifySections();
    this.#loadBtf();
    this.#collectDataMaps();
    this.#collectBtfMaps();
    this.#collectLegacyMaps();
    this.#checkUniqueMapNames();
    this.#collectFunctions();
    this.#collectRelocations();
    const programs = this.#programs();
    return {
      source: this.#source,
      license,
      kernelVersion,
      btf: this.#btf,
      maps: this.#maps,
      programs,
    };
  }

  #license(): string {
    const s = this.#elf.section("license");
    if (!s) return "";
    const d = this.#elf.sectionData(s);
    const end = d.indexOf(0);
    return new TextDecoder().decode(end < 0 ? d : d.subarray(0, end));
  }

  #version(): number {
    const s = this.#elf.section("version");
    if (!s) return 0;
    const d = this.#elf.sectionData(s);
    if (d.length !== 4) {
      throw new BpfObjectError(`section "version" has ${d.length} bytes; it must hold one u32`);
    }
    return new DataView(d.buffer, d.byteOffset, 4).getUint32(0, true);
  }

  #classifySections() {
    for (const s of this.#elf.sections) {
      if (s.index === 0) continue;
      switch (s.type) {
        case ElfSectionType.NULL:
        case ElfSectionType.SYMTAB:
        case ElfSectionType.STRTAB:
        case ElfSectionType.REL:
        case ElfSectionType.RELA:
        case ElfSectionType.SYMTAB_SHNDX:
          continue;
      }
      if (IGNORED.has(s.name) || DATA_SECTION.test(s.name)) continue;
      if (s.flags & ElfSectionFlag.EXECINSTR) {
        if (s.name === ".text" || s.size === 0) continue;
        if (!programTypeOf(s.name)) {
          throw new BpfObjectError(
            `program section ${q(s.name)} has no known program type; name it with one of ` +
              `the known prefixes: ${SECTION_TABLE.map((d) => d.prefix).join(", ")} ` +
              '(e.g. SEC("tracepoint/syscalls/sys_enter_openat"))',
          );
        }
        continue;
      }
      if (!(s.flags & ElfSectionFlag.ALLOC)) continue; // debug info and other metadata
      if (s.name === ".kconfig" || s.name === ".ksyms") {
        throw new BpfObjectError(
          `section ${q(s.name)}: extern kconfig/ksym variables are not supported; remove ` +
            "the __kconfig/__ksym externs",
        );
      }
      throw new BpfObjectError(
        `unknown section ${q(s.name)}: this loader understands program sections, .text, ` +
          ".maps, maps, .rodata*, .data*, .bss*, license and version; put variables in " +
          "those (remove the custom SEC(...) on data)",
      );
    }
  }

  #loadBtf() {
    const elf = this.#elf;
    const s = elf.section(".BTF");
    if (!s) return;
    const raw = Btf.parse(elf.sectionData(s), `${this.#source}: .BTF`);
    for (const t of raw.types) {
      if (t.kind === BtfKind.DATASEC && (t.name === ".kconfig" || t.name === ".ksyms")) {
        throw new BpfObjectError(
          `the object declares extern ${t.name === ".kconfig" ? "kconfig" : "ksym/kfunc"} ` +
            `symbols (BTF DATASEC ${t.name}), which this loader does not support; remove ` +
            "the __kconfig/__ksym externs",
        );
      }
    }
    this.#btf = fixDatasecs(raw, {
      sectionSize: (name) => elf.section(name)?.size,
      symbolOffset: (section, name) => {
        const sec = elf.section(section);
        if (!sec) return undefined;
        const sym = this.#symbols.find((x) =>
          x.shndx === sec.index && x.name === name && x.type !== ElfSymbolType.SECTION
        );
        return sym === undefined ? undefined : Number(sym.value);
      },
    });
    const ext = elf.section(".BTF.ext");
    if (ext) this.#ext = parseBtfExt(elf.sectionData(ext), this.#btf);
  }

  #datasec(name: string) {
    const t = this.#btf?.find(name, BtfKind.DATASEC);
    return t && t.kind === BtfKind.DATASEC ? t : undefined;
  }

  #collectDataMaps() {
    for (const s of this.#elf.sections) {
      if (!DATA_SECTION.test(s.name) || s.size === 0) continue;
      if (!(s.flags & ElfSectionFlag.ALLOC)) continue;
      const rodata = s.name.startsWith(".rodata");
      const contents = s.type === ElfSectionType.NOBITS
        ? new Uint8Array(s.size)
        : this.#elf.sectionData(s).slice();
      const ds = this.#datasec(s.name);
      const variables: DataVariable[] = [];
      if (ds && this.#btf) {
        for (const v of ds.vars) {
          const vt = this.#btf.type(v.type);
          if (vt.kind !== BtfKind.VAR) continue;
          variables.push({ name: vt.name, offset: v.offset, size: v.size, typeId: vt.type });
        }
      }
      this.#maps.push({
        name: s.name,
        section: s.name,
        origin: "data",
        type: 2, // BPF_MAP_TYPE_ARRAY
        keySize: 4,
        valueSize: s.size,
        maxEntries: 1,
        flags: rodata ? BPF_F_RDONLY_PROG : 0,
        mapExtra: 0n,
        btfKeyTypeId: 0,
        btfValueTypeId: ds?.id ?? 0,
        contents,
        freeze: rodata,
        variables,
      });
      this.#dataMaps.set(s.index, s.name);
    }
  }

  #collectBtfMaps() {
    const sec = this.#elf.section(".maps");
    if (!sec || sec.size === 0) return;
    const btf = this.#btf;
    const ds = this.#datasec(".maps");
    if (!btf || !ds) {
      throw new BpfObjectError(
        "section .maps needs BTF to describe its maps, but the object has none; compile " +
          "with -g (and do not strip .BTF)",
      );
    }
    for (const v of ds.vars) {
      const vt = btf.type(v.type);
      if (vt.kind !== BtfKind.VAR) continue;
      const m = this.#btfMap(btf, vt.name, vt.type);
      this.#maps.push(m);
      this.#mapAt.set(`${sec.index}:${v.offset}`, vt.name);
    }
  }

  #btfMap(btf: Btf, name: string, typeId: number): MapSpec {
    const where = `map ${q(name)} in .maps`;
    const st = btf.resolve(typeId);
    if (st.kind !== BtfKind.STRUCT) {
      throw new BpfObjectError(`${where} is not a struct; declare it with struct { __uint(...) }`);
    }
    const uint = (m: { name: string; type: number }): bigint => {
      const t = btf.resolve(m.type);
      if (t.kind === BtfKind.PTR) {
        const a = btf.resolve(t.type);
        if (a.kind === BtfKind.ARRAY) return BigInt(a.nelems);
      } else if ((t.kind === BtfKind.ENUM || t.kind === BtfKind.ENUM64) && t.values.length) {
        return BigInt(t.values[0].value);
      }
      throw new BpfObjectError(
        `${where}: field ${q(m.name)} must be declared with __uint(${m.name}, N)`,
      );
    };
    const pointee = (m: { name: string; type: number }): number => {
      const t = btf.resolve(m.type);
      if (t.kind !== BtfKind.PTR) {
        throw new BpfObjectError(
          `${where}: field ${q(m.name)} must be declared with __type(${m.name}, T)`,
        );
      }
      return t.type;
    };
    let type = 0, maxEntries = 0, flags = 0, keySize = 0, valueSize = 0;
    let mapExtra = 0n, keyId = 0, valueId = 0;
    for (const m of st.members) {
      switch (m.name) {
        case "type":
          type = Number(uint(m));
          break;
        case "max_entries":
          maxEntries = Number(uint(m));
          break;
        case "map_flags":
          flags = Number(uint(m));
          break;
        case "key_size":
          keySize = Number(uint(m));
          break;
        case "value_size":
          valueSize = Number(uint(m));
          break;
        case "map_extra":
          mapExtra = uint(m);
          break;
        case "numa_node":
        case "pinning":
          uint(m); // accepted, not used by this loader
          break;
        case "key":
          keyId = pointee(m);
          break;
        case "value": {
          valueId = pointee(m);
          const vt = btf.resolve(valueId);
          if (vt.kind === BtfKind.ARRAY && vt.nelems === 0) {
            throw new BpfObjectError(
              `${where}: map-in-map / prog-array initial values (__array(values, ...)) are ` +
                "not supported; fill the map from user space instead",
            );
          }
          break;
        }
        case "values":
          throw new BpfObjectError(
            `${where}: map-in-map / prog-array initial values (__array(values, ...)) are not ` +
              "supported; fill the map from user space instead",
          );
        default:
          throw new BpfObjectError(
            `${where} has field ${q(m.name)}, which this loader does not know; use type, ` +
              "max_entries, map_flags, key, value, key_size, value_size, map_extra, pinning",
          );
      }
    }
    const sized = (id: number, given: number, what: "key" | "value") => {
      if (!id) return given;
      const size = btf.sizeOf(id);
      if (given && given !== size) {
        throw new BpfObjectError(
          `${where}: ${what}_size is ${given} but __type(${what}, ...) is ${size} bytes; ` +
            "declare only one of them",
        );
      }
      return size;
    };
    keySize = sized(keyId, keySize, "key");
    valueSize = sized(valueId, valueSize, "value");
    if (type === MAP_TYPE_PERF_EVENT_ARRAY) {
      keySize ||= 4;
      valueSize ||= 4;
    }
    return {
      name,
      section: ".maps",
      origin: "btf",
      type,
      keySize,
      valueSize,
      maxEntries,
      flags,
      mapExtra,
      btfKeyTypeId: keyId,
      btfValueTypeId: valueId,
      contents: null,
      freeze: false,
      variables: [],
    };
  }

  #collectLegacyMaps() {
    const sec = this.#elf.section("maps");
    if (!sec || sec.size === 0) return;
    const data = this.#elf.sectionData(sec);
    const syms = this.#symbols
      .filter((s) =>
        s.shndx === sec.index && s.type !== ElfSymbolType.SECTION && s.type !== ElfSymbolType.FILE
      )
      .sort((a, b) => Number(a.value - b.value) || a.index - b.index);
    if (!syms.length) {
      throw new BpfObjectError(
        "section maps holds no map symbols; declare each map as a global struct bpf_map_def",
      );
    }
    const stride = Math.floor(sec.size / syms.length);
    for (const s of syms) {
      const off = Number(s.value);
      const size = s.size || stride;
      if (size < 16 || off + size > data.length) {
        throw new BpfObjectError(
          `legacy map ${q(s.name)} (section maps, offset ${off}, ${size} bytes) is not a ` +
            "struct bpf_map_def {type, key_size, value_size, max_entries[, map_flags]}",
        );
      }
      const dv = new DataView(data.buffer, data.byteOffset + off, size);
      const f = LEGACY_DEF_FIELDS.map((
        _,
        i,
      ) => (4 * i + 4 <= size ? dv.getUint32(4 * i, true) : 0));
      for (let i = 20; i < size; i++) {
        if (dv.getUint8(i) !== 0) {
          throw new BpfObjectError(
            `legacy map ${q(s.name)}: struct bpf_map_def has non-zero fields after map_flags ` +
              "(inner maps, NUMA node, pinning); this loader does not support them",
          );
        }
      }
      this.#maps.push({
        name: s.name,
        section: "maps",
        origin: "legacy",
        type: f[0],
        keySize: f[1],
        valueSize: f[2],
        maxEntries: f[3],
        flags: f[4],
        mapExtra: 0n,
        btfKeyTypeId: 0,
        btfValueTypeId: 0,
        contents: null,
        freeze: false,
        variables: [],
      });
      this.#mapAt.set(`${sec.index}:${off}`, s.name);
    }
  }

  #checkUniqueMapNames() {
    const seen = new Set<string>();
    for (const m of this.#maps) {
      if (seen.has(m.name)) {
        throw new BpfObjectError(`two maps are called ${q(m.name)}; rename one of them`);
      }
      seen.add(m.name);
    }
  }

  #collectFunctions() {
    for (const s of this.#elf.sections) {
      if (!(s.flags & ElfSectionFlag.EXECINSTR) || s.size === 0) continue;
      if (s.size % 8) {
        throw new BpfObjectError(
          `code section ${q(s.name)} is ${s.size} bytes, not a multiple of 8; rebuild it`,
        );
      }
      const funcs: Func[] = this.#symbols
        .filter((x) => x.shndx === s.index && x.type === ElfSymbolType.FUNC && x.size > 0)
        .map((x) => ({
          name: x.name,
          shndx: s.index,
          section: s.name,
          start: Number(x.value),
          size: x.size,
        }))
        .sort((a, b) => a.start - b.start);
      for (const f of funcs) {
        if (f.start % 8 || f.size % 8 || f.start + f.size > s.size) {
          throw new BpfObjectError(
            `function ${q(f.name)} in ${q(s.name)} (offset ${f.start}, ${f.size} bytes) is ` +
              "misaligned or outside its section; the object is corrupted",
          );
        }
      }
      if (!funcs.length && s.name !== ".text") {
        throw new BpfObjectError(
          `program section ${q(s.name)} has code but no function symbol; define programs ` +
            "as C functions (and do not strip symbols)",
        );
      }
      this.#funcs.set(s.index, funcs);
    }
  }

  #collectRelocations() {
    for (const r of this.#elf.sections) {
      if (r.type !== ElfSectionType.REL && r.type !== ElfSectionType.RELA) continue;
      const target = this.#elf.sectionAt(r.info);
      if (!target || !(target.flags & ElfSectionFlag.EXECINSTR)) continue;
      const byOff = new Map<number, Reloc>();
      for (const rel of this.#elf.relocations(r)) {
        const symbol = this.#symbols[rel.symbol];
        if (!symbol) {
          throw new BpfObjectError(
            `relocation at ${q(target.name)}+${rel.offset} names symbol ${rel.symbol}, which ` +
              "does not exist; the object is corrupted",
          );
        }
        byOff.set(Number(rel.offset), { type: rel.type, symbol, addend: rel.addend });
      }
      this.#relocs.set(target.index, byOff);
    }
  }

  #funcAt(shndx: number, byteOff: number, from: string): Func {
    const f = this.#funcs.get(shndx)?.find((x) => x.start === byteOff);
    if (!f) {
      const sec = this.#elf.sectionAt(shndx)?.name ?? `#${shndx}`;
      throw new BpfObjectError(
        `${from}: calls ${q(sec)}+${byteOff}, which is not the start of a function; the ` +
          "object is corrupted or uses an unsupported construct",
      );
    }
    return f;
  }

  #programs(): ProgramSpec[] {
    const out: ProgramSpec[] = [];
    for (const s of this.#elf.sections) {
      if (!(s.flags & ElfSectionFlag.EXECINSTR) || s.name === ".text" || s.size === 0) continue;
      const pt = programTypeOf(s.name)!;
      for (const f of this.#funcs.get(s.index) ?? []) out.push(this.#program(f, pt));
    }
    const names = new Set<string>();
    for (const p of out) {
      if (names.has(p.name)) {
        throw new BpfObjectError(`two programs are called ${q(p.name)}; rename one of them`);
      }
      names.add(p.name);
    }
    return out;
  }

  #program(
    entry: Func,
    pt: { type: number; expectedAttachType: number; attach: AttachPoint },
  ): ProgramSpec {
    const placed: { f: Func; at: number }[] = [];
    const placedAt = new Map<string, number>();
    let total = 0;
    const place = (f: Func): number => {
      const key = `${f.shndx}:${f.start}`;
      const have = placedAt.get(key);
      if (have !== undefined) return have;
      const at = total;
      placed.push({ f, at });
      placedAt.set(key, at);
      total += f.size / 8;
      return at;
    };
    place(entry);
    const chunks: Uint8Array[] = [];
    const references: MapReference[] = [];
    const progLabel = `program ${q(entry.name)} (section ${q(entry.section)})`;
    for (let qi = 0; qi < placed.length; qi++) {
      const { f, at } = placed[qi];
      const sec = this.#elf.sectionAt(f.shndx)!;
      const code = this.#elf.sectionData(sec).slice(f.start, f.start + f.size);
      const dv = new DataView(code.buffer);
      const relocs = this.#relocs.get(f.shndx);
      const n = f.size / 8;
      for (let i = 0; i < n; i++) {
        const off = f.start + i * 8;
        const where = `${progLabel}, function ${q(f.name)} instruction ${i}`;
        const op = code[i * 8];
        const src = code[i * 8 + 1] >> 4;
        const imm = dv.getInt32(i * 8 + 4, true);
        const rel = relocs?.get(off);
        if (op === OP_CALL && src === PSEUDO_CALL) {
          let tsec = f.shndx, tidx: number;
          if (rel) {
            if (rel.type !== R_BPF_64_32) {
              throw new BpfObjectError(`${where}: call has relocation type ${rel.type}, not 10`);
            }
            this.#defined(rel.symbol, where);
            tsec = rel.symbol.shndx;
            tidx = Number(rel.symbol.value) / 8 + imm + 1;
          } else {
            tidx = off / 8 + imm + 1;
          }
          const callee = this.#funcAt(tsec, tidx * 8, where);
          const newAt = place(callee);
          dv.setInt32(i * 8 + 4, newAt - (at + i + 1), true);
        } else if (op === OP_CALL && src === PSEUDO_KFUNC_CALL) {
          throw new BpfObjectError(`${where}: kfunc calls are not supported by this loader`);
        } else if (op === OP_LD_IMM64) {
          if (i + 1 >= n) throw new BpfObjectError(`${where}: ld_imm64 is cut off`);
          if (rel) {
            if (rel.type !== R_BPF_64_64) {
              throw new BpfObjectError(
                `${where}: ld_imm64 has relocation type ${rel.type}, not 1 (R_BPF_64_64)`,
              );
            }
            references.push(...this.#ldImm64(rel, imm, at + i, where, code, i, dv, place));
          }
          i++;
        } else if (rel) {
          throw new BpfObjectError(
            `${where}: relocation type ${rel.type} against ${q(rel.symbol.name)} on an ` +
              `instruction (opcode 0x${op.toString(16)}) that is neither a call nor ld_imm64`,
          );
        }
      }
      chunks.push(code);
    }
    const insns = new Uint8Array(total * 8);
    let o = 0;
    for (const c of chunks) {
      insns.set(c, o);
      o += c.length;
    }
    const move = <T extends { insnOff: number }>(
      records: ReadonlyMap<string, readonly T[]> | undefined,
    ): T[] => {
      const res: T[] = [];
      if (!records) return res;
      for (const { f, at } of placed) {
        for (const r of records.get(f.section) ?? []) {
          if (r.insnOff < f.start || r.insnOff >= f.start + f.size) continue;
          const idx = at + (r.insnOff - f.start) / 8;
          res.push({ ...r, insnOff: idx });
        }
      }
      return res;
    };
    return {
      name: entry.name,
      section: entry.section,
      type: pt.type,
      expectedAttachType: pt.expectedAttachType,
      attach: pt.attach,
      insns,
      functions: placed.map(({ f, at }) => ({
        name: f.name,
        section: f.section,
        insn: at,
        count: f.size / 8,
      })),
      references,
      funcInfo: move(this.#ext?.funcInfo),
      lineInfo: move(this.#ext?.lineInfo),
      coreRelos: move(this.#ext?.coreRelos),
    };
  }

  #defined(sym: ElfSymbol, where: string) {
    if (sym.shndx === 0) {
      throw new BpfObjectError(
        `${where}: refers to ${q(sym.name)}, which is not defined in this object (an extern); ` +
          "externs, kfuncs and multi-object linking are not supported: define it in the object",
      );
    }
  }

  #ldImm64(
    rel: Reloc,
    imm: number,
    insn: number,
    where: string,
    code: Uint8Array,
    i: number,
    dv: DataView,
    place: (f: Func) => number,
  ): MapReference[] {
    const sym = rel.symbol;
    this.#defined(sym, where);
    const secName = this.#elf.sectionAt(sym.shndx)?.name ?? `#${sym.shndx}`;
    const value = Number(sym.value) + Number(rel.addend);
    const mapName = this.#mapAt.get(
      `${sym.shndx}:${sym.type === ElfSymbolType.SECTION ? value + imm : value}`,
    );
    if (mapName !== undefined) return [{ insn, kind: "map", map: mapName, offset: 0 }];
    if (secName === ".maps" || secName === "maps") {
      throw new BpfObjectError(
        `${where}: refers to ${q(sym.name)} in ${secName}, which is not a map definition`,
      );
    }
    const data = this.#dataMaps.get(sym.shndx);
    if (data !== undefined) {
      return [{ insn, kind: "data", map: data, offset: value + imm }];
    }
    const sec = this.#elf.sectionAt(sym.shndx);
    if (sec && sec.flags & ElfSectionFlag.EXECINSTR) {
      const byte = value + imm;
      const callee = this.#funcAt(sym.shndx, byte, where);
      const at = place(callee);
      code[i * 8 + 1] = (code[i * 8 + 1] & 0x0f) | (PSEUDO_FUNC << 4);
      dv.setInt32(i * 8 + 4, at - (insn + 1), true);
      return [];
    }
    throw new BpfObjectError(
      `${where}: refers to ${q(sym.name)} in section ${q(secName)}, which is neither a map, ` +
        "global data nor code; move it to .rodata/.data/.bss or .maps",
    );
  }
}
