/**
 * Built objects → one OCI bundle per tool (`<out>/<tool>.oci/` and
 * `<out>/<tool>.oci.tar`), with the zod-validated manifest as config blob.
 * Objects are ordered by name, so the same objects always give the same
 * bundle bytes.
 *
 * @example
 * ```ts
 * import { writeBundles } from "./bundle.ts";
 * import { buildAll, loadTool } from "./build.ts";
 * import { resolveKernelInputs } from "./kernel_inputs.ts";
 * const kernel = await resolveKernelInputs({ kind: "running" }, { want: ["btf"] });
 * const tool = await loadTool(".", "opensnoop");
 * const { objects } = await buildAll([{ tool, kernel, mode: "core" }], {
 *   root: ".",
 *   cacheDir: ".cache/build",
 * });
 * const written = await writeBundles("out/bundles", objects, ".");
 * console.log(written.map((b) => b.dir)); // ["out/bundles/opensnoop.oci"]
 * ```
 * @module
 */

import { bundleFiles, bundleTar, writeBundleDir } from "../artifacts/oci.ts";
import { type Manifest, SCHEMA_VERSION } from "../artifacts/manifest.ts";
import { type BuiltObject, toolSourceDigest } from "./build.ts";

/**
 * One bundle written.
 *
 * @example
 * ```ts
 * import type { WrittenBundle } from "./bundle.ts";
 * const where = (b: WrittenBundle) => `oci:${b.dir}:${b.version}`; // for skopeo
 * ```
 */
export interface WrittenBundle {
  tool: string;
  version: string;
  /** The OCI layout directory. */
  dir: string;
  /** The same layout as one tar. */
  tar: string;
  /** Objects in it. */
  objects: number;
}

/**
 * The manifest of one tool's objects (sorted by name; duplicates by name dropped).
 *
 * @example
 * ```ts
 * import { manifestFor } from "./bundle.ts";
 * import { buildAll, loadTool } from "./build.ts";
 * import { resolveKernelInputs } from "./kernel_inputs.ts";
 * const kernel = await resolveKernelInputs({ kind: "running" }, { want: ["btf"] });
 * const tool = await loadTool(".", "opensnoop");
 * const { objects } = await buildAll([{ tool, kernel, mode: "core" }], {
 *   root: ".",
 *   cacheDir: ".cache/build",
 * });
 * const m = await manifestFor(".", objects);
 * console.log(m.tool.sourceDigest, m.objects[0].programs.length);
 * ```
 */
export async function manifestFor(root: string, objects: BuiltObject[]): Promise<Manifest> {
  if (objects.length === 0) throw new Error("manifestFor: no objects");
  const tool = objects[0].job.tool;
  const byName = new Map(objects.map((o) => [o.entry.name, o.entry]));
  return {
    schemaVersion: SCHEMA_VERSION,
    tool: {
      name: tool.name,
      version: tool.version,
      sourceDigest: await toolSourceDigest(root, tool),
    },
    objects: [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
  };
}

/**
 * Writes `<outDir>/<tool>.oci/` and `<outDir>/<tool>.oci.tar` for every tool
 * that has objects.
 *
 * @example
 * ```ts
 * import { writeBundles } from "./bundle.ts";
 * import { buildAll, loadTool } from "./build.ts";
 * import { resolveKernelInputs } from "./kernel_inputs.ts";
 * const kernel = await resolveKernelInputs({ kind: "running" }, { want: ["btf"] });
 * const tool = await loadTool(".", "opensnoop");
 * const { objects } = await buildAll([{ tool, kernel, mode: "core" }], {
 *   root: ".",
 *   cacheDir: ".cache/build",
 * });
 * await writeBundles("out/bundles", objects, "."); // out/bundles/opensnoop.oci{,.tar}
 * ```
 */
export async function writeBundles(
  outDir: string,
  objects: BuiltObject[],
  root: string,
): Promise<WrittenBundle[]> {
  const byTool = new Map<string, BuiltObject[]>();
  for (const o of objects) {
    const list = byTool.get(o.job.tool.name) ?? [];
    list.push(o);
    byTool.set(o.job.tool.name, list);
  }
  await Deno.mkdir(outDir, { recursive: true });
  const written: WrittenBundle[] = [];
  for (const [tool, list] of [...byTool].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const manifest = await manifestFor(root, list);
    const files = await bundleFiles(manifest, new Map(list.map((o) => [o.entry.name, o.bytes])));
    const dir = `${outDir}/${tool}.oci`;
    const tar = `${outDir}/${tool}.oci.tar`;
    await writeBundleDir(dir, files);
    await Deno.writeFile(tar, bundleTar(files));
    written.push({
      tool,
      version: manifest.tool.version,
      dir,
      tar,
      objects: manifest.objects.length,
    });
  }
  return written;
}
