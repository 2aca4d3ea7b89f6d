/**
 * The build engine: tool BPF C → stripped BPF objects, for one arch and mode
 * per object, with every command line recorded, outputs cached by input
 * digest, compiles run on a small worker pool, and each (arch, mode, kernel)
 * unit proven to target its arch (see `arch_check.ts`) before its objects are
 * returned. `bundle.ts` turns the results into OCI bundles.
 *
 * Modes:
 * - `headers` (BCC style): parse with the target's host triple against the
 *   kernel's header tree (`-nostdinc`, the tree's `-I` list, kconfig.h,
 *   `__KERNEL__`), emit LLVM IR, then `llc -march=bpfel|bpfeb -mcpu=v3`.
 *   Struct offsets are baked in: the object fits one `uname -r`.
 * - `core`: `clang -target bpfel|bpfeb -mcpu=v3 -g` with the arch's
 *   `vmlinux.h` and `-DBPFPACK_CORE`; the kernel applies the `.BTF.ext`
 *   CO-RE relocations at load.
 *
 * Both strip with `llvm-strip -g` (debug info goes; `.BTF`/`.BTF.ext` stay)
 * and map source and kernel paths (`-ffile-prefix-map`) so objects are
 * byte-identical whatever directory the checkout or cache lives in.
 *
 * @example
 * ```ts
 * import { buildAll, loadTool } from "./build.ts";
 * import { resolveKernelInputs } from "./kernel_inputs.ts";
 * const kernel = await resolveKernelInputs({ kind: "running" }, { want: ["btf"] });
 * const tool = await loadTool(".", "opensnoop");
 * const r = await buildAll([{ tool, kernel, mode: "core" }], { root: ".", cacheDir: ".cache/build" });
 * console.log(r.objects[0].entry.digest, r.failures.length);
 * ```
 * @module
 */

import { type ArchInfo, archInfo } from "./arch.ts";
import { absolute } from "./kernels/fs_util.ts";
import {
  ArchMismatchError,
  checkArchLoads,
  checkObjectHeader,
  ctxLoads,
  sectionNames,
} from "./arch_check.ts";
import type { KernelInputs } from "./kernel_inputs.ts";
import { sha256 } from "../artifacts/oci.ts";
import type { ObjectEntry } from "../artifacts/manifest.ts";
import { parseObject, ProgType } from "../artifacts/bpf_object.ts";

/**
 * Build mode (see the module doc).
 *
 * @example
 * ```ts
 * import type { Mode } from "./build.ts";
 * const m: Mode = "core";
 * ```
 */
export type Mode = "headers" | "core";
/**
 * Every mode, in the order builds are listed.
 *
 * @example
 * ```ts
 * import { MODES } from "./build.ts";
 * console.log(MODES.join(",")); // headers,core
 * ```
 */
export const MODES: readonly Mode[] = ["headers", "core"];

/** Bump to invalidate every cached object (cache layout or meaning changed). */
const CACHE_FORMAT = "bpfpack-build-1";
const VERSION_MARK = /bpfpack-version:\s*([0-9A-Za-z][0-9A-Za-z.+_-]*)/;
const enc = new TextEncoder();
const dec = new TextDecoder();

// ---------------------------------------------------------------- tools

/**
 * One tool's BPF source.
 *
 * @example
 * ```ts
 * import type { ToolSource } from "./build.ts";
 * const t: ToolSource = { name: "opensnoop", source: "/src/tools/opensnoop/opensnoop.bpf.c", version: "0.1.0" };
 * ```
 */
export interface ToolSource {
  /** Tool name (`tools/<name>/<name>.bpf.c`). */
  name: string;
  /** Absolute path of the `.bpf.c`. */
  source: string;
  /** From the `bpfpack-version: X` line of the source (`0.0.0` if absent). */
  version: string;
}

/**
 * Raised for a tool that does not exist or cannot be read.
 *
 * @example
 * ```ts
 * import { loadTool, ToolNotFoundError } from "./build.ts";
 * await loadTool(".", "nope").catch((e) => console.log(e instanceof ToolNotFoundError));
 * ```
 */
export class ToolNotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ToolNotFoundError";
  }
}

/**
 * Absolute, normalised path (no `.`/`..` segments, no trailing slash).
 *
 * @example
 * ```ts
 * import { absPath } from "./build.ts";
 * console.log(absPath("/a/./b/../c/")); // /a/c
 * ```
 */
export function absPath(path: string): string {
  return absolute(path);
}

