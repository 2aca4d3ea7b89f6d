/**
 * Building tool bundles by running the compiler stage's CLI (`compiler/main.ts`). Host tools,
 * tests and benchmarks use this one entry point; the compiler's own cache makes repeated builds
 * fast.
 *
 * @example
 * ```ts
 * import { buildBundles, buildRunningBundles } from "./bundle_build.ts";
 * const dir = await buildRunningBundles(["opensnoop"], ".cache/tools");
 * console.log(`${dir}/opensnoop.oci.tar`);
 * await buildBundles(["execsnoop"], { kernel: "debian:6.1:aarch64", out: "out/arm64" });
 * ```
 * @module
 */

const ROOT = new URL("../../", import.meta.url).pathname;

/** Options of {@link buildBundles}. */
export interface BuildOptions {
  /** A compiler `--kernel` spec (default `running`). */
  kernel?: string;
  /** `core`, `headers` or `headers,core` (default: core for `running`, the kernel's modes else). */
  mode?: string;
  /** Output directory (default: a fresh temporary directory). */
  out?: string;
  /** Show the compiler's progress lines on stderr (default false). */
  progress?: boolean;
}

/**
 * Builds bundles of `tools` for one kernel into `opts.out` and returns that directory, which
 * holds `<tool>.oci/` and `<tool>.oci.tar`. Throws with the compiler's diagnostics.
 */
export async function buildBundles(tools: string[], opts: BuildOptions = {}): Promise<string> {
  const dir = opts.out ?? await Deno.makeTempDir({ prefix: "bpfpack-bundles-" });
  const kernel = opts.kernel ?? "running";
  const mode = opts.mode ?? (kernel === "running" ? "core" : undefined);
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}compiler/main.ts`,
      "--kernel",
      kernel,
      ...(mode ? ["--mode", mode] : []),
      "--tool",
      tools.join(","),
      "--out",
      dir,
      ...(opts.progress ? [] : ["--quiet"]),
    ],
    cwd: ROOT,
    stdout: "null",
    stderr: opts.progress ? "inherit" : "piped",
  }).output();
  if (!r.success) {
    const diag = opts.progress ? "(diagnostics above)" : new TextDecoder().decode(r.stderr);
    throw new Error(`building ${tools.join(", ")} for ${kernel} failed:\n${diag}`);
  }
  return dir;
}

/**
 * Builds core-mode bundles of `tools` for the running kernel into `out` (a temporary directory
 * when omitted) and returns that directory.
 */
export function buildRunningBundles(tools: string[], out?: string): Promise<string> {
  return buildBundles(tools, { kernel: "running", mode: "core", out });
}
