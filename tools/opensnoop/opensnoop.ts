/**
 * opensnoop: trace open() calls on a target, like BCC's opensnoop. The BPF
 * side is `opensnoop.bpf.c`, compiled on the host by the compiler stage into
 * a bundle (built on first use and cached), uploaded to the target's runtime
 * (not re-sent when the device has it) and loaded there; events come back
 * through per-CPU perf buffers of the target's online CPUs.
 *
 * @example
 * ```sh
 * deno run -A tools/opensnoop/opensnoop.ts -d 5            # the running kernel
 * deno run -A tools/opensnoop/opensnoop.ts -p 1234 -x --json --remote ssh:root@board
 * ```
 * @module
 */

import { parseArgs } from "../../artifacts/cli.ts";
import { BpfdClient } from "../client/client.ts";
import { connectRemote } from "../transport/remote.ts";
import { buildRunningBundles } from "../client/bundle_build.ts";

const HELP = `opensnoop — trace open() syscalls on a target (BCC's opensnoop, remotely)

Usage: deno task tool opensnoop [options]   (or: deno run -A tools/opensnoop/opensnoop.ts)

Options:
  -p, --pid PID        only this process
  -t, --tid TID        only this thread
  -u, --uid UID        only this user
  -x, --failed         only failed opens
  -d, --duration SECS  stop after SECS seconds (default: until Ctrl-C)
  -T, --timestamp      print a timestamp column
      --json           one JSON object per event
      --remote SPEC    where bpfd runs: local (default), ssh:[user@]host[:port][,key=…][,bpfd=CMD],
                       adb:[serial][,su][,bpfd=PATH]
      --bundle PATH    use this bundle (.oci dir or .tar) instead of building one
  -h, --help           this text

Columns: PID COMM FD ERR PATH (FD is -1 and ERR the errno when the open failed).`;

const ROOT = new URL("../../", import.meta.url).pathname;
const EVENT_SIZE = 304; // struct opensnoop_event (opensnoop.h)

/** One decoded `struct opensnoop_event`. */
export interface OpenEvent {
  ts: bigint;
  pid: number;
  tid: number;
  uid: number;
  ret: number;
  flags: number;
  comm: string;
  path: string;
}

function cstr(b: Uint8Array): string {
  const z = b.indexOf(0);
  return new TextDecoder().decode(z < 0 ? b : b.subarray(0, z));
}

/** Decodes one sample (little-endian target). */
export function decodeOpenEvent(b: Uint8Array): OpenEvent {
  if (b.length < EVENT_SIZE) throw new Error(`opensnoop event too short: ${b.length} bytes`);
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  return {
    ts: dv.getBigUint64(0, true),
    pid: dv.getUint32(8, true),
    tid: dv.getUint32(12, true),
    uid: dv.getUint32(16, true),
    ret: dv.getInt32(20, true),
    flags: dv.getInt32(24, true),
    comm: cstr(b.subarray(32, 48)),
    path: cstr(b.subarray(48, 304)),
  };
}

/** Builds (or reuses from the compiler's cache) the opensnoop bundle for the running kernel. */
async function buildBundle(): Promise<string> {
  console.error(
    "opensnoop: building the BPF bundle for this kernel (cached after the first time)…",
  );
  return `${await buildRunningBundles(["opensnoop"], `${ROOT}.cache/tools`)}/opensnoop.oci.tar`;
}

async function main(): Promise<number> {
  const { values: v } = parseArgs({
    args: Deno.args,
    options: {
      pid: { type: "string", short: "p" },
      tid: { type: "string", short: "t" },
      uid: { type: "string", short: "u" },
      failed: { type: "boolean", short: "x" },
      duration: { type: "string", short: "d" },
      timestamp: { type: "boolean", short: "T" },
      json: { type: "boolean" },
      remote: { type: "string" },
      bundle: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const num = (name: string, s: string | undefined) => {
    if (s === undefined) return undefined;
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} needs a non-negative integer`);
    return n;
  };
  const rodata: Record<string, number | boolean> = {};
  const pid = num("pid", v.pid);
  const tid = num("tid", v.tid);
  const uid = num("uid", v.uid);
  if (pid !== undefined) rodata.targ_tgid = pid;
  if (tid !== undefined) rodata.targ_tid = tid;
  if (uid !== undefined) rodata.targ_uid = uid;
  if (v.failed) rodata.targ_failed = true;
  const duration = v.duration === undefined ? 0 : Number(v.duration);
  if (!Number.isFinite(duration) || duration < 0) throw new Error("--duration needs seconds");

  const bundle = v.bundle ?? await buildBundle();
  const raw = await connectRemote(v.remote ?? "local", { timeoutMs: 30_000 });
  const c = new BpfdClient(raw, { clientName: "opensnoop 0.1.0" });
  let stop = false;
  const onInt = () => (stop = true);
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onInt);
  try {
    await c.hello();
    const up = await c.uploadBundle(bundle);
    const loaded = await c.loadBundle(up.path, { rodata });
    const events = loaded.maps.get("events");
    if (!events) throw new Error("the bundle has no `events` map");
    const readers = await c.openPerfBuffers(events.fd, 64);
    for (const p of loaded.progs.values()) {
      try {
        await c.attachProg(p.fd);
      } catch (e) {
        if (!p.name.includes("openat2")) throw e; // openat2 is optional (kernels < 5.6)
      }
    }
    console.error(
      `opensnoop: tracing open() on ${loaded.object.arch} ${loaded.object.release} ` +
        `(${loaded.object.mode} object)${duration ? ` for ${duration} s` : ""}; Ctrl-C to end`,
    );
    if (!v.json) {
      console.log(`${v.timestamp ? "TIME(s)    " : ""}PID      COMM             FD  ERR PATH`);
    }
    const t0 = performance.now();
    let lost = 0;
    while (!stop && (duration === 0 || performance.now() - t0 < duration * 1000)) {
      for (const ev of await c.poll(200, readers)) {
        if (ev.kind === "lost") {
          lost += ev.count;
          continue;
        }
        const e = decodeOpenEvent(ev.data);
        if (v.json) {
          console.log(JSON.stringify({ ...e, ts: Number(e.ts) }));
          continue;
        }
        const fd = e.ret >= 0 ? e.ret : -1;
        const err = e.ret >= 0 ? 0 : -e.ret;
        const ts = v.timestamp ? `${((performance.now() - t0) / 1000).toFixed(3).padEnd(10)} ` : "";
        console.log(
          `${ts}${String(e.pid).padEnd(8)} ${e.comm.padEnd(16)} ${String(fd).padStart(3)} ` +
            `${String(err).padStart(4)} ${e.path}`,
        );
      }
    }
    if (lost) console.error(`opensnoop: ${lost} events lost (the target could not keep up)`);
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onInt);
    await c.close(); // the runtime detaches and closes everything it created
  }
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`opensnoop: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
