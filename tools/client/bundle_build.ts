/**
 * Building a tool's bundle for the running kernel by running the compiler
 * stage's CLI (`compiler/main.ts`). Host tools, tests and benchmarks use this
 * one entry point; the compiler's own cache makes repeated builds fast.
 *
 * @example
 * ```ts
 * import { buildRunningBundles } from "./bundle_build.ts";
 * const dir = await buildRunningBundles(["opensnoop"], ".cache/tools");
 * console.log(`${dir}/opensnoop.oci.tar`);
 * ```
 * @module
 */

const ROOT = new URL("../../", import.meta.url).pathname;

/**
 * Builds core-mode bundles of `tools` for the running kernel into `out` (a
 * temporary directory when omitted) and returns that directory, which holds
 * `<tool>.oci/` and `<tool>.oci.tar`. Throws with the compiler's diagnostics.
 */
export async function buildRunningBundles(tools: string[], out?: string): Promise<string> {
  const dir = out ?? await Deno.makeTempDir({ prefix: "bpfpack-bundles-" });
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}compiler/main.ts`,
      "--kernel",
      "running",
      "--mode",
      "core",
      "--tool",
      tools.join(","),
      "--out",
      dir,
      "--quiet",
    ],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!r.success) {
    throw new Error(
      `building ${tools.join(", ")} failed:\n${new TextDecoder().decode(r.stderr)}`,
    );
  }
  return dir;
}
