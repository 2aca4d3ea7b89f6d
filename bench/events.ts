/**
 * Event streaming: opensnoop's events per second through the process transport, without loss,
 * and the lost count when pushed past that.
 *
 * A C generator (`bench/c/opengen.c`) calls `openat()` on a missing path at a paced rate for a
 * few seconds; opensnoop's bundle (core, running kernel), filtered to the generator's pid,
 * sends one 304-byte record per call through per-CPU perf buffers (256 pages each, as the tool
 * uses; `--pages`). Two readers, one after the other, at each offered rate:
 *
 * - **protocol**: the runtime as a local child (process transport), read by the typed client
 *   with `PERF_READER_POLL` — what `opensnoop` does;
 * - **direct** (baseline, same run): the same object loaded and the same perf buffers read in
 *   this process with the runtime's own loader and reader, no protocol, no base64, no pipe.
 *
 * For each rate: events generated, received, lost (reported by the kernel), and whether the
 * stream was complete. The figure is the highest rate with no loss, as a ratio to the direct
 * reader's.
 *
 * ```sh
 * deno run -A bench/events.ts                # rates 10k … 400k/s and unpaced, 3 s each
 * deno run -A bench/events.ts --rates 50000 --seconds 5
 * ```
 * @module
 */

import { parseArgs } from "../artifacts/cli.ts";
import { readBundle } from "../artifacts/oci.ts";
import { parseObject } from "../artifacts/bpf_object.ts";
import { closeObject, loadObject } from "../runtime/loader/load.ts";
import { attachProgram, detachProgram } from "../runtime/loader/attach.ts";
import { PerfReader } from "../runtime/kernel/perf.ts";
import { mapUpdate } from "../runtime/kernel/bpf.ts";
import { libc } from "../runtime/kernel/ffi.ts";
import { onlineCpus } from "../runtime/kernel/target.ts";
import { BpfdClient } from "../tools/client/client.ts";
import { connectRemote } from "../tools/transport/remote.ts";
import { buildRunningBundles } from "../tools/client/bundle_build.ts";

const ROOT = new URL("../", import.meta.url).pathname;
let PAGES = 256;

/** One measurement. */
export interface EventsRow {
  reader: "protocol" | "direct";
  /** Offered rate (0 = unpaced). */
  target: number;
  generated: number;
  /** Generated events per second actually achieved. */
  offered: number;
  received: number;
  lost: number;
  complete: boolean;
}

async function buildGenerator(dir: string): Promise<string> {
  const bin = `${dir}/opengen`;
  const r = await new Deno.Command("gcc", {
    args: ["-O2", "-Wall", "-o", bin, `${ROOT}bench/c/opengen.c`],
    stderr: "piped",
  }).output();
  if (!r.success) throw new Error(`gcc opengen.c: ${new TextDecoder().decode(r.stderr)}`);
  return bin;
}

