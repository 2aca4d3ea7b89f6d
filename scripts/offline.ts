/**
 * The offline runtime artifact: everything a device needs to run `bpfd`
 * without network, a compiler or `deno compile`'s `denort` base:
 *
 * ```
 * <dir>/bin/deno          the target architecture's deno (npm @deno/linux-*-glibc, pinned)
 * <dir>/bin/bpfd          POSIX sh launcher: exec bin/deno run … lib/bpfd.js "$@"
 * <dir>/lib/bpfd.js       runtime/main.ts bundled into one file (arch-independent)
 * <dir>/build-info.json   input digest, versions, sizes and sha256 of the two files
 * ```
 *
 * Copy the directory anywhere on the device and run `bin/bpfd`. Builds are
 * cached by input digest (runtime/, artifacts/, the npm lock, the Deno
 * version and this script): an unchanged artifact is not rebuilt.
 *
 * @example
 * ```sh
 * deno run -A scripts/offline.ts --arch aarch64 --out out/offline/aarch64
 * adb push out/offline/aarch64 /data/local/tmp/bpfpack
 * adb shell 'printf "HELLO\nexit\n" | /data/local/tmp/bpfpack/bin/bpfd'
 * ```
 * @module
 */

import { sha256 } from "../artifacts/oci.ts";
import { ElfError, ElfFile } from "../artifacts/elf.ts";
import { parseArgs } from "../artifacts/cli.ts";

/** The pinned Deno version (as scripts/setup.sh and scripts/deno/package.json). */
export const DENO_VERSION = "2.9.5";

/** Target architectures of the offline artifact (and of `deno task compile`). */
export type Arch = "x86_64" | "aarch64";

/** Every supported architecture. */
export const ARCHES: readonly Arch[] = ["x86_64", "aarch64"];

/** The npm package holding each architecture's deno, with the registry's checksums. */
export const DENO_PACKAGES: Record<Arch, {
  name: string;
  integrity: string;
  shasum: string;
  elfMachine: number;
}> = {
  x86_64: {
    name: "@deno/linux-x64-glibc",
    integrity:
      "sha512-TDqcnoLe3jlgqYEQm7H7MK6q0JOth+o8iSZzknRODnVkJfPiNnjVn1M1Zc6vnp+ipkyb6Av1/CUlHgHtlq59Gw==",
    shasum: "46625cb06d2f8b466c38d7ff9f3bccb58dc09739",
    elfMachine: 62, // EM_X86_64
  },
  aarch64: {
    name: "@deno/linux-arm64-glibc",
    integrity:
      "sha512-IuYjsz9PGl7CJcNXMuN27KNDB8Q40brK3SG3l+TXMDVW61ZKwcn0fQHBHnXFiiygEwI8by/fKnASEluhZB1atw==",
    shasum: "49782318d3b75b250daaa48693aa63ca5cd5d72b",
    elfMachine: 183, // EM_AARCH64
  },
};

/** Absolute path of the checkout. */
export const ROOT: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const CACHE = `${ROOT}/.cache/offline`;

/** What {@link buildOfflineRuntime} produced. */
export interface OfflineRuntime {
  /** The artifact directory. */
  dir: string;
  /** `<dir>/bin/bpfd`, the launcher. */
  launcher: string;
  /** `<dir>/bin/deno`, the target's deno. */
  deno: string;
  /** `<dir>/lib/bpfd.js`, the bundled runtime. */
  module: string;
  /** File sizes in bytes (total = deno + module + launcher). */
  bytes: { deno: number; module: number; total: number };
}

/** Raised when a step of the build fails; the message says what to do. */
export class OfflineError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OfflineError";
  }
}

