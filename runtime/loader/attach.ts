/**
 * Attaching a loaded program where its section says: tracepoints and
 * kprobes/uprobes through perf events (`runtime/kernel/probes.ts`), raw
 * tracepoints and BTF tracing programs (tp_btf, fentry, fexit) through
 * `BPF_RAW_TRACEPOINT_OPEN`. The result carries the fd for the caller's
 * session to own.
 *
 * @example
 * ```ts
 * import { parseObjectFile } from "../../artifacts/bpf_object.ts";
 * import { loadObject } from "./load.ts";
 * import { attachProgram, detachProgram } from "./attach.ts";
 * const obj = loadObject(parseObjectFile("opensnoop.bpf.o"));
 * const a = attachProgram(obj.programs.handle_openat);
 * detachProgram(a);
 * ```
 * @module
 */

import { rawTracepointOpen, rawTracepointOpenBtf } from "../kernel/bpf.ts";
import { SysError } from "../kernel/errno.ts";
import { libc } from "../kernel/ffi.ts";
import {
  attachKprobe,
  type Attachment,
  attachPerfEvent,
  attachTracepoint,
  attachUprobe,
  detach,
  type PerfEventSpec,
} from "../kernel/probes.ts";
import { symbolFileOffset } from "../symbols/usym.ts";
import type { LoadedProgram } from "./load.ts";
import { type AttachPoint, programTypeOf } from "../../artifacts/bpf_object.ts";

/**
 * Options of {@link attachProgram}.
 *
 * @example
 * ```ts
 * import type { AttachOptions } from "./attach.ts";
 * const o: AttachOptions = { target: "/usr/bin/bash:readline", pid: 1234 };
 * ```
 */
export interface AttachOptions {
  /**
   * The target when the section has none or to override it, written as after
   * the section prefix: `syscalls/sys_enter_openat` (tracepoint), `sys_enter`
   * (raw tracepoint), `do_sys_open[+off]` (kprobe), `<binary>:<symbol>[+off]`
   * or `<binary>:0x<offset>` (uprobe).
   */
  readonly target?: string;
  /** uprobes: only this process (default -1, every process). */
  readonly pid?: number;
  /** perf_event programs: the sampling event to open (per CPU; see probes.ts). */
  readonly perfEvent?: PerfEventSpec;
}

/**
 * A live attachment: a perf event fd (tracepoint, kprobe, uprobe, perf_event)
 * with its {@link Attachment}, or a BPF link fd (raw tracepoint, tp_btf,
 * fentry, fexit).
 *
 * @example
 * ```ts
 * import type { AttachedProgram } from "./attach.ts";
 * const describe = (a: AttachedProgram) => `${a.program} → ${a.what} (fd ${a.fd})`;
 * ```
 */
export interface AttachedProgram {
  readonly program: string;
  readonly kind: "perf_event" | "link";
  readonly fd: number;
  /** `tracepoint:syscalls:sys_enter_openat`, `raw_tracepoint:sys_enter`, … */
  readonly what: string;
  /** The perf-event attachment (null for links). */
  readonly attachment: Attachment | null;
}

const LIB_DIRS = (() => {
  const triple = Deno.build.arch === "aarch64" ? "aarch64-linux-gnu" : "x86_64-linux-gnu";
  return [`/lib/${triple}`, `/usr/lib/${triple}`, "/lib64", "/usr/lib64", "/lib", "/usr/lib"];
})();

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Resolves a uprobe binary: a path as is, a bare name through the library dirs and PATH. */
function resolveBinary(binary: string, where: string): string {
  if (binary.includes("/")) {
    if (!exists(binary)) {
      throw new SysError(2, `${where}: ${binary} does not exist; give the binary's full path`);
    }
    return binary;
  }
  const path = (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":").filter(Boolean);
  const dirs = binary.includes(".so") ? LIB_DIRS : [...path, ...LIB_DIRS];
  for (const d of dirs) if (exists(`${d}/${binary}`)) return `${d}/${binary}`;
  throw new SysError(
    2,
    `${where}: cannot find ${binary} in ${dirs.join(", ")}; give the binary's full path`,
  );
}

function prefixOf(a: AttachPoint): string | null {
  switch (a.kind) {
    case "tracepoint":
    case "raw_tracepoint":
      return a.kind;
    case "kprobe":
      return a.retprobe ? "kretprobe" : "kprobe";
    case "uprobe":
      return a.retprobe ? "uretprobe" : "uprobe";
    default:
      return null;
  }
}

