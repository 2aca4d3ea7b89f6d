/**
 * Kernel inputs for the build: the header tree and/or BTF (`vmlinux.h`) of one
 * kernel, and the `KernelSpec` strings the command line and `kernels.json`
 * use (`running`, `debian:6.1:aarch64`, `tree:PATH:ARCH`, `btf:PATH:ARCH`).
 *
 * Resolution itself is `compiler/kernels/mod.ts` (`resolveKernel`); this
 * module adds the string form of specs and is what the rest of the compiler
 * imports, so the kernels module stays swappable.
 *
 * @example
 * ```ts
 * import { parseKernelSpec, resolveKernelInputs } from "./kernel_inputs.ts";
 * const k = await resolveKernelInputs(parseKernelSpec("running"), { want: ["btf"] });
 * console.log(k.arch, k.release, k.btf?.vmlinuxH);
 * ```
 * @module
 */

import { archInfo } from "./arch.ts";
import {
  type Arch,
  type KernelInputs,
  type KernelSpec,
  resolveKernel,
  type ResolveOptions,
} from "./kernels/mod.ts";

export type { Arch, KernelInputs, KernelSpec, ResolveOptions };

/**
 * Raised for a kernel spec string that cannot be parsed.
 *
 * @example
 * ```ts
 * import { KernelSpecError, parseKernelSpec } from "./kernel_inputs.ts";
 * try {
 *   parseKernelSpec("debian:5.10:x86_64");
 * } catch (e) {
 *   console.log(e instanceof KernelSpecError);
 * }
 * ```
 */
export class KernelSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KernelSpecError";
  }
}

function specArch(name: string, spec: string): Arch {
  let arch: string;
  try {
    arch = archInfo(name).arch;
  } catch {
    throw new KernelSpecError(`kernel spec ${JSON.stringify(spec)}: unknown arch "${name}"`);
  }
  if (arch !== "x86_64" && arch !== "aarch64") {
    throw new KernelSpecError(
      `kernel spec ${JSON.stringify(spec)}: kernel inputs exist only for x86_64 and aarch64 ` +
        `(got ${arch})`,
    );
  }
  return arch;
}

/**
 * Parses `running`, `debian:<6.1|6.12>:<arch>`, `tree:<path>:<arch>` or
 * `btf:<path>:<arch>[:<release>]`. Arch may be `x86_64`/`amd64` or
 * `aarch64`/`arm64`.
 *
 * @example
 * ```ts
 * import { parseKernelSpec } from "./kernel_inputs.ts";
 * console.log(parseKernelSpec("debian:6.12:arm64")); // { kind: "debian", series: "6.12", arch: "aarch64" }
 * ```
 */
export function parseKernelSpec(text: string): KernelSpec {
  const usage = "use running, debian:<6.1|6.12>:<arch>, tree:<path>:<arch> or btf:<path>:<arch>";
  if (text === "running") return { kind: "running" };
  const kind = text.slice(0, text.indexOf(":"));
  const rest = text.slice(kind.length + 1);
  if (kind === "debian") {
    const [series, arch, extra] = rest.split(":");
    if ((series !== "6.1" && series !== "6.12") || !arch || extra !== undefined) {
      throw new KernelSpecError(`bad kernel spec ${JSON.stringify(text)}: ${usage}`);
    }
    return { kind, series, arch: specArch(arch, text) };
  }
  if (kind === "tree" || kind === "btf") {
    // The path may itself contain ':'; the arch (and for btf an optional release) come last.
    const parts = rest.split(":");
    let release: string | undefined;
    if (kind === "btf" && parts.length >= 3) {
      try {
        specArch(parts[parts.length - 1], text);
      } catch {
        release = parts.pop();
      }
    }
    const arch = parts.pop();
    const path = parts.join(":");
    if (!path || !arch) {
      throw new KernelSpecError(`bad kernel spec ${JSON.stringify(text)}: ${usage}`);
    }
    if (kind === "tree") return { kind, path, arch: specArch(arch, text) };
    return release === undefined
      ? { kind, path, arch: specArch(arch, text) }
      : { kind, path, arch: specArch(arch, text), release };
  }
  throw new KernelSpecError(`bad kernel spec ${JSON.stringify(text)}: ${usage}`);
}

/**
 * The canonical string of a spec (inverse of {@link parseKernelSpec}).
 *
 * @example
 * ```ts
 * import { kernelSpecString } from "./kernel_inputs.ts";
 * console.log(kernelSpecString({ kind: "debian", series: "6.1", arch: "x86_64" })); // debian:6.1:x86_64
 * ```
 */
export function kernelSpecString(spec: KernelSpec): string {
  switch (spec.kind) {
    case "running":
      return "running";
    case "debian":
      return `debian:${spec.series}:${spec.arch}`;
    case "tree":
      return `tree:${spec.path}:${spec.arch}`;
    case "btf":
      return `btf:${spec.path}:${spec.arch}${spec.release ? `:${spec.release}` : ""}`;
  }
}

/**
 * Resolves a kernel spec to inputs (downloading and caching as needed).
 *
 * @example
 * ```ts
 * import { resolveKernelInputs } from "./kernel_inputs.ts";
 * const k = await resolveKernelInputs({ kind: "running" }, { want: ["btf"] });
 * console.log(k.btf?.digest);
 * ```
 */
export async function resolveKernelInputs(
  spec: KernelSpec,
  opts: ResolveOptions,
): Promise<KernelInputs> {
  return await resolveKernel(spec, opts);
}
