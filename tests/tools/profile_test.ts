// The profile host tool: end to end on this kernel against a CPU burner the test controls (user
// stacks name its burn function, kernel stacks resolve to kallsyms symbols), usage errors, the
// three output formats on synthetic stacks, and a recorded real session replayed to its output.
import assert from "../support/assert.ts";
import { ROOT } from "../support/bpfd.ts";
import { buildRunningBundles } from "../../tools/client/bundle_build.ts";
import { runTool } from "../../tools/client/tool.ts";
import {
  collectProfile,
  decodeCount,
  decodeStack,
  profile,
  type ProfileStack,
  renderFolded,
  renderJson,
  renderText,
} from "../../tools/profile/profile.ts";
import { replayFixture } from "./fixtures/record.ts";
import { BpfdClient } from "../../tools/client/client.ts";
import { RawClient } from "../../tools/client/raw.ts";
import { serveTranscript } from "../../tools/replay/serve.ts";
import { loadTranscript } from "../../tools/replay/transcript.ts";

/**
 * The burner: user time in bpfpack_burn_cpu, kernel time in read(2) of /dev/zero (so that
 * kernel stacks have frames). -O0 and frame pointers: the user stack walk needs them.
 */
const BURNER = `
#include <fcntl.h>
#include <unistd.h>
static char buf[1 << 20];
__attribute__((noinline)) void bpfpack_burn_cpu(void) {
  volatile unsigned long x = 0;
  for (unsigned long i = 0; i < 20000000UL; i++) x += i;
}
__attribute__((noinline)) void bpfpack_burn_kernel(int fd) {
  for (int i = 0; i < 64; i++) if (read(fd, buf, sizeof buf) < 0) _exit(1);
}
int main(void) {
  int fd = open("/dev/zero", O_RDONLY);
  if (fd < 0) return 1;
  for (;;) { bpfpack_burn_cpu(); bpfpack_burn_kernel(fd); }
}
`;
const COMM = "bpfpack_burner";

let bundle: Promise<string> | null = null;
/** profile's bundle for the running kernel, built once per test process. */
function profileBundle(): Promise<string> {
  return bundle ??= buildRunningBundles(["profile"]).then((d) => `${d}/profile.oci.tar`);
}

