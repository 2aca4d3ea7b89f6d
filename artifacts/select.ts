/**
 * Choosing the object of a bundle that fits a target: the same architecture,
 * and either a `headers` object built for exactly the running release or a
 * `core` object on a kernel with BTF. Pure, so host tools can predict what a
 * device will load.
 *
 * @example
 * ```ts
 * import { selectObject } from "./select.ts";
 * const r = selectObject(manifest, { machine: "aarch64", release: "6.1.0-28-cloud-arm64", btf: true });
 * if (r.ok) console.log(r.object.name);
 * else console.log(r.reason);
 * ```
 * @module
 */

import type { Manifest, ObjectEntry } from "./manifest.ts";

/** What the runtime knows about the kernel it runs on. */
export interface TargetKernel {
  /** `uname -m`. */
  machine: string;
  /** `uname -r`. */
  release: string;
  /** `/sys/kernel/btf/vmlinux` exists. */
  btf: boolean;
}

/** Preference between the two modes when both fit. */
export type ModePreference = "auto" | "headers" | "core";

/** The choice, or why nothing fits (naming what the bundle does contain). */
export type Selection =
  | { ok: true; object: ObjectEntry; why: string }
  | { ok: false; reason: string };

/** `uname -m` spellings of the same architecture. */
const ALIASES: Record<string, string> = { arm64: "aarch64", amd64: "x86_64" };

/** One line per object: `x86_64 core (BTF of 6.18.0)`, `aarch64 headers 6.1.0-28-cloud-arm64`. */
export function describeObjects(m: Manifest): string {
  return m.objects.map((o) =>
    o.mode === "core" ? `${o.arch} core` : `${o.arch} headers ${o.kernel.release}`
  ).join(", ");
}

/**
 * Picks the object for `t`: an exact-release `headers` object first (it was
 * built for this very kernel), else a `core` object if the kernel has BTF.
 * `prefer` restricts the mode.
 */
export function selectObject(
  m: Manifest,
  t: TargetKernel,
  prefer: ModePreference = "auto",
): Selection {
  const arch = ALIASES[t.machine] ?? t.machine;
  const sameArch = m.objects.filter((o) => o.arch === arch);
  const contents = `bundle ${m.tool.name} ${m.tool.version} contains: ${describeObjects(m)}`;
  if (sameArch.length === 0) {
    return { ok: false, reason: `no object for architecture ${arch}; ${contents}` };
  }
  const headers = sameArch.find((o) => o.mode === "headers" && o.kernel.release === t.release);
  const core = sameArch.find((o) => o.mode === "core");
  if (prefer !== "core" && headers) {
    return { ok: true, object: headers, why: `headers object built for ${t.release}` };
  }
  if (prefer !== "headers" && core) {
    if (t.btf) return { ok: true, object: core, why: "core object (kernel has BTF)" };
    if (prefer === "core" || !headers) {
      return {
        ok: false,
        reason: `the core object needs kernel BTF (/sys/kernel/btf/vmlinux) and this kernel ` +
          `${t.release} has none, and no headers object was built for it; ${contents}`,
      };
    }
  }
  const wanted = prefer === "auto" ? "" : ` ${prefer}`;
  return {
    ok: false,
    reason: `no${wanted} object for kernel ${t.release} (${arch}); ${contents}; build one with ` +
      `deno task build --kernel ...`,
  };
}
