/**
 * The qemu VM lab: boots a Debian cloud kernel (arm64 or x86_64, 6.1 or 6.12) under qemu (TCG)
 * with the target-arch bpfd inside, and exposes the runtime as the project's `qemu` transport.
 *
 * - **ctl**: a virtio-serial port on qemu's stdio. The guest's `/init` runs bpfd on it and
 *   restarts it after every session, so one boot serves many sessions. The host learns that a
 *   session ended from the line `BPFPACK-VM-SESSION-END <status>` that `/init` writes after
 *   bpfd exits; {@link Vm.connect} hands out one session at a time, and closing it does not
 *   close qemu's stdin.
 * - **act**: a second port on a unix socket; an action agent in the guest runs shell command
 *   lines for the host ({@link Vm.sh}) so tests act in the guest while bpfd traces them.
 * - The kernel console goes to `console.log` in the run directory; its tail is in every error.
 * - qemu runs under `timeout -k 5 <hard limit>`; {@link Vm.shutdown} powers the guest off and
 *   makes sure qemu is gone. If this process ends first, an `unload` handler kills qemu, and
 *   should even that not run (SIGKILL), the guest agent sees the act socket close and powers
 *   the guest off, so no qemu outlives its host process by more than a moment.
 *
 * @example
 * ```ts
 * import { bootVm } from "./lab.ts";
 * import { BpfdClient } from "../../tools/client/client.ts";
 * const vm = await bootVm({ arch: "aarch64", series: "6.1" });
 * try {
 *   const bpfd = new BpfdClient(await vm.connect());
 *   console.log((await bpfd.hello()).release);
 *   await bpfd.close();
 *   console.log(await vm.sh("uname -a"));
 * } finally {
 *   await vm.shutdown();
 * }
 * ```
 * @module
 */

import {
  type Channel,
  ChannelClient,
  connect,
  type ConnectOptions,
  type ExitInfo,
} from "../../tools/transport/channel.ts";
import {
  type QemuHook,
  qemuHook,
  qemuTransport,
  registerQemuHook,
  unregisterQemuHook,
} from "../../tools/transport/qemu.ts";
import {
  baseInitramfs,
  contentKey,
  type GuestKernel,
  guestKernel,
  type VmArch,
  type VmSeries,
  writeCpioGz,
} from "./kernel_assets.ts";
import { guestRuntime, type OfflineRuntime, repoRoot, vmCacheDir } from "./runtime_assets.ts";
import { removeIfExists, sweepStale, writeFileAtomic } from "../../compiler/kernels/fs_util.ts";

export type { VmArch, VmSeries };

/** The line `/init` writes on ctl after each bpfd session. */
const SESSION_END = "BPFPACK-VM-SESSION-END ";
const BANNER = "STARTED_BPFD\n";
const GUEST = `${repoRoot()}/tests/vm/guest`;
const enc = new TextEncoder();

/** Per-arch qemu settings (measured: see /work/shared/vm-lab.md). */
const MACHINE: Record<VmArch, {
  qemu: string;
  machine: string[];
  console: string;
  serialBus: string;
  rng: string;
}> = {
  aarch64: {
    qemu: "qemu-system-aarch64",
    // Not -cpu max: 2.5× slower under TCG.
    machine: ["-M", "virt", "-cpu", "cortex-a72"],
    console: "ttyAMA0",
    serialBus: "virtio-serial-device",
    rng: "virtio-rng-device",
  },
  x86_64: {
    qemu: "qemu-system-x86_64",
    // cx16=off: qemu 7.2's TCG corrupts EFLAGS on `cmpxchg16b %gs:(…)` under thread=multi
    // (SLUB's per-CPU fast path): half of the 6.12 boots died in kmem_cache_alloc with a
    // double fault. Without CX16 the kernel takes its locked path; 6/6 boots were clean.
    machine: ["-M", "q35", "-accel", "tcg,thread=multi", "-cpu", "max,cx16=off"],
    console: "ttyS0",
    serialBus: "virtio-serial-pci",
    rng: "virtio-rng-pci",
  },
};

/** Options of {@link bootVm}. */
export interface BootOptions {
  /** Guest architecture. */
  arch: VmArch;
  /** Debian kernel series (6.1: bookworm, 6.12: bookworm-backports). */
  series: VmSeries;
  /** The qemu hook name to register (default `vm-<arch>-<series>`). */
  name?: string;
  /** Hard limit on the VM's life, in ms (default 20 min): qemu is killed then. */
  timeoutMs?: number;
  /** How long to wait for the first bpfd banner, in ms (default 180 s). */
  bootTimeoutMs?: number;
  /** Guest memory in MiB (default 1024; 256 panics). */
  memoryMb?: number;
  /** Guest CPUs (default 2). */
  cpus?: number;
  /** Progress lines (default: to stderr, prefixed `vm:`); pass `() => {}` for silence. */
  onProgress?: (msg: string) => void;
}