/**
 * Attaches `prog` according to its section (or `options.target`). Throws
 * {@link SysError} with a message naming the program and what to do.
 *
 * @example
 * ```ts
 * import { parseObjectFile } from "../../artifacts/bpf_object.ts";
 * import { loadObject } from "./load.ts";
 * import { attachProgram } from "./attach.ts";
 * const obj = loadObject(parseObjectFile("bashreadline.bpf.o"));
 * const a = attachProgram(obj.programs.printret, { target: "/usr/bin/bash:readline" });
 * console.log(a.what, a.fd);
 * ```
 */
export function attachProgram(prog: LoadedProgram, options: AttachOptions = {}): AttachedProgram {
  const where = `program ${JSON.stringify(prog.name)} (section ${JSON.stringify(prog.section)})`;
  let a = prog.attach;
  if (options.target !== undefined) {
    const prefix = prefixOf(a);
    if (!prefix) {
      throw new SysError(
        22,
        `${where}: a ${a.kind} program's target is fixed by its section; drop the target option`,
      );
    }
    try {
      a = programTypeOf(`${prefix}/${options.target}`)!.attach;
    } catch (e) {
      throw new SysError(22, `${where}: bad target: ${(e as Error).message}`);
    }
  }
  const perf = (att: Attachment): AttachedProgram => ({
    program: prog.name,
    kind: "perf_event",
    fd: att.fd,
    what: att.what,
    attachment: att,
  });
  const link = (fd: number, what: string): AttachedProgram => ({
    program: prog.name,
    kind: "link",
    fd,
    what,
    attachment: null,
  });
  const need = (what: string): never => {
    throw new SysError(
      22,
      `${where}: the section names no ${what}; pass options.target (e.g. ${
        a.kind === "uprobe"
          ? "/usr/bin/bash:readline"
          : a.kind === "kprobe"
          ? "do_sys_openat2"
          : a.kind === "raw_tracepoint"
          ? "sys_enter"
          : "syscalls/sys_enter_openat"
      })`,
    );
  };
  try {
    switch (a.kind) {
      case "tracepoint":
        if (!a.category || !a.name) return need("tracepoint");
        return perf(attachTracepoint(prog.fd, a.category, a.name));
      case "raw_tracepoint":
        if (!a.name) return need("raw tracepoint");
        return link(rawTracepointOpen(prog.fd, a.name), `raw_tracepoint:${a.name}`);
      case "kprobe":
        if (!a.function) return need("kernel function");
        return perf(
          attachKprobe(
            prog.fd,
            a.function,
            a.retprobe,
            `${a.retprobe ? "r" : "p"}_${a.function}`,
            a.offset,
          ),
        );
      case "uprobe": {
        if (!a.binary) return need("binary and symbol");
        const path = resolveBinary(a.binary, where);
        let offset = a.offset;
        if (a.symbol) {
          const base = symbolFileOffset(path, a.symbol);
          if (base === null) {
            throw new SysError(
              2,
              `${where}: ${path} has no symbol ${a.symbol}; check with nm -D ${path}`,
            );
          }
          offset += base;
        }
        return perf(
          attachUprobe(
            prog.fd,
            path,
            offset,
            a.retprobe,
            options.pid ?? -1,
            `${a.retprobe ? "r" : "p"}_${a.symbol ?? "off"}`,
          ),
        );
      }
      case "tp_btf":
      case "fentry":
      case "fexit":
        return link(rawTracepointOpenBtf(prog.fd), `${a.kind}:${a.target ?? "?"}`);
      case "perf_event":
        if (!options.perfEvent) {
          throw new SysError(
            22,
            `${where}: perf_event programs need explicit event parameters (type, config, ` +
              "sample period or frequency, CPU); pass options.perfEvent, once per CPU",
          );
        }
        return perf(attachPerfEvent(prog.fd, options.perfEvent));
      case "none":
        throw new SysError(
          22,
          `${where}: this program type is not attached to a trace point; attach it yourself ` +
            "(socket: SO_ATTACH_BPF; xdp/tc: netlink)",
        );
    }
  } catch (e) {
    if (!(e instanceof SysError) || e.message.startsWith(where)) throw e;
    const hint = e.errno === 13 && a.kind !== "raw_tracepoint"
      ? "; the kernel refused the program for this event: it reads past this event's " +
        "context (a tracepoint with another format?) or its type does not fit the event"
      : "";
    throw new SysError(e.errno, `${where}: ${e.message}${hint}`);
  }
}

/**
 * Undoes {@link attachProgram}: disables and closes a perf event (removing a
 * tracefs probe it created) or closes a link.
 *
 * @example
 * ```ts
 * import { attachProgram, detachProgram } from "./attach.ts";
 * import type { LoadedProgram } from "./load.ts";
 * declare const prog: LoadedProgram;
 * detachProgram(attachProgram(prog));
 * ```
 */
export function detachProgram(a: AttachedProgram): void {
  if (a.attachment) detach(a.attachment);
  else libc.close(a.fd);
}
