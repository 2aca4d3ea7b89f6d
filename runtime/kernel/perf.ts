/**
 * `perf_event_open(2)`, its ioctls, and the perf ring-buffer reader that
 * drains `PERF_RECORD_SAMPLE` (raw) and `PERF_RECORD_LOST` records with
 * acquire/release ordering on the head/tail words.
 *
 * @example
 * ```ts
 * import { PerfReader } from "./perf.ts";
 * const r = PerfReader.open(-1, 0, 8); // BPF output event on CPU 0, 8 data pages
 * const { samples, lost } = r.drain();
 * r.close();
 * ```
 * @module
 */

import { ARCH } from "./arch.ts";
import { arena, errno, libc, ptrValue } from "./ffi.ts";
import { errnoName, SysError } from "./errno.ts";

/** `enum perf_type_id`. */
export const PerfType = { HARDWARE: 0, SOFTWARE: 1, TRACEPOINT: 2 } as const;
const PERF_COUNT_SW_BPF_OUTPUT = 10;
const PERF_SAMPLE_RAW = 1 << 10;
const PERF_FLAG_FD_CLOEXEC = 8;
const PERF_RECORD_LOST = 2;
const PERF_RECORD_SAMPLE = 9;
const ATTR_SIZE = 112; // PERF_ATTR_SIZE_VER5: understood by every kernel with BPF events

/** ioctl requests (same encoding on x86_64 and arm64). */
export const PerfIoc = { ENABLE: 0x2400, DISABLE: 0x2401, SET_BPF: 0x40042408 } as const;

/** Fields of `struct perf_event_attr` the runtime sets. */
export interface PerfAttr {
  type: number;
  config: bigint | number;
  samplePeriod?: bigint | number;
  sampleFreq?: bigint | number;
  sampleType?: number;
  wakeupEvents?: number;
  disabled?: boolean;
  inherit?: boolean;
  /** `config1` (kprobe function / uprobe path pointer). */
  config1?: number;
  /** `config2` (probe offset). */
  config2?: bigint | number;
}

/** `perf_event_open(attr, pid, cpu, group_fd, FD_CLOEXEC)`; throws SysError. */
export function perfEventOpen(a: PerfAttr, pid: number, cpu: number, groupFd = -1): number {
  // Strings pointed to by config1 must already live in the arena: no reset here.
  const b = arena.alloc(ATTR_SIZE);
  const dv = b.dv;
  dv.setUint32(0, a.type, true);
  dv.setUint32(4, ATTR_SIZE, true);
  dv.setBigUint64(8, BigInt(a.config), true);
  const freq = a.sampleFreq !== undefined && BigInt(a.sampleFreq) !== 0n;
  dv.setBigUint64(16, BigInt(freq ? a.sampleFreq! : a.samplePeriod ?? 0), true);
  dv.setBigUint64(24, BigInt(a.sampleType ?? 0), true);
  let flags = 0n;
  if (a.disabled) flags |= 1n;
  if (a.inherit) flags |= 2n;
  if (freq) flags |= 1n << 10n;
  dv.setBigUint64(40, flags, true);
  dv.setUint32(48, a.wakeupEvents ?? 0, true);
  dv.setBigUint64(56, BigInt(a.config1 ?? 0), true);
  dv.setBigUint64(64, BigInt(a.config2 ?? 0), true);
  const fd = Number(
    libc.syscall(
      BigInt(ARCH.sys.perf_event_open),
      BigInt(b.ptr),
      BigInt(pid),
      BigInt(cpu),
      BigInt(groupFd),
      BigInt(PERF_FLAG_FD_CLOEXEC),
    ),
  );
  if (fd < 0) {
    const e = errno();
    throw new SysError(e, `perf_event_open: ${errnoName(e)}`);
  }
  return fd;
}

/** `ioctl(fd, req, arg)`; throws SysError. */
export function perfIoctl(fd: number, req: number, arg = 0): void {
  if (libc.ioctl(fd, BigInt(req), BigInt(arg)) < 0) {
    const e = errno();
    throw new SysError(e, `ioctl(${req.toString(16)}): ${errnoName(e)}`);
  }
}

/** Attaches a BPF program to a perf event fd and enables it. */
export function perfAttachBpf(perfFd: number, progFd: number): void {
  perfIoctl(perfFd, PerfIoc.SET_BPF, progFd);
  perfIoctl(perfFd, PerfIoc.ENABLE);
}

/** The system page size. */
export const PAGE_SIZE: number = Number(libc.sysconf(30 /* _SC_PAGESIZE */));

const MAP_FAILED = 0xffffffffffffffffn;

/** Maps `len` bytes of `fd` shared; returns the address and an ArrayBuffer over it. */
export function mmapShared(fd: number, len: number, writable: boolean, offset = 0) {
  const p = libc.mmap(null, BigInt(len), writable ? 3 : 1, 1, /* MAP_SHARED */ fd, BigInt(offset));
  const v = p === null ? 0n : BigInt(Deno.UnsafePointer.value(p));
  if (p === null || v === MAP_FAILED) {
    const e = errno();
    throw new SysError(e, `mmap: ${errnoName(e)}`);
  }
  return { ptr: p, addr: ptrValue(p), buf: Deno.UnsafePointerView.getArrayBuffer(p, len) };
}

