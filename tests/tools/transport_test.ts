// Transports (process, ssh against a real sshd, adb through a fake adb) and the typed client end
// to end on this kernel, plus the errors a dead or garbling far side gives.
import assert from "../support/assert.ts";
import { BpfdClient, BpfdError, parseCpuList } from "../../tools/client/client.ts";
import { connect, TransportError } from "../../tools/transport/channel.ts";
import { processTransport } from "../../tools/transport/process.ts";
import { adbArgv, adbTransport } from "../../tools/transport/adb.ts";
import { sshArgv } from "../../tools/transport/ssh.ts";
import { connectRemote, parseRemote, transportFor } from "../../tools/transport/remote.ts";
import { qemuTransport, registerQemuHook } from "../../tools/transport/qemu.ts";
import { serveTranscript } from "../../tools/replay/serve.ts";
import { loadTranscript } from "../../tools/replay/transcript.ts";
import { RawClient } from "../../tools/client/raw.ts";
import {
  bpfdArgs,
  bpfdShellCommand,
  fakeAdb,
  opensnoopBundle,
  sshdPath,
  startSshd,
} from "./support.ts";
import { decodeOpenEvent } from "../../tools/opensnoop/opensnoop.ts";

const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
const u64 = (n: bigint) => new Uint8Array(new BigUint64Array([n]).buffer);

Deno.test("remote specs parse, and bad ones say what is accepted", () => {
  assert.deepEqual(parseRemote("local"), { kind: "local" });
  assert.deepEqual(parseRemote("local,bpfd=/opt/bpfd --max-fds 8"), {
    kind: "local",
    bpfd: ["/opt/bpfd", "--max-fds", "8"],
  });
  assert.deepEqual(parseRemote("ssh:board"), { kind: "ssh", host: "board", options: [] });
  assert.deepEqual(
    parseRemote("ssh:root@10.0.0.2:2222,key=/k,opt=A=b,bpfd=env X=1,2 bpfd --max-fds 8"),
    {
      kind: "ssh",
      host: "10.0.0.2",
      user: "root",
      port: 2222,
      key: "/k",
      options: ["A=b"],
      bpfd: "env X=1,2 bpfd --max-fds 8",
    },
  );
  assert.deepEqual(parseRemote("ssh:me@[fe80::1]:22"), {
    kind: "ssh",
    host: "fe80::1",
    user: "me",
    port: 22,
    options: [],
  });
  assert.deepEqual(parseRemote("adb:"), { kind: "adb", su: false });
  assert.deepEqual(parseRemote("adb:su"), { kind: "adb", su: true });
  assert.deepEqual(parseRemote("adb:R58M,su,bpfd=/data/bpfd"), {
    kind: "adb",
    serial: "R58M",
    su: true,
    bpfd: "/data/bpfd",
  });
  assert.deepEqual(parseRemote("qemu:arm64"), { kind: "qemu", name: "arm64" });
  assert.deepEqual(parseRemote("replay:t.txt"), { kind: "replay", file: "t.txt" });
  for (const bad of ["telnet:x", "ssh:", "ssh:h:99999", "ssh:h,bogus=1", "adb:x,root", "qemu:"]) {
    assert.throws(() => parseRemote(bad), /--remote .*use local, ssh:/, bad);
  }
  assert.throws(() => transportFor("qemu:nope"), /registerQemuHook/);

  assert.deepEqual(sshArgv({ host: "h", user: "u", port: 2, identity: "/k", bpfd: "b x" }), [
    "ssh",
    "-T",
    "-e",
    "none",
    "-p",
    "2",
    "-i",
    "/k",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "ServerAliveInterval=15",
    "-o",
    "LogLevel=ERROR",
    "u@h",
    "--",
    "b x",
  ]);
  assert.throws(() => sshArgv({ host: "-oProxyCommand=x" }), /bad host/);
  assert.deepEqual(adbArgv(), ["adb", "shell", "/data/local/tmp/bpfd"]);
  assert.deepEqual(adbArgv({ serial: "S1", su: true, bpfd: "/d/bpfd --max-fds 8" }), [
    "adb",
    "-s",
    "S1",
    "shell",
    "su",
    "-c",
    "'/d/bpfd --max-fds 8'",
  ]);
  assert.deepEqual(parseCpuList("0-2,5,7-8"), [0, 1, 2, 5, 7, 8]);
});

