// Event delivery: perf buffers and ring buffers fed by a tracepoint program, poll semantics.
import assert from "../support/assert.ts";
import { type RawClient, retOf } from "../../tools/client/raw.ts";
import { loadProg, must, startBpfd } from "../support/bpfd.ts";
import { progs, u32b64 } from "../../tools/client/asm.ts";
import { onlineCpus } from "../../runtime/kernel/target.ts";

const CPUS = onlineCpus().cpus;

/** A child that opens a file `n` times; resolves with its pid after it exits. */
async function opener(n: number): Promise<number> {
  const p = new Deno.Command("sh", {
    args: ["-c", `for i in $(seq ${n}); do cat /etc/hostname >/dev/null; done`],
    stdout: "null",
  }).spawn();
  await p.status;
  return p.pid;
}

async function perfSetup(c: RawClient, pages = 8) {
  const ev = await must(c, `BPF_CREATE_MAP 4 events 4 4 ${CPUS.length} 0`);
  const readers: number[] = [];
  for (const cpu of CPUS) {
    const r = await must(c, `BPF_OPEN_PERF_BUFFER -1 ${cpu} ${pages}`);
    await must(c, `BPF_UPDATE_ELEM ${ev} ${u32b64(cpu)} 4 ${u32b64(r)} 4 0`);
    readers.push(r);
  }
  const p = await loadProg(c, 5, "tp_openat", progs.perfout(ev));
  return { ev, readers, p };
}

function samplePids(lines: string[], readers: number[]): number[] {
  return lines.map((l) => {
    const [fd, size, b64] = l.split(" ");
    assert.ok(readers.includes(Number(fd)), `sample from unknown fd: ${l}`);
    assert.equal(size, "12"); // 8 bytes submitted, padded so 4 + size is a multiple of 8
    const b = Uint8Array.fromBase64(b64);
    assert.equal(b.length, 12);
    return new DataView(b.buffer).getUint32(4, true); // tgid
  });
}

Deno.test("perf buffer: tracepoint samples carry the pid of the process the test ran", async () => {
  const c = startBpfd();
  try {
    const { readers, p } = await perfSetup(c);
    await must(c, `BPF_ATTACH_TRACEPOINT ${p} syscalls sys_enter_openat`);
    const pid = await opener(3);
    const lines: string[] = [];
    for (let i = 0; i < 10 && samplePids(lines, readers).filter((x) => x === pid).length < 3; i++) {
      lines.push(...await c.send(`PERF_READER_POLL 500 ${readers.length} ${readers.join(" ")}`));
    }
    const mine = samplePids(lines, readers).filter((x) => x === pid);
    // cat opens /etc/hostname (plus libraries): at least 3 openat calls from our pid.
    assert.ok(mine.length >= 3, `${mine.length} samples from pid ${pid} in ${lines.length}`);
    // Nothing pending: a zero-timeout poll answers at once with an empty body.
    const t0 = performance.now();
    await c.send(`PERF_READER_POLL 0 ${readers.length} ${readers.join(" ")}`);
    assert.ok(performance.now() - t0 < 1000);
  } finally {
    await c.close();
  }
});

Deno.test("perf buffer: a blocking poll is ended by the next command, whose response follows", async () => {
  const c = startBpfd();
  try {
    const ev = await must(c, "BPF_CREATE_MAP 4 events 4 4 1 0");
    const r = await must(c, "BPF_OPEN_PERF_BUFFER -1 0 8");
    await must(c, `BPF_UPDATE_ELEM ${ev} ${u32b64(0)} 4 ${u32b64(r)} 4 0`);
    await c.write(`PERF_READER_POLL -1 1 ${r}`);
    assert.equal(await c.readLine(), "START_BPFD_OUTPUT"); // sent before the poll blocks
    await new Promise((res) => setTimeout(res, 300));
    await c.write("BPF_CREATE_MAP 1 after_poll 4 4 4 0");
    assert.equal(await c.readLine(5000), "END_BPFD_OUTPUT", "poll ends with an empty body");
    assert.ok((retOf(await c.readResponse(5000)) ?? -1) > 2);
    // Pipelined: poll and the next command in one write must not hang.
    const [poll, next] = await c.pipeline([`PERF_READER_POLL -1 1 ${r}`, "GET_CPUS"], 5000);
    assert.deepEqual(poll, []);
    assert.equal(next[0], "get_cpus: ret=0");
  } finally {
    await c.close();
  }
});

