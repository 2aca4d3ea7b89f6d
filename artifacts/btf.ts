/**
 * BTF (the BPF Type Format) and its `.BTF.ext` companion: a bounds-checked
 * parser for every type kind the kernel knows (INT … ENUM64), helpers to find
 * types by name, resolve sizes and walk struct members, the fix-up the kernel
 * needs before `BPF_BTF_LOAD` (clang leaves `DATASEC` sizes and global `VAR`
 * offsets at 0 in object files), and a serializer back to bytes.
 *
 * Everything here is pure: no kernel calls, no file access.
 *
 * @example
 * ```ts
 * import { Btf, BtfKind } from "./btf.ts";
 * const btf = Btf.parse(Deno.readFileSync("/sys/kernel/btf/vmlinux"));
 * const task = btf.find("task_struct", BtfKind.STRUCT);
 * console.log(task && btf.sizeOf(task.id));
 * ```
 * @module
 */

/**
 * Raised for malformed BTF or `.BTF.ext` data and for fix-ups that cannot be
 * done (a `DATASEC` naming a section the object does not have, …).
 *
 * @example
 * ```ts
 * import { Btf, BtfError } from "./btf.ts";
 * try {
 *   Btf.parse(new Uint8Array(8));
 * } catch (e) {
 *   console.log(e instanceof BtfError); // true
 * }
 * ```
 */
export class BtfError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BtfError";
  }
}

/**
 * `BTF_KIND_*` numbers.
 *
 * @example
 * ```ts
 * import { BtfKind } from "./btf.ts";
 * console.log(BtfKind.DATASEC); // 15
 * ```
 */
export const BtfKind = {
  VOID: 0,
  INT: 1,
  PTR: 2,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FWD: 7,
  TYPEDEF: 8,
  VOLATILE: 9,
  CONST: 10,
  RESTRICT: 11,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  FLOAT: 16,
  DECL_TAG: 17,
  TYPE_TAG: 18,
  ENUM64: 19,
} as const;

const KIND_NAMES = Object.fromEntries(Object.entries(BtfKind).map(([k, v]) => [v, k])) as Record<
  number,
  string
>;

/**
 * The name of a kind number (`"STRUCT"`), or `KIND<n>` when unknown.
 *
 * @example
 * ```ts
 * import { btfKindName } from "./btf.ts";
 * console.log(btfKindName(4)); // "STRUCT"
 * ```
 */
export function btfKindName(kind: number): string {
  return KIND_NAMES[kind] ?? `KIND${kind}`;
}

/**
 * What every type has: its id (index in the type list, 0 = void), kind,
 * name (resolved) and name offset, and the `kflag` bit of `info`.
 *
 * @example
 * ```ts
 * import type { BtfTypeBase } from "./btf.ts";
 * const describe = (t: BtfTypeBase) => `[${t.id}] ${t.name || "(anon)"}`;
 * ```
 */
export interface BtfTypeBase {
  readonly id: number;
  readonly name: string;
  readonly nameOff: number;
  readonly kflag: boolean;
}

/**
 * `void` (type id 0; never stored in the type section).
 *
 * @example
 * ```ts
 * import type { BtfVoid } from "./btf.ts";
 * const v: BtfVoid = { id: 0, kind: 0, name: "", nameOff: 0, kflag: false };
 * ```
 */
export interface BtfVoid extends BtfTypeBase {
  readonly kind: typeof BtfKind.VOID;
}

/**
 * `INT`: size in bytes, encoding bits (1 signed, 2 char, 4 bool), bit offset and width.
 *
 * @example
 * ```ts
 * import type { BtfInt } from "./btf.ts";
 * const isSigned = (t: BtfInt) => (t.encoding & 1) !== 0;
 * ```
 */
export interface BtfInt extends BtfTypeBase {
  readonly kind: typeof BtfKind.INT;
  readonly size: number;
  readonly encoding: number;
  readonly bitOffset: number;
  readonly bits: number;
}

/**
 * Kinds that only point at another type: PTR, TYPEDEF, VOLATILE, CONST,
 * RESTRICT, TYPE_TAG.
 *
 * @example
 * ```ts
 * import type { BtfRef } from "./btf.ts";
 * const target = (t: BtfRef) => t.type;
 * ```
 */
export interface BtfRef extends BtfTypeBase {
  readonly kind:
    | typeof BtfKind.PTR
    | typeof BtfKind.TYPEDEF
    | typeof BtfKind.VOLATILE
    | typeof BtfKind.CONST
    | typeof BtfKind.RESTRICT
    | typeof BtfKind.TYPE_TAG;
  readonly type: number;
}

/**
 * `ARRAY`: element type, index type, element count.
 *
 * @example
 * ```ts
 * import type { BtfArray } from "./btf.ts";
 * const count = (t: BtfArray) => t.nelems;
 * ```
 */
export interface BtfArray extends BtfTypeBase {
  readonly kind: typeof BtfKind.ARRAY;
  readonly type: number;
  readonly indexType: number;
  readonly nelems: number;
}

/**
 * One member of a STRUCT/UNION; `bitfieldSize` is 0 unless the type's kflag is set.
 *
 * @example
 * ```ts
 * import type { BtfMember } from "./btf.ts";
 * const byteOffset = (m: BtfMember) => m.bitOffset / 8;
 * ```
 */
export interface BtfMember {
  readonly name: string;
  readonly nameOff: number;
  readonly type: number;
  readonly bitOffset: number;
  readonly bitfieldSize: number;
}

/**
 * `STRUCT` or `UNION`.
 *
 * @example
 * ```ts
 * import type { BtfComposite } from "./btf.ts";
 * const names = (t: BtfComposite) => t.members.map((m) => m.name);
 * ```
 */
