/**
 * What the VM lab boots, fetched and built by the project itself and cached under `.cache/vm/`:
 *
 * - the Debian **cloud** kernel of a series (`linux-image-<abi>-cloud-<arch>`), for exactly the
 *   ABI the compiler stage resolves (`compiler/kernels/debian.ts`, same private apt state), so
 *   bundles built with `--kernel debian:<series>:<arch>` match the guest's `uname -r`;
 * - the modules a guest needs for virtio-serial and virtio-rng where they are modular (6.1), in
 *   dependency order (read from each module's `.modinfo`);
 * - the target's userland from Debian: `busybox-static`, `libc6`, `libgcc-s1`;
 * - a base initramfs per (arch, ABI): busybox, the glibc set, the modules and the target `deno`
 *   (`cpio -H newc | gzip -1`). Per-run files go into a second, small archive (see lab.ts).
 *
 * ```
 * .cache/vm/<amd64|arm64>/debs/           .debs (sha256-checked; image .debs dropped once used)
 * .cache/vm/kernels/<arch>/<abi>/vmlinuz   kernel.json (stamp, written last)
 * .cache/vm/kernels/<arch>/<abi>/modules/  *.ko
 * .cache/vm/userland/<arch>/               busybox + glibc set, userland.json
 * .cache/vm/kernels/<arch>/<abi>/base.cpio.gz  base.json
 * .cache/vm/project/project-<digest>.cpio.gz  /init, agent, bpfd.js, launcher (lab.ts)
 * .cache/vm/runtime/<arch>/                scripts/offline.ts's artifact (runtime_assets.ts)
 * .cache/vm/bundles/<arch>-<series>/       tool bundles (bundles.ts)
 * .cache/vm/run/<arch>-<series>-<pid>-<n>/ one boot: initrd.gz, console.log, act.sock
 * .cache/vm/run-<arch>-<series>.sh         launcher scripts (lab.ts writeLauncher)
 * ```
 *
 * @example
 * ```ts
 * import { baseInitramfs, guestKernel } from "./kernel_assets.ts";
 * const k = await guestKernel("aarch64", "6.1", { onProgress: console.error });
 * const base = await baseInitramfs(k, "/path/to/arm64/deno");
 * console.log(k.release, k.vmlinuz, base.path, base.bytes);
 * ```
 * @module
 */

import { openAptState, type PackageInfo, showPackages } from "../../compiler/kernels/apt.ts";
import { archInfo } from "../../compiler/kernels/arch.ts";
import { DEBIAN_SERIES, fetchPackages, resolveDebian } from "../../compiler/kernels/debian.ts";
import { digestBytes } from "../../compiler/kernels/digest.ts";
import { pipe, run } from "../../compiler/kernels/exec.ts";
import {
  exists,
  removeIfExists,
  withLock,
  writeFileAtomic,
} from "../../compiler/kernels/fs_util.ts";
import { defaultCacheDir } from "../../compiler/kernels/mod.ts";
import { fileDigest, vmCacheDir } from "./runtime_assets.ts";

/** A guest architecture (`uname -m`). */
export type VmArch = "x86_64" | "aarch64";
/** A Debian kernel series: bookworm (6.1) or bookworm-backports (6.12). */
export type VmSeries = "6.1" | "6.12";

/** One guest kernel, ready to boot. */
export interface GuestKernel {
  /** Architecture. */
  arch: VmArch;
  /** Series. */
  series: VmSeries;
  /** Debian ABI, e.g. `6.1.0-56`. */
  abi: string;
  /** `uname -r`, e.g. `6.1.0-56-cloud-arm64`. */
  release: string;
  /** The image package it came from. */
  image: { name: string; version: string };
  /** The kernel image file to pass to `qemu -kernel`. */
  vmlinuz: string;
  /** Module files (absolute paths), in load order; empty when everything is built in. */
  modules: string[];
  /** The cache entry directory. */
  dir: string;
}

/** Options of the functions here. */
export interface AssetOptions {
  /** Progress lines (downloads, builds). */
  onProgress?: (msg: string) => void;
}

interface KernelStamp {
  stamp: "bpfpack.vm.kernel.v1";
  abi: string;
  release: string;
  image: { name: string; version: string };
  modules: string[];
}

/**
 * Modules a guest needs, per arch: the virtio-serial transport and console (the `ctl`/`act`
 * ports) and virtio-rng (so the guest's entropy pool is ready at once).
 */
