/**
 * Finding tracefs wherever it is mounted (never assuming
 * `/sys/kernel/debug/tracing`), mounting it when it is absent, and reading
 * event ids, listings and format files.
 *
 * @example
 * ```ts
 * import { tracefs, eventId } from "./tracefs.ts";
 * console.log(tracefs().path); // e.g. /sys/kernel/tracing
 * console.log(eventId("syscalls", "sys_enter_openat"));
 * ```
 * @module
 */

import { errno, libc } from "./ffi.ts";
import { errnoName, SysError } from "./errno.ts";

/** Where tracefs is and how it got there. */
export interface Tracefs {
  path: string;
  /** True when this process mounted it. */
  mountedByUs: boolean;
}

let cached: Tracefs | null = null;

function isTracefsDir(p: string): boolean {
  try {
    return Deno.statSync(`${p}/events`).isDirectory;
  } catch {
    return false;
  }
}

/** Mount points of a filesystem type, from /proc/mounts. */
export function mountsOf(fstype: string, mounts = "/proc/mounts"): string[] {
  let text = "";
  try {
    text = Deno.readTextFileSync(mounts);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    if (f.length > 2 && f[2] === fstype) out.push(f[1].replace(/\\040/g, " "));
  }
  return out;
}

function cbuf(s: string): Uint8Array {
  const e = new TextEncoder().encode(s);
  const b = new Uint8Array(Math.max(e.length + 1, 128)); // > 64 bytes: off the V8 heap
  b.set(e);
  return b;
}

/** `mount(source, target, fstype, 0, NULL)`; throws SysError. */
export function mount(source: string, target: string, fstype: string): void {
  if (libc.mount(cbuf(source), cbuf(target), cbuf(fstype), 0n, null) !== 0) {
    const e = errno();
    throw new SysError(e, `mount ${fstype} on ${target}: ${errnoName(e)}`);
  }
}

/**
 * Locates tracefs: a mounted `tracefs`, then `tracing/` under a mounted
 * debugfs, then the usual paths; if none is there, mounts tracefs at
 * `/sys/kernel/tracing` (needs root). Cached for the process.
 */
export function tracefs(): Tracefs {
  if (cached && isTracefsDir(cached.path)) return cached;
  const candidates = [
    ...mountsOf("tracefs"),
    ...mountsOf("debugfs").map((d) => `${d}/tracing`),
    "/sys/kernel/tracing",
    "/sys/kernel/debug/tracing",
  ];
  for (const c of candidates) {
    if (isTracefsDir(c)) return (cached = { path: c, mountedByUs: false });
  }
  try {
    mount("tracefs", "/sys/kernel/tracing", "tracefs");
  } catch (e) {
    const why = e instanceof SysError ? e.message : String(e);
    throw new SysError(
      e instanceof SysError ? e.errno : 2,
      `tracefs is not mounted and mounting it failed (${why}); ` +
        "mount it (mount -t tracefs tracefs /sys/kernel/tracing) or run bpfd as root",
    );
  }
  if (!isTracefsDir("/sys/kernel/tracing")) {
    throw new SysError(2, "tracefs mounted at /sys/kernel/tracing but has no events/ directory");
  }
  return (cached = { path: "/sys/kernel/tracing", mountedByUs: true });
}

/**
 * The tracefs root to use for a client-supplied path: the path itself when it
 * is a tracefs root, otherwise the discovered one (clients of the original
 * always send `/sys/kernel/debug/tracing`).
 */
export function tracefsFor(hint?: string): string {
  if (hint && isTracefsDir(hint)) return hint;
  return tracefs().path;
}

function validName(s: string): boolean {
  return s.length > 0 && !s.includes("/") && s !== "." && s !== "..";
}

/** The numeric id of `events/<category>/<name>`; throws SysError(ENOENT) with a hint. */
export function eventId(category: string, name: string, root = tracefs().path): number {
  if (!validName(category) || !validName(name)) {
    throw new SysError(22, `invalid tracepoint name ${category}:${name}`);
  }
  const p = `${root}/events/${category}/${name}/id`;
  let text: string;
  try {
    text = Deno.readTextFileSync(p);
  } catch {
    throw new SysError(
      2,
      `tracepoint ${category}:${name} does not exist (no ${p}); ` +
        "list them with GET_TRACE_EVENTS_CATEGORIES / GET_TRACE_EVENTS",
    );
  }
  return parseInt(text.trim(), 10);
}

/** Names of the subdirectories of a directory, in readdir order; null if unreadable. */
export function listDirs(path: string): string[] | null {
  try {
    const out: string[] = [];
    for (const e of Deno.readDirSync(path)) if (e.isDirectory) out.push(e.name);
    return out;
  } catch {
    return null;
  }
}

/** The text of `events/<category>/<name>/format`; throws SysError(ENOENT). */
export function eventFormat(category: string, name: string, root = tracefs().path): string {
  if (!validName(category) || !validName(name)) {
    throw new SysError(22, `invalid tracepoint name ${category}:${name}`);
  }
  try {
    return Deno.readTextFileSync(`${root}/events/${category}/${name}/format`);
  } catch {
    throw new SysError(2, `tracepoint ${category}:${name} has no format file (does it exist?)`);
  }
}
