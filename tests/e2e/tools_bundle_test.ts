// End to end on this kernel: the compiler builds opensnoop and execsnoop bundles (core mode),
// the runtime loads them over the protocol, and their events describe what the test did.
import assert from "../support/assert.ts";
import { errnoOf, type RawClient } from "../../tools/client/raw.ts";
import { must, startBpfd } from "../support/bpfd.ts";
import { runningBundles } from "../support/bundles.ts";
import { u32b64 } from "../../tools/client/asm.ts";
import { onlineCpus } from "../../runtime/kernel/target.ts";

interface Loaded {
  maps: Map<string, number>;
  progs: number[];
  readers: number[];
}

/** BUNDLE_LOAD, then one perf reader per online CPU in `events`, then attach every program. */
async function loadTool(c: RawClient, path: string, opts = ""): Promise<Loaded> {
  const r = await c.send(`BUNDLE_LOAD ${path} ${opts}`.trim());
  assert.match(r[0], /^bundle_load: ret=\d+$/, r.join("\n"));
  const maps = new Map<string, number>();
  const progs: number[] = [];
  for (const l of r) {
    const f = l.split(" ");
    if (f[0] === "map") maps.set(f[2], Number(f[1]));
    if (f[0] === "prog") progs.push(Number(f[1]));
  }
  const readers: number[] = [];
  for (const cpu of onlineCpus().cpus) {
    const rd = await must(c, `BPF_OPEN_PERF_BUFFER -1 ${cpu} 64`);
    await must(c, `BPF_UPDATE_ELEM ${maps.get("events")} ${u32b64(cpu)} 4 ${u32b64(rd)} 4 0`);
    readers.push(rd);
  }
  for (const p of progs) {
    const a = await c.send(`BPF_ATTACH_PROG ${p}`);
    // openat2 may be missing on old kernels; everything else must attach.
    if (errnoOf(a) !== null) assert.match(a.join(" "), /openat2/, a.join("\n"));
  }
  return { maps, progs, readers };
}

/** Polls until `match` finds a sample or ~5 s pass; returns the raw samples seen. */
async function collect(c: RawClient, l: Loaded, match: (b: Uint8Array) => boolean) {
  const seen: Uint8Array[] = [];
  for (let i = 0; i < 20 && !seen.some(match); i++) {
    const lines = await c.send(`PERF_READER_POLL 250 ${l.readers.length} ${l.readers.join(" ")}`);
    for (const line of lines) {
      const [, , b64] = line.split(" ");
      if (b64 && line.split(" ")[1] !== "lost") seen.push(Uint8Array.fromBase64(b64));
    }
  }
  return seen;
}

const cstr = (b: Uint8Array) => {
  const z = b.indexOf(0);
  return new TextDecoder().decode(z < 0 ? b : b.subarray(0, z));
};

Deno.test("opensnoop bundle: the open the test makes, with its pid, path and fd", async () => {
  const out = await runningBundles();
  const c = startBpfd();
  try {
    await c.send("HELLO e2e");
    const l = await loadTool(c, `${out}/opensnoop.oci.tar`);
    const file = `/tmp/bpfpack-e2e-${crypto.randomUUID()}`;
    await Deno.writeTextFile(file, "x");
    const child = new Deno.Command("cat", { args: [file], stdout: "null" }).spawn();
    await child.status;
    const mine = (b: Uint8Array) => {
      const dv = new DataView(b.buffer, b.byteOffset);
      return dv.getUint32(8, true) === child.pid && cstr(b.subarray(48, 48 + 256)) === file;
    };
    const ev = (await collect(c, l, mine)).find(mine);
    assert.ok(ev, "an opensnoop event for the file the test opened");
    const dv = new DataView(ev.buffer, ev.byteOffset);
    assert.ok(dv.getInt32(20, true) >= 0, "opened successfully: ret is an fd");
    assert.equal(cstr(ev.subarray(32, 48)), "cat");
    await Deno.remove(file);
  } finally {
    assert.equal(await c.close(), 0);
  }
});

Deno.test("opensnoop bundle: rodata filter targ_failed=true keeps only failed opens", async () => {
  const out = await runningBundles();
  const c = startBpfd();
  try {
    const l = await loadTool(c, `${out}/opensnoop.oci.tar`, "rodata.targ_failed=true");
    const missing = `/tmp/bpfpack-e2e-missing-${crypto.randomUUID()}`;
    const child = new Deno.Command("cat", { args: [missing], stdout: "null", stderr: "null" })
      .spawn();
    await child.status;
    const seen = await collect(c, l, (b) => cstr(b.subarray(48, 304)) === missing);
    assert.ok(seen.some((b) => cstr(b.subarray(48, 304)) === missing), "the failed open is seen");
    for (const b of seen) {
      assert.ok(new DataView(b.buffer, b.byteOffset).getInt32(20, true) < 0, "only failures");
    }
  } finally {
    await c.close();
  }
});

Deno.test("execsnoop bundle: the command the test ran, with its ppid read on the target", async () => {
  const out = await runningBundles();
  const c = startBpfd();
  try {
    const l = await loadTool(c, `${out}/execsnoop.oci.tar`);
    const token = `bpfpack-e2e-${crypto.randomUUID().slice(0, 8)}`;
    // sh forks /bin/echo (the `; true` keeps sh from exec'ing in place): echo's parent is sh.
    const sh = new Deno.Command("sh", { args: ["-c", `/bin/echo ${token}; true`], stdout: "null" })
      .spawn();
    await sh.status;
    const has = (b: Uint8Array) =>
      new TextDecoder().decode(b.subarray(56)).split("\0").includes(token);
    const ev = (await collect(c, l, has)).find(has);
    assert.ok(ev, "an execsnoop event for the command the test ran");
    const dv = new DataView(ev.buffer, ev.byteOffset);
    assert.equal(dv.getUint32(12, true), sh.pid, "ppid = the shell the test started (CO-RE read)");
    assert.equal(dv.getInt32(20, true), 0, "exec succeeded");
    const args = new TextDecoder().decode(ev.subarray(56, 56 + dv.getUint32(28, true)))
      .split("\0").filter(Boolean);
    assert.deepEqual(args, ["/bin/echo", token]);
  } finally {
    await c.close();
  }
});
