// The funccount host tool: pattern handling and BCC-style output; on a kernel without kprobes
// (this machine) the one clear error, on a kernel with kprobes a real count of vfs_read.
import { replayFixture } from "./fixtures/record.ts";
import assert from "../support/assert.ts";
import { ROOT } from "../support/bpfd.ts";
import { buildRunningBundles } from "../../tools/client/bundle_build.ts";
import type { TargetFacts } from "../../tools/client/client.ts";
import {
  countsByName,
  formatCounts,
  lacksKprobes,
  NO_KPROBES_MESSAGE,
  parsePattern,
} from "../../tools/funccount/funccount.ts";

Deno.test("funccount: patterns (glob, p:/k: prefixes) and what is refused", () => {
  assert.equal(parsePattern("vfs_*"), "vfs_*");
  assert.equal(parsePattern("p:tcp_send*"), "tcp_send*");
  assert.equal(parsePattern("k:vfs_rea?"), "vfs_rea?");
  assert.equal(parsePattern("ext4_[rw]*"), "ext4_[rw]*");
  assert.equal(parsePattern("foo.isra.0"), "foo.isra.0");
  for (
    const [bad, why] of [
      ["p:c:malloc", /only kernel functions/],
      ["t:sched:sched_fork", /only kernel functions/],
      ["u:libc:probe", /only kernel functions/],
      ["vfs read", /not a kernel function pattern/],
      ["", /not a kernel function pattern/],
      ["vfs_(read|write)", /not a kernel function pattern/],
      ["*", /every kernel function/],
      ["p:*?", /every kernel function/],
    ] as const
  ) {
    assert.throws(() => parsePattern(bad), why, bad);
  }
});

Deno.test("funccount: counts merged by name, sorted as BCC, FUNC/COUNT columns", () => {
  const syms = new Map([
    [0x100n, { name: "vfs_read", offset: 0, module: "kernel" }],
    [0x104n, { name: "vfs_read", offset: 4, module: "kernel" }], // an IBT-shifted address
    [0x200n, { name: "vfs_write", offset: 0, module: "kernel" }],
    [0x300n, null],
  ]);
  const rows = countsByName([
    { addr: 0x100n, count: 5n },
    { addr: 0x104n, count: 2n },
    { addr: 0x200n, count: 3n },
    { addr: 0x300n, count: 3n },
  ], syms);
  assert.deepEqual(rows, [
    { func: "0x300", count: 3 },
    { func: "vfs_write", count: 3 },
    { func: "vfs_read", count: 7 },
  ]);
  assert.deepEqual(formatCounts(rows), [
    "FUNC                                    COUNT",
    "0x300                                       3",
    "vfs_write                                   3",
    "vfs_read                                    7",
  ]);
});

Deno.test("funccount: the kprobe check reads HELLO's facts", () => {
  const facts = (f: Record<string, boolean>, protocol = 2) =>
    ({ protocol, features: f }) as
      & TargetFacts
      & Record<string, unknown>;
  assert.equal(lacksKprobes(facts({ kprobe_pmu: false, kprobe_events: false })), true);
  assert.equal(lacksKprobes(facts({ kprobe_pmu: true, kprobe_events: false })), false);
  assert.equal(lacksKprobes(facts({ kprobe_pmu: false, kprobe_events: true })), false);
  assert.equal(lacksKprobes(facts({}, 1)), false, "protocol 1: unknown, try");
  assert.equal(lacksKprobes(null), false);
});

/** Whether this kernel has kprobes (the PMU or tracefs kprobe_events). */
function hostHasKprobes(): boolean {
  for (
    const p of [
      "/sys/bus/event_source/devices/kprobe/type",
      "/sys/kernel/tracing/kprobe_events",
      "/sys/kernel/debug/tracing/kprobe_events",
    ]
  ) {
    try {
      Deno.statSync(p);
      return true;
    } catch { /* next */ }
  }
  return false;
}

/** Runs the CLI with the running kernel's bundle; returns stdout, stderr and the exit code. */
async function funccountCli(args: string[], act?: () => Promise<void>) {
  const dir = await buildRunningBundles(["funccount"]);
  try {
    const p = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${ROOT}/tools/funccount/funccount.ts`,
        "--bundle",
        `${dir}/funccount.oci.tar`,
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = new Response(p.stdout).text();
    // Read stderr as it comes: `act` runs once the tool says it traces.
    let err = "";
    const errDone = (async () => {
      for await (const chunk of p.stderr.pipeThrough(new TextDecoderStream())) err += chunk;
    })();
    let exited = false;
    const status = p.status.finally(() => exited = true);
    if (act) {
      while (!err.includes("Ctrl-C to end") && !exited) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await act();
    }
    const { code } = await status;
    await errDone;
    return { stdout: await out, stderr: err, code };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "funccount tool: without kprobes one clear error and exit 1",
  ignore: hostHasKprobes(),
  fn: async () => {
    const r = await funccountCli(["-d", "1", "vfs_read*"]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr.trim(), `funccount: ${NO_KPROBES_MESSAGE}`);
    assert.match(r.stderr, /this kernel has no kprobes \(CONFIG_KPROBES/);
  },
});

Deno.test({
  name: "funccount tool: with kprobes counts the vfs_read calls the test makes",
  ignore: !hostHasKprobes(),
  fn: async () => {
    const file = await Deno.makeTempFile();
    const r = await funccountCli(["--json", "-d", "3", "vfs_read"], async () => {
      for (let i = 0; i < 20; i++) await Deno.readTextFile(file);
    });
    await Deno.remove(file);
    assert.equal(r.code, 0, r.stderr);
    const last = JSON.parse(r.stdout.trim().split("\n").pop()!);
    const row = last.functions.find((f: { func: string }) => f.func === "vfs_read");
    assert.ok(row && row.count >= 20, r.stdout);
  },
});

Deno.test("funccount tool: usage errors exit 2 before connecting", async () => {
  for (const args of [[], ["a*", "b*"], ["u:libc:malloc"], ["-i", "0", "vfs_*"]]) {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}/tools/funccount/funccount.ts`, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(r.code, 2, args.join(" "));
    assert.match(new TextDecoder().decode(r.stderr), /^funccount: .*\(see --help\)\n$/);
  }
});

Deno.test("funccount tool: a session recorded in the arm64 6.1 VM replays to the same output", async () => {
  const r = await replayFixture("funccount");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, r.expected);
  // A real session on a kernel with kprobes: vfs_read was called while it traced.
  assert.match(r.expected, /^vfs_read\s+[1-9]\d*$/m);
  assert.match(r.stderr, /on aarch64 6\.1\.\S+-cloud-arm64 \(headers object\)/);
});
