// deno task compile (scripts/compile.ts): the argv per target, the clean staging folder, a real
// `deno compile` run against a stand-in base binary, and the message when denort cannot be had.
import assert from "../support/assert.ts";
import { runningBundles } from "../support/bundles.ts";
import { ElfFile } from "../../artifacts/elf.ts";
import {
  checkExecutable,
  compileArgs,
  CompileError,
  compileRuntime,
  PAYLOAD_SECTION,
  readPayload,
  stageRuntime,
  TARGETS,
} from "../../scripts/compile.ts";
import { ARCHES, bundleRuntime, ROOT, targetDeno } from "../../scripts/offline.ts";

const tmp = await Deno.makeTempDir({ prefix: "bpfpack-compile-test-" });
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(tmp, { recursive: true });
  } catch { /* gone */ }
});

async function walk(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(rel ? `${dir}/${rel}` : dir)) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    out.push(p);
    if (e.isDirectory) out.push(...await walk(dir, p));
  }
  return out.sort();
}

/** The environment of a machine without network and without a denort anywhere. */
function offlineEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  for (const k of Object.keys(env)) {
    if (/^DENORT_BIN|^(https?|all|no)_proxy$/i.test(k)) delete env[k];
  }
  const closed = "http://127.0.0.1:1"; // connection refused: no network, deterministically
  return {
    ...env,
    HTTPS_PROXY: closed,
    HTTP_PROXY: closed,
    ALL_PROXY: closed,
    DENO_DIR: `${tmp}/empty-deno-dir`, // no cached denort either
  };
}

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = hay.indexOf(needle[0]); i >= 0; i = hay.indexOf(needle[0], i + 1)) {
    if (i + needle.length > hay.length) return -1;
    for (let j = 1; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

Deno.test("compileArgs: the deno compile argv per target", () => {
  for (const arch of ARCHES) {
    assert.deepEqual(
      compileArgs({ arch, entry: "bpfd.js", output: `/o/bpfd-${arch}`, include: ["bundles"] }),
      [
        "compile",
        "-A",
        "--no-check",
        "--no-config",
        "--no-lock",
        "--no-npm",
        "--no-remote",
        "--target",
        TARGETS[arch],
        "--output",
        `/o/bpfd-${arch}`,
        "--include",
        "bundles",
        "bpfd.js",
      ],
    );
  }
  assert.equal(TARGETS.aarch64, "aarch64-unknown-linux-gnu");
  assert.equal(TARGETS.x86_64, "x86_64-unknown-linux-gnu");
  const bare = compileArgs({ arch: "aarch64", entry: "bpfd.js", output: "o" });
  assert.ok(!bare.includes("--include"));
  assert.equal(bare.at(-1), "bpfd.js");
});

Deno.test("stageRuntime: only bpfd.js and bundles/<sha256>.tar; the module graph is that one file", async () => {
  const bundle = `${await runningBundles()}/opensnoop.oci.tar`;
  const dir = bundle.replace(/\.tar$/, ""); // the same bundle as an OCI directory
  const s = await stageRuntime({ bundles: [bundle, dir] });
  try {
    const files = await walk(s.dir);
    assert.ok(!files.some((f) => f.includes("node_modules")), files.join(" "));
    const hex = new Uint8Array(
      await crypto.subtle.digest("SHA-256", await Deno.readFile(bundle)),
    ).toHex();
    // The directory packs to the same tar the client uploads: one file, one digest.
    assert.deepEqual(files, ["bpfd.js", "bundles", `bundles/${hex}.tar`]);
    assert.deepEqual(s.bundles, { [bundle]: `bundles/${hex}.tar`, [dir]: `bundles/${hex}.tar` });
    assert.deepEqual(s.include, ["bundles"]);
    assert.equal(s.bytes, (await bundleRuntime()).bytes + (await Deno.stat(bundle)).size);
    const info = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", "--no-config", s.entry],
      cwd: s.dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(info.success, new TextDecoder().decode(info.stderr));
    const graph = JSON.parse(new TextDecoder().decode(info.stdout));
    const specs: string[] = graph.modules.map((m: { specifier: string }) => m.specifier).sort();
    assert.deepEqual(specs, [`file://${await Deno.realPath(s.dir)}/bpfd.js`, "node:util"].sort());
    assert.deepEqual(graph.npmPackages ?? {}, {});
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
  await assert.rejects(
    stageRuntime({ bundles: [`${tmp}/nope.oci.tar`] }),
    (e: Error) => e instanceof CompileError && /pass a bundle from deno task build/.test(e.message),
  );
});

Deno.test("deno compile with a stand-in base (the x86_64 deno, not a real denort; the output is not run): base + payload holding the runtime and the bundle", async () => {
  const base = await targetDeno("x86_64");
  const bundle = `${await runningBundles()}/opensnoop.oci.tar`;
  const env = { ...offlineEnv(), DENORT_BIN: base };
  const t0 = performance.now();
  const c = await compileRuntime({
    arch: "x86_64",
    outDir: `${tmp}/out`,
    bundles: [bundle],
    env,
    warn: () => {},
  });
  const ms = performance.now() - t0;
  assert.equal(c.output, `${tmp}/out/bpfd-x86_64`);
  assert.equal(c.base, base);
  const baseBytes = (await Deno.stat(base)).size;
  const size = (await Deno.stat(c.output)).size;
  assert.equal(c.bytes.output, size);
  assert.equal(c.bytes.base, baseBytes);
  const sec = ElfFile.open(c.output).section(PAYLOAD_SECTION);
  assert.ok(sec, `no ${PAYLOAD_SECTION} section`);
  assert.equal(c.bytes.payload, sec.size);
  // The payload is what was staged plus metadata (kB), never node_modules or a binary.
  assert.ok(sec.size >= c.bytes.staged && sec.size < c.bytes.staged + 64_000, `${sec.size}`);
  // ≈ base + payload: libsui adds the payload as a new segment, aligned (≤ 2 × 2 MiB padding).
  const extra = size - baseBytes - sec.size;
  assert.ok(extra >= 0 && extra <= 4 * 1024 * 1024, `output − base − payload = ${extra}`);
  const payload = readPayload(c.output)!;
  assert.ok(indexOf(payload, await Deno.readFile((await bundleRuntime()).path)) >= 0, "runtime");
  assert.ok(indexOf(payload, await Deno.readFile(bundle)) >= 0, "bundle bytes");
  const text = new TextDecoder("latin1").decode(payload);
  assert.ok(text.includes('"entrypoint_key":"bpfd.js"'), "entry point");
  assert.ok(text.includes(c.bundles[bundle].split("/")[1]), "bundles/<sha256>.tar in the VFS");
  assert.ok(!text.includes(`"n":"node_modules"`), "no node_modules in the VFS");
  console.log(
    `stand-in compile (${ms.toFixed(0)} ms): output ${size} B = base ${baseBytes} B + payload ` +
      `${sec.size} B (staged ${c.bytes.staged} B) + ${extra} B alignment`,
  );
  // The size check fails loudly when the payload is far larger than what was staged.
  await assert.rejects(
    checkExecutable(c.output, { arch: "x86_64", stagedBytes: 1000, baseBytes }),
    /picked up more than the staging folder/,
  );
  await assert.rejects(
    checkExecutable(c.output, { arch: "aarch64", stagedBytes: c.bytes.staged, baseBytes }),
    /ELF machine 62, not aarch64/,
  );
  // One DENORT_BIN cannot serve both targets: the wrong-arch base is refused before compiling.
  await assert.rejects(
    compileRuntime({ arch: "aarch64", outDir: `${tmp}/out`, env, warn: () => {} }),
    /not an aarch64 ELF executable .*DENORT_BIN_AARCH64/,
  );
});

Deno.test("deno compile without DENORT_BIN and without network: a clear error naming DENORT_BIN and the offline artifact", async () => {
  const env = offlineEnv();
  await assert.rejects(
    compileRuntime({ arch: "aarch64", outDir: `${tmp}/nonet`, env, warn: () => {} }),
    (e: Error) => {
      assert.ok(e instanceof CompileError, e.stack);
      assert.match(e.message, /needs denort, the base binary for aarch64-unknown-linux-gnu/);
      assert.match(e.message, /set DENORT_BIN=/);
      assert.match(e.message, /network/);
      assert.match(e.message, /scripts\/offline\.ts --arch aarch64/);
      return true;
    },
  );
  // The CLI says the same and exits 1.
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/scripts/compile.ts`, "--target", "arm64", "--out", `${tmp}/nonet`],
    env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 1, err);
  assert.match(err, /DENORT_BIN/);
  assert.match(err, /scripts\/offline\.ts/);
  await assert.rejects(Deno.stat(`${tmp}/nonet/bpfd-aarch64`));
  // A DENORT_BIN that does not exist is named as such.
  await assert.rejects(
    compileRuntime({ arch: "x86_64", env: { ...env, DENORT_BIN: `${tmp}/no-denort` } }),
    /DENORT_BIN=.*no-denort does not exist/,
  );
});

Deno.test("compile CLI: --help, bad target", async () => {
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}/scripts/compile.ts`, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const h = await run(["--help"]);
  assert.equal(h.code, 0);
  assert.match(new TextDecoder().decode(h.stdout), /DENORT_BIN/);
  const bad = await run(["--target", "riscv64"]);
  assert.equal(bad.code, 2);
  assert.match(new TextDecoder().decode(bad.stderr), /unsupported target "riscv64"/);
});
