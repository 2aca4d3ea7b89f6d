// Bundles through the runtime: load from a path, upload over the channel, attach by section,
// events delivered; bad bundles each get one clear error, load nothing, leave the session usable.
import assert from "../support/assert.ts";
import { errnoOf, type RawClient } from "../../tools/client/raw.ts";
import { startBpfd } from "../support/bpfd.ts";
import { compile } from "../loader/support.ts";
import { bundleFiles, bundleTar, sha256 } from "../../artifacts/oci.ts";
import type { Manifest, ObjectEntry } from "../../artifacts/manifest.ts";
import { readTar, writeTar } from "../../artifacts/tar.ts";
import { uname } from "../../runtime/kernel/target.ts";

const ARCH = uname().machine;

async function makeBundle(
  objects: { bytes: Uint8Array; entry?: Partial<ObjectEntry> }[],
): Promise<Uint8Array> {
  const entries: ObjectEntry[] = [];
  const map = new Map<string, Uint8Array>();
  for (const [i, o] of objects.entries()) {
    const name = `obj${i}.bpf.o`;
    entries.push({
      name,
      arch: ARCH as ObjectEntry["arch"],
      mode: "core",
      kernel: {
        release: uname().release,
        source: "running-kernel",
        inputDigest: await sha256(o.bytes),
      },
      compiler: { name: "clang", version: "19", argv: [["clang-19"]] },
      digest: await sha256(o.bytes),
      size: o.bytes.length,
      license: "GPL",
      programs: [],
      maps: [],
      ...o.entry,
    });
    map.set(name, o.bytes);
  }
  const manifest: Manifest = {
    schemaVersion: 1,
    tool: { name: "testtool", version: "0.0.1", sourceDigest: await sha256(new Uint8Array(1)) },
    objects: entries,
  };
  return bundleTar(await bundleFiles(manifest, map));
}

async function writeTemp(bytes: Uint8Array): Promise<string> {
  const f = await Deno.makeTempFile({ suffix: ".oci.tar" });
  await Deno.writeFile(f, bytes);
  return f;
}

async function fdsHeld(c: RawClient): Promise<number> {
  const r = await c.send("SESSION_FDS");
  return Number(/ret=(\d+)/.exec(r[0])![1]);
}

Deno.test("BUNDLE_LOAD: a core object loads, attaches by section and delivers events", async () => {
  const path = await writeTemp(await makeBundle([{ bytes: await compile("events") }]));
  const c = startBpfd();
  try {
    await c.send("GET_CPUS"); // the runtime is up: time the load alone
    const t0 = performance.now();
    const r = await c.send(`BUNDLE_LOAD ${path}`);
    const ms = performance.now() - t0;
    assert.equal(r[0], "bundle_load: ret=1", r.join("\n"));
    assert.match(r[1], new RegExp(`^object obj0\\.bpf\\.o arch=${ARCH} mode=core `));
    const maps = new Map(
      r.filter((l) => l.startsWith("map ")).map((l) => {
        const [, fd, name] = l.split(" ");
        return [name, Number(fd)];
      }),
    );
    assert.ok(maps.has("opens") && maps.has("ring") && maps.has("perf"), r.join("\n"));
    const prog = r.find((l) => l.startsWith("prog "))!.split(" ");
    assert.equal(prog[2], "on_openat");
    // The ordinary commands work on the bundle's fds.
    assert.equal(
      (await c.send(`BPF_OPEN_RING_BUFFER ${maps.get("ring")}`))[0].endsWith(
        `ret=${maps.get("ring")}`,
      ),
      true,
    );
    const at = await c.send(`BPF_ATTACH_PROG ${prog[1]}`);
    assert.match(at[0], /^bpf_attach_prog: ret=\d+$/);
    assert.equal(at[1], "attached tracepoint:syscalls:sys_enter_openat");
    const child = new Deno.Command("cat", { args: ["/etc/hostname"], stdout: "null" }).spawn();
    await child.status;
    let seen = false;
    for (let i = 0; i < 10 && !seen; i++) {
      const lines = await c.send(`PERF_READER_POLL 300 1 ${maps.get("ring")}`);
      seen = lines.some((l) => {
        const b = Uint8Array.fromBase64(l.split(" ")[2]);
        return new DataView(b.buffer).getUint32(0, true) === child.pid &&
          new TextDecoder().decode(b).includes("/etc/hostname");
      });
    }
    assert.ok(seen, "an event for the file the test opened, with the child's pid");
    console.log(`BUNDLE_LOAD round trip: ${ms.toFixed(1)} ms`);
  } finally {
    await c.close();
    await Deno.remove(path);
  }
});

