/**
 * Command-line parsing for every bpfpack entry point. One module so the
 * implementation can be swapped in one place (`@std/cli` where JSR is
 * reachable); today it is `node:util`'s `parseArgs`, built into Deno.
 *
 * @example
 * ```ts
 * import { parseArgs } from "./cli.ts";
 * const { values } = parseArgs({ args: ["--max-fds", "8"], options: { "max-fds": { type: "string" } } });
 * console.log(values["max-fds"]); // "8"
 * ```
 * @module
 */

export { parseArgs } from "node:util";
