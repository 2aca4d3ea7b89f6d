/**
 * The VM lab's launcher: boots a VM (see lab.ts) and serves **one** bpfd session on this
 * process's stdin/stdout, then stops the VM and exits with bpfd's exit status. Progress and
 * errors go to stderr. The launcher scripts `.cache/vm/run-<arch>-<series>.sh` run this, so a
 * host tool in another process can use `--remote qemu:/abs/path/.cache/vm/run-aarch64-6.1.sh`.
 *
 * Closing stdin ends the session as EOF ends a local bpfd; SIGTERM, SIGINT and SIGHUP stop the
 * VM at once.
 *
 * @example
 * ```sh
 * printf 'HELLO\nexit\n' | deno run -A tests/vm/launch.ts --arch aarch64 --series 6.1
 * ```
 * @module
 */

import { parseArgs } from "node:util";
import { bootVm, type Vm, type VmArch, type VmSeries } from "./lab.ts";

const HELP = `launch.ts — boot a VM and serve one bpfd session on stdin/stdout

Usage: deno run -A tests/vm/launch.ts --arch <aarch64|x86_64> --series <6.1|6.12>
         [--timeout SECONDS] [--quiet]

Options:
  --arch      guest architecture (uname -m name)
  --series    Debian kernel series: 6.1 (bookworm) or 6.12 (bookworm-backports)
  --timeout   hard limit on the VM's life (default 1200)
  --quiet     no progress lines on stderr
  -h, --help  this text`;

/** Parses the command line; exits with status 2 on a usage error. */
function options(): { arch: VmArch; series: VmSeries; timeoutMs: number; quiet: boolean } {
  let v;
  try {
    v = parseArgs({
      options: {
        arch: { type: "string" },
        series: { type: "string" },
        timeout: { type: "string" },
        quiet: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    console.error(`launch.ts: ${(e as Error).message}\n\n${HELP}`);
    Deno.exit(2);
  }
  if (v.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const arch = v.arch === "arm64" ? "aarch64" : v.arch === "amd64" ? "x86_64" : v.arch;
  if ((arch !== "aarch64" && arch !== "x86_64") || (v.series !== "6.1" && v.series !== "6.12")) {
    console.error(`launch.ts: --arch aarch64|x86_64 and --series 6.1|6.12 are required\n\n${HELP}`);
    Deno.exit(2);
  }
  const secs = Number(v.timeout ?? 1200);
  if (!(secs > 0)) {
    console.error("launch.ts: --timeout takes a positive number of seconds");
    Deno.exit(2);
  }
  return { arch, series: v.series, timeoutMs: secs * 1000, quiet: v.quiet ?? false };
}

async function main(): Promise<number> {
  const o = options();
  let vm: Vm | null = null;
  const stop = (code: number) => {
    (vm?.shutdown({ now: true }) ?? Promise.resolve()).finally(() => Deno.exit(code));
  };
  for (const [sig, n] of [["SIGTERM", 15], ["SIGINT", 2], ["SIGHUP", 1]] as const) {
    Deno.addSignalListener(sig, () => stop(128 + n));
  }
  try {
    vm = await bootVm({
      arch: o.arch,
      series: o.series,
      name: `launch-${Deno.pid}`,
      timeoutMs: o.timeoutMs,
      onProgress: o.quiet ? () => {} : (m) => console.error(`vm: ${m}`),
    });
  } catch (e) {
    console.error(`launch.ts: ${(e as Error).message}`);
    return 1;
  }
  try {
    const ch = vm.openChannel();
    // stdin EOF closes the session's writable: bpfd sees EOF (a last partial line still runs).
    Deno.stdin.readable.pipeTo(ch.writable).catch(() => {});
    await ch.readable.pipeTo(Deno.stdout.writable, { preventClose: true }).catch(() => {});
    const exit = await ch.exited!;
    if (exit.code === null) {
      console.error(`launch.ts: the session ended abnormally\n${exit.stderrTail}`);
    }
    return exit.code ?? 1;
  } finally {
    await vm.shutdown({ now: true });
  }
}

Deno.exit(await main());
