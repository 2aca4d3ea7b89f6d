// The execsnoop host tool end to end on this kernel (CLI → bundle → runtime → what it prints),
// its event decoding and ARGS formatting, and its recorded real session replayed.
//
// Re-record the fixture (as root; review the diff before committing):
//   deno run -A tests/tools/fixtures/record.ts execsnoop --act "setpriv --reuid=65534 \
//     --regid=65534 --clear-groups /bin/sh -c '/bin/echo bpfpack-fixture-token \"two words\"; \
//     /nonexistent/bpfpack-fixture-missing 2>/dev/null; true'" -- -x -q -u 65534 -d 2
import assert from "../support/assert.ts";
import { runningBundles } from "../support/bundles.ts";
import { replayFixture } from "./fixtures/record.ts";
import { runToolCli } from "./run_tool.ts";
import { argsText, decodeExecEvent, type ExecEvent } from "../../tools/execsnoop/execsnoop.ts";

const bundle = async () => `${await runningBundles()}/execsnoop.oci.tar`;
const token = () => `bpfpack-exec-${crypto.randomUUID().slice(0, 8)}`;

/** Runs `sh -c SCRIPT` (no output); returns the shell's pid. */
async function sh(script: string): Promise<number> {
  const p = new Deno.Command("sh", { args: ["-c", script], stdout: "null", stderr: "null" })
    .spawn();
  await p.status;
  return p.pid;
}

Deno.test("execsnoop tool: --json shows the command the test ran, its args, pid and ppid", async () => {
  const t = token();
  let shPid = 0;
  // sh forks /bin/echo (`; true` keeps sh from exec'ing in place): echo's parent is the shell.
  const r = await runToolCli(
    "execsnoop",
    ["--bundle", await bundle(), "--json", "-d", "2"],
    async () => {
      shPid = await sh(`/bin/echo ${t} "a b"; /nonexistent/${t}; true`);
    },
  );
  assert.equal(r.code, 0, r.stderr);
  const events = r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as ExecEvent);
  const shell = events.find((e) => e.pid === shPid);
  assert.ok(shell, `the exec of the shell (pid ${shPid}) is in ${events.length} events`);
  assert.deepEqual(shell.args.slice(1), ["-c", `/bin/echo ${t} "a b"; /nonexistent/${t}; true`]);
  const echo = events.find((e) => e.args[0] === "/bin/echo" && e.args[1] === t);
  assert.ok(echo, `an event for /bin/echo ${t}`);
  assert.deepEqual(echo.args, ["/bin/echo", t, "a b"]);
  assert.equal(echo.ppid, shPid, "ppid = the shell the test started (read on the target)");
  assert.notEqual(echo.pid, shPid);
  assert.equal(echo.ret, 0);
  assert.equal(echo.comm, "echo");
  assert.equal(echo.truncated, false);
  // Without -x a failed exec is not reported.
  assert.equal(events.filter((e) => e.args[0] === `/nonexistent/${t}`).length, 0);
});

Deno.test("execsnoop tool: table columns, -t, -q, -l filter; -x shows a failed exec with RET", async () => {
  const t = token();
  let shPid = 0;
  const r = await runToolCli(
    "execsnoop",
    ["--bundle", await bundle(), "-t", "-q", "-x", "-l", t, "-d", "2"],
    async () => {
      shPid = await sh(`/bin/echo ${t} 'say "hi"'; /nonexistent/${t}; true`);
    },
  );
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split("\n").filter(Boolean);
  assert.match(lines[0], /^TIME\(s\) PCOMM {12}PID {5}PPID {4}RET ARGS$/);
  const rows = lines.slice(1);
  assert.ok(rows.every((l) => l.includes(t)), `-l keeps only lines with the token:\n${r.stdout}`);
  const echo = rows.find((l) => l.includes('"/bin/echo"'));
  assert.ok(echo, r.stdout);
  // TIME(s) PCOMM PID PPID RET ARGS, args quoted with inner quotes escaped (BCC's -q).
  const m = /^(\d+\.\d{3}) +echo +(\d+) +(\d+) +0 "\/bin\/echo" "(\S+)" "say \\"hi\\""$/.exec(echo);
  assert.ok(m, echo);
  assert.equal(Number(m[3]), shPid, "PPID column = the shell");
  assert.equal(m[4], t);
  const failed = rows.find((l) => l.includes(`"/nonexistent/${t}"`));
  assert.ok(failed, `-x shows the failed exec:\n${r.stdout}`);
  assert.match(
    failed,
    new RegExp(String.raw`^\d+\.\d{3} +sh +\d+ +${shPid} +-2 "/nonexistent/${t}"$`),
  );
});

