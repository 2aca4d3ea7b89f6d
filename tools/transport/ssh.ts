/**
 * The `ssh` transport: `ssh [-p PORT] [-i KEY] [-o …] [user@]host <remote bpfd command>`, with
 * no tty (`-T`), so the byte stream is exactly bpfd's stdout, and in batch mode, so a missing key
 * fails at once instead of prompting.
 *
 * @example
 * ```ts
 * import { connect } from "./channel.ts";
 * import { sshTransport } from "./ssh.ts";
 * const c = await connect(sshTransport({ host: "board", user: "root", bpfd: "/data/bpfd" }));
 * console.log(await c.send("GET_CPUS"));
 * await c.close();
 * ```
 * @module
 */

import type { Transport } from "./channel.ts";
import { spawnChannel } from "./process.ts";

/** Options of {@link sshTransport}. */
export interface SshOptions {
  /** Host name or address (IPv6 without brackets). */
  host: string;
  /** Login user (default: ssh's default). */
  user?: string;
  /** Port (default: ssh's default, 22). */
  port?: number;
  /** Private key file (`-i`). */
  identity?: string;
  /** Extra `-o` options, e.g. `["StrictHostKeyChecking=no"]`; they take precedence. */
  options?: string[];
  /** The remote command line that runs bpfd (a shell command on the far side; default `bpfd`). */
  bpfd?: string;
  /** The ssh program (default `ssh`). */
  ssh?: string;
  /** Seconds ssh may take to connect (default 10). */
  connectTimeoutSec?: number;
  /** Called with ssh's stderr (its own messages and the remote stderr) as it arrives. */
  onStderr?: (text: string) => void;
}

/**
 * The argv of the ssh transport (exported for tests and `--dry-run` style messages).
 *
 * @example
 * ```ts
 * import { sshArgv } from "./ssh.ts";
 * sshArgv({ host: "10.0.0.2", port: 2222, bpfd: "bpfd --max-fds 64" });
 * // ["ssh", "-T", "-p", "2222", "-o", "BatchMode=yes", …, "10.0.0.2", "bpfd --max-fds 64"]
 * ```
 */
export function sshArgv(opts: SshOptions): string[] {
  if (!opts.host || opts.host.startsWith("-") || /\s/.test(opts.host)) {
    throw new Error(`ssh: bad host ${JSON.stringify(opts.host)}: give a host name or address`);
  }
  if (opts.user !== undefined && (!opts.user || /[\s@]/.test(opts.user) || opts.user[0] === "-")) {
    throw new Error(`ssh: bad user ${JSON.stringify(opts.user)}`);
  }
  const argv = [opts.ssh ?? "ssh", "-T", "-e", "none"];
  if (opts.port !== undefined) argv.push("-p", String(opts.port));
  if (opts.identity !== undefined) argv.push("-i", opts.identity);
  // ssh keeps the first value it gets for an option: the caller's options come first.
  for (const o of opts.options ?? []) argv.push("-o", o);
  argv.push(
    "-o",
    "BatchMode=yes",
    "-o",
    `ConnectTimeout=${opts.connectTimeoutSec ?? 10}`,
    "-o",
    "ServerAliveInterval=15",
    "-o",
    "LogLevel=ERROR",
  );
  argv.push(opts.user ? `${opts.user}@${opts.host}` : opts.host, "--", opts.bpfd ?? "bpfd");
  return argv;
}

/**
 * The ssh transport. Host keys and authentication are ssh's business (known_hosts, agent, `-i`);
 * the remote command's exit status comes back as ssh's, and 255 means ssh itself failed.
 *
 * @example
 * ```ts
 * import { sshTransport } from "./ssh.ts";
 * const t = sshTransport({ host: "127.0.0.1", port: 2222, identity: "/tmp/key" });
 * console.log(t.describe());
 * ```
 */
export function sshTransport(opts: SshOptions): Transport {
  const argv = sshArgv(opts);
  return {
    kind: "ssh",
    describe: () => `ssh ${opts.user ? opts.user + "@" : ""}${opts.host}: ${opts.bpfd ?? "bpfd"}`,
    open: () =>
      Promise.resolve(spawnChannel(argv, {
        onStderr: opts.onStderr,
        missingHint: "install an ssh client (apt-get install openssh-client)",
      })).then((ch) => ({ ...ch, describe: `ssh ${ch.describe.replace(/^\S+ /, "")}` })),
  };
}
