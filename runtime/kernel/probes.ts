/**
 * Attaching BPF programs to kprobes, uprobes, tracepoints and perf events.
 * kprobes and uprobes go through the perf PMU (`/sys/bus/event_source/devices/
 * {kprobe,uprobe}`) and fall back to tracefs `kprobe_events`/`uprobe_events`;
 * a fallback event is removed again by {@link detach}.
 *
 * @example
 * ```ts
 * import { attachTracepoint, detach } from "./probes.ts";
 * const a = attachTracepoint(progFd, "syscalls", "sys_enter_openat");
 * detach(a);
 * ```
 * @module
 */

import { arena, libc } from "./ffi.ts";
import { errnoNumber, SysError } from "./errno.ts";
import { perfAttachBpf, perfEventOpen, PerfIoc, PerfType } from "./perf.ts";
import { eventId, tracefs } from "./tracefs.ts";

/** A live attachment: the perf event fd and, for the tracefs fallback, the event to remove. */
export interface Attachment {
  fd: number;
  kind: "kprobe" | "uprobe" | "tracepoint" | "perf_event";
  /** `group/event` created in kprobe_events/uprobe_events, removed on detach. */
  legacyEvent?: { file: string; name: string };
  /** Human description (`kprobe:do_sys_open`). */
  what: string;
}

const PMU_DIR = "/sys/bus/event_source/devices";

/** How kprobes/uprobes are created: PMU first (auto), PMU only, or tracefs events only. */
export type ProbeMode = "auto" | "pmu" | "tracefs";
let mode: ProbeMode = "auto";

/** Sets the probe mode for this process (bpfd `--probe-mode`). */
export function setProbeMode(m: ProbeMode): void {
  mode = m;
}
const GROUP = "bpfpack";

/** A dynamic-probe PMU: its perf type and the config bit that makes a return probe. */
export interface ProbePmu {
  type: number;
  retBit: number;
}

/** The kprobe or uprobe PMU, or null when the kernel has none. */
export function probePmu(kind: "kprobe" | "uprobe"): ProbePmu | null {
  try {
    const type = parseInt(Deno.readTextFileSync(`${PMU_DIR}/${kind}/type`).trim(), 10);
    let retBit = 0;
    try {
      const f = Deno.readTextFileSync(`${PMU_DIR}/${kind}/format/retprobe`).trim();
      const m = /config:(\d+)/.exec(f);
      if (m) retBit = parseInt(m[1], 10);
    } catch { /* default bit 0 */ }
    return Number.isFinite(type) ? { type, retBit } : null;
  } catch {
    return null;
  }
}

/** Whether `<tracefs>/<kind>_events` exists (the legacy interface). */
export function hasLegacyEvents(kind: "kprobe" | "uprobe"): boolean {
  try {
    return Deno.statSync(`${tracefs().path}/${kind}_events`).isFile;
  } catch {
    return false;
  }
}

function errnoOf(e: unknown, fallback = 22): number {
  const code = (e as { code?: string })?.code;
  return (code && errnoNumber(code)) || fallback;
}

function attachPerf(fd: number, progFd: number) {
  try {
    perfAttachBpf(fd, progFd);
  } catch (e) {
    libc.close(fd);
    throw e;
  }
}

/** A tracefs event name: letters, digits and `_` only. */
export function sanitizeEventName(s: string): string {
  return s.replace(/[^A-Za-z0-9_]/g, "_").slice(0, 60);
}

function legacyProbe(
  kind: "kprobe" | "uprobe",
  progFd: number,
  evName: string,
  spec: string,
  retprobe: boolean,
  what: string,
  pid = -1,
): Attachment {
  const root = tracefs().path;
  const file = `${root}/${kind}_events`;
  const name = `${sanitizeEventName(evName)}_${Deno.pid}`;
  try {
    Deno.writeTextFileSync(file, `${retprobe ? "r" : "p"}:${GROUP}/${name} ${spec}\n`, {
      append: true,
    });
  } catch (e) {
    throw new SysError(errnoOf(e), `${what}: writing ${file} failed: ${(e as Error).message}`);
  }
  const legacyEvent = { file, name: `${GROUP}/${name}` };
  try {
    arena.reset();
    const fd = perfEventOpen(
      { type: PerfType.TRACEPOINT, config: eventId(GROUP, name, root), samplePeriod: 1 },
      pid,
      pid === -1 ? 0 : -1,
    );
    attachPerf(fd, progFd);
    return { fd, kind, legacyEvent, what };
  } catch (e) {
    removeLegacyEvent(legacyEvent);
    throw e;
  }
}

/** Removes a tracefs probe event this process created; false if it could not. */
export function removeLegacyEvent(ev: { file: string; name: string }): boolean {
  try {
    Deno.writeTextFileSync(ev.file, `-:${ev.name}\n`, { append: true });
    return true;
  } catch {
    return false;
  }
}

