/**
 * The VM tests, defined once and run per kernel by `tests/vm/<arch>_<series>_test.ts`: one VM
 * is booted per test file, every test opens its own bpfd session(s) in it over the qemu
 * transport, and the action agent makes the guest do what is traced. Each test records its
 * duration; the last one shuts the VM down and prints the timings on stderr.
 *
 * Skipped only when a real prerequisite is absent: the qemu system emulator for the arch, or
 * both the Debian archive and a cached kernel (a fresh machine offline).
 *
 * @example
 * ```ts
 * import { vmSuite } from "./suite.ts";
 * await vmSuite("aarch64", "6.1");
 * ```
 * @module
 */

import assert from "../support/assert.ts";
import {
  BpfdClient,
  BpfdError,
  type LoadedBundle,
  type Reader,
} from "../../tools/client/client.ts";
import { connectRemote } from "../../tools/transport/remote.ts";
import { progs } from "../../tools/client/asm.ts";
import { decodeOpenEvent } from "../../tools/opensnoop/opensnoop.ts";
import { probeDebianArchive } from "../../compiler/kernels/mod.ts";
import { funccount } from "../../tools/funccount/funccount.ts";
import { runTool } from "../../tools/client/tool.ts";
import { bootVm, qemuMissing, type Vm, type VmArch, type VmSeries, writeLauncher } from "./lab.ts";
import { vmBundles } from "./bundles.ts";
import { vmCacheDir } from "./runtime_assets.ts";

/** Options of {@link vmSuite}. */
export interface SuiteOptions {
  /** Also run a host tool CLI in another process through the launcher script (boots a 2nd VM). */
  launcher?: boolean;
}

const dec = new TextDecoder();

/** Why the suite of (arch, series) cannot run here, or null. */
async function skipReason(arch: VmArch, series: VmSeries): Promise<string | null> {
  const q = qemuMissing(arch);
  if (q) return q;
  // A cached guest kernel of the series means the lab can run without the archive.
  try {
    for await (const e of Deno.readDir(`${vmCacheDir()}/kernels/${arch}`)) {
      if (e.isDirectory && e.name.startsWith(`${series}.`)) return null;
    }
  } catch { /* nothing cached */ }
  const probe = await probeDebianArchive();
  return probe.reachable
    ? null
    : `the Debian archive is unreachable and no ${series} ${arch} kernel is cached (${probe.detail})`;
}

/** The kernel symbol of the sync(2) syscall on `arch`. */
function syncSymbol(arch: VmArch): string {
  return arch === "aarch64" ? "__arm64_sys_sync" : "__x64_sys_sync";
}

/** Polls `readers` until `found` holds or `ms` pass; returns the samples seen. */
async function collect(
  bpfd: BpfdClient,
  readers: Reader[],
  found: (samples: Uint8Array[]) => boolean,
  ms = 20_000,
): Promise<Uint8Array[]> {
  const seen: Uint8Array[] = [];
  const end = Date.now() + ms;
  while (!found(seen) && Date.now() < end) {
    for (const ev of await bpfd.poll(500, readers)) if (ev.kind === "sample") seen.push(ev.data);
  }
  return seen;
}

/** The first line of an agent answer as a pid. */
function pidOf(out: string): number {
  const pid = Number(out.split("\n")[0]);
  assert.ok(Number.isInteger(pid) && pid > 1, `a pid on the first line of ${JSON.stringify(out)}`);
  return pid;
}

/** Loads a bundle and opens per-CPU perf buffers on its `events` map; attaches every program. */
async function loadAndAttach(
  bpfd: BpfdClient,
  path: string,
  mode: "core" | "headers",
): Promise<{ bundle: LoadedBundle; readers: Reader[] }> {
  const bundle = await bpfd.loadBundle(path, { mode });
  const events = bundle.maps.get("events");
  assert.ok(events, "the bundle has an events map");
  const readers = await bpfd.openPerfBuffers(events.fd, 16);
  for (const p of bundle.progs.values()) await bpfd.attachProg(p.fd);
  return { bundle, readers };
}

/**
 * Defines the VM tests for one kernel (see the module doc).
 *
 * @example
 * ```ts
 * import { vmSuite } from "./suite.ts";
 * await vmSuite("x86_64", "6.12");
 * ```
 */