const dec = new TextDecoder();

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  let r: Deno.CommandOutput;
  try {
    r = await new Deno.Command(cmd, {
      args,
      cwd: opts.cwd ?? ROOT,
      env: opts.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (e) {
    throw new OfflineError(`cannot run ${cmd}: ${(e as Error).message}; is it installed?`);
  }
  return { ok: r.success, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

/** sha256 of a file as lowercase hex. */
export async function sha256File(path: string): Promise<string> {
  return (await sha256(await Deno.readFile(path))).slice("sha256:".length);
}

/**
 * The ELF `e_machine` of a 64-bit little-endian executable (62 x86_64, 183
 * aarch64), or null if the file is not one.
 */
export function elfMachine(path: string): number | null {
  try {
    return ElfFile.open(path).header.machine;
  } catch (e) {
    if (e instanceof ElfError) return null;
    throw e;
  }
}

/**
 * The architectures named by repeated and/or comma-separated CLI values
 * (`undefined`: all), deduplicated; the first unknown name is returned as
 * `bad` so the caller can say what it accepts.
 */
export function parseArchList(
  values: string[] | undefined,
  parse: (s: string) => Arch | null,
): { arches: Arch[]; bad?: string } {
  const arches: Arch[] = [];
  for (const s of (values ?? [...ARCHES]).flatMap((v) => v.split(",")).filter(Boolean)) {
    const a = parse(s);
    if (!a) return { arches, bad: s };
    if (!arches.includes(a)) arches.push(a);
  }
  return { arches };
}

async function listFiles(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${dir}${rel ? `/${rel}` : ""}`)) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...await listFiles(dir, p));
    else if (e.isFile) out.push(p);
  }
  return out.sort();
}

/**
 * The digest of everything the bundled runtime is made of: runtime/ and
 * artifacts/ sources, the configuration and npm lock that resolve its
 * imports (zod), the bundling deno's version and this script. The bundle is
 * cached under it.
 */
export async function inputDigest(): Promise<string> {
  const files: string[] = [];
  for (const d of ["runtime", "artifacts"]) {
    files.push(...(await listFiles(`${ROOT}/${d}`)).map((f) => `${d}/${f}`));
  }
  files.push("deno.json", "package.json", "package-lock.json", "scripts/offline.ts");
  const parts: string[] = [`deno ${Deno.version.deno}`, `target deno ${DENO_VERSION}`];
  for (const f of files) {
    const p = `${ROOT}/${f}`;
    parts.push(`${f} ${(await exists(p)) ? await sha256File(p) : "-"}`);
  }
  const h = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(parts.join("\n")));
  return new Uint8Array(h).toHex();
}

/** Strings of the lazily imported modules (bundle_ops.ts, bundle_store.ts, node:util). */
const LAZY_MARKERS = ["was not loaded from a bundle", "send BUNDLE_BEGIN first", '"node:util"'];

/** A bundled runtime module. */
export interface BundledRuntime {
  /** Path of the cached module (do not modify; copy it). */
  path: string;
  /** Its size in bytes. */
  bytes: number;
  /** The input digest it was built from. */
  digest: string;
}

/**
 * Bundles runtime/main.ts (with its lazily imported modules and zod) into one
 * JavaScript file with `deno bundle --platform deno`, cached by
 * {@link inputDigest}. `minify` gives a smaller file with unreadable stack
 * traces; the artifact ships the plain one.
 */
export async function bundleRuntime(opts: { minify?: boolean } = {}): Promise<BundledRuntime> {
  const digest = await inputDigest();
  const path = `${CACHE}/bpfd-${digest.slice(0, 24)}${opts.minify ? ".min" : ""}.js`;
  if (!(await exists(path))) {
    await Deno.mkdir(CACHE, { recursive: true });
    const tmp = `${path}.${Deno.pid}.tmp.js`;
    const r = await run(Deno.execPath(), [
      "bundle",
      "--quiet",
      "--platform",
      "deno",
      ...(opts.minify ? ["--minify"] : []),
      "runtime/main.ts",
      "-o",
      tmp,
    ], { env: { NO_COLOR: "1" } });
    if (!r.ok || !(await exists(tmp))) {
      throw new OfflineError(
        `deno bundle of runtime/main.ts failed; fix the error below (deno check runtime/main.ts):\n${r.stderr}`,
      );
    }
    const text = await Deno.readTextFile(tmp);
    // The runtime loads its bundle commands and argument parser with dynamic
    // import(); the bundle must have them inlined, not left as file imports.
    const leftover = /\bimport\(\s*["'][^"']*\.ts["']\s*\)/.exec(text);
    const missing = LAZY_MARKERS.find((m) => !text.includes(m));
    if (leftover || missing) {
      await Deno.remove(tmp);
      throw new OfflineError(
        `the bundle does not contain the lazily imported modules (${
          leftover?.[0] ?? `no ${JSON.stringify(missing)}`
        }); check deno bundle's output of runtime/main.ts`,
      );
    }
    await Deno.rename(tmp, path);
    // Modules of older inputs are not used again; one an hour old is not in
    // use by a concurrent build either.
    for await (const e of Deno.readDir(CACHE)) {
      if (!/^bpfd-[0-9a-f]{24}(\.min)?\.js$/.test(e.name) || e.name.includes(digest.slice(0, 24))) {
        continue;
      }
      const st = await Deno.stat(`${CACHE}/${e.name}`).catch(() => null);
      if (st?.mtime && Date.now() - st.mtime.getTime() > 3600_000) {
        await Deno.remove(`${CACHE}/${e.name}`).catch(() => {});
      }
    }
  }
  return { path, bytes: (await Deno.stat(path)).size, digest };
}

async function checkTarball(path: string, arch: Arch): Promise<void> {
  const bytes = await Deno.readFile(path);
  const pkg = DENO_PACKAGES[arch];
  const sha512 = new Uint8Array(await crypto.subtle.digest("SHA-512", bytes)).toBase64();
  const sha1 = new Uint8Array(await crypto.subtle.digest("SHA-1", bytes)).toHex();
  if (`sha512-${sha512}` !== pkg.integrity || sha1 !== pkg.shasum) {
    throw new OfflineError(
      `${path} does not match the registry's checksums of ${pkg.name}@${DENO_VERSION} ` +
        `(integrity ${pkg.integrity}, shasum ${pkg.shasum}); delete it and run again`,
    );
  }
}

/**
 * The path of `arch`'s deno binary, fetched with `npm pack` into
 * .cache/npm/ and checked against the registry's integrity and shasum. For
 * x86_64 the binary npm installed under scripts/deno/ is used when it is the
 * pinned version.
 */
export async function targetDeno(arch: Arch): Promise<string> {
  const pkg = DENO_PACKAGES[arch];
  if (arch === "x86_64") {
    const dir = `${ROOT}/scripts/deno/node_modules/${pkg.name}`;
    try {
      const v = JSON.parse(await Deno.readTextFile(`${dir}/package.json`)).version;
      if (v === DENO_VERSION && elfMachine(`${dir}/deno`) === pkg.elfMachine) {
        return `${dir}/deno`;
      }
    } catch { /* not installed: fetch it */ }
  }
  const bin = `${CACHE}/deno-${DENO_VERSION}-${arch}`;
  if (await exists(bin)) return bin;
  const npmDir = `${ROOT}/.cache/npm`;
  const tgz = `${npmDir}/${pkg.name.replace("@", "").replace("/", "-")}-${DENO_VERSION}.tgz`;
  if (!(await exists(tgz))) {
    const tmpDir = await Deno.makeTempDir({ dir: await mkdirp(npmDir), prefix: "pack-" });
    try {
      const r = await run("npm", [
        "pack",
        `${pkg.name}@${DENO_VERSION}`,
        "--pack-destination",
        tmpDir,
        "--json",
        "--silent",
      ], { cwd: tmpDir });
      const files = [...Deno.readDirSync(tmpDir)].filter((e) => e.name.endsWith(".tgz"));
      if (!r.ok || files.length !== 1) {
        throw new OfflineError(
          `npm pack ${pkg.name}@${DENO_VERSION} failed (is the npm registry reachable?):\n` +
            r.stderr.split("\n").filter((l) => !/Unknown user config/.test(l)).join("\n"),
        );
      }
      await checkTarball(`${tmpDir}/${files[0].name}`, arch);
      await Deno.rename(`${tmpDir}/${files[0].name}`, tgz);
    } finally {
      await Deno.remove(tmpDir, { recursive: true });
    }
  }
  await checkTarball(tgz, arch);
  const x = await Deno.makeTempDir({ dir: await mkdirp(CACHE), prefix: "extract-" });
  try {
    const r = await run("tar", ["-xzf", tgz, "-C", x, "package/deno"]);
    if (!r.ok) throw new OfflineError(`cannot unpack ${tgz}: ${r.stderr}; delete it and run again`);
    const got = elfMachine(`${x}/package/deno`);
    if (got !== pkg.elfMachine) {
      throw new OfflineError(
        `${pkg.name}'s deno has ELF machine ${got}, want ${pkg.elfMachine}; delete ${tgz}`,
      );
    }
    await Deno.chmod(`${x}/package/deno`, 0o755);
    await Deno.rename(`${x}/package/deno`, bin);
  } finally {
    await Deno.remove(x, { recursive: true });
  }
  return bin;
}

async function mkdirp(dir: string): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  return dir;
}

