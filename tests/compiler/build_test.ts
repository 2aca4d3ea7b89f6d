/**
 * The compiler stage end to end: CLI builds for the running kernel into OCI
 * bundles (validated, copied with skopeo), byte-reproducible objects across
 * checkout directories, cached rebuilds, per-arch differences and the arch
 * check that refuses a wrong `__TARGET_ARCH_`, and bad inputs.
 *
 * Debian header-tree tests resolve Debian 6.1 amd64/arm64 through
 * compiler/kernels (cached under .cache/kernels); they are skipped only when
 * the Debian archive is unreachable and nothing is cached.
 */

import assert from "../support/assert.ts";
import { readBundle, sha256 } from "../../artifacts/oci.ts";
import { allArches, archInfo } from "../../compiler/arch.ts";
import {
  ArchMismatchError,
  checkArchLoads,
  ctxLoads,
  sectionNames,
} from "../../compiler/arch_check.ts";
import {
  absPath,
  buildAll,
  type BuildJob,
  type BuiltObject,
  detectToolchain,
  type Mode,
  type ToolSource,
} from "../../compiler/build.ts";
import { type KernelInputs, resolveKernelInputs } from "../../compiler/kernel_inputs.ts";
import { KernelInputError } from "../../compiler/kernels/mod.ts";
import { parseObject } from "../../artifacts/bpf_object.ts";

const ROOT = absPath(new URL("../..", import.meta.url).pathname);
const FIX = `${ROOT}/tests/compiler/fixtures`;
const dec = new TextDecoder();

