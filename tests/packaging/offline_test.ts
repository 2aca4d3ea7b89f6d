// The offline artifact (scripts/offline.ts): the x86_64 one runs here through its launcher and
// loads a real bundle; the aarch64 one holds an aarch64 deno and the same module byte for byte.
import assert from "../support/assert.ts";
import { RawClient } from "../../tools/client/raw.ts";
import { runningBundles } from "../support/bundles.ts";
import { uname } from "../../runtime/kernel/target.ts";
import { RUNTIME_VERSION } from "../../runtime/ops.ts";
import {
  buildOfflineRuntime,
  bundleRuntime,
  DENO_VERSION,
  elfMachine,
  type OfflineRuntime,
  sha256File,
} from "../../scripts/offline.ts";

const tmp = await Deno.makeTempDir({ prefix: "bpfpack-offline-test-" });
let x86: Promise<OfflineRuntime> | null = null;
let arm: Promise<OfflineRuntime> | null = null;
const x86Artifact = () => x86 ??= buildOfflineRuntime({ arch: "x86_64", outDir: `${tmp}/x86_64` });
const armArtifact = () =>
  arm ??= buildOfflineRuntime({ arch: "aarch64", outDir: `${tmp}/aarch64` });

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(tmp, { recursive: true });
  } catch { /* gone */ }
});

