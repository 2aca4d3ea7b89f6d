/**
 * The runtime's stdio channel: synchronous FFI `read`/`write`/`poll` on fds
 * 0 and 1 (no event-loop wake-up per command), with waits cut into short
 * slices so signal handlers still run. Input is read into one reused buffer
 * that the line splitter scans in place; output can be queued so that the
 * responses to a pipelined batch of commands leave in one `write`.
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
import { frameBase64Into, framedBase64Size, LineSplitter } from "./protocol/framing.ts";

const POLLIN = 1;
const POLLERR = 8;
const POLLHUP = 16;
const EINTR = 4;
const EAGAIN = 11;
/** Longest a blocking wait lasts before the event loop gets a turn (ms). */
export const SLICE_MS = 200;

const encoder = new TextEncoder();
const NO_FDS: readonly number[] = [];

/** Lines in on fd 0, bytes out on fd 1 (and diagnostics on fd 2). */
export class Stdio {
  /** Splits input into lines. */
  readonly lines: LineSplitter = new LineSplitter();
  /** True once stdin reported end of file. */
  eof = false;
  /** Set when stdout is gone (EPIPE): the session must end. */
  broken = false;
  // The buffers handed to read/write/poll are large (so V8 never moves them)
  // and go to the kernel as pointers taken once: cheaper than typed arrays.
  #in = new Uint8Array(1 << 16);
  #inPtr = Deno.UnsafePointer.of(this.#in);
  #inSize = BigInt(this.#in.length);
  /** Queued output (encoded in place) and its length. */
  #out = new Uint8Array(1 << 16);
  #outPtr = Deno.UnsafePointer.of(this.#out);
  #outLen = 0;
  /** `struct pollfd` array for stdin plus the fds being waited for. */
  #pfd = new Uint8Array(8 * 64);
  #pfdPtr = Deno.UnsafePointer.of(this.#pfd);
  #pdv = new DataView(this.#pfd.buffer);
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
    const ready = new Set<number>();
    if (this.#poll(fds, ms) <= 0) return { ready, stdin: false };
    for (let i = 0; i < fds.length; i++) if (this.#readable(i + 1)) ready.add(fds[i]);
    return { ready, stdin: this.#readable(0) };
  }

  /** {@link wait} for stdin alone, allocation-free (the main loop's wait, once per request). */
  waitStdin(ms: number): boolean {
    return this.#poll(NO_FDS, ms) > 0 && this.#readable(0);
  }

  /** `poll(2)` on stdin (entry 0) and `fds` (entries 1…); the raw result. */
  #poll(fds: readonly number[], ms: number): number {
    const n = fds.length + 1;
    if (this.#pfd.length < n * 8) {
      this.#pfd = new Uint8Array(n * 8 * 2);
      this.#pfdPtr = Deno.UnsafePointer.of(this.#pfd);
      this.#pdv = new DataView(this.#pfd.buffer);
    }
    const dv = this.#pdv;
    for (let i = 0; i < n; i++) {
      dv.setInt32(i * 8, i === 0 ? this.#inFd : fds[i - 1], true);
      dv.setInt16(i * 8 + 4, POLLIN, true);
      dv.setInt16(i * 8 + 6, 0, true);
    }
    const nfds = n === 1 ? 1n : BigInt(n); // the main loop's case without a conversion
    return libc.pollPtr(this.#pfdPtr, nfds, Math.max(0, Math.floor(ms)));
  }

  /** Whether poll entry `i` reported data, EOF or hang-up. */
  #readable(i: number): boolean {
    return (this.#pdv.getInt16(i * 8 + 6, true) & (POLLIN | POLLERR | POLLHUP)) !== 0;
  }

  /**
   * Reads what stdin has (blocking only if it is readable); false on EOF. The
   * bytes go to {@link lines} without a copy: call this only once
   * `lines.next()` has returned null.
   */
  readSome(): boolean {
    while (true) {
      const n = Number(libc.readPtr(this.#inFd, this.#inPtr, this.#inSize));
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

  /** Writes what is queued, then all of `text`, to stdout; marks the channel broken on failure. */
  write(text: string): void {
    this.queue(text);
    this.flush();
  }

  /**
   * Queues `text` for stdout; {@link flush} sends everything queued in one
   * write. Text too large for the queue flushes it and goes out at once.
   */
  queue(text: string): void {
    // encodeInto must not run out of room: at most 3 UTF-8 bytes per UTF-16 unit.
    if (text.length * 3 > this.#out.length - this.#outLen) {
      this.flush();
      if (text.length * 3 > this.#out.length) {
        this.writeBytes(this.#outFd, encoder.encode(text));
        return;
      }
    }
    this.#outLen += encoder.encodeInto(text, this.#out.subarray(this.#outLen)).written;
  }

  /**
   * Queues the response whose body is the base64 of `bytes`, encoded
   * straight into the queue ({@link frameBase64Into}); false, with nothing
   * queued, when it cannot fit the queue (then queue it as text).
   */
  queueFramedBase64(bytes: Uint8Array): boolean {
    const size = framedBase64Size(bytes.length);
    if (size > this.#out.length - this.#outLen) {
      this.flush();
      if (size > this.#out.length) return false;
    }
    this.#outLen = frameBase64Into(bytes, this.#out, this.#outLen);
    return true;
  }

  /** Writes everything queued to stdout. */
  flush(): void {
    if (this.#outLen === 0) return;
    const n = this.#outLen;
    this.#outLen = 0;
    // Nearly always one write of it all; the rest (a partial write, EINTR,
    // EAGAIN, an error) goes through writeBytes.
    const done = Number(libc.writePtr(this.#outFd, this.#outPtr, BigInt(n)));
    if (done !== n) this.writeBytes(this.#outFd, this.#out.subarray(Math.max(done, 0), n));
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
