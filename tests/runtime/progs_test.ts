// Program loads and perf-event sampling on the real kernel.
import assert from "../support/assert.ts";
import { errnoOf, retOf } from "../../tools/client/raw.ts";
import { loadProg, must, sh, startBpfd } from "../support/bpfd.ts";
import { asm, insn, ldMap, progs, u32b64, view } from "../../tools/client/asm.ts";

Deno.test("prog load: valid programs of several types, wrong type refused", async () => {
  const c = startBpfd();
  try {
    for (const [type, name] of [[1, "__none__"], [2, "kp_triv"], [5, "tp_triv"], [7, "pe_triv"]]) {
      assert.ok((await loadProg(c, type as number, name as string, progs.ret0())) > 2);
    }
    const bad = await c.send(`BPF_PROG_LOAD 20 pe_triv 16 GPL 0 ${progs.ret0().toBase64()}`);
    assert.equal(retOf(bad), -1);
    assert.equal(errnoOf(bad), 22);
  } finally {
    await c.close();
  }
});

Deno.test("prog load: a verifier failure reports errno, then the log after the status", async () => {
  const c = startBpfd();
  try {
    const r = await c.send("BPF_PROG_LOAD 1 bad 8 GPL 0 twAAAAAAAAA=");
    assert.equal(r[0], "bpf_prog_load: ret=-1 errno=22 EINVAL");
    assert.match(r[1], /^error: the verifier rejected the program/);
    assert.ok(r.slice(2).every((l) => l.startsWith("verifier: ")));
    assert.ok(r.some((l) => l.includes("last insn is not an exit or jmp")));
    // An uninitialised register read: the log names it.
    const uninit = asm(insn(0xbf, 0, 3), insn(0x95)); // r0 = r3; exit
    const r2 = await c.send(`BPF_PROG_LOAD 1 uninit 16 GPL 0 ${uninit.toBase64()}`);
    assert.ok(r2.some((l) => /R3 !read_ok/.test(l)), r2.join("\n"));
  } finally {
    await c.close();
  }
});

Deno.test("prog load: bad bytecode arguments get one framed error each", async () => {
  const c = startBpfd();
  try {
    const empty = await c.send("BPF_PROG_LOAD 1 x 8 GPL 0 ====");
    assert.equal(errnoOf(empty), 22); // the original answered with an empty body
    const len = await c.send(`BPF_PROG_LOAD 1 x 24 GPL 0 ${progs.ret0().toBase64()}`);
    assert.match(len[1], /prog_len is 24 but the instructions decode to 16 bytes/);
    const odd = await c.send("BPF_PROG_LOAD 1 x 3 GPL 0 AAAA");
    assert.match(odd[1], /not a multiple of 8/);
  } finally {
    await c.close();
  }
});

Deno.test("prog load: map references must be maps of this session", async () => {
  const c = startBpfd();
  try {
    // fd 1 (stdout) and an unused number are both refused before the kernel sees them.
    for (const fd of [1, 4000]) {
      const r = await c.send(
        `BPF_PROG_LOAD 5 foreign ${progs.counter(fd).length} GPL 0 ${progs.counter(fd).toBase64()}`,
      );
      assert.equal(errnoOf(r), 9);
      assert.match(r[1], new RegExp(`references fd ${fd}, which is not a map of this session`));
    }
    const prog = await loadProg(c, 1, "p", progs.ret0());
    const asMap = asm(ldMap(1, prog), insn(0xb7), insn(0x95));
    const r = await c.send(`BPF_PROG_LOAD 1 progref ${asMap.length} GPL 0 ${asMap.toBase64()}`);
    assert.equal(errnoOf(r), 9);
  } finally {
    await c.close();
  }
});

Deno.test("a tracepoint counter program counts the syscalls the test makes", async () => {
  const c = startBpfd();
  try {
    const m = await must(c, "BPF_CREATE_MAP 2 cnt 4 8 1 0");
    const p = await loadProg(c, 5, "count", progs.counter(m));
    const t = await must(c, `BPF_ATTACH_TRACEPOINT ${p} syscalls sys_enter_getppid`);
    await sh("for i in 1 2 3 4 5; do sh -c true; done");
    // Each `sh -c` calls getppid at least once; other processes may add more.
    const n = view((await c.send(`BPF_LOOKUP_ELEM ${m} ${u32b64(0)} 4 8`))[0]).getBigUint64(
      0,
      true,
    );
    assert.ok(n >= 5n, `counter ${n}`);
    assert.deepEqual(await c.send(`BPF_CLOSE_PERF_EVENT_FD ${t}`), [
      "bpf_close_perf_event_fd: ret=0",
    ]);
    assert.deepEqual(await c.send("BPF_DETACH_TRACEPOINT syscalls sys_enter_getppid"), [
      "bpf_detach_tracepoint: ret=0",
    ]);
    await sh("for i in 1 2 3; do sh -c true; done");
    const after = view((await c.send(`BPF_LOOKUP_ELEM ${m} ${u32b64(0)} 4 8`))[0])
      .getBigUint64(0, true);
    assert.ok(after - n < 3n, "detached program must not keep counting our calls");
    const missing = await c.send(`BPF_ATTACH_TRACEPOINT ${p} nosuchcategory nosuchevent`);
    assert.equal(errnoOf(missing), 2);
    assert.match(missing[1], /does not exist/);
  } finally {
    await c.close();
  }
});

Deno.test("perf-event sampling: a cpu-clock program runs on every CPU", async () => {
  const c = startBpfd();
  try {
    const m = await must(c, "BPF_CREATE_MAP 2 samples 4 8 1 0");
    const p = await loadProg(c, 7, "sampler", progs.counter(m));
    const cpus = (await c.send("GET_CPUS"))[2].replace("online=", "");
    const fds = [];
    for (let cpu = 0; cpu <= Number(cpus.split("-").pop()); cpu++) {
      fds.push(await must(c, `BPF_ATTACH_PERF_EVENT ${p} 1 0 0 1000 -1 ${cpu} -1`));
    }
    await new Promise((r) => setTimeout(r, 300));
    const n = view((await c.send(`BPF_LOOKUP_ELEM ${m} ${u32b64(0)} 4 8`))[0]).getBigUint64(
      0,
      true,
    );
    // 1000 Hz for 0.3 s: well over 50 samples per CPU unless the CPU was idle-ticked away.
    assert.ok(n >= 50n, `only ${n} samples`);
    for (const fd of fds) await must(c, `BPF_CLOSE_PERF_EVENT_FD ${fd}`);
    const both = await c.send(`BPF_ATTACH_PERF_EVENT ${p} 1 0 10000 49 -1 0 -1`);
    assert.match(both[1], /exactly one of sample_period \/ sample_freq/);
    const group = await c.send(`BPF_ATTACH_PERF_EVENT ${p} 1 0 0 49 -1 0 1`);
    assert.equal(errnoOf(group), 9, "group_fd must be one of this session's events");
  } finally {
    await c.close();
  }
});
