/**
 * File-system helpers for the kernel cache: existence checks, inter-process
 * locks, atomic installs (build in a temporary sibling, rename into place, write
 * the completion stamp last) and copying a package subtree with its symlinks
 * resolved inside an extraction root ("materialised"), so the result is
 * self-contained.
 *
 * @example
 * ```ts
 * import { withLock, writeFileAtomic } from "./fs_util.ts";
 * await withLock("/tmp/demo.lock", async () => {
 *   await writeFileAtomic("/tmp/demo.json", '{"ok":true}\n');
 * });
 * ```
 * @module
 */

import type { z } from "zod";

/**
 * Whether a path exists (following symlinks).
 *
 * @example
 * ```ts
 * import { exists } from "./fs_util.ts";
 * console.log(await exists("/etc/os-release"));
 * ```
 */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return false;
    throw e;
  }
}

/**
 * Run `fn` while holding an exclusive `flock` on `lockPath` (created if
 * missing). Serialises concurrent processes that build the same cache entry.
 *
 * @example
 * ```ts
 * import { withLock } from "./fs_util.ts";
 * const n = await withLock("/tmp/x.lock", () => Promise.resolve(42));
 * ```
 */
export async function withLock<T>(lockPath: string, fn: () => Promise<T>): Promise<T> {
  await Deno.mkdir(dirname(lockPath), { recursive: true });
  const file = await Deno.open(lockPath, { create: true, write: true });
  try {
    await file.lock(true);
    return await fn();
  } finally {
    file.close();
  }
}

/**
 * Write a file atomically: write a temporary sibling, then rename over `path`.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./fs_util.ts";
 * await writeFileAtomic("/tmp/stamp.json", "{}\n");
 * ```
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  if (typeof data === "string") await Deno.writeTextFile(tmp, data);
  else await Deno.writeFile(tmp, data);
  await Deno.rename(tmp, path);
}

/**
 * Read and validate a JSON file; `undefined` when it is missing or does not
 * match the schema (a stale or partial stamp counts as absent).
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { readJson } from "./fs_util.ts";
 * const v = await readJson("/tmp/stamp.json", z.object({ ok: z.boolean() }));
 * ```
 */
