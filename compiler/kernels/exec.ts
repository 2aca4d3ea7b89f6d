/**
 * Running host tools (apt-get, dpkg-deb, tar, bpftool, decompressors) with
 * errors that say which package to install, and optional line-by-line
 * progress for long-running commands.
 *
 * @example
 * ```ts
 * import { run } from "./exec.ts";
 * const r = await run("uname", ["-r"]);
 * console.log(new TextDecoder().decode(r.stdout).trim());
 * ```
 * @module
 */

import { KernelInputError } from "./errors.ts";

/** What to install when a tool is missing (Debian package names). */
const INSTALL_HINT: Record<string, string> = {
  "apt-get": "this needs Debian's apt (run on a Debian/Ubuntu host), or use a " +
    '{ kind: "tree" } or { kind: "btf" } kernel spec instead of { kind: "debian" }',
  "apt-cache": "this needs Debian's apt (run on a Debian/Ubuntu host)",
  "dpkg-deb": "install it: apt-get install dpkg",
  tar: "install it: apt-get install tar",
  bpftool: "install it: apt-get install bpftool (or linux-tools-common on Ubuntu)",
  xz: "install it: apt-get install xz-utils",
  zstd: "install it: apt-get install zstd",
  gzip: "install it: apt-get install gzip",
  bzip2: "install it: apt-get install bzip2",
  lzop: "install it: apt-get install lzop",
  lz4: "install it: apt-get install lz4",
};

/**
 * Result of {@link run}.
 *
 * @example
 * ```ts
 * import { run, type RunResult } from "./exec.ts";
 * const r: RunResult = await run("true", []);
 * console.log(r.code); // 0
 * ```
 */
export interface RunResult {
  /** Exit code. */
  code: number;
  /** Everything written to stdout. */
  stdout: Uint8Array;
  /** Everything written to stderr, as text. */
  stderr: string;
}

/**
 * Options of {@link run}.
 *
 * @example
 * ```ts
 * import type { RunOptions } from "./exec.ts";
 * const o: RunOptions = { cwd: "/tmp", allowFailure: true, onLine: console.log };
 * ```
 */
export interface RunOptions {
  /** Working directory. */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Called with each stdout/stderr line as it arrives (stdout is then not collected). */
  onLine?: (line: string) => void;
  /** Return instead of throwing when the exit code is not 0. */
  allowFailure?: boolean;
}

function missingTool(cmd: string, cause: unknown): KernelInputError {
  const hint = INSTALL_HINT[cmd] ?? `install the package that provides ${cmd}`;
  return new KernelInputError("tool-missing", `${cmd} not found on PATH: ${hint}`, { cause });
}

async function pumpLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
  sink: string[],
): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    const lines = pending.split(/\r?\n|\r/);
    pending = lines.pop() ?? "";
    for (const line of lines) {
      sink.push(line);
      if (line.trim()) onLine(line);
    }
  }
  pending += decoder.decode();
  if (pending) {
    sink.push(pending);
    if (pending.trim()) onLine(pending);
  }
}

/**
 * Run a command to completion. Throws {@link KernelInputError} `tool-missing`
 * when the command does not exist and `command-failed` on a non-zero exit
 * (unless `allowFailure`). With `onLine`, output is streamed line by line and
 * returned in `stderr` (stdout and stderr interleaved by line), `stdout` empty.
 *
 * @example
 * ```ts
 * import { run } from "./exec.ts";
 * const r = await run("sh", ["-c", "echo hi; exit 3"], { allowFailure: true });
 * console.log(r.code); // 3
 * ```
 */
export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const command = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  let result: RunResult;
  try {
    if (opts.onLine) {
      const child = command.spawn();
      const lines: string[] = [];
      await Promise.all([
        pumpLines(child.stdout, opts.onLine, lines),
        pumpLines(child.stderr, opts.onLine, lines),
      ]);
      const status = await child.status;
      result = { code: status.code, stdout: new Uint8Array(), stderr: lines.join("\n") };
    } else {
      const out = await command.output();
      result = { code: out.code, stdout: out.stdout, stderr: new TextDecoder().decode(out.stderr) };
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw missingTool(cmd, e);
    throw e;
  }
  if (result.code !== 0 && !opts.allowFailure) {
    const tail = result.stderr.trim().split("\n").slice(-8).join("\n");
    throw new KernelInputError(
      "command-failed",
      `${cmd} ${args.join(" ")} exited with ${result.code}:\n${tail}\n` +
        "fix the cause above (or rerun with the same command by hand to see the full output)",
    );
  }
  return result;
}

/**
 * Run `producer | consumer` (e.g. `dpkg-deb --fsys-tarfile x.deb | tar -x …`)
 * without a shell. Throws like {@link run} when either side fails.
 *
 * @example
 * ```ts
 * import { pipe } from "./exec.ts";
 * await pipe(["echo", ["hello"]], ["tee", ["/tmp/hello.txt"]]);
 * ```
 */
export async function pipe(
  producer: [string, string[]],
  consumer: [string, string[]],
  opts: { cwd?: string } = {},
): Promise<void> {
  let left: Deno.ChildProcess;
  let right: Deno.ChildProcess;
  try {
    left = new Deno.Command(producer[0], {
      args: producer[1],
      cwd: opts.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw missingTool(producer[0], e);
    throw e;
  }
  try {
    right = new Deno.Command(consumer[0], {
      args: consumer[1],
      cwd: opts.cwd,
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    await left.stdout.cancel();
    await left.stderr.cancel();
    await left.status;
    if (e instanceof Deno.errors.NotFound) throw missingTool(consumer[0], e);
    throw e;
  }
  const collect = async (s: ReadableStream<Uint8Array>) => await new Response(s).text();
  const [, leftErr, rightErr, ls, rs] = await Promise.all([
    left.stdout.pipeTo(right.stdin).catch(() => {}),
    collect(left.stderr),
    collect(right.stderr),
    left.status,
    right.status,
  ]);
  for (
    const [name, args, status, err] of [
      [producer[0], producer[1], ls, leftErr],
      [consumer[0], consumer[1], rs, rightErr],
    ] as const
  ) {
    if (status.code !== 0) {
      throw new KernelInputError(
        "command-failed",
        `${name} ${args.join(" ")} exited with ${status.code}:\n${err.trim()}\n` +
          "fix the cause above and retry",
      );
    }
  }
}
