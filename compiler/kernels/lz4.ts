/**
 * LZ4 decompression for kernel images: the "legacy" LZ4 frame the kernel's
 * `lz4 -l` build step produces (Debian's 6.1 amd64 bzImage payload), written
 * from the format description so no `lz4` tool is needed on the host.
 *
 * Legacy frame: magic `02 21 4c 18`, then blocks of `le32 compressed size` +
 * an LZ4 block that expands to at most 8 MiB. The kernel build appends the
 * uncompressed size as a final le32, which reads as a block size larger than
 * what is left: decoding stops there.
 *
 * @example
 * ```ts
 * import { decodeLz4Legacy } from "./lz4.ts";
 * const out = decodeLz4Legacy(Deno.readFileSync("/tmp/payload.lz4"));
 * console.log(out.length);
 * ```
 * @module
 */

/**
 * Magic number of a legacy LZ4 frame (little-endian `0x184C2102`).
 *
 * @example
 * ```ts
 * import { LZ4_LEGACY_MAGIC } from "./lz4.ts";
 * const isLz4 = (b: Uint8Array) => new DataView(b.buffer).getUint32(0, true) === LZ4_LEGACY_MAGIC;
 * ```
 */
export const LZ4_LEGACY_MAGIC = 0x184c2102;
const LEGACY_BLOCK_MAX = 8 << 20;

/**
 * Decode one raw LZ4 block `src[srcStart, srcEnd)` into `dst` at `dstStart`
 * (defaults: all of `src`, start of `dst`); returns the number of bytes written. Throws on malformed input or when
 * `dst` is too small.
 *
 * @example
 * ```ts
 * import { decodeLz4Block } from "./lz4.ts";
 * // token 0x50: 5 literals, no match (last sequence)
 * const dst = new Uint8Array(16);
 * const n = decodeLz4Block(new Uint8Array([0x50, 104, 101, 108, 108, 111]), dst);
 * console.log(new TextDecoder().decode(dst.subarray(0, n))); // "hello"
 * ```
 */
export function decodeLz4Block(
  src: Uint8Array,
  dst: Uint8Array,
  opts: { srcStart?: number; srcEnd?: number; dstStart?: number } = {},
): number {
  const end = opts.srcEnd ?? src.length;
  const dstStart = opts.dstStart ?? 0;
  let s = opts.srcStart ?? 0;
  let d = dstStart;
  const fail = (why: string): never => {
    throw new Error(`corrupt LZ4 block at input offset ${s}: ${why}`);
  };
  while (s < end) {
    const token = src[s++];
    let literals = token >>> 4;
    if (literals === 15) {
      let b: number;
      do {
        if (s >= end) fail("literal length runs past the block");
        b = src[s++];
        literals += b;
      } while (b === 255);
    }
    if (s + literals > end) fail("literals run past the block");
    if (d + literals > dst.length) fail("output larger than the block limit");
    dst.set(src.subarray(s, s + literals), d);
    s += literals;
    d += literals;
    if (s >= end) break; // the last sequence has literals only
    if (s + 2 > end) fail("truncated match offset");
    const offset = src[s] | (src[s + 1] << 8);
    s += 2;
    if (offset === 0) fail("zero match offset");
    let length = token & 15;
    if (length === 15) {
      let b: number;
      do {
        if (s >= end) fail("match length runs past the block");
        b = src[s++];
        length += b;
      } while (b === 255);
    }
    length += 4;
    let m = d - offset;
    if (m < dstStart) fail("match offset before the start of the block");
    if (d + length > dst.length) fail("output larger than the block limit");
    if (offset >= length) {
      dst.copyWithin(d, m, m + length);
      d += length;
    } else {
      for (let i = 0; i < length; i++) dst[d++] = dst[m++];
    }
  }
  return d - dstStart;
}

/**
 * Decode a legacy LZ4 frame (tolerating the kernel's trailing size word and any
 * other trailing bytes that do not form a whole block).
 *
 * @example
 * ```ts
 * import { decodeLz4Legacy } from "./lz4.ts";
 * const frame = new Uint8Array([0x02, 0x21, 0x4c, 0x18, 3, 0, 0, 0, 0x20, 104, 105]);
 * console.log(new TextDecoder().decode(decodeLz4Legacy(frame))); // "hi"
 * ```
 */
export function decodeLz4Legacy(src: Uint8Array): Uint8Array {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  if (src.length < 4 || view.getUint32(0, true) !== LZ4_LEGACY_MAGIC) {
    throw new Error("not a legacy LZ4 frame (magic 02 21 4c 18 missing)");
  }
  const parts: Uint8Array[] = [];
  const scratch = new Uint8Array(LEGACY_BLOCK_MAX);
  let total = 0;
  let p = 4;
  while (p + 4 <= src.length) {
    const size = view.getUint32(p, true);
    if (size === LZ4_LEGACY_MAGIC) {
      p += 4; // a concatenated frame
      continue;
    }
    if (size === 0 || p + 4 + size > src.length) break; // trailing size word or garbage
    p += 4;
    const n = decodeLz4Block(src, scratch, { srcStart: p, srcEnd: p + size });
    parts.push(scratch.slice(0, n));
    total += n;
    p += size;
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const part of parts) {
    out.set(part, o);
    o += part.length;
  }
  return out;
}