export async function readJson<S extends z.ZodType>(
  path: string,
  schema: S,
): Promise<z.infer<S> | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  try {
    const parsed = schema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A fresh temporary directory next to `path` (same file system, so a later
 * rename is atomic).
 *
 * @example
 * ```ts
 * import { siblingTempDir } from "./fs_util.ts";
 * const tmp = await siblingTempDir("/tmp/entry");
 * ```
 */
export async function siblingTempDir(path: string): Promise<string> {
  await Deno.mkdir(dirname(path), { recursive: true });
  return await Deno.makeTempDir({ dir: dirname(path), prefix: `${basename(path)}.tmp-` });
}

/**
 * Move a finished directory into place, replacing whatever (partial) entry was
 * there before.
 *
 * @example
 * ```ts
 * import { replaceDir, siblingTempDir } from "./fs_util.ts";
 * const tmp = await siblingTempDir("/tmp/entry");
 * await replaceDir(tmp, "/tmp/entry");
 * ```
 */
export async function replaceDir(from: string, to: string): Promise<void> {
  await Deno.remove(to, { recursive: true }).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
  await Deno.rename(from, to);
}

/**
 * Remove a path if it exists (recursively).
 *
 * @example
 * ```ts
 * import { removeIfExists } from "./fs_util.ts";
 * await removeIfExists("/tmp/entry.tmp-123");
 * ```
 */
export async function removeIfExists(path: string): Promise<void> {
  await Deno.remove(path, { recursive: true }).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
}

/**
 * The directory part of a POSIX path.
 *
 * @example
 * ```ts
 * import { dirname } from "./fs_util.ts";
 * console.log(dirname("/a/b/c")); // "/a/b"
 * ```
 */
export function dirname(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  const i = trimmed.lastIndexOf("/");
  if (i < 0) return ".";
  return i === 0 ? "/" : trimmed.slice(0, i);
}

/**
 * The last component of a POSIX path.
 *
 * @example
 * ```ts
 * import { basename } from "./fs_util.ts";
 * console.log(basename("/a/b/c.deb")); // "c.deb"
 * ```
 */
export function basename(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

/**
 * Make a path absolute against the current directory and normalise `.`/`..`.
 *
 * @example
 * ```ts
 * import { absolute } from "./fs_util.ts";
 * console.log(absolute("/a/./b/../c")); // "/a/c"
 * ```
 */
export function absolute(path: string): string {
  const full = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  const out: string[] = [];
  for (const part of full.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return "/" + out.join("/");
}

const MAX_SYMLINKS = 40;

/**
 * Resolve `rel` inside `root` as if `root` were `/`: every symlink on the way
 * is followed, absolute targets are taken relative to `root`, and a path that
 * would leave `root` or does not exist gives `undefined`. Returns the
 * root-relative real path ("" for the root itself).
 *
 * @example
 * ```ts
 * import { resolveInRoot } from "./fs_util.ts";
 * // In an extracted .deb, /usr/src/a/include may link to ../b/include:
 * const real = await resolveInRoot("/tmp/x", "usr/src/a/include/linux/sched.h");
 * ```
 */
export async function resolveInRoot(root: string, rel: string): Promise<string | undefined> {
  const queue = rel.split("/").filter((p) => p !== "" && p !== ".");
  const done: string[] = [];
  let links = 0;
  while (queue.length > 0) {
    const part = queue.shift()!;
    if (part === ".") continue;
    if (part === "..") {
      if (done.length === 0) return undefined; // would leave the root
      done.pop();
      continue;
    }
    done.push(part);
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(`${root}/${done.join("/")}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
        return undefined;
      }
      throw e;
    }
    if (info.isSymlink) {
      if (++links > MAX_SYMLINKS) return undefined;
      const target = await Deno.readLink(`${root}/${done.join("/")}`);
      done.pop();
      if (target.startsWith("/")) done.length = 0;
      queue.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
    }
  }
  return done.join("/");
}

/** Counts returned by {@link copyMaterialised}. */
export interface CopyStats {
  /** Regular files written. */
  files: number;
  /** Bytes written. */
  bytes: number;
  /** Symlinks whose target was copied in their place. */
  materialised: number;
  /** Root-relative paths skipped because they dangle or leave the root. */
  skipped: string[];
}

/**
 * Copy the subtree `rel` of `root` to `dest`, replacing every symlink by a copy
 * of what it points to (resolved with {@link resolveInRoot}), so `dest` holds
 * only regular files and directories. Dangling links are skipped and reported.
 * Existing files in `dest` are overwritten (so a second call overlays).
 *
 * @example
 * ```ts
 * import { copyMaterialised } from "./fs_util.ts";
 * const s = await copyMaterialised("/tmp/x", "usr/src/linux-headers-6.1.0-28-common/include", "/tmp/tree/include");
 * console.log(s.files, s.skipped.length);
 * ```
 */
export async function copyMaterialised(
  root: string,
  rel: string,
  dest: string,
  stats: CopyStats = { files: 0, bytes: 0, materialised: 0, skipped: [] },
): Promise<CopyStats> {
  const real = await resolveInRoot(root, rel);
  if (real === undefined) {
    stats.skipped.push(rel);
    return stats;
  }
  await copyReal(root, real, dest, stats, new Set(), (await Deno.lstat(`${root}/${rel}`)).isSymlink);
  return stats;
}

async function copyReal(
  root: string,
  real: string,
  dest: string,
  stats: CopyStats,
  ancestors: Set<string>,
  viaLink: boolean,
): Promise<void> {
  const abs = `${root}/${real}`;
  const info = await Deno.stat(abs);
  if (viaLink) stats.materialised++;
  if (info.isDirectory) {
    if (ancestors.has(real)) {
      stats.skipped.push(real); // a link cycle back to an ancestor
      return;
    }
    await Deno.mkdir(dest, { recursive: true });
    const entries: Deno.DirEntry[] = [];
    for await (const e of Deno.readDir(abs)) entries.push(e);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const inner = new Set(ancestors).add(real);
    for (const e of entries) {
      const childRel = real === "" ? e.name : `${real}/${e.name}`;
      if (e.isSymlink) {
        const target = await resolveInRoot(root, childRel);
        if (target === undefined) {
          stats.skipped.push(childRel);
          continue;
        }
        await copyReal(root, target, `${dest}/${e.name}`, stats, inner, true);
      } else {
        await copyReal(root, childRel, `${dest}/${e.name}`, stats, inner, false);
      }
    }
  } else if (info.isFile) {
    await Deno.copyFile(abs, dest);
    stats.files++;
    stats.bytes += info.size;
  } else {
    stats.skipped.push(real); // device, fifo, socket: not part of a header tree
  }
}
