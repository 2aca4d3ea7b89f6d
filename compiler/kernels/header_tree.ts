/**
 * Kernel header trees for headers-mode (BCC-style) builds: merge a source
 * part (`include/`, `arch/<A>/include/`) and a build part (`include/generated/`,
 * `arch/<A>/include/generated/`, `.config`, `Module.symvers`) into one
 * self-contained directory, and read the tree's facts (release, `uname -v`,
 * `LINUX_VERSION_CODE`, arch of its `.config`).
 *
 * The digest of a tree always covers the same parts ({@link treeDigestRoots}),
 * so a Debian merge and a local build tree are digested alike.
 *
 * @example
 * ```ts
 * import { readTreeFacts } from "./header_tree.ts";
 * const f = await readTreeFacts("/usr/src/linux-headers-6.1.0-28-cloud-amd64");
 * console.log(f.release, f.versionCode);
 * ```
 * @module
 */

import { type Arch, archInfo } from "./arch.ts";
import { KernelInputError } from "./errors.ts";
import { copyMaterialised, type CopyStats, exists } from "./fs_util.ts";
import { parseVersionH, readDefine, versionCodeFromRelease } from "./version.ts";

/**
 * The tree parts a header-tree digest covers, for an architecture.
 *
 * @example
 * ```ts
 * import { treeDigestRoots } from "./header_tree.ts";
 * console.log(treeDigestRoots("aarch64")); // ["include", "arch/arm64/include", ".config", "Module.symvers"]
 * ```
 */
export function treeDigestRoots(arch: Arch): string[] {
  return ["include", `arch/${archInfo(arch).kernelDir}/include`, ".config", "Module.symvers"];
}

/**
 * Where the two halves of a tree live, relative to a resolution root.
 *
 * @example
 * ```ts
 * import type { MergeSource } from "./header_tree.ts";
 * const src: MergeSource = {
 *   root: "/",
 *   sourceDir: "/usr/src/linux-headers-6.1.0-28-common",
 *   buildDir: "/usr/src/linux-headers-6.1.0-28-cloud-amd64",
 * };
 * ```
 */
export interface MergeSource {
  /** Resolution root: symlinks are followed inside it (`/` for the host). */
  root: string;
  /** Root-relative directory with `include/linux` and `arch/<A>/include` (sources). */
  sourceDir: string;
  /** Root-relative directory with `include/generated` and `.config` (build output). */
  buildDir: string;
}

/**
 * Build a merged tree at `dest` (which must not exist yet): `include/` and
 * `arch/<A>/include/` from the sources, then `include/generated/`,
 * `arch/<A>/include/generated/`, `.config` and `Module.symvers` (if present)
 * from the build part, all with symlinks materialised. `hardLink` links files
 * instead of copying them (for a private extraction that is deleted after).
 *
 * @example
 * ```ts
 * import { mergeHeaderTree } from "./header_tree.ts";
 * const stats = await mergeHeaderTree({
 *   root: "/tmp/x",
 *   sourceDir: "usr/src/linux-headers-6.1.0-28-common",
 *   buildDir: "usr/src/linux-headers-6.1.0-28-cloud-arm64",
 * }, "/tmp/tree", { arch: "aarch64" });
 * console.log(stats.files);
 * ```
 */
