/**
 * Bundles as OCI image layouts: `oci-layout`, `index.json`, `blobs/sha256/…`,
 * with the bpfpack manifest as the config blob and one layer per BPF object.
 * Written deterministically (same inputs, same bytes), as a directory or a
 * `.tar` of it, and read back with every digest checked.
 *
 * @example
 * ```ts
 * import { readBundle } from "./oci.ts";
 * const b = await readBundle("out/opensnoop.oci");
 * console.log(b.manifest.tool.name, [...b.objects.keys()]);
 * ```
 * @module
 */

import {
  ANNOTATION,
  canonicalJson,
  type Manifest,
  MANIFEST_MEDIA_TYPE,
  OBJECT_MEDIA_TYPE,
  parseManifest,
} from "./manifest.ts";
import { readTar, writeTar } from "./tar.ts";

const INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json";
const IMAGE_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json";
const enc = new TextEncoder();
const dec = new TextDecoder();

/** `sha256:<hex>` of bytes. */
export async function sha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return `sha256:${d.toHex()}`;
}

/** Raised for a bundle that cannot be used; the message names the problem. */
export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BundleError";
  }
}

/** An OCI descriptor. */
interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** The files of a bundle: relative path → bytes. */
export type BundleFiles = Map<string, Uint8Array>;

/**
 * Builds the files of a bundle. `objects` maps each manifest object's `name`
 * to its bytes; digests and sizes must agree with the manifest.
 */
export async function bundleFiles(
  manifest: Manifest,
  objects: Map<string, Uint8Array>,
): Promise<BundleFiles> {
  const m = parseManifest(manifest);
  const files: BundleFiles = new Map();
  const blob = async (
    bytes: Uint8Array,
    mediaType: string,
    annotations?: Record<string, string>,
  ) => {
    const digest = await sha256(bytes);
    files.set(`blobs/sha256/${digest.slice(7)}`, bytes);
    const d: Descriptor = { mediaType, digest, size: bytes.length };
    if (annotations) d.annotations = annotations;
    return d;
  };
  const layers: Descriptor[] = [];
  for (const o of m.objects) {
    const bytes = objects.get(o.name);
    if (!bytes) {
      throw new BundleError(`object ${o.name} is in the manifest but no bytes were given`);
    }
    const d = await blob(bytes, OBJECT_MEDIA_TYPE, {
      [ANNOTATION.arch]: o.arch,
      [ANNOTATION.release]: o.kernel.release,
      [ANNOTATION.mode]: o.mode,
      [ANNOTATION.title]: o.name,
    });
    if (d.digest !== o.digest || d.size !== o.size) {
      throw new BundleError(`object ${o.name}: bytes do not match the manifest's digest/size`);
    }
    layers.push(d);
  }
  const config = await blob(enc.encode(canonicalJson(m)), MANIFEST_MEDIA_TYPE);
  const imageManifest = {
    schemaVersion: 2,
    mediaType: IMAGE_MANIFEST_MEDIA_TYPE,
    config,
    layers,
    annotations: {
      "org.opencontainers.image.title": m.tool.name,
      "org.opencontainers.image.version": m.tool.version,
    },
  };
  const md = await blob(enc.encode(canonicalJson(imageManifest)), IMAGE_MANIFEST_MEDIA_TYPE);
  md.annotations = { "org.opencontainers.image.ref.name": m.tool.version };
  const index = { schemaVersion: 2, mediaType: INDEX_MEDIA_TYPE, manifests: [md] };
  files.set("oci-layout", enc.encode(canonicalJson({ imageLayoutVersion: "1.0.0" })));
  files.set("index.json", enc.encode(canonicalJson(index)));
  return files;
}

/** Writes a bundle directory (replacing its contents). */
export async function writeBundleDir(dir: string, files: BundleFiles): Promise<void> {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  for (const [path, bytes] of [...files].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const full = `${dir}/${path}`;
    await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    await Deno.writeFile(full, bytes);
  }
}

/** The bundle as one deterministic ustar archive. */
export function bundleTar(files: BundleFiles): Uint8Array {
  return writeTar(files);
}

/** A bundle read back: the manifest, every object's bytes by name, and its manifest digest. */
export interface Bundle {
  manifest: Manifest;
  objects: Map<string, Uint8Array>;
  /** Digest of the OCI image manifest (identifies the bundle). */
  digest: string;
}

/** Reads a bundle's files from a directory or a `.tar`. */
export async function readBundleFiles(path: string): Promise<BundleFiles> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch {
    throw new BundleError(`no bundle at ${path}`);
  }
  if (st.isFile) return readTar(await Deno.readFile(path));
  const files: BundleFiles = new Map();
  for (const rel of ["oci-layout", "index.json"]) {
    try {
      files.set(rel, await Deno.readFile(`${path}/${rel}`));
    } catch {
      throw new BundleError(`${path} is not an OCI layout (no ${rel})`);
    }
  }
  try {
    for await (const e of Deno.readDir(`${path}/blobs/sha256`)) {
      if (e.isFile) {
        files.set(`blobs/sha256/${e.name}`, await Deno.readFile(`${path}/blobs/sha256/${e.name}`));
      }
    }
  } catch {
    throw new BundleError(`${path} has no blobs/sha256 directory`);
  }
  return files;
}

function json(bytes: Uint8Array | undefined, what: string): Record<string, unknown> {
  if (!bytes) throw new BundleError(`${what} is missing`);
  try {
    return JSON.parse(dec.decode(bytes));
  } catch {
    throw new BundleError(`${what} is not valid JSON`);
  }
}

/** Parses and verifies bundle files: every blob's digest, the manifest schema, every object. */
export async function openBundle(files: BundleFiles): Promise<Bundle> {
  const blob = async (d: Descriptor, what: string) => {
    if (typeof d?.digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(d.digest)) {
      throw new BundleError(`${what}: bad descriptor digest`);
    }
    const bytes = files.get(`blobs/sha256/${d.digest.slice(7)}`);
    if (!bytes) throw new BundleError(`${what}: blob ${d.digest} is missing`);
    const got = await sha256(bytes);
    if (got !== d.digest) throw new BundleError(`${what}: digest mismatch (${got} != ${d.digest})`);
    if (bytes.length !== d.size) throw new BundleError(`${what}: size mismatch`);
    return bytes;
  };
  const index = json(files.get("index.json"), "index.json");
  const manifests = index.manifests as Descriptor[] | undefined;
  if (!Array.isArray(manifests) || manifests.length === 0) {
    throw new BundleError("index.json lists no manifest");
  }
  const md = manifests[0];
  const image = json(await blob(md, "image manifest"), "image manifest");
  const config = image.config as Descriptor;
  if (config?.mediaType !== MANIFEST_MEDIA_TYPE) {
    throw new BundleError(`config media type is ${config?.mediaType}, not ${MANIFEST_MEDIA_TYPE}`);
  }
  const manifest = parseManifest(json(await blob(config, "manifest"), "manifest"));
  const layers = (image.layers ?? []) as Descriptor[];
  const objects = new Map<string, Uint8Array>();
  for (const o of manifest.objects) {
    const layer = layers.find((l) => l.digest === o.digest);
    if (!layer) throw new BundleError(`object ${o.name}: no layer with digest ${o.digest}`);
    objects.set(o.name, await blob(layer, `object ${o.name}`));
  }
  return { manifest, objects, digest: md.digest };
}

/** Reads and verifies a bundle directory or `.tar`. */
export async function readBundle(path: string): Promise<Bundle> {
  return openBundle(await readBundleFiles(path));
}
