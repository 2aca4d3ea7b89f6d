/**
 * A tiny eBPF assembler: encodes instructions and a few ready-made programs
 * (the same ones the transcript scenarios use), for the demo session and tests.
 *
 * @example
 * ```ts
 * import { progs } from "./asm.ts";
 * const bytes = progs.ret0(); // r0 = 0; exit
 * ```
 * @module
 */

/** One 8-byte instruction. */
export function insn(code: number, dst = 0, src = 0, off = 0, imm = 0): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  b[0] = code;
  b[1] = (dst & 0xf) | ((src & 0xf) << 4);
  dv.setInt16(2, off, true);
  dv.setInt32(4, imm, true);
  return b;
}

/** `ld_imm64 dst, map_fd` (BPF_PSEUDO_MAP_FD): two instructions. */
export function ldMap(dst: number, fd: number): Uint8Array[] {
  return [insn(0x18, dst, 1, 0, fd), insn(0)];
}

/** Concatenates instructions. */
export function asm(...parts: (Uint8Array | Uint8Array[])[]): Uint8Array {
  const flat = parts.flat();
  const out = new Uint8Array(flat.length * 8);
  flat.forEach((p, i) => out.set(p, i * 8));
  return out;
}

/** Helper ids. */
export const Helper = {
  map_lookup_elem: 1,
  get_current_pid_tgid: 14,
  perf_event_output: 25,
  ringbuf_output: 130,
} as const;

/** Programs used by the tests. */
export const progs = {
  /** `r0 = 0; exit`. */
  ret0: (): Uint8Array => asm(insn(0xb7), insn(0x95)),
  /** `key = 0; v = lookup(map, &key); if (v) atomic v += 1; return 0` (array u32 → u64). */
  counter: (mapFd: number): Uint8Array =>
    asm(
      insn(0xb7, 1, 0, 0, 0),
      insn(0x63, 10, 1, -4),
      insn(0xbf, 2, 10),
      insn(0x07, 2, 0, 0, -4),
      ldMap(1, mapFd),
      insn(0x85, 0, 0, 0, Helper.map_lookup_elem),
      insn(0x15, 0, 0, 2, 0),
      insn(0xb7, 1, 0, 0, 1),
      insn(0xdb, 0, 1, 0, 0),
      insn(0xb7, 0, 0, 0, 0),
      insn(0x95),
    ),
  /** `perf_event_output(ctx, map, BPF_F_CURRENT_CPU, &pid_tgid, 8)`. */
  perfout: (mapFd: number): Uint8Array =>
    asm(
      insn(0xbf, 6, 1),
      insn(0x85, 0, 0, 0, Helper.get_current_pid_tgid),
      insn(0x7b, 10, 0, -8),
      insn(0xbf, 1, 6),
      ldMap(2, mapFd),
      insn(0xb4, 3, 0, 0, -1),
      insn(0xbf, 4, 10),
      insn(0x07, 4, 0, 0, -8),
      insn(0xb7, 5, 0, 0, 8),
      insn(0x85, 0, 0, 0, Helper.perf_event_output),
      insn(0xb7, 0, 0, 0, 0),
      insn(0x95),
    ),
  /** `ringbuf_output(map, &pid_tgid, 8, 0)`. */
  ringout: (mapFd: number): Uint8Array =>
    asm(
      insn(0x85, 0, 0, 0, Helper.get_current_pid_tgid),
      insn(0x7b, 10, 0, -8),
      ldMap(1, mapFd),
      insn(0xbf, 2, 10),
      insn(0x07, 2, 0, 0, -8),
      insn(0xb7, 3, 0, 0, 8),
      insn(0xb7, 4, 0, 0, 0),
      insn(0x85, 0, 0, 0, Helper.ringbuf_output),
      insn(0xb7, 0, 0, 0, 0),
      insn(0x95),
    ),
};

/** Base64 of a u32 / u64 little-endian. */
export function u32b64(n: number): string {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, true);
  return b.toBase64();
}

/** Base64 of a u64 little-endian. */
export function u64b64(n: bigint | number): string {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b.toBase64();
}

/** Decodes base64 into a DataView. */
export function view(b64: string): DataView {
  const b = Uint8Array.fromBase64(b64);
  return new DataView(b.buffer, b.byteOffset, b.length);
}
