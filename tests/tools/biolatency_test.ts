// The biolatency host tool: decoding and BCC-style formatting, then real block I/O on a loop
// device of this kernel (O_DIRECT writes go through the block layer as one request each), then a
// recorded real session replayed to the same output.
import assert from "../support/assert.ts";
import { buildRunningBundles } from "../../tools/client/bundle_build.ts";
import { log2Histogram } from "../../tools/client/tool.ts";
import {
  decodeHistogram,
  flagsName,
  formatHistograms,
  histogramJson,
  parseIntervalCount,
} from "../../tools/biolatency/biolatency.ts";
import { replayFixture } from "./fixtures/record.ts";
import { runToolCli } from "./run_tool.ts";

/** A BCC histogram row: `%10d -> %-10d : %-8d |%-40s|`. */
const ROW = /^ *(\d+) -> (\d+) +: (\d+) +\|([* ]{40})\|$/;
const HEADER = /^ {5}(usecs|msecs) {14} : count {5}distribution$/;

Deno.test("biolatency: log2 rows exactly as BCC prints them", () => {
  assert.equal(
    log2Histogram([0, 0, 1, 3], "usecs"),
    [
      "     usecs               : count     distribution",
      "         0 -> 1          : 0        |                                        |",
      "         2 -> 3          : 0        |                                        |",
      "         4 -> 7          : 1        |*************                           |",
      "         8 -> 15         : 3        |****************************************|",
    ].join("\n"),
  );
});

Deno.test("biolatency: decodes biolatency.h; names flags as BCC; JSON buckets are numbers", () => {
  const key = new Uint8Array(40);
  const kv = new DataView(key.buffer);
  kv.setUint32(0, (7 << 20) | 3, true);
  kv.setUint32(4, 1 | (1 << 8) | (1 << 12), true);
  key.set(new TextEncoder().encode("loop3"), 8);
  const value = new Uint8Array(256);
  new DataView(value.buffer).setBigUint64(6 * 8, 5n, true);
  new DataView(value.buffer).setBigUint64(8 * 8, 2n, true);
  const h = decodeHistogram(key, value);
  assert.deepEqual([h.dev, h.disk, h.slots.length, h.slots[6], h.slots[8]], [
    (7 << 20) | 3,
    "loop3",
    32,
    5,
    2,
  ]);
  assert.equal(flagsName(h.flags), "Idle-Sync-Write");
  assert.equal(flagsName(0), "Read");
  assert.equal(flagsName(2 | (1 << 14)), "PreFlush-Flush");
  assert.equal(flagsName(0x42), "Unknown");
  assert.throws(() => decodeHistogram(key.subarray(0, 8), value), /rebuild/);

  const lines = formatHistograms([h], { unit: "usecs", perDisk: true, perFlag: true });
  assert.deepEqual(lines.slice(0, 3), ["", "disk = loop3", "flags = Idle-Sync-Write"]);
  assert.match(lines[3], HEADER);
  assert.equal(lines.length, 4 + 9, "rows up to the last non-empty bucket");
  for (const l of lines.slice(4)) assert.match(l, ROW);
  assert.match(lines[4 + 6], /^ +64 -> 127 +: 5 +\|\*{40}\|$/);

  const j = histogramJson(h, { unit: "msecs", perDisk: true });
  assert.deepEqual(j.buckets[6], { low: 64, high: 127, count: 5 });
  assert.deepEqual(j.buckets[0], { low: 0, high: 1, count: 0 });
  assert.deepEqual([j.unit, j.disk, j.flags, j.total, j.buckets.length], [
    "msecs",
    "loop3",
    undefined,
    7,
    9,
  ]);

  assert.deepEqual(parseIntervalCount([]), { interval: 0, count: 0 });
  assert.deepEqual(parseIntervalCount(["2", "5"]), { interval: 2, count: 5 });
  for (const bad of [["0"], ["x"], ["1", "-1"], ["1", "2", "3"]]) {
    assert.throws(() => parseIntervalCount(bad), /interval|count|at most two/, bad.join(" "));
  }
});

let bundle: Promise<string> | null = null;
/** biolatency's bundle for the running kernel, built once per test file. */
function biolatencyBundle(): Promise<string> {
  return bundle ??= buildRunningBundles(["biolatency"]).then((d) => `${d}/biolatency.oci.tar`);
}

/** Why no loop device can be made here (then the I/O tests are skipped), or null. */
function noLoopDevices(): string | null {
  if (Deno.uid() !== 0) return "not root: cannot set up a loop device";
  for (const p of ["/dev/loop-control", "/usr/sbin/losetup"]) {
    try {
      Deno.statSync(p);
    } catch {
      return `${p} is missing (no loop driver or util-linux)`;
    }
  }
  return null;
}
const NO_LOOP = noLoopDevices();
if (NO_LOOP) console.warn(`biolatency_test: block I/O tests skipped: ${NO_LOOP}`);