const WANTED: Record<VmArch, string[]> = {
  aarch64: ["virtio_mmio", "virtio_console", "virtio_rng"],
  x86_64: ["virtio_pci", "virtio_console", "virtio_rng"],
};

/** Userland packages and the files taken from them. */
const USERLAND_PACKAGES = ["libc6", "libgcc-s1", "busybox-static"];
const LIBS = [
  "libc.so.6",
  "libm.so.6",
  "libdl.so.2",
  "libpthread.so.0",
  "librt.so.1",
  "libgcc_s.so.1",
];
const LOADER: Record<VmArch, { name: string; link: string }> = {
  aarch64: { name: "ld-linux-aarch64.so.1", link: "lib/ld-linux-aarch64.so.1" },
  x86_64: { name: "ld-linux-x86-64.so.2", link: "lib64/ld-linux-x86-64.so.2" },
};

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

/**
 * Where .debs of one arch are kept (`<dir>/debs`): per arch, since a package's file name
 * prefix `<name>_<version>_` is the same on every arch.
 */
function debsDir(arch: VmArch): string {
  return `${vmCacheDir()}/${archInfo(arch).debArch}`;
}

const norm = (name: string) => name.replaceAll("-", "_");

/** `name=` and `depends=` of a module's `.modinfo` (NUL-separated `key=value` strings). */
function modinfo(bytes: Uint8Array): { name?: string; depends: string[] } {
  const text = new TextDecoder("latin1").decode(bytes);
  const field = (k: string) => {
    const m = new RegExp(`\\0${k}=([^\\0]*)\\0`).exec(text);
    return m?.[1];
  };
  const deps = field("depends") ?? "";
  return { name: field("name"), depends: deps.split(",").map((d) => d.trim()).filter(Boolean) };
}

/** Busybox insmod takes plain `.ko` files: unpacks `.ko.xz`/`.ko.zst`/`.ko.gz` (6.12 ships xz). */
async function decompressModule(file: string): Promise<string> {
  const m = /^(.*\.ko)\.(xz|zst|gz)$/.exec(file);
  if (!m) return file;
  const tool = { xz: "xz", zst: "zstd", gz: "gzip" }[m[2]]!;
  const r = await run(tool, ["-d", "-f", "-q", file], { allowFailure: true }).catch((e) => {
    throw new Error(`${tool} -d ${file}: ${(e as Error).message}; run scripts/setup.sh`);
  });
  if (r.code !== 0) throw new Error(`${tool} -d ${file} failed: ${r.stderr.trim()}`);
  return m[1];
}

/**
 * The module files to load for `wanted` from an unpacked `lib/modules/<release>` tree, in
 * dependency order; built-in modules (listed in `modules.builtin`) are skipped.
 */
async function resolveModules(modDir: string, wanted: string[]): Promise<string[]> {
  const builtin = new Set(
    (await Deno.readTextFile(`${modDir}/modules.builtin`).catch(() => "")).split("\n")
      .map((l) => norm(l.replace(/^.*\//, "").replace(/\.ko.*$/, ""))).filter(Boolean),
  );
  const files = new Map<string, string>();
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name)) {
        files.set(norm(e.name.replace(/\.ko.*$/, "")), p);
      }
    }
  };
  await walk(`${modDir}/kernel`);
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = async (name: string, chain: string[]) => {
    const n = norm(name);
    if (seen.has(n) || builtin.has(n)) return;
    const file = files.get(n);
    if (!file) {
      throw new Error(
        `module ${n} (needed by ${chain.join(" → ") || "the VM lab"}) is neither built in nor ` +
          `in ${modDir}: the kernel package layout changed; update WANTED in tests/vm/kernel_assets.ts`,
      );
    }
    seen.add(n);
    const plain = await decompressModule(file);
    for (const d of modinfo(await Deno.readFile(plain)).depends) await visit(d, [...chain, n]);
    order.push(plain);
  };
  for (const w of wanted) await visit(w, []);
  return order;
}

/**
 * The guest kernel of (`arch`, `series`): the current ABI as the compiler stage resolves it,
 * its image and modules, downloaded once (sha256-checked) and cached per (arch, ABI).
 *
 * @example
 * ```ts
 * import { guestKernel } from "./kernel_assets.ts";
 * const k = await guestKernel("x86_64", "6.12");
 * console.log(k.release); // e.g. 6.12.95+deb12-cloud-amd64
 * ```
 */