export interface BtfComposite extends BtfTypeBase {
  readonly kind: typeof BtfKind.STRUCT | typeof BtfKind.UNION;
  readonly size: number;
  readonly members: readonly BtfMember[];
}

/**
 * One enumerator (`value` is a bigint for ENUM64, a number for ENUM).
 *
 * @example
 * ```ts
 * import type { BtfEnumValue } from "./btf.ts";
 * const v: BtfEnumValue<number> = { name: "A", nameOff: 1, value: 0 };
 * ```
 */
export interface BtfEnumValue<T extends number | bigint> {
  readonly name: string;
  readonly nameOff: number;
  readonly value: T;
}

/**
 * `ENUM` (32-bit values; kflag set = signed).
 *
 * @example
 * ```ts
 * import type { BtfEnum } from "./btf.ts";
 * const first = (t: BtfEnum) => t.values[0]?.name;
 * ```
 */
export interface BtfEnum extends BtfTypeBase {
  readonly kind: typeof BtfKind.ENUM;
  readonly size: number;
  readonly values: readonly BtfEnumValue<number>[];
}

/**
 * `ENUM64` (64-bit values).
 *
 * @example
 * ```ts
 * import type { BtfEnum64 } from "./btf.ts";
 * const first = (t: BtfEnum64) => t.values[0]?.value;
 * ```
 */
export interface BtfEnum64 extends BtfTypeBase {
  readonly kind: typeof BtfKind.ENUM64;
  readonly size: number;
  readonly values: readonly BtfEnumValue<bigint>[];
}

/**
 * `FWD` (kflag set = union).
 *
 * @example
 * ```ts
 * import type { BtfFwd } from "./btf.ts";
 * const isUnion = (t: BtfFwd) => t.kflag;
 * ```
 */
export interface BtfFwd extends BtfTypeBase {
  readonly kind: typeof BtfKind.FWD;
}

/**
 * `FUNC`: its FUNC_PROTO and linkage (0 static, 1 global, 2 extern).
 *
 * @example
 * ```ts
 * import type { BtfFunc } from "./btf.ts";
 * const isGlobal = (t: BtfFunc) => t.linkage === 1;
 * ```
 */
export interface BtfFunc extends BtfTypeBase {
  readonly kind: typeof BtfKind.FUNC;
  readonly type: number;
  readonly linkage: number;
}

/**
 * One FUNC_PROTO parameter.
 *
 * @example
 * ```ts
 * import type { BtfParam } from "./btf.ts";
 * const p: BtfParam = { name: "ctx", nameOff: 5, type: 3 };
 * ```
 */
export interface BtfParam {
  readonly name: string;
  readonly nameOff: number;
  readonly type: number;
}

/**
 * `FUNC_PROTO`: return type and parameters.
 *
 * @example
 * ```ts
 * import type { BtfFuncProto } from "./btf.ts";
 * const arity = (t: BtfFuncProto) => t.params.length;
 * ```
 */
export interface BtfFuncProto extends BtfTypeBase {
  readonly kind: typeof BtfKind.FUNC_PROTO;
  readonly returnType: number;
  readonly params: readonly BtfParam[];
}

/**
 * `VAR`: its type and linkage (0 static, 1 global, 2 extern).
 *
 * @example
 * ```ts
 * import type { BtfVar } from "./btf.ts";
 * const isExtern = (t: BtfVar) => t.linkage === 2;
 * ```
 */
export interface BtfVar extends BtfTypeBase {
  readonly kind: typeof BtfKind.VAR;
  readonly type: number;
  readonly linkage: number;
}

/**
 * One variable of a DATASEC: the VAR's type id, byte offset and size.
 *
 * @example
 * ```ts
 * import type { BtfVarSecinfo } from "./btf.ts";
 * const end = (v: BtfVarSecinfo) => v.offset + v.size;
 * ```
 */
export interface BtfVarSecinfo {
  readonly type: number;
  readonly offset: number;
  readonly size: number;
}

/**
 * `DATASEC`: an ELF section's variables.
 *
 * @example
 * ```ts
 * import type { BtfDatasec } from "./btf.ts";
 * const count = (t: BtfDatasec) => t.vars.length;
 * ```
 */
export interface BtfDatasec extends BtfTypeBase {
  readonly kind: typeof BtfKind.DATASEC;
  readonly size: number;
  readonly vars: readonly BtfVarSecinfo[];
}

/**
 * `FLOAT`.
 *
 * @example
 * ```ts
 * import type { BtfFloat } from "./btf.ts";
 * const bytes = (t: BtfFloat) => t.size;
 * ```
 */
export interface BtfFloat extends BtfTypeBase {
  readonly kind: typeof BtfKind.FLOAT;
  readonly size: number;
}

/**
 * `DECL_TAG` on a type (`componentIdx` -1) or one of its members/params.
 *
 * @example
 * ```ts
 * import type { BtfDeclTag } from "./btf.ts";
 * const onWhole = (t: BtfDeclTag) => t.componentIdx === -1;
 * ```
 */
export interface BtfDeclTag extends BtfTypeBase {
  readonly kind: typeof BtfKind.DECL_TAG;
  readonly type: number;
  readonly componentIdx: number;
}

/**
 * Any BTF type.
 *
 * @example
 * ```ts
 * import { type BtfType, BtfKind } from "./btf.ts";
 * const isStruct = (t: BtfType) => t.kind === BtfKind.STRUCT;
 * ```
 */
