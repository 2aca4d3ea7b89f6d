/**
 * Turn a kernel image as packaged (`/boot/vmlinuz-*`) into the uncompressed
 * kernel, without booting it: an x86 bzImage (payload located through the
 * setup header, compressed with gzip/xz/zstd/lz4/…), an arm64 `Image` (plain,
 * gzip'd, or an EFI zboot image), or an ELF vmlinux as is.
 *
 * @example
 * ```ts
 * import { unpackKernelImage } from "./kernel_image.ts";
 * const img = await unpackKernelImage(await Deno.readFile("/boot/vmlinuz-6.1.0-28-cloud-amd64"));
 * console.log(img.format, img.compression, img.data.length);
 * ```
 * @module
 */

import { KernelInputError } from "./errors.ts";
import { run } from "./exec.ts";
import { decodeLz4Legacy } from "./lz4.ts";
import { indexOfBytes } from "./version.ts";

/**
 * Compression formats the kernel build can use for images.
 *
 * @example
 * ```ts
 * import type { Compression } from "./kernel_image.ts";
 * const c: Compression = "zstd";
 * ```
 */
export type Compression = "none" | "gzip" | "xz" | "zstd" | "lz4" | "bzip2" | "lzma" | "lzo";

/**
 * Result of {@link unpackKernelImage}.
 *
 * @example
 * ```ts
 * import { type UnpackedKernel, unpackKernelImage } from "./kernel_image.ts";
 * const k: UnpackedKernel = await unpackKernelImage(await Deno.readFile("vmlinuz"));
 * console.log(k.format, k.compression);
 * ```
 */
export interface UnpackedKernel {
  /** What the input was. */
  format: "bzImage" | "arm64-image" | "efi-zboot" | "elf" | "compressed" | "unknown";
  /** How the kernel inside was compressed. */
  compression: Compression;
  /** The uncompressed kernel (ELF vmlinux for bzImage, raw `Image` for arm64). */
  data: Uint8Array;
}