export async function guestKernel(
  arch: VmArch,
  series: VmSeries,
  opts: AssetOptions = {},
): Promise<GuestKernel> {
  const say = (m: string) => opts.onProgress?.(`${series} ${arch}: ${m}`);
  const kernels = defaultCacheDir();
  // The same resolve the compiler does for --kernel debian:<series>:<arch> (cached, memoised).
  const inputs = await resolveDebian({ kind: "debian", series, arch }, {
    cacheDir: kernels,
    want: ["headers", "btf"],
    onProgress: say,
  });
  const abi = inputs.abi!;
  const release = inputs.release;
  const dir = `${vmCacheDir()}/kernels/${arch}/${abi}`;
  const stampPath = `${dir}/kernel.json`;
  const done = async (): Promise<GuestKernel | undefined> => {
    const s = JSON.parse(await Deno.readTextFile(stampPath).catch(() => "null")) as
      | KernelStamp
      | null;
    if (!s || s.stamp !== "bpfpack.vm.kernel.v1" || s.release !== release) return undefined;
    if (!(await exists(`${dir}/vmlinuz`))) return undefined;
    return {
      arch,
      series,
      abi,
      release,
      image: s.image,
      vmlinuz: `${dir}/vmlinuz`,
      modules: s.modules.map((m) => `${dir}/modules/${m}`),
      dir,
    };
  };
  const cached = await done();
  if (cached) return cached;
  return await withLock(`${dir}.lock`, async () => {
    const again = await done();
    if (again) return again;
    const { debArch } = archInfo(arch);
    const apt = await openAptState(kernels, debArch);
    const names = [`linux-image-${release}`, `linux-image-${release}-unsigned`];
    const known = await showPackages(apt, names, {
      defaultRelease: DEBIAN_SERIES[series].defaultRelease,
    });
    const image = names.map((n) => known.get(n)).find((p) => p !== undefined);
    if (!image) {
      throw new Error(
        `${names[0]} is not in the package lists of ${apt.dir}: the ABI ${abi} may have just ` +
          "left the archive; delete that directory's updated-at file and retry to refresh them",
      );
    }
    say(`kernel image ${image.name} ${image.version} (${mb(image.size)})`);
    const [deb] = await fetchPackages(apt, [image], {
      cacheDir: debsDir(arch),
      series,
      onProgress: say,
    });
    const work = await Deno.makeTempDir({ dir: vmCacheDir(), prefix: "work-" });
    try {
      await pipe(["dpkg-deb", ["--fsys-tarfile", deb]], [
        "tar",
        ["-x", "-C", work, `./boot/vmlinuz-${release}`, `./lib/modules/${release}`],
      ]);
      const modDir = `${work}/lib/modules/${release}`;
      const modules = await resolveModules(modDir, WANTED[arch]);
      await removeIfExists(dir);
      await Deno.mkdir(`${dir}/modules`, { recursive: true });
      await Deno.rename(`${work}/boot/vmlinuz-${release}`, `${dir}/vmlinuz`);
      for (const m of modules) await Deno.rename(m, `${dir}/modules/${m.replace(/^.*\//, "")}`);
      const stamp: KernelStamp = {
        stamp: "bpfpack.vm.kernel.v1",
        abi,
        release,
        image: { name: image.name, version: image.version },
        modules: modules.map((m) => m.replace(/^.*\//, "")),
      };
      await writeFileAtomic(stampPath, JSON.stringify(stamp, null, 2) + "\n");
      say(
        `kernel ready: ${mb((await Deno.stat(`${dir}/vmlinuz`)).size)} image, modules: ${
          stamp.modules.join(" ") || "(all built in)"
        }`,
      );
      await removeIfExists(deb); // the extracted files are the cache
    } finally {
      await removeIfExists(work);
    }
    return (await done())!;
  });
}

/** The guest userland of one arch: busybox and the glibc set (shared by every kernel). */
async function guestUserland(arch: VmArch, say: (m: string) => void): Promise<string> {
  const dir = `${vmCacheDir()}/userland/${arch}`;
  const stamp = `${dir}/userland.json`;
  if (await exists(stamp)) return dir;
  return await withLock(`${dir}.lock`, async () => {
    if (await exists(stamp)) return dir;
    const { debArch } = archInfo(arch);
    const apt = await openAptState(defaultCacheDir(), debArch);
    const known = await showPackages(apt, USERLAND_PACKAGES);
    const infos: PackageInfo[] = USERLAND_PACKAGES.map((n) => {
      const p = known.get(n);
      if (!p) {
        throw new Error(`${n} is not in the ${debArch} package lists of ${apt.dir}: refresh them`);
      }
      return p;
    });
    say(`userland ${infos.map((i) => `${i.name} ${i.version}`).join(", ")}`);
    const debs = await fetchPackages(apt, infos, {
      cacheDir: debsDir(arch),
      series: "6.1", // bookworm's userland for every kernel
      onProgress: say,
    });
    const work = await Deno.makeTempDir({ dir: vmCacheDir(), prefix: "work-" });
    try {
      for (const deb of debs) {
        const r = await run("dpkg-deb", ["-x", deb, work], { allowFailure: true });
        if (r.code !== 0) throw new Error(`dpkg-deb -x ${deb}: ${r.stderr.trim()}; delete it`);
      }
      await removeIfExists(dir);
      const triple = `${archInfo(arch).debArch === "arm64" ? "aarch64" : "x86_64"}-linux-gnu`;
      await Deno.mkdir(`${dir}/lib/${triple}`, { recursive: true });
      await Deno.mkdir(`${dir}/bin`, { recursive: true });
      await Deno.copyFile(`${work}/bin/busybox`, `${dir}/bin/busybox`);
      for (const lib of [LOADER[arch].name, ...LIBS]) {
        const src = [`${work}/lib/${triple}/${lib}`, `${work}/usr/lib/${triple}/${lib}`];
        const found = (await Promise.all(src.map(exists))).indexOf(true);
        if (found < 0) throw new Error(`${lib} is missing from ${infos[0].name}: layout changed`);
        await Deno.copyFile(await Deno.realPath(src[found]), `${dir}/lib/${triple}/${lib}`);
      }
      await writeFileAtomic(
        stamp,
        JSON.stringify({ triple, packages: infos.map((i) => `${i.name} ${i.version}`) }) + "\n",
      );
    } finally {
      await removeIfExists(work);
    }
    return dir;
  });
}

/** The base initramfs of a kernel (see {@link baseInitramfs}). */
export interface BaseInitramfs {
  /** The `.cpio.gz` file. */
  path: string;
  /** Its size in bytes. */
  bytes: number;
  /** Whether it was built now (false: from the cache). */
  built: boolean;
}

/**
 * The base initramfs of `kernel` with the target `deno` binary `deno`: busybox, the glibc set,
 * the kernel's modules (and `/etc/bpfpack/modules`, their load order), deno at
 * `/opt/bpfpack/bin/deno`. Built once per (arch, ABI, deno binary) and cached.
 *
 * @example
 * ```ts
 * import { baseInitramfs, guestKernel } from "./kernel_assets.ts";
 * const k = await guestKernel("aarch64", "6.12");
 * console.log((await baseInitramfs(k, ".cache/vm/runtime/aarch64/bin/deno")).bytes);
 * ```
 */
export async function baseInitramfs(
  kernel: GuestKernel,
  deno: string,
  opts: AssetOptions = {},
): Promise<BaseInitramfs> {
  const say = (m: string) => opts.onProgress?.(`${kernel.series} ${kernel.arch}: ${m}`);
  const userland = await guestUserland(kernel.arch, say);
  const key = [
    "bpfpack.vm.base.v1",
    await Deno.readTextFile(`${userland}/userland.json`),
    kernel.release,
    kernel.modules.map((m) => m.replace(/^.*\//, "")).join(","),
    `deno ${await fileDigest(deno)}`,
  ].join("\n");
  const path = `${kernel.dir}/base.cpio.gz`;
  const stampPath = `${kernel.dir}/base.json`;
  const fresh = async () => (await Deno.readTextFile(stampPath).catch(() => "")) === key;
  if (await fresh()) return { path, bytes: (await Deno.stat(path)).size, built: false };
  return await withLock(`${kernel.dir}/base.lock`, async () => {
    if (await fresh()) return { path, bytes: (await Deno.stat(path)).size, built: false };
    const t0 = performance.now();
    const stage = await Deno.makeTempDir({ dir: vmCacheDir(), prefix: "work-" });
    try {
      for (
        const d of ["bin", "dev", "proc", "sys", "tmp", "run", "etc/bpfpack", "opt/bpfpack/bin"]
      ) {
        await Deno.mkdir(`${stage}/${d}`, { recursive: true });
      }
      const link = (from: string, to: string) =>
        Deno.link(from, to).catch(() => Deno.copyFile(from, to));
      await link(`${userland}/bin/busybox`, `${stage}/bin/busybox`);
      await Deno.chmod(`${stage}/bin/busybox`, 0o755);
      const { triple } = JSON.parse(await Deno.readTextFile(`${userland}/userland.json`)) as {
        triple: string;
      };
      await Deno.mkdir(`${stage}/lib/${triple}`, { recursive: true });
      for await (const e of Deno.readDir(`${userland}/lib/${triple}`)) {
        await link(`${userland}/lib/${triple}/${e.name}`, `${stage}/lib/${triple}/${e.name}`);
      }
      const loader = LOADER[kernel.arch];
      await Deno.mkdir(`${stage}/${loader.link.replace(/\/[^/]+$/, "")}`, { recursive: true });
      await Deno.symlink(`/lib/${triple}/${loader.name}`, `${stage}/${loader.link}`);
      if (kernel.modules.length) {
        await Deno.mkdir(`${stage}/lib/modules`, { recursive: true });
        for (const m of kernel.modules) {
          await link(m, `${stage}/lib/modules/${m.replace(/^.*\//, "")}`);
        }
      }
      await Deno.writeTextFile(
        `${stage}/etc/bpfpack/modules`,
        kernel.modules.map((m) => m.replace(/^.*\//, "") + "\n").join(""),
      );
      await link(deno, `${stage}/opt/bpfpack/bin/deno`);
      await Deno.chmod(`${stage}/opt/bpfpack/bin/deno`, 0o755);
      say("building the base initramfs (busybox, glibc, modules, deno)");
      await writeCpioGz(stage, `${path}.tmp`);
      await Deno.rename(`${path}.tmp`, path);
      await writeFileAtomic(stampPath, key);
      const bytes = (await Deno.stat(path)).size;
      say(`base initramfs ${mb(bytes)} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      return { path, bytes, built: true };
    } finally {
      await removeIfExists(stage);
    }
  });
}

/**
 * Writes the tree under `dir` as a gzip-compressed newc cpio archive (owner root), the format
 * the kernel unpacks as an initramfs. Needs `cpio` and `gzip`.
 *
 * @example
 * ```ts
 * import { writeCpioGz } from "./kernel_assets.ts";
 * await writeCpioGz("/tmp/stage", "/tmp/extra.cpio.gz");
 * ```
 */
export async function writeCpioGz(dir: string, out: string): Promise<void> {
  const list = await new Deno.Command("find", { args: ["."], cwd: dir, stdout: "piped" }).output();
  if (!list.success) throw new Error(`find in ${dir} failed`);
  const names = new TextDecoder().decode(list.stdout).split("\n").filter((n) => n && n !== ".")
    .sort();
  let cpio: Deno.ChildProcess;
  try {
    cpio = new Deno.Command("cpio", {
      args: ["-o", "-H", "newc", "-R", "0:0", "--quiet"],
      cwd: dir,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error("cpio is not installed: run scripts/setup.sh (apt-get install cpio)");
    }
    throw e;
  }
  const gzip = new Deno.Command("gzip", {
    args: ["-1", "-n"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const file = await Deno.open(out, { write: true, create: true, truncate: true });
  const w = cpio.stdin.getWriter();
  const feeding = w.write(new TextEncoder().encode(names.join("\n") + "\n")).then(() => w.close());
  const text = (s: ReadableStream<Uint8Array>) => new Response(s).text();
  const [c, g, cErr, gErr] = await Promise.all([
    cpio.status,
    gzip.status,
    text(cpio.stderr),
    text(gzip.stderr),
    feeding,
    cpio.stdout.pipeTo(gzip.stdin),
    gzip.stdout.pipeTo(file.writable),
  ]);
  if (!c.success || !g.success) throw new Error(`cpio | gzip into ${out} failed: ${cErr}${gErr}`);
}

/**
 * The sha256 (hex, first 16 digits) of some files' contents, for cache keys.
 *
 * @example
 * ```ts
 * import { contentKey } from "./kernel_assets.ts";
 * console.log(await contentKey(["/etc/hostname"]));
 * ```
 */
export async function contentKey(paths: string[]): Promise<string> {
  const parts: string[] = [];
  for (const p of paths) parts.push(p, digestBytes(await Deno.readFile(p)));
  return digestBytes(new TextEncoder().encode(parts.join("\n"))).slice(7, 23);
}
