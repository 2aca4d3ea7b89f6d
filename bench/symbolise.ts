/**
 * Symbolisation benchmark: resolve 10,000 stack frames against a local runtime over the process
 * transport, (a) batched through the typed client (`BpfdClient.ksyms` / `usyms`: every distinct
 * address of a batch in one pipelined write, one round trip per batch) vs (b) one
 * `GET_KSYM_NAME` / `GET_USYM_NAME` round trip per frame, which is how the original BPFd was
 * driven. (b) is the baseline, measured in the same run on the same frames; every figure is a
 * ratio to it.
 *
 * Frames: kernel addresses are text symbols of `/proc/kallsyms` plus an offset inside the
 * symbol; user addresses are functions of libc and of a test binary (compiled with gcc into a
 * temporary directory) plus an offset, as mapped in that binary's live process. All frames are
 * distinct addresses, drawn with a fixed seed. Both ways must return the same symbols.
 *
 * Cache effects are reported apart:
 * - *cold runtime*: a fresh runtime process (it parses kallsyms and the ELF symbol tables on
 *   first use), a fresh client; one sample each for (a) and (b), each in its own runtime;
 * - *warm runtime*: the same runtime again with a fresh client cache (what a second profile run
 *   against a long-lived runtime pays); median of `--reps` alternating rounds;
 * - *client cache*: (a) repeated on the same client: every address is cached, no round trip.
 *
 * Not a test: nothing fails on a slow figure. Needs gcc; no root (no `bpf()` calls).
 *
 * @example
 * ```sh
 * deno run -A bench/symbolise.ts                 # 10,000 frames, about 10-20 s
 * deno run -A bench/symbolise.ts --frames 2000 --reps 5 --json
 * ```
 * @module
 */

import { parseArgs } from "../artifacts/cli.ts";
import { RawClient } from "../tools/client/raw.ts";
import { BpfdClient } from "../tools/client/client.ts";
import { ElfFile, ElfSectionIndex, ElfSymbolType } from "../artifacts/elf.ts";
import { resolveName } from "../runtime/symbols/usym.ts";
import { runtimeCommand } from "./native.ts";
import { fmtNum, fmtRatio, median, type Row, row, table } from "./stats.ts";

const HELP = `bench/symbolise.ts — batched vs per-frame symbolisation through the runtime

Usage: deno run -A bench/symbolise.ts [options]

Options:
  --frames N        stack frames to symbolise (default 10000, all distinct addresses)
  --kernel-share F  fraction of kernel frames (default 0.6; the rest are user frames)
  --reps N          warm-runtime rounds of (a) and (b), alternating (default 3)
  --seed N          PRNG seed for picking the frames (default 1)
  --json            one JSON document instead of the table
  -q, --quiet       no progress messages on stderr
  -h, --help        this text

Needs gcc (a test binary whose process holds the user frames). No root needed.`;

/** One frame to symbolise. */
interface Frame {
  kind: "kernel" | "user";
  addr: bigint;
}

/** Deterministic PRNG (mulberry32) in [0, 1). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Kernel text symbols with the distance to the next symbol (the room for offsets). */
function kernelText(): { addr: bigint; span: number }[] {
  const syms: bigint[] = [];
  for (const l of Deno.readTextFileSync("/proc/kallsyms").split("\n")) {
    const f = l.split(/\s+/);
    if (f.length >= 3 && /^[tT]$/.test(f[1]) && !f[3]) syms.push(BigInt(`0x${f[0]}`));
  }
  const sorted = [...new Set(syms)].filter((a) => a !== 0n).sort((a, b) =>
    a < b ? -1 : a > b ? 1 : 0
  );
  if (sorted.length < 2) {
    throw new Error(
      "/proc/kallsyms shows no kernel text addresses: run as root (or set kernel.kptr_restrict=0)",
    );
  }
  const out: { addr: bigint; span: number }[] = [];
  for (let i = 0; i + 1 < sorted.length; i++) {
    const span = Number(sorted[i + 1] - sorted[i]);
    if (span > 0 && span < 1 << 20) out.push({ addr: sorted[i], span });
  }
  return out;
}