/** The launcher: resolves its own directory (through symlinks) and execs the bundled runtime. */
export const LAUNCHER = `#!/bin/sh
# bpfd: the bpfpack runtime (offline artifact). Runs lib/bpfd.js with the deno
# next to this script; arguments go to bpfd (see bpfd --help).
self=$0
case $self in */*) ;; *) self=$(command -v -- "$self") ;; esac
real=$(readlink -f -- "$self" 2>/dev/null) && [ -n "$real" ] && self=$real
bin=$(cd -P -- "\${self%/*}" && pwd -P) || exit 127
root=\${bin%/*}
# deno keeps its code cache in DENO_DIR; HOME may be read-only on a device.
if [ -z "\${DENO_DIR:-}" ]; then
  for d in "\${XDG_CACHE_HOME:-\${HOME:-/nonexistent}/.cache}/bpfpack-deno" \\
    "\${TMPDIR:-/tmp}/bpfpack-deno-$(id -u 2>/dev/null || echo 0)" \\
    "/data/local/tmp/bpfpack-deno"; do
    if mkdir -p "$d" 2>/dev/null && [ -w "$d" ]; then
      DENO_DIR=$d
      export DENO_DIR
      break
    fi
  done
fi
DENO_NO_UPDATE_CHECK=1
export DENO_NO_UPDATE_CHECK
exec "$bin/deno" run -A --no-config --no-remote --no-npm "$root/lib/bpfd.js" "$@"
`;

