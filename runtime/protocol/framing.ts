/**
 * Wire framing of the BPFd protocol: the banner, the response markers, and a
 * line splitter with a hard line-length limit that keeps the stream in sync.
 *
 * @example
 * ```ts
 * import { frame, LineSplitter } from "./framing.ts";
 * const s = new LineSplitter(1024);
 * s.push(new TextEncoder().encode("GET_KALLSYMS\nexit\n"));
 * console.log(s.next()); // { line: "GET_KALLSYMS" }
 * console.log(frame(["bpf_create_map: ret=4"]));
 * ```
 * @module
 */

/** Printed once at start-up (and flushed). */
export const BANNER = "STARTED_BPFD";
/** First line of every response. */
export const START = "START_BPFD_OUTPUT";
/** Last line of every response. */
export const END = "END_BPFD_OUTPUT";
/** The original's answer to anything it cannot parse. */
export const NOT_RECOGNIZED = "Command not recognized";
/** The original's answer when a file reader cannot open its file. */
export const OPEN_FAILED = "Open failed, ignoring";

/**
 * Longest accepted command line in bytes, excluding the `\n` (16 MiB). A longer
 * line is discarded up to its newline and answered with one error response.
 */
export const MAX_LINE = 16 * 1024 * 1024;

const MARKER = /^\\*(?:START_BPFD_OUTPUT|END_BPFD_OUTPUT|STARTED_BPFD)$/;

/**
 * A body line that would read as a framing marker (a process may well be
 * called `END_BPFD_OUTPUT`) is sent with one more leading backslash; so is a
 * line of backslashes followed by a marker, which keeps the escape reversible.
 */
export function escapeLine(line: string): string {
  return MARKER.test(line) ? "\\" + line : line;
}

/** Inverse of {@link escapeLine}. */
export function unescapeLine(line: string): string {
  return line.startsWith("\\") && MARKER.test(line) ? line.slice(1) : line;
}

/** The body lines of a response, each escaped and `\n`-terminated. */
export function frameBody(body: readonly string[]): string {
  let out = "";
  for (const l of body) out += (MARKER.test(l) ? "\\" + l : l) + "\n";
  return out;
}

/** A response body framed for the wire (lines escaped with {@link escapeLine}). */
export function frame(body: readonly string[]): string {
  return `${START}\n${frameBody(body)}${END}\n`;
}

/** What the splitter yields: a line, or the size of a line that was too long. */
export type SplitResult = { line: string } | { tooLong: number };

const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/**
 * Splits a byte stream into `\n`-terminated lines. Lines longer than the
 * limit are dropped whole (the bytes are not kept) and reported once.
 */
export class LineSplitter {
  #max: number;
  #parts: Uint8Array[] = [];
  #partLen = 0;
  #buf: Uint8Array = new Uint8Array(0);
  #pos = 0;
  #discarding = 0;

  constructor(maxLine = MAX_LINE) {
    this.#max = maxLine;
  }

  /** Adds bytes read from the stream (the array is copied if it must be kept). */
  push(bytes: Uint8Array): void {
    if (this.#pos < this.#buf.length) {
      // Unconsumed data: keep it in front of the new bytes.
      const rest = this.#buf.subarray(this.#pos);
      const merged = new Uint8Array(rest.length + bytes.length);
      merged.set(rest);
      merged.set(bytes, rest.length);
      this.#buf = merged;
    } else {
      this.#buf = bytes.slice();
    }
    this.#pos = 0;
  }

  /** True when a complete line (or a too-long report) is ready without more input. */
  hasLine(): boolean {
    return this.#buf.indexOf(10, this.#pos) >= 0;
  }

  /** True when bytes of an unterminated line are held (or being discarded). */
  hasPartial(): boolean {
    return this.#partLen > 0 || this.#discarding > 0 || this.#pos < this.#buf.length;
  }

  /** The next complete line, or null when more input is needed. */
  next(): SplitResult | null {
    while (true) {
      const nl = this.#buf.indexOf(10, this.#pos);
      if (nl < 0) {
        const tail = this.#buf.length - this.#pos;
        if (this.#discarding || this.#partLen + tail > this.#max) {
          this.#discarding = (this.#discarding || this.#partLen) + tail;
          this.#parts = [];
          this.#partLen = 0;
        } else if (tail > 0) {
          this.#parts.push(this.#buf.slice(this.#pos));
          this.#partLen += tail;
        }
        this.#buf = new Uint8Array(0);
        this.#pos = 0;
        return null;
      }
      const seg = this.#buf.subarray(this.#pos, nl);
      this.#pos = nl + 1;
      if (this.#discarding) {
        const n = this.#discarding + seg.length;
        this.#discarding = 0;
        return { tooLong: n };
      }
      if (this.#partLen + seg.length > this.#max) {
        const n = this.#partLen + seg.length;
        this.#parts = [];
        this.#partLen = 0;
        return { tooLong: n };
      }
      let bytes = seg;
      if (this.#partLen) {
        bytes = new Uint8Array(this.#partLen + seg.length);
        let o = 0;
        for (const p of this.#parts) {
          bytes.set(p, o);
          o += p.length;
        }
        bytes.set(seg, o);
        this.#parts = [];
        this.#partLen = 0;
      }
      return { line: decoder.decode(bytes) };
    }
  }
}
