/**
 * Helpers for the transport, client and replay tests: the runtime's command line, a bundle built
 * once per run, a throwaway sshd on 127.0.0.1, fake `adb`/`su` scripts, and a small ring-buffer
 * program whose events are deterministic.
 *
 * @example
 * ```ts
 * import { startSshd } from "./support.ts";
 * const sshd = await startSshd();
 * console.log(sshd.remote("bpfd"));
 * await sshd.stop();
 * ```
 * @module
 */

import { runningBundles } from "../support/bundles.ts";
import { asm, insn, ldMap } from "../../tools/client/asm.ts";
import { defaultBpfdCommand, shellQuote } from "../../tools/transport/process.ts";

export { ROOT } from "../support/bpfd.ts";

/** The runtime's command line with a private bundle cache (so `have` is deterministic). */
export function bpfdArgs(cacheDir: string): string[] {
  return [...defaultBpfdCommand(), "--cache-dir", cacheDir];
}

/** The same as one shell command line (for ssh and adb). */
export function bpfdShellCommand(cacheDir: string): string {
  const env = Deno.env.get("DENO_DIR");
  return [...(env ? [`DENO_DIR=${env}`] : []), ...bpfdArgs(cacheDir)].map(shellQuote).join(" ");
}

/** The opensnoop bundle (core, running kernel), built once per test run; returns the `.tar`. */
export async function opensnoopBundle(): Promise<string> {
  return `${await runningBundles()}/opensnoop.oci.tar`;
}

/**
 * A tracepoint program for `syscalls:sys_enter_openat`: when the current process is `pid`, it
 * writes `{u32 tid, u32 tgid, u64 ktime_ns}` (16 bytes) to the ring buffer `ringFd`.
 * The pid is the immediate at byte 28, the map fd the one at byte 60.
 */
export function ringProgram(ringFd: number, pid: number): Uint8Array {
  return asm(
    insn(0x85, 0, 0, 0, 14), // call get_current_pid_tgid
    insn(0xbf, 7, 0), // r7 = r0
    insn(0x77, 0, 0, 0, 32), // r0 >>= 32
    insn(0x55, 0, 0, 10, pid), // if r0 != pid goto out
    insn(0x7b, 10, 7, -16), // *(u64 *)(r10 - 16) = r7
    insn(0x85, 0, 0, 0, 5), // call ktime_get_ns
    insn(0x7b, 10, 0, -8), // *(u64 *)(r10 - 8) = r0
    ldMap(1, ringFd),
    insn(0xbf, 2, 10), // r2 = r10
    insn(0x07, 2, 0, 0, -16), // r2 += -16
    insn(0xb7, 3, 0, 0, 16), // r3 = 16
    insn(0xb7, 4, 0, 0, 0), // r4 = 0
    insn(0x85, 0, 0, 0, 130), // call ringbuf_output
    insn(0xb7, 0, 0, 0, 0), // out: r0 = 0
    insn(0x95), // exit
  );
}

/** The replay marks that go with {@link ringProgram} sessions. */
export const RING_MARKS: string[] = [
  String.raw`replay b64 pid:u32@28,fd:u32@60 ^BPF_PROG_LOAD \d+ \S+ \d+ \S+ \d+ (\S+)$`,
  String.raw`replay b64 any:u32@0,pid:u32@4,any:u64@8 ^\d+ 16 (\S+)$`,
];

/** A free TCP port on 127.0.0.1. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Runs a command; throws with its stderr when it fails. */
export async function run(cmd: string[]): Promise<void> {
  const r = await new Deno.Command(cmd[0], { args: cmd.slice(1), stdout: "null", stderr: "piped" })
    .output();
  if (r.code !== 0) {
    throw new Error(`${cmd.join(" ")}: exit ${r.code}: ${new TextDecoder().decode(r.stderr)}`);
  }
}

/** A running throwaway sshd. */
export interface Sshd {
  port: number;
  dir: string;
  /** The client key. */
  key: string;
  /** The client `-o` options (no host key checks, batch mode). */
  options: string[];
  /** A `--remote` spec that runs `command` as root over this sshd. */
  remote(command: string): string;
  /** Stops sshd and removes its files. */
  stop(): Promise<void>;
}

/** Path of sshd, or null when it is absent (the caller skips and says why). */
export function sshdPath(): string | null {
  try {
    Deno.statSync("/usr/sbin/sshd");
    return "/usr/sbin/sshd";
  } catch {
    return null;
  }
}

/**
 * Starts sshd in the foreground on a free port of 127.0.0.1, with a fresh host key, one
 * authorized client key, root login by key only, no PAM. Waits until it accepts connections.
 */
export async function startSshd(): Promise<Sshd> {
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-sshd-" });
  await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", `${dir}/host_key`]);
  await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", `${dir}/client_key`]);
  await Deno.copyFile(`${dir}/client_key.pub`, `${dir}/authorized_keys`);
  // sshd refuses to start without its privilege separation directory.
  await Deno.mkdir("/run/sshd", { recursive: true });
  const port = freePort();
  await Deno.writeTextFile(
    `${dir}/sshd_config`,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${dir}/host_key`,
      "PermitRootLogin prohibit-password",
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      "StrictModes no",
      "UsePAM no",
      "PidFile none",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication yes",
      "LogLevel ERROR",
      "",
    ].join("\n"),
  );
  const child = new Deno.Command("/usr/sbin/sshd", {
    args: ["-D", "-e", "-f", `${dir}/sshd_config`],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  // Wait until it listens.
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await child.status;
        throw new Error(`sshd did not start: ${await stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const options = ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes"];
  return {
    port,
    dir,
    key: `${dir}/client_key`,
    options,
    remote: (command: string) =>
      `ssh:root@127.0.0.1:${port},key=${dir}/client_key,${
        options.map((o) => `opt=${o}`).join(",")
      },bpfd=${command}`,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await stderr;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/**
 * Writes fake `adb` and `su` scripts into `dir`. The fake adb logs its argv (one word per line)
 * to `dir/adb.log`, then does what adbd does with `shell …`: joins the words with spaces and
 * runs them with `sh -c`. The fake su runs `su -c CMD` as `sh -c CMD`.
 */
export async function fakeAdb(dir: string): Promise<void> {
  await Deno.writeTextFile(
    `${dir}/adb`,
    `#!/bin/sh
for a in "$@"; do printf '%s\\n' "$a"; done > "${dir}/adb.log"
if [ "$1" = "-s" ]; then shift 2; fi
[ "$1" = "shell" ] || { echo "fake adb: only 'shell' is supported" >&2; exit 1; }
shift
exec sh -c "$*"
`,
  );
  await Deno.writeTextFile(
    `${dir}/su`,
    `#!/bin/sh
[ "$1" = "-c" ] || { echo "fake su: want -c CMD" >&2; exit 1; }
exec sh -c "$2"
`,
  );
  await Deno.chmod(`${dir}/adb`, 0o755);
  await Deno.chmod(`${dir}/su`, 0o755);
}