Deno.test("execsnoop tool: -n filters by comm; --max-args cuts and marks with ...", async () => {
  const t = token();
  const r = await runToolCli(
    "execsnoop",
    ["--bundle", await bundle(), "-n", "^echo$", "--max-args", "3", "-d", "2"],
    async () => void await sh(`/bin/echo ${t} two three four; true`),
  );
  assert.equal(r.code, 0, r.stderr);
  const rows = r.stdout.split("\n").filter(Boolean).slice(1);
  assert.ok(rows.length >= 1 && rows.every((l) => l.startsWith("echo ")), r.stdout);
  assert.ok(rows.some((l) => l.endsWith(` 0 /bin/echo ${t} two ...`)), r.stdout);
});

Deno.test("execsnoop tool: bad flags are usage errors (exit 2) that say what to do", async () => {
  for (
    const [args, why] of [
      [["--max-args", "17"], /--max-args must be 1 to 16/],
      [["-n", "("], /--name: not a regular expression/],
      [["-u", "root"], /--uid needs a non-negative integer/],
    ] as const
  ) {
    const p = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", "tools/execsnoop/execsnoop.ts", ...args],
      cwd: new URL("../../", import.meta.url).pathname,
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(p.code, 2);
    assert.match(new TextDecoder().decode(p.stderr), why);
  }
});

Deno.test("execsnoop tool: decodes struct execsnoop_event; ARGS as BCC prints them", () => {
  const b = new Uint8Array(56 + 32);
  const dv = new DataView(b.buffer);
  dv.setUint32(8, 42, true);
  dv.setUint32(12, 7, true);
  dv.setInt32(20, -2, true);
  dv.setUint32(24, 3, true);
  const args = new TextEncoder().encode("/bin/ls\0-l\0a\nb\0");
  dv.setUint32(28, args.length, true);
  dv.setUint32(32, 1, true);
  b.set(new TextEncoder().encode("ls"), 40);
  b.set(args, 56);
  const e = decodeExecEvent(b);
  assert.deepEqual(
    [e.pid, e.ppid, e.ret, e.comm, e.args, e.truncated],
    [42, 7, -2, "ls", ["/bin/ls", "-l", "a\nb"], true],
  );
  assert.equal(argsText(e.args, e.truncated, false), "/bin/ls -l a\\nb ...");
  assert.equal(argsText(['x"y'], false, true), '"x\\"y"');
  assert.throws(() => decodeExecEvent(b.subarray(0, 40)), /too short/);
});

Deno.test("execsnoop tool: a recorded real session replays to the same output", async () => {
  const r = await replayFixture("execsnoop");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, r.expected);
  // A real session: uid 65534's shell ran echo with the token, then a missing program (-x).
  assert.match(
    r.expected,
    /^echo +\d+ +\d+ +0 "\/bin\/echo" "bpfpack-fixture-token" "two words"$/m,
  );
  assert.match(r.expected, /^sh +\d+ +\d+ +-2 "\/nonexistent\/bpfpack-fixture-missing"$/m);
  assert.match(r.stderr, /tracing exec\(\) on x86_64/);
});