/** Compiles and starts the burner; returns it (the caller kills it). */
async function startBurner(): Promise<{ pid: number; stop: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-profile-" });
  await Deno.writeTextFile(`${dir}/burn.c`, BURNER);
  const cc = await new Deno.Command("gcc", {
    args: ["-g", "-O0", "-fno-omit-frame-pointer", "-o", `${dir}/${COMM}`, `${dir}/burn.c`],
  }).output();
  assert.equal(cc.code, 0, new TextDecoder().decode(cc.stderr));
  const child = new Deno.Command(`${dir}/${COMM}`, { stdout: "null", stderr: "null" }).spawn();
  return {
    pid: child.pid,
    stop: async () => {
      child.kill("SIGKILL");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Runs the tool to completion; stdout lines, stderr and exit code. */
async function profileRun(args: string[]) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}/tools/profile/profile.ts`,
      "--bundle",
      await profileBundle(),
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    lines: dec.decode(r.stdout).split("\n").filter(Boolean),
    stderr: dec.decode(r.stderr),
    code: r.code,
  };
}

/** Names of the text symbols of /proc/kallsyms. */
async function kallsymsText(): Promise<Set<string>> {
  const out = new Set<string>();
  for (const l of (await Deno.readTextFile("/proc/kallsyms")).split("\n")) {
    const f = l.split(/\s+/);
    if (f.length >= 3 && /^[tTwW]$/.test(f[1])) out.add(f[2]);
  }
  return out;
}

type JsonFrame = { addr: string; name: string | null; offset: number; module: string };
type JsonStack = {
  pid: number;
  comm: string;
  count: number;
  kernel: JsonFrame[] | null;
  user: JsonFrame[] | null;
  user_stack_id: number;
  kernel_stack_id: number;
};

Deno.test("profile tool: -p -U --json samples the test's burner; bpfpack_burn_cpu dominates", async () => {
  const burner = await startBurner();
  try {
    const r = await profileRun(["-p", String(burner.pid), "-F", "99", "-d", "2", "--json", "-U"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /sampling at 99 Hertz of PID \d+ by user stack for 2 secs/);
    const stacks = r.lines.map((l) => JSON.parse(l) as JsonStack);
    const total = stacks.reduce((n, s) => n + s.count, 0);
    assert.ok(total >= 20, `only ${total} samples in 2 s at 99 Hz:\n${r.stderr}`);
    for (const s of stacks) {
      assert.equal(s.pid, burner.pid, "-p keeps only the burner");
      assert.equal(s.comm, COMM);
      assert.equal(s.kernel, null, "-U: no kernel stacks");
      assert.equal(s.kernel_stack_id, -1);
    }
    const counts = stacks.map((s) => s.count);
    assert.deepEqual(counts, [...counts].sort((a, b) => b - a), "JSON: the hottest first");
    const burning = stacks.filter((s) => s.user?.[0]?.name === "bpfpack_burn_cpu");
    const share = burning.reduce((n, s) => n + s.count, 0) / total;
    assert.ok(share >= 0.5, `bpfpack_burn_cpu is the leaf in ${(share * 100).toFixed(0)}%`);
    const b = burning[0].user!;
    assert.equal(b[1]?.name, "main", "the frame-pointer walk reaches main");
    assert.match(b[0].module, new RegExp(`/${COMM}$`));
    assert.ok(b[0].offset > 0 && /^0x[0-9a-f]+$/.test(b[0].addr));
    // Batched symbolisation: one round trip for this one process's user frames.
    assert.match(r.stderr, /frames symbolised in 1 round trip\b/);
  } finally {
    await burner.stop();
  }
});

Deno.test("profile tool: kernel stacks resolve to kallsyms text symbols; folded output", async () => {
  const burner = await startBurner();
  try {
    const r = await profileRun([
      "-p",
      String(burner.pid),
      "-F",
      "99",
      "-d",
      "2",
      "-f",
      "--delimited",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const ksyms = await kallsymsText();
    let kernelSamples = 0;
    let readPath = false;
    for (const l of r.lines) {
      const m = /^(.*) (\d+)$/.exec(l);
      assert.ok(m, `folded line: ${l}`);
      const frames = m[1].split(";");
      assert.equal(frames[0], COMM);
      const dash = frames.indexOf("-");
      if (dash < 0) continue;
      const kernel = frames.slice(dash + 1);
      for (const k of kernel) assert.ok(ksyms.has(k), `${k} is a kernel text symbol`);
      kernelSamples += Number(m[2]);
      if (kernel.some((k) => /read/.test(k))) readPath = true;
    }
    assert.ok(kernelSamples > 0, `no sample with a kernel stack:\n${r.lines.join("\n")}`);
    assert.ok(readPath, `no kernel stack of read(2) on /dev/zero:\n${r.lines.join("\n")}`);
    assert.ok(
      r.lines.some((l) => l.startsWith(`${COMM};`) && l.includes(";main;bpfpack_burn_cpu")),
      "folded user frames run outermost first",
    );
  } finally {
    await burner.stop();
  }
});

Deno.test("profile tool: --stack-storage-size sizes the stack map; lost stacks are reported", async () => {
  const burner = await startBurner();
  try {
    // One slot: the first user stack takes it, every other stack collides (-EEXIST).
    const r = await profileRun([
      "-p",
      String(burner.pid),
      "-F",
      "99",
      "-d",
      "1",
      "-U",
      "--stack-storage-size",
      "1",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.lines.includes("    [Missed User Stack]"), r.lines.join("\n"));
    const blocks = r.lines.filter((l) => l.startsWith("    -  ")).length;
    assert.ok(blocks <= 2, `at most one stored stack plus the missed ones: ${blocks} blocks`);
    const m = /WARNING: (\d+) stack traces could not be displayed\./.exec(r.stderr);
    assert.ok(m && Number(m[1]) >= 1, r.stderr);
  } finally {
    await burner.stop();
  }
});

Deno.test("profile tool: usage errors exit 2 and say what to fix", async () => {
  const cases: [string[], RegExp][] = [
    [["-U", "-K"], /-U .* and -K .* exclude each other/],
    [["-F", "99", "-c", "1000000"], /-F .* and -c .* exclude each other/],
    [["-F", "0"], /positive/],
    [["-F", "abc"], /--frequency needs a non-negative integer/],
    [["1", "2"], /one positional argument/],
    [["-d", "1", "3"], /give the duration once/],
    [["--stack-storage-size", "0"], /--stack-storage-size needs a positive number/],
  ];
  const errors: string[] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => errors.push(a.join(" "));
  try {
    for (const [args, re] of cases) {
      errors.length = 0;
      const code = await runTool(profile, args);
      assert.equal(code, 2, args.join(" "));
      assert.match(errors.join("\n"), re, args.join(" "));
      assert.match(errors.join("\n"), /\(see --help\)/);
    }
  } finally {
    console.error = orig;
  }
});

Deno.test("profile tool: decodes keys and stacks; text, folded and JSON output (BCC's layout)", () => {
  const key = new Uint8Array(28);
  const dv = new DataView(key.buffer);
  dv.setUint32(0, 4242, true);
  dv.setInt32(4, -14, true);
  dv.setInt32(8, 7, true);
  key.set(new TextEncoder().encode("burn"), 12);
  const value = new Uint8Array(8);
  new DataView(value.buffer).setBigUint64(0, 5n, true);
  const c = decodeCount({ key, value });
  assert.deepEqual(c, {
    key: { pid: 4242, kernStackId: -14, userStackId: 7, comm: "burn" },
    count: 5,
  });
  assert.throws(() => decodeCount({ key: key.subarray(0, 20), value }), /rebuild/);
  const st = new Uint8Array(127 * 8);
  new DataView(st.buffer).setBigUint64(0, 0x10n, true);
  new DataView(st.buffer).setBigUint64(8, 0x20n, true);
  assert.deepEqual(decodeStack(st), [0x10n, 0x20n]);

  const sym = (name: string, module: string) => ({ name, offset: 1, module });
  const stacks: ProfileStack[] = [
    {
      key: { pid: 1, kernStackId: 3, userStackId: -17, comm: "a" },
      count: 2,
      kernel: [{ addr: 0xffff1n, sym: sym("read_zero", "kernel") }, {
        addr: 0xffff2n,
        sym: null,
      }],
      user: null,
      kernelMissing: false,
      userMissing: true,
    },
    {
      key: { pid: 9, kernStackId: 4, userStackId: 5, comm: "b" },
      count: 7,
      kernel: [{ addr: 0xffff1n, sym: sym("read_zero", "kernel") }],
      user: [{ addr: 0x10n, sym: sym("leaf", "/bin/b") }, {
        addr: 0x20n,
        sym: sym("main", "/bin/b"),
      }],
      kernelMissing: false,
      userMissing: false,
    },
  ];
  assert.equal(
    renderText(stacks, { delimited: true }),
    [
      "    read_zero",
      "    [unknown]",
      "    [Missed User Stack]",
      "    -                a (1)",
      "        2",
      "",
      "    read_zero",
      "    --",
      "    leaf",
      "    main",
      "    -                b (9)",
      "        7",
      "",
    ].join("\n"),
  );
  assert.equal(
    renderFolded(stacks, { annotations: true }),
    "a;[Missed User Stack];[unknown]_[k];read_zero_[k] 2\nb;main;leaf;read_zero_[k] 7",
  );
  assert.equal(renderFolded(stacks, { userOnly: true }), "a;[Missed User Stack] 2\nb;main;leaf 7");
  const json = renderJson(stacks).map((l) => JSON.parse(l));
  assert.deepEqual(json.map((j) => j.count), [7, 2], "hottest first");
  assert.deepEqual(json[0].user[0], { addr: "0x10", name: "leaf", offset: 1, module: "/bin/b" });
  assert.equal(json[1].user, null);
  assert.equal(json[1].user_missing, true);
  assert.equal(json[1].kernel[1].name, null);
});

Deno.test("profile tool: stacks an original BPFd's dump lacks are looked up in one pipelined batch", async () => {
  // An original BPFd (protocol 1, no HELLO): dumps are BPF_GET_FIRST_KEY … 1, and the stack
  // map's dump comes back empty (ret=-1, no errno), so the needed ids are looked up.
  const le = (n: number, size: number) => {
    const b = new Uint8Array(size);
    const dv = new DataView(b.buffer);
    if (size === 8) dv.setBigUint64(0, BigInt(n), true);
    else dv.setInt32(0, n, true);
    return b;
  };
  const key = new Uint8Array(28);
  key.set(le(77, 4), 0);
  key.set(le(3, 4), 4);
  key.set(le(9, 4), 8);
  key.set(new TextEncoder().encode("spin"), 12);
  const stack = (...ips: bigint[]) => {
    const b = new Uint8Array(127 * 8);
    ips.forEach((ip, i) => new DataView(b.buffer).setBigUint64(i * 8, ip, true));
    return b.toBase64();
  };
  const text = [
    "> BPF_GET_FIRST_KEY 26 28 8 1",
    ...["START_BPFD_OUTPUT", key.toBase64(), le(4, 8).toBase64(), "", "END_BPFD_OUTPUT"]
      .map((l) => `< ${l}`),
    "> BPF_GET_FIRST_KEY 25 4 1016 1",
    "< START_BPFD_OUTPUT",
    "< bpf_get_first_key: ret=-1",
    "< END_BPFD_OUTPUT",
    `> BPF_LOOKUP_ELEM 25 ${le(3, 4).toBase64()} 4 1016`,
    `< START_BPFD_OUTPUT`,
    `< ${stack(0xffffffff81000010n, 0xffffffff81000020n)}`,
    `< END_BPFD_OUTPUT`,
    `> BPF_LOOKUP_ELEM 25 ${le(9, 4).toBase64()} 4 1016`,
    `< START_BPFD_OUTPUT`,
    `< ${stack(0x401010n)}`,
    `< END_BPFD_OUTPUT`,
    `> GET_KSYM_NAME ${0xffffffff81000010n}`,
    "< START_BPFD_OUTPUT",
    "< GET_KSYM_NAME: ret=0",
    "< read_zero;16;kernel",
    "< END_BPFD_OUTPUT",
    `> GET_KSYM_NAME ${0xffffffff81000020n}`,
    "< START_BPFD_OUTPUT",
    "< GET_KSYM_NAME: ret=-1",
    "< END_BPFD_OUTPUT",
    `> GET_USYM_NAME 77 ${0x401010n} 1`,
    "< START_BPFD_OUTPUT",
    "< GET_USYM_NAME: ret=0",
    "< spin;16;/bin/spin",
    "< END_BPFD_OUTPUT",
    "",
  ].join("\n");
  const server = serveTranscript(loadTranscript(text));
  const raw = new RawClient(server.readable, server.writable);
  const trips: string[] = []; // one entry per round trip: "send" or "pipeline of N"
  const send = raw.send.bind(raw);
  const pipeline = raw.pipeline.bind(raw);
  raw.send = (l: string, t?: number) => (trips.push("send"), send(l, t));
  raw.pipeline = (
    ls: string[],
    t?: number,
  ) => (trips.push(`pipeline of ${ls.length}`), pipeline(ls, t));
  const client = new BpfdClient(raw);
  client.registerMap({ fd: 26, name: "counts", type: 1, keySize: 28, valueSize: 8, maxEntries: 8 });
  client.registerMap({
    fd: 25,
    name: "stacks",
    type: 7,
    keySize: 4,
    valueSize: 1016,
    maxEntries: 8,
  });
  const { stacks, summary } = await collectProfile(client, 26, 25);
  await client.close();
  const report = await server.done;
  assert.ok(report.ok, report.divergence?.message);
  assert.equal(report.remaining, 0, "every recorded command was sent");
  assert.equal(summary.stackRead, "dump+lookup");
  assert.equal(summary.symbolRoundTrips, 2);
  assert.deepEqual(trips, ["send", "send", "pipeline of 2", "pipeline of 2", "pipeline of 1"]);
  assert.equal(renderFolded(stacks), "spin;spin;[unknown];read_zero 4");
});

Deno.test("profile tool: a recorded real session replays to the same output", async () => {
  const r = await replayFixture("profile");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, r.expected);
  // The fixture is a real session profiling a burner like the one above.
  assert.match(r.expected, /^ {4}bpfpack_burn_cpu\n {4}main\n/m);
  assert.match(r.expected, /^ {4}-  {15}bpfpack_burner \(\d+\)$/m);
  assert.match(r.expected, /^ {4}(read_zero|vfs_read|ksys_read)$/m, "kernel frames");
  assert.match(r.stderr, /frames symbolised in 2 round trips/);
});
