/**
 * `deno task compile`: one self-contained `bpfd` executable per target
 * (`deno compile`), optionally with bundles embedded so the device needs no
 * upload: the runtime finds `bundles/<sha256>.tar` next to its main module,
 * and answers `BUNDLE_BEGIN` for them with `have <path>`.
 *
 * It compiles the runtime bundled into one JavaScript file (scripts/offline.ts)
 * from a clean staging folder, so neither `node_modules/` nor the npm deno
 * binary can end up in the executable, and checks the embedded payload's size.
 *
 * `deno compile` needs `denort`, the target's base binary: it downloads it
 * from dl.deno.land, or uses `DENORT_BIN` (`DENORT_BIN_X86_64` /
 * `DENORT_BIN_AARCH64` for one target only). Without either, use the offline
 * artifact (scripts/offline.ts).
 *
 * @example
 * ```sh
 * deno task compile --target aarch64 --bundle out/bundles/opensnoop.oci.tar
 * DENORT_BIN=$HOME/denort-x86_64 deno task compile --target x86_64 --out dist
 * ```
 * @module
 */

import { parseArgs } from "../artifacts/cli.ts";
import { BundleError, bundleTar, openBundle, readBundleFiles, sha256 } from "../artifacts/oci.ts";
import { ManifestError } from "../artifacts/manifest.ts";
import {
  type Arch,
  ARCHES,
  bundleRuntime,
  DENO_PACKAGES,
  DENO_VERSION,
  elfMachine,
  parseArch,
  parseArchList,
  ROOT,
} from "./offline.ts";
import { ElfFile } from "../artifacts/elf.ts";

/** The `deno compile --target` triple of each supported architecture. */
export const TARGETS: Record<Arch, string> = {
  x86_64: "x86_64-unknown-linux-gnu",
  aarch64: "aarch64-unknown-linux-gnu",
};

/** The ELF section in which `deno compile` (libsui) stores the embedded program. */
export const PAYLOAD_SECTION = ".note.sui";

/** Largest believable executable when the base's size is unknown (a denort is ~70–90 MB). */
export const MAX_OUTPUT_BYTES = 150_000_000;

/** Raised when compiling fails; the message says what to do next. */
export class CompileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CompileError";
  }
}

/** What {@link compileArgs} turns into a `deno compile` command line. */
export interface CompileArgsOptions {
  /** Target architecture. */
  arch: Arch;
  /** Entry module, relative to the staging folder (the working directory). */
  entry: string;
  /** Output executable path. */
  output: string;
  /** Files or folders to embed, relative to the staging folder. */
  include?: string[];
}

/**
 * The argv (after the deno executable) that compiles the staged runtime for
 * one target: all permissions (as `deno task bpfd`), no config, lock, npm or
 * remote resolution (the staged module is self-contained JavaScript).
 *
 * @example
 * ```ts
 * import { compileArgs } from "./compile.ts";
 * compileArgs({ arch: "aarch64", entry: "bpfd.js", output: "out/bpfd-aarch64" });
 * // ["compile", "-A", "--no-check", …, "--target", "aarch64-unknown-linux-gnu", …]
 * ```
 */
export function compileArgs(opts: CompileArgsOptions): string[] {
  return [
    "compile",
    "-A",
    "--no-check",
    "--no-config",
    "--no-lock",
    "--no-npm",
    "--no-remote",
    "--target",
    TARGETS[opts.arch],
    "--output",
    opts.output,
    ...(opts.include ?? []).flatMap((i) => ["--include", i]),
    opts.entry,
  ];
}

/** A staging folder ready for `deno compile`. */
export interface Staged {
  /** The folder (a fresh temporary directory; remove it when done). */
  dir: string;
  /** The entry module, relative to `dir`. */
  entry: string;
  /** What to pass as `--include`, relative to `dir`. */
  include: string[];
  /** Every staged file, relative to `dir`. */
  files: string[];
  /** Their total size in bytes. */
  bytes: number;
  /** Embedded bundles: source path → staged name (`bundles/<sha256>.tar`). */
  bundles: Record<string, string>;
}

/**
 * Stages the runtime for compiling: `bpfd.js` (runtime/main.ts bundled into
 * one file, with zod inlined) and each bundle, verified and stored as
 * `bundles/<sha256 of its tar>.tar` (a `.oci` directory is packed into its
 * tar first). Nothing else: no node_modules, no config, no sources.
 */
