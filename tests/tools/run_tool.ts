/**
 * Driving a host tool's CLI from tests and the fixture recorder: start `tools/<tool>/<tool>.ts`
 * as a child, wait until it says it is tracing (`… Ctrl-C to end` on stderr), do something the
 * tool should see, and collect its stdout, stderr and exit code. Also builds and starts the small
 * C helper the syscount tests use.
 *
 * @example
 * ```ts
 * import { runToolCli } from "./run_tool.ts";
 * const r = await runToolCli("execsnoop", ["--json", "-d", "1"], async () => {
 *   await new Deno.Command("true").output();
 * });
 * console.log(r.code, r.stdout.split("\n").length);
 * ```
 * @module
 */

import { ROOT } from "../support/bpfd.ts";
export { ROOT };

/** What a tool run produced. */
export interface ToolRun {
  /** Everything on stdout. */
  stdout: string;
  /** Everything on stderr. */
  stderr: string;
  /** Exit code. */
  code: number;
}

/**
 * Runs `tools/<tool>/<tool>.ts args…`; once it reports that tracing has begun, calls `act`
 * (when given), then waits for the tool to end (pass `-d`). Throws when the tool ends without
 * starting to trace, with what it printed.
 */
export async function runToolCli(
  tool: string,
  args: string[],
  act?: () => Promise<void>,
): Promise<ToolRun> {
  const p = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", `${ROOT}/tools/${tool}/${tool}.ts`, ...args],
    cwd: ROOT, // relative paths in `args` are from the repository root
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(p.stdout).text();
  const reader = p.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let stderr = "";
  let ready = false;
  let readyResolve!: () => void;
  const readyP = new Promise<void>((r) => readyResolve = r);
  const drain = (async () => {
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      stderr += r.value;
      if (!ready && stderr.includes("Ctrl-C to end")) {
        ready = true;
        readyResolve();
      }
    }
    readyResolve();
  })();
  await readyP;
  if (ready && act) await act();
  const [out, status] = await Promise.all([stdout, p.status]);
  await drain;
  if (!ready) {
    throw new Error(
      `${tool} ${args.join(" ")} ended (exit ${status.code}) before tracing:\n${stderr}${out}`,
    );
  }
  return { stdout: out, stderr, code: status.code };
}

/**
 * Builds `tests/tools/syscall_helper.c` into `dir/bpfpack-schelp` (its comm) with gcc: `helper N
 * M` waits for one byte on stdin, then makes N `getppid` calls and M `close(-1)` calls (EBADF).
 * Returns the executable's path.
 */
export async function buildSyscallHelper(dir: string): Promise<string> {
  const exe = `${dir}/bpfpack-schelp`;
  const r = await new Deno.Command("gcc", {
    args: ["-O2", "-o", exe, `${ROOT}/tests/tools/syscall_helper.c`],
    stderr: "piped",
  }).output();
  if (!r.success) {
    throw new Error(
      `gcc failed building the syscall helper (scripts/setup.sh installs gcc and libc6-dev): ${
        new TextDecoder().decode(r.stderr)
      }`,
    );
  }
  return exe;
}

/** A started syscall helper: its pid, and `go()` to let it make its calls and wait for it. */
export interface SyscallHelper {
  /** The helper's pid. */
  pid: number;
  /** Lets the helper run its calls and waits until it has exited. */
  go(): Promise<void>;
}

/** Starts the helper built by {@link buildSyscallHelper}; it waits for {@link SyscallHelper.go}. */
export function startSyscallHelper(exe: string, getppids: number, badCloses = 0): SyscallHelper {
  const p = new Deno.Command(exe, {
    args: [String(getppids), String(badCloses)],
    stdin: "piped",
    stdout: "null",
  }).spawn();
  return {
    pid: p.pid,
    go: async () => {
      const w = p.stdin.getWriter();
      await w.write(new Uint8Array([1]));
      await w.close();
      const s = await p.status;
      if (!s.success) throw new Error(`the syscall helper failed: exit ${s.code}`);
    },
  };
}