/**
 * Names of the tools under `<root>/tools/` that have a `<name>/<name>.bpf.c`, sorted.
 *
 * @example
 * ```ts
 * import { findTools } from "./build.ts";
 * console.log(await findTools(".")); // ["execsnoop", "opensnoop"]
 * ```
 */
export async function findTools(root: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(`${absPath(root)}/tools`)) {
      if (!e.isDirectory) continue;
      try {
        if ((await Deno.stat(`${absPath(root)}/tools/${e.name}/${e.name}.bpf.c`)).isFile) {
          names.push(e.name);
        }
      } catch { /* not a BPF tool */ }
    }
  } catch {
    throw new ToolNotFoundError(`no tools/ directory under ${absPath(root)}`);
  }
  return names.sort();
}

/**
 * Loads `<root>/tools/<name>/<name>.bpf.c`; throws {@link ToolNotFoundError}
 * naming the known tools when it does not exist.
 *
 * @example
 * ```ts
 * import { loadTool } from "./build.ts";
 * const t = await loadTool(".", "execsnoop");
 * console.log(t.version);
 * ```
 */
export async function loadTool(root: string, name: string): Promise<ToolSource> {
  const source = `${absPath(root)}/tools/${name}/${name}.bpf.c`;
  let text: string;
  try {
    if (!/^[a-z0-9_-]+$/.test(name)) throw new Error("bad name");
    text = await Deno.readTextFile(source);
  } catch {
    const known = await findTools(root).catch(() => []);
    throw new ToolNotFoundError(
      `no tool "${name}": expected ${source} (tools here: ${known.join(", ") || "none"})`,
    );
  }
  return { name, source, version: VERSION_MARK.exec(text)?.[1] ?? "0.0.0" };
}

/** One source file of a compile, by path relative to the root. */
interface SourceFile {
  rel: string;
  digest: string;
  bytes: Uint8Array;
}

const INCLUDE = /^\s*#\s*include\s+"([^"]+)"/gm;

/**
 * The source and every local header it includes with `#include "…"` (found
 * next to the including file or in `<root>/tools/include`), in first-include
 * order. Headers not found locally come from `vmlinux.h` or the kernel tree,
 * which the kernel input digest covers.
 */
async function localSources(root: string, source: string): Promise<SourceFile[]> {
  const out: SourceFile[] = [];
  const seen = new Set<string>();
  const visit = async (path: string) => {
    if (seen.has(path)) return;
    seen.add(path);
    const bytes = await Deno.readFile(path);
    const rel = path.startsWith(root + "/") ? path.slice(root.length + 1) : path;
    out.push({ rel, digest: await sha256(bytes), bytes });
    for (const m of dec.decode(bytes).matchAll(INCLUDE)) {
      const dir = path.slice(0, path.lastIndexOf("/"));
      for (const cand of [`${dir}/${m[1]}`, `${root}/tools/include/${m[1]}`]) {
        const p = absPath(cand);
        try {
          if ((await Deno.stat(p)).isFile) {
            await visit(p);
            break;
          }
        } catch { /* try the next directory */ }
      }
    }
  };
  await visit(absPath(source));
  return out;
}

/**
 * sha256 of a tool's source and local headers, concatenated in include order
 * (the manifest's `tool.sourceDigest`).
 *
 * @example
 * ```ts
 * import { loadTool, toolSourceDigest } from "./build.ts";
 * console.log(await toolSourceDigest(".", await loadTool(".", "opensnoop")));
 * ```
 */
export async function toolSourceDigest(root: string, tool: ToolSource): Promise<string> {
  const files = await localSources(absPath(root), tool.source);
  const all = new Uint8Array(files.reduce((n, f) => n + f.bytes.length, 0));
  let at = 0;
  for (const f of files) {
    all.set(f.bytes, at);
    at += f.bytes.length;
  }
  return await sha256(all);
}

// ---------------------------------------------------------------- toolchain

/**
 * The compilers and what identifies them.
 *
 * @example
 * ```ts
 * import { detectToolchain, type Toolchain } from "./build.ts";
 * const tc: Toolchain = await detectToolchain();
 * console.log(tc.resourceInclude);
 * ```
 */
export interface Toolchain {
  clang: string;
  llc: string;
  strip: string;
  /** First line of `clang --version` (recorded in manifests). */
  clangVersion: string;
  /** Everything the outputs depend on: full version output of clang, llc and strip. */
  identity: string;
  /** clang's own header directory (`-isystem` under `-nostdinc`). */
  resourceInclude: string;
  /** The directory holding libbpf's `bpf/*.h` (only that directory is added). */
  libbpfHeaders: string;
  /** Digest of every file in {@link libbpfHeaders}. */
  libbpfDigest: string;
}