export async function stageRuntime(
  opts: { bundles?: string[]; arch?: Arch; warn?: (m: string) => void } = {},
): Promise<Staged> {
  const mod = await bundleRuntime();
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-compile-" });
  try {
    await Deno.copyFile(mod.path, `${dir}/bpfd.js`);
    const files = ["bpfd.js"];
    let bytes = mod.bytes;
    const bundles: Record<string, string> = {};
    for (const path of opts.bundles ?? []) {
      let tar: Uint8Array;
      try {
        const bf = await readBundleFiles(path);
        const b = await openBundle(bf);
        const st = await Deno.stat(path);
        tar = st.isFile ? await Deno.readFile(path) : bundleTar(bf);
        if (opts.arch && !b.manifest.objects.some((o) => o.arch === opts.arch)) {
          opts.warn?.(
            `${path} has no ${opts.arch} object (it has ${
              [...new Set(b.manifest.objects.map((o) => o.arch))].join(", ")
            }); embedded anyway`,
          );
        }
      } catch (e) {
        if (e instanceof BundleError || e instanceof ManifestError) {
          throw new CompileError(
            `--bundle ${path}: ${
              (e as Error).message
            }; pass a bundle from deno task build (<tool>.oci.tar or <tool>.oci)`,
          );
        }
        throw e;
      }
      const name = `bundles/${(await sha256(tar)).slice(7)}.tar`;
      if (!files.includes(name)) {
        await Deno.mkdir(`${dir}/bundles`, { recursive: true });
        await Deno.writeFile(`${dir}/${name}`, tar);
        files.push(name);
        bytes += tar.length;
      }
      bundles[path] = name;
    }
    return {
      dir,
      entry: "bpfd.js",
      include: files.length > 1 ? ["bundles"] : [],
      files,
      bytes,
      bundles,
    };
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** The bytes `deno compile` embedded in an executable (its {@link PAYLOAD_SECTION}), or null. */
export function readPayload(path: string): Uint8Array | null {
  const elf = ElfFile.open(path);
  const s = elf.section(PAYLOAD_SECTION);
  return s ? elf.sectionData(s).slice() : null;
}

/** The base binary `deno compile` should use for `arch`, from the environment, or null. */
export function denortFor(arch: Arch, env: Record<string, string | undefined>): string | null {
  return env[`DENORT_BIN_${arch.toUpperCase()}`] || env.DENORT_BIN || null;
}

/** The message for a failed denort download: what to set, and the offline way. */
export function noDenortMessage(arch: Arch, cause: string): string {
  return [
    `deno compile needs denort, the base binary for ${TARGETS[arch]}, and could not download it` +
    ` (${cause.trim() || "no network?"}).`,
    `Next: set DENORT_BIN=/path/to/denort (unzip denort-${
      TARGETS[arch]
    }.zip of Deno ${DENO_VERSION}` +
    ` from https://dl.deno.land/release/v${DENO_VERSION}/ on a machine with network;` +
    ` DENORT_BIN_${arch.toUpperCase()} sets it for this target only), or run with network access.`,
    `Without either, ship the offline artifact instead (the target's deno + the runtime as one` +
    ` JS file, no denort needed): deno run -A scripts/offline.ts --arch ${arch}`,
  ].join("\n");
}

/** The innermost cause of a failed download in deno compile's error output. */
function downloadCause(stderr: string): string {
  const causes = stderr.split("Stack backtrace")[0].split("\n").map((l) =>
    /^\s*\d+: (.+)$/.exec(l)?.[1]
  ).filter(Boolean);
  return causes.at(-1) ?? stderr.split("\n").find((l) => /error/i.test(l)) ?? "";
}

/** What {@link compileRuntime} produced. */
export interface Compiled {
  /** Target architecture. */
  arch: Arch;
  /** Its `--target` triple. */
  target: string;
  /** The executable. */
  output: string;
  /** The base binary given with DENORT_BIN (null: downloaded by deno compile). */
  base: string | null;
  /** Sizes in bytes: the executable, its embedded payload, the staged files, the base. */
  bytes: { output: number; payload: number | null; staged: number; base: number | null };
  /** Embedded bundles: source path → name inside the executable. */
  bundles: Record<string, string>;
}

/** Options of {@link compileRuntime}. */
export interface CompileOptions {
  /** Target architecture. */
  arch: Arch;
  /** Output executable (default `<outDir>/bpfd-<arch>`). */
  output?: string;
  /** Output directory (default `out/`). */
  outDir?: string;
  /** Bundles to embed (`<tool>.oci.tar` or `<tool>.oci`). */
  bundles?: string[];
  /** The environment of `deno compile` (default: this process's). */
  env?: Record<string, string>;
  /** The deno that compiles (default: this one). */
  deno?: string;
  /** Warnings (default: stderr). */
  warn?: (m: string) => void;
}

/**
 * Compiles the runtime for one target into a single executable and checks
 * it: right ELF machine, payload no larger than what was staged (plus
 * metadata), no node_modules inside. Throws {@link CompileError} with the
 * next step when denort is missing.
 *
 * @example
 * ```ts
 * import { compileRuntime } from "./compile.ts";
 * const c = await compileRuntime({ arch: "aarch64", bundles: ["out/bundles/opensnoop.oci.tar"] });
 * console.log(c.output, c.bytes.output);
 * ```
 */
export async function compileRuntime(opts: CompileOptions): Promise<Compiled> {
  const arch = opts.arch;
  if (!ARCHES.includes(arch)) {
    throw new CompileError(`unknown target ${JSON.stringify(arch)}: use ${ARCHES.join(" or ")}`);
  }
  const env = { ...(opts.env ?? Deno.env.toObject()) };
  const warn = opts.warn ?? ((m: string) => console.error(`compile: warning: ${m}`));
  const output = opts.output ?? `${opts.outDir ?? `${ROOT}/out`}/bpfd-${arch}`;
  const want = DENO_PACKAGES[arch].elfMachine;

  const given = denortFor(arch, env);
  const base = given && !given.startsWith("/") ? `${Deno.cwd()}/${given}` : given;
  delete env[`DENORT_BIN_X86_64`];
  delete env[`DENORT_BIN_AARCH64`];
  let baseBytes: number | null = null;
  if (base) {
    let m: number | null;
    try {
      baseBytes = (await Deno.stat(base)).size;
      m = elfMachine(base);
    } catch {
      throw new CompileError(
        `DENORT_BIN=${base} does not exist; point it at an unpacked denort for ${TARGETS[arch]}`,
      );
    }
    if (m !== want) {
      throw new CompileError(
        `DENORT_BIN=${base} is not an ${arch} ELF executable (machine ${m}, want ${want}); ` +
          `set DENORT_BIN_${arch.toUpperCase()} to the ${TARGETS[arch]} denort or pick --target`,
      );
    }
    env.DENORT_BIN = base;
  } else {
    delete env.DENORT_BIN;
  }

  const staged = await stageRuntime({ bundles: opts.bundles, arch, warn });
  try {
    const dirOf = output.includes("/") ? output.slice(0, output.lastIndexOf("/")) : ".";
    await Deno.mkdir(dirOf || "/", { recursive: true });
    const abs = output.startsWith("/") ? output : `${Deno.cwd()}/${output}`;
    const r = await new Deno.Command(opts.deno ?? Deno.execPath(), {
      args: compileArgs({ arch, entry: staged.entry, output: abs, include: staged.include }),
      cwd: staged.dir,
      env: { ...env, NO_COLOR: "1" },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(r.stderr);
    if (!r.success) {
      if (!base && /dl\.deno\.land|base binary|denort/i.test(stderr)) {
        throw new CompileError(noDenortMessage(arch, downloadCause(stderr)));
      }
      throw new CompileError(`deno compile for ${TARGETS[arch]} failed:\n${stderr.trim()}`);
    }
    let sizes: ExecutableCheck;
    try {
      sizes = await checkExecutable(abs, { arch, stagedBytes: staged.bytes, baseBytes });
    } catch (e) {
      await Deno.remove(abs).catch(() => {});
      if (e instanceof CompileError) throw new CompileError(`${e.message} (output deleted)`);
      throw e;
    }
    return {
      arch,
      target: TARGETS[arch],
      output: abs,
      base,
      bytes: { ...sizes, staged: staged.bytes, base: baseBytes },
      bundles: staged.bundles,
    };
  } finally {
    await Deno.remove(staged.dir, { recursive: true }).catch(() => {});
  }
}

/** What {@link checkExecutable} measured. */
export interface ExecutableCheck {
  /** Size of the executable. */
  output: number;
  /** Size of the embedded payload (null: no {@link PAYLOAD_SECTION} found). */
  payload: number | null;
}

/**
 * Checks a compiled executable: the target's ELF machine, an embedded
 * payload no larger than what was staged plus metadata (anything much larger
 * means deno compile embedded more than the staging folder: node_modules, a
 * binary), no node_modules in it, and a believable total size. Throws
 * {@link CompileError} saying what is wrong.
 */
export async function checkExecutable(
  path: string,
  opts: { arch: Arch; stagedBytes: number; baseBytes: number | null },
): Promise<ExecutableCheck> {
  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
  const size = (await Deno.stat(path)).size;
  const m = elfMachine(path);
  if (m !== DENO_PACKAGES[opts.arch].elfMachine) {
    throw new CompileError(`${path}: ELF machine ${m}, not ${opts.arch}`);
  }
  const payload = readPayload(path);
  if (payload) {
    if (payload.length > opts.stagedBytes * 1.25 + 262_144) {
      throw new CompileError(
        `${path}: embedded payload is ${mb(payload.length)} but only ${mb(opts.stagedBytes)} ` +
          `was staged: deno compile picked up more than the staging folder (node_modules?)`,
      );
    }
    if (new TextDecoder("latin1").decode(payload).includes('"n":"node_modules"')) {
      throw new CompileError(`${path}: node_modules was embedded; compile from the staging folder`);
    }
  }
  const limit = opts.baseBytes !== null
    ? opts.baseBytes + opts.stagedBytes * 1.5 + 8_000_000
    : MAX_OUTPUT_BYTES + opts.stagedBytes;
  if (size > limit) {
    throw new CompileError(
      `${path}: ${mb(size)} is more than expected (${mb(limit)}: base ${
        opts.baseBytes === null ? "unknown" : mb(opts.baseBytes)
      } + ${mb(opts.stagedBytes)} staged); check what deno compile embedded`,
    );
  }
  return { output: size, payload: payload?.length ?? null };
}

const HELP = `deno task compile — bpfd as one executable per target (deno compile)

Usage: deno task compile [--target ARCH]… [--out DIR] [--bundle PATH]… [--json]

Compiles the runtime (runtime/main.ts bundled into one file, staged in a clean
folder) with deno compile into DIR/bpfd-<arch>, optionally embedding bundles:
the runtime finds them itself (BUNDLE_BEGIN answers "have <path>", so a host
tool never uploads them).

deno compile needs denort, the target's base binary: it downloads it from
dl.deno.land (network needed once; cached in DENO_DIR), or uses DENORT_BIN
(DENORT_BIN_X86_64 / DENORT_BIN_AARCH64 for one target only). Without either,
use the offline artifact: deno run -A scripts/offline.ts --arch ARCH.

Options:
  --target ARCH   x86_64 or aarch64 (arm64, or the full triple); repeat or
                  comma-separate (default: both)
  --out DIR       output directory (default out/)
  --output FILE   output file (one target only)
  --bundle PATH   embed a bundle (<tool>.oci.tar or <tool>.oci); repeatable
  --json          print the result as JSON on stdout
  -h, --help      this text

Exit status: 0 compiled, 1 failure (the message says what to do), 2 usage.`;

/** Normalises a --target value (arch name or triple); null if unsupported. */
export function parseTarget(s: string): Arch | null {
  const byTriple = ARCHES.find((a) => TARGETS[a] === s);
  return byTriple ?? parseArch(s);
}

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        target: { type: "string", multiple: true },
        out: { type: "string" },
        output: { type: "string" },
        bundle: { type: "string", multiple: true },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`compile: ${(e as Error).message} (see --help)`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const { arches, bad } = parseArchList(values.target, parseTarget);
  if (bad !== undefined) {
    console.error(
      `compile: unsupported target ${JSON.stringify(bad)}: use ${
        ARCHES.map((x) => `${x} (${TARGETS[x]})`).join(" or ")
      }`,
    );
    return 2;
  }
  if (values.output && arches.length !== 1) {
    console.error("compile: --output needs exactly one --target (use --out DIR for several)");
    return 2;
  }
  const results: Compiled[] = [];
  try {
    for (const arch of arches) {
      const c = await compileRuntime({
        arch,
        outDir: values.out,
        output: values.output,
        bundles: values.bundle,
      });
      results.push(c);
      if (!values.json) {
        const mb = (n: number | null) => n === null ? "?" : `${(n / 1e6).toFixed(1)} MB`;
        console.error(
          `compile: ${c.target}: ${c.output} (${mb(c.bytes.output)}; payload ${
            mb(c.bytes.payload)
          }, ${Object.keys(c.bundles).length} bundle(s))`,
        );
      }
    }
  } catch (e) {
    console.error(`compile: ${e instanceof CompileError ? e.message : (e as Error).stack}`);
    return 1;
  }
  if (values.json) console.log(JSON.stringify(results, null, 2));
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