/** One raw sample: the kernel's raw size and the bytes. */
export interface Sample {
  size: number;
  data: Uint8Array;
}

/**
 * A `PERF_COUNT_SW_BPF_OUTPUT` event for one (pid, cpu) with its mmapped ring,
 * the target of `bpf_perf_event_output` through a PERF_EVENT_ARRAY slot.
 */
export class PerfReader {
  /** The perf event fd. */
  readonly fd: number;
  /** CPU this reader is bound to. */
  readonly cpu: number;
  /** Data pages (a power of two). */
  readonly pages: number;
  /** Samples lost by the kernel on this ring, summed over its life. */
  lostTotal = 0;
  #ptr: Deno.PointerValue;
  #len: number;
  #u8: Uint8Array;
  #ctl: BigUint64Array;
  #dv: DataView;
  #dataOff: number;
  #dataSize: number;
  #closed = false;

  private constructor(fd: number, cpu: number, pages: number) {
    this.fd = fd;
    this.cpu = cpu;
    this.pages = pages;
    this.#len = (pages + 1) * PAGE_SIZE;
    const m = mmapShared(fd, this.#len, true);
    this.#ptr = m.ptr;
    this.#u8 = new Uint8Array(m.buf);
    this.#ctl = new BigUint64Array(m.buf, 0, PAGE_SIZE / 8);
    const dv = new DataView(m.buf);
    this.#dv = dv;
    this.#dataOff = Number(dv.getBigUint64(1040, true)) || PAGE_SIZE;
    this.#dataSize = Number(dv.getBigUint64(1048, true)) || pages * PAGE_SIZE;
  }

  /** Opens a reader; `pages` must be a power of two (EINVAL otherwise). */
  static open(pid: number, cpu: number, pages: number): PerfReader {
    if (!(pages > 0 && (pages & (pages - 1)) === 0)) {
      throw new SysError(22, `page count ${pages} is not a power of two`);
    }
    arena.reset();
    const fd = perfEventOpen(
      {
        type: PerfType.SOFTWARE,
        config: PERF_COUNT_SW_BPF_OUTPUT,
        samplePeriod: 1,
        sampleType: PERF_SAMPLE_RAW,
        wakeupEvents: 1,
        disabled: true,
      },
      pid,
      cpu,
    );
    try {
      const r = new PerfReader(fd, cpu, pages);
      perfIoctl(fd, PerfIoc.ENABLE);
      return r;
    } catch (e) {
      libc.close(fd);
      throw e;
    }
  }

  /** True when the ring holds unread records. */
  pending(): boolean {
    return Atomics.load(this.#ctl, 128) !== Atomics.load(this.#ctl, 129);
  }

  /**
   * Reads every complete record: raw samples in order, plus the number of
   * samples the kernel reported lost since the last drain.
   */
  drain(onSample?: (s: Sample) => void): { samples: Sample[]; lost: number } {
    const samples: Sample[] = [];
    let lost = 0;
    const head = Number(Atomics.load(this.#ctl, 128)); // acquire
    let tail = Number(this.#ctl[129]);
    const size = this.#dataSize;
    const base = this.#dataOff;
    const u8 = this.#u8;
    const dv = this.#dv;
    // Records are 8-byte aligned and the data area is a multiple of 8, so a record header and
    // a sample's u32 size never wrap; only the sample bytes may.
    const bytes = (pos: number, n: number, copy: boolean): Uint8Array => {
      const off = pos % size;
      if (off + n <= size) {
        return copy
          ? u8.slice(base + off, base + off + n)
          : u8.subarray(base + off, base + off + n);
      }
      const out = new Uint8Array(n);
      const first = size - off;
      out.set(u8.subarray(base + off, base + size));
      out.set(u8.subarray(base, base + n - first), first);
      return out;
    };
    while (tail < head) {
      const h = base + (tail % size);
      const type = dv.getUint32(h, true);
      const recSize = dv.getUint16(h + 6, true);
      if (recSize < 8) break; // corrupt; stop rather than spin
      if (type === PERF_RECORD_SAMPLE) {
        const rawSize = dv.getUint32(base + ((tail + 8) % size), true);
        // A view is enough for a callback (it runs before the tail moves on); kept samples copy.
        const s = { size: rawSize, data: bytes(tail + 12, rawSize, !onSample) };
        if (onSample) onSample(s);
        else samples.push(s);
      } else if (type === PERF_RECORD_LOST) {
        lost += Number(dv.getBigUint64(base + ((tail + 16) % size), true));
      }
      tail += recSize;
    }
    Atomics.store(this.#ctl, 129, BigInt(tail)); // release
    this.lostTotal += lost;
    return { samples, lost };
  }

  /** Disables the event, unmaps the ring and closes the fd (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc.ioctl(this.fd, BigInt(PerfIoc.DISABLE), 0n);
    libc.munmap(this.#ptr, BigInt(this.#len));
    libc.close(this.fd);
  }
}
