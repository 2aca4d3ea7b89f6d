// The pure protocol layer (parsing, framing) and the stream behaviour of the running runtime.
import assert from "../support/assert.ts";
import { COMMANDS, parseArg, parseLine } from "../../runtime/protocol/commands.ts";
import {
  escapeLine,
  frame,
  LineSplitter,
  MAX_LINE,
  unescapeLine,
} from "../../runtime/protocol/framing.ts";
import { must, startBpfd } from "../support/bpfd.ts";

Deno.test("parseLine: commands, surplus arguments, empty and whitespace lines", () => {
  const p = parseLine("BPF_CREATE_MAP 1   counts 4 8 16 0 extra args");
  assert.equal(p.kind, "command");
  if (p.kind === "command") assert.deepEqual(p.args, [1, "counts", 4, 8, 16, 0]);
  assert.equal(parseLine("").kind, "empty");
  assert.equal(parseLine("\r").kind, "empty");
  assert.equal(parseLine("   ").kind, "error"); // the original crashed here
  assert.equal(parseLine("exit now").kind, "exit");
  assert.equal(parseLine("bpf_create_map 1 x 4 4 4 0").kind, "error"); // case-sensitive
  assert.equal(parseLine("BPF_CREATE_MAP\t1 x 4 4 4 0").kind, "error"); // tabs do not separate
  const crlf = parseLine("GET_KSYM_ADDR vfs_read\r");
  assert.ok(crlf.kind === "command" && crlf.args[0] === "vfs_read");
});

Deno.test("parseArg: strict decimal; u64 wraps a sign like the original", () => {
  for (const bad of ["0x10", "4abc", "", "+", "1e3", " 1"]) {
    assert.ok(typeof parseArg(bad, "int") === "object", bad);
  }
  assert.equal(parseArg("-1", "int"), -1);
  assert.ok(typeof parseArg("2147483648", "int") === "object");
  assert.equal(parseArg("-2123650192", "u64"), (1n << 64n) - 2123650192n);
  assert.ok(typeof parseArg("18446744073709551616", "u64") === "object");
  assert.equal(parseArg("4294967295", "u32"), 4294967295);
});

Deno.test("every command of the original is in the table", () => {
  const original = [
    "BPF_CREATE_MAP",
    "BPF_PROG_LOAD",
    "BPF_ATTACH_KPROBE",
    "BPF_DETACH_KPROBE",
    "BPF_ATTACH_UPROBE",
    "BPF_DETACH_UPROBE",
    "BPF_ATTACH_TRACEPOINT",
    "BPF_DETACH_TRACEPOINT",
    "BPF_ATTACH_PERF_EVENT",
    "BPF_CLOSE_PERF_EVENT_FD",
    "BPF_OPEN_PERF_BUFFER",
    "BPF_UPDATE_ELEM",
    "BPF_LOOKUP_ELEM",
    "BPF_GET_FIRST_KEY",
    "BPF_GET_NEXT_KEY",
    "BPF_DELETE_ELEM",
    "BPF_CLEAR_MAP",
    "PERF_READER_POLL",
    "GET_KALLSYMS",
    "GET_KPROBES_BLACKLIST",
    "GET_TRACE_EVENTS_CATEGORIES",
    "GET_TRACE_EVENTS",
    "COMM_FOR_PID",
    "GET_KSYM_NAME",
    "GET_KSYM_ADDR",
    "GET_USYM_NAME",
    "GET_USYM_ADDR",
  ];
  assert.equal(original.length, 27);
  for (const c of original) assert.ok(COMMANDS[c] && !COMMANDS[c].extension, c);
});

Deno.test("LineSplitter: split lines, joined chunks, over-limit lines dropped whole", () => {
  const s = new LineSplitter(16);
  const enc = new TextEncoder();
  s.push(enc.encode("AB"));
  assert.equal(s.next(), null);
  s.push(enc.encode("C\nD\n"));
  assert.deepEqual(s.next(), { line: "ABC" });
  assert.deepEqual(s.next(), { line: "D" });
  s.push(enc.encode("x".repeat(10)));
  assert.equal(s.next(), null);
  s.push(enc.encode("y".repeat(10)));
  assert.equal(s.next(), null);
  s.push(enc.encode("zz\nnext\n"));
  assert.deepEqual(s.next(), { tooLong: 22 });
  assert.deepEqual(s.next(), { line: "next" });
  s.push(enc.encode("\uFEFFexit\n"));
  assert.deepEqual(s.next(), { line: "\uFEFFexit" }, "a BOM is data, not dropped");
});

Deno.test("framing: a body line equal to a marker is escaped, reversibly", () => {
  assert.equal(frame([]), "START_BPFD_OUTPUT\nEND_BPFD_OUTPUT\n");
  for (const l of ["END_BPFD_OUTPUT", "\\END_BPFD_OUTPUT", "START_BPFD_OUTPUT", "plain", ""]) {
    assert.equal(unescapeLine(escapeLine(l)), l);
  }
  assert.equal(
    frame(["END_BPFD_OUTPUT"]),
    "START_BPFD_OUTPUT\n\\END_BPFD_OUTPUT\nEND_BPFD_OUTPUT\n",
  );
});

