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

/**
 * Counts returned by {@link copyMaterialised}.
 *
 * @example
 * ```ts
 * import { copyMaterialised, type CopyStats } from "./fs_util.ts";
 * const s: CopyStats = await copyMaterialised({ root: "/tmp/x", rel: "usr/src/a/include" }, "/tmp/t");
 * ```
 */
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
 * Copy the subtree `src.rel` of `src.root` to `dest`, replacing every symlink by a copy
 * of what it points to (resolved with {@link resolveInRoot}), so `dest` holds
 * only regular files and directories. Dangling links are skipped and reported.
 * Existing files in `dest` are overwritten (so a second call overlays); pass
 * `opts.stats` to accumulate counts over several calls. `opts.hardLink` links
 * instead of copying where possible — only for sources nobody will modify
 * (e.g. a private extraction directory that is deleted afterwards).
 *
 * @example
 * ```ts
 * import { copyMaterialised } from "./fs_util.ts";
 * const s = await copyMaterialised(
 *   { root: "/tmp/x", rel: "usr/src/linux-headers-6.1.0-28-common/include" },
 *   "/tmp/tree/include",
 * );
 * console.log(s.files, s.skipped.length);
 * ```
 */
export async function copyMaterialised(
  src: { root: string; rel: string },
  dest: string,
  opts: { stats?: CopyStats; hardLink?: boolean } = {},
): Promise<CopyStats> {
  const { root, rel } = src;
  const stats = opts.stats ?? { files: 0, bytes: 0, materialised: 0, skipped: [] };
  const real = await resolveInRoot(root, rel);
  if (real === undefined) {
    stats.skipped.push(rel);
    return stats;
  }
  const plan: [string, string][] = [];
  const viaLink = (await Deno.lstat(`${root}/${rel}`)).isSymlink;
  await planCopy(root, real, dest, stats, new Set(), viaLink, plan);
  let link = opts.hardLink ?? false;
  await mapLimit(plan, async ([from, to]) => {
    if (link) {
      try {
        await Deno.remove(to).catch(() => {}); // an overlaid file
        await Deno.link(from, to);
        return;
      } catch {
        link = false; // another file system, or links not allowed: copy from now on
      }
    }
    await Deno.copyFile(from, to);
  }, { concurrency: 32 });
  return stats;
}

/**
 * Run `fn` over `items` with at most `concurrency` (default 16) calls in flight;
 * results keep the order of `items`.
 *
 * @example
 * ```ts
 * import { mapLimit } from "./fs_util.ts";
 * const sizes = await mapLimit(["/etc/hosts", "/etc/hostname"], async (p) => (await Deno.stat(p)).size, {
 *   concurrency: 8,
 * });
 * ```
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  fn: (item: T, index: number) => Promise<R>,
  opts: { concurrency?: number } = {},
): Promise<R[]> {
  const limit = Math.max(1, opts.concurrency ?? 16);
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

async function planCopy(
  root: string,
  real: string,
  dest: string,
  stats: CopyStats,
  ancestors: Set<string>,
  viaLink: boolean,
  plan: [string, string][],
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
        await planCopy(root, target, `${dest}/${e.name}`, stats, inner, true, plan);
      } else if (e.isFile) {
        plan.push([`${root}/${childRel}`, `${dest}/${e.name}`]);
        stats.files++;
        stats.bytes += (await Deno.stat(`${root}/${childRel}`)).size;
      } else {
        await planCopy(root, childRel, `${dest}/${e.name}`, stats, inner, false, plan);
      }
    }
  } else if (info.isFile) {
    plan.push([abs, dest]);
    stats.files++;
    stats.bytes += info.size;
  } else {
    stats.skipped.push(real); // device, fifo, socket: not part of a header tree
  }
}

/**
 * Remove leftovers of interrupted runs: entries of `dir` whose name matches
 * `opts.pattern` and that were last modified more than `opts.olderThanMs` ago
 * (0: any age — only safe while holding the lock that guards `dir`).
 *
 * @example
 * ```ts
 * import { sweepStale } from "./fs_util.ts";
 * await sweepStale("/work/main/.cache/kernels", { pattern: /^work-/, olderThanMs: 6 * 3600_000 });
 * ```
 */
export async function sweepStale(
  dir: string,
  opts: { pattern: RegExp; olderThanMs: number },
): Promise<void> {
  const { pattern, olderThanMs } = opts;
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  for (const e of entries) {
    if (!pattern.test(e.name)) continue;
    const path = `${dir}/${e.name}`;
    const info = await Deno.lstat(path).catch(() => undefined);
    const age = Date.now() - (info?.mtime?.getTime() ?? Date.now());
    if (info && age >= olderThanMs) await removeIfExists(path);
  }
}