/**
 * Raised when a compiler or header the build needs is missing.
 *
 * @example
 * ```ts
 * import { detectToolchain, ToolchainError } from "./build.ts";
 * await detectToolchain({ clang: "clang-99" }).catch((e) => console.log(e instanceof ToolchainError));
 * ```
 */
export class ToolchainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ToolchainError";
  }
}

async function capture(cmd: string, args: string[]): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  } catch {
    throw new ToolchainError(`${cmd} is not installed: apt-get install clang-19 llvm-19`);
  }
  if (!out.success) {
    throw new ToolchainError(`${cmd} ${args.join(" ")} failed: ${dec.decode(out.stderr).trim()}`);
  }
  return dec.decode(out.stdout).trim();
}

/**
 * Finds clang/llc/llvm-strip (default the `-19` names) and the libbpf headers
 * (default `/usr/include/bpf`).
 *
 * @example
 * ```ts
 * import { detectToolchain } from "./build.ts";
 * const tc = await detectToolchain();
 * console.log(tc.clangVersion); // Debian clang version 19.1.7 (3~deb12u1)
 * ```
 */
export async function detectToolchain(
  opts: { clang?: string; llc?: string; strip?: string; libbpfHeaders?: string } = {},
): Promise<Toolchain> {
  const clang = opts.clang ?? "clang-19";
  const llc = opts.llc ?? "llc-19";
  const strip = opts.strip ?? "llvm-strip-19";
  const libbpfHeaders = opts.libbpfHeaders ?? "/usr/include/bpf";
  const [cv, lv, sv, res] = await Promise.all([
    capture(clang, ["--version"]),
    capture(llc, ["--version"]),
    capture(strip, ["--version"]),
    capture(clang, ["-print-resource-dir"]),
  ]);
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(libbpfHeaders)) if (e.isFile) names.push(e.name);
  } catch {
    throw new ToolchainError(`no libbpf headers at ${libbpfHeaders}: apt-get install libbpf-dev`);
  }
  if (!names.includes("bpf_helpers.h")) {
    throw new ToolchainError(`${libbpfHeaders} has no bpf_helpers.h: apt-get install libbpf-dev`);
  }
  const parts: string[] = [];
  for (const n of names.sort()) {
    parts.push(n, await sha256(await Deno.readFile(`${libbpfHeaders}/${n}`)));
  }
  return {
    clang,
    llc,
    strip,
    clangVersion: cv.split("\n")[0],
    identity: [cv, lv.replace(/\n\s*Host CPU:.*$/m, ""), sv].join("\n"),
    resourceInclude: `${res}/include`,
    libbpfHeaders,
    libbpfDigest: await sha256(enc.encode(parts.join("\n"))),
  };
}

// ---------------------------------------------------------------- argv

/**
 * One object to build.
 *
 * @example
 * ```ts
 * import { type BuildJob, loadTool } from "./build.ts";
 * import { resolveKernelInputs } from "./kernel_inputs.ts";
 * const kernel = await resolveKernelInputs({ kind: "running" }, { want: ["btf"] });
 * const job: BuildJob = { tool: await loadTool(".", "execsnoop"), kernel, mode: "core" };
 * ```
 */
export interface BuildJob {
  tool: ToolSource;
  kernel: KernelInputs;
  mode: Mode;
}

/** Paths an argv mentions; the cache key sees them as placeholders. */
interface Paths {
  root: string;
  src: string;
  tree?: string;
  vmlinuxDir?: string;
  /** Directory whose only entry is `bpf/` → the libbpf headers. */
  shim: string;
  tmp: string;
}

/** The `-I` list of a kernel header tree, in kbuild's order. */
function treeIncludes(tree: string, a: ArchInfo): string[] {
  const d = `${tree}/arch/${a.kernelDir}`;
  return [
    `-I${d}/include`,
    `-I${d}/include/generated`,
    `-I${tree}/include`,
    `-I${d}/include/uapi`,
    `-I${d}/include/generated/uapi`,
    `-I${tree}/include/uapi`,
    `-I${tree}/include/generated/uapi`,
  ];
}

/** BCC's warning suppressions for parsing kernel headers with clang. */
const HEADERS_WARNINGS = [
  "-Wno-unused-value",
  "-Wno-pointer-sign",
  "-Wno-compare-distinct-pointer-types",
  "-Wno-gnu-variable-sized-type-not-at-end",
  "-Wno-address-of-packed-member",
  "-Wno-tautological-compare",
  "-Wno-pragma-once-outside-header",
  "-Wno-deprecated-declarations",
  "-Wno-unknown-warning-option",
];

