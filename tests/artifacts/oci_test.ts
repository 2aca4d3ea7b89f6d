// Bundles as OCI layouts: round trip, determinism, corruption detection, a standard OCI tool.
import assert from "../support/assert.ts";
import {
  BundleError,
  bundleFiles,
  bundleTar,
  openBundle,
  readBundle,
  sha256,
  writeBundleDir,
} from "../../artifacts/oci.ts";
import { type Manifest, ManifestError, parseManifest } from "../../artifacts/manifest.ts";
import { readTar, writeTar } from "../../artifacts/tar.ts";

async function sample(): Promise<{ manifest: Manifest; objects: Map<string, Uint8Array> }> {
  const obj = new TextEncoder().encode("\x7fELF pretend object ".repeat(40));
  const manifest = parseManifest({
    schemaVersion: 1,
    tool: { name: "demo", version: "1.2.3", sourceDigest: await sha256(new Uint8Array([1])) },
    objects: [{
      name: "demo-x86_64-core.bpf.o",
      arch: "x86_64",
      mode: "core",
      kernel: { release: "6.18.0", source: "running-kernel", inputDigest: await sha256(obj) },
      compiler: { name: "clang", version: "19.1.7", argv: [["clang-19", "-target", "bpf"]] },
      digest: await sha256(obj),
      size: obj.length,
      license: "GPL",
      programs: [{ name: "p", section: "tp/syscalls/sys_enter_openat", type: "tracepoint" }],
      maps: [{ name: "events", type: 4, keySize: 4, valueSize: 4, maxEntries: 2, flags: 0 }],
    }],
  });
  return { manifest, objects: new Map([["demo-x86_64-core.bpf.o", obj]]) };
}

Deno.test("bundle: directory and tar round trip, byte-identical when rebuilt", async () => {
  const { manifest, objects } = await sample();
  const files = await bundleFiles(manifest, objects);
  const again = await bundleFiles(manifest, objects);
  const tar = bundleTar(files);
  assert.deepEqual(bundleTar(again), tar, "deterministic");
  const dir = await Deno.makeTempDir();
  try {
    await writeBundleDir(`${dir}/b.oci`, files);
    await Deno.writeFile(`${dir}/b.tar`, tar);
    const a = await readBundle(`${dir}/b.oci`);
    const b = await readBundle(`${dir}/b.tar`);
    assert.equal(a.digest, b.digest);
    assert.deepEqual(a.manifest, manifest);
    assert.deepEqual(
      b.objects.get("demo-x86_64-core.bpf.o"),
      objects.get("demo-x86_64-core.bpf.o"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bundle: a corrupted blob, a missing blob and a bad manifest are named", async () => {
  const { manifest, objects } = await sample();
  const files = await bundleFiles(manifest, objects);
  const objPath = `blobs/sha256/${manifest.objects[0].digest.slice(7)}`;
  const flipped = new Map(files);
  const bad = files.get(objPath)!.slice();
  bad[10] ^= 1;
  flipped.set(objPath, bad);
  await assert.rejects(
    openBundle(flipped),
    (e: Error) =>
      e instanceof BundleError &&
      /object demo-x86_64-core\.bpf\.o: digest mismatch/.test(e.message),
  );
  const missing = new Map(files);
  missing.delete(objPath);
  await assert.rejects(openBundle(missing), /blob sha256:[0-9a-f]+ is missing/);
  assert.throws(
    () => parseManifest({ ...manifest, schemaVersion: 2 }),
    (e: Error) => e instanceof ManifestError && /schemaVersion/.test(e.message),
  );
  assert.throws(
    () => parseManifest({ ...manifest, objects: [{ ...manifest.objects[0], arch: "mips" }] }),
    /objects\.0\.arch/,
  );
  await assert.rejects(readBundle("/nonexistent/bundle"), /no bundle at/);
});

Deno.test("tar: truncated and corrupted archives are refused", () => {
  const tar = writeTar(new Map([["a/b", new Uint8Array(700).fill(7)]]));
  assert.equal(readTar(tar).get("a/b")?.length, 700);
  assert.throws(() => readTar(tar.subarray(0, 1100)), /truncated/);
  const bad = tar.slice();
  bad[600] ^= 0xff; // inside the second header
  assert.throws(() => readTar(bad), /checksum|truncated/);
});

// skopeo is installed by scripts/setup.sh: its absence is a failure, not a skip.
Deno.test({
  name: "bundle: skopeo (a standard OCI tool) copies and inspects it",
  fn: async () => {
    const { manifest, objects } = await sample();
    const dir = await Deno.makeTempDir();
    try {
      await writeBundleDir(`${dir}/src.oci`, await bundleFiles(manifest, objects));
      const copy = await new Deno.Command("skopeo", {
        args: ["copy", `oci:${dir}/src.oci:1.2.3`, `oci:${dir}/dst.oci:1.2.3`],
      }).output();
      assert.ok(copy.success, new TextDecoder().decode(copy.stderr));
      const back = await readBundle(`${dir}/dst.oci`);
      assert.deepEqual(back.manifest, manifest);
      assert.deepEqual(back.objects, objects);
      const raw = await new Deno.Command("skopeo", {
        args: ["inspect", "--raw", `oci:${dir}/dst.oci:1.2.3`],
      }).output();
      const im = JSON.parse(new TextDecoder().decode(raw.stdout));
      assert.equal(im.layers[0].annotations["io.bpfpack.arch"], "x86_64");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
