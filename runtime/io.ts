/**
 * The runtime's stdio channel: synchronous FFI `read`/`write`/`poll` on fds
 * 0 and 1 (no event-loop wake-up per command), with waits cut into short
 * slices so signal handlers still run.
 *
 * @example
 * ```ts
 * import { Stdio } from "./io.ts";
 * const io = new Stdio();
 * io.write("STARTED_BPFD\n");
 * ```
 * @module
 */

import { errno, libc } from "./kernel/ffi.ts";
import { LineSplitter } from "./protocol/framing.ts";

const POLLIN = 1;
const POLLERR = 8;
const POLLHUP = 16;
const EINTR = 4;
const EAGAIN = 11;
/** Longest a blocking wait lasts before the event loop gets a turn (ms). */
export const SLICE_MS = 200;

const encoder = new TextEncoder();

/** Lines in on fd 0, bytes out on fd 1 (and diagnostics on fd 2). */
export class Stdio {
  /** Splits input into lines. */
  readonly lines: LineSplitter = new LineSplitter();
  /** True once stdin reported end of file. */
  eof = false;
  /** Set when stdout is gone (EPIPE): the session must end. */
  broken = false;
  #in = new Uint8Array(1 << 16);
  #pfd = new Uint8Array(8 * 64);
  #inFd: number;
  #outFd: number;

  constructor(inFd = 0, outFd = 1) {
    this.#inFd = inFd;
    this.#outFd = outFd;
  }

  /**
   * Waits up to `ms` for stdin and `fds`; returns which fds are readable and
   * whether stdin is (data, EOF or hang-up all count).
   */
  wait(fds: readonly number[], ms: number): { ready: Set<number>; stdin: boolean } {
    const n = fds.length + 1;
    if (this.#pfd.length < n * 8) this.#pfd = new Uint8Array(n * 8 * 2);
    const dv = new DataView(this.#pfd.buffer);
    dv.setInt32(0, this.#inFd, true);
    dv.setInt16(4, POLLIN, true);
    dv.setInt16(6, 0, true);
    for (let i = 0; i < fds.length; i++) {
      dv.setInt32((i + 1) * 8, fds[i], true);
      dv.setInt16((i + 1) * 8 + 4, POLLIN, true);
      dv.setInt16((i + 1) * 8 + 6, 0, true);
    }
    const r = libc.poll(this.#pfd, BigInt(n), Math.max(0, Math.floor(ms)));
    const ready = new Set<number>();
    if (r <= 0) return { ready, stdin: false };
    for (let i = 0; i < fds.length; i++) {
      if (dv.getInt16((i + 1) * 8 + 6, true) & (POLLIN | POLLERR | POLLHUP)) ready.add(fds[i]);
    }
    return { ready, stdin: (dv.getInt16(6, true) & (POLLIN | POLLERR | POLLHUP)) !== 0 };
  }

  /** Reads what stdin has (blocking only if it is readable); false on EOF. */
  readSome(): boolean {
    while (true) {
      const n = Number(libc.read(this.#inFd, this.#in, BigInt(this.#in.length)));
      if (n > 0) {
        this.lines.push(this.#in.subarray(0, n));
        return true;
      }
      if (n === 0) {
        this.eof = true;
        return false;
      }
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return true;
      this.eof = true;
      return false;
    }
  }

  /** Writes all of `text` to stdout; marks the channel broken on failure. */
  write(text: string): void {
    this.writeBytes(this.#outFd, encoder.encode(text));
  }

  /** Writes a diagnostic line to stderr (best effort). */
  warn(text: string): void {
    try {
      this.writeBytes(2, encoder.encode(text.endsWith("\n") ? text : text + "\n"), true);
    } catch { /* stderr gone: nothing to do */ }
  }

  /** Writes all bytes to `fd`, retrying partial writes and waiting out EAGAIN. */
  writeBytes(fd: number, bytes: Uint8Array, quiet = false): void {
    let off = 0;
    while (off < bytes.length) {
      const chunk = off === 0 ? bytes : bytes.subarray(off);
      const n = Number(libc.write(fd, chunk, BigInt(chunk.length)));
      if (n > 0) {
        off += n;
        continue;
      }
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) {
        const p = new Uint8Array(8 * 9);
        const dv = new DataView(p.buffer);
        dv.setInt32(0, fd, true);
        dv.setInt16(4, 4, /* POLLOUT */ true);
        libc.poll(p, 1n, 1000);
        continue;
      }
      if (!quiet) this.broken = true;
      return;
    }
  }
}
