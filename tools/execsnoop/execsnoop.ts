/**
 * execsnoop: trace new processes (execve) on a target, like BCC's execsnoop. The BPF side is
 * `execsnoop.bpf.c`: it reads the file name and up to `--max-args` argv strings at syscall
 * entry, the parent's pid (`task->real_parent->tgid`, CO-RE-relocated in core mode, the kernel
 * tree's offsets in headers mode) on the target, and sends one record per exec at syscall exit.
 * The host side filters by comm (`-n`) and command line (`-l`) and prints BCC's columns.
 *
 * @example
 * ```sh
 * deno run -A tools/execsnoop/execsnoop.ts -d 5                  # the running kernel
 * deno run -A tools/execsnoop/execsnoop.ts -x -t -n '^sh$' --remote ssh:root@board --kernel debian:6.1:aarch64
 * ```
 * @module
 */

import { cstr, intFlag, runToolMain, type ToolDef, UsageError } from "../client/tool.ts";

/** Offset of `args` in `struct execsnoop_event` (execsnoop.h): the fixed part's size. */
export const EXECSNOOP_HEADER_SIZE = 56;
/** `EXECSNOOP_MAX_ARGS` (execsnoop.h): the most argv strings the BPF side reads. */
export const EXECSNOOP_MAX_ARGS = 16;

/** One decoded `struct execsnoop_event`. */
export interface ExecEvent {
  /** `bpf_ktime_get_ns()` at syscall exit (target clock). */
  ts: bigint;
  /** Process id (tgid). */
  pid: number;
  /** Parent's tgid, read on the target (0: unknown). */
  ppid: number;
  /** Real uid. */
  uid: number;
  /** 0, or -errno for a failed exec. */
  ret: number;
  /** comm after the exec (before it when the exec failed). */
  comm: string;
  /** The file name passed to execve, then argv[1], argv[2], … */
  args: string[];
  /** True when arguments were left out (`--max-args` or buffer space). */
  truncated: boolean;
}

/**
 * Decodes one sample (little-endian target).
 *
 * @example
 * ```ts
 * import { decodeExecEvent } from "./execsnoop.ts";
 * const b = new Uint8Array(64);
 * const dv = new DataView(b.buffer);
 * dv.setUint32(8, 42, true);
 * dv.setUint32(24, 1, true); // one string
 * dv.setUint32(28, 3, true); // of 3 bytes
 * b.set(new TextEncoder().encode("ls\0"), 56);
 * console.log(decodeExecEvent(b).args); // ["ls"]
 * ```
 */
export function decodeExecEvent(b: Uint8Array): ExecEvent {
  if (b.length < EXECSNOOP_HEADER_SIZE) {
    throw new Error(`execsnoop event too short: ${b.length} bytes`);
  }
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const count = dv.getUint32(24, true);
  const size = Math.min(dv.getUint32(28, true), b.length - EXECSNOOP_HEADER_SIZE);
  const args: string[] = [];
  const dec = new TextDecoder();
  let at = EXECSNOOP_HEADER_SIZE;
  const end = EXECSNOOP_HEADER_SIZE + size;
  while (args.length < count && at < end) {
    let z = b.indexOf(0, at);
    if (z < 0 || z > end) z = end;
    args.push(dec.decode(b.subarray(at, z)));
    at = z + 1;
  }
  return {
    ts: dv.getBigUint64(0, true),
    pid: dv.getUint32(8, true),
    ppid: dv.getUint32(12, true),
    uid: dv.getUint32(16, true),
    ret: dv.getInt32(20, true),
    comm: cstr(b.subarray(40, 56)),
    args,
    truncated: dv.getUint32(32, true) !== 0,
  };
}

/**
 * The ARGS column as BCC prints it: the strings joined by spaces, `...` for left-out arguments,
 * each in double quotes (inner quotes backslashed) with `quote`, newlines as `\n`.
 *
 * @example
 * ```ts
 * import { argsText } from "./execsnoop.ts";
 * console.log(argsText(["echo", 'say "hi"'], false, true)); // "echo" "say \"hi\""
 * ```
 */
export function argsText(args: string[], truncated: boolean, quote: boolean): string {
  const all = truncated ? [...args, "..."] : args;
  const shown = quote ? all.map((a) => `"${a.replaceAll('"', '\\"')}"`) : all;
  return shown.join(" ").replaceAll("\n", "\\n");
}

/** A regex flag, compiled; throws {@link UsageError} for a bad pattern. */
function regexFlag(v: unknown, name: string): RegExp | null {
  if (typeof v !== "string") return null;
  try {
    return new RegExp(v);
  } catch (e) {
    throw new UsageError(`--${name}: not a regular expression: ${(e as Error).message}`);
  }
}

