// Record and replay: normalisation rules, a session recorded over the process transport played
// over ssh, a transcript served to the typed client in place of a runtime, and the CLI.
import assert from "../support/assert.ts";
import { BpfdClient, type PollEvent } from "../../tools/client/client.ts";
import { connect } from "../../tools/transport/channel.ts";
import { processTransport } from "../../tools/transport/process.ts";
import { connectRemote } from "../../tools/transport/remote.ts";
import { Normaliser, parseMark } from "../../tools/replay/normalise.ts";
import { playTranscript } from "../../tools/replay/play.ts";
import { ReplayDivergenceError, serveTranscript } from "../../tools/replay/serve.ts";
import { loadTranscript, readTranscript, Recorder } from "../../tools/replay/transcript.ts";
import { RawClient } from "../../tools/client/raw.ts";
import {
  bpfdArgs,
  bpfdShellCommand,
  opensnoopBundle,
  RING_MARKS,
  ringProgram,
  ROOT,
  sshdPath,
  startSshd,
} from "./support.ts";
import { decodeOpenEvent } from "../../tools/opensnoop/opensnoop.ts";

const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
const u64 = (n: bigint) => new Uint8Array(new BigUint64Array([n]).buffer);

Deno.test("normaliser: fds by binding, pids, marked payload fields, masks, abbreviations", () => {
  const n = new Normaliser([
    parseMark("self 100")!,
    parseMark(String.raw`mask ^release=(.*)$`)!,
    parseMark(String.raw`b64 any:u64@8,pid:u32@4 ^\d+ 16 (\S+)$`)!,
  ], { selfPid: 200 });
  // fds: bound at an fd-returning ret=, then substituted in commands and compared in answers.
  assert.equal(n.compare("bpf_create_map: ret=22", "bpf_create_map: ret=30"), null);
  assert.equal(n.rewrite("BPF_MAP_DUMP 22"), "BPF_MAP_DUMP 30");
  assert.equal(n.compare("22 map type=1 name=x key=4", "30 map type=1 name=x key=4"), null);
  assert.match(n.compare("22 map", "22 map")!, /field 1 is "22", expected "30"/);
  // Counts are not fds: a different count is a divergence.
  assert.match(n.compare("bpf_map_dump: ret=2", "bpf_map_dump: ret=3")!, /field 2/);
  // An fd reused after a close rebinds.
  assert.equal(n.compare("bpf_prog_load: ret=22", "bpf_prog_load: ret=31"), null);
  assert.equal(n.rewrite("BPF_ATTACH_TRACEPOINT 22 a b"), "BPF_ATTACH_TRACEPOINT 31 a b");
  // BUNDLE_LOAD lines bind too.
  assert.equal(n.compare("map 40 events type=4", "map 41 events type=4"), null);
  assert.equal(n.rewrite("BPF_OPEN_RING_BUFFER 40"), "BPF_OPEN_RING_BUFFER 41");
  // pids: # replay self, and HELLO's pid=.
  assert.equal(n.rewrite("COMM_FOR_PID 100"), "COMM_FOR_PID 200");
  assert.equal(n.compare("pid=5000", "pid=6000"), null);
  assert.equal(n.rewrite("GET_USYM_NAME 5000 1 1"), "GET_USYM_NAME 6000 1 1");
  assert.match(n.compare("pid=5000", "pid=7000")!, /5000 is bound to 6000/);
  // Masks.
  assert.equal(n.compare("release=6.1.0", "release=6.18.44"), null);
  // Payloads: pid at 4 bound (5000 ↔ 6000), timestamp at 8 ignored, the rest must match.
  const pay = (pid: number, ts: bigint, tail: number) => {
    const b = new Uint8Array(16);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, tail, true);
    dv.setUint32(4, pid, true);
    dv.setBigUint64(8, ts, true);
    return b.toBase64();
  };
  assert.equal(n.compare(`41 16 ${pay(5000, 1n, 9)}`, `41 16 ${pay(6000, 99n, 9)}`), null);
  assert.match(n.compare(`41 16 ${pay(5000, 1n, 9)}`, `41 16 ${pay(6000, 1n, 8)}`)!, /byte 0/);
  assert.match(n.compare(`41 16 ${pay(5000, 1n, 9)}`, `41 16 ${pay(6001, 1n, 9)}`)!, /offset 4/);
  // Abbreviated lines compare by prefix and length.
  const long = "x".repeat(400);
  assert.equal(n.compare(`${"x".repeat(200)}...(400 chars)`, long), null);
  assert.ok(n.compare(`${"x".repeat(200)}...(401 chars)`, long));
  assert.throws(() => parseMark("b64 bogus ^x$"), /bad field/);
});

