/**
 * Types of the kernel-inputs module: what to resolve ({@link KernelSpec},
 * validated with {@link KernelSpecSchema}), how ({@link ResolveOptions}) and
 * what comes back ({@link KernelInputs}).
 *
 * @example
 * ```ts
 * import { KernelSpecSchema } from "./types.ts";
 * const spec = KernelSpecSchema.parse({ kind: "debian", series: "6.12", arch: "aarch64" });
 * ```
 * @module
 */

import { z } from "zod";
import { type Arch, ArchSchema } from "./arch.ts";

export { type Arch, ArchSchema };

/**
 * Debian kernel series: bookworm (6.1) or bookworm-backports (6.12).
 *
 * @example
 * ```ts
 * import { DebianSeriesSchema } from "./types.ts";
 * console.log(DebianSeriesSchema.options); // ["6.1", "6.12"]
 * ```
 */
export const DebianSeriesSchema = z.enum(["6.1", "6.12"]);
/**
 * A Debian kernel series.
 *
 * @example
 * ```ts
 * import type { DebianSeries } from "./types.ts";
 * const s: DebianSeries = "6.12";
 * ```
 */
export type DebianSeries = z.infer<typeof DebianSeriesSchema>;

/**
 * Which kernel to provide inputs for:
 * - `debian`: Debian's current cloud-flavour kernel of a series, from the archive;
 * - `tree`: a local configured kernel build tree (include/generated, .config, Makefile);
 * - `btf`: a BTF file (raw BTF, an ELF vmlinux with `.BTF`, or a vmlinuz);
 * - `running`: the kernel this process runs on (uname + /sys/kernel/btf/vmlinux).
 *
 * @example
 * ```ts
 * import { KernelSpecSchema } from "./types.ts";
 * const specs = [
 *   { kind: "debian", series: "6.1", arch: "aarch64" },
 *   { kind: "btf", path: "/sys/kernel/btf/vmlinux", arch: "x86_64" },
 * ].map((s) => KernelSpecSchema.parse(s));
 * ```
 */
export const KernelSpecSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("debian"), series: DebianSeriesSchema, arch: ArchSchema }).strict(),
  z.object({ kind: z.literal("tree"), path: z.string().min(1), arch: ArchSchema }).strict(),
  z.object({
    kind: z.literal("btf"),
    path: z.string().min(1),
    arch: ArchSchema,
    release: z.string().min(1).optional(),
  }).strict(),
  z.object({ kind: z.literal("running") }).strict(),
]);
/**
 * Which kernel to provide inputs for (see {@link KernelSpecSchema}).
 *
 * @example
 * ```ts
 * import type { KernelSpec } from "./types.ts";
 * const spec: KernelSpec = { kind: "tree", path: "/home/me/linux", arch: "aarch64" };
 * ```
 */
export type KernelSpec = z.infer<typeof KernelSpecSchema>;

/**
 * What a build needs: a header tree (headers mode) and/or BTF + vmlinux.h (core mode).
 *
 * @example
 * ```ts
 * import { WantSchema } from "./types.ts";
 * const want = WantSchema.array().parse(["headers", "btf"]);
 * ```
 */
export const WantSchema = z.enum(["headers", "btf"]);
/**
 * One kind of kernel input.
 *
 * @example
 * ```ts
 * import type { Want } from "./types.ts";
 * const want: Want[] = ["btf"];
 * ```
 */
export type Want = z.infer<typeof WantSchema>;

/**
 * A Debian package an input came from.
 *
 * @example
 * ```ts
 * import type { PackageRef } from "./types.ts";
 * const p: PackageRef = { name: "linux-image-6.1.0-28-cloud-arm64", version: "6.1.119-1" };
 * ```
 */
export interface PackageRef {
  /** Package name. */
  name: string;
  /** Exact package version. */
  version: string;
}

/**
 * Everything the compiler stage needs to know about one kernel.
 *
 * @example
 * ```ts
 * import type { KernelInputs } from "./types.ts";
 * const k: KernelInputs = {
 *   arch: "aarch64",
 *   release: "6.1.0-28-cloud-arm64",
 *   version: "#1 SMP Debian 6.1.119-1 (2024-11-22)",
 *   versionCode: 393591,
 *   source: "debian",
 *   abi: "6.1.0-28",
 *   flavour: "cloud-arm64",
 * };
 * ```
 */
export interface KernelInputs {
  /** Architecture (`uname -m`). */
  arch: Arch;
  /** Exact `uname -r`, e.g. `6.1.0-28-cloud-arm64`. */
  release: string;
  /** `uname -v` when known, e.g. `#1 SMP Debian 6.1.119-1 (2024-11-22)`. */
  version?: string;
  /** LINUX_VERSION_CODE (from version.h, else computed from the version). */
  versionCode: number;
  /** Where the inputs came from. */
  source: "debian" | "local-tree" | "btf-file" | "running-kernel";
  /** Debian ABI, e.g. `6.1.0-28` or `6.12.9+deb12`. */
  abi?: string;
  /** Debian flavour, e.g. `cloud-arm64`. */
  flavour?: string;
  /** Debian packages used, with versions. */
  packages?: PackageRef[];
  /** Header tree (headers mode), when asked for. */
  headers?: {
    /** Tree root: include/, arch/<A>/include/, include/generated, arch/<A>/include/generated, .config. */
    dir: string;
    /** `sha256:…` over the sorted (path, bytes) of the tree. */
    digest: string;
  };
  /** BTF (core mode), when asked for. */
  btf?: {
    /** Raw BTF blob. */
    path: string;
    /** `sha256:…` of the blob. */
    digest: string;
    /** Generated `vmlinux.h`. */
    vmlinuxH: string;
  };
}

/**
 * Options of `resolveKernel`.
 *
 * @example
 * ```ts
 * import type { ResolveOptions } from "./types.ts";
 * const o: ResolveOptions = { want: ["headers", "btf"], onProgress: (m) => console.error(m) };
 * ```
 */
export interface ResolveOptions {
  /** Cache directory of this module (default `<repo>/.cache/kernels`). */
  cacheDir?: string;
  /** Which inputs to provide. */
  want: Want[];
  /** Progress messages (downloads can take a while). */
  onProgress?: (msg: string) => void;
  /** Debian: update the package lists even if they are recent. */
  refresh?: boolean;
  /** Debian: never contact the archive; use the lists and cache entries present. */
  offline?: boolean;
  /** Debian: package lists younger than this are used as they are (default 24 h). */
  listsMaxAgeMs?: number;
  /**
   * Debian: extra apt configuration for the private state, passed as `-o key=value`
   * (e.g. `{ "Acquire::http::Proxy": "http://proxy:3128" }`).
   */
  aptConfig?: Record<string, string>;
}
