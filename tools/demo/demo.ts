/**
 * The demo session: starts `bpfd` on the running kernel (process transport),
 * reads the target's facts, attaches a tracepoint program on
 * `syscalls:sys_enter_openat` that sends each caller's pid through per-CPU
 * perf buffers, and prints live open events with the caller's comm, resolved
 * on the target. (The BCC-style tools replace this hand-assembled program.)
 *
 * @example
 * ```sh
 * deno run -A tools/demo/demo.ts --duration 5
 * ```
 * @module
 */

import { parseArgs } from "../../artifacts/cli.ts";
import { progs, u32b64 } from "../client/asm.ts";
import { RawClient, retOf } from "../client/raw.ts";

const HELP = `demo — a live session against bpfd on the running kernel

Usage: deno task main [--duration SECONDS] [--bpfd CMD...]

Starts the runtime, prints the target facts it reports (HELLO), attaches a
program to syscalls:sys_enter_openat and prints one line per open: time, pid,
comm (read on the target). Ctrl-C or --duration ends it; the runtime then
detaches everything.

Options:
  -d, --duration N   seconds to trace (default 5; 0 = until Ctrl-C)
  --help             this text`;

const ROOT = new URL("../../", import.meta.url).pathname;

async function must(c: RawClient, line: string): Promise<number> {
  const body = await c.send(line);
  const r = retOf(body);
  if (r === null || r < 0) {
    throw new Error(`${line.split(" ")[0]} failed:\n  ${body.join("\n  ")}`);
  }
  return r;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { duration: { type: "string", short: "d" }, help: { type: "boolean" } },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const duration = Number(values.duration ?? 5);
  if (!Number.isFinite(duration) || duration < 0) {
    console.error("demo: --duration needs a number of seconds");
    return 2;
  }
  const c = RawClient.spawn([Deno.execPath(), "run", "-A", `${ROOT}runtime/main.ts`]);
  let stop = false;
  const onInt = () => (stop = true);
  Deno.addSignalListener("SIGINT", onInt);
  try {
    const hello = await c.send("HELLO demo");
    if (hello[0] !== "hello: ret=0") throw new Error(`HELLO failed: ${hello.join(" | ")}`);
    const facts = new Map(
      hello.slice(1).map((l) => [l.split("=")[0], l.slice(l.indexOf("=") + 1)]),
    );
    console.log(
      `target: ${facts.get("arch")} ${facts.get("release")}, CPUs ${facts.get("online_cpus")}, ` +
        `BTF ${facts.get("btf")}, ringbuf ${facts.get("ringbuf")}, ${facts.get("runtime")}`,
    );
    const cpus = (facts.get("online_cpus") ?? "0").split(",").flatMap((r) => {
      const [a, b] = r.split("-").map(Number);
      return Array.from({ length: (b ?? a) - a + 1 }, (_, i) => a + i);
    });
    const ev = await must(c, `BPF_CREATE_MAP 4 events 4 4 ${Math.max(...cpus) + 1} 0`);
    const readers: number[] = [];
    for (const cpu of cpus) {
      const r = await must(c, `BPF_OPEN_PERF_BUFFER -1 ${cpu} 64`);
      await must(c, `BPF_UPDATE_ELEM ${ev} ${u32b64(cpu)} 4 ${u32b64(r)} 4 0`);
      readers.push(r);
    }
    const prog = progs.perfout(ev);
    const p = await must(c, `BPF_PROG_LOAD 5 demo_openat ${prog.length} GPL 0 ${prog.toBase64()}`);
    await must(c, `BPF_ATTACH_TRACEPOINT ${p} syscalls sys_enter_openat`);
    console.log(`tracing openat for ${duration || "∞"} s … (Ctrl-C to stop)`);
    console.log("TIME(s)   PID      COMM");
    const t0 = performance.now();
    const comms = new Map<number, string>();
    let events = 0;
    let lost = 0;
    while (!stop && (duration === 0 || performance.now() - t0 < duration * 1000)) {
      const lines = await c.send(`PERF_READER_POLL 250 ${readers.length} ${readers.join(" ")}`);
      for (const l of lines) {
        const [, size, data] = l.split(" ");
        if (size === "lost") {
          lost += Number(data);
          continue;
        }
        const pid = new DataView(Uint8Array.fromBase64(data).buffer).getUint32(4, true);
        if (!comms.has(pid)) {
          const r = await c.send(`COMM_FOR_PID ${pid}`);
          comms.set(pid, r[0] === "Open failed, ignoring" ? "?" : r[0]);
        }
        const t = ((performance.now() - t0) / 1000).toFixed(3).padStart(7);
        console.log(`${t}   ${String(pid).padEnd(8)} ${comms.get(pid)}`);
        events++;
      }
    }
    console.log(`${events} events${lost ? `, ${lost} lost` : ""}`);
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    await c.close();
  }
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`demo: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