export type BtfType =
  | BtfVoid
  | BtfInt
  | BtfRef
  | BtfArray
  | BtfComposite
  | BtfEnum
  | BtfEnum64
  | BtfFwd
  | BtfFunc
  | BtfFuncProto
  | BtfVar
  | BtfDatasec
  | BtfFloat
  | BtfDeclTag;

const MAGIC = 0xeb9f;
const HDR_LEN = 24;
const VOID: BtfVoid = { id: 0, kind: 0, name: "", nameOff: 0, kflag: false };
const MODIFIERS: ReadonlySet<number> = new Set([
  BtfKind.TYPEDEF,
  BtfKind.VOLATILE,
  BtfKind.CONST,
  BtfKind.RESTRICT,
  BtfKind.TYPE_TAG,
]);

/** Bounds-checked little-endian reader over one region. */
class Reader {
  readonly dv: DataView;
  readonly what: string;
  constructor(bytes: Uint8Array, what: string) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.what = what;
  }
  need(off: number, n: number, field: string) {
    if (off < 0 || off + n > this.dv.byteLength) {
      throw new BtfError(
        `${this.what} is truncated or corrupted: ${field} needs ${n} bytes at offset ${off} ` +
          `but only ${this.dv.byteLength} bytes are there; rebuild the object`,
      );
    }
  }
  u16(off: number, field: string): number {
    this.need(off, 2, field);
    return this.dv.getUint16(off, true);
  }
  u32(off: number, field: string): number {
    this.need(off, 4, field);
    return this.dv.getUint32(off, true);
  }
  i32(off: number, field: string): number {
    this.need(off, 4, field);
    return this.dv.getInt32(off, true);
  }
}

function cstringAt(strings: Uint8Array, off: number, what: string): string {
  if (off === 0) return "";
  if (off >= strings.length) {
    throw new BtfError(
      `${what}: string offset ${off} is outside the ${strings.length}-byte BTF string ` +
        "section; the object is corrupted, rebuild it",
    );
  }
  const end = strings.indexOf(0, off);
  if (end < 0) {
    throw new BtfError(`${what}: the BTF string at offset ${off} is not NUL-terminated`);
  }
  let s = "";
  for (let i = off; i < end; i++) s += String.fromCharCode(strings[i]);
  if (/[\x80-\xff]/.test(s)) {
    s = new TextDecoder().decode(strings.subarray(off, end));
  }
  return s;
}

/** The fixed part of a BTF blob, as read from its header. */
interface BtfHeaderInfo {
  typeStart: number;
  typeLen: number;
  strStart: number;
  strLen: number;
}

function readHeader(bytes: Uint8Array, what: string): BtfHeaderInfo {
  const r = new Reader(bytes, what);
  if (bytes.length < 8) {
    throw new BtfError(`${what} is too short (${bytes.length} bytes) to hold a BTF header`);
  }
  const magic = r.u16(0, "magic");
  if (magic !== MAGIC) {
    throw new BtfError(
      `${what} has magic 0x${magic.toString(16)}, not 0xeb9f: not little-endian BTF ` +
        "(big-endian objects are not supported); rebuild with -target bpf (bpfel)",
    );
  }
  const version = bytes[2];
  if (version !== 1) throw new BtfError(`${what} has BTF version ${version}; only 1 is known`);
  const hdrLen = r.u32(4, "hdr_len");
  if (hdrLen < HDR_LEN) throw new BtfError(`${what} has a ${hdrLen}-byte header (< 24)`);
  r.need(0, hdrLen, "header");
  const typeOff = r.u32(8, "type_off");
  const typeLen = r.u32(12, "type_len");
  const strOff = r.u32(16, "str_off");
  const strLen = r.u32(20, "str_len");
  r.need(hdrLen + typeOff, typeLen, "the type section");
  r.need(hdrLen + strOff, strLen, "the string section");
  return { typeStart: hdrLen + typeOff, typeLen, strStart: hdrLen + strOff, strLen };
}

/** Bytes of the kind-specific data following a `struct btf_type`. */
function extraSize(kind: number, vlen: number): number {
  switch (kind) {
    case BtfKind.INT:
    case BtfKind.VAR:
    case BtfKind.DECL_TAG:
      return 4;
    case BtfKind.ARRAY:
      return 12;
    case BtfKind.STRUCT:
    case BtfKind.UNION:
    case BtfKind.ENUM64:
    case BtfKind.DATASEC:
      return 12 * vlen;
    case BtfKind.ENUM:
    case BtfKind.FUNC_PROTO:
      return 8 * vlen;
    case BtfKind.PTR:
    case BtfKind.FWD:
    case BtfKind.TYPEDEF:
    case BtfKind.VOLATILE:
    case BtfKind.CONST:
    case BtfKind.RESTRICT:
    case BtfKind.FUNC:
    case BtfKind.FLOAT:
    case BtfKind.TYPE_TAG:
      return 0;
    default:
      return -1;
  }
}

/**
 * Walks the type section without decoding member lists: calls `visit` with
 * each type's id, kind and name offset; stops early when it returns true and
 * gives that id (or 0). Fast enough for vmlinux BTF (used to find one type).
 *
 * @example
 * ```ts
 * import { scanBtf, BtfKind } from "./btf.ts";
 * const raw = Deno.readFileSync("/sys/kernel/btf/vmlinux");
 * const id = scanBtf(raw, (_id, kind) => kind === BtfKind.FLOAT);
 * ```
 */
