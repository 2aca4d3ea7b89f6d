/**
 * The common ground of every transport: a {@link Channel} (a byte stream pair to a runtime plus
 * what is known about the far side), the {@link Transport} interface that opens one, and
 * {@link ChannelClient}, a `RawClient` that turns "the stream ended" and "no answer in time" into
 * errors naming the transport, the far side's exit status and the tail of its stderr.
 *
 * @example
 * ```ts
 * import { connect } from "./channel.ts";
 * import { processTransport } from "./process.ts";
 * const client = await connect(processTransport());
 * console.log(await client.send("GET_CPUS"));
 * await client.close();
 * ```
 * @module
 */

import { ChannelError, RawClient, type RawClientOptions } from "../client/raw.ts";
import { BANNER, END, START } from "../../runtime/protocol/framing.ts";

export { ChannelError, RawClient };
export type { RawClientOptions };

/** How the far side ended, as far as the transport can tell. */
export interface ExitInfo {
  /** Exit status (ssh: the remote command's, or 255 for ssh's own failures); null if unknown. */
  code: number | null;
  /** Signal that ended the local process (e.g. `SIGKILL`), if any. */
  signal: string | null;
  /** The last lines the far side wrote to stderr (at most a few KiB). */
  stderrTail: string;
}

/**
 * A byte stream pair to a runtime. Transports that run a local process (process, ssh, adb) also
 * report how it ended.
 *
 * @example
 * ```ts
 * import type { Channel } from "./channel.ts";
 * const loopback: Channel = {
 *   describe: "test",
 *   ...new TransformStream<Uint8Array, Uint8Array>(),
 * };
 * ```
 */
export interface Channel {
  /** The runtime's stdout. */
  readable: ReadableStream<Uint8Array>;
  /** The runtime's stdin. */
  writable: WritableStream<Uint8Array>;
  /** What runs on the far side, for messages (e.g. the argv). */
  describe: string;
  /** Resolves when the far side has ended (absent when the transport cannot tell). */
  exited?: Promise<ExitInfo>;
  /** The stderr tail so far (absent when the transport has no stderr). */
  stderrTail?: () => string;
  /** Forcibly ends the far side (kill the local process). */
  kill?: () => void;
  /** Releases what the channel holds once the client is done (called by `close()`). */
  dispose?: () => Promise<void>;
}

/**
 * Something that can open a {@link Channel} to a runtime: `process`, `ssh`, `adb`, `qemu`, or a
 * replayed transcript.
 *
 * @example
 * ```ts
 * import { connect, type Transport } from "./channel.ts";
 * async function hello(t: Transport) {
 *   const c = await connect(t);
 *   try { return await c.send("HELLO"); } finally { await c.close(); }
 * }
 * ```
 */
export interface Transport {
  /** The transport kind. */
  readonly kind: "process" | "ssh" | "adb" | "qemu" | "replay";
  /** A one-line description for messages (argv for the process-based ones). */
  describe(): string;
  /** Opens a fresh channel (a new runtime session). */
  open(): Promise<Channel>;
}

/** Options of {@link connect} and {@link ChannelClient}. */
export interface ConnectOptions extends RawClientOptions {
  /** Wait for the `STARTED_BPFD` banner before returning (default true). */
  waitBanner?: boolean;
  /** How long to wait for the banner, in ms (default 30 s: ssh handshakes can be slow). */
  connectTimeoutMs?: number;
  /**
   * Treat a line received outside a response (other than the banner) as a garbled stream
   * (default true). Turn off for pty transports, where the tty echoes each command.
   */
  strict?: boolean;
}

/** Why a channel failed. */
export type ChannelFailure = "exited" | "timeout" | "garbled";

/**
 * A channel failure with what is known about the far side. It is a `ChannelError`, so code that
 * catches the raw client's errors keeps working.
 *
 * @example
 * ```ts
 * import { TransportError } from "./channel.ts";
 * try { /* … *\/ } catch (e) {
 *   if (e instanceof TransportError && e.failure === "exited") console.error(e.exit?.stderrTail);
 * }
 * ```
 */
export class TransportError extends ChannelError {
  /** What went wrong. */
  readonly failure: ChannelFailure;
  /** How the far side ended, when it did and the transport can tell. */
  readonly exit: ExitInfo | null;
  /** A failure of kind `failure`; `exit` when the far side has ended. */
  constructor(message: string, failure: ChannelFailure, exit: ExitInfo | null = null) {
    super(message);
    this.name = "TransportError";
    this.failure = failure;
    this.exit = exit;
  }
}

const enc = new TextEncoder();
const STRAY_KEEP = 5;