/** What a guest is, as the host prepared it. */
export interface VmFacts {
  /** `uname -m` of the guest. */
  arch: VmArch;
  /** Debian series. */
  series: VmSeries;
  /** Debian ABI. */
  abi: string;
  /** `uname -r` of the guest. */
  release: string;
  /** The kernel image package. */
  image: string;
}

/** Sizes of what the VM boots, in bytes. */
export interface VmSizes {
  /** Kernel image. */
  kernel: number;
  /** Base initramfs (busybox, glibc, modules, deno), gzip. */
  base: number;
  /** The per-run archive (bpfd.js, launcher, guest scripts), gzip. */
  project: number;
  /** The guest's deno binary. */
  deno: number;
  /** The bundled runtime module. */
  module: number;
}

/** The result of {@link Vm.sh}. */
export interface ShResult {
  /** Exit status of the command line. */
  code: number;
  /** Its stdout and stderr, interleaved. */
  out: string;
}

/** A prerequisite of the lab is missing on this host (tests skip on it; nothing else does). */
export class VmPrerequisiteError extends Error {
  override name = "VmPrerequisiteError";
}

/**
 * Whether the qemu system emulator for `arch` is installed (the only reason VM tests skip).
 *
 * @example
 * ```ts
 * import { qemuMissing } from "./lab.ts";
 * const why = qemuMissing("aarch64");
 * if (why) console.error(why);
 * ```
 */