Deno.test("perf buffer: lost samples are reported, not dropped silently", async () => {
  const c = startBpfd();
  try {
    assert.equal((await c.send("HELLO test"))[0], "hello: ret=0");
    // One data page and a flood of openat: the ring overflows.
    const { readers, p } = await perfSetup(c, 1);
    await must(c, `BPF_ATTACH_TRACEPOINT ${p} syscalls sys_enter_openat`);
    // The kernel writes the LOST record once there is room again: flood, drain, add one event.
    const body: string[] = [];
    for (let i = 0; i < 5 && !body.some((l) => / lost \d+$/.test(l)); i++) {
      await opener(300);
      body.push(...await c.send(`PERF_READER_POLL 100 ${readers.length} ${readers.join(" ")}`));
      await opener(1);
      body.push(...await c.send(`PERF_READER_POLL 100 ${readers.length} ${readers.join(" ")}`));
    }
    const lost = body.filter((l) => / lost \d+$/.test(l));
    assert.ok(lost.length > 0, "expected '<fd> lost N' lines");
    const total = lost.reduce((s, l) => s + Number(l.split(" ")[2]), 0);
    assert.ok(total > 0);
    const fds = await c.send("SESSION_FDS");
    assert.ok(fds.some((l) => / perf_reader .* lost=[1-9]/.test(l)));
  } finally {
    await c.close();
  }
});

Deno.test("ring buffer: records polled together with perf buffers", async () => {
  const c = startBpfd();
  try {
    const rb = await must(c, "BPF_CREATE_MAP 27 rb 0 0 65536 0");
    assert.equal(
      (await c.send(`BPF_OPEN_RING_BUFFER ${rb}`))[0],
      `bpf_open_ring_buffer: ret=${rb}`,
    );
    const ev = await must(c, "BPF_CREATE_MAP 4 events 4 4 1 0");
    const r = await must(c, "BPF_OPEN_PERF_BUFFER -1 0 8");
    await must(c, `BPF_UPDATE_ELEM ${ev} ${u32b64(0)} 4 ${u32b64(r)} 4 0`);
    const p = await loadProg(c, 5, "ringout", progs.ringout(rb));
    await must(c, `BPF_ATTACH_TRACEPOINT ${p} syscalls sys_enter_openat`);
    const pid = await opener(3);
    const lines = await c.send(`PERF_READER_POLL 1000 2 ${r} ${rb}`);
    const pids = lines.filter((l) => l.startsWith(`${rb} `)).map((l) => {
      const [, size, b64] = l.split(" ");
      assert.equal(size, "8"); // ring buffer records are not padded
      return new DataView(Uint8Array.fromBase64(b64).buffer).getUint32(4, true);
    });
    assert.ok(pids.filter((x) => x === pid).length >= 3, `pids ${pids.length}`);
    const notRing = await c.send(`BPF_OPEN_RING_BUFFER ${ev}`);
    assert.match(notRing[1], /not a RINGBUF/);
  } finally {
    await c.close();
  }
});

Deno.test("poll refuses fds that are not this session's readers", async () => {
  const c = startBpfd();
  try {
    const m = await must(c, "BPF_CREATE_MAP 1 m 4 4 4 0");
    for (const fd of [0, 1, m, 999]) {
      const r = await c.send(`PERF_READER_POLL 0 1 ${fd}`);
      assert.equal(r[0], "perf_reader_poll: ret=-1 errno=9 EBADF");
    }
    const short = await c.send("PERF_READER_POLL 0 3 5");
    assert.equal(short[0], "Command not recognized");
  } finally {
    await c.close();
  }
});
