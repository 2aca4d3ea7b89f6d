/**
 * Debian kernels: resolve the current ABI of a series from the archive's meta
 * packages (`linux-headers-cloud-arm64`, `linux-image-cloud-amd64`, …) in a
 * private apt state, download `linux-headers-<abi>-common` +
 * `linux-headers-<abi>-<flavour>` (header tree) and
 * `linux-image-<abi>-<flavour>` (BTF from its vmlinuz, no boot), and cache the
 * results per (abi, arch) under `<cacheDir>/debian/<abi>/<arch>/`:
 *
 * ```
 * headers/        merged tree        headers.json  stamp, written last
 * btf/vmlinux.btf btf/vmlinux.h      btf.json      stamp, written last
 * ```
 *
 * A complete entry (stamp present) is reused without downloading; with
 * package lists younger than `listsMaxAgeMs` nothing touches the network.
 *
 * @example
 * ```ts
 * import { resolveDebian } from "./debian.ts";
 * const k = await resolveDebian({ kind: "debian", series: "6.1", arch: "aarch64" }, {
 *   cacheDir: "/work/main/.cache/kernels",
 *   want: ["headers", "btf"],
 *   onProgress: console.log,
 * });
 * console.log(k.release, k.headers?.dir, k.btf?.vmlinuxH);
 * ```
 * @module
 */

import { z } from "zod";
import {
  type AptState,
  downloadPackages,
  listsToken,
  openAptState,
  type PackageInfo,
  showPackage,
  showPackages,
  updateLists,
} from "./apt.ts";
import { type Arch, archInfo, ArchSchema } from "./arch.ts";
import { BTF_FILES, BtfDirStampSchema, findBtf, writeBtfDir } from "./btf.ts";
import { digestFile, digestTree } from "./digest.ts";
import { KernelInputError } from "./errors.ts";
import { pipe, run } from "./exec.ts";
import {
  exists,
  readJson,
  removeIfExists,
  replaceDir,
  siblingTempDir,
  sweepStale,
  withLock,
  writeFileAtomic,
} from "./fs_util.ts";
import { checkTreeArch, mergeHeaderTree, readTreeFacts, treeDigestRoots } from "./header_tree.ts";
import { unpackKernelImage } from "./kernel_image.ts";
import type { DebianSeries, KernelInputs, PackageRef, ResolveOptions } from "./types.ts";
import { compareVersions, findBanner, versionCodeFromRelease } from "./version.ts";

/**
 * Per-series archive settings.
 *
 * @example
 * ```ts
 * import { DEBIAN_SERIES } from "./debian.ts";
 * console.log(DEBIAN_SERIES["6.12"].defaultRelease); // "bookworm-backports"
 * ```
 */
export const DEBIAN_SERIES: Record<DebianSeries, { suite: string; defaultRelease?: string }> = {
  "6.1": { suite: "bookworm" },
  "6.12": { suite: "bookworm-backports", defaultRelease: "bookworm-backports" },
};

const PackageRefSchema = z.object({ name: z.string(), version: z.string() });

const HeadersStampSchema = z.object({
  stamp: z.literal("bpfpack.kernels.headers.v1"),
  abi: z.string(),
  arch: ArchSchema,
  release: z.string(),
  version: z.string().optional(),
  versionCode: z.number().int().positive(),
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  files: z.number().int().positive(),
  bytes: z.number().int().positive(),
  materialisedLinks: z.number().int(),
  skippedLinks: z.array(z.string()),
  packages: z.array(PackageRefSchema),
});
type HeadersStamp = z.infer<typeof HeadersStampSchema>;

const DebianBtfStampSchema = z.object({
  stamp: z.literal("bpfpack.kernels.debian-btf.v1"),
  abi: z.string(),
  arch: ArchSchema,
  release: z.string(),
  version: z.string().optional(),
  versionCode: z.number().int().positive(),
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  bytes: z.number().int().positive(),
  image: z.object({ format: z.string(), compression: z.string() }),
  packages: z.array(PackageRefSchema),
});
type DebianBtfStamp = z.infer<typeof DebianBtfStampSchema>;

type Say = (msg: string) => void;

/** What every step of one Debian resolve shares. */
interface Ctx {
  apt: AptState;
  cacheDir: string;
  series: DebianSeries;
  arch: Arch;
  say: Say;
}

