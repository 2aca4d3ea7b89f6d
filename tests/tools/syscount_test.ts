// The syscount host tool end to end on this kernel: a helper process the test starts makes a
// known number of getppid and failing close calls; the counts the CLI prints must match. Also
// the per-arch syscall tables, errno parsing, interval differences, and a recorded real session
// replayed.
//
// Re-record the fixture (as root; review the diff before committing):
//   gcc -O2 -o /tmp/bpfpack-schelp tests/tools/syscall_helper.c
//   deno run -A tests/tools/fixtures/record.ts syscount \
//     --act "echo g | /tmp/bpfpack-schelp 300000" -- -i 1 -d 2 -T 10
import assert from "../support/assert.ts";
import { buildRunningBundles } from "../../tools/client/bundle_build.ts";
import { replayFixture } from "./fixtures/record.ts";
import { buildSyscallHelper, ROOT, runToolCli, startSyscallHelper } from "./run_tool.ts";
import {
  decodeCountEntry,
  intervalRows,
  parseErrno,
  syscallName,
  syscallNumber,
  syscallTable,
} from "../../tools/syscount/syscount.ts";

/** syscount's output with the clock masked (the `[HH:MM:SS]` interval headers). */
const normaliseOutput = (text: string) => text.replace(/^\[\d\d:\d\d:\d\d\]$/gm, "[--:--:--]");

let work: Promise<{ bundle: string; helper: string }> | null = null;
/** The syscount bundle for this kernel and the helper, built once per test file. */
function setup() {
  return work ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "bpfpack-syscount-test-" });
    const bundle = `${await buildRunningBundles(["syscount"], dir)}/syscount.oci.tar`;
    return { bundle, helper: await buildSyscallHelper(dir) };
  })();
}

interface JsonSummary {
  arch: string;
  by: string;
  rows: {
    nr?: number;
    syscall?: string;
    pid?: number;
    comm?: string;
    count: number;
    total_ns?: number;
  }[];
}

/** Runs the CLI with `args` against a helper making `getppids` + `closes` calls. */
async function withHelper(args: (pid: number) => string[], getppids: number, closes: number) {
  const { bundle, helper } = await setup();
  const h = startSyscallHelper(helper, getppids, closes);
  const r = await runToolCli("syscount", ["--bundle", bundle, ...args(h.pid)], () => h.go());
  assert.equal(r.code, 0, r.stderr);
  return { ...r, pid: h.pid };
}

Deno.test("syscount tool: -p PID -L --json counts the helper's getppid and close calls exactly", async () => {
  const r = await withHelper((pid) => ["-p", String(pid), "-L", "--json", "-d", "2"], 5000, 300);
  const lines = r.stdout.split("\n").filter(Boolean);
  assert.equal(lines.length, 1, "one summary at the end (no -i)");
  const s = JSON.parse(lines[0]) as JsonSummary;
  assert.equal(s.by, "syscall");
  assert.equal(s.arch, Deno.build.arch);
  const byName = new Map(s.rows.map((row) => [row.syscall, row]));
  assert.equal(byName.get("getppid")?.count, 5000, lines[0]);
  assert.equal(byName.get("getppid")?.nr, syscallNumber(Deno.build.arch, "getppid"));
  assert.equal(byName.get("close")?.count, 300, lines[0]);
  const ns = s.rows.map((row) => row.total_ns ?? 0);
  assert.ok(ns.every((n) => n > 0), "-L: latencies summed");
  assert.deepEqual(ns, [...ns].sort((a, b) => b - a), "sorted by latency");
});

Deno.test("syscount tool: -x -e EBADF keeps only the failing close calls", async () => {
  const r = await withHelper(
    (pid) => ["-p", String(pid), "-x", "-e", "EBADF", "--json", "-d", "2"],
    2000,
    123,
  );
  const s = JSON.parse(r.stdout.trim()) as JsonSummary;
  assert.deepEqual(s.rows.map((row) => [row.syscall, row.count]), [["close", 123]]);
});

Deno.test("syscount tool: -P --syscall getppid shows the helper process with its count", async () => {
  const r = await withHelper(() => ["-P", "--syscall", "getppid", "-d", "2"], 4321, 0);
  const lines = r.stdout.split("\n");
  assert.match(lines[0], /^\[\d\d:\d\d:\d\d\]$/);
  assert.match(lines[1], /^PID {4}COMM {15}COUNT$/);
  const row = lines.find((l) => l.startsWith(`${r.pid} `));
  assert.ok(row, r.stdout);
  assert.match(row, new RegExp(`^${r.pid} +bpfpack-schelp +4321$`));
  assert.match(r.stderr, /tracing syscall getppid on /);
});

Deno.test("syscount tool: -i prints one summary per interval, each with only that interval", async () => {
  const { bundle, helper } = await setup();
  const h = startSyscallHelper(helper, 777, 0);
  const r = await runToolCli(
    "syscount",
    ["--bundle", bundle, "-p", String(h.pid), "-i", "1", "-d", "3", "--json"],
    () => h.go(),
  );
  assert.equal(r.code, 0, r.stderr);
  const sums = r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as JsonSummary);
  assert.equal(sums.length, 3, r.stdout);
  const getppid = sums.map((s) => s.rows.find((row) => row.syscall === "getppid")?.count ?? 0);
  // The calls land in one interval (or straddle two); never counted twice.
  assert.equal(getppid.reduce((a, b) => a + b, 0), 777, JSON.stringify(getppid));
});

