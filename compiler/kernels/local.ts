/**
 * Kernel inputs that need no archive: a local kernel build tree, a BTF file,
 * and the running kernel (`uname` + `/sys/kernel/btf/vmlinux`). BTF and
 * generated `vmlinux.h` are cached by blob digest under `<cacheDir>/btf/`;
 * split trees (an `O=` build dir, or Debian's installed flavour + common
 * header dirs) are merged into `<cacheDir>/trees/<digest>/`.
 *
 * @example
 * ```ts
 * import { resolveRunning } from "./local.ts";
 * const k = await resolveRunning({ cacheDir: "/work/main/.cache/kernels", want: ["btf"] });
 * console.log(k.release, k.versionCode, k.btf?.vmlinuxH);
 * ```
 * @module
 */

import { type Arch, archFromMachine, archInfo } from "./arch.ts";
import { BTF_FILES, BtfDirStampSchema, findBtf, writeBtfDir } from "./btf.ts";
import { digestBytes, digestTree } from "./digest.ts";
import { KernelInputError } from "./errors.ts";
import {
  absolute,
  exists,
  readJson,
  removeIfExists,
  replaceDir,
  siblingTempDir,
  withLock,
} from "./fs_util.ts";
import { checkTreeArch, mergeHeaderTree, readTreeFacts, treeDigestRoots } from "./header_tree.ts";
import { unpackKernelImage } from "./kernel_image.ts";
import type { KernelInputs, ResolveOptions } from "./types.ts";
import { findBanner, versionCodeFromRelease, versionCodeFromUnameVersion } from "./version.ts";

type Opts = ResolveOptions & { cacheDir: string };

/**
 * A cached BTF directory for a blob (see {@link btfFromBlob}).
 *
 * @example
 * ```ts
 * import { btfFromBlob, type CachedBtf } from "./local.ts";
 * const b: CachedBtf = await btfFromBlob(await Deno.readFile("/sys/kernel/btf/vmlinux"), {
 *   cacheDir: "/tmp/k",
 * });
 * ```
 */
export interface CachedBtf {
  /** Raw BTF blob. */
  path: string;
  /** `sha256:…` of the blob. */
  digest: string;
  /** Generated `vmlinux.h`. */
  vmlinuxH: string;
  /** Architecture judged from the BTF, when recognisable. */
  arch?: Arch;
}

/**
 * Store a BTF blob and its `vmlinux.h` under `<cacheDir>/btf/<sha256>/`
 * (reused when already complete).
 *
 * @example
 * ```ts
 * import { btfFromBlob } from "./local.ts";
 * const b = await btfFromBlob(await Deno.readFile("/sys/kernel/btf/vmlinux"), {
 *   cacheDir: "/tmp/kcache",
 * });
 * console.log(b.vmlinuxH);
 * ```
 */
export async function btfFromBlob(
  blob: Uint8Array,
  opts: { cacheDir: string; onProgress?: (msg: string) => void },
): Promise<CachedBtf> {
  const { cacheDir, onProgress } = opts;
  const digest = digestBytes(blob);
  const dir = `${cacheDir}/btf/${digest.slice("sha256:".length)}`;
  const stamp = await withLock(`${dir}.lock`, async () => {
    const have = await readJson(`${dir}/${BTF_FILES.stamp}`, BtfDirStampSchema);
    if (have && have.digest === digest) return have;
    onProgress?.(`generating vmlinux.h for BTF ${digest.slice(0, 19)}… with bpftool`);
    return await writeBtfDir(blob, dir);
  });
  return {
    path: `${dir}/${BTF_FILES.blob}`,
    digest,
    vmlinuxH: `${dir}/${BTF_FILES.header}`,
    arch: stamp.arch,
  };
}