/** What one dynamic probe needs, whichever way it is created. */
interface ProbeRequest {
  kind: "kprobe" | "uprobe";
  progFd: number;
  retprobe: boolean;
  evName: string;
  /** Function name (kprobe) or binary path (uprobe): the PMU's config1 string. */
  target: string;
  offset: bigint | number;
  pid: number;
  /** The probe as kprobe_events/uprobe_events spell it. */
  legacySpec: string;
  what: string;
}

/** Creates a probe through the PMU, else through tracefs, as `--probe-mode` allows. */
function attachProbe(r: ProbeRequest): Attachment {
  const pmu = mode === "tracefs" ? null : probePmu(r.kind);
  if (pmu) {
    arena.reset();
    const target = arena.cstr(r.target);
    const fd = perfEventOpen(
      {
        type: pmu.type,
        config: r.retprobe ? 1 << pmu.retBit : 0,
        config1: target.ptr,
        config2: r.offset,
        samplePeriod: 1,
      },
      r.pid,
      r.pid === -1 ? 0 : -1,
    );
    attachPerf(fd, r.progFd);
    return { fd, kind: r.kind, what: r.what };
  }
  if (mode === "pmu" || !hasLegacyEvents(r.kind)) {
    const plural = `${r.kind}s`;
    throw new SysError(
      95,
      mode === "auto"
        ? `${r.what}: ${plural} are not available on this kernel (no ${r.kind} PMU in ${PMU_DIR} ` +
          `and no ${r.kind}_events in tracefs; CONFIG_${r.kind.toUpperCase()}S is off)` +
          (r.kind === "kprobe" ? ": use a tracepoint instead" : "")
        : `${r.what}: no ${r.kind} ${mode === "pmu" ? "PMU" : `${r.kind}_events`} on this kernel ` +
          `and bpfd runs with --probe-mode ${mode}: try --probe-mode auto`,
    );
  }
  return legacyProbe(r.kind, r.progFd, r.evName, r.legacySpec, r.retprobe, r.what, r.pid);
}

/**
 * Attaches `progFd` to a kprobe (or kretprobe) on `fn`. `evName` names the
 * tracefs event on the fallback path.
 */
export function attachKprobe(
  progFd: number,
  fn: string,
  retprobe: boolean,
  evName: string,
  offset = 0,
): Attachment {
  return attachProbe({
    kind: "kprobe",
    progFd,
    retprobe,
    evName,
    target: fn,
    offset,
    pid: -1,
    legacySpec: offset ? `${fn}+${offset}` : fn,
    what: `${retprobe ? "kretprobe" : "kprobe"}:${fn}`,
  });
}

/** Attaches `progFd` to a uprobe at a file offset of `path`, for `pid` (-1: every process). */
export function attachUprobe(
  progFd: number,
  path: string,
  offset: bigint | number,
  retprobe: boolean,
  pid: number,
  evName: string,
): Attachment {
  const hex = `0x${BigInt(offset).toString(16)}`;
  const what = `${retprobe ? "uretprobe" : "uprobe"}:${path}:${hex}`;
  try {
    Deno.statSync(path);
  } catch {
    throw new SysError(2, `${what}: ${path} does not exist on the target`);
  }
  return attachProbe({
    kind: "uprobe",
    progFd,
    retprobe,
    evName,
    target: path,
    offset,
    pid,
    legacySpec: `${path}:${hex}`,
    what,
  });
}

/** Attaches `progFd` to tracepoint `category:name` (perf event on CPU 0, all processes). */
export function attachTracepoint(progFd: number, category: string, name: string): Attachment {
  const id = eventId(category, name);
  arena.reset();
  const fd = perfEventOpen({ type: PerfType.TRACEPOINT, config: id, samplePeriod: 1 }, -1, 0);
  attachPerf(fd, progFd);
  return { fd, kind: "tracepoint", what: `tracepoint:${category}:${name}` };
}

/** Parameters of a sampling perf event (BCC's `bpf_attach_perf_event`). */
export interface PerfEventSpec {
  type: number;
  config: number;
  samplePeriod: bigint;
  sampleFreq: bigint;
  pid: number;
  cpu: number;
  groupFd: number;
}

/** Opens a sampling perf event and attaches `progFd`; exactly one of period/freq must be set. */
export function attachPerfEvent(progFd: number, s: PerfEventSpec): Attachment {
  if ((s.samplePeriod === 0n) === (s.sampleFreq === 0n)) {
    throw new SysError(22, "exactly one of sample_period / sample_freq must be non-zero");
  }
  arena.reset();
  const fd = perfEventOpen(
    {
      type: s.type,
      config: s.config,
      samplePeriod: s.samplePeriod,
      sampleFreq: s.sampleFreq,
      inherit: s.pid > 0,
    },
    s.pid,
    s.cpu,
    s.groupFd,
  );
  attachPerf(fd, progFd);
  return { fd, kind: "perf_event", what: `perf_event:${s.type}:${s.config}:cpu${s.cpu}` };
}

/** Disables and closes an attachment and removes its tracefs event, if any. */
export function detach(a: Attachment): void {
  libc.ioctl(a.fd, BigInt(PerfIoc.DISABLE), 0n);
  libc.close(a.fd);
  if (a.legacyEvent) removeLegacyEvent(a.legacyEvent);
}
