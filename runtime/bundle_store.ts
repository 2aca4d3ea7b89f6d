/**
 * Bundles received over the channel: chunked upload, checked against the
 * announced sha256, stored in a cache directory on the device under their
 * digest so the same bundle is never sent twice.
 *
 * @example
 * ```ts
 * import { BundleStore } from "./bundle_store.ts";
 * const store = new BundleStore("/tmp/bpfpack-bundles");
 * const have = store.lookup("sha256:…"); // path, or null: upload it
 * ```
 * @module
 */

import { SysError } from "./kernel/errno.ts";

/** Most bytes one upload may hold (a bundle is a few hundred KiB; 256 MiB is generous). */
export const MAX_UPLOAD = 256 * 1024 * 1024;
/** Raw bytes per chunk a client should send (about 1.4 MB of base64 per line). */
export const CHUNK_SIZE = 1024 * 1024;

const DIGEST = /^sha256:([0-9a-f]{64})$/;

interface Upload {
  size: number;
  parts: Uint8Array[];
  received: number;
}

/** The device-side bundle cache and the uploads in progress. */
export class BundleStore {
  /** Directory holding `<hex>.tar` files. */
  readonly dir: string;
  #uploads = new Map<string, Upload>();

  constructor(dir: string) {
    this.dir = dir;
  }

  /** The default cache directory: `$BPFD_CACHE_DIR`, else `$TMPDIR/bpfpack-bundles`. */
  static defaultDir(): string {
    const env = (k: string) => {
      try {
        return Deno.env.get(k);
      } catch {
        return undefined;
      }
    };
    return env("BPFD_CACHE_DIR") ?? `${env("TMPDIR") ?? "/tmp"}/bpfpack-bundles`;
  }

  static #hex(digest: string): string {
    const m = DIGEST.exec(digest);
    if (!m) {
      throw new SysError(
        22,
        `bad digest ${JSON.stringify(digest.slice(0, 80))}: want sha256:<64 hex>`,
      );
    }
    return m[1];
  }

  /**
   * The read-only directory of bundles shipped with the runtime:
   * `bundles/` next to the main module (`deno task compile --bundle` embeds
   * them there; the offline artifact may hold them in `lib/bundles/`).
   */
  static embeddedDir(): string | null {
    try {
      const u = new URL("bundles", Deno.mainModule);
      return u.protocol === "file:" ? decodeURIComponent(u.pathname) : null;
    } catch {
      return null;
    }
  }

  /** Path of a cached or embedded bundle with this digest, or null. */
  lookup(digest: string): string | null {
    const name = `${BundleStore.#hex(digest)}.tar`;
    for (const d of [this.dir, BundleStore.embeddedDir()]) {
      if (d === null) continue;
      try {
        if (Deno.statSync(`${d}/${name}`).isFile) return `${d}/${name}`;
      } catch { /* not there */ }
    }
    return null;
  }

  /** Starts (or restarts) an upload of `size` bytes. */
  begin(digest: string, size: number): void {
    BundleStore.#hex(digest);
    if (!Number.isInteger(size) || size <= 0 || size > MAX_UPLOAD) {
      throw new SysError(27, `bundle size ${size} must be 1..${MAX_UPLOAD} bytes`);
    }
    this.#uploads.set(digest, { size, parts: [], received: 0 });
  }

  /** Adds the chunk at `offset` (chunks must arrive in order); returns bytes received so far. */
  chunk(digest: string, offset: number, bytes: Uint8Array): number {
    const u = this.#uploads.get(digest);
    if (!u) throw new SysError(2, `no upload in progress for ${digest}: send BUNDLE_BEGIN first`);
    if (offset !== u.received) {
      throw new SysError(
        22,
        `chunk at offset ${offset}, expected ${u.received} (resend from there)`,
      );
    }
    if (u.received + bytes.length > u.size) {
      this.#uploads.delete(digest);
      throw new SysError(27, `upload exceeds its announced size ${u.size}; start again`);
    }
    u.parts.push(bytes);
    u.received += bytes.length;
    return u.received;
  }

  /** Completes an upload: checks size and digest, stores it; returns the path. */
  async end(digest: string): Promise<string> {
    const u = this.#uploads.get(digest);
    if (!u) throw new SysError(2, `no upload in progress for ${digest}: send BUNDLE_BEGIN first`);
    this.#uploads.delete(digest);
    if (u.received !== u.size) {
      throw new SysError(22, `upload incomplete: ${u.received} of ${u.size} bytes; start again`);
    }
    const all = new Uint8Array(u.size);
    let o = 0;
    for (const p of u.parts) {
      all.set(p, o);
      o += p.length;
    }
    const got = `sha256:${new Uint8Array(await crypto.subtle.digest("SHA-256", all)).toHex()}`;
    if (got !== digest) {
      throw new SysError(
        74,
        `upload digest mismatch: received ${got}, announced ${digest}; resend`,
      );
    }
    await Deno.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const path = `${this.dir}/${BundleStore.#hex(digest)}.tar`;
    const tmp = `${path}.${Deno.pid}.tmp`;
    await Deno.writeFile(tmp, all, { mode: 0o600 });
    await Deno.rename(tmp, path);
    return path;
  }

  /** Uploads in progress (for SESSION_FDS-style reporting). */
  get pending(): number {
    return this.#uploads.size;
  }
}