const MAGICS: [Compression, number[]][] = [
  ["xz", [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ["zstd", [0x28, 0xb5, 0x2f, 0xfd]],
  ["lz4", [0x02, 0x21, 0x4c, 0x18]],
  ["gzip", [0x1f, 0x8b, 0x08]],
  ["bzip2", [0x42, 0x5a, 0x68]],
  ["lzo", [0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a]],
  ["lzma", [0x5d, 0x00, 0x00]],
];

/**
 * The compression format whose magic starts at `offset`, if any.
 *
 * @example
 * ```ts
 * import { sniffCompression } from "./kernel_image.ts";
 * console.log(sniffCompression(new Uint8Array([0x1f, 0x8b, 0x08, 0]))); // "gzip"
 * ```
 */
export function sniffCompression(data: Uint8Array, offset = 0): Compression | undefined {
  for (const [name, magic] of MAGICS) {
    if (offset + magic.length <= data.length && magic.every((b, i) => data[offset + i] === b)) {
      return name;
    }
  }
  return undefined;
}

const TOOLS: Record<Exclude<Compression, "none" | "lz4">, [string, string[]]> = {
  gzip: ["gzip", ["-dc"]],
  xz: ["xz", ["-dc", "--single-stream"]],
  lzma: ["xz", ["--format=lzma", "-dc", "--single-stream"]],
  zstd: ["zstd", ["-dcq"]],
  bzip2: ["bzip2", ["-dc"]],
  lzo: ["lzop", ["-dc"]],
};

/**
 * Decompress a payload that may carry trailing bytes (the kernel build appends
 * the uncompressed size). Tools that complain about the trailer but produced
 * output are accepted; the caller validates the result (e.g. finds BTF in it).
 *
 * @example
 * ```ts
 * import { decompress } from "./kernel_image.ts";
 * const raw = await decompress(await Deno.readFile("/tmp/payload.xz"), "xz", { tmpDir: "/tmp" });
 * ```
 */
export async function decompress(
  payload: Uint8Array,
  compression: Compression,
  opts: { tmpDir?: string } = {},
): Promise<Uint8Array> {
  if (compression === "none") return payload;
  if (compression === "lz4") {
    try {
      return decodeLz4Legacy(payload);
    } catch (e) {
      throw new KernelInputError(
        "extract-failed",
        `cannot decompress the LZ4 kernel payload: ${(e as Error).message}; ` +
          "the image may be truncated: delete the cache entry and download it again",
        { cause: e },
      );
    }
  }
  const [tool, args] = TOOLS[compression];
  const tmp = await Deno.makeTempFile({ dir: opts.tmpDir, prefix: "bpfpack-payload-" });
  try {
    await Deno.writeFile(tmp, payload);
    const r = await run(tool, [...args, tmp], { allowFailure: true });
    if (r.stdout.length === 0) {
      throw new KernelInputError(
        "extract-failed",
        `${tool} could not decompress the ${compression} kernel payload: ${r.stderr.trim()}; ` +
          "the image may be truncated or use a format this module does not know",
      );
    }
    return r.stdout;
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

function u32(data: Uint8Array, off: number): number {
  return new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(off, true);
}

const ARM64_MAGIC = [0x41, 0x52, 0x4d, 0x64]; // "ARM\x64" at 0x38
const HDRS = [0x48, 0x64, 0x72, 0x53]; // "HdrS" at 0x202
const ZIMG = [0x7a, 0x69, 0x6d, 0x67]; // "zimg" at 4

function bytesAt(data: Uint8Array, off: number, magic: number[]): boolean {
  return off + magic.length <= data.length && magic.every((b, i) => data[off + i] === b);
}

/**
 * Unpack a kernel image to the uncompressed kernel.
 *
 * - x86 bzImage: payload at `(setup_sects+1)*512 + payload_offset`, length
 *   `payload_length` (setup header fields at 0x1f1, 0x248, 0x24c).
 * - arm64: a plain `Image` (magic `ARM\x64` at 0x38), a gzip'd `Image`, or an
 *   EFI zboot image (`zimg` at 4: payload offset/size at 8/12, type at 0x18).
 * - ELF: returned as is. Otherwise the first compression magic found wins.
 *
 * @example
 * ```ts
 * import { unpackKernelImage } from "./kernel_image.ts";
 * const { format, data } = await unpackKernelImage(await Deno.readFile("vmlinuz"));
 * ```
 */
export async function unpackKernelImage(
  image: Uint8Array,
  opts: { tmpDir?: string } = {},
): Promise<UnpackedKernel> {
  if (bytesAt(image, 0, [0x7f, 0x45, 0x4c, 0x46])) {
    return { format: "elf", compression: "none", data: image };
  }
  if (bytesAt(image, 0x38, ARM64_MAGIC)) {
    return { format: "arm64-image", compression: "none", data: image };
  }
  if (bytesAt(image, 0x202, HDRS) && image.length > 0x250) {
    const setupSects = image[0x1f1] || 4;
    const start = (setupSects + 1) * 512 + u32(image, 0x248);
    const length = u32(image, 0x24c);
    if (start + length <= image.length) {
      const payload = image.subarray(start, start + length);
      const compression = sniffCompression(payload);
      if (compression) {
        return {
          format: "bzImage",
          compression,
          data: await decompress(payload, compression, opts),
        };
      }
    }
  }
  if (bytesAt(image, 0, [0x4d, 0x5a]) && bytesAt(image, 4, ZIMG) && image.length > 0x40) {
    const start = u32(image, 8);
    const length = u32(image, 12);
    const type = new TextDecoder().decode(image.subarray(0x18, 0x38)).replace(/\0.*$/s, "");
    const compression: Compression | undefined = type.startsWith("zstd")
      ? "zstd"
      : type.startsWith("xz")
      ? "xz"
      : (["gzip", "lzma", "lzo", "lz4", "bzip2"] as const).find((c) => type === c);
    if (compression && start + length <= image.length) {
      const data = await decompress(image.subarray(start, start + length), compression, opts);
      return { format: "efi-zboot", compression, data };
    }
  }
  const whole = sniffCompression(image);
  if (whole) {
    const data = await decompress(image, whole, opts);
    const inner = await unpackKernelImage(data, opts);
    return {
      format: inner.format === "unknown" ? "compressed" : inner.format,
      compression: inner.compression === "none" ? whole : inner.compression,
      data: inner.data,
    };
  }
  // Last resort: the first compression magic anywhere (an unknown wrapper).
  for (const [name, magic] of MAGICS.slice(0, 4)) {
    const at = indexOfBytes(image, new Uint8Array(magic));
    if (at > 0) {
      try {
        const data = await decompress(image.subarray(at), name, opts);
        return { format: "unknown", compression: name, data };
      } catch {
        // try the next format
      }
    }
  }
  return { format: "unknown", compression: "none", data: image };
}
