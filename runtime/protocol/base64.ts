/**
 * Standard base64 (alphabet `A–Z a–z 0–9 + /`, `=` padding) for protocol
 * payloads. One module so the implementation can be swapped in one place;
 * today it is Deno's built-in `Uint8Array.fromBase64` / `toBase64`.
 *
 * @example
 * ```ts
 * import { decodeBase64, encodeBase64 } from "./base64.ts";
 * console.log(encodeBase64(new Uint8Array([1, 0, 0, 0]))); // "AQAAAA=="
 * console.log(decodeBase64("AQAAAA==")); // Uint8Array [1, 0, 0, 0]
 * ```
 * @module
 */

/** Encodes bytes as standard padded base64. */
export function encodeBase64(bytes: Uint8Array): string {
  return bytes.toBase64();
}

/**
 * Decodes strict standard base64 (padding required, no whitespace, no stray
 * bits); throws `Error` with a reason on bad input.
 */
export function decodeBase64(text: string): Uint8Array {
  if (/\s/.test(text)) throw new Error("invalid base64: it contains whitespace");
  try {
    return Uint8Array.fromBase64(text, { lastChunkHandling: "strict" });
  } catch (e) {
    throw new Error(`invalid base64: ${(e as Error).message}`);
  }
}
