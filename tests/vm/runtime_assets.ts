/**
 * The runtime the VM lab runs inside its guests: the target architecture's `deno` binary plus
 * `runtime/main.ts` bundled into one JS file, laid out as `scripts/offline.ts` lays it out:
 *
 * ```
 * <dir>/bin/deno     the target's deno (npm @deno/linux-<x64|arm64>-glibc, pinned version)
 * <dir>/lib/bpfd.js  runtime/main.ts bundled with `deno bundle`
 * <dir>/bin/bpfd     sh launcher: exec deno run -A --no-config lib/bpfd.js "$@"
 * ```
 *
 * When `scripts/offline.ts` exists its `buildOfflineRuntime` makes this; until then a stand-in
 * here makes the same layout under `.cache/vm/runtime/<arch>/`.
 *
 * @example
 * ```ts
 * import { guestRuntime } from "./runtime_assets.ts";
 * const rt = await guestRuntime("aarch64", { onProgress: console.error });
 * console.log(rt.deno, rt.module, rt.bytes.total);
 * ```
 * @module
 */

import { exists, withLock, writeFileAtomic } from "../../compiler/kernels/fs_util.ts";
import type { VmArch } from "./kernel_assets.ts";

/** The pinned Deno version (scripts/setup.sh, scripts/deno/package.json). */
export const DENO_VERSION = "2.9.5";

/** What `buildOfflineRuntime` returns (and the stand-in here). */
export interface OfflineRuntime {
  /** The runtime directory. */
  dir: string;
  /** `<dir>/bin/bpfd`. */
  launcher: string;
  /** `<dir>/bin/deno` (the target's binary). */
  deno: string;
  /** `<dir>/lib/bpfd.js`. */
  module: string;
  /** Sizes in bytes. */
  bytes: { deno: number; module: number; total: number };
}

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname).replace(/\/$/, "");
const NPM_PACKAGE: Record<VmArch, string> = {
  x86_64: "@deno/linux-x64-glibc",
  aarch64: "@deno/linux-arm64-glibc",
};

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