Deno.test("stream: banner first, one response per line, over-limit line keeps sync", async () => {
  const c = startBpfd();
  try {
    assert.equal(await c.readLine(), "STARTED_BPFD"); // flushed before any command
    await c.writeRaw(new TextEncoder().encode("\n   \nGET_CPUS\n"));
    assert.equal((await c.readResponse())[0], "Command not recognized");
    assert.equal((await c.readResponse())[0], "get_cpus: ret=0");
    const big = new Uint8Array(MAX_LINE + 100).fill(65);
    big[big.length - 1] = 10;
    await c.writeRaw(big);
    const r = await c.readResponse();
    assert.equal(r[0], "Command not recognized");
    assert.match(r[1], /longer than the limit of 16777216 bytes/);
    assert.ok((await must(c, "BPF_CREATE_MAP 1 insync 4 4 4 0")) > 2, "still in sync");
    // A line just under the limit is accepted as a line (and rejected as a command).
    const near = await c.send("GET_KSYM_ADDR " + "a".repeat(MAX_LINE - 20));
    assert.equal(near[0], "GET_KSYM_ADDR: ret=-1 errno=2 ENOENT");
    const bad = await c.send("BPF_LOOKUP_ELEM 0x10 AAAAAA== 4 4");
    assert.deepEqual(bad[0], "Command not recognized");
    assert.match(bad[1], /map_fd: "0x10" is not a decimal integer/);
  } finally {
    assert.equal(await c.close(), 0);
  }
});

Deno.test("strict base64 and a last line without its newline", async () => {
  const c = startBpfd();
  try {
    const m = await must(c, "BPF_CREATE_MAP 1 b64 4 4 4 0");
    for (const bad of ["AQAAAA", "AQAAAB==", "AQ\tAAAA=="]) {
      const r = await c.send(`BPF_UPDATE_ELEM ${m} ${bad} 4 AQAAAA== 4 0`);
      assert.equal(r[0], "bpf_update_elem: ret=-22 errno=22 EINVAL", bad);
      assert.match(r[1], /invalid base64/);
    }
    await c.writeRaw(new TextEncoder().encode("GET_CPUS"));
    await c.endInput();
    assert.equal((await c.readResponse())[0], "get_cpus: ret=0");
  } finally {
    assert.equal(await c.close(), 0);
  }
});

Deno.test("fd safety: the runtime's own fds cannot be used, closed or polled", async () => {
  const c = startBpfd();
  try {
    for (const fd of [0, 1, 2]) {
      const r = await c.send(`BPF_CLOSE_PERF_EVENT_FD ${fd}`); // the original died on fd 1
      assert.equal(r[0], "bpf_close_perf_event_fd: ret=-1 errno=9 EBADF");
      assert.match(r[1], /runtime's own stdio/);
      assert.equal((await c.send(`BPF_CLOSE_FD ${fd}`))[0], "bpf_close_fd: ret=-1 errno=9 EBADF");
    }
    // A Deno-internal fd (not 0-2) is refused too.
    const internal = [...Deno.readDirSync(`/proc/${c.child!.pid}/fd`)].map((e) => Number(e.name))
      .find((fd) => fd > 2);
    assert.ok(internal !== undefined);
    assert.equal(
      (await c.send(`BPF_CLOSE_FD ${internal}`))[0],
      "bpf_close_fd: ret=-1 errno=9 EBADF",
    );
    const m = await must(c, "BPF_CREATE_MAP 1 m 4 4 4 0");
    const close = await c.send(`BPF_CLOSE_PERF_EVENT_FD ${m}`);
    assert.match(close[1], /is a map, not one of: attachment, perf_reader/);
    assert.deepEqual(await c.send(`BPF_CLOSE_FD ${m}`), ["bpf_close_fd: ret=0"]);
    assert.equal(
      (await c.send(`BPF_LOOKUP_ELEM ${m} AAAAAA== 4 4`))[0],
      "bpf_lookup_elem: ret=-1 errno=9 EBADF",
    );
    const fds = await c.send("SESSION_FDS");
    assert.equal(fds[0], "session_fds: ret=0");
    assert.equal(
      (await c.send("BPF_CREATE_MAP 1 a 4 4 4 0"))[0].startsWith("bpf_create_map: ret="),
      true,
    );
  } finally {
    assert.equal(await c.close(), 0);
  }
});

Deno.test("fd limit: a session cannot exhaust the runtime's fds", async () => {
  const c = startBpfd({ args: ["--max-fds", "3"] });
  try {
    for (let i = 0; i < 3; i++) await must(c, `BPF_CREATE_MAP 1 m${i} 4 4 4 0`);
    const r = await c.send("BPF_CREATE_MAP 1 m3 4 4 4 0");
    assert.equal(r[0], "bpf_create_map: ret=-1 errno=24 EMFILE");
    assert.match(r[1], /limit 3/);
  } finally {
    await c.close();
  }
});
