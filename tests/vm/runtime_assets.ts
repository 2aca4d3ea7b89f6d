/**
 * The runtime the VM lab runs inside its guests: `scripts/offline.ts`'s offline artifact for
 * the guest's arch (the target's `deno` binary, `runtime/main.ts` bundled into `lib/bpfd.js`,
 * and the `bin/bpfd` launcher), kept under `.cache/vm/runtime/<arch>/`, plus the lab's paths.
 *
 * @example
 * ```ts
 * import { guestRuntime } from "./runtime_assets.ts";
 * const rt = await guestRuntime("aarch64");
 * console.log(rt.deno, rt.module, rt.bytes.total);
 * ```
 * @module
 */

import { buildOfflineRuntime, type OfflineRuntime } from "../../scripts/offline.ts";
import { digestFile } from "../../compiler/kernels/digest.ts";
import { writeFileAtomic } from "../../compiler/kernels/fs_util.ts";

export type { OfflineRuntime };

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname).replace(/\/$/, "");

/**
 * The VM lab's cache directory, `<repo>/.cache/vm`.
 *
 * @example
 * ```ts
 * import { vmCacheDir } from "./runtime_assets.ts";
 * console.log(vmCacheDir()); // e.g. /work/main/.cache/vm
 * ```
 */
export function vmCacheDir(): string {
  return `${ROOT}/.cache/vm`;
}

/**
 * The repository root.
 *
 * @example
 * ```ts
 * import { repoRoot } from "./runtime_assets.ts";
 * console.log(`${repoRoot()}/runtime/main.ts`);
 * ```
 */
export function repoRoot(): string {
  return ROOT;
}

/**
 * The offline runtime for a guest of `arch`, built (or found up to date) by
 * `buildOfflineRuntime` in `.cache/vm/runtime/<arch>/`.
 *
 * @example
 * ```ts
 * import { guestRuntime } from "./runtime_assets.ts";
 * const rt = await guestRuntime("x86_64");
 * console.log(rt.launcher); // …/.cache/vm/runtime/x86_64/bin/bpfd
 * ```
 */
export function guestRuntime(arch: "x86_64" | "aarch64"): Promise<OfflineRuntime> {
  return buildOfflineRuntime({ arch, outDir: `${vmCacheDir()}/runtime/${arch}` });
}

/**
 * The `sha256:` digest of a big file (the guest's deno), remembered next to it by size and
 * mtime so that a boot does not hash 85 MB again.
 *
 * @example
 * ```ts
 * import { fileDigest } from "./runtime_assets.ts";
 * console.log(await fileDigest(".cache/vm/runtime/aarch64/bin/deno"));
 * ```
 */
export async function fileDigest(path: string): Promise<string> {
  const st = await Deno.stat(path);
  const stamp = `${st.size} ${st.mtime?.getTime()}`;
  const memo = `${path}.digest`;
  const [have, digest] = (await Deno.readTextFile(memo).catch(() => "")).split("\n");
  if (have === stamp && digest) return digest;
  const d = await digestFile(path);
  await writeFileAtomic(memo, `${stamp}\n${d}\n`).catch(() => {});
  return d;
}