export function scanBtf(
  bytes: Uint8Array,
  visit: (id: number, kind: number, nameOff: number) => boolean,
): number {
  const h = readHeader(bytes, "BTF");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let off = h.typeStart;
  const end = h.typeStart + h.typeLen;
  for (let id = 1; off < end; id++) {
    if (off + 12 > end) throw new BtfError(`BTF type ${id} is truncated`);
    const nameOff = dv.getUint32(off, true);
    const info = dv.getUint32(off + 4, true);
    const kind = (info >>> 24) & 0x1f;
    const extra = extraSize(kind, info & 0xffff);
    if (extra < 0) throw new BtfError(`BTF type ${id} has unknown kind ${kind}`);
    if (visit(id, kind, nameOff)) return id;
    off += 12 + extra;
  }
  return 0;
}

/**
 * Finds the id of the type called `name` of kind `kind` in a raw BTF blob
 * without parsing all of it (0 if absent).
 *
 * @example
 * ```ts
 * import { findTypeId, BtfKind } from "./btf.ts";
 * const raw = Deno.readFileSync("/sys/kernel/btf/vmlinux");
 * console.log(findTypeId(raw, "btf_trace_sched_switch", BtfKind.TYPEDEF));
 * ```
 */
export function findTypeId(bytes: Uint8Array, name: string, kind: number): number {
  const h = readHeader(bytes, "BTF");
  const want = new TextEncoder().encode(name);
  const strings = bytes.subarray(h.strStart, h.strStart + h.strLen);
  return scanBtf(bytes, (_id, k, nameOff) => {
    if (k !== kind || nameOff + want.length >= strings.length) return false;
    if (strings[nameOff + want.length] !== 0) return false;
    for (let i = 0; i < want.length; i++) if (strings[nameOff + i] !== want[i]) return false;
    return true;
  });
}

/**
 * A parsed BTF blob: `types[id]` for every id (0 is void) and the string
 * section. Instances are immutable; fix-ups produce new instances.
 *
 * @example
 * ```ts
 * import { Btf } from "./btf.ts";
 * const btf = Btf.parse(Deno.readFileSync("/sys/kernel/btf/vmlinux"));
 * console.log(btf.types.length, btf.find("pid_t")?.kind);
 * ```
 */
export class Btf {
  /** Every type, indexed by id; `types[0]` is void. */
  readonly types: readonly BtfType[];
  /** The string section (offset 0 is the empty string). */
  readonly strings: Uint8Array;
  #byName: Map<string, number[]> | null = null;

  /** Wraps already-decoded types (see {@link Btf.parse}); `types[0]` must be void. */
  constructor(types: readonly BtfType[], strings: Uint8Array) {
    this.types = types;
    this.strings = strings;
  }

  /**
   * Parses a BTF blob (`.BTF` section or `/sys/kernel/btf/vmlinux`); throws
   * {@link BtfError} on anything malformed. `what` labels error messages.
   */
  static parse(bytes: Uint8Array, what = ".BTF"): Btf {
    const h = readHeader(bytes, what);
    const strings = bytes.slice(h.strStart, h.strStart + h.strLen);
    if (strings.length && strings[0] !== 0) {
      throw new BtfError(`${what}: the string section does not start with NUL; it is corrupted`);
    }
    const r = new Reader(bytes.subarray(h.typeStart, h.typeStart + h.typeLen), `${what} types`);
    const types: BtfType[] = [VOID];
    let off = 0;
    const names = new Map<number, string>();
    const str = (o: number, id: number) => {
      let s = names.get(o);
      if (s === undefined) {
        s = cstringAt(strings, o, `${what} type ${id}`);
        names.set(o, s);
      }
      return s;
    };
    while (off < h.typeLen) {
      const id = types.length;
      const nameOff = r.u32(off, `type ${id} name_off`);
      const info = r.u32(off + 4, `type ${id} info`);
      const sizeOrType = r.u32(off + 8, `type ${id} size/type`);
      const kind = (info >>> 24) & 0x1f;
      const vlen = info & 0xffff;
      const kflag = (info >>> 31) === 1;
      const extra = extraSize(kind, vlen);
      if (extra < 0) {
        throw new BtfError(
          `${what}: type ${id} has unknown kind ${kind}; the object is corrupted or needs a ` +
            "newer loader",
        );
      }
      const x = off + 12;
      r.need(x, extra, `type ${id} (${btfKindName(kind)}, vlen ${vlen})`);
      const base = { id, name: str(nameOff, id), nameOff, kflag };
      const dv = r.dv;
      let t: BtfType;
      switch (kind) {
        case BtfKind.INT: {
          const v = dv.getUint32(x, true);
          t = {
            ...base,
            kind,
            size: sizeOrType,
            encoding: (v >>> 24) & 0xf,
            bitOffset: (v >>> 16) & 0xff,
            bits: v & 0xff,
          };
          break;
        }
        case BtfKind.PTR:
        case BtfKind.TYPEDEF:
        case BtfKind.VOLATILE:
        case BtfKind.CONST:
        case BtfKind.RESTRICT:
        case BtfKind.TYPE_TAG:
          t = { ...base, kind, type: sizeOrType };
          break;
        case BtfKind.ARRAY:
          t = {
            ...base,
            kind,
            type: dv.getUint32(x, true),
            indexType: dv.getUint32(x + 4, true),
            nelems: dv.getUint32(x + 8, true),
          };
          break;
        case BtfKind.STRUCT:
        case BtfKind.UNION: {
          const members: BtfMember[] = [];
          for (let i = 0; i < vlen; i++) {
            const m = x + 12 * i;
            const mOff = dv.getUint32(m, true);
            const raw = dv.getUint32(m + 8, true);
            members.push({
              name: str(mOff, id),
              nameOff: mOff,
              type: dv.getUint32(m + 4, true),
              bitOffset: kflag ? raw & 0xffffff : raw,
              bitfieldSize: kflag ? raw >>> 24 : 0,
            });
          }
          t = { ...base, kind, size: sizeOrType, members };
          break;
        }
        case BtfKind.ENUM: {
          const values: BtfEnumValue<number>[] = [];
          for (let i = 0; i < vlen; i++) {
            const m = x + 8 * i;
            const vOff = dv.getUint32(m, true);
            values.push({
              name: str(vOff, id),
              nameOff: vOff,
              value: kflag ? dv.getInt32(m + 4, true) : dv.getUint32(m + 4, true),
            });
          }
          t = { ...base, kind, size: sizeOrType, values };
          break;
        }
        case BtfKind.ENUM64: {
          const values: BtfEnumValue<bigint>[] = [];
          for (let i = 0; i < vlen; i++) {
            const m = x + 12 * i;
            const vOff = dv.getUint32(m, true);
            const lo = BigInt(dv.getUint32(m + 4, true));
            const hi = BigInt(dv.getUint32(m + 8, true));
            const u = (hi << 32n) | lo;
            values.push({
              name: str(vOff, id),
              nameOff: vOff,
              value: kflag ? BigInt.asIntN(64, u) : u,
            });
          }
          t = { ...base, kind, size: sizeOrType, values };
          break;
        }
        case BtfKind.FWD:
          t = { ...base, kind };
          break;
        case BtfKind.FUNC:
          t = { ...base, kind, type: sizeOrType, linkage: vlen };
          break;
        case BtfKind.FUNC_PROTO: {
          const params: BtfParam[] = [];
          for (let i = 0; i < vlen; i++) {
            const m = x + 8 * i;
            const pOff = dv.getUint32(m, true);
            params.push({ name: str(pOff, id), nameOff: pOff, type: dv.getUint32(m + 4, true) });
          }
          t = { ...base, kind, returnType: sizeOrType, params };
          break;
        }
        case BtfKind.VAR:
          t = { ...base, kind, type: sizeOrType, linkage: dv.getUint32(x, true) };
          break;
        case BtfKind.DATASEC: {
          const vars: BtfVarSecinfo[] = [];
          for (let i = 0; i < vlen; i++) {
            const m = x + 12 * i;
            vars.push({
              type: dv.getUint32(m, true),
              offset: dv.getUint32(m + 4, true),
              size: dv.getUint32(m + 8, true),
            });
          }
          t = { ...base, kind, size: sizeOrType, vars };
          break;
        }
        case BtfKind.FLOAT:
          t = { ...base, kind, size: sizeOrType };
          break;
        case BtfKind.DECL_TAG:
          t = { ...base, kind, type: sizeOrType, componentIdx: dv.getInt32(x, true) };
          break;
        default:
          throw new BtfError(`${what}: type ${id} has unhandled kind ${kind}`);
      }
      types.push(t);
      off = x + extra;
    }
    const btf = new Btf(types, strings);
    btf.#checkRefs(what);
    return btf;
  }

