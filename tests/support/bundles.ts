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

import { buildRunningBundles } from "../../tools/client/bundle_build.ts";

let built: Promise<string> | null = null;

/**
 * Builds opensnoop and execsnoop for the running kernel with the compiler's
 * CLI (what a user runs) and returns the output directory holding
 * `<tool>.oci/` and `<tool>.oci.tar`.
 */
export function runningBundles(): Promise<string> {
  return built ??= (async () => {
    const dir = await buildRunningBundles(["opensnoop", "execsnoop"]);
    for (const t of ["opensnoop", "execsnoop"]) {
      if (!Deno.statSync(`${dir}/${t}.oci.tar`).isFile) throw new Error(`no ${t} bundle in ${dir}`);
    }
    return dir;
  })();
}
