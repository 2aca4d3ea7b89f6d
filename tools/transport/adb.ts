/**
 * The `adb` transport: `adb [-s SERIAL] shell [su -c] <bpfd path>`. adbd joins the words after
 * `shell` with spaces and runs them with the device's `sh -c`, so with `su` the whole bpfd command
 * line is passed to `su -c` as one quoted word. With a command and no tty on our side, adb does
 * not allocate a pty, so the stream is clean (a `\r` before each `\n` from old devices is
 * tolerated by the client anyway).
 *
 * @example
 * ```ts
 * import { connect } from "./channel.ts";
 * import { adbTransport } from "./adb.ts";
 * const c = await connect(adbTransport({ serial: "emulator-5554", su: true }));
 * console.log(await c.send("GET_CPUS"));
 * await c.close();
 * ```
 * @module
 */

import type { Transport } from "./channel.ts";
import { shellQuote, spawnChannel } from "./process.ts";

/** Where bpfd is usually pushed on a device (`adb push bpfd /data/local/tmp/`). */
export const DEFAULT_DEVICE_BPFD = "/data/local/tmp/bpfd";

/** Options of {@link adbTransport}. */
export interface AdbOptions {
  /** Device serial (`-s`); default: the only device adb sees. */
  serial?: string;
  /** Run bpfd as root through `su -c` (rooted devices, userdebug builds). */
  su?: boolean;
  /** bpfd path (and arguments) on the device (default {@link DEFAULT_DEVICE_BPFD}). */
  bpfd?: string;
  /** The adb program (default `adb`). */
  adb?: string;
  /** Extra environment for adb (e.g. `ANDROID_SERIAL`, `ADB_SERVER_SOCKET`, `PATH`). */
  env?: Record<string, string>;
  /** Called with adb's stderr as it arrives. */
  onStderr?: (text: string) => void;
}

/**
 * The argv of the adb transport.
 *
 * @example
 * ```ts
 * import { adbArgv } from "./adb.ts";
 * adbArgv({ serial: "R58M", su: true }); // ["adb", "-s", "R58M", "shell", "su", "-c", "/data/local/tmp/bpfd"]
 * ```
 */
export function adbArgv(opts: AdbOptions = {}): string[] {
  const argv = [opts.adb ?? "adb"];
  if (opts.serial !== undefined) {
    if (!opts.serial || opts.serial.startsWith("-") || /\s/.test(opts.serial)) {
      throw new Error(`adb: bad serial ${JSON.stringify(opts.serial)} (see \`adb devices\`)`);
    }
    argv.push("-s", opts.serial);
  }
  const bpfd = opts.bpfd ?? DEFAULT_DEVICE_BPFD;
  argv.push("shell");
  if (opts.su) argv.push("su", "-c", shellQuote(bpfd));
  else argv.push(bpfd);
  return argv;
}

/**
 * The adb transport.
 *
 * @example
 * ```ts
 * import { adbTransport } from "./adb.ts";
 * console.log(adbTransport({ su: true }).describe());
 * ```
 */
export function adbTransport(opts: AdbOptions = {}): Transport {
  const argv = adbArgv(opts);
  return {
    kind: "adb",
    describe: () => argv.join(" "),
    open: () =>
      Promise.resolve(spawnChannel(argv, {
        onStderr: opts.onStderr,
        env: opts.env,
        missingHint: "install Android platform-tools (apt-get install adb) or put adb on PATH",
      })),
  };
}
