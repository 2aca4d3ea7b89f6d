/**
 * Reader for `BPF_MAP_TYPE_RINGBUF` maps: the consumer page is mapped
 * read-write, the producer page and the (double-mapped) data area read-only.
 * Records never wrap thanks to the double mapping.
 *
 * @example
 * ```ts
 * import { RingBufReader } from "./ringbuf.ts";
 * const rb = RingBufReader.open(mapFd, 256 * 1024);
 * const { samples } = rb.drain();
 * rb.close();
 * ```
 * @module
 */

import { libc } from "./ffi.ts";
import { mmapShared, PAGE_SIZE, type Sample } from "./perf.ts";

const BUSY = 0x80000000;
const DISCARD = 0x40000000;
const HDR = 8;

/** Consumer side of one BPF ring buffer map. */
export class RingBufReader {
  /** The ring buffer map fd (also what is polled). */
  readonly fd: number;
  /** Records the producer discarded (`bpf_ringbuf_discard`), summed. */
  discarded = 0;
  #cons: { ptr: Deno.PointerValue; buf: ArrayBuffer };
  #prod: { ptr: Deno.PointerValue; buf: ArrayBuffer };
  #consPos: BigUint64Array;
  #prodPos: BigUint64Array;
  #data: Uint8Array;
  #mask: number;
  #size: number;
  #closed = false;

  private constructor(fd: number, size: number) {
    this.fd = fd;
    this.#size = size;
    this.#mask = size - 1;
    this.#cons = mmapShared(fd, PAGE_SIZE, true, 0);
    try {
      this.#prod = mmapShared(fd, PAGE_SIZE + 2 * size, false, PAGE_SIZE);
    } catch (e) {
      libc.munmap(this.#cons.ptr, BigInt(PAGE_SIZE));
      throw e;
    }
    this.#consPos = new BigUint64Array(this.#cons.buf, 0, 1);
    this.#prodPos = new BigUint64Array(this.#prod.buf, 0, 1);
    this.#data = new Uint8Array(this.#prod.buf, PAGE_SIZE, 2 * size);
  }

  /** Maps the ring of a RINGBUF map whose `max_entries` (data size) is `size`. */
  static open(mapFd: number, size: number): RingBufReader {
    return new RingBufReader(mapFd, size);
  }

  /** True when committed or busy records are waiting. */
  pending(): boolean {
    return Atomics.load(this.#prodPos, 0) !== Atomics.load(this.#consPos, 0);
  }

  /** Consumes every committed record, in order; stops at the first busy one. */
  drain(onSample?: (s: Sample) => void): { samples: Sample[]; lost: number } {
    const samples: Sample[] = [];
    let cons = Number(Atomics.load(this.#consPos, 0));
    const prod = Number(Atomics.load(this.#prodPos, 0)); // acquire
    while (cons < prod) {
      const off = cons & this.#mask;
      const len = Atomics.load(new Uint32Array(this.#prod.buf, PAGE_SIZE + off, 1), 0);
      if (len & BUSY) break;
      const n = len & ~(BUSY | DISCARD);
      if (len & DISCARD) this.discarded++;
      else {
        const s = { size: n, data: this.#data.slice(off + HDR, off + HDR + n) };
        if (onSample) onSample(s);
        else samples.push(s);
      }
      cons += (n + HDR + 7) & ~7;
      Atomics.store(this.#consPos, 0, BigInt(cons)); // release
    }
    return { samples, lost: 0 };
  }

  /** Unmaps the ring (the map fd itself belongs to the session). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc.munmap(this.#cons.ptr, BigInt(PAGE_SIZE));
    libc.munmap(this.#prod.ptr, BigInt(PAGE_SIZE + 2 * this.#size));
  }
}