interface BuildInfo {
  arch: Arch;
  denoVersion: string;
  inputDigest: string;
  deno: { sha256: string; bytes: number };
  module: { sha256: string; bytes: number };
  launcher: { bytes: number };
}

async function copyAtomic(from: string, to: string, mode: number): Promise<void> {
  const tmp = `${to}.${Deno.pid}.tmp`;
  await Deno.copyFile(from, tmp);
  await Deno.chmod(tmp, mode);
  await Deno.rename(tmp, to);
}

function result(dir: string, info: BuildInfo): OfflineRuntime {
  return {
    dir,
    launcher: `${dir}/bin/bpfd`,
    deno: `${dir}/bin/deno`,
    module: `${dir}/lib/bpfd.js`,
    bytes: {
      deno: info.deno.bytes,
      module: info.module.bytes,
      total: info.deno.bytes + info.module.bytes + info.launcher.bytes,
    },
  };
}

async function cached(dir: string, digest: string, arch: Arch): Promise<BuildInfo | null> {
  try {
    const info = JSON.parse(await Deno.readTextFile(`${dir}/build-info.json`)) as BuildInfo;
    if (info.inputDigest !== digest || info.arch !== arch) return null;
    const sizes = await Promise.all(
      ["bin/deno", "lib/bpfd.js", "bin/bpfd"].map(async (f) =>
        (await Deno.stat(`${dir}/${f}`)).size
      ),
    );
    if (
      sizes[0] !== info.deno.bytes || sizes[1] !== info.module.bytes ||
      sizes[2] !== info.launcher.bytes
    ) return null;
    return info;
  } catch {
    return null;
  }
}

/**
 * Builds (or finds up to date) the offline runtime for `arch` in `outDir`
 * (default `out/offline/<arch>`): the target's deno, the bundled runtime and
 * the launcher. Needs npm for aarch64 the first time (the tarball is cached
 * in .cache/npm/).
 *
 * @example
 * ```ts
 * import { buildOfflineRuntime } from "./offline.ts";
 * const a = await buildOfflineRuntime({ arch: "aarch64" });
 * console.log(a.launcher, a.bytes.total);
 * ```
 */
