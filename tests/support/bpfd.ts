/**
 * Starting the runtime for tests: `deno run` of runtime/main.ts as a child,
 * wrapped in a {@link RawClient}, plus helpers for common command sequences.
 *
 * @example
 * ```ts
 * import { startBpfd } from "./bpfd.ts";
 * const c = startBpfd();
 * console.log(await c.send("HELLO"));
 * await c.close();
 * ```
 * @module
 */

import { RawClient, retOf } from "../../tools/client/raw.ts";

/** Absolute path of the repository root. */
export const ROOT: string = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/** The command line that runs the runtime from source. */
export function bpfdCommand(): string[] {
  return [Deno.execPath(), "run", "-A", "--no-check", `${ROOT}/runtime/main.ts`];
}

/** Spawns a runtime; stderr is captured unless `stderr: "inherit"`. */
export function startBpfd(
  opts: { stderr?: "inherit" | "null" | "piped"; args?: string[] } = {},
): RawClient {
  return RawClient.spawn([...bpfdCommand(), ...(opts.args ?? [])], {
    stderr: opts.stderr ?? "null",
    timeoutMs: 30_000,
  });
}

/** Sends a command that must succeed with `ret=N` (N ≥ 0) and returns N. */
export async function must(c: RawClient, line: string): Promise<number> {
  const body = await c.send(line);
  const r = retOf(body);
  if (r === null || r < 0) throw new Error(`${line.slice(0, 120)} failed: ${body.join(" | ")}`);
  return r;
}

/** `BPF_PROG_LOAD` of raw bytecode; returns the fd. */
export function loadProg(c: RawClient, type: number, name: string, insns: Uint8Array) {
  return must(c, `BPF_PROG_LOAD ${type} ${name} ${insns.length} GPL 0 ${insns.toBase64()}`);
}

/** Runs a shell command to completion (to cause kernel events). */
export async function sh(cmd: string): Promise<void> {
  await new Deno.Command("sh", { args: ["-c", cmd], stdout: "null", stderr: "null" }).output();
}

/** The anon-inode kinds of a process's open fds (`bpf-map`, `bpf-prog`, `[perf_event]`, …). */
export function anonFds(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const t = Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`);
      if (t.startsWith("anon_inode:")) out.set(Number(e.name), t.slice(11));
    } catch { /* closed meanwhile */ }
  }
  return out;
}

/** Only the BPF and perf fds of {@link anonFds}. */
export function bpfFds(pid: number): Map<number, string> {
  const m = anonFds(pid);
  for (const [fd, k] of m) if (!/bpf|perf_event/.test(k)) m.delete(fd);
  return m;
}