/** `-ffile-prefix-map`s: the more specific (longer) path last, as clang wants. */
function prefixMaps(p: Paths): string[] {
  const maps: [string, string][] = [[p.root, "."], [p.shim, "/usr/include"]];
  if (p.tree) maps.push([p.tree, "/kernel"]);
  if (p.vmlinuxDir) maps.push([p.vmlinuxDir, "/kernel"]);
  maps.sort((a, b) => a[0].length - b[0].length);
  return maps.map(([from, to]) => `-ffile-prefix-map=${from}=${to}`);
}

/** Every command of one compile, in order; the stripped object ends up at `<tmp>/out.o`. */
function commands(
  tc: Toolchain,
  a: ArchInfo,
  mode: Mode,
  p: Paths,
  targetArch: string,
): string[][] {
  const common = [
    "-nostdinc",
    "-isystem",
    tc.resourceInclude,
    "-isystem",
    p.shim,
    `-I${p.root}/tools/include`,
  ];
  const strip = [tc.strip, "-g", `${p.tmp}/obj.o`, "-o", `${p.tmp}/out.o`];
  if (mode === "headers") {
    const tree = p.tree!;
    return [
      [
        tc.clang,
        `--target=${a.triple}`,
        ...common,
        ...treeIncludes(tree, a),
        "-include",
        `${tree}/include/linux/kconfig.h`,
        "-D__KERNEL__",
        "-D__BPF_TRACING__",
        `-D__TARGET_ARCH_${targetArch}`,
        '-DKBUILD_MODNAME="bpfpack"',
        ...a.headersFlags,
        ...HEADERS_WARNINGS,
        "-fno-stack-protector",
        "-fno-unwind-tables",
        "-fno-asynchronous-unwind-tables",
        "-O2",
        "-g",
        ...prefixMaps(p),
        "-emit-llvm",
        "-c",
        p.src,
        "-o",
        `${p.tmp}/obj.bc`,
      ],
      [
        tc.llc,
        `-march=${a.bpf}`,
        "-mcpu=v3",
        "-filetype=obj",
        `${p.tmp}/obj.bc`,
        "-o",
        `${p.tmp}/obj.o`,
      ],
      strip,
    ];
  }
  return [
    [
      tc.clang,
      "-target",
      a.bpf,
      "-mcpu=v3",
      "-O2",
      "-g",
      ...common,
      `-I${p.vmlinuxDir}`,
      `-D__TARGET_ARCH_${targetArch}`,
      "-DBPFPACK_CORE",
      ...prefixMaps(p),
      "-c",
      p.src,
      "-o",
      `${p.tmp}/obj.o`,
    ],
    strip,
  ];
}

/** argv with the build's paths replaced by placeholders (path-independent cache key). */
function template(argv: string[][], p: Paths): string[][] {
  const subs: [string, string][] = [
    [p.tmp, "<tmp>"],
    [p.src, "<src>"],
    [p.shim, "<libbpf>"],
    [p.root, "<root>"],
  ];
  if (p.tree) subs.push([p.tree, "<tree>"]);
  if (p.vmlinuxDir) subs.push([p.vmlinuxDir, "<vmlinux>"]);
  subs.sort((a, b) => b[0].length - a[0].length);
  return argv.map((cmd) =>
    cmd.map((s) => subs.reduce((acc, [from, to]) => acc.split(from).join(to), s))
  );
}

// ---------------------------------------------------------------- results

/**
 * How long one command took.
 *
 * @example
 * ```ts
 * import type { StepTiming } from "./build.ts";
 * const s: StepTiming = { argv: ["llc-19", "-march=bpfel"], seconds: 0.12 };
 * ```
 */
export interface StepTiming {
  argv: string[];
  seconds: number;
}

/**
 * One built object.
 *
 * @example
 * ```ts
 * import type { BuiltObject } from "./build.ts";
 * const line = (o: BuiltObject) => `${o.entry.name} ${o.entry.size} ${o.cached ? "cached" : o.seconds}`;
 * ```
 */
export interface BuiltObject {
  job: BuildJob;
  /** The manifest entry (name, arch, mode, kernel, compiler argv, digest, programs, maps…). */
  entry: ObjectEntry;
  /** The stripped object. */
  bytes: Uint8Array;
  /** True when it came from the build cache. */
  cached: boolean;
  /** Wall time of this object's build (or cache lookup). */
  seconds: number;
  /** Per-command timings (empty when cached). */
  steps: StepTiming[];
}

