/**
 * Kernel inputs for the compiler stage: for each kernel of a build matrix, a
 * header tree (headers mode, BCC-style) and/or BTF + `vmlinux.h` (core mode,
 * CO-RE) for one architecture, with the facts a bundle manifest pins (release,
 * `uname -v`, `LINUX_VERSION_CODE`, Debian ABI and packages) and deterministic
 * digests of what the compiler reads.
 *
 * Sources: Debian's current cloud kernels of bookworm (6.1) and
 * bookworm-backports (6.12) downloaded through a private apt state; a local
 * build tree; a BTF file (raw, vmlinux or vmlinuz); the running kernel.
 * Everything derived is cached under `.cache/kernels/` (see {@link
 * defaultCacheDir}); complete entries are reused without network access.
 *
 * @example
 * ```ts
 * import { resolveKernel } from "./mod.ts";
 * const k = await resolveKernel({ kind: "debian", series: "6.1", arch: "aarch64" }, {
 *   want: ["headers", "btf"],
 *   onProgress: (m) => console.error(m),
 * });
 * console.log(k.release, k.versionCode, k.headers?.digest, k.btf?.vmlinuxH);
 * ```
 * @module
 */

import { type ArchiveProbe, probeDebianArchive as probeArchive } from "./apt.ts";
import { archInfo } from "./arch.ts";
import { resolveDebian } from "./debian.ts";
import { KernelInputError } from "./errors.ts";
import { absolute } from "./fs_util.ts";
import { resolveBtfFile, resolveRunning, resolveTree } from "./local.ts";
import {
  type KernelInputs,
  type KernelSpec,
  KernelSpecSchema,
  type ResolveOptions,
  WantSchema,
} from "./types.ts";

export { KernelInputError } from "./errors.ts";
export type { KernelErrorCode } from "./errors.ts";
export { type ArchInfo, archInfo } from "./arch.ts";
export { digestTree, type TreeDigest } from "./digest.ts";
export { treeDigestRoots } from "./header_tree.ts";
export type { ArchiveProbe } from "./apt.ts";
export {
  type Arch,
  ArchSchema,
  type DebianSeries,
  DebianSeriesSchema,
  type KernelInputs,
  type KernelSpec,
  KernelSpecSchema,
  type PackageRef,
  type ResolveOptions,
  type Want,
  WantSchema,
} from "./types.ts";

/**
 * The default cache directory of this module: `<repo>/.cache/kernels`.
 *
 * @example
 * ```ts
 * import { defaultCacheDir } from "./mod.ts";
 * console.log(defaultCacheDir()); // e.g. /work/main/.cache/kernels
 * ```
 */
export function defaultCacheDir(): string {
  return decodeURIComponent(new URL("../../.cache/kernels", import.meta.url).pathname);
}

/**
 * Provide a kernel's inputs: a header tree and/or BTF + `vmlinux.h`, with facts
 * and digests. Throws {@link KernelInputError} (with what to do next) on
 * failure: `network` when the Debian archive is unreachable and nothing is
 * cached, `not-found`, `tool-missing`, `invalid-input`, `btf-not-found`, ….
 *
 * @example
 * ```ts
 * import { resolveKernel } from "./mod.ts";
 * const running = await resolveKernel({ kind: "running" }, { want: ["btf"] });
 * console.log(running.release, running.btf?.vmlinuxH);
 *
 * const deb = await resolveKernel({ kind: "debian", series: "6.12", arch: "x86_64" }, {
 *   want: ["headers"],
 *   onProgress: console.error,
 * });
 * console.log(deb.abi, deb.headers?.dir, deb.headers?.digest);
 * ```
 */
export async function resolveKernel(
  spec: KernelSpec,
  opts: ResolveOptions,
): Promise<KernelInputs> {
  const parsed = KernelSpecSchema.safeParse(spec);
  if (!parsed.success) {
    throw new KernelInputError(
      "invalid-input",
      `invalid kernel spec ${JSON.stringify(spec)}: ${
        parsed.error.issues.map((i) => `${i.path.join(".") || "spec"}: ${i.message}`).join("; ")
      }. Use { kind: "debian", series: "6.1" | "6.12", arch }, { kind: "tree", path, arch }, ` +
        `{ kind: "btf", path, arch, release? } or { kind: "running" }`,
    );
  }
  const want = WantSchema.array().min(1).safeParse(opts.want);
  if (!want.success) {
    throw new KernelInputError(
      "invalid-input",
      `want must list at least one of "headers", "btf"; got ${JSON.stringify(opts.want)}`,
    );
  }
  const s = parsed.data;
  if (s.kind !== "running") archInfo(s.arch);
  const full = {
    ...opts,
    want: [...new Set(want.data)],
    cacheDir: absolute(opts.cacheDir ?? defaultCacheDir()),
  };
  await Deno.mkdir(full.cacheDir, { recursive: true });
  switch (s.kind) {
    case "debian":
      return await resolveDebian(s, full);
    case "tree":
      return await resolveTree(s, full);
    case "btf":
      return await resolveBtfFile(s, full);
    case "running":
      return await resolveRunning(full);
  }
}

/**
 * Check whether the Debian archive is reachable now (an `apt-get update` in the
 * module's private apt state; also refreshes the lists `resolveKernel` uses).
 * Reports instead of throwing for network problems.
 *
 * @example
 * ```ts
 * import { probeDebianArchive } from "./mod.ts";
 * const p = await probeDebianArchive();
 * if (!p.reachable) console.log(`Debian archive unreachable: ${p.detail}`);
 * ```
 */
export async function probeDebianArchive(
  opts: { cacheDir?: string; arch?: "x86_64" | "aarch64"; aptConfig?: Record<string, string> } = {},
): Promise<ArchiveProbe> {
  const cacheDir = absolute(opts.cacheDir ?? defaultCacheDir());
  await Deno.mkdir(cacheDir, { recursive: true });
  return await probeArchive(cacheDir, {
    debArch: archInfo(opts.arch ?? "x86_64").debArch,
    config: opts.aptConfig,
  });
}