function checkBtfArch(found: Arch | undefined, arch: Arch, what: string): void {
  if (found && found !== arch) {
    throw new KernelInputError(
      "invalid-input",
      `${what} describes an ${found} kernel, not ${arch}: pass arch: "${found}" or the BTF of ` +
        `an ${arch} kernel`,
    );
  }
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** Where a tree's sources are: the tree itself, its `source` link, or its Makefile's include. */
async function findSourceDir(path: string): Promise<string | undefined> {
  if (await exists(`${path}/include/linux/sched.h`)) return path;
  if (await exists(`${path}/source/include/linux/sched.h`)) {
    return await Deno.realPath(`${path}/source`);
  }
  const makefile = await Deno.readTextFile(`${path}/Makefile`).catch(() => "");
  const m = /^include\s+(\S+)\/Makefile\s*$/m.exec(makefile);
  if (m && (await exists(`${m[1]}/include/linux/sched.h`))) return await Deno.realPath(m[1]);
  return undefined;
}

/**
 * Resolve a local kernel build tree (configured: `include/generated`,
 * `.config`, `Makefile`). A tree with its own sources is used in place; a
 * split one (O= build dir, Debian's flavour + common dirs) is merged into the
 * cache. With `want: ["btf"]` the tree's `vmlinux` must carry `.BTF`.
 *
 * @example
 * ```ts
 * import { resolveTree } from "./local.ts";
 * const k = await resolveTree({ kind: "tree", path: "/usr/src/linux-headers-6.1.0-28-cloud-amd64", arch: "x86_64" }, {
 *   cacheDir: "/work/main/.cache/kernels",
 *   want: ["headers"],
 * });
 * console.log(k.headers?.dir);
 * ```
 */
export async function resolveTree(
  spec: { kind: "tree"; path: string; arch: Arch },
  opts: Opts,
): Promise<KernelInputs> {
  const path = absolute(spec.path);
  const { kernelDir } = archInfo(spec.arch);
  if (!(await isDir(path))) {
    throw new KernelInputError(
      "invalid-input",
      `kernel tree ${path} does not exist or is not a directory: pass the path of a ` +
        "configured kernel build tree (the directory with .config and include/generated)",
    );
  }
  if (!(await exists(`${path}/include/generated`)) || !(await exists(`${path}/.config`))) {
    throw new KernelInputError(
      "invalid-input",
      `${path} is not a configured build tree (include/generated or .config missing): run ` +
        `make ARCH=${kernelDir} olddefconfig modules_prepare in it first`,
    );
  }
  const facts = await readTreeFacts(path);
  checkTreeArch(facts, { arch: spec.arch, where: path });
  if (!facts.release || !facts.versionCode) {
    throw new KernelInputError(
      "invalid-input",
      `${path} does not say its release (include/generated/utsrelease.h or ` +
        `include/config/kernel.release): run make ARCH=${kernelDir} modules_prepare in it`,
    );
  }
  const inputs: KernelInputs = {
    arch: spec.arch,
    release: facts.release,
    versionCode: facts.versionCode,
    source: "local-tree",
  };
  if (facts.version) inputs.version = facts.version;
  if (opts.want.includes("headers")) {
    const sourceDir = await findSourceDir(path);
    if (!sourceDir) {
      throw new KernelInputError(
        "invalid-input",
        `${path} has no include/linux, no 'source' link and no Makefile include of a source ` +
          "tree: pass the kernel source tree you built in, or its O= build dir",
      );
    }
    const roots = treeDigestRoots(spec.arch);
    if (sourceDir === (await Deno.realPath(path))) {
      opts.onProgress?.(`tree ${path}: digesting the header tree`);
      inputs.headers = { dir: path, digest: (await digestTree(path, { roots })).digest };
    } else {
      opts.onProgress?.(`tree ${path}: merging sources from ${sourceDir}`);
      const tmp = await siblingTempDir(`${opts.cacheDir}/trees/merge`);
      try {
        await mergeHeaderTree({ root: "/", sourceDir, buildDir: path }, tmp, { arch: spec.arch });
        const { digest } = await digestTree(tmp, { roots });
        const dir = `${opts.cacheDir}/trees/${digest.slice("sha256:".length, 7 + 32)}`;
        await withLock(`${dir}.lock`, async () => {
          if (await exists(`${dir}/include/linux/sched.h`)) await removeIfExists(tmp);
          else await replaceDir(tmp, dir);
        });
        inputs.headers = { dir, digest };
      } finally {
        await removeIfExists(tmp);
      }
    }
  }
  if (opts.want.includes("btf")) {
    const vmlinux = `${path}/vmlinux`;
    const blob = (await exists(vmlinux)) ? findBtf(await Deno.readFile(vmlinux)) : undefined;
    if (!blob) {
      throw new KernelInputError(
        "btf-not-found",
        `no BTF in ${vmlinux}: build the tree with CONFIG_DEBUG_INFO_BTF=y, or resolve ` +
          '{ kind: "btf", path } with the kernel\'s BTF instead',
      );
    }
    const btf = await btfFromBlob(blob, opts);
    checkBtfArch(btf.arch, spec.arch, vmlinux);
    inputs.btf = { path: btf.path, digest: btf.digest, vmlinuxH: btf.vmlinuxH };
  }
  return inputs;
}

/**
 * Resolve a BTF file: raw BTF (`/sys/kernel/btf/vmlinux`), an ELF vmlinux with
 * `.BTF`, or a kernel image (`vmlinuz`, unpacked without booting). The
 * release comes from `spec.release`, the image's banner, or (for
 * `/sys/kernel/btf/vmlinux`) the running kernel.
 *
 * @example
 * ```ts
 * import { resolveBtfFile } from "./local.ts";
 * const k = await resolveBtfFile(
 *   { kind: "btf", path: "/tmp/vmlinuz-6.1.0-28-cloud-arm64", arch: "aarch64" },
 *   { cacheDir: "/work/main/.cache/kernels", want: ["btf"] },
 * );
 * console.log(k.release, k.btf?.vmlinuxH);
 * ```
 */
export async function resolveBtfFile(
  spec: { kind: "btf"; path: string; arch: Arch; release?: string },
  opts: Opts,
): Promise<KernelInputs> {
  if (opts.want.includes("headers")) {
    throw new KernelInputError(
      "invalid-input",
      'a BTF file has no header tree: ask for want: ["btf"] (core mode), or resolve a ' +
        '{ kind: "tree" } or { kind: "debian" } kernel for headers mode',
    );
  }
  const path = absolute(spec.path);
  let data: Uint8Array;
  try {
    data = await Deno.readFile(path);
  } catch (e) {
    throw new KernelInputError(
      "invalid-input",
      `cannot read BTF file ${path} (${(e as Error).message}): pass an existing raw BTF, ` +
        "vmlinux or vmlinuz file",
      { cause: e },
    );
  }
  let blob = findBtf(data);
  let kernel = data;
  if (!blob) {
    const unpacked = await unpackKernelImage(data);
    kernel = unpacked.data;
    blob = findBtf(kernel);
  }
  if (!blob) {
    throw new KernelInputError(
      "btf-not-found",
      `${path} holds no BTF (not raw BTF, no .BTF section, no BTF in the image): the kernel ` +
        "may be built without CONFIG_DEBUG_INFO_BTF; use headers mode for it",
    );
  }
  const banner = kernel === blob ? undefined : findBanner(kernel, spec.release);
  const running = path === "/sys/kernel/btf/vmlinux" ? Deno.osRelease() : undefined;
  const release = spec.release ?? banner?.release ?? running;
  if (!release) {
    throw new KernelInputError(
      "invalid-input",
      `${path} does not say which kernel it describes: pass release (the kernel's uname -r) ` +
        "in the spec",
    );
  }
  const btf = await btfFromBlob(blob, opts);
  checkBtfArch(btf.arch, spec.arch, path);
  const version = banner?.version ?? (running === release ? await unameVersion() : undefined);
  const versionCode = (version && versionCodeFromUnameVersion(version)) ||
    versionCodeFromRelease(release);
  if (!versionCode) {
    throw new KernelInputError(
      "invalid-input",
      `release ${JSON.stringify(release)} does not start with a version number (a.b.c): pass ` +
        "the kernel's real uname -r as release",
    );
  }
  const inputs: KernelInputs = {
    arch: spec.arch,
    release,
    versionCode,
    source: "btf-file",
    btf: { path: btf.path, digest: btf.digest, vmlinuxH: btf.vmlinuxH },
  };
  if (version) inputs.version = version;
  return inputs;
}

async function unameVersion(): Promise<string | undefined> {
  try {
    return (await Deno.readTextFile("/proc/sys/kernel/version")).trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Version code of the running kernel: the upstream version Debian (`uname -v`)
 * or Ubuntu (`/proc/version_signature`) name, else the release's `a.b.c`.
 *
 * @example
 * ```ts
 * import { runningVersionCode } from "./local.ts";
 * console.log(await runningVersionCode("6.1.0-28-cloud-amd64", "#1 SMP Debian 6.1.119-1 (2024-11-22)"));
 * ```
 */
export async function runningVersionCode(release: string, version?: string): Promise<number> {
  const fromUname = version ? versionCodeFromUnameVersion(version) : undefined;
  if (fromUname) return fromUname;
  const signature = await Deno.readTextFile("/proc/version_signature").catch(() => "");
  const upstream = /\s(\d+\.\d+\.\d+)\s*$/.exec(signature)?.[1];
  if (upstream) return versionCodeFromRelease(upstream)!;
  const code = versionCodeFromRelease(release);
  if (code === undefined) {
    throw new KernelInputError(
      "invalid-input",
      `cannot compute a version code from the running kernel's release ${release}: use a ` +
        '{ kind: "tree" } spec whose version.h has it',
    );
  }
  return code;
}

/**
 * Resolve the kernel this process runs on: release/version from uname
 * (`/proc/sys/kernel/*`), BTF from `/sys/kernel/btf/vmlinux`, and (headers)
 * the tree at `/lib/modules/<release>/build` if installed.
 *
 * @example
 * ```ts
 * import { resolveRunning } from "./local.ts";
 * const k = await resolveRunning({ cacheDir: "/tmp/kcache", want: ["btf"] });
 * console.log(k.arch, k.release, k.version);
 * ```
 */
export async function resolveRunning(opts: Opts): Promise<KernelInputs> {
  const arch = archFromMachine(Deno.build.arch);
  const release = Deno.osRelease();
  const version = await unameVersion();
  const inputs: KernelInputs = {
    arch,
    release,
    versionCode: await runningVersionCode(release, version),
    source: "running-kernel",
  };
  if (version) inputs.version = version;
  if (opts.want.includes("headers")) {
    const build = `/lib/modules/${release}/build`;
    if (!(await exists(build))) {
      throw new KernelInputError(
        "not-found",
        `no header tree for the running kernel (${build} is missing): install ` +
          `linux-headers-${release}, or build in core mode (want: ["btf"])`,
      );
    }
    const tree = await resolveTree({ kind: "tree", path: build, arch }, opts);
    inputs.headers = tree.headers;
    if (tree.versionCode) inputs.versionCode = tree.versionCode;
  }
  if (opts.want.includes("btf")) {
    const path = "/sys/kernel/btf/vmlinux";
    let blob: Uint8Array;
    try {
      blob = await Deno.readFile(path);
    } catch (e) {
      throw new KernelInputError(
        "btf-not-found",
        `the running kernel has no BTF (${path}: ${(e as Error).message}; ` +
          "CONFIG_DEBUG_INFO_BTF is off): build in headers mode, or pass the BTF of its image " +
          'package as { kind: "btf", path }',
        { cause: e },
      );
    }
    const btf = await btfFromBlob(blob, opts);
    checkBtfArch(btf.arch, arch, path);
    inputs.btf = { path: btf.path, digest: btf.digest, vmlinuxH: btf.vmlinuxH };
  }
  return inputs;
}
