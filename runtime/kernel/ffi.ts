/**
 * libc over Deno FFI: the raw system calls the runtime needs, errno, and a
 * stable memory arena for structures whose addresses are handed to the kernel.
 *
 * Every call here is synchronous and runs on the JS thread, so `errno()` read
 * right after a failing call is that call's errno.
 *
 * @example
 * ```ts
 * import { libc, errno } from "./ffi.ts";
 * const fd = libc.close(-1);
 * console.log(fd, errno()); // -1 9
 * ```
 * @module
 */

import { ARCH } from "./arch.ts";

const SYMBOLS = {
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64", "i64"], result: "i64" },
  __errno_location: { parameters: [], result: "pointer" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // The same on a raw pointer: the stdio loop's buffers are stable, and a
  // pointer taken once is cheaper to pass than a typed array on every call.
  readPtr: { name: "read", parameters: ["i32", "pointer", "usize"], result: "isize" },
  writePtr: { name: "write", parameters: ["i32", "pointer", "usize"], result: "isize" },
  pollPtr: { name: "poll", parameters: ["pointer", "u64", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "u64"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "pointer"], result: "i32" },
  uname: { parameters: ["buffer"], result: "i32" },
  sysconf: { parameters: ["i32"], result: "i64" },
  getpid: { parameters: [], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

const lib = Deno.dlopen("libc.so.6", SYMBOLS);

/** The libc functions, bound once. */
export const libc = lib.symbols;

const errnoView = new Deno.UnsafePointerView(lib.symbols.__errno_location()!);

/** errno of the last failing call on this thread. */
export function errno(): number {
  return errnoView.getInt32();
}

/** A raw pointer value as a number (user-space addresses fit in 53 bits). */
export function ptrValue(p: Deno.PointerValue): number {
  return p === null ? 0 : Number(Deno.UnsafePointer.value(p));
}

/**
 * `syscall(2)` with up to five integer/pointer arguments; returns the result
 * (negative with errno set on failure).
 */
export function sys(nr: number, a = 0, b = 0, c = 0, d = 0, e = 0): number {
  return Number(libc.syscall(BigInt(nr), BigInt(a), BigInt(b), BigInt(c), BigInt(d), BigInt(e)));
}

const BIG_BPF = BigInt(ARCH.sys.bpf);

/** `bpf(2)`. */
export function bpf(cmd: number, attrPtr: number, size: number): number {
  return bpfBig(BigInt(cmd), BigInt(attrPtr), BigInt(size));
}

/**
 * `bpf(2)` with the arguments as bigints, for a caller that keeps them
 * precomputed (the element commands' hot path): no conversions per call.
 */
export function bpfBig(cmd: bigint, attrPtr: bigint, size: bigint): number {
  return Number(libc.syscall(BIG_BPF, cmd, attrPtr, size, 0n, 0n));
}

function chunk(size: number): { buf: Uint8Array; ptr: number } {
  const buf = new Uint8Array(Math.max(size, 4096));
  return { buf, ptr: ptrValue(Deno.UnsafePointer.of(buf)) };
}

/** A block of arena memory: the bytes and their stable address. */
export interface Block {
  readonly u8: Uint8Array;
  readonly dv: DataView;
  readonly ptr: number;
}

/**
 * Stable memory for the kernel: chunks larger than V8's on-heap typed-array
 * limit, so their addresses never move. A bump allocator that is reset per
 * operation; blocks stay valid until the next `reset()`.
 *
 * @example
 * ```ts
 * import { Arena } from "./ffi.ts";
 * const a = new Arena();
 * const attr = a.alloc(128); // zeroed, 8-byte aligned
 * attr.dv.setUint32(0, 1, true);
 * a.reset();
 * ```
 */
export class Arena {
  #chunks: { buf: Uint8Array; ptr: number }[] = [];
  #chunk = 0;
  #off = 0;
  #chunkSize: number;

  constructor(chunkSize = 1 << 16) {
    this.#chunkSize = chunkSize;
    this.#addChunk(chunkSize);
  }

  #addChunk(size: number) {
    this.#chunks.push(chunk(size));
  }

  /** Allocates `n` zeroed bytes, 8-byte aligned. */
  alloc(n: number): Block {
    const size = Math.max(8, (n + 7) & ~7);
    while (true) {
      const c = this.#chunks[this.#chunk];
      if (this.#off + size <= c.buf.length) {
        const u8 = c.buf.subarray(this.#off, this.#off + n);
        u8.fill(0);
        const blk = {
          u8,
          dv: new DataView(c.buf.buffer, c.buf.byteOffset + this.#off, Math.max(n, 0)),
          ptr: c.ptr + this.#off,
        };
        this.#off += size;
        return blk;
      }
      this.#chunk++;
      this.#off = 0;
      if (this.#chunk >= this.#chunks.length) this.#addChunk(Math.max(this.#chunkSize, size));
      else if (this.#chunks[this.#chunk].buf.length < size) this.#chunks[this.#chunk] = chunk(size);
    }
  }

  /** Copies bytes into the arena and returns their block. */
  copy(bytes: Uint8Array): Block {
    const b = this.alloc(bytes.length);
    b.u8.set(bytes);
    return b;
  }

  /** A NUL-terminated C string in the arena. */
  cstr(s: string): Block {
    const enc = new TextEncoder().encode(s);
    const b = this.alloc(enc.length + 1);
    b.u8.set(enc);
    return b;
  }

  /** Frees everything allocated since the last reset; drops oversized chunks. */
  reset() {
    this.#chunk = 0;
    this.#off = 0;
    if (this.#chunks.length > 4) this.#chunks.length = 4;
  }
}

/** The runtime's one arena (single-threaded use). */
export const arena: Arena = new Arena();
