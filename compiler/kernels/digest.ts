/**
 * Deterministic digests of header trees and files. A tree digest covers the
 * sorted list of (relative path, size, bytes) of its regular files: the same
 * tree gives the same digest wherever it is extracted and whatever the mtimes,
 * owners or modes. Symlinks are followed (a link and a copy hash the same).
 *
 * Record format, hashed in path order (paths compared by UTF-16 code unit,
 * which is byte order for the ASCII paths of kernel trees):
 * `utf8(path) 0x00 decimal(size) 0x00 bytes`.
 *
 * @example
 * ```ts
 * import { digestTree } from "./digest.ts";
 * const d = await digestTree("/usr/src/linux-headers-6.1.0-28-cloud-amd64", {
 *   roots: ["include", "arch/x86/include", ".config"],
 * });
 * console.log(d.digest, d.files);
 * ```
 * @module
 */

import { createHash } from "node:crypto";

/**
 * Result of {@link digestTree}.
 *
 * @example
 * ```ts
 * import { digestTree, type TreeDigest } from "./digest.ts";
 * const d: TreeDigest = await digestTree("/tmp/tree");
 * console.log(d.files, d.bytes);
 * ```
 */
export interface TreeDigest {
  /** `sha256:<64 hex>`. */
  digest: string;
  /** Number of regular files covered. */
  files: number;
  /** Total bytes covered. */
  bytes: number;
}

/**
 * Options of {@link digestTree}.
 *
 * @example
 * ```ts
 * import type { DigestTreeOptions } from "./digest.ts";
 * const o: DigestTreeOptions = { roots: ["include", ".config"] };
 * ```
 */
export interface DigestTreeOptions {
  /**
   * Root-relative files or directories to cover (missing ones are ignored);
   * default: the whole tree.
   */
  roots?: string[];
}

async function collect(dir: string, rel: string, out: string[], seen: Set<string>): Promise<void> {
  const abs = rel === "" ? dir : `${dir}/${rel}`;
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(abs);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return; // a missing root or a dangling link
    throw e;
  }
  if (info.isFile) {
    out.push(rel);
    return;
  }
  if (!info.isDirectory) return;
  const real = await Deno.realPath(abs);
  if (seen.has(real)) return; // a symlink cycle
  const inner = new Set(seen).add(real);
  for await (const e of Deno.readDir(abs)) {
    await collect(dir, rel === "" ? e.name : `${rel}/${e.name}`, out, inner);
  }
}

/**
 * Digest a directory tree (or the listed parts of it).
 *
 * @example
 * ```ts
 * import { digestTree } from "./digest.ts";
 * const { digest } = await digestTree("/tmp/tree");
 * console.log(digest.startsWith("sha256:"));
 * ```
 */
export async function digestTree(dir: string, opts: DigestTreeOptions = {}): Promise<TreeDigest> {
  const paths: string[] = [];
  for (const root of opts.roots ?? [""]) {
    await collect(dir, root.replace(/^\/+|\/+$/g, ""), paths, new Set());
  }
  const unique = [...new Set(paths)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const hash = createHash("sha256");
  const enc = new TextEncoder();
  let bytes = 0;
  // Read ahead (up to 32 files in flight) but hash strictly in path order.
  const reads = new Map<number, Promise<Uint8Array>>();
  const start = (i: number) => {
    if (i >= unique.length) return;
    const read = Deno.readFile(`${dir}/${unique[i]}`);
    read.catch(() => {}); // observed when awaited below, in order
    reads.set(i, read);
  };
  for (let i = 0; i < 32; i++) start(i);
  for (let i = 0; i < unique.length; i++) {
    const rel = unique[i];
    const data = await reads.get(i)!;
    reads.delete(i);
    start(i + 32);
    hash.update(enc.encode(rel));
    hash.update(enc.encode(`\0${data.length}\0`));
    hash.update(data);
    bytes += data.length;
  }
  return { digest: `sha256:${hash.digest("hex")}`, files: unique.length, bytes };
}

/**
 * `sha256:<hex>` of some bytes.
 *
 * @example
 * ```ts
 * import { digestBytes } from "./digest.ts";
 * console.log(digestBytes(new TextEncoder().encode("abc")));
 * ```
 */
export function digestBytes(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/**
 * `sha256:<hex>` of a file's bytes.
 *
 * @example
 * ```ts
 * import { digestFile } from "./digest.ts";
 * console.log(await digestFile("/etc/hostname"));
 * ```
 */
export async function digestFile(path: string): Promise<string> {
  return digestBytes(await Deno.readFile(path));
}
