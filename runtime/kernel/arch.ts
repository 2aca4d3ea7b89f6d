/**
 * Per-architecture facts: system call numbers that differ between x86_64 and
 * arm64 (everything else the runtime uses goes through libc by name).
 *
 * @example
 * ```ts
 * import { ARCH } from "./arch.ts";
 * console.log(ARCH.name, ARCH.sys.bpf); // "x86_64" 321
 * ```
 * @module
 */

/** What the runtime needs to know about one architecture. */
export interface ArchInfo {
  /** `uname -m` spelling. */
  readonly name: "x86_64" | "aarch64";
  /** Syscall numbers. */
  readonly sys: { readonly bpf: number; readonly perf_event_open: number };
}

/** The table; adding an architecture is one entry. */
export const ARCHES: Readonly<Record<string, ArchInfo>> = {
  x86_64: { name: "x86_64", sys: { bpf: 321, perf_event_open: 298 } },
  aarch64: { name: "aarch64", sys: { bpf: 280, perf_event_open: 241 } },
};

function current(): ArchInfo {
  const a = ARCHES[Deno.build.arch];
  if (!a) throw new Error(`bpfd: unsupported architecture ${Deno.build.arch}; add it to ARCHES`);
  return a;
}

/** The architecture this runtime runs on. */
export const ARCH: ArchInfo = current();