/** Starts the generator (waiting for "go" on stdin), pinned to the last CPU. */
function startGenerator(bin: string, rate: number, seconds: number) {
  const cpus = onlineCpus().cpus;
  const child = new Deno.Command("taskset", {
    args: ["-c", String(cpus[cpus.length - 1]), bin, String(rate), String(seconds)],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const out = new Response(child.stdout).text();
  const writer = child.stdin.getWriter();
  return {
    pid: child.pid,
    go: async () => {
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
    },
    done: (async () => {
      await child.status;
      const [n, ns] = (await out).trim().split(" ").map(Number);
      return { generated: n, seconds: ns / 1e9 };
    })(),
  };
}

/**
 * Counts what a reader got while the generator runs: `add` per batch; `over` once the generator
 * has exited and two batches in a row came back empty (the buffers are drained).
 */
function tally(gen: ReturnType<typeof startGenerator>) {
  const t = {
    received: 0,
    lost: 0,
    finished: false,
    quiet: 0,
    add(samples: number, lost: number) {
      t.received += samples;
      t.lost += lost;
      t.quiet = t.finished && samples + lost === 0 ? t.quiet + 1 : 0;
    },
    over: () => t.finished && t.quiet >= 2,
    done: gen.done.then((r) => {
      t.finished = true;
      return r;
    }),
  };
  return t;
}

async function viaProtocol(
  bin: string,
  bundle: string,
  rate: number,
  seconds: number,
): Promise<EventsRow> {
  const gen = startGenerator(bin, rate, seconds);
  const c = new BpfdClient(await connectRemote("local"), { clientName: "bench-events" });
  try {
    await c.hello();
    const up = await c.uploadBundle(bundle);
    const b = await c.loadBundle(up.path, { rodata: { targ_tgid: gen.pid } });
    const readers = await c.openPerfBuffers(b.maps.get("events")!.fd, PAGES);
    for (const p of b.progs.values()) {
      try {
        await c.attachProg(p.fd);
      } catch { /* openat2 is optional */ }
    }
    const t = tally(gen);
    await gen.go();
    await c.pollStream(100, (evs) => {
      let n = 0, lost = 0;
      for (const e of evs) e.kind === "lost" ? lost += e.count : n++;
      t.add(n, lost);
    }, { readers, stop: t.over });
    return row("protocol", rate, await t.done, t.received, t.lost);
  } finally {
    await c.close();
  }
}

async function direct(
  bin: string,
  bundle: string,
  rate: number,
  seconds: number,
): Promise<EventsRow> {
  const gen = startGenerator(bin, rate, seconds);
  const bun = await readBundle(bundle);
  const obj = bun.manifest.objects.find((o) => o.mode === "core")!;
  const loaded = loadObject(parseObject(bun.objects.get(obj.name)!, obj.name), {
    rodata: { targ_tgid: gen.pid },
  });
  const readers: PerfReader[] = [];
  const attached = [];
  try {
    const events = loaded.maps.events.fd;
    for (const cpu of onlineCpus().cpus) {
      const r = PerfReader.open(-1, cpu, PAGES);
      readers.push(r);
      const k = new Uint8Array(4), v = new Uint8Array(4);
      new DataView(k.buffer).setUint32(0, cpu, true);
      new DataView(v.buffer).setUint32(0, r.fd, true);
      mapUpdate(events, k, v, 0);
    }
    for (const p of Object.values(loaded.programs)) {
      try {
        attached.push(attachProgram(p));
      } catch { /* openat2 is optional */ }
    }
    const pfd = new Uint8Array(8 * readers.length);
    const dv = new DataView(pfd.buffer);
    readers.forEach((r, i) => {
      dv.setInt32(i * 8, r.fd, true);
      dv.setInt16(i * 8 + 4, 1, true); // POLLIN
    });
    const t = tally(gen);
    await gen.go();
    while (!t.over()) {
      // A short poll timeout keeps the event loop turning (the generator's exit is a promise).
      libc.poll(pfd, BigInt(readers.length), 10);
      let got = 0, lost = 0;
      for (const r of readers) {
        lost += r.drain(() => got++).lost; // a callback sees each sample in place, as the runtime does
      }
      t.add(got, lost);
      await new Promise((r) => setTimeout(r, 0));
    }
    return row("direct", rate, await t.done, t.received, t.lost);
  } finally {
    for (const a of attached) detachProgram(a);
    for (const r of readers) r.close();
    closeObject(loaded);
  }
}

function row(
  reader: EventsRow["reader"],
  target: number,
  g: { generated: number; seconds: number },
  received: number,
  lost: number,
): EventsRow {
  return {
    reader,
    target,
    generated: g.generated,
    offered: g.generated / g.seconds,
    received,
    lost,
    complete: lost === 0 && received === g.generated,
  };
}

/** Runs both readers at every rate; returns the rows. */
export async function benchEvents(
  rates: number[],
  seconds: number,
  say: (m: string) => void = () => {},
): Promise<EventsRow[]> {
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-bench-events-" });
  try {
    const bin = await buildGenerator(dir);
    await buildRunningBundles(["opensnoop"], dir);
    const bundle = `${dir}/opensnoop.oci.tar`;
    const rows: EventsRow[] = [];
    for (const rate of rates) {
      for (const f of [direct, viaProtocol]) {
        const r = await f(bin, bundle, rate, seconds);
        say(
          `${r.reader.padEnd(8)} target ${rate || "max"}/s: ${r.generated} generated ` +
            `(${Math.round(r.offered)}/s), ${r.received} received, ${r.lost} lost`,
        );
        rows.push(r);
      }
    }
    return rows;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function maxComplete(rows: EventsRow[], reader: EventsRow["reader"]): number {
  return Math.max(
    0,
    ...rows.filter((r) => r.reader === reader && r.complete).map((r) => r.offered),
  );
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      rates: { type: "string", default: "10000,25000,50000,100000,200000,400000,0" },
      seconds: { type: "string", default: "3" },
      pages: { type: "string", default: "256" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(`bench/events.ts — opensnoop events/s through the process transport vs in-process

Usage: deno run -A bench/events.ts [--rates LIST] [--seconds S] [--json]

  --rates LIST   offered open() rates per second, comma-separated; 0 = unpaced
                 (default 10000,25000,50000,100000,200000,400000,0)
  --seconds S    generation time per rate and reader (default 3)
  --pages N      perf buffer pages per CPU, a power of two (default 256, as opensnoop)
  --json         rows as JSON

Needs root, gcc and taskset. A benchmark, not a test: it always exits 0 when it could run.`);
    Deno.exit(0);
  }
  const rates = values.rates!.split(",").map(Number);
  PAGES = Number(values.pages);
  const rows = await benchEvents(rates, Number(values.seconds), (m) => console.error(m));
  if (values.json) console.log(JSON.stringify(rows));
  else {
    console.log("reader    target/s  offered/s  generated  received      lost  complete");
    for (const r of rows) {
      console.log(
        `${r.reader.padEnd(9)} ${String(r.target || "max").padStart(8)} ${
          String(Math.round(r.offered)).padStart(10)
        } ${String(r.generated).padStart(10)} ${String(r.received).padStart(9)} ${
          String(r.lost).padStart(9)
        }  ${r.complete ? "yes" : "no"}`,
      );
    }
    const p = maxComplete(rows, "protocol");
    const d = maxComplete(rows, "direct");
    console.log(
      `highest lossless rate: protocol ${Math.round(p)}/s, direct ${Math.round(d)}/s ` +
        `(ratio ${d ? (p / d).toFixed(2) : "n/a"}×; goal ≥ 50,000/s through the protocol)`,
    );
  }
}
