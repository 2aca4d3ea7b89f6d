/**
 * Facts about the machine the runtime runs on: `uname`, CPU lists, page size,
 * BTF, and which BPF features the kernel has (probed once, cached).
 *
 * @example
 * ```ts
 * import { targetFacts } from "./target.ts";
 * const t = targetFacts();
 * console.log(t.release, t.machine, t.possibleCpus);
 * ```
 * @module
 */

import { libc } from "./ffi.ts";
import { listIds, mapCreate, MapType, probeBatchOps } from "./bpf.ts";
import { PAGE_SIZE } from "./perf.ts";
import { hasLegacyEvents, probePmu } from "./probes.ts";

/** `uname(2)`: sysname, release, version, machine. */
export function uname(): { sysname: string; release: string; version: string; machine: string } {
  const buf = new Uint8Array(65 * 6);
  libc.uname(buf);
  const field = (i: number) => {
    const f = buf.subarray(i * 65, (i + 1) * 65);
    const end = f.indexOf(0);
    return new TextDecoder().decode(end < 0 ? f : f.subarray(0, end));
  };
  return { sysname: field(0), release: field(2), version: field(3), machine: field(4) };
}

/** Parses a kernel CPU list such as `0-3,5,7-8` into CPU numbers. */
export function parseCpuList(text: string): number[] {
  const out: number[] = [];
  for (const part of text.trim().split(",")) {
    if (!part) continue;
    const [lo, hi] = part.split("-").map((x) => parseInt(x, 10));
    if (!Number.isFinite(lo)) continue;
    for (let c = lo; c <= (Number.isFinite(hi) ? hi : lo); c++) out.push(c);
  }
  return out;
}

function readList(name: string): { text: string; cpus: number[] } {
  try {
    const text = Deno.readTextFileSync(`/sys/devices/system/cpu/${name}`).trim();
    return { text, cpus: parseCpuList(text) };
  } catch {
    return { text: "0", cpus: [0] };
  }
}

/** Possible CPUs (what per-CPU map values are sized by). */
export function possibleCpus(): { text: string; cpus: number[] } {
  return readList("possible");
}

/** Online CPUs (where perf buffers can be opened). */
export function onlineCpus(): { text: string; cpus: number[] } {
  return readList("online");
}

/** What HELLO reports. */
export interface TargetFacts {
  release: string;
  version: string;
  machine: string;
  possibleCpus: string;
  onlineCpus: string;
  nPossible: number;
  pageSize: number;
  btf: boolean;
  kprobePmu: boolean;
  uprobePmu: boolean;
  kprobeEvents: boolean;
  uprobeEvents: boolean;
  ringbuf: boolean;
  batchOps: boolean;
  linkApi: boolean;
}

let facts: TargetFacts | null = null;

function probeRingbuf(): boolean {
  try {
    libc.close(
      mapCreate({ type: MapType.RINGBUF, keySize: 0, valueSize: 0, maxEntries: PAGE_SIZE }),
    );
    return true;
  } catch {
    return false;
  }
}

function probeLinkApi(): boolean {
  try {
    listIds("link");
    return true;
  } catch {
    return false;
  }
}

function safe(f: () => boolean): boolean {
  try {
    return f();
  } catch {
    return false;
  }
}

/** Target facts, probed on first use. */
export function targetFacts(): TargetFacts {
  if (facts) return facts;
  const u = uname();
  const pos = possibleCpus();
  let btf = false;
  try {
    btf = Deno.statSync("/sys/kernel/btf/vmlinux").isFile;
  } catch { /* no BTF */ }
  facts = {
    release: u.release,
    version: u.version,
    machine: u.machine,
    possibleCpus: pos.text,
    onlineCpus: onlineCpus().text,
    nPossible: pos.cpus.length,
    pageSize: PAGE_SIZE,
    btf,
    kprobePmu: probePmu("kprobe") !== null,
    uprobePmu: probePmu("uprobe") !== null,
    kprobeEvents: safe(() => hasLegacyEvents("kprobe")),
    uprobeEvents: safe(() => hasLegacyEvents("uprobe")),
    ringbuf: probeRingbuf(),
    batchOps: probeBatchOps(),
    linkApi: probeLinkApi(),
  };
  return facts;
}

/** Raises RLIMIT_MEMLOCK to infinity (needed for BPF on kernels before 5.11); best effort. */
export function raiseMemlock(): void {
  const r = new Uint8Array(128);
  r.fill(0xff, 0, 16);
  libc.setrlimit(8, /* RLIMIT_MEMLOCK */ r);
}