Deno.test("process transport: HELLO, map ops, bundle upload (second is have), perf events", async () => {
  const cache = await Deno.makeTempDir({ prefix: "bpfpack-cache-" });
  const bundle = await opensnoopBundle();
  const traffic: string[] = [];
  const raw = await connect(processTransport({ command: bpfdArgs(cache) }), {
    timeoutMs: 20_000,
    onTraffic: (d, l) => traffic.push(`${d} ${l.slice(0, 80)}`),
  });
  const c = new BpfdClient(raw, { clientName: "transport-test" });
  try {
    const f = await c.hello();
    assert.equal(f.protocol, 2);
    assert.equal(f.arch, Deno.build.arch);
    assert.equal(f.release, Deno.osRelease());
    assert.ok(f.onlineCpus.length >= 1 && f.possibleCpus.length >= f.onlineCpus.length);
    assert.ok(f.pid !== null && f.pid !== Deno.pid);
    assert.equal(f.raw.client, "transport-test");
    assert.ok(c.hasCommand("BPF_MAP_DUMP") && c.hasCommand("BUNDLE_BEGIN"));

    // Maps.
    const fd = await c.createMap({ type: 1, name: "t", keySize: 4, valueSize: 8, maxEntries: 8 });
    await c.update(fd, u32(1), u64(10n));
    await c.update(fd, u32(2), u64(20n));
    assert.deepEqual(await c.lookup(fd, u32(2)), u64(20n));
    assert.equal(await c.lookup(fd, u32(3)), null);
    const dump = await c.dump(fd);
    assert.deepEqual(
      dump.map((e) => [e.key[0], e.value[0]]).sort((a, b) => a[0] - b[0]),
      [[1, 10], [2, 20]],
    );
    assert.equal(await c.delete(fd, u32(1)), true);
    assert.equal(await c.delete(fd, u32(1)), false);
    const err = await c.update(fd, u32(2), u64(1n), 1).catch((e) => e);
    assert.ok(err instanceof BpfdError);
    assert.equal(err.errno, 17);
    assert.equal(err.errnoName, "EEXIST");
    assert.match(err.message, /BPF_UPDATE_ELEM failed: ret=-1 errno=17 EEXIST: the key exists/);
    const bad = await c.command("BPF_CREATE_MAP 1 x 4").catch((e) => e);
    assert.ok(
      bad instanceof BpfdError && bad.errno === null && /needs 6 arguments/.test(bad.detail),
    );
    await c.closeFd(fd);

    // Bundle upload twice: the second time the device has it.
    const progress: number[] = [];
    const up1 = await c.uploadBundle(bundle, {
      chunkSize: 4096,
      onProgress: (p) => progress.push(p.sent),
    });
    assert.equal(up1.sent, true);
    assert.ok(up1.path.startsWith(cache), up1.path);
    assert.equal(progress.at(-1), up1.size);
    assert.ok(progress.length >= 5, "several chunks");
    // Chunks were pipelined: a second chunk was written before the first answer was read.
    const firstChunk = traffic.findIndex((l) => l.startsWith("> BUNDLE_CHUNK"));
    assert.ok(traffic[firstChunk + 1].startsWith("> BUNDLE_CHUNK"), "window of chunks in flight");
    const up2 = await c.uploadBundle(bundle);
    assert.deepEqual(up2, { ...up1, sent: false });

    // Load, perf buffers on every online CPU, attach, and see our own open.
    const loaded = await c.loadBundle(up2.path, { mode: "core", rodata: { targ_tgid: Deno.pid } });
    assert.equal(loaded.object.tool, "opensnoop");
    const events = loaded.maps.get("events")!;
    const readers = await c.openPerfBuffers(events.fd, 8);
    assert.deepEqual(readers.map((r) => r.cpu), f.onlineCpus);
    for (const p of loaded.progs.values()) {
      const a = await c.attachProg(p.fd);
      assert.match(a.what, /^tracepoint:syscalls:/);
    }
    const marker = `${cache}/marker-${crypto.randomUUID()}`;
    Deno.openSync(marker, { create: true, write: true }).close();
    let seen = null;
    for (let i = 0; i < 20 && !seen; i++) {
      for (const e of await c.poll(500)) {
        if (e.kind !== "sample") continue;
        assert.ok(e.cpu !== null && f.onlineCpus.includes(e.cpu));
        const ev = decodeOpenEvent(e.data);
        assert.equal(ev.pid, Deno.pid, "rodata targ_tgid filters to this process");
        if (ev.path === marker) seen = ev;
      }
    }
    assert.ok(seen, "the marker open was reported");
    assert.ok(seen.ret >= 0);

    // Symbols: N addresses = one pipelined round trip, then the cache.
    const addr = (await c.ksymAddr("vfs_read"))!;
    assert.ok(addr > 0n);
    const before = traffic.length;
    const syms = await c.ksyms([addr, addr + 3n, 12n]);
    assert.deepEqual(syms.get(addr + 3n), { name: "vfs_read", offset: 3, module: "kernel" });
    assert.equal(syms.get(12n), null);
    const lines = traffic.slice(before);
    assert.deepEqual(lines.slice(0, 3).map((l) => l.split(" ")[1]), Array(3).fill("GET_KSYM_NAME"));
    const n = traffic.length;
    await c.ksyms([addr, 12n]);
    assert.equal(traffic.length, n, "cached: nothing sent");
    assert.equal(await c.comm(Deno.pid), "deno");
    assert.equal(await c.comm(2 ** 30), null);
  } finally {
    assert.equal(await c.close(), 0);
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("a typed client falls back to protocol 1 for an original BPFd", async () => {
  // A far side that refuses HELLO and GET_CPUS like the 2017 daemon.
  const script = `echo STARTED_BPFD
while read -r l; do
  case "$l" in
    exit) exit 0 ;;
    *) printf 'START_BPFD_OUTPUT\\nCommand not recognized\\nEND_BPFD_OUTPUT\\n' ;;
  esac
done`;
  const c = new BpfdClient(await connect(processTransport({ command: ["sh", "-c", script] })));
  const f = await c.hello();
  assert.equal(f.protocol, 1);
  assert.equal(f.cpusGuessed, true);
  assert.equal(f.onlineCpus.length, navigator.hardwareConcurrency);
  assert.equal(c.hasCommand("BPF_MAP_DUMP"), false);
  assert.equal(await c.close(), 0);
});

Deno.test("protocol 1: map dumps fall back to BPF_GET_FIRST_KEY … 1 (served transcript)", async () => {
  // What the 2017 daemon answers (ref: alternating key/value lines, then an empty line).
  const nr = ["< START_BPFD_OUTPUT", "< Command not recognized", "< END_BPFD_OUTPUT"];
  const t = loadTranscript(
    [
      "> HELLO bpfpack-client 0.1.0",
      ...nr,
      "> GET_CPUS",
      ...nr,
      "> BPF_GET_FIRST_KEY 3 4 8 1",
      "< START_BPFD_OUTPUT",
      "< AQAAAA==",
      "< CgAAAAAAAAA=",
      "< AgAAAA==",
      "< FAAAAAAAAAA=",
      "<",
      "< END_BPFD_OUTPUT",
      "> BPF_GET_FIRST_KEY 3 4 8 1",
      "< START_BPFD_OUTPUT",
      "< bpf_get_first_key: ret=-1",
      "< END_BPFD_OUTPUT",
      "",
    ].join("\n"),
  );
  const s = serveTranscript(t);
  const c = new BpfdClient(new RawClient(s.readable, s.writable));
  assert.equal((await c.hello()).protocol, 1);
  c.registerMap({ fd: 3, name: "m", type: 1, keySize: 4, valueSize: 8, maxEntries: 4 });
  assert.deepEqual(await c.dump(3), [
    { key: u32(1), value: u64(10n) },
    { key: u32(2), value: u64(20n) },
  ]);
  assert.deepEqual(await c.dump(3), [], "an empty map (the original's ret=-1)");
  await c.close();
  assert.equal((await s.done).ok, true);
});

Deno.test("a dead far side: exit status and stderr in the error, at once", async () => {
  const t0 = Date.now();
  const c = await connect(
    processTransport({
      command: [
        "sh",
        "-c",
        "echo STARTED_BPFD; read x; echo 'bpfd: fatal: out of cheese' >&2; exit 3",
      ],
    }),
    { timeoutMs: 10_000 },
  );
  const e = await c.send("GET_CPUS").catch((e) => e);
  assert.ok(e instanceof TransportError, String(e));
  assert.equal(e.failure, "exited");
  assert.equal(e.exit?.code, 3);
  assert.match(e.message, /closed the channel \(exit status 3\).*out of cheese/s);
  assert.ok(Date.now() - t0 < 5000, "no waiting for the timeout");
  assert.equal(await c.close(), 3);

  // A command that does not exist on the far side.
  const gone = await connect(processTransport({ command: ["sh", "-c", "exec /no/such/bpfd"] }))
    .catch((e) => e);
  assert.ok(gone instanceof TransportError);
  assert.match(gone.message, /exit status 127.*not found/s);
  const missing = await connect(processTransport({ command: ["/no/such/bpfd"] })).catch((e) => e);
  assert.match(String(missing), /cannot start "\/no\/such\/bpfd": not found/);
});

Deno.test("a garbled or silent far side: clear errors within the timeout", async () => {
  // Stray text outside any response.
  const c1 = await connect(processTransport({
    command: [
      "sh",
      "-c",
      "echo STARTED_BPFD; read x; echo 'Welcome to the board!'; " +
      "printf 'START_BPFD_OUTPUT\\nEND_BPFD_OUTPUT\\n'; exec sleep 30",
    ],
  }));
  const e1 = await c1.send("GET_CPUS").catch((e) => e);
  assert.ok(e1 instanceof TransportError && e1.failure === "garbled", String(e1));
  assert.match(e1.message, /Welcome to the board/);
  await c1.close(200);

  // A frame that breaks the framing.
  const c2 = await connect(processTransport({
    command: ["sh", "-c", "echo STARTED_BPFD; read x; echo END_BPFD_OUTPUT; exec sleep 30"],
  }));
  const e2 = await c2.send("GET_CPUS").catch((e) => e);
  assert.ok(e2 instanceof TransportError && e2.failure === "garbled", String(e2));
  assert.match(e2.message, /END_BPFD_OUTPUT without START_BPFD_OUTPUT/);
  await c2.close(200);

  // Alive but silent: the timeout fires, and close() kills it without hanging.
  const t0 = Date.now();
  const c3 = await connect(
    processTransport({
      command: ["sh", "-c", "echo STARTED_BPFD; echo 'half a line' >&2; exec sleep 30"],
    }),
    { timeoutMs: 500 },
  );
  const e3 = await c3.send("GET_CPUS").catch((e) => e);
  assert.ok(e3 instanceof TransportError && e3.failure === "timeout", String(e3));
  assert.match(e3.message, /no response within the timeout.*half a line/s);
  await c3.close(200);
  assert.ok(Date.now() - t0 < 5000);

  // No banner at all.
  const e4 = await connect(processTransport({ command: ["sleep", "30"] }), {
    connectTimeoutMs: 300,
  }).catch((e) => e);
  assert.ok(e4 instanceof TransportError && e4.failure === "timeout", String(e4));
  assert.match(e4.message, /no STARTED_BPFD banner within 300 ms/);
});

Deno.test("adb transport through a fake adb on PATH", async () => {
  // Covers: the argv we build (-s, shell, su -c with the quoted command), the shell-quoting
  // surviving adbd's `sh -c`, and the protocol over the resulting pipes. Not covered: a real
  // adbd (device shell, pty choice, su prompts): adb is not installed here.
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-adb-" });
  try {
    await fakeAdb(dir);
    const wrapper = `${dir}/my bpfd`; // a space in the device path must survive the quoting
    await Deno.writeTextFile(wrapper, `#!/bin/sh\nexec ${bpfdShellCommand(dir)}\n`);
    await Deno.chmod(wrapper, 0o755);
    const env = { PATH: `${dir}:${Deno.env.get("PATH")}` };
    for (const su of [false, true]) {
      const t = adbTransport({ serial: "emulator-5554", su, bpfd: `'${wrapper}'`, env });
      const c = new BpfdClient(await connect(t));
      const f = await c.hello();
      assert.equal(f.protocol, 2);
      const fd = await c.createMap({ type: 2, name: "a", keySize: 4, valueSize: 4, maxEntries: 2 });
      await c.update(fd, u32(1), u32(7));
      assert.deepEqual(await c.lookup(fd, u32(1)), u32(7));
      assert.equal(await c.close(), 0);
      const argv = (await Deno.readTextFile(`${dir}/adb.log`)).trimEnd().split("\n");
      assert.deepEqual(
        argv,
        su
          ? ["-s", "emulator-5554", "shell", "su", "-c", `''\\''${wrapper}'\\'''`]
          : ["-s", "emulator-5554", "shell", `'${wrapper}'`],
      );
    }
    const missing = await connect(adbTransport({ adb: `${dir}/nope` })).catch((e) => e);
    assert.match(String(missing), /install Android platform-tools/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("qemu hook: any stream pair works as a transport", async () => {
  // The VM harness will return a virtio console's streams; here a local runtime stands in.
  const cache = await Deno.makeTempDir({ prefix: "bpfpack-cache-" });
  registerQemuHook("test-vm", () => {
    const argv = bpfdArgs(cache);
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    return Promise.resolve({
      readable: child.stdout,
      writable: child.stdin,
      exited: child.status.then((s) => ({ code: s.code, signal: null, stderrTail: "" })),
    });
  });
  const c = await connectRemote("qemu:test-vm");
  assert.match((await c.send("GET_CPUS"))[0], /^get_cpus: ret=0$/);
  assert.equal(await c.close(), 0);
  assert.equal(qemuTransport(() => Promise.reject(new Error("x")), "v").describe(), "qemu v");
  await Deno.remove(cache, { recursive: true });
});

Deno.test({
  name: "ssh transport against a real sshd on 127.0.0.1",
  ignore: sshdPath() === null, // openssh-server is in scripts/setup.sh; absent only if not set up
  fn: async () => {
    const sshd = await startSshd();
    const cache = await Deno.makeTempDir({ prefix: "bpfpack-cache-" });
    try {
      const c = new BpfdClient(await connectRemote(sshd.remote(bpfdShellCommand(cache))));
      const f = await c.hello();
      assert.equal(f.protocol, 2);
      assert.equal(f.release, Deno.osRelease());
      const fd = await c.createMap({ type: 1, name: "s", keySize: 4, valueSize: 4, maxEntries: 4 });
      await c.update(fd, u32(5), u32(6));
      assert.deepEqual((await c.dump(fd)).map((e) => [e.key[0], e.value[0]]), [[5, 6]]);
      const up = await c.uploadBundle(await opensnoopBundle());
      assert.equal(up.sent, true);
      assert.equal(await c.close(), 0);

      // Wrong key: ssh's own failure (255) and its message.
      const t0 = Date.now();
      const wrong = await connectRemote(
        `ssh:root@127.0.0.1:${sshd.port},key=${sshd.dir}/host_key,` +
          sshd.options.map((o) => `opt=${o}`).join(",") + ",bpfd=true",
      ).catch((e) => e);
      assert.ok(wrong instanceof TransportError, String(wrong));
      assert.equal(wrong.exit?.code, 255);
      assert.match(wrong.message, /Permission denied/);
      assert.ok(Date.now() - t0 < 10_000);
    } finally {
      await sshd.stop();
      await Deno.remove(cache, { recursive: true });
    }
  },
});