/** The test binary: many small functions, then it waits to be killed. */
function binarySource(n: number): string {
  const fns = Array.from(
    { length: n },
    (_, i) =>
      `__attribute__((noinline)) int bpfpack_bench_fn_${i}(int x) { ` +
      `__asm__ volatile(""); return x * ${i + 3} + ${i}; }`,
  );
  const calls = Array.from({ length: n }, (_, i) => `s += bpfpack_bench_fn_${i}(s);`);
  return `#include <unistd.h>
${fns.join("\n")}
int main(void) { int s = 1; ${calls.join(" ")} if (s == 42) return 1; for (;;) pause(); }
`;
}

/** Function symbols of an ELF file (defined, sized), by name. */
function functionsOf(path: string): { name: string; size: number }[] {
  const elf = ElfFile.open(path);
  const table = elf.section(".symtab") ? ".symtab" : ".dynsym";
  const seen = new Set<string>();
  return elf.symbols(table).filter((s) => {
    const ok = s.type === ElfSymbolType.FUNC && s.size > 0 && s.name !== "" &&
      s.shndx !== ElfSectionIndex.UNDEF && !seen.has(s.name);
    seen.add(s.name);
    return ok;
  }).map((s) => ({ name: s.name, size: s.size }));
}

/** The mapped path of `what` (a substring) in `/proc/<pid>/maps`. */
function mappedPath(pid: number, what: RegExp): string {
  for (const l of Deno.readTextFileSync(`/proc/${pid}/maps`).split("\n")) {
    const path = l.split(/\s+/).slice(5).join(" ");
    if (what.test(path)) return path;
  }
  throw new Error(`process ${pid} maps nothing matching ${what}`);
}

/** Picks `n` distinct frames: kernel text + offsets, and user functions + offsets in `pid`. */
function pickFrames(n: number, kernelShare: number, pid: number, binary: string, seed: number) {
  const rnd = prng(seed);
  const ktext = kernelText();
  const frames: Frame[] = [];
  const seen = new Set<string>();
  const nk = Math.round(n * kernelShare);
  for (let guard = 0; frames.length < nk && guard < nk * 20; guard++) {
    const s = ktext[Math.floor(rnd() * ktext.length)];
    const addr = s.addr + BigInt(Math.floor(rnd() * Math.min(s.span, 4096)));
    if (seen.has(`k${addr}`)) continue;
    seen.add(`k${addr}`);
    frames.push({ kind: "kernel", addr });
  }
  const libc = mappedPath(pid, /\/libc(-[^/]*)?\.so/);
  const modules = [binary, libc].map((path) => ({ path, fns: functionsOf(path) }));
  const nu = n - frames.length;
  let guard = 0;
  while (frames.length < n && guard++ < nu * 20) {
    // A third of the user frames in the test binary, the rest in libc.
    const m = rnd() < 1 / 3 ? modules[0] : modules[1];
    const f = m.fns[Math.floor(rnd() * m.fns.length)];
    const base = resolveName(pid, f.name, m.path);
    if (base === null) continue;
    const addr = base + BigInt(Math.floor(rnd() * f.size));
    if (seen.has(`u${addr}`)) continue;
    seen.add(`u${addr}`);
    frames.push({ kind: "user", addr });
  }
  if (frames.length < n) throw new Error(`found only ${frames.length} distinct frames of ${n}`);
  // Interleave kernel and user frames as stacks would.
  for (let i = frames.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [frames[i], frames[j]] = [frames[j], frames[i]];
  }
  return { frames, libc };
}

/** A runtime process with round-trip and command counters on its raw client. */
function startRuntime() {
  const raw = RawClient.spawn(runtimeCommand(), { stderr: "null", timeoutMs: 120_000 });
  const count = { trips: 0, commands: 0 };
  const pipeline = raw.pipeline.bind(raw);
  const send = raw.send.bind(raw);
  raw.pipeline = (lines: string[], t?: number) => {
    count.trips++;
    count.commands += lines.length;
    return pipeline(lines, t);
  };
  raw.send = (line: string, t?: number) => {
    count.trips++;
    count.commands++;
    return send(line, t);
  };
  return { raw, count };
}

type Result = { ms: number; trips: number; commands: number; names: (string | null)[] };

/** (a): all kernel frames in one batch, the user frames of the process in another. */
async function batched(
  client: BpfdClient,
  rt: ReturnType<typeof startRuntime>,
  frames: Frame[],
  pid: number,
): Promise<Result> {
  const before = { ...rt.count };
  const t0 = performance.now();
  const k = await client.ksyms(frames.filter((f) => f.kind === "kernel").map((f) => f.addr));
  const u = await client.usyms(pid, frames.filter((f) => f.kind === "user").map((f) => f.addr));
  const ms = performance.now() - t0;
  return {
    ms,
    trips: rt.count.trips - before.trips,
    commands: rt.count.commands - before.commands,
    names: frames.map((f) => (f.kind === "kernel" ? k : u).get(f.addr)?.name ?? null),
  };
}

