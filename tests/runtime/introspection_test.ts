// Target-side introspection commands and the HELLO/GET_CPUS/format extensions.
import assert from "../support/assert.ts";
import { errnoOf } from "../../tools/client/raw.ts";
import { startBpfd } from "../support/bpfd.ts";
import { possibleCpus, uname } from "../../runtime/kernel/target.ts";

function kallsymsAddr(name: string): bigint {
  const line = Deno.readTextFileSync("/proc/kallsyms").split("\n")
    .find((l) => l.split(" ")[2] === name);
  assert.ok(line, `${name} in /proc/kallsyms`);
  return BigInt("0x" + line.split(" ")[0]);
}

Deno.test("HELLO reports the target's facts and enables protocol 2", async () => {
  const c = startBpfd();
  try {
    const h = await c.send("HELLO bpfpack-test 1");
    assert.equal(h[0], "hello: ret=0");
    const kv = new Map(
      h.slice(1).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    const u = uname();
    assert.equal(kv.get("protocol"), "2");
    assert.equal(kv.get("release"), u.release);
    assert.equal(kv.get("version"), u.version);
    assert.equal(kv.get("arch"), u.machine);
    assert.equal(kv.get("possible_cpus"), possibleCpus().text);
    assert.equal(kv.get("page_size"), "4096");
    assert.equal(kv.get("btf"), "1");
    assert.equal(kv.get("ringbuf"), "1");
    assert.equal(kv.get("batch_ops"), "1");
    assert.equal(kv.get("uprobe_pmu"), "1");
    assert.equal(kv.get("pid"), String(c.child!.pid));
    assert.ok(kv.get("commands")!.split(",").includes("BPF_MAP_DUMP"));
    assert.ok(kv.get("tracefs")!.startsWith("/"));
  } finally {
    await c.close();
  }
});

Deno.test("kernel symbols: address ↔ name agree with /proc/kallsyms", async () => {
  const c = startBpfd();
  try {
    const addr = kallsymsAddr("vfs_read");
    assert.deepEqual(await c.send("GET_KSYM_ADDR vfs_read"), [
      "GET_KSYM_ADDR: ret=0",
      addr.toString(),
    ]);
    assert.deepEqual(await c.send(`GET_KSYM_NAME ${addr + 5n}`), [
      "GET_KSYM_NAME: ret=0",
      "vfs_read;5;kernel",
    ]);
    assert.equal(errnoOf(await c.send("GET_KSYM_NAME 12")), 2);
    assert.equal(errnoOf(await c.send("GET_KSYM_ADDR no_such_symbol_xyz")), 2);
    // The original's signed form of a kernel address still parses (it wraps to u64).
    const signed = addr - (1n << 64n);
    assert.equal((await c.send(`GET_KSYM_NAME ${signed}`))[1], "vfs_read;0;kernel");
    const all = await c.send("GET_KALLSYMS");
    assert.ok(all.length > 10000);
    assert.ok(all.some((l) => l.endsWith(" vfs_read")));
  } finally {
    await c.close();
  }
});

Deno.test("user symbols: name ↔ address in a live process", async () => {
  const c = startBpfd();
  const sleeper = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    const pid = sleeper.pid;
    // spawn() returns before the child has exec'd sleep and mapped libc: wait for it.
    let libc: string | undefined;
    for (let i = 0; i < 100 && !libc; i++) {
      const maps = Deno.readTextFileSync(`/proc/${pid}/maps`).split("\n");
      libc = maps.map((l) => l.split(/\s+/)[5]).find((p) => p && /libc\.so/.test(p));
      if (!libc) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(libc, "sleep maps libc");
    const a = await c.send(`GET_USYM_ADDR ${pid} nanosleep ${libc}`);
    assert.equal(a[0], "GET_USYM_ADDR: ret=0");
    const n = await c.send(`GET_USYM_NAME ${pid} ${a[1]} 0`);
    assert.equal(n[0], "GET_USYM_NAME: ret=0");
    const [name, off, mod] = n[1].split(";");
    assert.match(name, /nanosleep/);
    assert.equal(off, "0");
    assert.equal(mod, libc);
    assert.equal(errnoOf(await c.send(`GET_USYM_NAME ${pid} 16 0`)), 2);
  } finally {
    sleeper.kill();
    await sleeper.status;
    await c.close();
  }
});

Deno.test("tracefs listings work wherever tracefs is, and format files are served", async () => {
  const c = startBpfd();
  try {
    const cats = await c.send("GET_TRACE_EVENTS_CATEGORIES /sys/kernel/debug/tracing");
    assert.ok(cats.includes("syscalls") && cats.includes("sched"));
    const ev = await c.send("GET_TRACE_EVENTS /sys/kernel/debug/tracing raw_syscalls");
    assert.deepEqual([...ev].sort(), ["sys_enter", "sys_exit"]);
    const missing = await c.send("GET_TRACE_EVENTS /sys/kernel/tracing nonexistent");
    assert.equal(missing[0], "Command not recognized");
    const escape = await c.send("GET_TRACE_EVENTS /sys/kernel/tracing ../..");
    assert.equal(escape[0], "Command not recognized");
    const fmt = await c.send(
      "GET_TRACE_EVENT_FORMAT /sys/kernel/tracing syscalls sys_enter_openat",
    );
    assert.equal(fmt[0], "get_trace_event_format: ret=0");
    assert.ok(fmt.includes("name: sys_enter_openat"));
    assert.ok(fmt.some((l) => /field:const char \* filename;/.test(l)));
    const nofmt = await c.send("GET_TRACE_EVENT_FORMAT /x syscalls nope");
    assert.equal(errnoOf(nofmt), 2);
  } finally {
    await c.close();
  }
});

Deno.test("COMM_FOR_PID, including a process named like a framing marker", async () => {
  const c = startBpfd();
  const dir = await Deno.makeTempDir();
  const fake = `${dir}/END_BPFD_OUTPUT`;
  await Deno.copyFile("/bin/sleep", fake);
  await Deno.chmod(fake, 0o755);
  const p = new Deno.Command(fake, { args: ["30"] }).spawn();
  try {
    // Until the child has exec'd, its comm is still the parent's.
    for (let i = 0; i < 100; i++) {
      if (Deno.readTextFileSync(`/proc/${p.pid}/comm`).trim() === "END_BPFD_OUTPUT") break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(await c.send("COMM_FOR_PID 1"), [
      Deno.readTextFileSync("/proc/1/comm").trim(),
    ]);
    assert.deepEqual(await c.send(`COMM_FOR_PID ${p.pid}`), ["\\END_BPFD_OUTPUT"]);
    assert.deepEqual((await c.send("COMM_FOR_PID 999999999")).slice(0, 2), [
      "Open failed, ignoring",
      "Command not recognized",
    ]);
    assert.equal((await c.send("GET_CPUS"))[0], "get_cpus: ret=0", "stream still in sync");
  } finally {
    p.kill();
    await p.status;
    await Deno.remove(dir, { recursive: true });
    await c.close();
  }
});
