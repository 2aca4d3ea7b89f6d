/**
 * The bundle manifest: what a bundle holds and everything needed to rebuild
 * and check it on the device. Stored as the config blob of the bundle's OCI
 * image manifest (media type {@link MANIFEST_MEDIA_TYPE}).
 *
 * @example
 * ```ts
 * import { parseManifest } from "./manifest.ts";
 * const m = parseManifest(JSON.parse(Deno.readTextFileSync("manifest.json")));
 * console.log(m.tool.name, m.objects.length);
 * ```
 * @module
 */

import { z } from "zod";

/** Current manifest schema version. */
export const SCHEMA_VERSION = 1;
/** Media type of the manifest (the OCI config blob). */
export const MANIFEST_MEDIA_TYPE = "application/vnd.bpfpack.manifest.v1+json";
/** Media type of one BPF object (an OCI layer). */
export const OBJECT_MEDIA_TYPE = "application/vnd.bpfpack.bpf.object.v1";
/** Layer annotation keys. */
export const ANNOTATION = {
  arch: "io.bpfpack.arch",
  release: "io.bpfpack.kernel.release",
  mode: "io.bpfpack.mode",
  title: "org.opencontainers.image.title",
} as const;

const digest = z.string().regex(/^sha256:[0-9a-f]{64}$/, "expected sha256:<64 hex digits>");

/** Architectures, by the name `uname -m` reports on the device. */
export const ArchSchema = z.enum(["x86_64", "aarch64", "armv7l", "riscv64", "s390x"]);
/** `headers` (BCC-style, one kernel release) or `core` (CO-RE, relocated by the kernel). */
export const ModeSchema = z.enum(["headers", "core"]);

/** Where the kernel facts came from. */
export const KernelSchema = z.object({
  /** Exact `uname -r` the object fits (headers mode); for core, the BTF's kernel (informational). */
  release: z.string().min(1),
  /** `uname -v` where known. */
  version: z.string().optional(),
  /** LINUX_VERSION_CODE of the headers or BTF kernel. */
  versionCode: z.number().int().nonnegative().optional(),
  /** e.g. `debian`, `local-tree`, `btf-file`, `running-kernel`. */
  source: z.string(),
  /** Debian ABI (e.g. `6.1.0-28`) and flavour (`cloud-arm64`) when from Debian. */
  abi: z.string().optional(),
  flavour: z.string().optional(),
  /** sha256 of the header tree (headers mode) or BTF blob (core mode). */
  inputDigest: digest,
});

/** A program in an object. */
export const ProgramSchema = z.object({
  name: z.string(),
  section: z.string(),
  /** Kernel program type name, e.g. `tracepoint`, `kprobe`. */
  type: z.string(),
  /** Attach point as the section names it (`syscalls/sys_enter_openat`), if any. */
  attach: z.string().optional(),
});

/** A map in an object. */
export const MapSchema = z.object({
  name: z.string(),
  /** Kernel map type number. */
  type: z.number().int().nonnegative(),
  keySize: z.number().int().nonnegative(),
  valueSize: z.number().int().nonnegative(),
  maxEntries: z.number().int().nonnegative(),
  flags: z.number().int().nonnegative().default(0),
});

/** One compiled object: for one arch, one mode and (headers mode) one kernel release. */
export const ObjectSchema = z.object({
  /** File name inside the bundle (also the layer title). */
  name: z.string().regex(/^[A-Za-z0-9._+-]+$/),
  arch: ArchSchema,
  mode: ModeSchema,
  kernel: KernelSchema,
  compiler: z.object({
    name: z.string(),
    version: z.string(),
    /** Full argv of every compiler invocation, in order. */
    argv: z.array(z.array(z.string())).min(1),
  }),
  /** Digest and size of the (stripped) object. */
  digest,
  size: z.number().int().positive(),
  license: z.string(),
  programs: z.array(ProgramSchema),
  maps: z.array(MapSchema),
});

/** The whole manifest. */
export const ManifestSchema = z.object({
  schemaVersion: z.literal(SCHEMA_VERSION),
  tool: z.object({
    name: z.string().regex(/^[a-z0-9_-]+$/),
    version: z.string(),
    /** sha256 of the tool's BPF C source (and shared headers, concatenated in order). */
    sourceDigest: digest,
  }),
  objects: z.array(ObjectSchema).min(1),
});

/** A validated manifest. */
export type Manifest = z.infer<typeof ManifestSchema>;
/** One object entry. */
export type ObjectEntry = z.infer<typeof ObjectSchema>;

/** Raised for a manifest that does not validate; the message lists every problem. */
export class ManifestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ManifestError";
  }
}

/** Validates a parsed JSON value as a manifest; throws {@link ManifestError}. */
export function parseManifest(value: unknown): Manifest {
  const r = ManifestSchema.safeParse(value);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`);
  throw new ManifestError(`bad manifest: ${problems.join("; ")}`);
}

/** Canonical JSON (sorted keys, no whitespace): the bytes hashed and stored. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v as object).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = sortKeys(x);
    }
    return out;
  }
  return v;
}
