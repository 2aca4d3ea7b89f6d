/**
 * Minimal deterministic ustar: enough to write and read bundle archives
 * (regular files and their directories, no links). Entries are sorted, times
 * and owners are zero, so the same files always give the same bytes.
 *
 * @example
 * ```ts
 * import { readTar, writeTar } from "./tar.ts";
 * const tar = writeTar(new Map([["a/b.txt", new TextEncoder().encode("hi")]]));
 * console.log(readTar(tar).get("a/b.txt")?.length); // 2
 * ```
 * @module
 */

const enc = new TextEncoder();
const dec = new TextDecoder();

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, "0") + "\0";
}

function header(name: string, size: number, type: "0" | "5"): Uint8Array {
  const h = new Uint8Array(512);
  let path = name;
  let prefix = "";
  if (enc.encode(path).length > 100) {
    const cut = path.lastIndexOf("/", path.length - 1 - 0);
    prefix = path.slice(0, cut);
    path = path.slice(cut + 1);
    if (enc.encode(path).length > 100 || enc.encode(prefix).length > 155) {
      throw new Error(`tar: path too long: ${name}`);
    }
  }
  const put = (s: string, off: number) => h.set(enc.encode(s), off);
  put(path, 0);
  put(octal(type === "5" ? 0o755 : 0o644, 8), 100);
  put(octal(0, 8), 108);
  put(octal(0, 8), 116);
  put(octal(size, 12), 124);
  put(octal(0, 12), 136);
  put("        ", 148);
  put(type, 156);
  put("ustar\x0000", 257);
  put(prefix, 345);
  let sum = 0;
  for (const b of h) sum += b;
  put(octal(sum, 7) + " ", 148);
  return h;
}

/** A ustar archive of `files` (relative paths), with their parent directories. */
export function writeTar(files: Map<string, Uint8Array>): Uint8Array {
  const dirs = new Set<string>();
  for (const p of files.keys()) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/") + "/");
  }
  const entries: [string, Uint8Array | null][] = [
    ...[...dirs].map((d) => [d, null] as [string, null]),
    ...files,
  ];
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const chunks: Uint8Array[] = [];
  for (const [name, bytes] of entries) {
    chunks.push(header(name, bytes?.length ?? 0, bytes ? "0" : "5"));
    if (bytes) {
      chunks.push(bytes);
      const pad = (512 - (bytes.length % 512)) % 512;
      if (pad) chunks.push(new Uint8Array(pad));
    }
  }
  chunks.push(new Uint8Array(1024));
  const total = chunks.reduce((s, c) => s + c.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

function str(b: Uint8Array): string {
  const z = b.indexOf(0);
  return dec.decode(z < 0 ? b : b.subarray(0, z));
}

/** Regular files of a ustar archive; throws `Error` on a truncated or corrupt archive. */
export function readTar(tar: Uint8Array): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  let off = 0;
  while (off + 512 <= tar.length) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) return files;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
    const want = parseInt(str(h.subarray(148, 156)).trim(), 8);
    if (sum !== want) {
      throw new Error(`tar: bad header checksum at offset ${off} (corrupt archive?)`);
    }
    const size = parseInt(str(h.subarray(124, 136)).trim() || "0", 8);
    const type = String.fromCharCode(h[156] || 48);
    const prefix = str(h.subarray(345, 500));
    let name = str(h.subarray(0, 100));
    if (prefix) name = `${prefix}/${name}`;
    name = name.replace(/^\.\//, "");
    const start = off + 512;
    if (!Number.isFinite(size) || start + size > tar.length) {
      throw new Error(`tar: ${name} is truncated`);
    }
    if (type === "0") {
      if (name.split("/").includes("..")) throw new Error(`tar: unsafe path ${name}`);
      files.set(name, tar.slice(start, start + size));
    }
    off = start + Math.ceil(size / 512) * 512;
  }
  throw new Error("tar: archive is truncated (no end marker)");
}