/** Waits for `p` at most `ms`; resolves to undefined on timeout (and clears its timer). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function quoteTail(text: string): string {
  const t = text.trimEnd();
  if (t === "") return "(stderr was empty)";
  return `stderr ends with:\n  ${t.split("\n").slice(-8).join("\n  ")}`;
}

/**
 * A `RawClient` on a {@link Channel}: the same API, plus errors that say what happened to the far
 * side, a strict check for stray lines, and a `close()` that never hangs.
 *
 * @example
 * ```ts
 * import { ChannelClient } from "./channel.ts";
 * import { processTransport } from "./process.ts";
 * const client = new ChannelClient(await processTransport().open(), { timeoutMs: 5000 });
 * await client.waitBanner();
 * console.log(await client.send("GET_CPUS"));
 * await client.close();
 * ```
 */
export class ChannelClient extends RawClient {
  #channel: Channel;
  #opts: ConnectOptions;
  #inResponse = false;
  #stray: string[] = [];
  #recent: string[] = [];
  #closed = false;
  /** Set while waiting for the banner (its timeout), for the messages. */
  #bannerWait: number | null = null;
  #abort: AbortController;
  #pumped: Promise<void>;

  /** A client on `channel` (call {@link waitBanner} before the first command, or use connect). */
  constructor(channel: Channel, opts: ConnectOptions = {}) {
    const user = opts.onTraffic;
    // The traffic hook sees every line: it keeps the framing state for the strict check.
    const hook = (dir: ">" | "<", line: string) => {
      if (dir === "<") this.#observe(line);
      user?.(dir, line);
    };
    // The far side's output goes through a pipe we can abort: once the client is done, the
    // channel's readable is cancelled even if the client stopped reading mid-response.
    const abort = new AbortController();
    const pass = new TransformStream<Uint8Array, Uint8Array>();
    const pumped = channel.readable.pipeTo(pass.writable, { signal: abort.signal }).catch(() => {});
    super(pass.readable, channel.writable, { ...opts, onTraffic: hook });
    this.#channel = channel;
    this.#opts = opts;
    this.#abort = abort;
    this.#pumped = pumped;
  }

  /** The channel this client runs on. */
  get channel(): Channel {
    return this.#channel;
  }

  #observe(line: string): void {
    this.#recent.push(line); // shortened only when an error quotes it (this runs per event line)
    if (this.#recent.length > STRAY_KEEP) this.#recent.shift();
    if (line === START) this.#inResponse = true;
    else if (line === END) this.#inResponse = false;
    else if (!this.#inResponse && line !== BANNER) {
      this.#stray.push(line);
      if (this.#stray.length > STRAY_KEEP) this.#stray.shift();
    }
  }

  /** Throws when strict and a stray line was seen (what a garbled stream looks like). */
  #checkStray(): void {
    if (this.#opts.strict === false || this.#stray.length === 0) return;
    const lines = this.#stray.map((l) => JSON.stringify(l.slice(0, 120))).join(", ");
    this.#stray = [];
    throw new TransportError(
      `${this.#channel.describe}: garbled stream: line(s) outside any response: ${lines}. ` +
        "Something other than bpfd writes to the channel (a login banner, a shell error, a tty " +
        "echo?); check the remote command, or pass strict: false for a pty transport",
      "garbled",
    );
  }

  /** Turns an error of the raw client into a {@link TransportError} with the far side's story. */
  async #explain(e: unknown): Promise<unknown> {
    if (e instanceof TransportError || !(e instanceof ChannelError)) return e;
    const d = this.#channel.describe;
    const msg = e.message;
    if (/garbled/.test(msg)) {
      return new TransportError(
        `${d}: ${msg} (last lines received: ${
          JSON.stringify(this.#recent.map((l) => l.length > 200 ? `${l.slice(0, 200)}…` : l))
        }); the stream is out ` +
          "of sync: close this session and start a new one",
        "garbled",
      );
    }
    if (/in time/.test(msg)) {
      const strays = this.#stray.length
        ? `; lines outside any response: ${JSON.stringify(this.#stray)}`
        : "";
      const tail = this.#channel.stderrTail?.() ?? "";
      if (this.#bannerWait !== null) {
        return new TransportError(
          `${d}: no STARTED_BPFD banner within ${this.#bannerWait} ms${strays}` +
            (tail.trim() ? `; ${quoteTail(tail)}` : "") +
            "; check that the command starts bpfd (an original BPFd does not flush its banner " +
            "on a pipe: connect with waitBanner: false)",
          "timeout",
        );
      }
      return new TransportError(
        `${d}: no response within the timeout${strays}` +
          (tail.trim() ? `; ${quoteTail(tail)}` : "") +
          "; the runtime may be stuck or the link down: raise timeoutMs, or check the far side",
        "timeout",
      );
    }
    // The stream ended: wait briefly for the far side's exit status.
    const exit = this.#channel.exited ? (await within(this.#channel.exited, 3000)) ?? null : null;
    const status = exit
      ? exit.signal ? `killed by ${exit.signal}` : `exit status ${exit.code}`
      : "exit status unknown";
    const tail = exit?.stderrTail ?? this.#channel.stderrTail?.() ?? "";
    const when = this.#bannerWait !== null ? " before its STARTED_BPFD banner" : "";
    return new TransportError(
      `${d}: the far side closed the channel${when} (${status}); ${quoteTail(tail)}` +
        (exit?.code === 255 && /^ssh /.test(d) ? " (255 is ssh's own failure: see above)" : "") +
        (exit?.code === 127 ? " (127: the bpfd command was not found on the far side)" : ""),
      "exited",
      exit,
    );
  }

