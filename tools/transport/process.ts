/**
 * The `process` transport: bpfd as a local child process on pipes, and {@link spawnChannel}, the
 * piece the ssh and adb transports share (they too are a local process: `ssh …`, `adb shell …`).
 *
 * @example
 * ```ts
 * import { connect } from "./channel.ts";
 * import { processTransport } from "./process.ts";
 * const c = await connect(processTransport({ args: ["--max-fds", "64"] }));
 * console.log(await c.send("GET_CPUS"));
 * await c.close();
 * ```
 * @module
 */

import type { Channel, ExitInfo, Transport } from "./channel.ts";

const STDERR_KEEP = 4096;

/** The repository root (for the default runtime path). */
const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/**
 * The command line that runs this repository's runtime with the current Deno.
 *
 * @example
 * ```ts
 * import { defaultBpfdCommand } from "./process.ts";
 * console.log(defaultBpfdCommand().join(" ")); // …/deno run -A --no-check …/runtime/main.ts
 * ```
 */
export function defaultBpfdCommand(): string[] {
  return [Deno.execPath(), "run", "-A", "--no-check", `${ROOT}/runtime/main.ts`];
}

/** Options of {@link spawnChannel}. */
export interface SpawnOptions {
  /** Extra environment variables for the child. */
  env?: Record<string, string>;
  /** Working directory of the child. */
  cwd?: string;
  /** Called with each chunk of the child's stderr (it is always captured for messages). */
  onStderr?: (text: string) => void;
  /** What to say when the program is missing (e.g. how to install it). */
  missingHint?: string;
  /**
   * Start the child in a session of its own (default true), so a terminal's Ctrl-C reaches only
   * the tool: the tool then reads its final maps and ends the session itself. The child still
   * ends when the tool dies (EOF on its stdin). Turn off for a child that must prompt on the
   * terminal (e.g. ssh asking for a password).
   */
  ownSession?: boolean;
}

/**
 * Shell-quotes one word for a POSIX shell (for messages and remote command lines).
 *
 * @example
 * ```ts
 * import { shellQuote } from "./process.ts";
 * shellQuote("my bpfd"); // 'my bpfd'
 * ```
 */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * Spawns `argv` with piped stdio and returns it as a {@link Channel}: stdout/stdin are the
 * streams, stderr is collected (its tail goes into error messages), and `exited` resolves with
 * the exit status.
 *
 * @example
 * ```ts
 * import { spawnChannel } from "./process.ts";
 * const ch = spawnChannel(["cat"]);
 * await ch.dispose?.();
 * ```
 */
export function spawnChannel(argv: string[], opts: SpawnOptions = {}): Channel {
  const describe = argv.map(shellQuote).join(" ");
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: opts.env,
      cwd: opts.cwd,
      detached: opts.ownSession ?? true,
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        `cannot start ${JSON.stringify(argv[0])}: not found` +
          (opts.missingHint ? `; ${opts.missingHint}` : "; check the command and PATH"),
      );
    }
    throw e;
  }
  let tail = "";
  const dec = new TextDecoder();
  const errReader = child.stderr.getReader();
  const stderrDone = (async () => {
    for (;;) {
      const { done, value: chunk } = await errReader.read();
      if (done) break;
      const text = dec.decode(chunk, { stream: true });
      opts.onStderr?.(text);
      tail = (tail + text).slice(-STDERR_KEEP);
    }
  })().catch(() => {});
  const exited: Promise<ExitInfo> = child.status.then(async (st) => {
    // A grandchild may hold stderr open after the child died: do not wait for it long.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([stderrDone, new Promise((r) => timer = setTimeout(r, 300))]);
    clearTimeout(timer);
    return {
      code: st.signal ? 128 + signalNumber(st.signal) : st.code,
      signal: st.signal,
      stderrTail: tail,
    };
  });
  return {
    readable: child.stdout,
    writable: child.stdin,
    describe,
    exited,
    stderrTail: () => tail,
    kill: () => {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    },
    dispose: async () => {
      try {
        await child.stdin.close();
      } catch { /* closed */ }
      await exited;
      await errReader.cancel().catch(() => {}); // a grandchild may still hold stderr
      await stderrDone;
    },
  };
}

function signalNumber(sig: Deno.Signal): number {
  const table: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return table[sig] ?? 0;
}

/** Options of {@link processTransport}. */
export interface ProcessOptions {
  /** The bpfd command line (default: this repository's runtime, {@link defaultBpfdCommand}). */
  command?: string[];
  /** Extra arguments appended to the command (e.g. `--cache-dir DIR`). */
  args?: string[];
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Called with the runtime's stderr as it arrives. */
  onStderr?: (text: string) => void;
}

/**
 * The local transport: runs bpfd as a child process on pipes.
 *
 * @example
 * ```ts
 * import { connect } from "./channel.ts";
 * import { processTransport } from "./process.ts";
 * const c = await connect(processTransport({ command: ["/usr/local/bin/bpfd"] }));
 * await c.close();
 * ```
 */
export function processTransport(opts: ProcessOptions = {}): Transport {
  const argv = [...(opts.command ?? defaultBpfdCommand()), ...(opts.args ?? [])];
  return {
    kind: "process",
    describe: () => argv.map(shellQuote).join(" "),
    open: () =>
      Promise.resolve(spawnChannel(argv, {
        env: opts.env,
        onStderr: opts.onStderr,
        missingHint: "pass the bpfd command line (local,bpfd=CMD) or check PATH",
      })),
  };
}
