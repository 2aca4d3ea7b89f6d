/**
 * Tests of compiler/kernels: the running kernel (always), pure helpers
 * (version codes, banners, LZ4, digests, spec validation), and the Debian
 * matrix — 6.1 and 6.12, arm64 and amd64, header trees and BTF — with real
 * downloads into `.cache/kernels` (set BPFPACK_KERNEL_CACHE to use another
 * directory, e.g. an empty one to time a cold run).
 *
 * The Debian tests are skipped only when the Debian archive is unreachable
 * (an `apt-get update` in the module's private apt state fails with a network
 * error); the reason is printed.
 *
 * @example
 * ```sh
 * deno test -A tests/compiler/kernels_test.ts
 * BPFPACK_KERNEL_CACHE=$(mktemp -d) deno test -A tests/compiler/kernels_test.ts  # cold
 * ```
 * @module
 */

import assert from "../support/assert.ts";
import {
  type Arch,
  archInfo,
  defaultCacheDir,
  digestTree,
  KernelInputError,
  type KernelInputs,
  probeDebianArchive,
  resolveKernel,
  treeDigestRoots,
} from "../../compiler/kernels/mod.ts";
import { abiFromPackage, upstreamVersion } from "../../compiler/kernels/debian.ts";
import { digestFile } from "../../compiler/kernels/digest.ts";
import { decodeLz4Legacy } from "../../compiler/kernels/lz4.ts";
import { archOfVmlinuxH, findBtf, parseBtfHeader } from "../../compiler/kernels/btf.ts";
import { type Compression, unpackKernelImage } from "../../compiler/kernels/kernel_image.ts";
import {
  findBanner,
  kernelVersionCode,
  parseVersionH,
  versionCodeFromRelease,
  versionCodeFromUnameVersion,
} from "../../compiler/kernels/version.ts";

const CACHE = Deno.env.get("BPFPACK_KERNEL_CACHE") ?? defaultCacheDir();

async function expectError(fn: () => Promise<unknown>, code: string, text?: RegExp) {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof KernelInputError, `expected KernelInputError, got ${e}`);
    assert.equal(e.code, code, e.message);
    if (text) assert.match(e.message, text);
    return e;
  }
  assert.fail(`expected a KernelInputError(${code})`);
}

/** `struct task_struct { … }` of a vmlinux.h, or "" when absent. */
function taskStruct(vmlinuxH: string): string {
  const start = vmlinuxH.indexOf("\nstruct task_struct {\n");
  if (start < 0) return "";
  return vmlinuxH.slice(start, vmlinuxH.indexOf("\n};\n", start));
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const value = await fn();
  return [value, (performance.now() - t0) / 1000];
}

// ---------------------------------------------------------------- pure helpers

Deno.test("kernels: version codes, version.h and uname -v", () => {
  assert.equal(kernelVersionCode(6, 1, 119), 393591);
  assert.equal(kernelVersionCode(4, 9, 337), (4 << 16) | (9 << 8) | 255);
  assert.equal(versionCodeFromRelease("6.12.9+deb12-cloud-arm64"), kernelVersionCode(6, 12, 9));
  assert.equal(versionCodeFromRelease("5.4"), kernelVersionCode(5, 4, 0));
  assert.equal(versionCodeFromRelease("vmlinux"), undefined);
  assert.equal(
    versionCodeFromUnameVersion("#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)"),
    kernelVersionCode(6, 1, 119),
  );
  assert.equal(versionCodeFromUnameVersion("#42-Ubuntu SMP"), undefined);
  assert.equal(parseVersionH("#define LINUX_VERSION_CODE 393664\n"), 393664);
  assert.equal(
    parseVersionH(
      "#define LINUX_VERSION_CODE KERNEL_VERSION(6,1,2)\n#define LINUX_VERSION_MAJOR 6\n" +
        "#define LINUX_VERSION_PATCHLEVEL 1\n#define LINUX_VERSION_SUBLEVEL 2\n",
    ),
    kernelVersionCode(6, 1, 2),
  );
  assert.equal(upstreamVersion("6.12.9-1~bpo12+1"), "6.12.9");
  assert.equal(upstreamVersion("6.1.119-1"), "6.1.119");
  assert.equal(abiFromPackage("linux-image-6.1.0-28-cloud-arm64", "cloud-arm64"), "6.1.0-28");
  assert.equal(
    abiFromPackage("linux-image-6.12.9+deb12-cloud-amd64-unsigned", "cloud-amd64"),
    "6.12.9+deb12",
  );
  assert.equal(abiFromPackage("linux-headers-6.1.0-28-common", "cloud-amd64"), undefined);
});