  async #guard<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      throw await this.#explain(e);
    }
  }

  /**
   * Waits for the `STARTED_BPFD` banner (a pipe client may: bpfd flushes it at once).
   * An original BPFd does not flush it on a pipe; connect with `waitBanner: false` there.
   */
  async waitBanner(timeoutMs = this.#opts.connectTimeoutMs ?? 30_000): Promise<void> {
    this.#bannerWait = timeoutMs;
    try {
      await this.#guard(async () => {
        for (;;) {
          const l = await super.readLine(timeoutMs);
          if (l === BANNER) return;
          this.#checkStray();
        }
      });
    } finally {
      this.#bannerWait = null;
    }
  }

  /** The next line from the far side (errors explained as {@link TransportError}). */
  override readLine(timeoutMs?: number): Promise<string> {
    return this.#guard(() => super.readLine(timeoutMs));
  }

  /** One framed response; a stray line before it is a garbled stream when strict. */
  override readResponse(timeoutMs?: number): Promise<string[]> {
    return this.#guard(async () => {
      const body = await super.readResponse(timeoutMs);
      this.#checkStray();
      return body;
    });
  }

  /** Writes one line (a `\n` is appended); a dead far side is reported with its exit status. */
  override write(line: string): Promise<void> {
    return this.#guard(() => super.write(line)).catch(async (e) => {
      // A write to a dead far side fails with EPIPE: report how it died instead.
      if (e instanceof TransportError) throw e;
      throw await this.#explain(new ChannelError(`write failed: ${(e as Error).message}`));
    });
  }

  /** Writes raw bytes as they are. */
  override writeRaw(bytes: Uint8Array): Promise<void> {
    return this.#guard(() => super.writeRaw(bytes));
  }

  /**
   * Sends several commands in one write and reads their responses in order. A failed write
   * (the far side died) never escapes as an unhandled rejection: the read reports it.
   */
  override pipeline(lines: string[], timeoutMs?: number): Promise<string[][]> {
    return this.#guard(async () => {
      for (const l of lines) this.#opts.onTraffic?.(">", l);
      const written = super.writeRaw(enc.encode(lines.map((l) => l + "\n").join("")));
      let writeError: unknown = null;
      written.catch((e) => writeError = e);
      const out: string[][] = [];
      for (let i = 0; i < lines.length; i++) out.push(await this.readResponse(timeoutMs));
      await written.catch(() => {});
      if (writeError) throw writeError;
      return out;
    });
  }

  /** How the far side ended, once it has (null while it runs or when unknown). */
  async exitInfo(waitMs = 0): Promise<ExitInfo | null> {
    if (!this.#channel.exited) return null;
    return (await within(this.#channel.exited, waitMs)) ?? null;
  }

  /**
   * Sends `exit`, closes our side and waits for the far side to end (at most `graceMs`, then it
   * is killed). Returns the exit status when known. Safe to call twice.
   */
  override async close(graceMs = 5000): Promise<number | null> {
    if (this.#closed) return (await this.exitInfo())?.code ?? null;
    this.#closed = true;
    await super.close();
    let exit: ExitInfo | null = null;
    if (this.#channel.exited) {
      exit = (await within(this.#channel.exited, graceMs)) ?? null;
      if (!exit) {
        this.#channel.kill?.();
        exit = (await within(this.#channel.exited, 2000)) ?? null;
      }
    }
    this.#abort.abort();
    await this.#pumped;
    await this.#channel.dispose?.();
    return exit?.code ?? null;
  }
}

/**
 * Opens a channel with `transport`, wraps it in a {@link ChannelClient} and (by default) waits for
 * the banner, so a far side that cannot start fails here with its exit status and stderr.
 *
 * @example
 * ```ts
 * import { connect } from "./channel.ts";
 * import { sshTransport } from "./ssh.ts";
 * const c = await connect(sshTransport({ host: "board", bpfd: "/usr/local/bin/bpfd" }));
 * await c.close();
 * ```
 */
export async function connect(
  transport: Transport,
  opts: ConnectOptions = {},
): Promise<ChannelClient> {
  const channel = await transport.open();
  const client = new ChannelClient(channel, opts);
  if (opts.waitBanner !== false) {
    try {
      await client.waitBanner();
    } catch (e) {
      await client.close(500).catch(() => {});
      throw e;
    }
  }
  return client;
}