export function qemuMissing(arch: VmArch): string | null {
  const bin = MACHINE[arch].qemu;
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${bin}`).isFile) return null;
    } catch { /* not here */ }
  }
  return `${bin} is not installed: run scripts/setup.sh as root (it installs ${
    arch === "aarch64" ? "qemu-system-arm" : "qemu-system-x86"
  })`;
}

function tailOf(text: string, lines = 25): string {
  const all = text.replace(/\r/g, "").split("\n");
  return all.slice(-lines).join("\n").trim();
}

function defaultProgress(msg: string): void {
  console.error(`vm: ${msg}`);
}

// ------------------------------------------------------------------ ctl sessions

type PendingItem = { data: Uint8Array } | { end: number };

/** One bpfd session on the ctl port. */
class CtlSession {
  readonly exited: Promise<ExitInfo>;
  #resolve!: (e: ExitInfo) => void;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  readonly readable: ReadableStream<Uint8Array>;
  #cancelled = false;
  ended = false;
  exitSent = false;
  /** The first bytes of the line being written (to notice an `exit` line). */
  #lineHead = "";

  constructor() {
    this.exited = new Promise((r) => this.#resolve = r);
    // Cancelled when the client is done: what bpfd still sends until its end line is dropped.
    this.readable = new ReadableStream<Uint8Array>({
      start: (c) => {
        this.#controller = c;
      },
      cancel: () => {
        this.#cancelled = true;
      },
    });
  }

  push(data: Uint8Array): void {
    if (this.#cancelled || this.ended || data.length === 0) return;
    this.#controller.enqueue(data);
  }

  end(info: ExitInfo): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.#cancelled) {
      try {
        this.#controller.close();
      } catch { /* cancelled meanwhile */ }
    }
    this.#resolve(info);
  }

  /** Tracks the lines the client writes: after an `exit` line the session is over. */
  noteWritten(bytes: Uint8Array): void {
    let start = 0;
    for (;;) {
      const nl = bytes.indexOf(10, start);
      const piece = bytes.subarray(start, nl < 0 ? bytes.length : nl);
      if (this.#lineHead.length < 6) {
        this.#lineHead += new TextDecoder("latin1").decode(piece.subarray(0, 6));
      }
      if (nl < 0) return;
      if (/^exit(\s|\r|$)/.test(this.#lineHead)) this.exitSent = true;
      this.#lineHead = "";
      start = nl + 1;
    }
  }
}

/** Demultiplexes qemu's stdout (the ctl port) into sessions. */
class CtlMux {
  #pending: PendingItem[] = [];
  #current: CtlSession | null = null;
  #carry = new Uint8Array(0);
  #dead: string | null = null;
  #bannerSeen = false;
  #onBanner: (() => void)[] = [];
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #consoleTail: () => string;

  constructor(stdin: WritableStream<Uint8Array>, consoleTail: () => string) {
    this.#stdin = stdin.getWriter();
    this.#consoleTail = consoleTail;
  }

  /** Resolves when the first bpfd banner has arrived. */
  banner(): Promise<void> {
    if (this.#bannerSeen) return Promise.resolve();
    return new Promise((r) => this.#onBanner.push(r));
  }

  /** Feeds a chunk of qemu's stdout. Holds an incomplete last line until its newline. */
  feed(chunk: Uint8Array): void {
    let data = chunk;
    if (this.#carry.length) {
      data = new Uint8Array(this.#carry.length + chunk.length);
      data.set(this.#carry);
      data.set(chunk, this.#carry.length);
    }
    const last = data.lastIndexOf(10);
    this.#carry = data.slice(last + 1);
    let rest = data.subarray(0, last + 1);
    while (rest.length) {
      const text = new TextDecoder("latin1").decode(rest);
      if (!this.#bannerSeen && text.includes(BANNER)) {
        this.#bannerSeen = true;
        for (const f of this.#onBanner.splice(0)) f();
      }
      const at = text.indexOf(SESSION_END);
      if (at < 0) {
        this.#deliver({ data: rest });
        return;
      }
      const eol = text.indexOf("\n", at);
      const code = Number(text.slice(at + SESSION_END.length, eol).trim());
      this.#deliver({ data: rest.subarray(0, at) });
      this.#deliver({ end: Number.isInteger(code) ? code : 1 });
      rest = rest.subarray(eol + 1);
    }
  }

  #deliver(item: PendingItem): void {
    const s = this.#current;
    if (!s) {
      if ("data" in item && item.data.length === 0) return;
      this.#pending.push("data" in item ? { data: item.data.slice() } : item);
      return;
    }
    if ("data" in item) s.push(item.data);
    else {
      s.end({ code: item.end, signal: null, stderrTail: this.#consoleTail() });
      this.#current = null;
    }
  }

  /** qemu is gone: the current session ends, later ones cannot start. */
  die(why: string): void {
    this.#dead = why;
    this.#current?.end({ code: null, signal: null, stderrTail: `${why}\n${this.#consoleTail()}` });
    this.#current = null;
  }

  /** Opens the next session (the bytes bpfd sent so far, e.g. its banner, come first). */
  open(describe: string, killGuest: () => Promise<void>): Channel {
    if (this.#dead) throw new Error(`${describe}: the VM is not running (${this.#dead})`);
    if (this.#current) {
      throw new Error(
        `${describe}: a bpfd session is still open; close its client before connecting again ` +
          "(the VM serves one session at a time)",
      );
    }
    const s = new CtlSession();
    this.#current = s;
    while (this.#pending.length && this.#current === s) {
      this.#deliver(this.#pending.shift()!);
    }
    const writer = this.#stdin;
    const writable = new WritableStream<Uint8Array>({
      write: async (chunk) => {
        if (s.ended || s.exitSent) {
          if (s.ended) throw new Error("bpfd session ended (the guest's bpfd exited)");
          return; // after `exit`, bytes would reach the next session: drop them
        }
        s.noteWritten(chunk);
        await writer.write(chunk);
      },
      // Closing our side is EOF for bpfd: a final partial line runs, then the session ends.
      close: async () => {
        if (!s.ended && !s.exitSent) {
          s.exitSent = true;
          await writer.write(enc.encode("\nexit\n")).catch(() => {});
        }
      },
    });
    return {
      readable: s.readable,
      writable,
      describe,
      exited: s.exited,
      stderrTail: () => this.#consoleTail(),
      kill: () => {
        if (!s.ended) killGuest().catch(() => {});
      },
    };
  }

  async close(): Promise<void> {
    try {
      await this.#stdin.close();
    } catch { /* qemu is gone */ }
  }
}

// ------------------------------------------------------------------ the action agent

/** The host side of the guest's action agent (requests are serialised). */
class ActAgent {
  #conn: Deno.UnixConn;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf = new Uint8Array(0);
  #read: Promise<ReadableStreamReadResult<Uint8Array>> | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  #id = 0;
  #closed = false;

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
    this.#reader = conn.readable.getReader();
  }

  static async connect(path: string, deadline: number): Promise<ActAgent> {
    for (;;) {
      try {
        return new ActAgent(await Deno.connect({ transport: "unix", path }));
      } catch (e) {
        if (Date.now() > deadline) {
          throw new Error(`cannot connect to the agent socket ${path}: ${(e as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** Reads until `n` bytes are buffered; false on timeout. */
  async #fill(n: number, deadline: number): Promise<boolean> {
    while (this.#buf.length < n) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      // A read that outlives a timeout stays pending and is picked up by the next call.
      const read = this.#read ??= this.#reader.read();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const r = await Promise.race([
        read,
        new Promise<null>((res) => timer = setTimeout(() => res(null), left)),
      ]);
      clearTimeout(timer);
      if (r === null) return false;
      this.#read = null;
      if (r.done) throw new Error("the guest's action agent closed its port (the VM is down?)");
      const b = new Uint8Array(this.#buf.length + r.value.length);
      b.set(this.#buf);
      b.set(r.value, this.#buf.length);
      this.#buf = b;
    }
    return true;
  }

  /** Sends a request without waiting for its answer (poweroff). */
  async fire(cmd: string): Promise<void> {
    const id = ++this.#id;
    await this.#conn.write(enc.encode(`${id} ${enc.encode(cmd).toBase64()}\n`));
  }

  run(cmd: string, timeoutMs: number): Promise<ShResult> {
    const job = this.#queue.then(() => this.#run(cmd, timeoutMs));
    this.#queue = job.catch(() => {});
    return job;
  }

  async #run(cmd: string, timeoutMs: number): Promise<ShResult> {
    if (this.#closed) throw new Error("the agent connection is closed");
    const id = ++this.#id;
    await this.#conn.write(enc.encode(`${id} ${enc.encode(cmd).toBase64()}\n`));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Header line: BPFPACK-ACT <id> <code> <n>
      let nl = this.#buf.indexOf(10);
      while (nl < 0) {
        if (!(await this.#fill(this.#buf.length + 1, deadline))) {
          throw new Error(`no answer from the guest agent within ${timeoutMs} ms`);
        }
        nl = this.#buf.indexOf(10);
      }
      const header = new TextDecoder().decode(this.#buf.subarray(0, nl));
      const m = /^BPFPACK-ACT (\d+) (\d+) (\d+)$/.exec(header);
      if (!m) {
        this.#buf = this.#buf.slice(nl + 1); // noise: skip the line
        continue;
      }
      const n = Number(m[3]);
      if (!(await this.#fill(nl + 1 + n, deadline))) {
        throw new Error(`the guest agent's answer was cut short (wanted ${n} bytes)`);
      }
      const out = new TextDecoder().decode(this.#buf.subarray(nl + 1, nl + 1 + n));
      this.#buf = this.#buf.slice(nl + 1 + n);
      if (Number(m[1]) !== id) continue; // the late answer to a request that timed out
      return { code: Number(m[2]), out };
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reader.cancel().catch(() => {});
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

// ------------------------------------------------------------------ assets for one boot

/** Everything a boot needs, prepared (and cached) by {@link prepareVm}. */
export interface PreparedVm {
  /** The guest kernel. */
  kernel: GuestKernel;
  /** The guest runtime. */
  runtime: OfflineRuntime;
  /** The initramfs archives, in unpack order: the base, then the project files. */
  initrdParts: string[];
  /** Sizes. */
  sizes: VmSizes;
}

/**
 * Fetches and builds what a VM of (`arch`, `series`) boots: the kernel, the runtime, the base
 * initramfs, and the project archive (`/init`, the agent, bpfd.js and its launcher; cached by
 * content). {@link writeInitrd} joins the archives into the one file qemu takes.
 *
 * @example
 * ```ts
 * import { prepareVm } from "./lab.ts";
 * const p = await prepareVm({ arch: "x86_64", series: "6.12" });
 * console.log(p.kernel.release, p.initrdParts, p.sizes);
 * ```
 */
export async function prepareVm(
  opts: { arch: VmArch; series: VmSeries; onProgress?: (m: string) => void },
): Promise<PreparedVm> {
  const say = opts.onProgress ?? defaultProgress;
  const kernel = await guestKernel(opts.arch, opts.series, { onProgress: say });
  const runtime = await guestRuntime(opts.arch);
  const base = await baseInitramfs(kernel, runtime.deno, { onProgress: say });
  const files = [`${GUEST}/init.sh`, `${GUEST}/agent.sh`, runtime.module, runtime.launcher];
  const key = await contentKey(files);
  const projects = `${vmCacheDir()}/project`;
  const project = `${projects}/project-${key}.cpio.gz`;
  if (!(await Deno.stat(project).then(() => true, () => false))) {
    await Deno.mkdir(projects, { recursive: true });
    const stage = await Deno.makeTempDir({ dir: vmCacheDir(), prefix: "work-" });
    try {
      for (const d of ["etc/bpfpack", "opt/bpfpack/bin", "opt/bpfpack/lib"]) {
        await Deno.mkdir(`${stage}/${d}`, { recursive: true });
      }
      await Deno.copyFile(`${GUEST}/init.sh`, `${stage}/init`);
      await Deno.copyFile(`${GUEST}/agent.sh`, `${stage}/etc/bpfpack/agent.sh`);
      await Deno.copyFile(runtime.module, `${stage}/opt/bpfpack/lib/bpfd.js`);
      await Deno.copyFile(runtime.launcher, `${stage}/opt/bpfpack/bin/bpfd`);
      for (const f of ["init", "opt/bpfpack/bin/bpfd"]) await Deno.chmod(`${stage}/${f}`, 0o755);
      const tmp = `${project}.tmp-${Deno.pid}`;
      await writeCpioGz(stage, tmp);
      await Deno.rename(tmp, project);
    } finally {
      await removeIfExists(stage);
    }
    // Archives of older project files; an hour's grace for a boot of another process.
    await sweepStale(projects, { pattern: /^project-.*\.cpio\.gz$/, olderThanMs: 3600_000 });
  }
  return {
    kernel,
    runtime,
    initrdParts: [base.path, project],
    sizes: {
      kernel: (await Deno.stat(kernel.vmlinuz)).size,
      base: base.bytes,
      project: (await Deno.stat(project)).size,
      deno: runtime.bytes.deno,
      module: runtime.bytes.module,
    },
  };
}

/**
 * Writes the initrd of a prepared VM to `dest`: its archives concatenated (the kernel unpacks
 * them in order, later files over earlier ones).
 *
 * @example
 * ```ts
 * import { prepareVm, writeInitrd } from "./lab.ts";
 * await writeInitrd(await prepareVm({ arch: "aarch64", series: "6.1" }), "/tmp/initrd.gz");
 * ```
 */
export async function writeInitrd(prep: PreparedVm, dest: string): Promise<void> {
  const out = await Deno.open(dest, { write: true, create: true, truncate: true });
  try {
    for (const part of prep.initrdParts) {
      const f = await Deno.open(part);
      await f.readable.pipeTo(out.writable, { preventClose: true });
    }
  } finally {
    out.close();
  }
}

/**
 * Writes the launcher script `.cache/vm/run-<arch>-<series>.sh` and returns its path: an
 * executable that boots a fresh VM and serves one bpfd session on its stdin/stdout, so a host
 * tool in another process can use `--remote qemu:<that path>`.
 *
 * @example
 * ```ts
 * import { writeLauncher } from "./lab.ts";
 * const sh = await writeLauncher("aarch64", "6.1");
 * // deno task tool opensnoop --remote qemu:${sh}
 * ```
 */
export async function writeLauncher(arch: VmArch, series: VmSeries): Promise<string> {
  const path = `${vmCacheDir()}/run-${arch}-${series}.sh`;
  const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const text = "#!/bin/sh\n" +
    `# bpfpack VM launcher (written by tests/vm/lab.ts): boots Debian ${series} ${arch} under\n` +
    "# qemu and serves one bpfd session on this script's stdin/stdout; progress on stderr.\n" +
    `exec ${q(Deno.execPath())} run -A --no-check ${q(`${repoRoot()}/tests/vm/launch.ts`)} ` +
    `--arch ${arch} --series ${series} "$@"\n`;
  await Deno.mkdir(vmCacheDir(), { recursive: true });
  if ((await Deno.readTextFile(path).catch(() => "")) !== text) await writeFileAtomic(path, text);
  await Deno.chmod(path, 0o755);
  return path;
}

// ------------------------------------------------------------------ the VM

let bootCount = 0;

/**
 * A running VM (see {@link bootVm}).
 *
 * @example
 * ```ts
 * import { bootVm } from "./lab.ts";
 * const vm = await bootVm({ arch: "x86_64", series: "6.12" });
 * console.log(vm.facts.release, vm.timings);
 * await vm.shutdown();
 * ```
 */
export class Vm {
  /** The registered qemu hook name. */
  readonly name: string;
  /** The `--remote` spec that reaches this VM from this process (`qemu:<name>`). */
  readonly remote: string;
  /** What the guest is. */
  readonly facts: VmFacts;
  /** Sizes of what it booted. */
  readonly sizes: VmSizes;
  /** Durations in ms: `prepare`, `boot` (qemu start → first bpfd banner), and what tests add. */
  readonly timings: Record<string, number> = {};
  /** The run directory (initrd.gz, console.log, act.sock, qemu.pid), removed at shutdown. */
  readonly runDir: string;
  /** The launcher script for this (arch, series) (boots its own VM per session). */
  readonly launcher: string;

  #child: Deno.ChildProcess;
  #mux: CtlMux;
  #agent: ActAgent | null = null;
  #stderr = "";
  #exited: Promise<Deno.CommandStatus>;
  #running = true;
  #pumps: Promise<void>[] = [];
  #unload: () => void;
  #hook: QemuHook;
  #shutdown: Promise<void> | null = null;

  /** @internal Use {@link bootVm}. */
  constructor(
    init: {
      name: string;
      facts: VmFacts;
      sizes: VmSizes;
      runDir: string;
      launcher: string;
      child: Deno.ChildProcess;
    },
  ) {
    this.name = init.name;
    this.remote = `qemu:${init.name}`;
    this.facts = init.facts;
    this.sizes = init.sizes;
    this.runDir = init.runDir;
    this.launcher = init.launcher;
    this.#child = init.child;
    const mux = new CtlMux(init.child.stdin, () => this.consoleTail());
    this.#mux = mux;
    const dec = new TextDecoder();
    this.#pumps.push(
      (async () => {
        for await (const chunk of init.child.stdout) mux.feed(chunk);
      })().catch(() => {}),
      (async () => {
        for await (const chunk of init.child.stderr) {
          this.#stderr = (this.#stderr + dec.decode(chunk, { stream: true })).slice(-4096);
        }
      })().catch(() => {}),
    );
    this.#exited = init.child.status.then((st) => {
      this.#running = false;
      const how = st.signal ? `killed by ${st.signal}` : `exit status ${st.code}`;
      this.#mux.die(
        `qemu ended (${how}${st.code === 124 ? ": the VM's hard time limit" : ""})` +
          (this.#stderr.trim() ? `; qemu said: ${tailOf(this.#stderr, 5)}` : ""),
      );
      return st;
    });
    this.#unload = () => this.#killNow();
    globalThis.addEventListener("unload", this.#unload);
    this.#hook = () => Promise.resolve(this.openChannel());
    registerQemuHook(this.name, this.#hook);
  }

  /** Whether qemu still runs. */
  get running(): boolean {
    return this.#running;
  }

  /** The last lines of the guest's kernel console (and qemu's stderr, if any). */
  consoleTail(lines = 25): string {
    let text = "";
    try {
      text = Deno.readTextFileSync(`${this.runDir}/console.log`);
    } catch { /* not yet */ }
    const q = this.#stderr.trim() ? `\n[qemu stderr] ${tailOf(this.#stderr, 5)}` : "";
    return `[console ${this.runDir}/console.log]\n${tailOf(text, lines)}${q}`;
  }

  /** @internal Waits for the first banner (boot), connects the agent. */
  async _ready(bootTimeoutMs: number): Promise<void> {
    const t0 = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      this.#mux.banner().then(() => "banner" as const),
      this.#exited.then(() => "exited" as const),
      new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), bootTimeoutMs)),
    ]);
    clearTimeout(timer);
    if (outcome !== "banner") {
      const why = outcome === "timeout"
        ? `no bpfd banner within ${bootTimeoutMs / 1000} s of starting qemu`
        : "qemu exited before bpfd started";
      throw new Error(
        `${this.name}: boot failed: ${why}. The guest's console:\n${this.consoleTail(40)}\n` +
          "Check that the kernel booted (panics show above) and that /init found the ctl port",
      );
    }
    this.timings.boot = performance.now() - t0;
    this.#agent = await ActAgent.connect(`${this.runDir}/act.sock`, Date.now() + 10_000);
    // The first request also arms the guest's watchdog: once the agent has heard from this
    // process, losing the connection (this process died) powers the guest off.
    const ping = await this.sh("echo ready", { timeoutMs: 30_000 });
    if (ping.out.trim() !== "ready") {
      throw new Error(`${this.name}: the guest agent answered ${JSON.stringify(ping.out)}`);
    }
  }

  /**
   * Opens the next bpfd session as raw streams (a {@link Channel}); {@link connect} wraps it in a
   * client. One session at a time.
   */
  openChannel(): Channel {
    return this.#mux.open(`qemu ${this.name} (${this.facts.release})`, async () => {
      await this.sh("kill -9 $(cat /run/bpfd.pid) 2>/dev/null; true", { timeoutMs: 10_000 });
    });
  }

  /**
   * Connects to the next bpfd session in the guest and waits for its banner. Timeouts default
   * to 120 s (TCG is slow); closing the client ends the session, not the VM.
   */
  async connect(opts: ConnectOptions = {}): Promise<ChannelClient> {
    return await connect(qemuTransport(() => Promise.resolve(this.openChannel()), this.name), {
      connectTimeoutMs: 120_000,
      timeoutMs: 120_000,
      ...opts,
    });
  }

  /**
   * Makes the next session's bpfd run with extra arguments (e.g. `["--probe-mode", "tracefs"]`).
   * The guest starts each bpfd as soon as the previous one ends, so the one already waiting is
   * used up by an empty session first; the arguments apply to that one next session only.
   */
  async nextSessionArgs(args: string[]): Promise<void> {
    // /init splits the file on blanks (no quoting): plain words only.
    const bad = args.find((a) => !/^[A-Za-z0-9_.,=:/+-]+$/.test(a));
    if (bad !== undefined) {
      throw new Error(`nextSessionArgs: ${JSON.stringify(bad)} is not a plain word`);
    }
    const r = await this.sh(`echo ${args.join(" ")} >/run/bpfd.args`);
    if (r.code !== 0) throw new Error(`${this.name}: cannot write /run/bpfd.args: ${r.out}`);
    const c = await this.connect();
    await c.close();
  }

  /**
   * Runs a shell command line in the guest (busybox sh -c, stdin /dev/null) through the action
   * agent; resolves with its exit status and combined output.
   */
  async sh(cmd: string, opts: { timeoutMs?: number } = {}): Promise<ShResult> {
    if (!this.#agent) throw new Error(`${this.name}: the VM is not up`);
    if (!this.#running) throw new Error(`${this.name}: qemu has ended\n${this.consoleTail()}`);
    try {
      return await this.#agent.run(cmd, opts.timeoutMs ?? 60_000);
    } catch (e) {
      throw new Error(
        `${this.name}: sh ${JSON.stringify(cmd)}: ${(e as Error).message}\n` +
          this.consoleTail(15),
      );
    }
  }

  /** Runs `fn`, records its duration under `label` in {@link timings}, returns its result. */
  async time<T>(label: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      this.timings[label] = performance.now() - t0;
    }
  }

  /** The timings as one line per entry (seconds), for stderr. */
  timingReport(): string {
    return Object.entries(this.timings).map(([k, v]) =>
      `vm ${this.facts.arch} ${this.facts.release}: ${k} ${(v / 1000).toFixed(1)} s`
    ).join("\n");
  }

  #qemuPid(): number | null {
    try {
      const pid = Number(Deno.readTextFileSync(`${this.runDir}/qemu.pid`).trim());
      return pid > 0 ? pid : null;
    } catch {
      return null;
    }
  }

  #killNow(): void {
    if (!this.#running) return;
    const pid = this.#qemuPid();
    for (const p of [pid, this.#child.pid]) {
      if (p === null) continue;
      try {
        Deno.kill(p, "SIGKILL");
      } catch { /* gone */ }
    }
  }

  /**
   * Powers the guest off and waits for qemu to end (it is killed if it does not within 15 s);
   * removes the run directory. With `now`, qemu is stopped at once (SIGTERM) instead: the guest
   * keeps nothing worth a clean power-off. Safe to call twice.
   */
  shutdown(opts: { now?: boolean } = {}): Promise<void> {
    return this.#shutdown ??= this.#doShutdown(opts.now ?? false);
  }

  async #doShutdown(now: boolean): Promise<void> {
    if (registeredHook(this.name) === this.#hook) unregisterQemuHook(this.name);
    const waitExit = async (ms: number) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const r = await Promise.race([
        this.#exited.then(() => true),
        new Promise<false>((res) => timer = setTimeout(() => res(false), ms)),
      ]);
      clearTimeout(timer);
      return r;
    };
    if (this.#running) {
      if (!now) await this.#agent?.fire("poweroff -f").catch(() => {});
      if (now || !(await waitExit(15_000))) {
        try {
          this.#child.kill("SIGTERM"); // timeout(1) passes it on to qemu
        } catch { /* gone */ }
        if (!(await waitExit(5_000))) this.#killNow();
      }
    }
    await this.#exited;
    this.#agent?.close();
    await this.#mux.close();
    await Promise.all(this.#pumps);
    globalThis.removeEventListener("unload", this.#unload);
    // Keep the last console log of this (arch, series) for post-mortems.
    await Deno.copyFile(
      `${this.runDir}/console.log`,
      `${vmCacheDir()}/last-console-${this.facts.arch}-${this.facts.series}.log`,
    ).catch(() => {});
    await removeIfExists(this.runDir);
  }
}

/**
 * Boots a VM: prepares (or reuses) its kernel, runtime and initramfs, starts qemu, waits for the
 * guest's first bpfd banner and connects the action agent. Registers the qemu hook
 * `vm-<arch>-<series>` (see {@link Vm.remote}). Throws {@link VmPrerequisiteError} when qemu is
 * not installed; boot failures carry the console's tail.
 *
 * @example
 * ```ts
 * import { bootVm } from "./lab.ts";
 * import { connectRemote } from "../../tools/transport/remote.ts";
 * const vm = await bootVm({ arch: "aarch64", series: "6.12" });
 * const c = await connectRemote(vm.remote, { connectTimeoutMs: 120_000 });
 * await c.close();
 * await vm.shutdown();
 * ```
 */
export async function bootVm(opts: BootOptions): Promise<Vm> {
  const { arch, series } = opts;
  const say = opts.onProgress ?? defaultProgress;
  const missing = qemuMissing(arch);
  if (missing) throw new VmPrerequisiteError(missing);
  const t0 = performance.now();
  const prep = await prepareVm({ arch, series, onProgress: say });
  const prepareMs = performance.now() - t0;
  const launcher = await writeLauncher(arch, series);
  const m = MACHINE[arch];
  const runs = `${vmCacheDir()}/run`;
  await Deno.mkdir(runs, { recursive: true });
  await sweepRuns(runs);
  const runDir = `${runs}/${arch}-${series}-${Deno.pid}-${++bootCount}`;
  await Deno.mkdir(runDir, { recursive: true });
  await writeInitrd(prep, `${runDir}/initrd.gz`);
  const hardSecs = Math.ceil((opts.timeoutMs ?? 20 * 60_000) / 1000);
  const args = [
    "-k",
    "5",
    String(hardSecs),
    m.qemu,
    ...m.machine,
    "-smp",
    String(opts.cpus ?? 2),
    "-m",
    String(opts.memoryMb ?? 1024),
    "-display",
    "none",
    "-monitor",
    "none",
    "-no-reboot",
    "-nic",
    "none",
    "-pidfile",
    `${runDir}/qemu.pid`,
    "-kernel",
    prep.kernel.vmlinuz,
    "-initrd",
    `${runDir}/initrd.gz`,
    "-append",
    `console=${m.console} quiet panic=-1`,
    "-serial",
    `file:${runDir}/console.log`,
    "-chardev",
    "stdio,id=ctl,signal=off",
    "-chardev",
    `socket,id=act,path=${runDir}/act.sock,server=on,wait=off`,
    "-device",
    m.serialBus,
    "-device",
    "virtserialport,chardev=ctl,name=ctl",
    "-device",
    "virtserialport,chardev=act,name=act",
    "-device",
    m.rng,
  ];
  say(`booting ${prep.kernel.release} (${m.qemu}, TCG)`);
  const child = new Deno.Command("timeout", {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let name = opts.name ?? `vm-${arch}-${series}`;
  // Another VM of this process may hold the default name: count up.
  for (let i = 2; !opts.name && registeredHook(name); i++) name = `vm-${arch}-${series}-${i}`;
  const vm = new Vm({
    name,
    facts: {
      arch,
      series,
      abi: prep.kernel.abi,
      release: prep.kernel.release,
      image: `${prep.kernel.image.name} ${prep.kernel.image.version}`,
    },
    sizes: prep.sizes,
    runDir,
    launcher,
    child,
  });
  vm.timings.prepare = prepareMs;
  try {
    await vm._ready(opts.bootTimeoutMs ?? 180_000);
  } catch (e) {
    await vm.shutdown().catch(() => {});
    throw e;
  }
  say(`${prep.kernel.release} up: first bpfd banner ${(vm.timings.boot / 1000).toFixed(1)} s`);
  return vm;
}

/** The hook registered under `name` in this process, or null. */
function registeredHook(name: string): QemuHook | null {
  try {
    return qemuHook(name);
  } catch {
    return null;
  }
}

/** Removes run directories of processes that no longer exist. */
async function sweepRuns(runs: string): Promise<void> {
  for await (const e of Deno.readDir(runs)) {
    const pid = Number(/-(\d+)-\d+$/.exec(e.name)?.[1]);
    if (!pid || pid === Deno.pid) continue;
    let alive = true;
    try {
      Deno.statSync(`/proc/${pid}`);
    } catch {
      alive = false;
    }
    if (!alive) await removeIfExists(`${runs}/${e.name}`);
  }
}
