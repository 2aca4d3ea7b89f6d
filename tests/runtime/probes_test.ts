// uprobes (PMU and tracefs paths) on a test binary; kprobes where the kernel has them.
import assert from "../support/assert.ts";
import { errnoOf } from "../../tools/client/raw.ts";
import { loadProg, must, startBpfd } from "../support/bpfd.ts";
import { progs, u32b64, view } from "../../tools/client/asm.ts";
import { symbolFileOffset } from "../../runtime/symbols/usym.ts";
import { probePmu } from "../../runtime/kernel/probes.ts";
import { tracefs } from "../../runtime/kernel/tracefs.ts";

const SOURCE = `
#include <stdlib.h>
__attribute__((noinline)) int bpfpack_target(int x) { __asm__ volatile(""); return x + 1; }
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1, s = 0;
  for (int i = 0; i < n; i++) s += bpfpack_target(i);
  return s == -1;
}
`;

/** Compiles the test binary once per process. */
let binary: string | null = null;
async function testBinary(): Promise<string> {
  if (binary) return binary;
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-uprobe-" });
  await Deno.writeTextFile(`${dir}/t.c`, SOURCE);
  const out = await new Deno.Command("gcc", { args: ["-O1", "-o", `${dir}/t`, `${dir}/t.c`] })
    .output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return (binary = `${dir}/t`);
}

async function run(bin: string, n: number) {
  const out = await new Deno.Command(bin, { args: [String(n)] }).output();
  assert.equal(out.code, 0);
}

async function uprobeCount(mode: "pmu" | "tracefs") {
  const bin = await testBinary();
  const off = symbolFileOffset(bin, "bpfpack_target");
  assert.ok(off !== null && off > 0);
  const c = startBpfd({ args: ["--probe-mode", mode] });
  try {
    const m = await must(c, "BPF_CREATE_MAP 2 hits 4 8 1 0");
    const p = await loadProg(c, 2, "uprobe_count", progs.counter(m));
    const ev = "p_bpfpack_test";
    const fd = await must(c, `BPF_ATTACH_UPROBE ${p} 0 ${ev} ${bin} ${off} -1`);
    const events = () => Deno.readTextFileSync(`${tracefs().path}/uprobe_events`);
    if (mode === "tracefs") assert.match(events(), new RegExp(`bpfpack/${ev}_\\d+ `));
    await run(bin, 7);
    const hits = view((await c.send(`BPF_LOOKUP_ELEM ${m} ${u32b64(0)} 4 8`))[0])
      .getBigUint64(0, true);
    assert.equal(hits, 7n, "exactly the calls the test made");
    assert.deepEqual(await c.send(`BPF_CLOSE_PERF_EVENT_FD ${fd}`), [
      "bpf_close_perf_event_fd: ret=0",
    ]);
    assert.deepEqual(await c.send(`BPF_DETACH_UPROBE ${ev}`), ["bpf_detach_uprobe: ret=0"]);
    assert.doesNotMatch(events(), new RegExp(`bpfpack/${ev}_`), "tracefs event removed");
    await run(bin, 3);
    const after = view((await c.send(`BPF_LOOKUP_ELEM ${m} ${u32b64(0)} 4 8`))[0])
      .getBigUint64(0, true);
    assert.equal(after, 7n, "detached");
  } finally {
    await c.close();
  }
}

Deno.test({
  name: "uprobe through the perf PMU counts the test binary's calls",
  ignore: probePmu("uprobe") === null,
  fn: () => uprobeCount("pmu"),
});

Deno.test("uprobe through tracefs uprobe_events is created and removed", () =>
  uprobeCount("tracefs"));

Deno.test("uprobe attach failures: missing binary, foreign prog fd", async () => {
  const c = startBpfd();
  try {
    const p = await loadProg(c, 2, "u", progs.ret0());
    const nofile = await c.send(`BPF_ATTACH_UPROBE ${p} 0 ev /no/such/binary 4096 -1`);
    assert.equal(errnoOf(nofile), 2);
    assert.match(nofile[1], /does not exist on the target/);
    const foreign = await c.send(`BPF_ATTACH_UPROBE 1 0 ev ${await testBinary()} 4096 -1`);
    assert.equal(errnoOf(foreign), 9);
  } finally {
    await c.close();
  }
});

const hasKprobes = probePmu("kprobe") !== null;

Deno.test({
  name: "kprobe attach fails with a clear reason on a kernel without kprobes",
  ignore: hasKprobes,
  fn: async () => {
    const c = startBpfd();
    try {
      const p = await loadProg(c, 2, "kp", progs.ret0());
      const r = await c.send(`BPF_ATTACH_KPROBE ${p} 0 p_do_sys_open do_sys_open`);
      assert.equal(r[0], "bpf_attach_kprobe: ret=-1 errno=95 EOPNOTSUPP");
      assert.match(r[1], /kprobes are not available on this kernel/);
      assert.deepEqual(await c.send("BPF_DETACH_KPROBE p_do_sys_open"), [
        "bpf_detach_kprobe: ret=0",
      ]);
      const bl = await c.send("GET_KPROBES_BLACKLIST /sys/kernel/debug/tracing");
      assert.deepEqual(bl.slice(0, 2), ["Open failed, ignoring", "Command not recognized"]);
      assert.match(bl[2], /no kprobes/);
    } finally {
      await c.close();
    }
  },
});

Deno.test({
  name: "kprobe on a kernel function counts the calls the test causes",
  ignore: !hasKprobes,
  fn: async () => {
    const c = startBpfd();
    try {
      const m = await must(c, "BPF_CREATE_MAP 2 kp 4 8 1 0");
      const p = await loadProg(c, 2, "kp_count", progs.counter(m));
      const fn = (await c.send("GET_KSYM_ADDR __x64_sys_getppid"))[0].endsWith("ret=0")
        ? "__x64_sys_getppid"
        : "__arm64_sys_getppid";
      const fd = await must(c, `BPF_ATTACH_KPROBE ${p} 0 p_${fn} ${fn}`);
      await new Deno.Command("sh", { args: ["-c", "for i in 1 2 3; do sh -c true; done"] })
        .output();
      const n = view((await c.send(`BPF_LOOKUP_ELEM ${m} ${u32b64(0)} 4 8`))[0]).getBigUint64(
        0,
        true,
      );
      assert.ok(n >= 3n, `only ${n}`);
      await must(c, `BPF_CLOSE_PERF_EVENT_FD ${fd}`);
    } finally {
      await c.close();
    }
  },
});