export async function buildOfflineRuntime(
  opts: { arch: Arch; outDir?: string },
): Promise<OfflineRuntime> {
  const arch = opts.arch;
  if (!ARCHES.includes(arch)) {
    throw new OfflineError(`unknown arch ${JSON.stringify(arch)}: use ${ARCHES.join(" or ")}`);
  }
  const out = opts.outDir ?? `${ROOT}/out/offline/${arch}`;
  await Deno.mkdir(out, { recursive: true });
  const dir = await Deno.realPath(out);
  const have = await cached(dir, await inputDigest(), arch);
  if (have) return result(dir, have);

  await Deno.remove(`${dir}/build-info.json`).catch(() => {});
  const mod = await bundleRuntime();
  const deno = await targetDeno(arch);
  await Deno.mkdir(`${dir}/bin`, { recursive: true });
  await Deno.mkdir(`${dir}/lib`, { recursive: true });
  await copyAtomic(deno, `${dir}/bin/deno`, 0o755);
  await copyAtomic(mod.path, `${dir}/lib/bpfd.js`, 0o644);
  const launcher = new TextEncoder().encode(LAUNCHER);
  await Deno.writeFile(`${dir}/bin/bpfd.${Deno.pid}.tmp`, launcher, { mode: 0o755 });
  await Deno.chmod(`${dir}/bin/bpfd.${Deno.pid}.tmp`, 0o755);
  await Deno.rename(`${dir}/bin/bpfd.${Deno.pid}.tmp`, `${dir}/bin/bpfd`);
  const info: BuildInfo = {
    arch,
    denoVersion: DENO_VERSION,
    inputDigest: mod.digest,
    deno: { sha256: await sha256File(`${dir}/bin/deno`), bytes: (await Deno.stat(deno)).size },
    module: { sha256: await sha256File(`${dir}/lib/bpfd.js`), bytes: mod.bytes },
    launcher: { bytes: launcher.length },
  };
  await Deno.writeTextFile(`${dir}/build-info.json.${Deno.pid}.tmp`, JSON.stringify(info, null, 2));
  await Deno.rename(`${dir}/build-info.json.${Deno.pid}.tmp`, `${dir}/build-info.json`);
  return result(dir, info);
}

const HELP = `scripts/offline.ts — the offline bpfd artifact for a device

Usage: deno run -A scripts/offline.ts [--arch x86_64|aarch64] [--out DIR] [--json]

Writes DIR/bin/deno (the target's deno ${DENO_VERSION} from npm, checksum-checked),
DIR/lib/bpfd.js (runtime/main.ts bundled into one file) and DIR/bin/bpfd (a
POSIX sh launcher). Copy DIR to the device and run DIR/bin/bpfd; no network,
compiler or denort is needed there. Rebuilt only when its inputs change.

Options:
  --arch ARCH   x86_64 or aarch64 (arm64); repeat for both (default: both)
  --out DIR     output directory (default out/offline/<arch>; with two
                arches, DIR/<arch>)
  --json        print the result as JSON on stdout
  -h, --help    this text

Exit status: 0 built, 1 failure, 2 usage error.`;

/** Normalises an architecture name (`arm64`/`amd64` accepted); null if unknown. */
export function parseArch(s: string): Arch | null {
  const a = s === "arm64" ? "aarch64" : s === "amd64" || s === "x64" ? "x86_64" : s;
  return (ARCHES as readonly string[]).includes(a) ? a as Arch : null;
}

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        arch: { type: "string", multiple: true },
        out: { type: "string" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`offline: ${(e as Error).message} (see --help)`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const { arches, bad } = parseArchList(values.arch, parseArch);
  if (bad !== undefined) {
    console.error(`offline: unknown arch ${JSON.stringify(bad)}: use x86_64 or aarch64`);
    return 2;
  }
  const results: Record<string, OfflineRuntime> = {};
  try {
    for (const arch of arches) {
      const outDir = values.out === undefined
        ? undefined
        : arches.length > 1
        ? `${values.out}/${arch}`
        : values.out;
      const r = await buildOfflineRuntime({ arch, outDir });
      results[arch] = r;
      if (!values.json) {
        const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
        console.error(
          `offline: ${arch}: ${r.dir} (deno ${mb(r.bytes.deno)}, bpfd.js ${
            (r.bytes.module / 1e3).toFixed(0)
          } kB, total ${mb(r.bytes.total)}); run ${r.launcher}`,
        );
      }
    }
  } catch (e) {
    console.error(`offline: ${e instanceof OfflineError ? e.message : (e as Error).stack}`);
    return 1;
  }
  if (values.json) console.log(JSON.stringify(results, null, 2));
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