  #checkRefs(what: string) {
    const n = this.types.length;
    const bad = (t: BtfType, ref: number, field: string) => {
      if (ref >= n) {
        throw new BtfError(
          `${what}: type ${t.id} (${btfKindName(t.kind)}) refers to type ${ref} in ${field}, ` +
            `but there are only ${n} types; the object is corrupted, rebuild it`,
        );
      }
    };
    for (const t of this.types) {
      switch (t.kind) {
        case BtfKind.PTR:
        case BtfKind.TYPEDEF:
        case BtfKind.VOLATILE:
        case BtfKind.CONST:
        case BtfKind.RESTRICT:
        case BtfKind.TYPE_TAG:
        case BtfKind.FUNC:
        case BtfKind.VAR:
        case BtfKind.DECL_TAG:
          bad(t, t.type, "type");
          break;
        case BtfKind.ARRAY:
          bad(t, t.type, "element type");
          bad(t, t.indexType, "index type");
          break;
        case BtfKind.STRUCT:
        case BtfKind.UNION:
          for (const m of t.members) bad(t, m.type, `member ${m.name}`);
          break;
        case BtfKind.FUNC_PROTO:
          bad(t, t.returnType, "return type");
          for (const p of t.params) bad(t, p.type, `parameter ${p.name}`);
          break;
        case BtfKind.DATASEC:
          for (const v of t.vars) bad(t, v.type, "variable");
          break;
      }
    }
  }

  /** The type with id `id`; throws {@link BtfError} if there is none. */
  type(id: number): BtfType {
    const t = this.types[id];
    if (t === undefined) {
      throw new BtfError(`BTF type ${id} does not exist (there are ${this.types.length} types)`);
    }
    return t;
  }

  /** The string at offset `off` of the string section. */
  string(off: number): string {
    return cstringAt(this.strings, off, "BTF");
  }

  /** Every type called `name` (optionally of one kind), in id order. */
  findAll(name: string, kind?: number): BtfType[] {
    if (!this.#byName) {
      this.#byName = new Map();
      for (const t of this.types) {
        if (!t.name) continue;
        const l = this.#byName.get(t.name);
        if (l) l.push(t.id);
        else this.#byName.set(t.name, [t.id]);
      }
    }
    const ids = this.#byName.get(name) ?? [];
    return ids.map((i) => this.types[i]).filter((t) => kind === undefined || t.kind === kind);
  }

  /** The first type called `name` (optionally of one kind). */
  find(name: string, kind?: number): BtfType | undefined {
    return this.findAll(name, kind)[0];
  }

  /** Follows TYPEDEF/CONST/VOLATILE/RESTRICT/TYPE_TAG to the underlying type. */
  resolve(id: number): BtfType {
    let t = this.type(id);
    for (let depth = 0; MODIFIERS.has(t.kind); depth++) {
      if (depth > 64) throw new BtfError(`BTF type ${id}: modifier chain loops`);
      t = this.type((t as BtfRef).type);
    }
    return t;
  }

  /** Size in bytes of a type (through modifiers, arrays and VARs). */
  sizeOf(id: number): number {
    let mult = 1;
    let t = this.type(id);
    for (let depth = 0;; depth++) {
      if (depth > 64) throw new BtfError(`BTF type ${id}: type chain is too deep or loops`);
      switch (t.kind) {
        case BtfKind.INT:
        case BtfKind.STRUCT:
        case BtfKind.UNION:
        case BtfKind.ENUM:
        case BtfKind.ENUM64:
        case BtfKind.DATASEC:
        case BtfKind.FLOAT:
          return mult * t.size;
        case BtfKind.PTR:
          return mult * 8;
        case BtfKind.ARRAY:
          mult *= t.nelems;
          t = this.type(t.type);
          break;
        case BtfKind.TYPEDEF:
        case BtfKind.VOLATILE:
        case BtfKind.CONST:
        case BtfKind.RESTRICT:
        case BtfKind.TYPE_TAG:
        case BtfKind.VAR:
          t = this.type(t.type);
          break;
        default:
          throw new BtfError(
            `BTF type ${id} (${btfKindName(t.kind)} ${t.name || "(anon)"}) has no size`,
          );
      }
    }
  }

  /**
   * The members of a STRUCT/UNION (through modifiers), with byte offsets;
   * throws if `id` is not a struct or union.
   */
  members(id: number): { name: string; type: number; offset: number; bitfieldSize: number }[] {
    const t = this.resolve(id);
    if (t.kind !== BtfKind.STRUCT && t.kind !== BtfKind.UNION) {
      throw new BtfError(
        `BTF type ${id} is a ${btfKindName(t.kind)}, not a struct or union; cannot walk members`,
      );
    }
    return t.members.map((m) => ({
      name: m.name,
      type: m.type,
      offset: m.bitOffset / 8,
      bitfieldSize: m.bitfieldSize,
    }));
  }

  /** A copy with some types replaced (same ids and strings). */
  withTypes(replace: ReadonlyMap<number, BtfType>): Btf {
    return new Btf(this.types.map((t) => replace.get(t.id) ?? t), this.strings);
  }

  /** Serializes to a BTF blob: 24-byte header, type section, string section. */
  toBytes(): Uint8Array {
    let typeLen = 0;
    for (const t of this.types) {
      if (t.id === 0) continue;
      typeLen += 12 + extraSize(t.kind, vlenOf(t));
    }
    const out = new Uint8Array(HDR_LEN + typeLen + this.strings.length);
    const dv = new DataView(out.buffer);
    dv.setUint16(0, MAGIC, true);
    out[2] = 1;
    dv.setUint32(4, HDR_LEN, true);
    dv.setUint32(8, 0, true);
    dv.setUint32(12, typeLen, true);
    dv.setUint32(16, typeLen, true);
    dv.setUint32(20, this.strings.length, true);
    let off = HDR_LEN;
    for (const t of this.types) {
      if (t.id === 0) continue;
      off = writeType(dv, off, t);
    }
    out.set(this.strings, off);
    return out;
  }
}

