/**
 * Tool bundles for the VM lab's kernels, built with the compiler's CLI exactly as a user builds
 * them (`deno task build --kernel debian:<series>:<arch> --mode headers,core`) into
 * `.cache/vm/bundles/<arch>-<series>/`. The compiler caches objects by input digest, so a warm
 * build only rewrites the bundles (well under a second).
 *
 * @example
 * ```ts
 * import { vmBundles } from "./bundles.ts";
 * const b = await vmBundles("aarch64", "6.1");
 * console.log(b.release, b.tar("execsnoop"));
 * ```
 * @module
 */

import type { VmArch, VmSeries } from "./kernel_assets.ts";
import { repoRoot, vmCacheDir } from "./runtime_assets.ts";

/** The tools the VM tests load. */
export const VM_TOOLS = ["opensnoop", "execsnoop", "funccount"] as const;

/** Bundles built for one kernel. */
export interface VmBundles {
  /** The output directory. */
  dir: string;
  /** `uname -r` the headers objects were built for. */
  release: string;
  /** Objects per tool: `<arch>/<mode>` → object file name. */
  objects: Map<string, string[]>;
  /** The `.oci.tar` of a tool. */
  tar(tool: string): string;
  /** How long the build took, in ms. */
  ms: number;
}

interface BuildJson {
  objects: { tool: string; arch: string; mode: string; release: string; name: string }[];
}

const built = new Map<string, Promise<VmBundles>>();

/**
 * Builds (once per process) the {@link VM_TOOLS} bundles for Debian `series` on `arch`, in
 * headers and core modes. Throws with the compiler's diagnostics.
 *
 * @example
 * ```ts
 * import { vmBundles } from "./bundles.ts";
 * const b = await vmBundles("x86_64", "6.12");
 * console.log(b.objects.get("opensnoop")); // ["x86_64/headers", "x86_64/core"]
 * ```
 */
export function vmBundles(arch: VmArch, series: VmSeries): Promise<VmBundles> {
  const key = `${arch}-${series}`;
  let p = built.get(key);
  if (!p) {
    p = build(arch, series);
    built.set(key, p);
    p.catch(() => built.delete(key));
  }
  return p;
}

async function build(arch: VmArch, series: VmSeries): Promise<VmBundles> {
  const dir = `${vmCacheDir()}/bundles/${arch}-${series}`;
  const t0 = performance.now();
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${repoRoot()}/compiler/main.ts`,
      "--kernel",
      `debian:${series}:${arch}`,
      "--mode",
      "headers,core",
      "--tool",
      VM_TOOLS.join(","),
      "--out",
      dir,
      "--json",
      "--quiet",
    ],
    cwd: repoRoot(),
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success) {
    throw new Error(
      `building ${VM_TOOLS.join(", ")} for debian:${series}:${arch} failed ` +
        `(deno task build --kernel debian:${series}:${arch} --mode headers,core):\n` +
        new TextDecoder().decode(r.stderr).trim().split("\n").slice(-30).join("\n"),
    );
  }
  const json = JSON.parse(new TextDecoder().decode(r.stdout)) as BuildJson;
  const objects = new Map<string, string[]>();
  for (const o of json.objects) {
    objects.set(o.tool, [...objects.get(o.tool) ?? [], `${o.arch}/${o.mode}`]);
  }
  const releases = new Set(json.objects.map((o) => o.release));
  if (releases.size !== 1) {
    throw new Error(`debian:${series}:${arch} built for several releases: ${[...releases]}`);
  }
  return {
    dir,
    release: [...releases][0],
    objects,
    tar: (tool) => `${dir}/${tool}.oci.tar`,
    ms: performance.now() - t0,
  };
}