Deno.test("kernels: the image banner gives uname -r and uname -v", () => {
  const enc = new TextEncoder();
  const image = enc.encode(
    "junk\0Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 " +
      "(Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) # SMP %s\n\0" +
      "Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 " +
      "(Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC " +
      "Debian 6.1.119-1 (2024-11-22)\n\0",
  );
  assert.deepEqual(findBanner(image), {
    release: "6.1.0-28-cloud-amd64",
    version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)",
  });
  assert.equal(findBanner(image, "6.12.9+deb12-cloud-amd64"), undefined);
});

Deno.test("kernels: legacy LZ4 frames decode (overlapping matches, trailing size word)", async () => {
  // "ab", then a 10-byte match at offset 2 (overlapping), then a literal "c";
  // then the kernel's trailing le32 uncompressed size, which must be ignored.
  const block = [0x26, 0x61, 0x62, 0x02, 0x00, 0x10, 0x63];
  const frame = new Uint8Array([
    0x02,
    0x21,
    0x4c,
    0x18,
    block.length,
    0,
    0,
    0,
    ...block,
    13,
    0,
    0,
    0,
  ]);
  assert.equal(new TextDecoder().decode(decodeLz4Legacy(frame)), "ababababababc");
  assert.throws(() => decodeLz4Legacy(new Uint8Array([1, 2, 3, 4])), /not a legacy LZ4 frame/);

  // Against the reference implementation, when it is installed.
  const lz4 = await new Deno.Command("lz4", { args: ["--version"], stdout: "null", stderr: "null" })
    .output().then((o) => o.success).catch(() => false);
  if (!lz4) return;
  const text = new TextEncoder().encode(
    Array.from({ length: 200_000 }, (_, i) => `line ${i % 977} ${"x".repeat(i % 13)}\n`).join(""),
  );
  const child = new Deno.Command("lz4", {
    args: ["-l", "-c", "-9"],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(text);
  await writer.close();
  const out = await child.output();
  assert.deepEqual(decodeLz4Legacy(out.stdout), text);
});

Deno.test("kernels: tree digests ignore location and mtimes, and see every byte", async () => {
  const a = await Deno.makeTempDir({ prefix: "bpfpack-digest-a-" });
  const b = await Deno.makeTempDir({ prefix: "bpfpack-digest-b-" });
  try {
    for (const dir of [a, b]) {
      await Deno.mkdir(`${dir}/include/linux`, { recursive: true });
      await Deno.mkdir(`${dir}/arch/x86/include/generated/asm`, { recursive: true });
      await Deno.mkdir(`${dir}/scripts`, { recursive: true });
    }
    // Same content, written in a different order, different mtimes.
    await Deno.writeTextFile(`${a}/include/linux/sched.h`, "struct task_struct;\n");
    await Deno.writeTextFile(`${a}/arch/x86/include/generated/asm/x.h`, "#define X 1\n");
    await Deno.writeTextFile(`${a}/.config`, "CONFIG_X86_64=y\n");
    await Deno.writeTextFile(`${b}/.config`, "CONFIG_X86_64=y\n");
    await Deno.writeTextFile(`${b}/arch/x86/include/generated/asm/x.h`, "#define X 1\n");
    await Deno.writeTextFile(`${b}/include/linux/sched.h`, "struct task_struct;\n");
    await Deno.utime(`${b}/.config`, 1000, 1000);
    await Deno.writeTextFile(`${b}/scripts/not-covered.sh`, "echo outside the roots\n");
    const roots = treeDigestRoots("x86_64");
    const da = await digestTree(a, { roots });
    const db = await digestTree(b, { roots });
    assert.equal(da.digest, db.digest);
    assert.equal(da.files, 3);
    assert.match(da.digest, /^sha256:[0-9a-f]{64}$/);
    assert.notEqual((await digestTree(b)).digest, db.digest, "whole-tree digest covers scripts/");
    await Deno.writeTextFile(`${b}/.config`, "CONFIG_X86_64=m\n");
    assert.notEqual((await digestTree(b, { roots })).digest, da.digest);
    // A renamed file changes the digest even with the same bytes.
    await Deno.writeTextFile(`${b}/.config`, "CONFIG_X86_64=y\n");
    await Deno.rename(`${b}/include/linux/sched.h`, `${b}/include/linux/sched2.h`);
    assert.notEqual((await digestTree(b, { roots })).digest, da.digest);
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});

Deno.test("kernels: bad specs and options are refused with what to do next", async () => {
  await expectError(
    // @ts-expect-error: deliberately invalid series
    () => resolveKernel({ kind: "debian", series: "5.10", arch: "x86_64" }, { want: ["btf"] }),
    "invalid-input",
    /series.*Use \{ kind: "debian"/,
  );
  await expectError(
    // @ts-expect-error: deliberately invalid arch
    () => resolveKernel({ kind: "tree", path: "/x", arch: "armv7l" }, { want: ["headers"] }),
    "invalid-input",
  );
  await expectError(
    () => resolveKernel({ kind: "running" }, { want: [] }),
    "invalid-input",
    /want must list/,
  );
  await expectError(
    () =>
      resolveKernel({ kind: "tree", path: "/nonexistent/linux", arch: "x86_64" }, {
        want: ["headers"],
        cacheDir: CACHE,
      }),
    "invalid-input",
    /configured kernel build tree/,
  );
  await expectError(
    () =>
      resolveKernel({ kind: "btf", path: "/etc/hostname", arch: "x86_64", release: "6.1.0" }, {
        want: ["btf"],
        cacheDir: CACHE,
      }),
    "btf-not-found",
    /CONFIG_DEBUG_INFO_BTF/,
  );
});

// ---------------------------------------------------------------- kernel images

/** A minimal valid BTF blob: header + empty type section + the "" string. */
function tinyBtf(): Uint8Array {
  const b = new Uint8Array(25);
  const v = new DataView(b.buffer);
  b.set([0x9f, 0xeb, 0x01, 0x00]);
  v.setUint32(4, 24, true); // hdr_len
  v.setUint32(8, 0, true); // type_off
  v.setUint32(12, 0, true); // type_len
  v.setUint32(16, 0, true); // str_off
  v.setUint32(20, 1, true); // str_len
  return b;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function le32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

async function compress(format: Compression, data: Uint8Array): Promise<Uint8Array> {
  const tool: Record<string, [string, string[]]> = {
    gzip: ["gzip", ["-c", "-1"]],
    xz: ["xz", ["-c", "-1", "--check=crc32"]],
    zstd: ["zstd", ["-c", "-1", "-q"]],
  };
  const [cmd, args] = tool[format];
  const child = new Deno.Command(cmd, { args, stdin: "piped", stdout: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  const [out] = await Promise.all([child.output(), writer.write(data).then(() => writer.close())]);
  assert.ok(out.success, `${cmd} failed`);
  return out.stdout;
}

/** A kernel "vmlinux": junk, a banner, junk, BTF, junk. */
function fakeKernel(btf: Uint8Array, release = "6.9.0-test"): Uint8Array {
  const enc = new TextEncoder();
  const junk = (n: number, seed: number) =>
    Uint8Array.from({ length: n }, (_, i) => (i * seed) & 0xff);
  return concat(
    junk(4096, 7),
    enc.encode(`Linux version ${release} (me@host) (clang 19) #7 SMP PREEMPT 2024\n\0`),
    junk(3000, 13),
    btf,
    junk(5000, 3),
  );
}

/** An x86 bzImage: setup header → payload (compressed kernel + le32 size), then trailing junk. */
function fakeBzImage(payload: Uint8Array, rawSize: number): Uint8Array {
  const setupSects = 3;
  const payloadOffset = 0x80;
  const start = (setupSects + 1) * 512 + payloadOffset;
  const body = concat(payload, le32(rawSize));
  const image = new Uint8Array(start + body.length + 777);
  const v = new DataView(image.buffer);
  image.set([0x4d, 0x5a]); // "MZ"
  image[0x1f1] = setupSects;
  image.set(new TextEncoder().encode("HdrS"), 0x202);
  v.setUint32(0x248, payloadOffset, true);
  v.setUint32(0x24c, body.length, true);
  image.set(body, start);
  return image;
}

/** An arm64 Image: a 64-byte header with "ARM\x64" at 0x38, then the kernel. */
function fakeArm64Image(kernel: Uint8Array): Uint8Array {
  const header = new Uint8Array(64);
  header.set([0x41, 0x52, 0x4d, 0x64], 0x38);
  return concat(header, kernel);
}

/** An arm64 EFI zboot image: "MZ", "zimg", payload offset/size, type string, payload. */
function fakeZboot(payload: Uint8Array, type: string): Uint8Array {
  const image = new Uint8Array(0x200 + payload.length + 4);
  const v = new DataView(image.buffer);
  image.set([0x4d, 0x5a]);
  image.set(new TextEncoder().encode("zimg"), 4);
  v.setUint32(8, 0x200, true);
  v.setUint32(12, payload.length, true);
  image.set(new TextEncoder().encode(type), 0x18);
  image.set(payload, 0x200);
  return image;
}

Deno.test("kernels: kernel images — bzImage (gzip/xz/zstd), arm64 Image (plain/gzip), zboot", async () => {
  const btf = tinyBtf();
  assert.deepEqual(parseBtfHeader(btf), {
    hdrLen: 24,
    typeOff: 0,
    typeLen: 0,
    strOff: 0,
    strLen: 1,
    size: 25,
  });
  const kernel = fakeKernel(btf);
  const cases: [string, Uint8Array, string, Compression][] = [];
  for (const c of ["gzip", "xz", "zstd"] as const) {
    cases.push([
      `bzImage ${c}`,
      fakeBzImage(await compress(c, kernel), kernel.length),
      "bzImage",
      c,
    ]);
  }
  const arm64 = fakeArm64Image(kernel);
  cases.push(["arm64 Image", arm64, "arm64-image", "none"]);
  cases.push(["arm64 Image.gz", await compress("gzip", arm64), "arm64-image", "gzip"]);
  cases.push([
    "zboot zstd22",
    fakeZboot(await compress("zstd", arm64), "zstd22"),
    "arm64-image",
    "zstd",
  ]);
  for (const [name, image, format, compression] of cases) {
    const out = await unpackKernelImage(image);
    if (name.startsWith("zboot")) {
      assert.equal(out.format, "efi-zboot", name);
    } else {
      assert.equal(out.format, format, name);
    }
    assert.equal(out.compression, compression, name);
    assert.deepEqual(findBtf(out.data), btf, name);
    assert.deepEqual(findBanner(out.data), {
      release: "6.9.0-test",
      version: "#7 SMP PREEMPT 2024",
    });
  }
});

Deno.test("kernels: a BTF file that is a bzImage gives BTF, release and uname -v", async () => {
  if (Deno.build.arch !== "x86_64") return; // the fake image wraps this host's (x86) BTF
  const hostBtf = await Deno.readFile("/sys/kernel/btf/vmlinux").catch(() => undefined);
  if (!hostBtf) return;
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-bzimage-" });
  try {
    const kernel = fakeKernel(hostBtf, "6.9.0-7-test-amd64");
    await Deno.writeFile(
      `${dir}/vmlinuz`,
      fakeBzImage(await compress("xz", kernel), kernel.length),
    );
    const k = await resolveKernel({ kind: "btf", path: `${dir}/vmlinuz`, arch: "x86_64" }, {
      want: ["btf"],
      cacheDir: CACHE,
    });
    assert.equal(k.release, "6.9.0-7-test-amd64");
    assert.equal(k.version, "#7 SMP PREEMPT 2024");
    assert.equal(k.versionCode, kernelVersionCode(6, 9, 0));
    assert.equal(k.btf?.digest, await digestFile("/sys/kernel/btf/vmlinux"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------- running kernel

const HOST_BTF = "/sys/kernel/btf/vmlinux";
const hostHasBtf = await Deno.stat(HOST_BTF).then(() => true).catch(() => false);

Deno.test("kernels: running kernel — uname facts and BTF → vmlinux.h", async () => {
  if (!hostHasBtf) {
    await expectError(
      () => resolveKernel({ kind: "running" }, { want: ["btf"], cacheDir: CACHE }),
      "btf-not-found",
      /headers mode/,
    );
    return;
  }
  const k = await resolveKernel({ kind: "running" }, { want: ["btf"], cacheDir: CACHE });
  assert.equal(k.source, "running-kernel");
  assert.equal(k.arch, Deno.build.arch);
  assert.equal(k.release, Deno.osRelease());
  assert.equal(k.version, (await Deno.readTextFile("/proc/sys/kernel/version")).trim());
  const expected = versionCodeFromUnameVersion(k.version ?? "") ??
    versionCodeFromRelease(k.release);
  assert.equal(k.versionCode, expected);
  assert.ok(k.btf);
  assert.equal(k.btf.digest, await digestFile(HOST_BTF));
  assert.equal(await digestFile(k.btf.path), k.btf.digest);
  const header = await Deno.readTextFile(k.btf.vmlinuxH);
  assert.match(taskStruct(header), /\*real_parent;/);
  assert.equal(archOfVmlinuxH(header), k.arch);
  const again = await resolveKernel({ kind: "running" }, { want: ["btf"], cacheDir: CACHE });
  assert.deepEqual(again, k);
});

Deno.test("kernels: a BTF file — explicit release, arch checked against the BTF", async () => {
  if (!hostHasBtf) return;
  const arch = Deno.build.arch as Arch;
  const k = await resolveKernel(
    { kind: "btf", path: HOST_BTF, arch, release: "9.9.9-test" },
    { want: ["btf"], cacheDir: CACHE },
  );
  assert.equal(k.source, "btf-file");
  assert.equal(k.release, "9.9.9-test");
  assert.equal(k.versionCode, kernelVersionCode(9, 9, 9));
  assert.equal(k.btf?.digest, await digestFile(HOST_BTF));
  const other: Arch = arch === "x86_64" ? "aarch64" : "x86_64";
  await expectError(
    () =>
      resolveKernel({ kind: "btf", path: HOST_BTF, arch: other }, {
        want: ["btf"],
        cacheDir: CACHE,
      }),
    "invalid-input",
    new RegExp(`describes an ${arch} kernel, not ${other}`),
  );
  await expectError(
    () =>
      resolveKernel({ kind: "btf", path: HOST_BTF, arch }, { want: ["headers"], cacheDir: CACHE }),
    "invalid-input",
    /no header tree/,
  );
  assert.ok(findBtf(await Deno.readFile(HOST_BTF)));
});

// ---------------------------------------------------------------- Debian matrix

let archive: { reachable: boolean; detail: string };
try {
  archive = await probeDebianArchive({ cacheDir: CACHE });
} catch (e) {
  // Not a network problem (e.g. no apt): run the tests so they fail with the real error.
  archive = { reachable: true, detail: String(e) };
}
if (!archive.reachable) {
  console.warn(`kernels_test: skipping the Debian kernel tests: ${archive.detail}`);
}

const MATRIX: { series: "6.1" | "6.12"; arch: Arch }[] = [
  { series: "6.1", arch: "aarch64" },
  { series: "6.1", arch: "x86_64" },
  { series: "6.12", arch: "aarch64" },
  { series: "6.12", arch: "x86_64" },
];

const resolved = new Map<string, KernelInputs>();

async function checkTree(k: KernelInputs, arch: Arch): Promise<void> {
  const dir = k.headers!.dir;
  const a = archInfo(arch).kernelDir;
  assert.ok((await Deno.stat(`${dir}/include/linux/sched.h`)).isFile);
  assert.ok((await Deno.stat(`${dir}/include/linux/kconfig.h`)).isFile);
  assert.ok((await Deno.stat(`${dir}/include/generated/autoconf.h`)).isFile);
  assert.ok((await Deno.stat(`${dir}/arch/${a}/include/asm`)).isDirectory);
  assert.ok((await Deno.stat(`${dir}/arch/${a}/include/generated/asm`)).isDirectory);
  assert.ok((await Deno.stat(`${dir}/arch/${a}/include/uapi/asm`)).isDirectory);
  const config = await Deno.readTextFile(`${dir}/.config`);
  assert.match(config, new RegExp(`^${archInfo(arch).configSymbol}=y$`, "m"));
  assert.match(config, /^CONFIG_DEBUG_INFO_BTF=y$/m);
  const versionH = await Deno.readTextFile(`${dir}/include/generated/uapi/linux/version.h`);
  assert.equal(parseVersionH(versionH), k.versionCode);
  // Self-contained: no symlinks anywhere in the tree.
  const walk = async (d: string): Promise<number> => {
    let n = 0;
    for await (const e of Deno.readDir(d)) {
      assert.ok(!e.isSymlink, `${d}/${e.name} is a symlink`);
      n += e.isDirectory ? await walk(`${d}/${e.name}`) : 1;
    }
    return n;
  };
  const files = await walk(dir);
  assert.ok(files > 5000, `only ${files} files in ${dir}`);
  // The stored digest is what the tree digests to now.
  const now = await digestTree(dir, { roots: treeDigestRoots(arch) });
  assert.equal(now.digest, k.headers!.digest);
}

async function checkBtf(k: KernelInputs, arch: Arch): Promise<void> {
  assert.equal(await digestFile(k.btf!.path), k.btf!.digest);
  const header = await Deno.readTextFile(k.btf!.vmlinuxH);
  const task = taskStruct(header);
  assert.ok(task, "vmlinux.h has no struct task_struct");
  assert.match(task, /struct task_struct \*real_parent;/);
  assert.equal(archOfVmlinuxH(header), arch);
}

const clang = await new Deno.Command("clang-19", { args: ["--version"], stdout: "null" }).output()
  .then((o) => o.success).catch(() => false);

/** Offset of task_struct.real_parent compiled BCC-style against a header tree (clang-19). */
async function headersRealParentOffset(dir: string, arch: Arch): Promise<number> {
  const a = archInfo(arch).kernelDir;
  const src = await Deno.makeTempFile({ suffix: ".c" });
  try {
    await Deno.writeTextFile(
      src,
      "#include <linux/sched.h>\n" +
        "int off(void) { return __builtin_offsetof(struct task_struct, real_parent); }\n",
    );
    const inc = [
      `arch/${a}/include`,
      `arch/${a}/include/generated`,
      "include",
      `arch/${a}/include/uapi`,
      `arch/${a}/include/generated/uapi`,
      "include/uapi",
      "include/generated/uapi",
    ].map((d) => `-I${dir}/${d}`);
    const out = await new Deno.Command("clang-19", {
      args: [
        `--target=${arch}-linux-gnu`,
        "-nostdinc",
        ...inc,
        "-include",
        `${dir}/include/linux/kconfig.h`,
        "-D__KERNEL__",
        "-D__BPF_TRACING__",
        `-D__TARGET_ARCH_${a}`,
        "-Wno-unused-value",
        "-Wno-address-of-packed-member",
        "-Wno-gnu-variable-sized-type-not-at-end",
        "-Wno-unknown-warning-option",
        "-fno-stack-protector",
        "-O2",
        "-S",
        "-emit-llvm",
        "-o",
        "-",
        src,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const ir = new TextDecoder().decode(out.stdout);
    assert.ok(out.success, new TextDecoder().decode(out.stderr).slice(0, 2000));
    return Number(/ret i32 (\d+)/.exec(ir)?.[1]);
  } finally {
    await Deno.remove(src);
  }
}

/** Offset of task_struct.real_parent according to a BTF blob (bpftool raw dump). */
async function btfRealParentOffset(blob: string): Promise<number> {
  const out = await new Deno.Command("bpftool", {
    args: ["btf", "dump", "file", blob, "format", "raw"],
    stdout: "piped",
  }).output();
  const raw = new TextDecoder().decode(out.stdout);
  const at = raw.indexOf("STRUCT 'task_struct' ");
  const bits = /'real_parent' type_id=\d+ bits_offset=(\d+)/.exec(raw.slice(at, at + 20000))?.[1];
  return Number(bits) / 8;
}

for (const { series, arch } of MATRIX) {
  Deno.test({
    name: `kernels: debian ${series} ${arch} — header tree + BTF, cached, digests stable`,
    ignore: !archive.reachable,
    fn: async () => {
      const spec = { kind: "debian" as const, series, arch };
      const progress: string[] = [];
      const opts = {
        want: ["headers", "btf"] as ("headers" | "btf")[],
        cacheDir: CACHE,
        onProgress: (m: string) => progress.push(m),
      };
      const [first, cold] = await timed(() => resolveKernel(spec, opts));
      const [second, warm] = await timed(() => resolveKernel(spec, opts));
      console.log(
        `  debian ${series} ${arch}: ABI ${first.abi}, first resolve ${cold.toFixed(1)} s, ` +
          `second ${warm.toFixed(2)} s${
            progress.some((p) => p.includes("downloaded")) ? "" : " (cache was warm)"
          }`,
      );
      const { debArch, flavour } = archInfo(arch);
      assert.equal(first.source, "debian");
      assert.equal(first.arch, arch);
      assert.equal(first.flavour, flavour);
      assert.ok(first.abi?.startsWith(`${series}.`), `ABI ${first.abi} is not ${series}`);
      assert.equal(first.release, `${first.abi}-cloud-${debArch}`);
      assert.match(first.version ?? "", /^#1 SMP .*Debian /);
      // LINUX_VERSION_CODE matches the ABI's series and the packages' upstream version.
      const [major, minor] = series.split(".").map(Number);
      assert.equal(first.versionCode >> 16, major);
      assert.equal((first.versionCode >> 8) & 0xff, minor);
      const pkg = first.packages?.find((p) => p.name === `linux-headers-${first.release}`);
      assert.ok(pkg, "the flavour headers package is listed");
      assert.equal(first.versionCode, versionCodeFromRelease(upstreamVersion(pkg.version)));
      assert.ok(
        first.packages?.some((p) => p.name === `linux-image-${first.release}`),
        "the image package is listed",
      );
      // Stable across resolves; the second one came from the cache.
      assert.deepEqual(second, first);
      assert.ok(warm < 2, `warm resolve took ${warm} s`);
      await checkTree(first, arch);
      await checkBtf(first, arch);
      // Headers and BTF describe the same kernel: same struct layout.
      const btfOffset = await btfRealParentOffset(first.btf!.path);
      assert.ok(btfOffset > 0);
      if (clang) assert.equal(await headersRealParentOffset(first.headers!.dir, arch), btfOffset);
      console.log(`  task_struct.real_parent at 0x${btfOffset.toString(16)}`);
      resolved.set(`${series}/${arch}`, first);
    },
  });
}

Deno.test({
  name: "kernels: debian — offline and archive-unreachable resolves use the cache",
  ignore: !archive.reachable,
  fn: async () => {
    const k = resolved.get("6.1/x86_64");
    if (!k) return; // the matrix test failed already
    const spec = { kind: "debian" as const, series: "6.1" as const, arch: "x86_64" as const };
    const offline = await resolveKernel(spec, {
      want: ["headers", "btf"],
      cacheDir: CACHE,
      offline: true,
    });
    assert.deepEqual(offline, k);
    // A dead proxy: the update fails, older lists and the complete entry are used.
    const progress: string[] = [];
    const dead = await resolveKernel(spec, {
      want: ["btf"],
      cacheDir: CACHE,
      refresh: true,
      aptConfig: { "Acquire::http::Proxy": "http://127.0.0.1:9" },
      onProgress: (m) => progress.push(m),
    });
    assert.equal(dead.btf?.digest, k.btf?.digest);
    assert.ok(progress.some((p) => /cannot reach the Debian archive/.test(p)), progress.join("\n"));
    // No lists and no cache at all: a clear network error.
    const empty = await Deno.makeTempDir({ prefix: "bpfpack-kernels-empty-" });
    try {
      await expectError(
        () =>
          resolveKernel(spec, {
            want: ["btf"],
            cacheDir: empty,
            aptConfig: { "Acquire::http::Proxy": "http://127.0.0.1:9" },
          }),
        "network",
        /cannot reach the Debian archive.*proxy/s,
      );
      await expectError(
        () => resolveKernel(spec, { want: ["btf"], cacheDir: empty, offline: true }),
        "network",
        /offline, and no package lists/,
      );
    } finally {
      await Deno.remove(empty, { recursive: true });
    }
  },
});

Deno.test({
  name: "kernels: a local tree — the Debian merged tree resolves with the same facts",
  ignore: !archive.reachable,
  fn: async () => {
    const k = resolved.get("6.12/aarch64");
    if (!k) return;
    const tree = await resolveKernel(
      { kind: "tree", path: k.headers!.dir, arch: "aarch64" },
      { want: ["headers"], cacheDir: CACHE },
    );
    assert.equal(tree.source, "local-tree");
    assert.equal(tree.release, k.release);
    assert.equal(tree.version, k.version);
    assert.equal(tree.versionCode, k.versionCode);
    assert.deepEqual(tree.headers, k.headers);
    await expectError(
      () =>
        resolveKernel({ kind: "tree", path: k.headers!.dir, arch: "x86_64" }, {
          want: ["headers"],
          cacheDir: CACHE,
        }),
      "invalid-input",
      /configured for aarch64/,
    );
    // A split tree (sources + an O= style build dir whose Makefile includes them, all
    // made of symlinks into the Debian tree) merges into the same bytes: same digest.
    const split = await Deno.makeTempDir({ prefix: "bpfpack-split-tree-" });
    try {
      const merged = k.headers!.dir;
      const linkAllBut = async (from: string, to: string, except: string) => {
        await Deno.mkdir(to, { recursive: true });
        for await (const e of Deno.readDir(from)) {
          if (e.name !== except) await Deno.symlink(`${from}/${e.name}`, `${to}/${e.name}`);
        }
      };
      await linkAllBut(`${merged}/include`, `${split}/src/include`, "generated");
      await linkAllBut(
        `${merged}/arch/arm64/include`,
        `${split}/src/arch/arm64/include`,
        "generated",
      );
      await Deno.writeTextFile(`${split}/src/Makefile`, "# sources\n");
      await Deno.mkdir(`${split}/build/include`, { recursive: true });
      await Deno.mkdir(`${split}/build/arch/arm64/include`, { recursive: true });
      await Deno.symlink(`${merged}/include/generated`, `${split}/build/include/generated`);
      await Deno.symlink(
        `${merged}/arch/arm64/include/generated`,
        `${split}/build/arch/arm64/include/generated`,
      );
      await Deno.copyFile(`${merged}/.config`, `${split}/build/.config`);
      await Deno.symlink(`${merged}/Module.symvers`, `${split}/build/Module.symvers`);
      await Deno.writeTextFile(`${split}/build/Makefile`, `include ${split}/src/Makefile\n`);
      const fromSplit = await resolveKernel(
        { kind: "tree", path: `${split}/build`, arch: "aarch64" },
        { want: ["headers"], cacheDir: CACHE },
      );
      assert.equal(fromSplit.headers?.digest, k.headers?.digest);
      assert.notEqual(fromSplit.headers?.dir, k.headers?.dir);
      assert.equal(fromSplit.release, k.release);
      assert.ok((await Deno.lstat(`${fromSplit.headers!.dir}/include/linux`)).isDirectory);
    } finally {
      await Deno.remove(split, { recursive: true });
    }
    // The image's BTF as a { kind: "btf" } file gives the Debian BTF and release back.
    const btf = await resolveKernel(
      { kind: "btf", path: k.btf!.path, arch: "aarch64", release: k.release },
      { want: ["btf"], cacheDir: CACHE },
    );
    assert.equal(btf.btf?.digest, k.btf?.digest);
  },
});