export async function vmSuite(
  arch: VmArch,
  series: VmSeries,
  opts: SuiteOptions = {},
): Promise<void> {
  const label = `vm ${arch} ${series}`;
  const skip = await skipReason(arch, series);
  if (skip) console.warn(`${label}: the VM tests are skipped: ${skip}`);
  let booted: Promise<Vm> | null = null;
  const vm = () => booted ??= bootVm({ arch, series });
  /** A session on the VM, closed (and checked to end cleanly) after `fn`. */
  const session = async <T>(fn: (bpfd: BpfdClient) => Promise<T>): Promise<T> => {
    const bpfd = new BpfdClient(await (await vm()).connect(), { clientName: "vm-test" });
    let ok = false;
    try {
      await bpfd.hello();
      const r = await fn(bpfd);
      ok = true;
      return r;
    } finally {
      const code = await bpfd.close();
      if (ok) assert.equal(code, 0, "the guest's bpfd ended the session cleanly");
    }
  };
  const define = (name: string, fn: (v: Vm) => Promise<void>) => {
    Deno.test({
      name: `${label}: ${name}`,
      ignore: skip !== null,
      // One VM (a child process and its streams) spans all tests of the file.
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async () => {
        const v = await vm();
        await v.time(name, () => fn(v));
      },
    });
  };

  define("HELLO over the qemu transport reports the guest's arch and cloud release", async (v) => {
    // Through the spec a host tool would use (--remote qemu:NAME), not the VM object.
    const bpfd = new BpfdClient(
      await connectRemote(v.remote, { connectTimeoutMs: 120_000, timeoutMs: 120_000 }),
    );
    const facts = await bpfd.hello();
    assert.equal(await bpfd.close(), 0);
    assert.equal(facts.arch, arch);
    assert.equal(facts.release, v.facts.release);
    assert.match(facts.release!, arch === "aarch64" ? /-cloud-arm64$/ : /-cloud-amd64$/);
    assert.ok(facts.release!.startsWith(`${series}.`), facts.release!);
    assert.equal(facts.features.btf, true, "the cloud kernels have BTF");
    assert.ok(facts.features.kprobe_pmu || facts.features.kprobe_events, "and kprobes");
    const uname = await v.sh("uname -m; uname -r");
    assert.deepEqual(uname.out.trim().split("\n"), [arch, v.facts.release]);
    // The compiler resolves the very same kernel for --kernel debian:<series>:<arch>.
    assert.equal((await vmBundles(arch, series)).release, v.facts.release);
  });

  define("opensnoop (core bundle) reports the file the agent opened, with its pid", async (v) => {
    const b = await vmBundles(arch, series);
    await session(async (bpfd) => {
      const up = await bpfd.uploadBundle(b.tar("opensnoop"));
      const { bundle, readers } = await loadAndAttach(bpfd, up.path, "core");
      assert.equal(bundle.object.mode, "core");
      assert.equal(bundle.object.arch, arch);
      const file = `/tmp/opensnoop-${crypto.randomUUID().slice(0, 8)}`;
      assert.equal((await v.sh(`echo hello >${file}`)).code, 0);
      const r = await v.sh(`sh -c 'echo $$; exec cat ${file}'`);
      assert.equal(r.code, 0, r.out);
      assert.equal(r.out.split("\n")[1], "hello");
      const pid = pidOf(r.out);
      const mine = (s: Uint8Array) => {
        const e = decodeOpenEvent(s);
        return e.path === file && e.pid === pid;
      };
      const seen = await collect(bpfd, readers, (all) => all.some(mine));
      const ev = seen.find(mine);
      assert.ok(ev, `an open of ${file} by pid ${pid} among ${seen.length} events`);
      const e = decodeOpenEvent(ev);
      assert.ok(e.ret >= 0, `opened: ret ${e.ret} is an fd`);
      assert.equal(e.tid, pid);
    });
  });

  define("a perf buffer and a ring buffer deliver events; BPF_MAP_DUMP dumps maps", async (v) => {
    await session(async (bpfd) => {
      const ncpu = bpfd.facts!.possibleCpus.length;
      const ev = await bpfd.createMap({
        type: 4,
        name: "events",
        keySize: 4,
        valueSize: 4,
        maxEntries: ncpu,
      });
      const perf = await bpfd.openPerfBuffers(ev, 8);
      const rb = await bpfd.createMap({
        type: 27,
        name: "rb",
        keySize: 0,
        valueSize: 0,
        maxEntries: 65536,
      });
      const ring = await bpfd.openRingBuffer(rb);
      const hits = await bpfd.createMap({
        type: 2,
        name: "hits",
        keySize: 4,
        valueSize: 8,
        maxEntries: 1,
      });
      for (
        const [name, insns] of [
          ["perfout", progs.perfout(ev)],
          ["ringout", progs.ringout(rb)],
          ["count", progs.counter(hits)],
        ] as const
      ) {
        const p = await bpfd.loadProgram(5, name, insns);
        await bpfd.attachTracepoint(p, "syscalls", "sys_enter_openat");
      }
      const r = await v.sh(`sh -c 'echo $$; exec cat /init /init /init >/dev/null'`);
      const pid = pidOf(r.out);
      // Samples carry bpf_get_current_pid_tgid(): the tgid is the upper half.
      const tgid = (s: Uint8Array) => new DataView(s.buffer, s.byteOffset).getUint32(4, true);
      const perfPids: number[] = [];
      const ringPids: number[] = [];
      const end = Date.now() + 20_000;
      while (Date.now() < end) {
        for (const e of await bpfd.poll(500, [...perf, ring])) {
          if (e.kind !== "sample") continue;
          (e.cpu === null ? ringPids : perfPids).push(tgid(e.data));
          if (e.cpu === null) assert.equal(e.size, 8, "ring records are not padded");
        }
        const n = (a: number[]) => a.filter((x) => x === pid).length;
        if (n(perfPids) >= 3 && n(ringPids) >= 3) break;
      }
      assert.ok(perfPids.filter((x) => x === pid).length >= 3, `perf: pid ${pid} in ${perfPids}`);
      assert.ok(ringPids.filter((x) => x === pid).length >= 3, `ring: pid ${pid} in ${ringPids}`);
      // A map the kernel filled: the counter program's array.
      const counted = await bpfd.dump(hits);
      assert.equal(counted.length, 1);
      const n = new DataView(counted[0].value.buffer, counted[0].value.byteOffset).getBigUint64(
        0,
        true,
      );
      assert.ok(n >= 6n, `openat calls counted: ${n}`);
      // A hash map filled from the host, dumped in one BPF_MAP_DUMP.
      const h = await bpfd.createMap({
        type: 1,
        name: "h",
        keySize: 4,
        valueSize: 8,
        maxEntries: 64,
      });
      const put = new Map<number, bigint>();
      for (let k = 1; k <= 40; k++) {
        const key = new Uint8Array(4);
        const val = new Uint8Array(8);
        new DataView(key.buffer).setUint32(0, k * 7, true);
        new DataView(val.buffer).setBigUint64(0, BigInt(k) << 33n, true);
        await bpfd.update(h, key, val);
        put.set(k * 7, BigInt(k) << 33n);
      }
      const got = new Map(
        (await bpfd.dump(h)).map((e) => [
          new DataView(e.key.buffer, e.key.byteOffset).getUint32(0, true),
          new DataView(e.value.buffer, e.value.byteOffset).getBigUint64(0, true),
        ]),
      );
      assert.deepEqual([...got].sort((a, b) => a[0] - b[0]), [...put]);
    });
  });

  define("execsnoop headers and core objects both read the right parent tgid", async (v) => {
    const b = await vmBundles(arch, series);
    await session(async (bpfd) => {
      const up = await bpfd.uploadBundle(b.tar("execsnoop"));
      const loaded: Record<string, { bundle: LoadedBundle; readers: Reader[] }> = {};
      for (const mode of ["headers", "core"] as const) {
        loaded[mode] = await loadAndAttach(bpfd, up.path, mode);
        const o = loaded[mode].bundle.object;
        assert.equal(o.mode, mode);
        assert.equal(o.arch, arch);
        assert.equal(o.release, v.facts.release, `the ${mode} object was built for this kernel`);
      }
      const token = `vm-exec-${crypto.randomUUID().slice(0, 8)}`;
      // The shell forks /bin/echo (`; true` keeps it from exec'ing in place): echo's parent is it.
      const r = await v.sh(`echo $$; /bin/echo ${token}; true`);
      assert.equal(r.code, 0, r.out);
      const ppid = pidOf(r.out);
      const has = (s: Uint8Array) => dec.decode(s.subarray(56)).split("\0").includes(token);
      for (const mode of ["headers", "core"] as const) {
        const seen = await collect(bpfd, loaded[mode].readers, (all) => all.some(has));
        const ev = seen.find(has);
        assert.ok(ev, `${mode}: an execsnoop event for ${token} among ${seen.length}`);
        const dv = new DataView(ev.buffer, ev.byteOffset);
        assert.equal(dv.getUint32(12, true), ppid, `${mode}: ppid = the agent's shell`);
        assert.notEqual(dv.getUint32(8, true), ppid, `${mode}: pid is echo's own`);
        assert.equal(dv.getInt32(20, true), 0, `${mode}: exec succeeded`);
        const args = dec.decode(ev.subarray(56, 56 + dv.getUint32(28, true))).split("\0");
        assert.deepEqual(args.filter(Boolean), ["/bin/echo", token]);
      }
    });
  });

  define("objects for the other arch or another kernel release are refused clearly", async () => {
    const otherArch: VmArch = arch === "x86_64" ? "aarch64" : "x86_64";
    const otherSeries: VmSeries = series === "6.1" ? "6.12" : "6.1";
    const foreign = await vmBundles(otherArch, otherSeries);
    const older = await vmBundles(arch, otherSeries);
    await session(async (bpfd) => {
      const f = await bpfd.uploadBundle(foreign.tar("execsnoop"));
      const e1 = await bpfd.loadBundle(f.path).then(() => null, (e) => e);
      assert.ok(e1 instanceof BpfdError, `refused: ${e1}`);
      assert.equal(e1.errno, 8, e1.message);
      assert.match(e1.detail, new RegExp(`no object for architecture ${arch}`));
      assert.match(e1.detail, new RegExp(`${otherArch} headers ${esc(foreign.release)}`));
      const o = await bpfd.uploadBundle(older.tar("execsnoop"));
      const e2 = await bpfd.loadBundle(o.path, { mode: "headers" }).then(() => null, (e) => e);
      assert.ok(e2 instanceof BpfdError, `refused: ${e2}`);
      assert.equal(e2.errno, 8, e2.message);
      assert.match(
        e2.detail,
        new RegExp(`no headers object for kernel ${esc(bpfd.facts!.release!)}`),
      );
      assert.match(e2.detail, new RegExp(`${arch} headers ${esc(older.release)}`));
      // The session is still usable after the refusals.
      assert.equal((await bpfd.cpus()).online.length > 0, true);
    });
  });

  define(
    "kprobe and kretprobe (perf PMU) count exactly the sync(2) calls the agent made",
    async (v) => {
      const fn = syncSymbol(arch);
      await session(async (bpfd) => {
        assert.ok(await bpfd.ksymAddr(fn), `${fn} is in the guest's kallsyms`);
        const counts: number[] = [];
        for (const [kind, ev] of [[0, `p_${fn}`], [1, `r_${fn}`]] as const) {
          const m = await bpfd.createMap({
            type: 2,
            name: `kp${kind}`,
            keySize: 4,
            valueSize: 8,
            maxEntries: 1,
          });
          const p = await bpfd.loadProgram(2, `kp${kind}`, progs.counter(m));
          const body = await bpfd.command(`BPF_ATTACH_KPROBE ${p} ${kind} ${ev} ${fn}`);
          assert.match(body[0], /^bpf_attach_kprobe: ret=\d+$/, body.join("\n"));
          counts.push(m);
        }
        assert.equal((await v.sh("sync; sync; sync; sync; sync")).code, 0);
        for (const m of counts) {
          const [e] = await bpfd.dump(m);
          const n = new DataView(e.value.buffer, e.value.byteOffset).getBigUint64(0, true);
          assert.equal(n, 5n, `${fn}: entries/returns counted`);
        }
      });
    },
  );

  define("kprobe through tracefs kprobe_events is created, counts, and is removed", async (v) => {
    const fn = syncSymbol(arch);
    await v.nextSessionArgs(["--probe-mode", "tracefs"]);
    const events = () => v.sh("cat /sys/kernel/tracing/kprobe_events");
    await session(async (bpfd) => {
      const m = await bpfd.createMap({
        type: 2,
        name: "kp",
        keySize: 4,
        valueSize: 8,
        maxEntries: 1,
      });
      const p = await bpfd.loadProgram(2, "kp_tracefs", progs.counter(m));
      const body = await bpfd.command(`BPF_ATTACH_KPROBE ${p} 0 p_vmtest ${fn}`);
      assert.match(body[0], /^bpf_attach_kprobe: ret=\d+$/, body.join("\n"));
      assert.match((await events()).out, new RegExp(`p_vmtest.* ${fn}`));
      assert.equal((await v.sh("sync; sync; sync")).code, 0);
      const [e] = await bpfd.dump(m);
      assert.equal(new DataView(e.value.buffer, e.value.byteOffset).getBigUint64(0, true), 3n);
    });
    assert.doesNotMatch((await events()).out, /p_vmtest/, "removed at session end");
  });

  define("funccount (kprobe tool) counts the guest's ksys_sync calls", async (v) => {
    // ksys_sync (what sync(2) runs) is traceable on both arches; the __x64_sys_* entry points
    // are not in x86's available_filter_functions, where funccount looks.
    const fn = "ksys_sync";
    const listed = await v.sh(`grep -cx ${fn} /sys/kernel/tracing/available_filter_functions`);
    assert.equal(listed.out.trim(), "1", `${fn} is a traceable function of this kernel`);
    const b = await vmBundles(arch, series);
    const out: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => out.push(a.join(" "));
    try {
      let done = false;
      const tool = runTool(funccount, [
        "--remote",
        v.remote,
        "--bundle",
        b.tar("funccount"),
        "--json",
        "-d",
        "6",
        fn,
      ]).finally(() => done = true);
      // Act once the probe is in place (every kprobe, PMU or tracefs, is listed in debugfs).
      let attached = false;
      for (const end = Date.now() + 90_000; !attached && !done && Date.now() < end;) {
        const r = await v.sh(`grep -c ${fn} /sys/kernel/debug/kprobes/list`);
        attached = r.code === 0 && Number(r.out) > 0;
        if (!attached) await new Promise((r) => setTimeout(r, 300));
      }
      if (attached) assert.equal((await v.sh("sync; sync; sync; sync")).code, 0);
      assert.equal(await tool, 0, "funccount succeeded (its error is above)");
      assert.ok(attached, `funccount attached a kprobe to ${fn}`);
    } finally {
      console.log = log;
    }
    const last = JSON.parse(out.filter((l) => l.startsWith("{")).at(-1) ?? "{}") as {
      functions?: { func: string; count: number }[];
    };
    assert.deepEqual(last.functions, [{ func: fn, count: 4 }], out.join("\n"));
  });

  Deno.test({
    name: `${label}: shutdown (prints the timings)`,
    ignore: skip !== null,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      if (!booted) return;
      const v = await booted.catch(() => null);
      if (!v) return;
      await v.time("shutdown", () => v.shutdown());
      assert.equal(v.running, false);
      console.error(v.timingReport());
      console.error(
        `vm ${arch} ${v.facts.release}: sizes kernel ${mb(v.sizes.kernel)}, base initramfs ` +
          `${mb(v.sizes.base)}, project archive ${mb(v.sizes.project)}, deno ${
            mb(v.sizes.deno)
          }, bpfd.js ${mb(v.sizes.module)}`,
      );
    },
  });

  if (opts.launcher) {
    Deno.test({
      name: `${label}: a host tool CLI in another process reaches a VM through the launcher`,
      ignore: skip !== null,
      fn: async () => {
        const b = await vmBundles(arch, series);
        const launcher = await writeLauncher(arch, series);
        const t0 = performance.now();
        const r = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            "--no-check",
            new URL("../../tools/funccount/funccount.ts", import.meta.url).pathname,
            "--remote",
            `qemu:${launcher}`,
            "--bundle",
            b.tar("funccount"),
            "--json",
            "-d",
            "2",
            "vfs_read",
          ],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const stdout = dec.decode(r.stdout);
        assert.equal(r.code, 0, `${stdout}\n${dec.decode(r.stderr)}`);
        const last = JSON.parse(stdout.trim().split("\n").at(-1)!) as {
          functions: { func: string; count: number }[];
        };
        // bpfd itself reads its commands with read(2) in the guest.
        assert.ok(last.functions.some((f) => f.func === "vfs_read" && f.count > 0), stdout);
        console.error(
          `vm ${arch} ${series}: launcher session (boot + funccount -d 2) ${
            ((performance.now() - t0) / 1000).toFixed(1)
          } s`,
        );
      },
    });
  }
}

function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}