/** Runs `f` with a loop device over a fresh 32 MiB file, released afterwards. */
async function withLoop(f: (l: { dev: string; name: string }) => Promise<void>): Promise<void> {
  const file = await Deno.makeTempFile({ prefix: "bpfpack-biolatency-", suffix: ".img" });
  try {
    await Deno.truncate(file, 32 << 20);
    const r = await new Deno.Command("losetup", { args: ["-f", "--show", file] }).output();
    assert.ok(r.success, `losetup: ${new TextDecoder().decode(r.stderr)}`);
    const dev = new TextDecoder().decode(r.stdout).trim();
    try {
      await f({ dev, name: dev.replace(/^\/dev\//, "") });
    } finally {
      await new Deno.Command("losetup", { args: ["-d", dev] }).output();
    }
  } finally {
    await Deno.remove(file);
  }
}

/** `count` O_DIRECT 4 KiB writes to `dev`: `count` block requests. */
async function directWrites(dev: string, count: number): Promise<void> {
  const r = await new Deno.Command("dd", {
    args: ["if=/dev/zero", `of=${dev}`, "bs=4k", `count=${count}`, "oflag=direct"],
    stderr: "piped",
  }).output();
  assert.ok(r.success, new TextDecoder().decode(r.stderr));
}

/** Runs biolatency until it traces, calls `act`, and returns its output and status. */
async function runBiolatency(args: string[], act: () => Promise<void>) {
  const r = await runToolCli("biolatency", ["--bundle", await biolatencyBundle(), ...args], act);
  assert.match(r.stderr, /tracing block device I\/O on/, r.stderr);
  return { out: r.stdout, code: r.code };
}

const IOS = 64;

Deno.test({
  name: "biolatency tool: --json -D counts the test's O_DIRECT writes under the loop device",
  ignore: NO_LOOP !== null,
  fn: () =>
    withLoop(async (l) => {
      const { out, code } = await runBiolatency(
        ["--json", "-D", "-d", "3"],
        () => directWrites(l.dev, IOS),
      );
      assert.equal(code, 0);
      const objs = out.split("\n").filter(Boolean).map((x) => JSON.parse(x));
      assert.ok(objs.length >= 1, out);
      for (const o of objs) {
        assert.equal(o.interval, 1);
        assert.equal(o.unit, "usecs");
        assert.ok(o.buckets.every((b: Record<string, unknown>) =>
          typeof b.low === "number" && typeof b.high === "number" && typeof b.count === "number"
        ));
        const sum = o.buckets.reduce((a: number, b: { count: number }) =>
          a + b.count, 0);
        assert.equal(o.total, sum);
      }
      const mine = objs.find((o) => o.disk === l.name);
      assert.ok(mine, `a histogram for ${l.name} in:\n${out}`);
      assert.ok(mine.total >= IOS, `${mine.total} I/Os on ${l.name}, want ≥ ${IOS}`);
    }),
});

Deno.test({
  name: "biolatency tool: -Q -F -D -m 1 2 prints two BCC histograms, the writes under the disk",
  ignore: NO_LOOP !== null,
  fn: () =>
    withLoop(async (l) => {
      const { out, code } = await runBiolatency(
        ["-Q", "-F", "-D", "-m", "1", "2"],
        () => directWrites(l.dev, IOS),
      );
      assert.equal(code, 0, "exits by itself after `count` intervals");
      const lines = out.split("\n");
      assert.equal(lines.filter((x) => HEADER.test(x) || x === "(no events)").length >= 2, true);
      // Sections: "disk = X", "flags = Y", header, rows.
      let disk = "";
      let total = 0;
      for (const x of lines) {
        const d = /^disk = (\S+)$/.exec(x);
        if (d) disk = d[1];
        const row = ROW.exec(x);
        if (row && disk === l.name) total += Number(row[3]);
        if (x.startsWith("     ") && !HEADER.test(x) && !ROW.test(x)) assert.fail(`odd row: ${x}`);
      }
      assert.ok(lines.some((x) => /^flags = \S*Write$/.test(x)), out);
      assert.ok(lines.some((x) => HEADER.test(x) && x.includes("msecs")), "milliseconds");
      assert.ok(total >= IOS, `${total} I/Os under disk = ${l.name}, want ≥ ${IOS}:\n${out}`);
    }),
});

Deno.test({
  name: "biolatency tool: a recorded real session replays to the same output",
  fn: async () => {
    const r = await replayFixture("biolatency");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, r.expected);
    // The fixture is a real session: 64 O_DIRECT writes to a loop device, per disk.
    assert.match(r.expected, /^disk = loop\d+$/m);
    assert.match(r.stderr, /tracing block device I\/O on x86_64/);
  },
});
