/**
 * Bundles built for the running kernel (core mode) by the compiler's CLI, once
 * per test process and shared by the test files that need real tool objects.
 *
 * @example
 * ```ts
 * import { runningBundles } from "./bundles.ts";
 * const dir = await runningBundles();
 * console.log(`${dir}/opensnoop.oci.tar`);
 * ```
 * @module
 */

import { ROOT } from "./bpfd.ts";

let built: Promise<string> | null = null;

/**
 * Builds opensnoop and execsnoop for the running kernel with `compiler/main.ts`
 * (the CLI a user runs) and returns the output directory holding
 * `<tool>.oci/` and `<tool>.oci.tar`.
 */
export function runningBundles(): Promise<string> {
  built ??= (async () => {
    const out = await Deno.makeTempDir({ prefix: "bpfpack-bundles-" });
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${ROOT}/compiler/main.ts`,
        "--kernel",
        "running",
        "--mode",
        "core",
        "--tool",
        "opensnoop,execsnoop",
        "--out",
        out,
        "--json",
        "--quiet",
      ],
      cwd: ROOT,
      stderr: "piped",
    }).output();
    if (r.code !== 0) {
      throw new Error(`building the tool bundles failed:\n${new TextDecoder().decode(r.stderr)}`);
    }
    const summary = new TextDecoder().decode(r.stdout);
    if (!summary.includes("opensnoop") || !summary.includes("execsnoop")) {
      throw new Error(`the build summary does not name both tools:\n${summary}`);
    }
    return out;
  })();
  return built;
}