/** A deterministic session: target facts, map ops, a ring buffer event caused by bpfd itself. */
async function ringSession(c: BpfdClient): Promise<PollEvent[]> {
  const facts = await c.hello();
  await c.cpus();
  const m = await c.createMap({ type: 1, name: "counts", keySize: 4, valueSize: 8, maxEntries: 4 });
  await c.update(m, u32(1), u64(42n));
  await c.lookup(m, u32(1));
  await c.lookup(m, u32(2));
  await c.dump(m);
  await c.delete(m, u32(1));
  await c.closeFd(m);
  const ring = await c.createMap({
    type: 27,
    name: "events",
    keySize: 0,
    valueSize: 0,
    maxEntries: 4096,
  });
  await c.openRingBuffer(ring);
  const prog = await c.loadProgram(5, "on_open", ringProgram(ring, facts.pid!));
  const att = await c.attachTracepoint(prog, "syscalls", "sys_enter_openat");
  await c.comm(1); // bpfd opens /proc/1/comm: exactly one event from bpfd's pid
  const events = await c.poll(1000);
  await c.closeFd(att);
  await c.raw.send("SESSION_FDS");
  return events;
}

Deno.test({
  name: "a session recorded over the process transport replays identically over ssh",
  ignore: sshdPath() === null, // openssh-server is in scripts/setup.sh; absent only if not set up
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "bpfpack-replay-" });
    const sshd = await startSshd();
    try {
      const rec = new Recorder({ remote: "local", notes: RING_MARKS });
      const raw = await connect(processTransport({ command: bpfdArgs(dir) }), {
        onTraffic: rec.onTraffic,
      });
      const c = new BpfdClient(raw);
      const events = await ringSession(c);
      assert.equal(events.length, 1, JSON.stringify(events));
      const ev = events[0];
      assert.ok(ev.kind === "sample" && ev.size === 16);
      assert.equal(new DataView(ev.data.buffer).getUint32(4, true), c.facts!.pid);
      rec.finish(await c.close());
      const file = `${dir}/session.txt`;
      await rec.save(file);
      const t = await readTranscript(file);

      // Over ssh: another bpfd process (other pid, maybe other fds): identical after normalising.
      const ssh = await connectRemote(sshd.remote(bpfdShellCommand(dir)));
      const report = await playTranscript(t, ssh);
      assert.equal(report.divergence?.message ?? null, null);
      assert.ok(report.ok && report.sent > 15 && report.compared > 50);
      assert.equal(await ssh.close(), 0);
      const recordedPid = /^< pid=(\d+)$/m.exec(rec.text())![1];
      assert.notEqual(report.bindings[recordedPid], recordedPid, "the runtime pid was rebound");

      // A changed answer is reported with its transcript line.
      const text = await Deno.readTextFile(file);
      const lines = text.split("\n");
      const at = lines.indexOf("< KgAAAAAAAAA="); // the lookup of 42
      assert.ok(at > 0);
      lines[at] = "< KwAAAAAAAAA=";
      const local = await connect(processTransport({ command: bpfdArgs(dir) }));
      const bad = await playTranscript(loadTranscript(lines.join("\n"), "edited.txt"), local);
      await local.close();
      assert.equal(bad.ok, false);
      assert.equal(bad.divergence!.lineNo, at + 1);
      assert.match(bad.divergence!.message, /^edited.txt:\d+: diverged: field 1 is "KgAAAAAAAAA="/);
    } finally {
      await sshd.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** An opensnoop session through the typed client: decoded events of our marker open. */
async function opensnoopSession(c: BpfdClient, bundle: string, marker: string) {
  await c.hello();
  const up = await c.uploadBundle(bundle);
  const loaded = await c.loadBundle(up.path, { rodata: { targ_tgid: Deno.pid } });
  await c.openPerfBuffers(loaded.maps.get("events")!.fd, 4);
  for (const p of loaded.progs.values()) await c.attachProg(p.fd);
  await c.poll(0); // drain
  // Served, the open changes nothing: the recorded events come back.
  Deno.openSync(marker, { create: true, write: true }).close();
  const out: { cpu: number | null; pid: number; path: string; ret: number }[] = [];
  for (let i = 0; i < 20 && !out.some((e) => e.path === marker); i++) {
    for (const e of await c.poll(300)) {
      if (e.kind !== "sample") continue;
      const d = decodeOpenEvent(e.data);
      out.push({ cpu: e.cpu, pid: d.pid, path: d.path, ret: d.ret });
    }
  }
  const syms = await c.ksyms([(await c.ksymAddr("do_sys_openat2"))!]);
  return { out, syms: [...syms.values()] };
}

Deno.test("serving a transcript to the typed client reproduces the decoded events", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-replay-" });
  try {
    const bundle = await opensnoopBundle();
    const marker = `${dir}/marker-${crypto.randomUUID()}`;
    const rec = new Recorder({ remote: "local" });
    const live = new BpfdClient(
      await connect(processTransport({ command: bpfdArgs(dir) }), { onTraffic: rec.onTraffic }),
    );
    const recorded = await opensnoopSession(live, bundle, marker);
    rec.finish(await live.close());
    assert.ok(recorded.out.some((e) => e.path === marker && e.pid === Deno.pid));
    const file = `${dir}/opensnoop.txt`;
    await rec.save(file);

    // Served: no runtime, no kernel; same calls, same decoded events.
    const served = new BpfdClient(await connectRemote(`replay:${file}`));
    const again = await opensnoopSession(served, bundle, marker);
    assert.deepEqual(again, recorded);
    assert.equal(await served.close(), 0);

    // Straying from the transcript is an error naming the line, not a hang.
    const stray = new BpfdClient(await connectRemote(`replay:${file}`));
    await stray.hello();
    const e = await stray.createMap({ type: 1, keySize: 4, valueSize: 4, maxEntries: 1 })
      .catch((e) => e);
    assert.ok(e instanceof ReplayDivergenceError, String(e));
    assert.match(e.message, /opensnoop.txt:\d+: diverged: .*\n {2}expected: > BUNDLE_BEGIN/);
    assert.equal(await stray.close(), 1);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("serve pairs commands with responses regardless of pipelining", async () => {
  const t = loadTranscript(
    [
      "# replay self 1",
      "> GET_CPUS",
      "> COMM_FOR_PID 1",
      "< START_BPFD_OUTPUT",
      "< get_cpus: ret=0",
      "< possible=0-3",
      "< online=0-3",
      "< END_BPFD_OUTPUT",
      "< START_BPFD_OUTPUT",
      "< \\END_BPFD_OUTPUT",
      "< END_BPFD_OUTPUT",
      "",
    ].join("\n"),
  );
  const s = serveTranscript(t, { selfPid: 4242 });
  const c = new BpfdClient(new RawClient(s.readable, s.writable));
  assert.deepEqual((await c.cpus()).online, [0, 1, 2, 3]);
  assert.equal(await c.comm(4242), "END_BPFD_OUTPUT", "the pid is normalised, the line unescaped");
  await c.close();
  assert.deepEqual(await s.done, {
    ok: true,
    answered: 2,
    remaining: 0,
    divergence: null,
    exitSeen: true,
  });
});

Deno.test("replay CLI: --help, record as a proxy, play, serve as a bpfd", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-replay-" });
  const cli = [Deno.execPath(), "run", "-A", "--no-check", `${ROOT}/tools/replay/main.ts`];
  try {
    const help = await new Deno.Command(cli[0], { args: [...cli.slice(1), "--help"] }).output();
    assert.equal(help.code, 0);
    assert.match(new TextDecoder().decode(help.stdout), /record --out FILE/);

    // record: a proxy in front of a local bpfd, used as the bpfd command of a client.
    const file = `${dir}/proxy.txt`;
    const proxied = new BpfdClient(
      await connect(processTransport({
        command: [
          ...cli,
          "record",
          "--out",
          file,
          "--remote",
          `local,bpfd=${bpfdArgs(dir).join(" ")}`,
        ],
      })),
    );
    await proxied.hello();
    const fd = await proxied.createMap({ type: 2, keySize: 4, valueSize: 4, maxEntries: 2 });
    await proxied.update(fd, u32(0), u32(9));
    assert.deepEqual(await proxied.dump(fd), [
      { key: u32(0), value: u32(9) },
      { key: u32(1), value: u32(0) },
    ]);
    assert.equal(await proxied.close(), 0);
    const text = await Deno.readTextFile(file);
    assert.match(text, /^> BPF_UPDATE_ELEM \d+ AAAAAA== 4 CQAAAA== 4 0$/m);
    assert.match(text, /^# daemon exit status 0$/m);

    // play: against a fresh local runtime.
    const play = await new Deno.Command(cli[0], {
      args: [...cli.slice(1), "play", file, "--against", `local,bpfd=${bpfdArgs(dir).join(" ")}`],
    }).output();
    assert.equal(play.code, 0, new TextDecoder().decode(play.stdout));
    assert.match(new TextDecoder().decode(play.stdout), /^identical: \d+ commands/);

    // serve: the CLI stands in for bpfd.
    const served = new BpfdClient(
      await connect(processTransport({ command: [...cli, "serve", file] })),
    );
    await served.hello();
    const fd2 = await served.createMap({ type: 2, keySize: 4, valueSize: 4, maxEntries: 2 });
    assert.equal(fd2, fd);
    await served.update(fd2, u32(0), u32(9));
    assert.equal((await served.dump(fd2)).length, 2);
    assert.equal(await served.close(), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
