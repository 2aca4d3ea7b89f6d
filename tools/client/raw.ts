/**
 * A raw BPFd protocol client over any pair of byte streams (a child process's
 * stdin/stdout, an ssh or adb session, a qemu virtio port). It frames
 * requests and splits responses on `END_BPFD_OUTPUT`; pipelining is allowed
 * (responses come back in order).
 *
 * @example
 * ```ts
 * import { RawClient } from "./raw.ts";
 * const c = RawClient.spawn(["deno", "run", "-A", "runtime/main.ts"]);
 * console.log(await c.send("HELLO"));
 * await c.close();
 * ```
 * @module
 */

import { BANNER, END, START } from "../../runtime/protocol/framing.ts";

/** Raised when the far side dies, garbles the stream, or does not answer in time. */
export class ChannelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ChannelError";
  }
}

/** One response: its body lines (without the START/END markers). */
export type Body = string[];

/** Options of {@link RawClient}. */
export interface RawClientOptions {
  /** Per-response timeout in ms (default 30 s; 0 = none). */
  timeoutMs?: number;
  /** Called with every line sent and received (for transcripts). */
  onTraffic?: (dir: ">" | "<", line: string) => void;
}

const enc = new TextEncoder();

/** A protocol client on a readable/writable byte stream pair. */
export class RawClient {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #dec = new TextDecoder();
  /** Received text after the last newline (an unfinished line). */
  #tail = "";
  /** Complete lines not yet consumed: `#lines[#head]` is the next one. */
  #lines: string[] = [];
  #head = 0;
  #eof = false;
  #child?: Deno.ChildProcess;
  #opts: RawClientOptions;
  #bannerSeen = false;

  constructor(
    readable: ReadableStream<Uint8Array>,
    writable: WritableStream<Uint8Array>,
    opts: RawClientOptions = {},
  ) {
    this.#reader = readable.getReader();
    this.#writer = writable.getWriter();
    this.#opts = opts;
  }

  /** Spawns `cmd` with piped stdio and returns a client on it (stderr inherited unless piped). */
  static spawn(
    cmd: string[],
    opts: RawClientOptions & {
      stderr?: "inherit" | "null" | "piped";
      env?: Record<string, string>;
    } = {},
  ): RawClient {
    const child = new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: opts.stderr ?? "inherit",
      env: opts.env,
    }).spawn();
    const c = new RawClient(child.stdout, child.stdin, opts);
    c.#child = child;
    return c;
  }

  /** The child process, when spawned by {@link spawn}. */
  get child(): Deno.ChildProcess | undefined {
    return this.#child;
  }

  async #fill(deadline: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const read = this.#reader.read();
      const r = deadline === Infinity ? await read : await Promise.race([
        read,
        new Promise<never>((_, rej) => {
          timer = setTimeout(
            () => rej(new ChannelError("no response from the runtime in time")),
            Math.max(0, deadline - Date.now()),
          );
        }),
      ]);
      if (r.done) {
        this.#eof = true;
        return false;
      }
      this.#take(this.#dec.decode(r.value, { stream: true }));
      return true;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /**
   * Splits received text into lines. Only the new text is split: a long line
   * arriving in many chunks is only appended to, never re-split.
   */
  #take(text: string): void {
    const parts = text.split("\n");
    if (parts.length === 1) {
      this.#tail += text;
      return;
    }
    parts[0] = this.#tail + parts[0];
    this.#tail = parts.pop()!;
    for (const p of parts) this.#push(p);
  }

  #push(line: string): void {
    this.#lines.push(line.endsWith("\r") ? line.slice(0, -1) : line);
  }

  /** The next line if one is already received (no waiting), else undefined. */
  #shiftLine(): string | undefined {
    if (this.#head === this.#lines.length) return undefined;
    const l = this.#lines[this.#head++];
    if (this.#head === this.#lines.length) {
      this.#lines = [];
      this.#head = 0;
    }
    this.#opts.onTraffic?.("<", l);
    return l;
  }

  /** Next line from the far side. */
  async readLine(timeoutMs = this.#opts.timeoutMs ?? 30_000): Promise<string> {
    const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Infinity;
    while (this.#head === this.#lines.length) {
      if (this.#eof || !(await this.#fill(deadline))) {
        throw new ChannelError("the runtime closed the channel (exited?)");
      }
    }
    return this.#shiftLine()!;
  }

  /** Writes one raw line (a `\n` is appended). */
  async write(line: string): Promise<void> {
    this.#opts.onTraffic?.(">", line);
    await this.#writer.write(enc.encode(line + "\n"));
  }

  /** Writes raw bytes as they are (for tests of the framing). */
  async writeRaw(bytes: Uint8Array): Promise<void> {
    await this.#writer.write(bytes);
  }

  /**
   * Reads one framed response (skipping the banner and any tty echo before
   * START). Lines already received are consumed synchronously: it awaits
   * only when it must read (a 200k-line body costs no 200k awaits).
   */
  async readResponse(timeoutMs?: number): Promise<Body> {
    let l = this.#shiftLine() ?? await this.readLine(timeoutMs);
    while (l !== START) {
      if (l === BANNER) this.#bannerSeen = true;
      else if (l === END) throw new ChannelError(`garbled stream: ${END} without ${START}`);
      l = this.#shiftLine() ?? await this.readLine(timeoutMs);
    }
    const body: string[] = [];
    for (;;) {
      l = this.#shiftLine() ?? await this.readLine(timeoutMs);
      if (l === END) return body;
      if (l === START) throw new ChannelError(`garbled stream: ${START} inside a response`);
      body.push(l);
    }
  }

  /** Sends one command and returns its response body. */
  async send(line: string, timeoutMs?: number): Promise<Body> {
    await this.write(line);
    return await this.readResponse(timeoutMs);
  }

  /** Sends several commands in one write and reads their responses in order. */
  async pipeline(lines: string[], timeoutMs?: number): Promise<Body[]> {
    for (const l of lines) this.#opts.onTraffic?.(">", l);
    // Read while writing: a large batch would otherwise fill both pipes and deadlock.
    const written = this.#writer.write(enc.encode(lines.map((l) => l + "\n").join("")));
    const out: Body[] = [];
    for (let i = 0; i < lines.length; i++) out.push(await this.readResponse(timeoutMs));
    await written;
    return out;
  }

  /** Whether the banner has been seen. */
  get bannerSeen(): boolean {
    return this.#bannerSeen;
  }

  /** Closes our side of the channel (the runtime sees EOF). */
  async endInput(): Promise<void> {
    try {
      await this.#writer.close();
    } catch { /* already closed */ }
  }

  /** Sends `exit` and waits for the child (if any) to end; returns its exit code. */
  async close(): Promise<number | null> {
    try {
      await this.write("exit");
    } catch { /* already gone */ }
    try {
      await this.#writer.close();
    } catch { /* already closed */ }
    if (this.#child) {
      const st = await this.#child.status;
      try {
        this.#reader.releaseLock();
        await this.#child.stdout.cancel();
      } catch { /* drained */ }
      return st.code;
    }
    return null;
  }
}

/** The number after `ret=` in a status line (BCC's rule), or null. */
export function retOf(body: Body): number | null {
  const m = /ret=(-?\d+)/.exec(body[0] ?? "");
  return m ? Number(m[1]) : null;
}

/** The errno in a failure status line (`errno=N`), or null. */
export function errnoOf(body: Body): number | null {
  const m = / errno=(\d+)/.exec(body[0] ?? "");
  return m ? Number(m[1]) : null;
}