/** A build of one (abi, arch) cache entry. */
interface BuildCtx extends Ctx {
  abi: string;
  entryDir: string;
  /** Candidate info of the ABI's packages, looked up once. */
  known: Map<string, PackageInfo>;
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/**
 * The upstream version of a Debian kernel package version
 * (`6.1.119-1` → `6.1.119`, `6.12.9-1~bpo12+1` → `6.12.9`).
 *
 * @example
 * ```ts
 * import { upstreamVersion } from "./debian.ts";
 * console.log(upstreamVersion("6.12.9-1~bpo12+1")); // "6.12.9"
 * ```
 */
export function upstreamVersion(packageVersion: string): string {
  return packageVersion.replace(/^\d+:/, "").replace(/-[^-]*$/, "");
}

/**
 * The ABI named by a meta package's dependency, e.g.
 * `linux-image-6.1.0-28-cloud-arm64` → `6.1.0-28`; `undefined` if it is not
 * such a name.
 *
 * @example
 * ```ts
 * import { abiFromPackage } from "./debian.ts";
 * console.log(abiFromPackage("linux-headers-6.12.9+deb12-cloud-amd64", "cloud-amd64")); // "6.12.9+deb12"
 * ```
 */
export function abiFromPackage(name: string, flavour: string): string | undefined {
  const m = new RegExp(`^linux-(?:headers|image)-(.+)-${flavour}(?:-unsigned)?$`).exec(name);
  return m?.[1];
}

async function entryComplete(
  entryDir: string,
  want: readonly string[],
): Promise<{ headers?: HeadersStamp; btf?: DebianBtfStamp } | undefined> {
  const out: { headers?: HeadersStamp; btf?: DebianBtfStamp } = {};
  if (want.includes("headers")) {
    out.headers = await readJson(`${entryDir}/headers.json`, HeadersStampSchema);
    if (!out.headers || !(await exists(`${entryDir}/headers/include/linux/sched.h`))) {
      return undefined;
    }
  }
  if (want.includes("btf")) {
    out.btf = await readJson(`${entryDir}/btf.json`, DebianBtfStampSchema);
    const dirStamp = await readJson(`${entryDir}/btf/${BTF_FILES.stamp}`, BtfDirStampSchema);
    if (!out.btf || !dirStamp || dirStamp.digest !== out.btf.digest) return undefined;
  }
  return out;
}

/** The newest ABI of a series with a complete cache entry for `arch` and `want`. */
async function newestCachedAbi(
  cacheDir: string,
  series: DebianSeries,
  arch: Arch,
  want: readonly string[],
): Promise<string | undefined> {
  const abis: string[] = [];
  try {
    for await (const e of Deno.readDir(`${cacheDir}/debian`)) {
      if (e.isDirectory && e.name.startsWith(`${series}.`)) abis.push(e.name);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  abis.sort(compareVersions).reverse();
  for (const abi of abis) {
    if (await entryComplete(`${cacheDir}/debian/${abi}/${arch}`, want)) return abi;
  }
  return undefined;
}

async function requirePackage(ctx: Ctx, name: string): Promise<PackageInfo> {
  const { apt, series } = ctx;
  const info = await showPackage(apt, name, {
    defaultRelease: DEBIAN_SERIES[series].defaultRelease,
  });
  if (!info) {
    throw new KernelInputError(
      "not-found",
      `package ${name} is not in the ${DEBIAN_SERIES[series].suite} package lists for ` +
        `${apt.debArch}: old ABIs vanish from the archive, so refresh the lists (refresh: true), ` +
        `and check that ${apt.dir}/srcparts/debian.sources lists the ` +
        `${DEBIAN_SERIES[series].suite} suite with the main component`,
    );
  }
  return info;
}

const AbiMemoSchema = z.record(
  z.string(),
  z.object({ token: z.string(), abi: z.string(), version: z.string() }),
);

/**
 * Resolve the current ABI of a series from its meta package. The answer is
 * memoised per package-lists update (`<apt>/abi-memo.json`), so a warm resolve
 * does not even run apt-cache.
 */
async function currentAbi(
  ctx: Ctx,
  opts: { headersMeta: boolean },
): Promise<{ abi: string; metaName: string; metaVersion: string }> {
  const { apt, series } = ctx;
  const { flavour } = archInfo(ctx.arch);
  const metaName = `linux-${opts.headersMeta ? "headers" : "image"}-${flavour}`;
  const memoPath = `${apt.dir}/abi-memo.json`;
  const key = `${metaName}@${DEBIAN_SERIES[series].suite}`;
  const token = await listsToken(apt);
  const memo = (await readJson(memoPath, AbiMemoSchema)) ?? {};
  const hit = memo[key];
  if (token && hit && hit.token === token && hit.abi.startsWith(`${series}.`)) {
    return { abi: hit.abi, metaName, metaVersion: hit.version };
  }
  const meta = await requirePackage(ctx, metaName);
  const abi = meta.depends.map((d) => abiFromPackage(d, flavour)).find((a) => a !== undefined);
  if (!abi) {
    throw new KernelInputError(
      "not-found",
      `${metaName} ${meta.version} depends on ${meta.depends.join(", ")}: none names a ` +
        `linux-*-<abi>-${flavour} package; the archive layout changed, update compiler/kernels/debian.ts`,
    );
  }
  if (!abi.startsWith(`${series}.`)) {
    throw new KernelInputError(
      "not-found",
      `the candidate of ${metaName} is ${meta.version} (ABI ${abi}), not a ${series} kernel: ` +
        `check the suites in ${apt.dir}/srcparts/debian.sources (${series} comes from ` +
        `${DEBIAN_SERIES[series].suite})`,
    );
  }
  if (token) {
    memo[key] = { token, abi, version: meta.version };
    await writeFileAtomic(memoPath, JSON.stringify(memo, null, 2) + "\n");
  }
  return { abi, metaName, metaVersion: meta.version };
}

/**
 * Download (or reuse) the candidate versions `infos` (from {@link showPackages} in `apt`) into
 * `<cacheDir>/debs`, each checked against the archive's sha256, exactly as the kernel inputs
 * are fetched; returns the .deb paths in the order asked. `series` picks the suite apt prefers
 * (use the series whose lists `infos` came from). For callers that need more of a Debian kernel
 * than its headers and BTF, e.g. the VM lab's kernel image and guest userland.
 *
 * @example
 * ```ts
 * import { openAptState, showPackages } from "./apt.ts";
 * import { fetchPackages } from "./debian.ts";
 * const apt = await openAptState("/work/main/.cache/kernels", "arm64");
 * const infos = [...(await showPackages(apt, ["busybox-static"])).values()];
 * const [deb] = await fetchPackages(apt, infos, { cacheDir: "/work/main/.cache/vm", series: "6.1" });
 * ```
 */
export function fetchPackages(
  apt: AptState,
  infos: PackageInfo[],
  opts: { cacheDir: string; series: DebianSeries; onProgress?: (msg: string) => void },
): Promise<string[]> {
  const arch: Arch = apt.debArch === "arm64" ? "aarch64" : "x86_64";
  const say: Say = (m) => opts.onProgress?.(m);
  return fetchDebs({ apt, cacheDir: opts.cacheDir, series: opts.series, arch, say }, infos);
}

/** Download (or reuse from `<cacheDir>/debs`) packages; checks the archive's sha256. */
async function fetchDebs(ctx: Ctx, infos: PackageInfo[]): Promise<string[]> {
  // One downloader at a time: arm64 and amd64 resolves share the `_all` .debs.
  return await withLock(`${ctx.cacheDir}/debs.lock`, () => fetchDebsLocked(ctx, infos));
}

async function fetchDebsLocked(ctx: Ctx, infos: PackageInfo[]): Promise<string[]> {
  const { apt, cacheDir, series, say } = ctx;
  const debs = `${cacheDir}/debs`;
  await Deno.mkdir(debs, { recursive: true });
  const have = new Map<string, string>();
  for await (const e of Deno.readDir(debs)) {
    if (e.name.endsWith(".deb")) have.set(e.name, `${debs}/${e.name}`);
  }
  const encodeVersion = (v: string) => v.replace(/:/g, "%3a");
  // `name_version_arch.deb`: the arch matters, the same name and version exist per architecture.
  const prefixOf = (i: PackageInfo) =>
    `${i.name}_${encodeVersion(i.version)}_${i.architecture ? `${i.architecture}.deb` : ""}`;
  const missing = infos.filter((i) => ![...have.keys()].some((f) => f.startsWith(prefixOf(i))));
  if (missing.length > 0) {
    const total = missing.reduce((n, i) => n + i.size, 0);
    say(`downloading ${missing.map((i) => `${i.name} ${i.version}`).join(", ")} (${mb(total)})`);
    const t0 = performance.now();
    await downloadPackages(apt, missing.map((i) => i.name), {
      destDir: debs,
      defaultRelease: DEBIAN_SERIES[series].defaultRelease,
      onProgress: say,
    });
    say(`downloaded ${mb(total)} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const paths: string[] = [];
  for (const info of infos) {
    const prefix = prefixOf(info);
    let file: string | undefined;
    for await (const e of Deno.readDir(debs)) {
      if (e.name.startsWith(prefix) && e.name.endsWith(".deb")) file = `${debs}/${e.name}`;
    }
    if (!file) {
      throw new KernelInputError(
        "not-found",
        `${info.name} ${info.version} was not downloaded into ${debs}; retry (refresh: true)`,
      );
    }
    if (info.sha256) {
      const got = (await digestFile(file)).slice("sha256:".length);
      if (got !== info.sha256) {
        await removeIfExists(file);
        throw new KernelInputError(
          "extract-failed",
          `${file} does not match the archive's sha256 (${got} ≠ ${info.sha256}); it was ` +
            "deleted: retry to download it again",
        );
      }
    }
    paths.push(file);
  }
  return paths;
}

async function extractDeb(deb: string, dest: string): Promise<void> {
  await Deno.mkdir(dest, { recursive: true });
  const r = await run("dpkg-deb", ["-x", deb, dest], { allowFailure: true });
  if (r.code !== 0) {
    throw new KernelInputError(
      "extract-failed",
      `dpkg-deb -x ${deb} failed: ${r.stderr.trim()}; delete the file and retry to download it again`,
    );
  }
}

/** Remove arch-specific .debs once their entry is complete (`_all` ones are shared). */
async function dropDebs(paths: string[]): Promise<void> {
  for (const p of paths) if (!p.endsWith("_all.deb")) await removeIfExists(p);
}

/** Candidate info of the ABI's concrete packages, in one apt-cache run. */
function concretePackages(ctx: Ctx, abi: string): Promise<Map<string, PackageInfo>> {
  const release = `${abi}-${archInfo(ctx.arch).flavour}`;
  return showPackages(ctx.apt, [
    `linux-headers-${release}`,
    `linux-headers-${abi}-common`,
    `linux-image-${release}`,
    `linux-image-${release}-unsigned`,
  ], { defaultRelease: DEBIAN_SERIES[ctx.series].defaultRelease });
}

async function buildHeaders(b: BuildCtx): Promise<HeadersStamp> {
  const { cacheDir, arch, abi, entryDir, known, say } = b;
  const { flavour } = archInfo(arch);
  const release = `${abi}-${flavour}`;
  const flavourPkg = known.get(`linux-headers-${release}`) ??
    await requirePackage(b, `linux-headers-${release}`);
  const commonName = flavourPkg.depends.find((d) => /^linux-headers-.+-common$/.test(d)) ??
    `linux-headers-${abi}-common`;
  const commonPkg = known.get(commonName) ??
    await requirePackage(b, commonName);
  const debs = await fetchDebs(b, [commonPkg, flavourPkg]);
  const work = await Deno.makeTempDir({ dir: cacheDir, prefix: "work-" });
  try {
    say(`extracting ${commonPkg.name} and ${flavourPkg.name}`);
    for (const deb of debs) await extractDeb(deb, `${work}/root`);
    const sourceDir = `usr/src/${commonName}`;
    const buildDir = `usr/src/linux-headers-${release}`;
    const dest = await siblingTempDir(`${entryDir}/headers`);
    try {
      say(`merging the ${arch} header tree`);
      const stats = await mergeHeaderTree({ root: `${work}/root`, sourceDir, buildDir }, dest, {
        arch,
        hardLink: true, // the extraction is private and deleted below
      });
      const facts = await readTreeFacts(dest);
      checkTreeArch(facts, { arch, where: flavourPkg.name });
      if (facts.release !== release) {
        throw new KernelInputError(
          "extract-failed",
          `${flavourPkg.name} says its release is ${facts.release}, expected ${release}: ` +
            "the package layout changed; update compiler/kernels/debian.ts",
        );
      }
      const digest = await digestTree(dest, { roots: treeDigestRoots(arch) });
      await replaceDir(dest, `${entryDir}/headers`);
      const stamp: HeadersStamp = {
        stamp: "bpfpack.kernels.headers.v1",
        abi,
        arch,
        release,
        version: facts.version,
        versionCode: facts.versionCode ??
          versionCodeFromRelease(upstreamVersion(flavourPkg.version))!,
        digest: digest.digest,
        files: digest.files,
        bytes: digest.bytes,
        materialisedLinks: stats.materialised,
        skippedLinks: stats.skipped,
        packages: [commonPkg, flavourPkg].map((p) => ({ name: p.name, version: p.version })),
      };
      await writeFileAtomic(`${entryDir}/headers.json`, JSON.stringify(stamp, null, 2) + "\n");
      say(
        `header tree ready: ${digest.files} files, ${mb(digest.bytes)}, ${stats.materialised} ` +
          `symlinks materialised${
            stats.skipped.length ? `, ${stats.skipped.length} dangling skipped` : ""
          }`,
      );
      await dropDebs(debs);
      return stamp;
    } catch (e) {
      await removeIfExists(dest);
      throw e;
    }
  } finally {
    await removeIfExists(work);
  }
}

async function buildBtf(b: BuildCtx): Promise<DebianBtfStamp> {
  const { apt, cacheDir, arch, abi, entryDir, known, say } = b;
  const { flavour } = archInfo(arch);
  const release = `${abi}-${flavour}`;
  const image = known.get(`linux-image-${release}`) ??
    known.get(`linux-image-${release}-unsigned`) ??
    await requirePackage(b, `linux-image-${release}`);
  const [deb] = await fetchDebs(b, [image]);
  const work = await Deno.makeTempDir({ dir: cacheDir, prefix: "work-" });
  try {
    say(`extracting /boot/vmlinuz-${release} from ${image.name}`);
    await pipe(["dpkg-deb", ["--fsys-tarfile", deb]], [
      "tar",
      ["-x", "-C", work, "--wildcards", "./boot/vmlinuz-*"],
    ]);
    const vmlinuz = `${work}/boot/vmlinuz-${release}`;
    if (!(await exists(vmlinuz))) {
      throw new KernelInputError(
        "extract-failed",
        `${image.name} has no /boot/vmlinuz-${release}: the package layout changed; ` +
          "update compiler/kernels/debian.ts",
      );
    }
    const unpacked = await unpackKernelImage(await Deno.readFile(vmlinuz), { tmpDir: work });
    say(
      `kernel image: ${unpacked.format}, ${unpacked.compression}, ${mb(unpacked.data.length)} ` +
        "uncompressed",
    );
    const blob = findBtf(unpacked.data);
    if (!blob) {
      throw new KernelInputError(
        "btf-not-found",
        `no BTF in ${image.name} (${unpacked.format}, ${unpacked.compression}): the kernel may ` +
          "be built without CONFIG_DEBUG_INFO_BTF; use headers mode for this kernel",
      );
    }
    const banner = findBanner(unpacked.data, release);
    say(`BTF found (${mb(blob.length)}); generating vmlinux.h with bpftool`);
    const dirStamp = await writeBtfDir(blob, `${entryDir}/btf`);
    if (dirStamp.arch && dirStamp.arch !== arch) {
      throw new KernelInputError(
        "invalid-input",
        `the BTF of ${image.name} describes ${dirStamp.arch}, not ${arch}: the package lists ` +
          `in ${apt.dir} are for the wrong architecture; delete that directory and retry`,
      );
    }
    const stamp: DebianBtfStamp = {
      stamp: "bpfpack.kernels.debian-btf.v1",
      abi,
      arch,
      release,
      version: banner?.version,
      versionCode: versionCodeFromRelease(upstreamVersion(image.version))!,
      digest: dirStamp.digest,
      bytes: dirStamp.bytes,
      image: { format: unpacked.format, compression: unpacked.compression },
      packages: [{ name: image.name, version: image.version }],
    };
    await writeFileAtomic(`${entryDir}/btf.json`, JSON.stringify(stamp, null, 2) + "\n");
    await dropDebs([deb]);
    return stamp;
  } finally {
    await removeIfExists(work);
  }
}

/**
 * Resolve a Debian kernel of a series for an architecture: current ABI from the
 * archive (private apt state), header tree and/or BTF from its packages, cached
 * per (abi, arch). Falls back to the newest complete cache entry of the series
 * when the archive is unreachable and no package lists exist.
 *
 * @example
 * ```ts
 * import { resolveDebian } from "./debian.ts";
 * const k = await resolveDebian({ kind: "debian", series: "6.12", arch: "x86_64" }, {
 *   cacheDir: "/work/main/.cache/kernels",
 *   want: ["btf"],
 * });
 * console.log(k.abi, k.btf?.digest);
 * ```
 */
export async function resolveDebian(
  spec: { kind: "debian"; series: DebianSeries; arch: Arch },
  opts: ResolveOptions & { cacheDir: string },
): Promise<KernelInputs> {
  const { series, arch } = spec;
  const { flavour, debArch } = archInfo(arch);
  const cacheDir = opts.cacheDir;
  const say: Say = (m) => opts.onProgress?.(`debian ${series} ${arch}: ${m}`);
  const want = [...new Set(opts.want)];
  const apt = await openAptState(cacheDir, debArch, { config: opts.aptConfig });
  const ctx: Ctx = { apt, cacheDir, series, arch, say };

  let abi: string | undefined;
  for (let attempt = 0;; attempt++) {
    try {
      const lists = await updateLists(apt, {
        maxAgeMs: opts.refresh || attempt > 0 ? 0 : opts.listsMaxAgeMs,
        offline: opts.offline,
        onProgress: say,
      });
      const cur = await currentAbi(ctx, { headersMeta: want.includes("headers") });
      abi = cur.abi;
      say(`current ABI ${abi} (${cur.metaName} ${cur.metaVersion}; lists ${lists})`);
    } catch (e) {
      if (
        attempt === 0 && !opts.offline && e instanceof KernelInputError && e.code === "not-found"
      ) {
        say(`${e.message}; refreshing the package lists and retrying`);
        continue;
      }
      if (!(e instanceof KernelInputError) || e.code !== "network") throw e;
      abi = await newestCachedAbi(cacheDir, series, arch, want);
      if (!abi) throw e;
      say(`archive unreachable; using the newest cached ABI ${abi} (${e.message})`);
    }
    const entryDir = `${cacheDir}/debian/${abi}/${arch}`;
    try {
      const stamps = await withLock(`${cacheDir}/debian/${abi}/${arch}.lock`, async () => {
        const done = await entryComplete(entryDir, want);
        if (done) {
          say(`using cached ${entryDir}`);
          return done;
        }
        await Deno.mkdir(entryDir, { recursive: true });
        // We hold the entry lock: temporaries in the entry are leftovers of a crash.
        await sweepStale(entryDir, { pattern: /\.tmp-/, olderThanMs: 0 });
        await sweepStale(cacheDir, { pattern: /^work-/, olderThanMs: 6 * 3600_000 });
        const build: BuildCtx = {
          ...ctx,
          abi: abi!,
          entryDir,
          known: await concretePackages(ctx, abi!),
        };
        const out: { headers?: HeadersStamp; btf?: DebianBtfStamp } = {};
        if (want.includes("headers")) {
          out.headers = (await entryComplete(entryDir, ["headers"]))?.headers ??
            await buildHeaders(build);
        }
        if (want.includes("btf")) {
          out.btf = (await entryComplete(entryDir, ["btf"]))?.btf ??
            await buildBtf(build);
        }
        return out;
      });
      const h = stamps.headers;
      const b = stamps.btf;
      const packages: PackageRef[] = [...(h?.packages ?? []), ...(b?.packages ?? [])];
      const inputs: KernelInputs = {
        arch,
        release: (h ?? b)!.release,
        version: h?.version ?? b?.version,
        versionCode: h?.versionCode ?? b!.versionCode,
        source: "debian",
        abi,
        flavour,
        packages,
      };
      if (h) inputs.headers = { dir: `${entryDir}/headers`, digest: h.digest };
      if (b) {
        inputs.btf = {
          path: `${entryDir}/btf/${BTF_FILES.blob}`,
          digest: b.digest,
          vmlinuxH: `${entryDir}/btf/${BTF_FILES.header}`,
        };
      }
      if (inputs.version === undefined) delete inputs.version;
      return inputs;
    } catch (e) {
      // The lists may predate an ABI bump that removed the packages: refresh once.
      if (
        attempt === 0 && !opts.offline && e instanceof KernelInputError && e.code === "not-found"
      ) {
        say(`${e.message}; refreshing the package lists and retrying`);
        continue;
      }
      throw e;
    }
  }
}