/**
 * A failed object (or arch check), with the compiler's diagnostics in the message.
 *
 * @example
 * ```ts
 * import { BuildError } from "./build.ts";
 * const e = new BuildError("opensnoop x86_64 core: clang-19 failed (exit 1)");
 * console.log(e.name); // BuildError
 * ```
 */
export class BuildError extends Error {
  constructor(message: string, readonly job?: BuildJob, readonly argv?: string[]) {
    super(message);
    this.name = "BuildError";
  }
}

/**
 * What {@link buildAll} returns: every object that built, every failure.
 *
 * @example
 * ```ts
 * import type { BuildResult } from "./build.ts";
 * const ok = (r: BuildResult) => r.failures.length === 0;
 * ```
 */
export interface BuildResult {
  objects: BuiltObject[];
  failures: Error[];
  /** Every compile actually run (tool objects and arch checks; cache hits excluded), in order. */
  compiles: CompileRecord[];
}

/**
 * One compile the build ran: its label and each command with its time.
 *
 * @example
 * ```ts
 * import type { CompileRecord } from "./build.ts";
 * const total = (c: CompileRecord) => c.steps.reduce((n, s) => n + s.seconds, 0);
 * ```
 */
export interface CompileRecord {
  label: string;
  steps: StepTiming[];
}

/**
 * Options of {@link buildAll}.
 *
 * @example
 * ```ts
 * import type { BuildOptions } from "./build.ts";
 * const o: BuildOptions = { root: ".", cacheDir: ".cache/build", jobs: 2 };
 * ```
 */
export interface BuildOptions {
  /** Checkout root: `<root>/tools/include` is the shared header dir; mapped to `.`. */
  root: string;
  /** Build cache directory (e.g. `.cache/build`). */
  cacheDir: string;
  /** Concurrent compiles (default: number of CPUs). */
  jobs?: number;
  /** Default: {@link detectToolchain}(). */
  toolchain?: Toolchain;
  /** Read the cache (default true; outputs are always written to it). */
  useCache?: boolean;
  /**
   * Use this `__TARGET_ARCH_` instead of the arch table's. Only for showing
   * that the arch check catches a wrong define: the unit then fails.
   */
  targetArchOverride?: string;
  /** Progress lines (compiles with timing, cache hits, arch checks). */
  onProgress?: (msg: string) => void;
}

/** One compile's outcome inside {@link buildAll}. */
interface Compiled {
  bytes: Uint8Array;
  key: string;
  argv: string[][];
  steps: StepTiming[];
  cached: boolean;
  seconds: number;
}