function vlenOf(t: BtfType): number {
  switch (t.kind) {
    case BtfKind.STRUCT:
    case BtfKind.UNION:
      return t.members.length;
    case BtfKind.ENUM:
    case BtfKind.ENUM64:
      return t.values.length;
    case BtfKind.FUNC_PROTO:
      return t.params.length;
    case BtfKind.DATASEC:
      return t.vars.length;
    case BtfKind.FUNC:
      return t.linkage;
    default:
      return 0;
  }
}

function writeType(dv: DataView, off: number, t: BtfType): number {
  const info = ((t.kflag ? 1 : 0) << 31) | ((t.kind & 0x1f) << 24) | (vlenOf(t) & 0xffff);
  dv.setUint32(off, t.nameOff, true);
  dv.setUint32(off + 4, info >>> 0, true);
  const x = off + 12;
  switch (t.kind) {
    case BtfKind.VOID:
      return off;
    case BtfKind.INT:
      dv.setUint32(off + 8, t.size, true);
      dv.setUint32(
        x,
        ((t.encoding & 0xf) << 24) | ((t.bitOffset & 0xff) << 16) | (t.bits & 0xff),
        true,
      );
      return x + 4;
    case BtfKind.PTR:
    case BtfKind.TYPEDEF:
    case BtfKind.VOLATILE:
    case BtfKind.CONST:
    case BtfKind.RESTRICT:
    case BtfKind.TYPE_TAG:
    case BtfKind.FUNC:
      dv.setUint32(off + 8, t.type, true);
      return x;
    case BtfKind.ARRAY:
      dv.setUint32(off + 8, 0, true);
      dv.setUint32(x, t.type, true);
      dv.setUint32(x + 4, t.indexType, true);
      dv.setUint32(x + 8, t.nelems, true);
      return x + 12;
    case BtfKind.STRUCT:
    case BtfKind.UNION:
      dv.setUint32(off + 8, t.size, true);
      t.members.forEach((m, i) => {
        dv.setUint32(x + 12 * i, m.nameOff, true);
        dv.setUint32(x + 12 * i + 4, m.type, true);
        const raw = t.kflag
          ? ((m.bitfieldSize << 24) | (m.bitOffset & 0xffffff)) >>> 0
          : m.bitOffset;
        dv.setUint32(x + 12 * i + 8, raw, true);
      });
      return x + 12 * t.members.length;
    case BtfKind.ENUM:
      dv.setUint32(off + 8, t.size, true);
      t.values.forEach((v, i) => {
        dv.setUint32(x + 8 * i, v.nameOff, true);
        dv.setUint32(x + 8 * i + 4, v.value >>> 0, true);
      });
      return x + 8 * t.values.length;
    case BtfKind.ENUM64:
      dv.setUint32(off + 8, t.size, true);
      t.values.forEach((v, i) => {
        const u = BigInt.asUintN(64, v.value);
        dv.setUint32(x + 12 * i, v.nameOff, true);
        dv.setUint32(x + 12 * i + 4, Number(u & 0xffffffffn), true);
        dv.setUint32(x + 12 * i + 8, Number(u >> 32n), true);
      });
      return x + 12 * t.values.length;
    case BtfKind.FWD:
      dv.setUint32(off + 8, 0, true);
      return x;
    case BtfKind.FUNC_PROTO:
      dv.setUint32(off + 8, t.returnType, true);
      t.params.forEach((p, i) => {
        dv.setUint32(x + 8 * i, p.nameOff, true);
        dv.setUint32(x + 8 * i + 4, p.type, true);
      });
      return x + 8 * t.params.length;
    case BtfKind.VAR:
      dv.setUint32(off + 8, t.type, true);
      dv.setUint32(x, t.linkage, true);
      return x + 4;
    case BtfKind.DATASEC:
      dv.setUint32(off + 8, t.size, true);
      t.vars.forEach((v, i) => {
        dv.setUint32(x + 12 * i, v.type, true);
        dv.setUint32(x + 12 * i + 4, v.offset, true);
        dv.setUint32(x + 12 * i + 8, v.size, true);
      });
      return x + 12 * t.vars.length;
    case BtfKind.FLOAT:
      dv.setUint32(off + 8, t.size, true);
      return x;
    case BtfKind.DECL_TAG:
      dv.setUint32(off + 8, t.type, true);
      dv.setInt32(x, t.componentIdx, true);
      return x + 4;
  }
}

