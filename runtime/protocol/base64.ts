/**
 * Standard base64 (alphabet `A–Z a–z 0–9 + /`, `=` padding) for protocol
 * payloads. One module so the implementation can be swapped in one place;
 * today it is Deno's built-in `Uint8Array.fromBase64` / `toBase64`, plus a
 * table-driven JS codec on ASCII bytes for the hot path's small tokens (map
 * keys and values), where the native call costs more than the work.
 *
 * @example
 * ```ts
 * import { decodeBase64, encodeBase64 } from "./base64.ts";
 * console.log(encodeBase64(new Uint8Array([1, 0, 0, 0]))); // "AQAAAA=="
 * console.log(decodeBase64("AQAAAA==")); // Uint8Array [1, 0, 0, 0]
 * ```
 * @module
 */

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/** Character code of each 6-bit value. */
const CODE = Uint8Array.from(ALPHABET, (c) => c.charCodeAt(0));
/** 6-bit value of each ASCII character code, -1 if not in the alphabet. */
const VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) VALUE[CODE[i]] = i;
const PAD = 61; // "="
const NEWLINE = 10;
const STRICT = { lastChunkHandling: "strict" } as const;
const WHITESPACE = /\s/;
const ascii = new TextDecoder();

/** Encodes bytes as standard padded base64. */
export function encodeBase64(bytes: Uint8Array): string {
  return bytes.toBase64();
}

/**
 * Writes the base64 of `bytes[start, end)` into `out` at `o` (as ASCII
 * codes); returns the offset after it. `out` needs `ceil((end - start) / 3) * 4`
 * bytes of room.
 */
export function encodeBase64Bytes(
  bytes: Uint8Array,
  start: number,
  end: number,
  out: Uint8Array,
  o: number,
): number {
  let i = start;
  for (; i + 3 <= end; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out[o++] = CODE[n >> 18];
    out[o++] = CODE[(n >> 12) & 63];
    out[o++] = CODE[(n >> 6) & 63];
    out[o++] = CODE[n & 63];
  }
  if (i < end) {
    // One or two bytes left: two or three characters, then padding.
    const two = i + 1 < end;
    const n = (bytes[i] << 16) | (two ? bytes[i + 1] << 8 : 0);
    out[o++] = CODE[n >> 18];
    out[o++] = CODE[(n >> 12) & 63];
    out[o++] = two ? CODE[(n >> 6) & 63] : PAD;
    out[o++] = PAD;
  }
  return o;
}

/**
 * Encodes `count` key/value pairs, stored as `count` keys of `keySize` bytes
 * back to back in `keys` and as many values in `values`, as base64 strings
 * in turn: `[key0, value0, key1, value1, …]` (what {@link encodeBase64}
 * gives for each). For many small items, such as a map page, this is about
 * ten times faster than `subarray().toBase64()` per item: one pass of table
 * lookups into one byte buffer, then one decode and split, instead of two
 * allocations and a native call per item.
 */
export function encodeBase64Pairs(
  keys: Uint8Array,
  keySize: number,
  values: Uint8Array,
  valueSize: number,
  count: number,
): string[] {
  if (count === 0) return [];
  const line = (n: number) => Math.ceil(n / 3) * 4 + 1;
  const out = new Uint8Array((line(keySize) + line(valueSize)) * count);
  let o = 0;
  for (let i = 0; i < count; i++) {
    o = encodeBase64Bytes(keys, i * keySize, (i + 1) * keySize, out, o);
    out[o++] = NEWLINE;
    o = encodeBase64Bytes(values, i * valueSize, (i + 1) * valueSize, out, o);
    out[o++] = NEWLINE;
  }
  return ascii.decode(out.subarray(0, o - 1)).split("\n");
}

/**
 * Decodes strict standard base64 (padding required, no whitespace, no stray
 * bits); throws `Error` with a reason on bad input.
 */
export function decodeBase64(text: string): Uint8Array {
  if (WHITESPACE.test(text)) throw new Error("invalid base64: it contains whitespace");
  try {
    return Uint8Array.fromBase64(text, STRICT);
  } catch (e) {
    throw new Error(`invalid base64: ${(e as Error).message}`);
  }
}

/**
 * {@link decodeBase64} without an allocation when the bytes fit `scratch`:
 * the result is then a view of `scratch`, valid until the caller reuses it.
 * Bytes that do not fit get a new array, as from {@link decodeBase64}; bad
 * input throws the same errors.
 */
export function decodeBase64Into(text: string, scratch: Uint8Array): Uint8Array {
  if (!WHITESPACE.test(text)) {
    try {
      const { read, written } = scratch.setFromBase64(text, STRICT);
      if (read === text.length) return scratch.subarray(0, written);
    } catch { /* decodeBase64 below gives the reason */ }
  }
  return decodeBase64(text);
}

/**
 * Decodes canonical base64 held as ASCII in `src[start, end)` (what
 * {@link encodeBase64} produces: a multiple of 4 characters, padding only at
 * the end, zero stray bits) into `out`; returns the byte count, or -1 for
 * anything else or when `out` is too small. Whatever it accepts, the strict
 * {@link decodeBase64} accepts with the same bytes: a hot path that reads
 * bytes can use it and leave every other input to the string path.
 */
export function decodeBase64Bytes(
  src: Uint8Array,
  start: number,
  end: number,
  out: Uint8Array,
): number {
  const len = end - start;
  if (len & 3) return -1;
  let pad = 0;
  if (len > 0 && src[end - 1] === PAD) pad = src[end - 2] === PAD ? 2 : 1;
  if ((len / 4) * 3 - pad > out.length) return -1;
  let o = 0;
  let acc = 0;
  for (let i = 0; i < len - pad; i++) {
    const c = src[start + i];
    const v = c < 128 ? VALUE[c] : -1;
    if (v < 0) return -1;
    acc = (acc << 6) | v;
    if ((i & 3) === 3) {
      out[o++] = acc >> 16;
      out[o++] = (acc >> 8) & 255;
      out[o++] = acc & 255;
      acc = 0;
    }
  }
  if (pad === 1) {
    // Three characters: 18 bits, two bytes and 2 stray bits that must be 0.
    if (acc & 3) return -1;
    out[o++] = acc >> 10;
    out[o++] = (acc >> 2) & 255;
  } else if (pad === 2) {
    // Two characters: 12 bits, one byte and 4 stray bits that must be 0.
    if (acc & 15) return -1;
    out[o++] = acc >> 4;
  }
  return o;
}
