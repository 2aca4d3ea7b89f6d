/**
 * The session: every fd the runtime created for its client, what each one is,
 * and teardown. Clients can use, close or poll only fds listed here; the
 * runtime's own fds (stdin, stdout, Deno's) are never reachable.
 *
 * @example
 * ```ts
 * import { Session } from "./session.ts";
 * const s = new Session();
 * // s.add({ kind: "prog", fd, type: 5, name: "tp" });
 * s.teardown(); // detach, unmap, close everything, in dependency order
 * ```
 * @module
 */

import { libc } from "./kernel/ffi.ts";
import { SysError } from "./kernel/errno.ts";
import type { MapInfo } from "./kernel/bpf.ts";
import type { PerfReader } from "./kernel/perf.ts";
import type { RingBufReader } from "./kernel/ringbuf.ts";
import { type Attachment, detach } from "./kernel/probes.ts";

/** A map fd (with its kernel facts and, for RINGBUF maps, an open reader). */
export interface MapRes {
  kind: "map";
  fd: number;
  info: MapInfo;
  ring?: RingBufReader;
}
/** A program fd. */
export interface ProgRes {
  kind: "prog";
  fd: number;
  type: number;
  name: string;
}
/** A perf event fd that carries an attached program. */
export interface AttachRes {
  kind: "attachment";
  fd: number;
  att: Attachment;
  /** The client's event name (kprobe/uprobe) or `category:name` (tracepoint). */
  key: string;
}
/** A BPF output perf buffer reader. */
export interface ReaderRes {
  kind: "perf_reader";
  fd: number;
  reader: PerfReader;
}
/** A link or BTF object fd. */
export interface OtherRes {
  kind: "link" | "btf";
  fd: number;
  what: string;
}
/** Anything in the fd table. */
export type Resource = MapRes | ProgRes | AttachRes | ReaderRes | OtherRes;
/** The kinds. */
export type ResourceKind = Resource["kind"];

const TEARDOWN_ORDER: ResourceKind[] = ["attachment", "link", "perf_reader", "prog", "map", "btf"];

/** The fd table of one client session. */
export class Session {
  #fds = new Map<number, Resource>();
  /** Most fds a session may hold (EMFILE beyond). */
  readonly maxFds: number;
  /** Protocol level the client asked for with HELLO (1 = original). */
  protocol = 1;

  constructor(maxFds = 4096) {
    this.maxFds = maxFds;
  }

  /** Number of fds held. */
  get size(): number {
    return this.#fds.size;
  }

  /** Throws EMFILE when the session is full. */
  checkRoom(): void {
    if (this.#fds.size >= this.maxFds) {
      throw new SysError(
        24,
        `this session holds ${this.#fds.size} fds (limit ${this.maxFds}); close some with BPF_CLOSE_FD`,
      );
    }
  }

  /** Records a new resource. */
  add<R extends Resource>(r: R): R {
    this.#fds.set(r.fd, r);
    return r;
  }

  /** The resource at `fd` if it is of one of `kinds`; throws EBADF with a reason otherwise. */
  get<K extends ResourceKind>(fd: number, ...kinds: K[]): Extract<Resource, { kind: K }> {
    const r = this.#fds.get(fd);
    if (!r) {
      throw new SysError(
        9,
        `fd ${fd} was not created by this session` +
          (fd >= 0 && fd <= 2 ? " (it is the runtime's own stdio)" : ""),
      );
    }
    if (kinds.length && !kinds.includes(r.kind as K)) {
      throw new SysError(9, `fd ${fd} is a ${r.kind}, not one of: ${kinds.join(", ")}`);
    }
    return r as Extract<Resource, { kind: K }>;
  }

  /** The resource at `fd`, or undefined. */
  peek(fd: number): Resource | undefined {
    return this.#fds.get(fd);
  }

  /** Every resource (a snapshot). */
  list(): Resource[] {
    return [...this.#fds.values()];
  }

  /** Releases one fd of any kind (detaching, unmapping and removing probe events as needed). */
  close(fd: number): void {
    const r = this.get(fd);
    this.#fds.delete(fd);
    release(r);
  }

  /** Releases everything: attachments first, maps last. Returns how many fds were closed. */
  teardown(): number {
    let n = 0;
    for (const kind of TEARDOWN_ORDER) {
      for (const r of [...this.#fds.values()]) {
        if (r.kind !== kind) continue;
        this.#fds.delete(r.fd);
        try {
          release(r);
        } catch { /* keep going: everything must be released */ }
        n++;
      }
    }
    return n;
  }
}

function release(r: Resource): void {
  switch (r.kind) {
    case "attachment":
      detach(r.att);
      return;
    case "perf_reader":
      r.reader.close();
      return;
    case "map":
      r.ring?.close();
      libc.close(r.fd);
      return;
    default:
      libc.close(r.fd);
  }
}