/**
 * What the DATASEC fix-up needs to know about the ELF object.
 *
 * @example
 * ```ts
 * import type { DatasecLayout } from "./btf.ts";
 * const layout: DatasecLayout = {
 *   sectionSize: (name) => (name === ".bss" ? 16 : undefined),
 *   symbolOffset: (_section, _name) => 0,
 * };
 * ```
 */
export interface DatasecLayout {
  /** Size of the ELF section called `name` (undefined: no such section). */
  sectionSize(name: string): number | undefined;
  /** Offset of symbol `name` inside section `section` (undefined: no such symbol). */
  symbolOffset(section: string, name: string): number | undefined;
}

/**
 * The fix-up libbpf does before `BPF_BTF_LOAD`: every DATASEC gets its
 * section's size and every VAR its symbol's offset (clang writes 0 for
 * globals in object files), sorted by offset as the kernel requires. Returns
 * a new {@link Btf}; throws {@link BtfError} naming the section or variable
 * it cannot place.
 *
 * @example
 * ```ts
 * import { Btf, fixDatasecs } from "./btf.ts";
 * declare const btf: Btf;
 * const fixed = fixDatasecs(btf, {
 *   sectionSize: () => 8,
 *   symbolOffset: () => 0,
 * });
 * ```
 */
export function fixDatasecs(btf: Btf, layout: DatasecLayout): Btf {
  const replace = new Map<number, BtfType>();
  for (const t of btf.types) {
    if (t.kind !== BtfKind.DATASEC) continue;
    const size = layout.sectionSize(t.name);
    if (size === undefined) {
      throw new BtfError(
        `BTF DATASEC ${JSON.stringify(t.name)} names a section the object does not have; ` +
          "the object was post-processed inconsistently, rebuild it",
      );
    }
    const vars = t.vars.map((v) => {
      const vt = btf.type(v.type);
      if (vt.kind !== BtfKind.VAR) {
        // FUNCs appear in .ksyms; leave them for the caller to reject.
        return v;
      }
      const off = layout.symbolOffset(t.name, vt.name);
      if (off === undefined) {
        throw new BtfError(
          `BTF variable ${JSON.stringify(vt.name)} of section ${JSON.stringify(t.name)} has ` +
            "no symbol in the ELF symbol table; do not strip symbols from BPF objects " +
            "(llvm-strip -g keeps them)",
        );
      }
      return { ...v, offset: off };
    }).sort((a, b) => a.offset - b.offset);
    replace.set(t.id, { ...t, size, vars });
  }
  return btf.withTypes(replace);
}

/**
 * One `bpf_func_info` record: an instruction offset (bytes in `.BTF.ext`,
 * instruction index once placed in a program) and the FUNC type id.
 *
 * @example
 * ```ts
 * import type { BtfFuncInfo } from "./btf.ts";
 * const r: BtfFuncInfo = { insnOff: 0, typeId: 25 };
 * ```
 */
export interface BtfFuncInfo {
  readonly insnOff: number;
  readonly typeId: number;
}

/**
 * One `bpf_line_info` record (`lineCol` = line << 10 | column).
 *
 * @example
 * ```ts
 * import type { BtfLineInfo } from "./btf.ts";
 * const line = (r: BtfLineInfo) => r.lineCol >>> 10;
 * ```
 */
export interface BtfLineInfo {
  readonly insnOff: number;
  readonly fileNameOff: number;
  readonly lineOff: number;
  readonly lineCol: number;
}

