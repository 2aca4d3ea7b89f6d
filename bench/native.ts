/**
 * Builds the C side of the benchmarks (the baseline daemon and the C client)
 * with `gcc -O2` into a fresh temporary directory, and describes the daemon
 * commands the benchmarks spawn.
 *
 * @example
 * ```ts
 * import { buildNative, runtimeCommand } from "./native.ts";
 * const nat = await buildNative();
 * console.log(nat.client, nat.baseline, runtimeCommand());
 * await nat.cleanup();
 * ```
 * @module
 */

/** Absolute path of the repository root. */
export const ROOT: string = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** Absolute path of `bench/c`. */
export const C_DIR: string = `${ROOT}/bench/c`;

/** The compiled programs. */
export interface Native {
  /** Temporary directory holding the binaries. */
  dir: string;
  /** `bpfd_lookup_baseline`: the C daemon. */
  baseline: string;
  /** `rtt_client`: the C client. */
  client: string;
  /** gcc's version line. */
  gcc: string;
  /** Removes the temporary directory. */
  cleanup(): Promise<void>;
}

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed:\n${text}`);
  return text;
}

/** Compiles `bench/c/*.c` with `gcc -O2` into a temporary directory. */
export async function buildNative(): Promise<Native> {
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-bench-" });
  const baseline = `${dir}/bpfd_lookup_baseline`;
  const client = `${dir}/rtt_client`;
  try {
    const gcc = (await run("gcc", ["--version"])).split("\n")[0];
    await Promise.all([
      run("gcc", ["-O2", "-Wall", "-o", baseline, `${C_DIR}/bpfd_lookup_baseline.c`]),
      run("gcc", ["-O2", "-Wall", "-o", client, `${C_DIR}/rtt_client.c`, "-lm"]),
    ]);
    return {
      dir,
      baseline,
      client,
      gcc,
      cleanup: () => Deno.remove(dir, { recursive: true }),
    };
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}

let runtimeEntry = `${ROOT}/runtime/main.ts`;

/**
 * Benchmarks another copy of the runtime (e.g. a patched one under /tmp):
 * the path of its `main.ts`.
 */
export function setRuntimeEntry(path: string): void {
  runtimeEntry = path;
}

/** The command line that runs the Deno runtime from source (with the running Deno binary). */
export function runtimeCommand(): string[] {
  return [Deno.execPath(), "run", "-A", "--no-check", runtimeEntry];
}

/** CPU placement of client and daemon for the pipe benchmarks. */
export type Pin = "none" | "same" | "split";

/**
 * Prefixes a command with `taskset` for the placement: `same` puts it on CPU
 * 0, `split` puts the daemon on CPU 1 (the client is placed by the caller).
 */
export function pinned(cmd: string[], pin: Pin, role: "client" | "daemon"): string[] {
  if (pin === "none") return cmd;
  const cpu = pin === "split" && role === "daemon" ? "1" : "0";
  return ["taskset", "-c", cpu, ...cmd];
}

/** Runs a command (the C client), stderr passed through; returns its exit status and stdout. */
export async function runClient(
  cmd: string[],
): Promise<{ success: boolean; code: number; text: string }> {
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdout: "piped",
    stderr: "inherit",
  }).output();
  return { success: out.success, code: out.code, text: new TextDecoder().decode(out.stdout) };
}