/** Runs `deno run -A compiler/main.ts …`. */
async function cli(args: string[]) {
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/compiler/main.ts`, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    seconds: (performance.now() - t0) / 1000,
  };
}

async function run(cmd: string, args: string[]) {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

function fixture(name: string): ToolSource {
  return { name, source: `${FIX}/${name}.bpf.c`, version: "0.0.0" };
}

function tool(root: string, name: string): ToolSource {
  return { name, source: `${root}/tools/${name}/${name}.bpf.c`, version: "0.1.0" };
}

/** Copies `<ROOT>/tools/<dir>` (flat) for every dir into `<dest>/tools/`. */
async function copyTools(dest: string, dirs: string[]) {
  for (const d of dirs) {
    await Deno.mkdir(`${dest}/tools/${d}`, { recursive: true });
    for await (const e of Deno.readDir(`${ROOT}/tools/${d}`)) {
      if (e.isFile) {
        await Deno.copyFile(`${ROOT}/tools/${d}/${e.name}`, `${dest}/tools/${d}/${e.name}`);
      }
    }
  }
}

async function build(
  jobs: BuildJob[],
  cacheDir: string,
  extra: { root?: string; targetArchOverride?: string } = {},
) {
  return await buildAll(jobs, { root: extra.root ?? ROOT, cacheDir, ...extra });
}

/** Immediates of every `r += imm` (BPF_ALU64 | BPF_ADD | BPF_K) in an object's programs. */
function addImmediates(bytes: Uint8Array): Set<number> {
  const out = new Set<number>();
  for (const p of parseObject(bytes).programs) {
    const v = new DataView(p.insns.buffer, p.insns.byteOffset, p.insns.byteLength);
    for (let i = 0; i + 8 <= p.insns.length; i += 8) {
      if (p.insns[i] === 0x07) out.add(v.getInt32(i + 4, true));
    }
  }
  return out;
}

/** A `const volatile __u64` of an object's .rodata. */
function rodataU64(bytes: Uint8Array, name: string): number {
  const ro = parseObject(bytes).maps.find((m) => m.section === ".rodata");
  const v = ro?.variables.find((x) => x.name === name);
  assert.ok(ro?.contents && v, `.rodata variable ${name} missing`);
  return Number(
    new DataView(ro.contents.buffer, ro.contents.byteOffset).getBigUint64(v.offset, true),
  );
}

const running = await resolveKernelInputs({ kind: "running" }, { want: ["btf"] });

/** Debian 6.1 amd64 + arm64 header trees (and BTF), or why they are unavailable. */
const debian: { x86: KernelInputs; arm: KernelInputs } | { skip: string } | { error: Error } =
  await (async () => {
    try {
      const [x86, arm] = await Promise.all(
        (["x86_64", "aarch64"] as const).map((arch) =>
          resolveKernelInputs({ kind: "debian", series: "6.1", arch }, { want: ["headers", "btf"] })
        ),
      );
      return { x86, arm };
    } catch (e) {
      if (e instanceof KernelInputError && e.code === "network") {
        return { skip: `the Debian archive is unreachable and nothing is cached (${e.message})` };
      }
      return { error: e as Error };
    }
  })();
if ("skip" in debian) console.warn(`build_test: skipping Debian header-tree tests: ${debian.skip}`);
const noDebian = "skip" in debian;
function debianKernels(): { x86: KernelInputs; arm: KernelInputs } {
  if ("error" in debian) throw debian.error;
  if ("skip" in debian) throw new Error(debian.skip);
  return debian;
}

Deno.test("compiler: build for the running kernel, bundles validate and skopeo copies them", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "bpfpack-build-" });
  try {
    const r = await cli([
      "--kernel",
      "running",
      "--tool",
      "opensnoop,execsnoop",
      "--out",
      `${tmp}/out`,
      "--cache",
      `${tmp}/cache`,
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /compiled in [0-9.]+ s/);
    const summary = JSON.parse(r.stdout);
    assert.equal(summary.ok, true);
    assert.equal(summary.objects.length, 2);
    for (const name of ["opensnoop", "execsnoop"]) {
      const dir = await readBundle(`${tmp}/out/${name}.oci`);
      const tar = await readBundle(`${tmp}/out/${name}.oci.tar`);
      assert.equal(dir.digest, tar.digest);
      const m = dir.manifest;
      assert.equal(m.tool.name, name);
      assert.equal(m.tool.version, "0.1.0");
      assert.equal(m.objects.length, 1);
      const o = m.objects[0];
      assert.equal(o.arch, running.arch);
      assert.equal(o.mode, "core");
      assert.equal(o.kernel.release, running.release);
      assert.equal(o.kernel.inputDigest, running.btf!.digest);
      assert.equal(o.license, "GPL");
      assert.equal(o.digest, await sha256(dir.objects.get(o.name)!));
      assert.ok(o.compiler.argv[0].includes(`-D__TARGET_ARCH_${archInfo(o.arch).targetArch}`));
      assert.ok(o.compiler.argv[0].includes("-DBPFPACK_CORE"));
      // Stripped of DWARF, with the BTF the loader and CO-RE need.
      const elfSections = sectionNames(dir.objects.get(o.name)!);
      assert.ok(!elfSections.some((n) => n.startsWith(".debug_")), elfSections.join(" "));
      assert.ok(elfSections.includes(".BTF") && elfSections.includes(".BTF.ext"));
      const spec = parseObject(dir.objects.get(o.name)!);
      if (name === "execsnoop") {
        assert.ok(spec.programs.some((p) => p.coreRelos.length > 0), "no CO-RE relocations");
      }
      assert.ok(spec.programs.every((p) => p.funcInfo.length > 0), "no func_info");
      const sections = o.programs.map((p) => p.section);
      const enter = name === "opensnoop" ? "sys_enter_openat" : "sys_enter_execve";
      assert.ok(sections.includes(`tracepoint/syscalls/${enter}`), sections.join(" "));
      assert.ok(o.programs.every((p) => p.type === "tracepoint"));
      const events = o.maps.find((x) => x.name === "events");
      assert.equal(events?.type, 4, "events is a PERF_EVENT_ARRAY");
      const sj = summary.objects.find((x: { tool: string }) => x.tool === name);
      assert.equal(sj.digest, o.digest);
      assert.equal(sj.size, o.size);

      // A standard OCI tool copies it and sees one layer per object.
      const copy = `${tmp}/copy-${name}`;
      const c = await run("skopeo", [
        "copy",
        `oci:${tmp}/out/${name}.oci:${m.tool.version}`,
        `oci:${copy}:${m.tool.version}`,
      ]);
      assert.equal(c.code, 0, c.stderr);
      const raw = await run("skopeo", ["inspect", "--raw", `oci:${copy}:${m.tool.version}`]);
      assert.equal(raw.code, 0, raw.stderr);
      const image = JSON.parse(raw.stdout);
      assert.equal(image.layers.length, 1);
      assert.equal(image.layers[0].digest, o.digest);
      assert.equal(image.layers[0].mediaType, "application/vnd.bpfpack.bpf.object.v1");
      assert.equal(image.layers[0].annotations["io.bpfpack.mode"], "core");
      assert.equal((await readBundle(copy)).manifest.objects[0].digest, o.digest);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("compiler: objects are byte-identical when built from two checkout directories", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "bpfpack-repro-" });
  try {
    const roots = [`${tmp}/checkout-a`, `${tmp}/elsewhere/checkout-b`];
    const digests: Map<string, string>[] = [];
    for (const root of roots) {
      await copyTools(root, ["include", "opensnoop", "execsnoop"]);
      const jobs: BuildJob[] = [];
      for (const name of ["opensnoop", "execsnoop"]) {
        jobs.push({ tool: tool(root, name), kernel: running, mode: "core" });
        if (!noDebian) {
          jobs.push({ tool: tool(root, name), kernel: debianKernels().x86, mode: "headers" });
          jobs.push({ tool: tool(root, name), kernel: debianKernels().arm, mode: "core" });
        }
      }
      const r = await build(jobs, `${root}/.cache/build`, { root });
      assert.deepEqual(r.failures.map((f) => f.message), []);
      assert.ok(r.objects.every((o) => !o.cached));
      for (const o of r.objects) {
        // No trace of where the checkout or its cache lived.
        const text = dec.decode(o.bytes);
        assert.ok(!text.includes(root), `${o.entry.name} mentions ${root}`);
        assert.ok(!text.includes(tmp), `${o.entry.name} mentions ${tmp}`);
      }
      digests.push(new Map(r.objects.map((o) => [o.entry.name, o.entry.digest])));
    }
    assert.equal(digests[0].size, noDebian ? 2 : 6);
    assert.deepEqual([...digests[0]].sort(), [...digests[1]].sort());
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("compiler: a fully cached rebuild takes under a second", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "bpfpack-cache-" });
  try {
    const args = [
      "--kernel",
      "running",
      "--out",
      `${tmp}/out`,
      "--cache",
      `${tmp}/cache`,
      "--json",
    ];
    if (!noDebian) args.push("--kernel", "debian:6.1:x86_64", "--kernel", "debian:6.1:aarch64");
    const cold = await cli(args);
    assert.equal(cold.code, 0, cold.stderr);
    assert.ok(JSON.parse(cold.stdout).objects.every((o: { cached: boolean }) => !o.cached));
    const warm = await cli(args);
    assert.equal(warm.code, 0, warm.stderr);
    const summary = JSON.parse(warm.stdout);
    assert.ok(summary.objects.every((o: { cached: boolean }) => o.cached));
    // Every tool: one core object for the running kernel, headers + core per Debian kernel.
    const tools = [...Deno.readDirSync(`${ROOT}/tools`)].filter((e) => {
      try {
        return Deno.statSync(`${ROOT}/tools/${e.name}/${e.name}.bpf.c`).isFile;
      } catch {
        return false;
      }
    }).length;
    assert.equal(summary.objects.length, tools * (noDebian ? 1 : 5));
    console.log(
      `cold ${cold.seconds.toFixed(2)} s, cached ${warm.seconds.toFixed(2)} s (process) / ` +
        `${summary.seconds} s (build) for ${summary.objects.length} objects`,
    );
    assert.ok(warm.seconds < 1, `cached rebuild took ${warm.seconds.toFixed(2)} s`);
    // The bundles of the cached rebuild are the same bytes.
    const again = JSON.parse(cold.stdout).objects.map((o: { digest: string }) => o.digest).sort();
    assert.deepEqual(summary.objects.map((o: { digest: string }) => o.digest).sort(), again);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("compiler: the arch table's PT_REGS_PARM1/2 loads tell every arch apart", () => {
  const arches = allArches();
  for (const a of arches) {
    assert.equal(checkArchLoads(a, a.parmLoads), null);
    for (const b of arches) {
      if (a !== b) assert.notEqual(checkArchLoads(a, b.parmLoads), null, `${a.arch} vs ${b.arch}`);
    }
  }
  assert.equal(archInfo("s390x").bpf, "bpfeb");
  assert.equal(archInfo("arm64").arch, "aarch64");
  assert.throws(() => archInfo("mips"), /unknown architecture "mips"/);
});

Deno.test("compiler: a wrong __TARGET_ARCH_ cannot ship (core, running kernel's BTF)", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "bpfpack-arch-" });
  try {
    // The running kernel's BTF (this host's arch) presented as the other arch.
    const other = running.arch === "x86_64" ? "aarch64" : "x86_64";
    const mislabelled: KernelInputs = { ...running, arch: other };
    const jobs = ["opensnoop", "execsnoop"].map((n) => ({
      tool: tool(ROOT, n),
      kernel: mislabelled,
      mode: "core" as Mode,
    }));
    // 1. The table's define for the label does not fit these types: refused.
    const a = await build(jobs, `${tmp}/cache`);
    assert.equal(a.objects.length, 0);
    assert.equal(a.failures.length, 1, a.failures.map((f) => f.message).join("\n"));
    assert.ok(a.failures[0] instanceof ArchMismatchError, a.failures[0].message);
    assert.match(a.failures[0].message, new RegExp(`do not all belong to ${other}`));
    // 2. The define that fits the types but not the label compiles — and is caught by the
    //    PT_REGS_PARM1/2 offsets (the "silently reads the wrong registers" case).
    const b = await build(jobs, `${tmp}/cache`, {
      targetArchOverride: archInfo(running.arch).targetArch,
    });
    assert.equal(b.objects.length, 0);
    assert.equal(b.failures.length, 1);
    assert.ok(b.failures[0] instanceof ArchMismatchError);
    assert.match(b.failures[0].message, /PT_REGS_PARM1\/2 compile to loads at/);
    assert.match(b.failures[0].message, new RegExp(`${other} needs`));
    // 3. Control: correctly labelled, the same source builds.
    const c = await build(jobs.map((j) => ({ ...j, kernel: running })), `${tmp}/cache`);
    assert.deepEqual(c.failures.map((f) => f.message), []);
    assert.equal(c.objects.length, 2);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test({
  name: "compiler: x86_64 and arm64 objects differ where they must (Debian 6.1 header trees)",
  ignore: noDebian,
  fn: async () => {
    const { x86, arm } = debianKernels();
    const tmp = await Deno.makeTempDir({ prefix: "bpfpack-archdiff-" });
    try {
      const jobs: BuildJob[] = [];
      for (const kernel of [x86, arm]) {
        for (const t of [tool(ROOT, "execsnoop"), fixture("offsets"), fixture("kprobe_parm1")]) {
          jobs.push({ tool: t, kernel, mode: "headers" });
        }
      }
      const r = await build(jobs, `${tmp}/cache`);
      assert.deepEqual(r.failures.map((f) => f.message), []);
      const get = (toolName: string, k: KernelInputs): BuiltObject => {
        const o = r.objects.find((x) => x.job.tool.name === toolName && x.job.kernel === k);
        assert.ok(o, `${toolName} ${k.arch} missing`);
        return o;
      };
      // task->real_parent: the offset each tree gives, baked into execsnoop's probe read.
      const offsets = new Map<string, number>();
      for (const k of [x86, arm]) {
        const off = rodataU64(get("offsets", k).bytes, "real_parent_offset");
        offsets.set(k.arch, off);
        const adds = addImmediates(get("execsnoop", k).bytes);
        assert.ok(adds.has(off), `execsnoop ${k.arch} has no "r += ${off}" (saw ${[...adds]})`);
        console.log(`${k.release}: task->real_parent at 0x${off.toString(16)}`);
      }
      assert.notEqual(offsets.get("x86_64"), offsets.get("aarch64"));
      assert.notEqual(get("execsnoop", x86).entry.digest, get("execsnoop", arm).entry.digest);
      // PT_REGS_PARM1: di (+112) on x86_64, regs[0] (+0) on arm64, as the table says.
      for (const k of [x86, arm]) {
        const loads = ctxLoads(get("kprobe_parm1", k).bytes, "kprobe/do_sys_openat2");
        assert.deepEqual(loads, [archInfo(k.arch).parmLoads[0]], `${k.arch}`);
      }
      // Objects carry the right per-arch argv.
      assert.ok(get("execsnoop", x86).entry.compiler.argv[0].includes("--target=x86_64-linux-gnu"));
      assert.ok(
        get("execsnoop", arm).entry.compiler.argv[0].includes("--target=aarch64-linux-gnu"),
      );
      assert.ok(get("execsnoop", arm).entry.compiler.argv[1].includes("-march=bpfel"));
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name: "compiler: a wrong __TARGET_ARCH_ cannot ship (headers, Debian 6.1 trees)",
  ignore: noDebian,
  fn: async () => {
    const { x86, arm } = debianKernels();
    const tmp = await Deno.makeTempDir({ prefix: "bpfpack-archhdr-" });
    try {
      for (const [kernel, wrong] of [[arm, "x86"], [x86, "arm64"]] as const) {
        const r = await build(
          [{ tool: tool(ROOT, "execsnoop"), kernel, mode: "headers" }],
          `${tmp}/cache`,
          { targetArchOverride: wrong },
        );
        assert.equal(r.objects.length, 0);
        assert.equal(r.failures.length, 1);
        assert.ok(r.failures[0] instanceof ArchMismatchError, r.failures[0].message);
        assert.match(r.failures[0].message, new RegExp(`__TARGET_ARCH_${wrong}`));
        assert.match(r.failures[0].message, /refusing to build this unit/);
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test("compiler: bad inputs give clear errors and the right exit codes", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "bpfpack-bad-" });
  try {
    // Missing tool: exit 1, names the tool and what exists.
    const missing = await cli([
      "--kernel",
      "running",
      "--tool",
      "nosuchtool",
      "--cache",
      `${tmp}/c`,
    ]);
    assert.equal(missing.code, 1);
    assert.match(
      missing.stderr,
      /no tool "nosuchtool": expected .*tools\/nosuchtool\/nosuchtool\.bpf\.c/,
    );
    assert.match(
      missing.stderr,
      /\(tools here: ([a-z0-9_]+, )*execsnoop, ([a-z0-9_]+, )*opensnoop\b/,
    );

    // Compile error: exit 1, clang's diagnostic shown, no bundle written.
    const root = `${tmp}/checkout`;
    await copyTools(root, ["include"]);
    await Deno.mkdir(`${root}/tools/broken`, { recursive: true });
    await Deno.copyFile(`${FIX}/broken.bpf.c`, `${root}/tools/broken/broken.bpf.c`);
    const broken = await cli([
      "--root",
      root,
      "--kernel",
      "running",
      "--out",
      `${tmp}/out`,
      "--cache",
      `${tmp}/c`,
    ]);
    assert.equal(broken.code, 1);
    assert.match(broken.stderr, /broken x86_64 core|broken \S+ core/);
    assert.match(broken.stderr, /error: use of undeclared identifier 'this_is_not_declared'/);
    assert.match(broken.stderr, /no bundles written/);
    await assert.rejects(Deno.stat(`${tmp}/out/broken.oci`));

    // Usage errors: exit 2.
    for (
      const args of [
        ["--bogus-flag"],
        ["--mode", "fast"],
        ["--kernel", "debian:5.10:x86_64"],
        ["--kernel", "btf:/x:mips"],
        ["--jobs", "0"],
        ["--matrix", `${tmp}/nope.json`],
        ["positional"],
      ]
    ) {
      const r = await cli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.ok(r.stderr.length > 0);
    }
    const help = await cli(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: deno task build/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("compiler: toolchain identity is recorded and stable", async () => {
  const a = await detectToolchain();
  const b = await detectToolchain();
  assert.equal(a.identity, b.identity);
  assert.match(a.clangVersion, /clang version 19\./);
  assert.equal(a.libbpfDigest, b.libbpfDigest);
});