async function cmd(argv: string[], opts: { cwd?: string } = {}): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      cwd: opts.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${argv[0]} is not installed: run scripts/setup.sh (deno task setup)`);
    }
    throw e;
  }
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-15).join("\n");
    throw new Error(`${argv.join(" ")} failed (exit ${out.code}):\n${err}`);
  }
  return text;
}

/** The target's deno binary, from npm (cached per version and arch). */
async function targetDeno(
  arch: VmArch,
  cache: string,
  say: (m: string) => void,
): Promise<string> {
  const dir = `${cache}/npm/${arch}-${DENO_VERSION}`;
  const bin = `${dir}/package/deno`;
  if (await exists(bin)) return bin;
  return await withLock(`${cache}/npm/${arch}.lock`, async () => {
    if (await exists(bin)) return bin;
    // The pinned host deno is the x86_64 package itself: reuse it when it is that version.
    const host = `${ROOT}/scripts/deno/node_modules/${NPM_PACKAGE.x86_64}/deno`;
    await Deno.mkdir(`${dir}/package`, { recursive: true });
    if (arch === "x86_64" && await exists(host)) {
      const v = (await cmd([host, "--version"])).split(/\s+/)[1];
      if (v === DENO_VERSION) {
        await Deno.copyFile(host, `${bin}.tmp`);
        await Deno.rename(`${bin}.tmp`, bin);
        return bin;
      }
    }
    const spec = `${NPM_PACKAGE[arch]}@${DENO_VERSION}`;
    say(`npm pack ${spec} (the guest's deno, ~40 MB download)`);
    const t0 = performance.now();
    // npm checks the tarball against the registry's integrity hash.
    const json = await cmd(["npm", "pack", spec, "--pack-destination", dir, "--json"]);
    const file = (JSON.parse(json) as { filename: string }[])[0].filename;
    await cmd(["tar", "-xzf", `${dir}/${file}`, "-C", dir, "package/deno"]);
    await Deno.remove(`${dir}/${file}`);
    say(`got ${spec} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return bin;
  });
}

/** The stand-in for `buildOfflineRuntime` (see the module doc). */
async function standIn(
  arch: VmArch,
  outDir: string,
  say: (m: string) => void,
): Promise<OfflineRuntime> {
  const cache = vmCacheDir();
  const deno = await targetDeno(arch, cache, say);
  await Deno.mkdir(`${outDir}/bin`, { recursive: true });
  await Deno.mkdir(`${outDir}/lib`, { recursive: true });
  const bin = `${outDir}/bin/deno`;
  const st = await Deno.stat(bin).catch(() => null);
  if (!st || st.size !== (await Deno.stat(deno)).size) {
    await Deno.remove(bin).catch(() => {});
    await Deno.link(deno, bin).catch(() => Deno.copyFile(deno, bin));
  }
  // deno bundle is fast (~0.3 s); write only on change so the initrd cache key stays put.
  const tmp = `${outDir}/lib/bpfd.js.new-${Deno.pid}`;
  await cmd([
    Deno.execPath(),
    "bundle",
    "--quiet",
    "--platform",
    "deno",
    `${ROOT}/runtime/main.ts`,
    "-o",
    tmp,
  ], { cwd: ROOT });
  const module = `${outDir}/lib/bpfd.js`;
  const fresh = await Deno.readFile(tmp);
  const old = await Deno.readFile(module).catch(() => null);
  if (!old || old.length !== fresh.length || !old.every((b, i) => b === fresh[i])) {
    await Deno.rename(tmp, module);
  } else {
    await Deno.remove(tmp);
  }
  const launcher = `${outDir}/bin/bpfd`;
  const script = "#!/bin/sh\n# bpfd: the bpfpack runtime (bundled JS) on the target's deno\n" +
    'd=$(dirname "$0")/..\nexec "$d/bin/deno" run -A --no-config "$d/lib/bpfd.js" "$@"\n';
  if ((await Deno.readTextFile(launcher).catch(() => "")) !== script) {
    await writeFileAtomic(launcher, script);
  }
  await Deno.chmod(launcher, 0o755);
  const d = (await Deno.stat(bin)).size;
  const m = (await Deno.stat(module)).size;
  return {
    dir: outDir,
    launcher,
    deno: bin,
    module,
    bytes: { deno: d, module: m, total: d + m + script.length },
  };
}

/**
 * The offline runtime for `arch`: `scripts/offline.ts`'s `buildOfflineRuntime` when that file
 * exists, else the stand-in. Cached under `.cache/vm/runtime/<arch>/`.
 *
 * @example
 * ```ts
 * import { guestRuntime } from "./runtime_assets.ts";
 * const rt = await guestRuntime("x86_64");
 * console.log(rt.launcher); // …/.cache/vm/runtime/x86_64/bin/bpfd
 * ```
 */
export async function guestRuntime(
  arch: VmArch,
  opts: { onProgress?: (msg: string) => void } = {},
): Promise<OfflineRuntime> {
  const say = opts.onProgress ?? (() => {});
  const outDir = `${vmCacheDir()}/runtime/${arch}`;
  const offline = `${ROOT}/scripts/offline.ts`;
  if (await exists(offline)) {
    const mod = await import(new URL(`file://${offline}`).href) as {
      buildOfflineRuntime?: (o: { arch: VmArch; outDir?: string }) => Promise<OfflineRuntime>;
    };
    if (typeof mod.buildOfflineRuntime !== "function") {
      throw new Error(
        "scripts/offline.ts does not export buildOfflineRuntime(opts): the VM lab expects " +
          "buildOfflineRuntime({ arch, outDir }) → { dir, launcher, deno, module, bytes }",
      );
    }
    return await mod.buildOfflineRuntime({ arch, outDir });
  }
  return await withLock(`${vmCacheDir()}/runtime/${arch}.lock`, () => standIn(arch, outDir, say));
}