/** A tiny counting semaphore: at most `n` tasks run at once. */
class Pool {
  #free: number;
  #waiting: (() => void)[] = [];
  constructor(n: number) {
    this.#free = Math.max(1, n);
  }
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((r) => this.#waiting.push(r));
    try {
      return await task();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    }
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function writeAtomic(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeFile(tmp, data);
  await Deno.rename(tmp, path);
}

/**
 * Object file name inside a bundle: `<tool>-<arch>-<mode>-<release>.bpf.o`.
 *
 * @example
 * ```ts
 * import { objectName } from "./build.ts";
 * console.log(objectName("opensnoop", "aarch64", "headers", "6.1.0-28-cloud-arm64"));
 * // opensnoop-aarch64-headers-6.1.0-28-cloud-arm64.bpf.o
 * ```
 */
export function objectName(tool: string, arch: string, mode: Mode, release: string): string {
  return `${tool}-${arch}-${mode}-${release.replace(/[^A-Za-z0-9._+-]/g, "_")}.bpf.o`;
}

const PROG_TYPE_NAMES = new Map<number, string>(
  Object.entries(ProgType).map(([k, v]) => [v as number, k.toLowerCase()]),
);

/** Cached per object: what the manifest says about its contents. */
interface ObjectMeta {
  license: string;
  programs: ObjectEntry["programs"];
  maps: ObjectEntry["maps"];
}

/** Programs, maps and license of a stripped object, via the runtime's own parser. */
function describe(bytes: Uint8Array, label: string): ObjectMeta {
  const spec = parseObject(bytes, label);
  return {
    license: spec.license,
    programs: spec.programs.map((p) => {
      const slash = p.section.indexOf("/");
      const prog: ObjectEntry["programs"][number] = {
        name: p.name,
        section: p.section,
        type: PROG_TYPE_NAMES.get(p.type) ?? `type-${p.type}`,
      };
      if (slash > 0) prog.attach = p.section.slice(slash + 1);
      return prog;
    }),
    maps: spec.maps.map((m) => ({
      name: m.name,
      type: m.type,
      keySize: m.keySize,
      valueSize: m.valueSize,
      maxEntries: m.maxEntries,
      flags: m.flags,
    })),
  };
}

/** `llvm-strip -g` must have removed DWARF and kept what the loader needs. */
function checkStripped(bytes: Uint8Array, mode: Mode): string | null {
  const names = sectionNames(bytes);
  const debug = names.filter((n) => n.startsWith(".debug_"));
  if (debug.length) return `debug sections survived stripping: ${debug.join(", ")}`;
  if (!names.includes(".BTF")) return "no .BTF section (BTF-defined maps need it)";
  if (mode === "core" && !names.includes(".BTF.ext")) {
    return "no .BTF.ext section (the kernel needs it for CO-RE relocations)";
  }
  return null;
}

function kernelDigest(k: KernelInputs, mode: Mode): string {
  const d = mode === "headers" ? k.headers?.digest : k.btf?.digest;
  if (!d) {
    throw new BuildError(
      `kernel ${k.release} (${k.arch}) has no ${mode === "headers" ? "header tree" : "BTF"}: ` +
        `it cannot be built in ${mode} mode`,
    );
  }
  return d;
}

/**
 * Builds every job (tool × kernel × mode) on a worker pool. Each distinct
 * (arch, mode, kernel) unit is arch-checked once; objects of a unit that fails
 * the check are reported as failures, never returned. Compile errors are
 * failures too (clang's diagnostics in the message); other jobs still run.
 *
 * @example
 * ```ts
 * import { buildAll, loadTool } from "./build.ts";
 * import { resolveKernelInputs } from "./kernel_inputs.ts";
 * const kernel = await resolveKernelInputs({ kind: "running" }, { want: ["btf"] });
 * const tools = [await loadTool(".", "opensnoop"), await loadTool(".", "execsnoop")];
 * const { objects, failures } = await buildAll(
 *   tools.map((tool) => ({ tool, kernel, mode: "core" as const })),
 *   { root: ".", cacheDir: ".cache/build", onProgress: (m) => console.error(m) },
 * );
 * console.log(objects.map((o) => `${o.entry.name} ${o.entry.size}`), failures);
 * ```
 */
export async function buildAll(jobs: BuildJob[], opts: BuildOptions): Promise<BuildResult> {
  const root = absPath(opts.root);
  const cacheDir = absPath(opts.cacheDir);
  const tc = opts.toolchain ?? await detectToolchain();
  const pool = new Pool(opts.jobs ?? navigator.hardwareConcurrency ?? 2);
  const useCache = opts.useCache ?? true;
  const progress = opts.onProgress ?? (() => {});
  await Deno.mkdir(`${cacheDir}/obj`, { recursive: true });
  await Deno.mkdir(`${cacheDir}/check`, { recursive: true });
  await Deno.mkdir(`${cacheDir}/tmp`, { recursive: true });
  // Only bpf/ is visible through this directory, not the rest of /usr/include.
  const shim = `${cacheDir}/libbpf-include`;
  await Deno.mkdir(shim, { recursive: true });
  if (!await exists(`${shim}/bpf`)) {
    await Deno.symlink(tc.libbpfHeaders, `${shim}/bpf`).catch(async (e) => {
      if (!await exists(`${shim}/bpf`)) throw e;
    });
  }

  const compiles: CompileRecord[] = [];
  const inflight = new Map<string, Promise<Compiled>>();
  const fileDigests = new Map<string, Promise<string>>();
  const digestFile = (path: string) => {
    let d = fileDigests.get(path);
    if (!d) {
      d = Deno.readFile(path).then(sha256);
      fileDigests.set(path, d);
    }
    return d;
  };
  /** `-I` dir holding the kernel's vmlinux.h (a staged link if it is named otherwise). */
  const vmlinuxDir = async (k: KernelInputs): Promise<string> => {
    const h = absPath(k.btf!.vmlinuxH);
    if (h.endsWith("/vmlinux.h")) return h.slice(0, -"/vmlinux.h".length);
    const dir = `${cacheDir}/vmlinux/${k.btf!.digest.slice(7, 23)}`;
    await Deno.mkdir(dir, { recursive: true });
    if (!await exists(`${dir}/vmlinux.h`)) await Deno.symlink(h, `${dir}/vmlinux.h`);
    return dir;
  };

  /** Compiles `source` for a unit, via the cache. Returns the bytes and how it went. */
  const compile = async (
    job: BuildJob,
    source: string,
    label: string,
  ): Promise<Compiled> => {
    const a = archInfo(job.kernel.arch);
    const inputDigest = kernelDigest(job.kernel, job.mode);
    const t0 = performance.now();
    const files = await localSources(root, source);
    const paths0: Paths = {
      root,
      src: absPath(source),
      shim,
      tmp: "",
      tree: job.mode === "headers" ? absPath(job.kernel.headers!.dir) : undefined,
      vmlinuxDir: job.mode === "core" ? await vmlinuxDir(job.kernel) : undefined,
    };
    const targetArch = opts.targetArchOverride ?? a.targetArch;
    const keyInput = {
      format: CACHE_FORMAT,
      toolchain: tc.identity,
      libbpf: tc.libbpfDigest,
      argv: template(commands(tc, a, job.mode, { ...paths0, tmp: "/TMP" }, targetArch), {
        ...paths0,
        tmp: "/TMP",
      }),
      sources: files.map((f) => [f.rel, f.digest]),
      kernel: inputDigest,
      vmlinuxH: paths0.vmlinuxDir ? await digestFile(`${paths0.vmlinuxDir}/vmlinux.h`) : null,
    };
    const key = (await sha256(enc.encode(JSON.stringify(keyInput)))).slice(7);
    const paths: Paths = { ...paths0, tmp: `${cacheDir}/tmp/${key.slice(0, 16)}` };
    const argv = commands(tc, a, job.mode, paths, targetArch);
    const objPath = `${cacheDir}/obj/${key}.o`;
    if (useCache) {
      try {
        const bytes = await Deno.readFile(objPath);
        return {
          bytes,
          key,
          argv,
          steps: [],
          cached: true,
          seconds: (performance.now() - t0) / 1000,
        };
      } catch { /* not cached */ }
    }
    // The same compile asked for twice in one build runs once.
    let pending = inflight.get(key);
    if (pending) return await pending;
    pending = pool.run(async () => {
      const start = performance.now();
      // Another build process sharing this cache may be making the same object in the
      // same (deterministic) directory: take turns, and reuse its result.
      const lock = await Deno.open(`${paths.tmp}.lock`, { create: true, write: true });
      await lock.lock(true);
      const steps: StepTiming[] = [];
      try {
        if (useCache) {
          const done = await Deno.readFile(objPath).catch(() => null);
          if (done) {
            const seconds = (performance.now() - start) / 1000;
            return { bytes: done, key, argv, steps, cached: true, seconds };
          }
        }
        await Deno.remove(paths.tmp, { recursive: true }).catch(() => {});
        await Deno.mkdir(paths.tmp, { recursive: true });
        for (const cmd of argv) {
          const s0 = performance.now();
          let out: Deno.CommandOutput;
          try {
            out = await new Deno.Command(cmd[0], {
              args: cmd.slice(1),
              cwd: root,
              stdout: "piped",
              stderr: "piped",
            }).output();
          } catch (e) {
            throw new BuildError(
              `${label}: cannot run ${cmd[0]} (${(e as Error).message})`,
              job,
              cmd,
            );
          }
          steps.push({ argv: cmd, seconds: (performance.now() - s0) / 1000 });
          if (!out.success) {
            const diag = (dec.decode(out.stderr) + dec.decode(out.stdout)).trim();
            throw new BuildError(
              `${label}: ${cmd[0]} failed (exit ${out.code})\n${diag}\ncommand: ${cmd.join(" ")}`,
              job,
              cmd,
            );
          }
        }
        const bytes = await Deno.readFile(`${paths.tmp}/out.o`);
        await writeAtomic(objPath, bytes);
        compiles.push({ label, steps });
        return {
          bytes,
          key,
          argv,
          steps,
          cached: false,
          seconds: (performance.now() - start) / 1000,
        };
      } finally {
        await Deno.remove(paths.tmp, { recursive: true }).catch(() => {});
        await lock.unlock();
        lock.close();
      }
    });
    inflight.set(key, pending);
    return await pending;
  };

  // One arch check per (arch, mode, kernel input) unit.
  const checkSource = absPath(new URL("./arch_check.bpf.c", import.meta.url).pathname);
  const checks = new Map<string, Promise<void>>();
  const archCheck = (job: BuildJob): Promise<void> => {
    const k = job.kernel;
    const unit = `${k.arch} ${job.mode} ${k.release}`;
    const id = `${unit} ${kernelDigest(k, job.mode)}`;
    let p = checks.get(id);
    if (!p) {
      p = (async () => {
        const a = archInfo(k.arch);
        const label = `arch check ${unit}`;
        let r;
        try {
          r = await compile(job, checkSource, label);
        } catch (e) {
          const errors = (e as Error).message.split("\n").filter((l) => / error: /.test(l));
          throw new ArchMismatchError(
            `${label}: the arch check did not compile with __TARGET_ARCH_${
              opts.targetArchOverride ?? a.targetArch
            } against these ${
              job.mode === "headers" ? "kernel headers" : "BTF types (vmlinux.h)"
            }: the define, the parse triple and the kernel inputs do not all belong to ${a.arch}; ` +
              `refusing to build this unit.\n${
                (errors.length ? errors.slice(0, 8) : [(e as Error).message]).join("\n")
              }`,
          );
        }
        // The verdict is about this object *and* the arch it is labelled with.
        const verdict = `${cacheDir}/check/${r.key}-${a.arch}.json`;
        if (useCache && r.cached && await exists(verdict)) return;
        const problem = checkObjectHeader(a, r.bytes) ?? checkArchLoads(a, ctxLoads(r.bytes));
        if (problem) {
          throw new ArchMismatchError(
            `${label}: ${problem}. The define __TARGET_ARCH_${
              opts.targetArchOverride ?? a.targetArch
            }, the parse triple or the ${
              job.mode === "headers" ? "header tree" : "vmlinux.h"
            } is not ${a.arch}'s; refusing to build this unit.`,
          );
        }
        await writeAtomic(
          verdict,
          enc.encode(JSON.stringify({ ok: true, loads: ctxLoads(r.bytes) })),
        );
        progress(`arch check ${unit}: ok${r.cached ? "" : ` (${r.seconds.toFixed(2)} s)`}`);
      })();
      p.catch(() => {}); // reported through every job of the unit
      checks.set(id, p);
    }
    return p;
  };

  const one = async (job: BuildJob): Promise<BuiltObject> => {
    const k = job.kernel;
    const a = archInfo(k.arch);
    const name = objectName(job.tool.name, a.arch, job.mode, k.release);
    const label = `${job.tool.name} ${a.arch} ${job.mode} ${k.release}`;
    const check = archCheck(job);
    let r;
    try {
      r = await compile(job, job.tool.source, label);
    } catch (e) {
      await check; // a failed arch check explains a failed compile better
      throw e;
    }
    await check;
    const metaPath = `${cacheDir}/obj/${r.key}.json`;
    let meta: ObjectMeta | undefined;
    if (r.cached) {
      meta = await Deno.readTextFile(metaPath).then((t) => JSON.parse(t) as ObjectMeta).catch(
        () => undefined,
      );
    }
    if (!meta) {
      const problem = checkObjectHeader(a, r.bytes) ?? checkStripped(r.bytes, job.mode);
      if (problem) throw new BuildError(`${label}: ${problem}`, job);
      try {
        meta = describe(r.bytes, name);
      } catch (e) {
        throw new BuildError(`${label}: the object cannot be parsed: ${(e as Error).message}`, job);
      }
      await writeAtomic(metaPath, enc.encode(JSON.stringify(meta)));
    }
    const kernel: ObjectEntry["kernel"] = {
      release: k.release,
      version: k.version,
      versionCode: k.versionCode,
      source: k.source,
      abi: k.abi,
      flavour: k.flavour,
      inputDigest: kernelDigest(k, job.mode),
    };
    const entry: ObjectEntry = {
      name,
      arch: a.arch,
      mode: job.mode,
      kernel,
      compiler: { name: "clang", version: tc.clangVersion, argv: r.argv },
      digest: await sha256(r.bytes),
      size: r.bytes.length,
      ...meta,
    };
    progress(
      r.cached
        ? `${label}: cached (${r.bytes.length} bytes)`
        : `${label}: compiled in ${r.seconds.toFixed(2)} s (${r.bytes.length} bytes)`,
    );
    return { job, entry, bytes: r.bytes, cached: r.cached, seconds: r.seconds, steps: r.steps };
  };

  const settled = await Promise.allSettled(jobs.map(one));
  const objects: BuiltObject[] = [];
  const failures: Error[] = [];
  const seen = new Set<string>();
  for (const s of settled) {
    if (s.status === "fulfilled") objects.push(s.value);
    else if (!seen.has((s.reason as Error).message)) {
      seen.add((s.reason as Error).message);
      failures.push(s.reason as Error);
    }
  }
  return { objects, failures, compiles };
}
