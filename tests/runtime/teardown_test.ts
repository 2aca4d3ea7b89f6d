// Sessions end clean: on exit, EOF, SIGTERM, SIGHUP and SIGINT nothing is left behind.
import assert from "../support/assert.ts";
import { loadProg, must, startBpfd } from "../support/bpfd.ts";
import { progs, u32b64 } from "../../tools/client/asm.ts";
import { listIds } from "../../runtime/kernel/bpf.ts";
import { tracefs } from "../../runtime/kernel/tracefs.ts";
import { symbolFileOffset } from "../../runtime/symbols/usym.ts";

/** Kernel objects of each kind, system-wide (BPF object IDs and tracefs probe events). */
function snapshot() {
  const events = (f: string) => {
    try {
      return Deno.readTextFileSync(`${tracefs().path}/${f}`).split("\n")
        .filter((l) => l.includes("bpfpack/"));
    } catch {
      return [];
    }
  };
  return {
    prog: new Set(listIds("prog")),
    map: new Set(listIds("map")),
    link: new Set(listIds("link")),
    probes: [...events("uprobe_events"), ...events("kprobe_events")],
  };
}

type Snap = ReturnType<typeof snapshot>;

function leftover(before: Snap, after: Snap) {
  const diff = (a: Set<number>, b: Set<number>) => [...b].filter((x) => !a.has(x));
  return {
    prog: diff(before.prog, after.prog),
    map: diff(before.map, after.map),
    link: diff(before.link, after.link),
    probes: after.probes.filter((p) => !before.probes.includes(p)),
  };
}

async function waitClean(before: Snap) {
  // The kernel frees objects after an RCU grace period: allow a moment.
  let l = leftover(before, snapshot());
  for (let i = 0; i < 40 && (l.prog.length + l.map.length + l.link.length + l.probes.length); i++) {
    await new Promise((r) => setTimeout(r, 50));
    l = leftover(before, snapshot());
  }
  return l;
}

const ENDINGS = [
  { how: "exit", code: 0 },
  { how: "EOF", code: 0 },
  { how: "SIGTERM", code: 143 },
  { how: "SIGHUP", code: 129 },
  { how: "SIGINT", code: 130 },
] as const;

for (const { how, code } of ENDINGS) {
  Deno.test(`session ended by ${how}: no program, map, link or probe event is left`, async () => {
    const before = snapshot();
    const c = startBpfd({ args: ["--probe-mode", "tracefs"] });
    const pid = c.child!.pid;
    const m = await must(c, "BPF_CREATE_MAP 2 td 4 8 1 0");
    const ev = await must(c, "BPF_CREATE_MAP 4 tdev 4 4 1 0");
    const r = await must(c, "BPF_OPEN_PERF_BUFFER -1 0 8");
    await must(c, `BPF_UPDATE_ELEM ${ev} ${u32b64(0)} 4 ${u32b64(r)} 4 0`);
    const tp = await loadProg(c, 5, "td_tp", progs.counter(m));
    await must(c, `BPF_ATTACH_TRACEPOINT ${tp} syscalls sys_enter_getppid`);
    const up = await loadProg(c, 2, "td_up", progs.counter(m));
    const libc = "/lib/x86_64-linux-gnu/libc.so.6";
    const off = symbolFileOffset(libc, "getpid") ??
      symbolFileOffset("/lib/aarch64-linux-gnu/libc.so.6", "getpid");
    if (off !== null) {
      await must(c, `BPF_ATTACH_UPROBE ${up} 0 p_td_getpid ${libc} ${off} -1`);
    }
    const during = leftover(before, snapshot());
    assert.ok(during.prog.length >= 2 && during.map.length >= 2, JSON.stringify(during));
    if (off !== null) assert.equal(during.probes.length, 1, "a tracefs uprobe event exists");
    let status: Deno.CommandStatus;
    if (how === "exit") {
      assert.equal(await c.close(), 0);
      status = await c.child!.status;
    } else if (how === "EOF") {
      await c.endInput();
      status = await c.child!.status;
    } else {
      Deno.kill(pid, how);
      status = await c.child!.status;
      await c.endInput();
    }
    await c.child!.stdout.cancel().catch(() => {});
    assert.equal(status.code, code, `exit status after ${how}`);
    const after = await waitClean(before);
    assert.deepEqual(after, { prog: [], map: [], link: [], probes: [] });
  });
}

Deno.test("a signal ends a blocking PERF_READER_POLL promptly and cleans up", async () => {
  const before = snapshot();
  const c = startBpfd();
  const ev = await must(c, "BPF_CREATE_MAP 4 sigev 4 4 1 0");
  const r = await must(c, "BPF_OPEN_PERF_BUFFER -1 0 8");
  await must(c, `BPF_UPDATE_ELEM ${ev} ${u32b64(0)} 4 ${u32b64(r)} 4 0`);
  await c.write(`PERF_READER_POLL -1 1 ${r}`);
  assert.equal(await c.readLine(), "START_BPFD_OUTPUT");
  await new Promise((res) => setTimeout(res, 200));
  const t0 = performance.now();
  Deno.kill(c.child!.pid, "SIGTERM");
  const status = await c.child!.status;
  const ms = performance.now() - t0;
  await c.endInput();
  await c.child!.stdout.cancel().catch(() => {});
  assert.equal(status.code, 143);
  assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms to stop`);
  assert.deepEqual(await waitClean(before), { prog: [], map: [], link: [], probes: [] });
});