Deno.test("BUNDLE_BEGIN/CHUNK/END: upload, digest check, not re-sent when the device has it", async () => {
  const tar = await makeBundle([{ bytes: await compile("events") }]);
  const digest = await sha256(tar);
  const cache = await Deno.makeTempDir();
  const c = startBpfd({ args: ["--cache-dir", cache] });
  try {
    // A bad chunk order and a wrong digest are refused.
    assert.deepEqual((await c.send(`BUNDLE_BEGIN ${digest} ${tar.length}`)).slice(1), [
      "send 1048576",
    ]);
    const skip = await c.send(`BUNDLE_CHUNK ${digest} 10 ${tar.subarray(10, 20).toBase64()}`);
    assert.match(skip[1], /expected 0/);
    for (let off = 0; off < tar.length; off += 4096) {
      const part = tar.subarray(off, off + 4096);
      const r = await c.send(`BUNDLE_CHUNK ${digest} ${off} ${part.toBase64()}`);
      assert.equal(r[0], `bundle_chunk: ret=${off + part.length}`);
    }
    const end = await c.send(`BUNDLE_END ${digest}`);
    assert.equal(end[0], "bundle_end: ret=0");
    const path = end[1].replace(/^path /, "");
    assert.ok(path.startsWith(cache));
    assert.deepEqual(await c.send(`BUNDLE_BEGIN ${digest} ${tar.length}`), [
      "bundle_begin: ret=0",
      `have ${path}`,
    ]);
    assert.equal((await c.send(`BUNDLE_LOAD ${path} attach=all`))[0], "bundle_load: ret=1");
    // An upload whose bytes do not match the announced digest is rejected, nothing stored.
    const other = await sha256(new Uint8Array([9]));
    await c.send(`BUNDLE_BEGIN ${other} 4`);
    await c.send(`BUNDLE_CHUNK ${other} 0 AQIDBA==`);
    const bad = await c.send(`BUNDLE_END ${other}`);
    assert.equal(errnoOf(bad), 74);
    assert.match(bad[1], /digest mismatch/);
  } finally {
    await c.close();
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("bad bundles: one clear error each, nothing loaded, session still usable", async () => {
  const good = await compile("events");
  const cases: [string, Uint8Array, number, RegExp][] = [];
  cases.push([
    "truncated ELF",
    await makeBundle([{ bytes: good.subarray(0, 300) }]),
    8,
    /truncated|out of range|beyond/i,
  ]);
  const flipped = good.slice();
  flipped.fill(0xff, 0x28, 0x30); // e_shoff: section headers point past the end
  cases.push(["corrupted ELF", await makeBundle([{ bytes: flipped }]), 8, /obj0\.bpf\.o/]);
  const tar = await makeBundle([{ bytes: good }]);
  // Flip one byte inside the object's blob, keeping its name (= the digest it should have).
  const tampered = readTar(tar);
  const objBlob = `blobs/sha256/${(await sha256(good)).slice(7)}`;
  const flippedBlob = tampered.get(objBlob)!.slice();
  flippedBlob[100] ^= 1;
  tampered.set(objBlob, flippedBlob);
  const digestFlip = writeTar(tampered);
  cases.push(["digest mismatch", digestFlip, 74, /digest mismatch/]);
  const otherArch = ARCH === "x86_64" ? "aarch64" : "x86_64";
  cases.push([
    "wrong arch",
    await makeBundle([{ bytes: good, entry: { arch: otherArch } }]),
    8,
    new RegExp(
      `no object for architecture ${ARCH}; bundle testtool 0\\.0\\.1 contains: ${otherArch} core`,
    ),
  ]);
  cases.push([
    "no object for this kernel",
    await makeBundle([{
      bytes: good,
      entry: {
        mode: "headers",
        kernel: { release: "5.10.0-9-fake", source: "debian", inputDigest: await sha256(good) },
      },
    }]),
    8,
    /no object for kernel .*contains: .* headers 5\.10\.0-9-fake/,
  ]);
  cases.push([
    "unknown section",
    await makeBundle([{ bytes: await compile("unknown_prog") }]),
    8,
    /section/i,
  ]);
  const c = startBpfd();
  const dir = await Deno.makeTempDir();
  try {
    for (const [what, bytes, errno, re] of cases) {
      const p = `${dir}/${what.replaceAll(" ", "_")}.tar`;
      await Deno.writeFile(p, bytes);
      const r = await c.send(`BUNDLE_LOAD ${p}`);
      assert.equal(errnoOf(r), errno, `${what}: ${r.join(" | ")}`);
      assert.match(r[1], re, what);
      assert.equal(await fdsHeld(c), 0, `${what}: nothing loaded`);
    }
    // A manifest that does not validate (written by hand: the writer refuses it).
    const mdir = `${dir}/badmanifest`;
    const files = readTar(tar);
    for (const [k, v] of files) {
      await Deno.mkdir(`${mdir}/${k.slice(0, k.lastIndexOf("/"))}`, { recursive: true }).catch(
        () => {},
      );
      await Deno.writeFile(`${mdir}/${k}`, v);
    }
    // Replace the config blob with an invalid manifest and re-point the image manifest at it.
    const idx = JSON.parse(new TextDecoder().decode(files.get("index.json")!));
    const imPath = `blobs/sha256/${idx.manifests[0].digest.slice(7)}`;
    const im = JSON.parse(new TextDecoder().decode(files.get(imPath)!));
    const badCfg = new TextEncoder().encode(JSON.stringify({ schemaVersion: 99, tool: {} }));
    const cfgDigest = await sha256(badCfg);
    await Deno.writeFile(`${mdir}/blobs/sha256/${cfgDigest.slice(7)}`, badCfg);
    im.config = { ...im.config, digest: cfgDigest, size: badCfg.length };
    const imBytes = new TextEncoder().encode(JSON.stringify(im));
    const imDigest = await sha256(imBytes);
    await Deno.writeFile(`${mdir}/blobs/sha256/${imDigest.slice(7)}`, imBytes);
    idx.manifests[0] = { ...idx.manifests[0], digest: imDigest, size: imBytes.length };
    await Deno.writeTextFile(`${mdir}/index.json`, JSON.stringify(idx));
    const bm = await c.send(`BUNDLE_LOAD ${mdir}`);
    assert.equal(errnoOf(bm), 22, bm.join(" | "));
    assert.match(bm[1], /bad manifest: schemaVersion/);
    const none = await c.send(`BUNDLE_LOAD ${dir}/nothing-here`);
    assert.equal(errnoOf(none), 2);
    const opt = await c.send(`BUNDLE_LOAD ${dir}/x bogus=1`);
    assert.match(opt[1], /unknown option "bogus"/);
    assert.equal((await c.send("GET_CPUS"))[0], "get_cpus: ret=0", "session still usable");
    assert.equal(await fdsHeld(c), 0);
  } finally {
    await c.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("BUNDLE_LOAD max.<map>=N sizes a map at load; bad sizes and names are refused", async () => {
  const globals = await writeTemp(await makeBundle([{ bytes: await compile("globals") }]));
  const events = await writeTemp(await makeBundle([{ bytes: await compile("events") }]));
  const c = startBpfd();
  try {
    const r = await c.send(`BUNDLE_LOAD ${events} max.opens=77`);
    assert.equal(r[0], "bundle_load: ret=1", r.join("\n"));
    const opens = r.find((l) => / opens /.test(l));
    assert.match(opens ?? "", /^map \d+ opens type=\d+ key=\d+ value=\d+ max=77$/, r.join("\n"));
    const fd = Number(opens!.split(" ")[1]);
    assert.match((await c.send("SESSION_FDS")).join("\n"), new RegExp(`\n${fd} map .*max=77`));
    const g = await c.send(`BUNDLE_LOAD ${globals}`);
    const data = g.find((l) => /^map \d+ \S*\.(rodata|data|bss)/.test(l));
    assert.ok(data, `the globals object has a global data map: ${g.join(" | ")}`);
    const held = await fdsHeld(c);
    const cases: [string, RegExp][] = [
      [`${events} max.nosuch=5`, /cannot size map "nosuch": no such map; sizable maps: opens/],
      [`${events} max.opens=0`, /must be an integer from 1 to 4294967295, not 0/],
      [`${events} max.opens=12k`, /max\.opens=12k: want a decimal number of entries/],
      [`${globals} max.${data.split(" ")[2]}=4`, /holds global data \(its size is fixed\)/],
    ];
    for (const [args, re] of cases) {
      const bad = await c.send(`BUNDLE_LOAD ${args}`);
      assert.equal(errnoOf(bad), 22, `${args}: ${bad.join(" | ")}`);
      assert.match(bad[1], re, args);
    }
    assert.equal(await fdsHeld(c), held, "refused loads hold nothing");
  } finally {
    await c.close();
    await Deno.remove(globals);
    await Deno.remove(events);
  }
});