async function pipe(cmd: string, input: string, opts: { cwd?: string } = {}) {
  const child = new Deno.Command(cmd, {
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    cwd: opts.cwd,
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(input));
  await w.close();
  const r = await child.output();
  return {
    code: r.code,
    stdout: new TextDecoder().decode(r.stdout),
    stderr: new TextDecoder().decode(r.stderr),
  };
}

Deno.test("offline x86_64: bin/bpfd answers HELLO with the pinned deno, from any cwd and through a symlink", async () => {
  const a = await x86Artifact();
  assert.equal(a.dir, await Deno.realPath(`${tmp}/x86_64`));
  for (const f of [a.launcher, a.deno]) assert.ok((await Deno.stat(f)).mode! & 0o111, `${f} +x`);
  const link = `${tmp}/bpfd-link`;
  await Deno.symlink(a.launcher, link);
  for (const cmd of [a.launcher, link]) {
    const r = await pipe(cmd, "HELLO x\nexit\n", { cwd: "/" });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split("\n");
    assert.deepEqual(lines.slice(0, 3), ["STARTED_BPFD", "START_BPFD_OUTPUT", "hello: ret=0"]);
    for (const l of ["client=x", `deno=${DENO_VERSION}`, "arch=x86_64"]) {
      assert.ok(lines.includes(l), `${l} in:\n${r.stdout}`);
    }
    assert.equal(lines.filter((l) => l === "END_BPFD_OUTPUT").length, 1);
  }
  console.log(
    `x86_64 artifact: deno ${a.bytes.deno} B, bpfd.js ${a.bytes.module} B, total ${a.bytes.total} B`,
  );
});

Deno.test("offline x86_64: BUNDLE_LOAD of a real bundle (opensnoop, running kernel) works from the bundled module", async () => {
  const a = await x86Artifact();
  const bundle = `${await runningBundles()}/opensnoop.oci.tar`;
  const c = RawClient.spawn([a.launcher], { stderr: "null", timeoutMs: 60_000 });
  try {
    const r = await c.send(`BUNDLE_LOAD ${bundle} attach=all`);
    assert.match(r[0], /^bundle_load: ret=[1-9]/, r.join("\n"));
    assert.match(r[1], new RegExp(`arch=${uname().machine} mode=core .* tool=opensnoop `));
    assert.ok(r.some((l) => l.startsWith("prog ")), r.join("\n"));
    assert.ok(r.some((l) => l.startsWith("attach ")), r.join("\n"));
    // Upload path too (the bundle store module was lazily imported in the source).
    const fds = await c.send("SESSION_FDS");
    assert.match(fds[0], /^session_fds: ret=[1-9]/);
  } finally {
    assert.equal(await c.close(), 0);
  }
});

Deno.test("offline aarch64: bin/deno is an ELF aarch64 executable; lib/bpfd.js is identical to x86_64's", async () => {
  const [a, x] = await Promise.all([armArtifact(), x86Artifact()]);
  assert.equal(elfMachine(a.deno), 183, "EM_AARCH64");
  assert.equal(elfMachine(x.deno), 62, "EM_X86_64");
  assert.ok((await Deno.stat(a.deno)).mode! & 0o111);
  assert.deepEqual(await Deno.readFile(a.module), await Deno.readFile(x.module));
  assert.equal(await Deno.readTextFile(a.launcher), await Deno.readTextFile(x.launcher));
  const info = JSON.parse(await Deno.readTextFile(`${a.dir}/build-info.json`));
  assert.equal(info.arch, "aarch64");
  assert.equal(info.denoVersion, DENO_VERSION);
  assert.equal(info.deno.sha256, await sha256File(a.deno));
  assert.equal(a.bytes.total, a.bytes.deno + a.bytes.module + info.launcher.bytes);
  console.log(
    `aarch64 artifact: deno ${a.bytes.deno} B, bpfd.js ${a.bytes.module} B, total ${a.bytes.total} B`,
  );
});

Deno.test("offline: an up-to-date artifact is reused; a stale digest rebuilds it", async () => {
  const a = await x86Artifact();
  const before = (await Deno.stat(a.deno)).mtime!.getTime();
  const again = await buildOfflineRuntime({ arch: "x86_64", outDir: a.dir });
  assert.deepEqual(again, a);
  assert.equal((await Deno.stat(a.deno)).mtime!.getTime(), before, "not copied again");
  const infoPath = `${a.dir}/build-info.json`;
  const info = JSON.parse(await Deno.readTextFile(infoPath));
  await Deno.writeTextFile(infoPath, JSON.stringify({ ...info, inputDigest: "0".repeat(64) }));
  await Deno.writeTextFile(a.module, "// stale\n");
  const rebuilt = await buildOfflineRuntime({ arch: "x86_64", outDir: a.dir });
  assert.deepEqual(rebuilt, a);
  assert.equal(JSON.parse(await Deno.readTextFile(infoPath)).inputDigest, info.inputDigest);
  assert.equal(await sha256File(a.module), info.module.sha256);
});

Deno.test("offline: the bundled module inlines the lazy imports; minified it still runs (sizes)", async () => {
  const plain = await bundleRuntime();
  const min = await bundleRuntime({ minify: true });
  const text = await Deno.readTextFile(plain.path);
  assert.doesNotMatch(text, /\bimport\(\s*["'][^"']*\.ts["']\s*\)/);
  assert.ok(!/from\s+["'](npm|jsr|https?):/.test(text), "no remote or npm imports left");
  assert.ok(min.bytes < plain.bytes);
  const m = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-config", min.path, "--version"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(new TextDecoder().decode(m.stdout).trim(), `bpfd ${RUNTIME_VERSION}`);
  console.log(`bpfd.js: plain ${plain.bytes} B, minified ${min.bytes} B`);
});

Deno.test("offline: bundles/<sha256>.tar next to the module are found by BUNDLE_BEGIN (as embedded ones in a compiled bpfd)", async () => {
  const a = await x86Artifact();
  const bundle = await Deno.readFile(`${await runningBundles()}/opensnoop.oci.tar`);
  const hex = new Uint8Array(await crypto.subtle.digest("SHA-256", bundle)).toHex();
  await Deno.mkdir(`${a.dir}/lib/bundles`, { recursive: true });
  await Deno.writeFile(`${a.dir}/lib/bundles/${hex}.tar`, bundle);
  const c = RawClient.spawn([a.launcher, "--cache-dir", `${tmp}/empty-cache`], {
    stderr: "null",
    timeoutMs: 60_000,
  });
  try {
    const r = await c.send(`BUNDLE_BEGIN sha256:${hex} ${bundle.length}`);
    assert.deepEqual(r, ["bundle_begin: ret=0", `have ${a.dir}/lib/bundles/${hex}.tar`]);
    const l = await c.send(`BUNDLE_LOAD ${r[1].slice(5)}`);
    assert.match(l[0], /^bundle_load: ret=[1-9]/, l.join("\n"));
    // Anything else is still uploaded into the cache directory.
    const other = await c.send(`BUNDLE_BEGIN sha256:${"0".repeat(64)} 10`);
    assert.deepEqual(other[0], "bundle_begin: ret=0");
    assert.match(other[1], /^send \d+$/);
  } finally {
    assert.equal(await c.close(), 0);
    await Deno.remove(`${a.dir}/lib/bundles`, { recursive: true });
  }
});