/** (b): one round trip per frame, as the original BPFd was driven. */
async function perFrame(
  rt: ReturnType<typeof startRuntime>,
  frames: Frame[],
  pid: number,
): Promise<Result> {
  const before = { ...rt.count };
  const names: (string | null)[] = [];
  const t0 = performance.now();
  for (const f of frames) {
    const body = await rt.raw.send(
      f.kind === "kernel" ? `GET_KSYM_NAME ${f.addr}` : `GET_USYM_NAME ${pid} ${f.addr} 1`,
    );
    names.push(
      /ret=0$/.test(body[0] ?? "") ? (/^(.*);-?\d+;/.exec(body[1] ?? "")?.[1] ?? null) : null,
    );
  }
  const ms = performance.now() - t0;
  return {
    ms,
    trips: rt.count.trips - before.trips,
    commands: rt.count.commands - before.commands,
    names,
  };
}

function sameNames(a: Result, b: Result, what: string): void {
  const diff = a.names.findIndex((n, i) => n !== b.names[i]);
  if (diff >= 0) {
    throw new Error(
      `${what}: frame ${diff} resolved to ${a.names[diff]} batched but ${b.names[diff]} per frame`,
    );
  }
}

async function main(): Promise<number> {
  let v;
  try {
    v = parseArgs({
      args: Deno.args,
      strict: true,
      options: {
        frames: { type: "string", default: "10000" },
        "kernel-share": { type: "string", default: "0.6" },
        reps: { type: "string", default: "3" },
        seed: { type: "string", default: "1" },
        json: { type: "boolean" },
        quiet: { type: "boolean", short: "q" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    console.error(`symbolise: ${(e as Error).message} (see --help)`);
    return 2;
  }
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const n = Number(v.frames);
  const share = Number(v["kernel-share"]);
  const reps = Number(v.reps);
  const seed = Number(v.seed);
  if (!(Number.isInteger(n) && n > 0) || !(share >= 0 && share <= 1) || !(reps >= 1)) {
    console.error("symbolise: --frames and --reps need positive integers, --kernel-share 0..1");
    return 2;
  }
  const log = v.quiet ? () => {} : (m: string) => console.error(`[symbolise] ${m}`);
  const t0 = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-bench-sym-" });
  let child: Deno.ChildProcess | null = null;
  const runtimes: ReturnType<typeof startRuntime>[] = [];
  try {
    await Deno.writeTextFile(`${dir}/bench_target.c`, binarySource(200));
    const cc = await new Deno.Command("gcc", {
      args: ["-g", "-O1", "-o", `${dir}/bench_target`, `${dir}/bench_target.c`],
    }).output();
    if (!cc.success) throw new Error(`gcc failed: ${new TextDecoder().decode(cc.stderr)}`);
    child = new Deno.Command(`${dir}/bench_target`, { stdout: "null", stderr: "null" }).spawn();
    const pid = child.pid;
    for (let i = 0; i < 100 && !/libc/.test(Deno.readTextFileSync(`/proc/${pid}/maps`)); i++) {
      await new Promise((r) => setTimeout(r, 10)); // until the loader has mapped libc
    }
    const { frames, libc } = pickFrames(n, share, pid, `${dir}/bench_target`, seed);
    const nk = frames.filter((f) => f.kind === "kernel").length;
    log(
      `${frames.length} frames: ${nk} kernel, ${frames.length - nk} user (test binary + ${libc})`,
    );

    // Cold runtimes: one fresh process each, so each pays the first kallsyms / ELF parse.
    const coldA = startRuntime();
    runtimes.push(coldA);
    await coldA.raw.send("HELLO bench-symbolise"); // start-up is not timed
    const a = new BpfdClient(coldA.raw);
    const aCold = await batched(a, coldA, frames, pid);
    log(`cold (a) batched: ${aCold.ms.toFixed(0)} ms in ${aCold.trips} round trips`);
    const aCached = await batched(a, coldA, frames, pid);
    const coldB = startRuntime();
    runtimes.push(coldB);
    await coldB.raw.send("HELLO bench-symbolise");
    const bCold = await perFrame(coldB, frames, pid);
    log(`cold (b) per frame: ${bCold.ms.toFixed(0)} ms in ${bCold.trips} round trips`);
    sameNames(aCold, bCold, "cold");
    sameNames(aCached, bCold, "cached");

    // Warm runtime, fresh client cache each round; alternate so background load hits both.
    const warmA: Result[] = [];
    const warmB: Result[] = [];
    for (let i = 0; i < reps; i++) {
      warmB.push(await perFrame(coldA, frames, pid));
      warmA.push(await batched(new BpfdClient(coldA.raw), coldA, frames, pid));
      sameNames(warmA[i], warmB[i], `warm round ${i + 1}`);
      log(
        `warm round ${i + 1}: (a) ${warmA[i].ms.toFixed(0)} ms, (b) ${warmB[i].ms.toFixed(0)} ms`,
      );
    }
    const mA = median(warmA.map((r) => r.ms));
    const mB = median(warmB.map((r) => r.ms));
    const resolved = aCold.names.filter((x) => x !== null).length;
    const rows: (Row & { trips: number; commands: number; baseTrips: number | null })[] = [
      {
        ...row({
          bench: "symbolise",
          metric: "(a) batched, cold runtime (first run)",
          unit: "ms",
          value: aCold.ms,
          baseline: bCold.ms,
          baselineName: "(b) one round trip per frame, cold runtime",
          note: "both runtimes parse kallsyms and the ELF symbol tables on first use",
        }),
        trips: aCold.trips,
        commands: aCold.commands,
        baseTrips: bCold.trips,
      },
      {
        ...row({
          bench: "symbolise",
          metric: "(a) batched, warm runtime",
          unit: "ms",
          value: mA,
          baseline: mB,
          baselineName: "(b) one round trip per frame, warm runtime",
          note: `median of ${reps} alternating rounds; fresh client cache each round`,
        }),
        trips: warmA[0].trips,
        commands: warmA[0].commands,
        baseTrips: warmB[0].trips,
      },
      {
        ...row({
          bench: "symbolise",
          metric: "(a) batched, client cache hit",
          unit: "ms",
          value: aCached.ms,
          baseline: mA,
          baselineName: "(a) batched, warm runtime, empty client cache",
          note: "the same frames again on the same client: no command is sent",
        }),
        trips: aCached.trips,
        commands: aCached.commands,
        baseTrips: warmA[0].trips,
      },
    ];
    const seconds = (performance.now() - t0) / 1000;
    if (v.json) {
      console.log(JSON.stringify(
        {
          frames: frames.length,
          kernelFrames: nk,
          userFrames: frames.length - nk,
          resolved,
          seconds,
          rows,
          raw: {
            warmBatchedMs: warmA.map((r) => r.ms),
            warmPerFrameMs: warmB.map((r) => r.ms),
          },
        },
        null,
        2,
      ));
    } else {
      console.log(table(
        ["bench", "metric", "time", "round trips", "baseline", "baseline trips", "ratio"],
        rows.map((r) => [
          r.bench,
          r.metric,
          `${fmtNum(r.value)} ms`,
          String(r.trips),
          r.baseline === null ? "-" : `${fmtNum(r.baseline)} ms`,
          r.baseTrips === null ? "-" : String(r.baseTrips),
          fmtRatio(r.ratio),
        ]),
      ));
      console.log(
        `\nBatching is ${(bCold.ms / aCold.ms).toFixed(1)}× faster on a cold runtime and ` +
          `${(mB / mA).toFixed(1)}× on a warm one (${warmB[0].trips} round trips → ` +
          `${warmA[0].trips}); the client cache answers a repeat in ${fmtNum(aCached.ms)} ms.`,
      );
      console.log("\nBaselines and notes:");
      for (const r of rows) console.log(`  ${r.metric}: baseline = ${r.baselineName}; ${r.note}`);
      console.log(
        `\n${frames.length} frames (${nk} kernel, ${
          frames.length - nk
        } user; ${resolved} resolved, same symbols both ways) in ${seconds.toFixed(1)} s on ` +
          `Linux ${Deno.osRelease()}, ${navigator.hardwareConcurrency} CPUs, Deno ${Deno.version.deno}`,
      );
    }
    return 0;
  } catch (e) {
    console.error(`symbolise: ${(e as Error).stack ?? e}`);
    return 1;
  } finally {
    for (const rt of runtimes) await rt.raw.close().catch(() => null);
    if (child) {
      child.kill("SIGKILL");
      await child.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) Deno.exit(await main());