/**
 * One `bpf_core_relo` record: instruction, root type, access string
 * (`"0:1:2"`, in the BTF strings) and relocation kind.
 *
 * @example
 * ```ts
 * import type { BtfCoreRelo } from "./btf.ts";
 * const isFieldOffset = (r: BtfCoreRelo) => r.kind === 0;
 * ```
 */
export interface BtfCoreRelo {
  readonly insnOff: number;
  readonly typeId: number;
  readonly accessStrOff: number;
  readonly kind: number;
}

/**
 * A parsed `.BTF.ext`: per ELF section (by name), the func_info, line_info
 * and CO-RE records with byte offsets inside that section, plus the record
 * sizes found in the file.
 *
 * @example
 * ```ts
 * import type { BtfExt } from "./btf.ts";
 * const funcsOf = (ext: BtfExt, sec: string) => ext.funcInfo.get(sec) ?? [];
 * ```
 */
export interface BtfExt {
  readonly funcInfoRecSize: number;
  readonly lineInfoRecSize: number;
  readonly coreReloRecSize: number;
  readonly funcInfo: ReadonlyMap<string, readonly BtfFuncInfo[]>;
  readonly lineInfo: ReadonlyMap<string, readonly BtfLineInfo[]>;
  readonly coreRelos: ReadonlyMap<string, readonly BtfCoreRelo[]>;
}

/**
 * Parses `.BTF.ext`; section names resolve through `btf`'s strings. Throws
 * {@link BtfError} on malformed data.
 *
 * @example
 * ```ts
 * import { Btf, parseBtfExt } from "./btf.ts";
 * declare const btf: Btf, extBytes: Uint8Array;
 * const ext = parseBtfExt(extBytes, btf);
 * console.log([...ext.funcInfo.keys()]);
 * ```
 */
export function parseBtfExt(bytes: Uint8Array, btf: Btf): BtfExt {
  const what = ".BTF.ext";
  const r = new Reader(bytes, what);
  if (bytes.length < 8) throw new BtfError(`${what} is too short (${bytes.length} bytes)`);
  const magic = r.u16(0, "magic");
  if (magic !== MAGIC) {
    throw new BtfError(`${what} has magic 0x${magic.toString(16)}, not 0xeb9f; rebuild the object`);
  }
  const hdrLen = r.u32(4, "hdr_len");
  r.need(0, hdrLen, "header");
  const region = (offField: number, name: string): [number, number] | null => {
    if (hdrLen < offField + 8) return null;
    const off = r.u32(offField, `${name}_off`);
    const len = r.u32(offField + 4, `${name}_len`);
    r.need(hdrLen + off, len, name);
    return len ? [hdrLen + off, len] : null;
  };
  const fi = region(8, "func_info");
  const li = region(16, "line_info");
  const cr = region(24, "core_relo");

  function records<T>(
    reg: [number, number] | null,
    name: string,
    min: number,
    decode: (o: number) => T,
  ): { recSize: number; map: Map<string, T[]> } {
    const map = new Map<string, T[]>();
    if (!reg) return { recSize: min, map };
    const [start, len] = reg;
    const end = start + len;
    const recSize = r.u32(start, `${name} record size`);
    if (recSize < min || recSize % 4) {
      throw new BtfError(`${what}: ${name} record size ${recSize} is invalid (need ≥ ${min})`);
    }
    let o = start + 4;
    while (o < end) {
      const secOff = r.u32(o, `${name} section name`);
      const n = r.u32(o + 4, `${name} record count`);
      o += 8;
      if (n * recSize > end - o) {
        throw new BtfError(`${what}: ${name} claims ${n} records past the end of its region`);
      }
      const sec = cstringAt(btf.strings, secOff, `${what} ${name}`);
      const list = map.get(sec) ?? [];
      for (let i = 0; i < n; i++, o += recSize) list.push(decode(o));
      map.set(sec, list);
    }
    return { recSize, map };
  }
  const dv = r.dv;
  const f = records(fi, "func_info", 8, (o) => ({
    insnOff: dv.getUint32(o, true),
    typeId: dv.getUint32(o + 4, true),
  }));
  const l = records(li, "line_info", 16, (o) => ({
    insnOff: dv.getUint32(o, true),
    fileNameOff: dv.getUint32(o + 4, true),
    lineOff: dv.getUint32(o + 8, true),
    lineCol: dv.getUint32(o + 12, true),
  }));
  const c = records(cr, "core_relo", 16, (o) => ({
    insnOff: dv.getUint32(o, true),
    typeId: dv.getUint32(o + 4, true),
    accessStrOff: dv.getUint32(o + 8, true),
    kind: dv.getUint32(o + 12, true),
  }));
  return {
    funcInfoRecSize: f.recSize,
    lineInfoRecSize: l.recSize,
    coreReloRecSize: c.recSize,
    funcInfo: f.map,
    lineInfo: l.map,
    coreRelos: c.map,
  };
}

/**
 * `enum bpf_core_relo_kind` names, for messages.
 *
 * @example
 * ```ts
 * import { CORE_RELO_KINDS } from "./btf.ts";
 * console.log(CORE_RELO_KINDS[0]); // "field_byte_offset"
 * ```
 */
export const CORE_RELO_KINDS: readonly string[] = [
  "field_byte_offset",
  "field_byte_size",
  "field_exists",
  "field_signed",
  "field_lshift_u64",
  "field_rshift_u64",
  "type_id_local",
  "type_id_target",
  "type_exists",
  "type_size",
  "enumval_exists",
  "enumval_value",
  "type_matches",
];
