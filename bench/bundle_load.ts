/**
 * Bundle load time in the runtime for a typical tool (opensnoop, core mode,
 * built for the running kernel): `BUNDLE_LOAD` round trip over the protocol
 * (read + verify digests, select, parse the ELF, load BTF, maps and
 * programs), goal < 50 ms. Baseline measured in the same run: the same
 * object loaded in-process by the loader alone (parse + load, no protocol, no
 * bundle verification), so the ratio shows what the bundle and channel add.
 * The session starts with HELLO, as a tool's does (it loads the bundle code).
 *
 * @example
 * ```sh
 * deno run -A bench/bundle_load.ts --reps 20
 * ```
 * @module
 */

import { parseArgs } from "../artifacts/cli.ts";
import { readBundle } from "../artifacts/oci.ts";
import { closeObject, loadObject } from "../runtime/loader/load.ts";
import { parseObject } from "../artifacts/bpf_object.ts";
import { RawClient } from "../tools/client/raw.ts";
import { buildRunningBundles } from "../tools/client/bundle_build.ts";

const ROOT = new URL("../", import.meta.url).pathname;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Runs the benchmark; returns the figures (ms). */
export async function benchBundleLoad(reps = 15) {
  const out = await Deno.makeTempDir({ prefix: "bpfpack-bench-bundle-" });
  try {
    await buildRunningBundles(["opensnoop"], out);
    const path = `${out}/opensnoop.oci.tar`;

    // Baseline: the loader alone, in this process.
    const bundle = await readBundle(path);
    const obj = bundle.manifest.objects.find((o) => o.mode === "core")!;
    const bytes = bundle.objects.get(obj.name)!;
    const raw: number[] = [];
    for (let i = 0; i < reps + 2; i++) {
      const t0 = performance.now();
      const loaded = loadObject(parseObject(bytes, obj.name));
      const dt = performance.now() - t0;
      closeObject(loaded);
      if (i >= 2) raw.push(dt);
    }

    // The runtime: one fresh process, first load (cold) then repeated loads.
    const c = RawClient.spawn([Deno.execPath(), "run", "-A", `${ROOT}runtime/main.ts`], {
      stderr: "null",
    });
    await c.send("HELLO bench"); // a tool's session starts with the handshake
    const rt: number[] = [];
    let first = 0;
    for (let i = 0; i < reps + 1; i++) {
      const t0 = performance.now();
      const r = await c.send(`BUNDLE_LOAD ${path}`);
      const dt = performance.now() - t0;
      if (!r[0].startsWith("bundle_load: ret=")) throw new Error(r.join("\n"));
      if (i === 0) first = dt;
      else rt.push(dt);
      for (const l of r) {
        const f = l.split(" ");
        if (f[0] === "map" || f[0] === "prog") await c.send(`BPF_CLOSE_FD ${f[1]}`);
      }
      const fds = await c.send("SESSION_FDS");
      for (const l of fds.slice(1)) await c.send(`BPF_CLOSE_FD ${l.split(" ")[0]}`);
    }
    await c.close();
    return {
      objectBytes: bytes.length,
      firstMs: first,
      runtimeMs: median(rt),
      loaderMs: median(raw),
      ratio: median(rt) / median(raw),
    };
  } finally {
    await Deno.remove(out, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { reps: { type: "string" }, json: { type: "boolean" }, help: { type: "boolean" } },
  });
  if (values.help) {
    console.log("bench/bundle_load.ts [--reps N] [--json]: BUNDLE_LOAD time vs the bare loader");
    Deno.exit(0);
  }
  const r = await benchBundleLoad(Number(values.reps ?? 15));
  if (values.json) console.log(JSON.stringify(r));
  else {
    console.log(`opensnoop core object: ${r.objectBytes} bytes`);
    console.log(`BUNDLE_LOAD first (after HELLO): ${r.firstMs.toFixed(1)} ms`);
    console.log(`BUNDLE_LOAD median:              ${r.runtimeMs.toFixed(1)} ms (goal < 50 ms)`);
    console.log(`loader alone, in-process:        ${r.loaderMs.toFixed(1)} ms`);
    console.log(`ratio runtime / loader:          ${r.ratio.toFixed(2)}×`);
  }
}