export async function mergeHeaderTree(
  src: MergeSource,
  dest: string,
  opts: { arch: Arch; hardLink?: boolean },
): Promise<CopyStats> {
  const arch = opts.arch;
  const a = archInfo(arch).kernelDir;
  const stats: CopyStats = { files: 0, bytes: 0, materialised: 0, skipped: [] };
  const must = async (rel: string, what: string) => {
    if (!(await exists(`${src.root}/${rel}`))) {
      throw new KernelInputError(
        "not-found",
        `${what} missing: ${src.root}/${rel} does not exist; the package or tree is ` +
          "incomplete (delete the cache entry and retry, or point at a configured build tree)",
      );
    }
  };
  await must(`${src.sourceDir}/include/linux`, "kernel headers (include/linux)");
  await must(`${src.sourceDir}/arch/${a}/include`, `arch headers (arch/${a}/include)`);
  await must(`${src.buildDir}/include/generated`, "generated headers (include/generated)");
  await must(`${src.buildDir}/.config`, "kernel configuration (.config)");
  const copy = (from: string, to: string) =>
    copyMaterialised({ root: src.root, rel: from }, `${dest}/${to}`, {
      stats,
      hardLink: opts.hardLink,
    });
  await copy(`${src.sourceDir}/include`, "include");
  await copy(`${src.sourceDir}/arch/${a}/include`, `arch/${a}/include`);
  await copy(`${src.buildDir}/include/generated`, "include/generated");
  if (await exists(`${src.root}/${src.buildDir}/arch/${a}/include/generated`)) {
    await copy(`${src.buildDir}/arch/${a}/include/generated`, `arch/${a}/include/generated`);
  }
  await copy(`${src.buildDir}/.config`, ".config");
  if (await exists(`${src.root}/${src.buildDir}/Module.symvers`)) {
    await copy(`${src.buildDir}/Module.symvers`, "Module.symvers");
  }
  return stats;
}

/**
 * Facts read from a header tree.
 *
 * @example
 * ```ts
 * import { readTreeFacts, type TreeFacts } from "./header_tree.ts";
 * const f: TreeFacts = await readTreeFacts("/tmp/tree");
 * console.log(f.release, f.versionCode, f.configArch);
 * ```
 */
export interface TreeFacts {
  /** `uname -r` of the kernel (UTS_RELEASE / include/config/kernel.release). */
  release?: string;
  /** `uname -v` (UTS_VERSION), when the tree has it. */
  version?: string;
  /** LINUX_VERSION_CODE from include/generated/uapi/linux/version.h (or the release). */
  versionCode?: number;
  /** Architecture the `.config` was made for, when recognisable. */
  configArch?: Arch;
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw e;
  }
}

/**
 * Read release, `uname -v`, version code and `.config` arch of a tree (merged
 * or a build tree; missing facts are left out).
 *
 * @example
 * ```ts
 * import { readTreeFacts } from "./header_tree.ts";
 * const { versionCode } = await readTreeFacts("/tmp/tree");
 * ```
 */
export async function readTreeFacts(dir: string): Promise<TreeFacts> {
  const facts: TreeFacts = {};
  const gen = `${dir}/include/generated`;
  const utsRelease = await readText(`${gen}/utsrelease.h`);
  facts.release = (utsRelease && readDefine(utsRelease, "UTS_RELEASE")) ??
    (await readText(`${dir}/include/config/kernel.release`))?.trim() ?? undefined;
  for (const file of ["utsversion.h", "compile.h"]) {
    const text = await readText(`${gen}/${file}`);
    const v = text && readDefine(text, "UTS_VERSION");
    if (v) {
      facts.version = v;
      break;
    }
  }
  const versionH = await readText(`${gen}/uapi/linux/version.h`) ??
    await readText(`${dir}/include/linux/version.h`);
  facts.versionCode = (versionH && parseVersionH(versionH)) ||
    (facts.release ? versionCodeFromRelease(facts.release) : undefined);
  const config = await readText(`${dir}/.config`);
  if (config) {
    if (/^CONFIG_X86_64=y$/m.test(config)) facts.configArch = "x86_64";
    else if (/^CONFIG_ARM64=y$/m.test(config)) facts.configArch = "aarch64";
  }
  return facts;
}

/**
 * Throw a clear error when a tree's `.config` is for another architecture.
 *
 * @example
 * ```ts
 * import { checkTreeArch } from "./header_tree.ts";
 * checkTreeArch({ configArch: "x86_64" }, { arch: "x86_64", where: "/tmp/tree" }); // ok
 * ```
 */
export function checkTreeArch(facts: TreeFacts, opts: { arch: Arch; where: string }): void {
  const { arch, where } = opts;
  if (facts.configArch && facts.configArch !== arch) {
    throw new KernelInputError(
      "invalid-input",
      `${where} is configured for ${facts.configArch} (.config), not ${arch}: ` +
        `pass arch: "${facts.configArch}" or point at a ${arch} tree`,
    );
  }
}