const hms = (d: Date) =>
  [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");

/** The execsnoop tool. */
export const execsnoop: ToolDef = {
  name: "execsnoop",
  summary: "execsnoop — trace exec() syscalls on a target (BCC's execsnoop, remotely)",
  usage: "deno task tool execsnoop [options]   (or: deno run -A tools/execsnoop/execsnoop.ts)",
  optionHelp: `  -T, --time           print a time column (HH:MM:SS, host clock)
  -t, --timestamp      print a TIME(s) column (seconds since tracing started)
  -x, --fails          include failed exec()s
  -U, --print-uid      print a UID column
  -u, --uid UID        only this user (numeric uid on the target)
  -q, --quote          put "quotemarks" around arguments
  -n, --name REGEX     only commands whose comm matches REGEX
  -l, --line REGEX     only commands whose argument line matches REGEX
      --max-args N     read at most N strings (file name + argv[1..N-1]; 1-${EXECSNOOP_MAX_ARGS}, ` +
    `default ${EXECSNOOP_MAX_ARGS})`,
  epilog:
    `Columns: PCOMM PID PPID RET ARGS (RET is 0, or -errno for a failed exec; PPID is read on the
target, ? when unknown; ARGS ends in ... when arguments were left out).

Examples:
  deno task tool execsnoop -x            # include failed exec()s
  deno task tool execsnoop -t -q         # timestamps, quoted arguments
  deno task tool execsnoop -n main       # only comms matching "main"
  deno task tool execsnoop -l tpkg       # only command lines containing "tpkg"`,
  options: {
    time: { type: "boolean", short: "T" },
    timestamp: { type: "boolean", short: "t" },
    fails: { type: "boolean", short: "x" },
    "print-uid": { type: "boolean", short: "U" },
    uid: { type: "string", short: "u" },
    quote: { type: "boolean", short: "q" },
    name: { type: "string", short: "n" },
    line: { type: "string", short: "l" },
    "max-args": { type: "string" },
  },
  configure(v) {
    regexFlag(v.name, "name");
    regexFlag(v.line, "line");
    const rodata: Record<string, number | boolean> = { ignore_failed: v.fails !== true };
    const uid = intFlag(v, "uid");
    if (uid !== undefined) {
      if (uid >= 0xffffffff) throw new UsageError(`--uid ${uid} is not a uid`);
      rodata.targ_uid = uid;
    }
    const max = intFlag(v, "max-args");
    if (max !== undefined) {
      if (max < 1 || max > EXECSNOOP_MAX_ARGS) {
        throw new UsageError(
          `--max-args must be 1 to ${EXECSNOOP_MAX_ARGS} (EXECSNOOP_MAX_ARGS in execsnoop.h bounds ` +
            `what the BPF side reads), not ${max}`,
        );
      }
      rodata.max_args = max;
    }
    return { rodata };
  },
  async run(ctx) {
    const events = ctx.bundle.maps.get("events");
    if (!events) throw new Error("the bundle has no `events` map: is it an execsnoop bundle?");
    const readers = await ctx.client.openPerfBuffers(events.fd, 64);
    await ctx.attachAll();
    const o = ctx.bundle.object;
    ctx.status(
      `tracing exec() on ${o.arch} ${o.release} (${o.mode} object)` +
        `${ctx.durationMs ? ` for ${ctx.durationMs / 1000} s` : ""}; Ctrl-C to end`,
    );
    const v = ctx.values;
    const name = regexFlag(v.name, "name");
    const line = regexFlag(v.line, "line");
    const quote = v.quote === true;
    const time = v.time === true;
    const stamp = v.timestamp === true;
    const uidCol = v["print-uid"] === true;
    if (!ctx.json) {
      ctx.print(
        `${time ? "TIME     " : ""}${stamp ? "TIME(s) " : ""}${uidCol ? "UID   " : ""}` +
          `${"PCOMM".padEnd(16)} ${"PID".padEnd(7)} ${"PPID".padEnd(7)} RET ARGS`,
      );
    }
    await ctx.pollLoop(readers, (data) => {
      const e = decodeExecEvent(data);
      if (name && !name.test(e.comm)) return;
      if (line && !line.test(e.args.join(" "))) return;
      if (ctx.json) return ctx.print(JSON.stringify({ ...e, ts: Number(e.ts) }));
      const cols = [
        time ? `${hms(new Date()).padEnd(9)}` : "",
        stamp ? `${(ctx.elapsedMs() / 1000).toFixed(3).padEnd(8)}` : "",
        uidCol ? `${String(e.uid).padEnd(6)}` : "",
      ].join("");
      ctx.print(
        `${cols}${e.comm.padEnd(16)} ${String(e.pid).padEnd(7)} ` +
          `${(e.ppid > 0 ? String(e.ppid) : "?").padEnd(7)} ${String(e.ret).padStart(3)} ` +
          argsText(e.args, e.truncated, quote),
      );
    });
  },
};

if (import.meta.main) await runToolMain(execsnoop);