Deno.test("syscount tool: bad flags are usage errors (exit 2) that say what to do", async () => {
  for (
    const [args, why] of [
      [["-e", "EBOGUS"], /-e needs an errno number .* or name/],
      [["-T", "0"], /--top needs at least 1/],
      [["-i", "0"], /--interval needs a positive number of seconds/],
    ] as const
  ) {
    const p = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", "tools/syscount/syscount.ts", ...args],
      cwd: ROOT,
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(p.code, 2);
    assert.match(new TextDecoder().decode(p.stderr), why);
  }
  // --syscall is checked against the target's arch, once HELLO has told it.
  const { bundle } = await setup();
  const p = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      "tools/syscount/syscount.ts",
      "--bundle",
      bundle,
      "--syscall",
      "nosuch",
    ],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(p.code, 2);
  assert.match(new TextDecoder().decode(p.stderr), /no syscall named "nosuch" on x86_64/);
});

Deno.test("syscount tool: syscall names per arch (x86_64 and aarch64 differ), errno names", () => {
  const both = (nr: [number, number], name: string) => {
    assert.equal(syscallName("x86_64", nr[0]), name);
    assert.equal(syscallName("aarch64", nr[1]), name);
    assert.equal(syscallNumber("x86_64", name), nr[0]);
    assert.equal(syscallNumber("aarch64", name), nr[1]);
  };
  both([110, 173], "getppid");
  both([257, 56], "openat");
  both([231, 94], "exit_group");
  both([0, 63], "read");
  both([462, 462], "mseal"); // numbered alike on every arch since 424
  assert.equal(syscallName("aarch64", 0), "io_setup");
  assert.equal(syscallName("arm64", 221), "execve");
  assert.equal(syscallName("x86_64", 5000), "[unknown: 5000]");
  assert.equal(syscallName("mips", 1), "[unknown: 1]");
  assert.equal(syscallTable("aarch64")?.has(2), true); // io_submit; aarch64 has no open(2)
  assert.equal([...syscallTable("aarch64")!.values()].includes("open"), false);
  assert.ok(syscallTable("x86_64")!.size > 350 && syscallTable("aarch64")!.size > 300);
  assert.throws(() => syscallNumber("aarch64", "open"), /no syscall named "open" on aarch64/);
  assert.throws(() => syscallNumber(null, "open"), /no syscall table/);
  assert.deepEqual(
    ["ENOENT", "eperm", "-13", "9", "EHWPOISON"].map(parseErrno),
    [2, 1, 13, 9, 133],
  );
  assert.throws(() => parseErrno("0"), /errno number/);
  assert.throws(() => parseErrno("EWHAT"), /errno number/);
});

Deno.test("syscount tool: map entries decode; intervals print differences, sorted, top N", () => {
  const key = new Uint8Array([39, 0, 0, 0]);
  const value = new Uint8Array(32);
  const dv = new DataView(value.buffer);
  dv.setBigUint64(0, 5n, true);
  dv.setBigUint64(8, 900n, true);
  value.set(new TextEncoder().encode("sh"), 16);
  assert.deepEqual(decodeCountEntry({ key, value }), {
    key: 39,
    count: 5n,
    totalNs: 900n,
    comm: "sh",
  });
  assert.throws(() => decodeCountEntry({ key, value: value.subarray(0, 8) }), /too short/);

  const e = (k: number, count: bigint, totalNs = 0n) => ({ key: k, count, totalNs, comm: "" });
  const prev = new Map<number, { count: bigint; totalNs: bigint }>();
  const first = intervalRows([e(1, 5n), e(2, 9n), e(3, 9n)], prev, { top: 2 });
  assert.deepEqual(first.map((r) => [r.key, r.count]), [[2, 9n], [3, 9n]], "ties by key");
  // Unchanged entries vanish; an entry below its last value was re-created: all of it counts.
  const second = intervalRows([e(1, 7n, 10n), e(2, 9n), e(3, 4n, 99n)], prev, {
    top: 10,
    byLatency: true,
  });
  assert.deepEqual(second.map((r) => [r.key, r.count, r.totalNs]), [[3, 4n, 99n], [1, 2n, 10n]]);
});

Deno.test("syscount tool: a recorded real session replays to the same output", async () => {
  const r = await replayFixture("syscount");
  assert.equal(r.code, 0, r.stderr);
  // The [HH:MM:SS] interval headers are the clock at printing: masked on both sides.
  assert.equal(normaliseOutput(r.stdout), normaliseOutput(r.expected));
  // A real session: two 1-second summaries while the helper made 300000 getppid calls.
  assert.equal(r.expected.match(/^SYSCALL +COUNT$/gm)?.length, 2);
  const getppid = [...r.expected.matchAll(/^getppid +(\d+)$/gm)].map((m) => Number(m[1]));
  assert.ok(getppid.some((n) => n >= 150_000), r.expected);
  assert.match(r.stderr, /tracing syscalls, printing top 10 on x86_64/);
});
