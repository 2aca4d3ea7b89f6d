// The whole kernel matrix of compiler/kernels.json: opensnoop and execsnoop for Debian 6.1 and
// 6.12 × amd64 and arm64 (headers and core) plus the running kernel (core). Every bundle
// validates, holds exactly the expected objects, and a standard OCI tool copies it intact.
import assert from "../support/assert.ts";
import { ROOT } from "../support/bpfd.ts";
import { readBundle } from "../../artifacts/oci.ts";
import { probeDebianArchive } from "../../compiler/kernels/mod.ts";
import { parseObject } from "../../artifacts/bpf_object.ts";

const MATRIX = JSON.parse(await Deno.readTextFile(`${ROOT}/compiler/kernels.json`)) as {
  kernels: { kernel: string; modes: string[] }[];
};
const probe = await probeDebianArchive();
if (!probe.reachable) console.warn(`matrix_test: Debian archive unreachable: ${probe.detail}`);

Deno.test({
  name: "compiler: the full matrix builds; every bundle validates and skopeo copies it",
  // Only when the Debian archive is truly unreachable (and nothing is cached) is this skipped.
  ignore: !probe.reachable && !(await hasCachedKernels()),
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "bpfpack-matrix-" });
    try {
      const t0 = performance.now();
      const r = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${ROOT}/compiler/main.ts`, "--out", out, "--json", "--quiet"],
        cwd: ROOT,
      }).output();
      assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
      const secs = (performance.now() - t0) / 1000;
      const expected = MATRIX.kernels.reduce((n, k) => n + k.modes.length, 0);
      for (const tool of ["opensnoop", "execsnoop"]) {
        const b = await readBundle(`${out}/${tool}.oci.tar`);
        const dir = await readBundle(`${out}/${tool}.oci`);
        assert.equal(b.digest, dir.digest, "directory and tar hold the same bundle");
        assert.equal(b.manifest.objects.length, expected, `${tool}: one object per kernel × mode`);
        const kinds = new Set(b.manifest.objects.map((o) => `${o.arch}/${o.mode}`));
        for (const k of ["x86_64/headers", "x86_64/core", "aarch64/headers", "aarch64/core"]) {
          assert.ok(kinds.has(k), `${tool} has ${k}`);
        }
        for (const o of b.manifest.objects) {
          // Every object parses as BPF and lists the programs the manifest says.
          const spec = parseObject(b.objects.get(o.name)!, o.name);
          assert.deepEqual(
            spec.programs.map((p) => p.name).sort(),
            o.programs.map((p) => p.name).sort(),
          );
          if (o.mode === "headers") assert.match(o.kernel.release, /^6\.(1|12)\./);
        }
        const copy = await new Deno.Command("skopeo", {
          args: [
            "copy",
            `oci:${out}/${tool}.oci:${b.manifest.tool.version}`,
            `oci:${out}/${tool}-copy.oci:${b.manifest.tool.version}`,
          ],
        }).output();
        assert.ok(copy.success, new TextDecoder().decode(copy.stderr));
        const back = await readBundle(`${out}/${tool}-copy.oci`);
        assert.equal(back.digest, b.digest, "skopeo's copy is the same bundle");
      }
      console.log(`matrix: ${expected} objects per tool in ${secs.toFixed(1)} s`);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

async function hasCachedKernels(): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(`${ROOT}/.cache/kernels`)) return true;
  } catch { /* no cache */ }
  return false;
}
