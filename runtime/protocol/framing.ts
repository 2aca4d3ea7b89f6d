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

import { encodeBase64Bytes } from "./base64.ts";

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

/**
 * Whether a line needs the regex of {@link escapeLine}: only a line that
 * starts with a backslash (any length), or starts with S or E and is no
 * longer than the longest marker, can be one. Keeps the escaping check of a
 * many-line body (a 200k-line dump) to two character tests per line.
 */
function mayBeMarker(line: string): boolean {
  const c = line.charCodeAt(0);
  return c === 92 /* \\ */ ||
    ((c === 83 /* S */ || c === 69 /* E */) && line.length <= START.length);
}

/** The body lines of a response, each escaped and `\n`-terminated. */
export function frameBody(body: readonly string[]): string {
  if (body.length === 0) return "";
  let escaped: string[] | null = null; // a copy, made only if a line needs escaping
  for (let i = 0; i < body.length; i++) {
    if (mayBeMarker(body[i]) && MARKER.test(body[i])) {
      escaped ??= body.slice();
      escaped[i] = "\\" + body[i];
    }
  }
  return (escaped ?? body).join("\n") + "\n";
}

/** A response body framed for the wire (lines escaped with {@link escapeLine}). */
export function frame(body: readonly string[]): string {
  return `${START}\n${frameBody(body)}${END}\n`;
}

const ASCII = new TextEncoder();
const START_LINE = ASCII.encode(START + "\n");
const END_LINE = ASCII.encode("\n" + END + "\n");

/** Bytes {@link frameBase64Into} writes for `n` bytes of data. */
export function framedBase64Size(n: number): number {
  return START_LINE.length + Math.ceil(n / 3) * 4 + END_LINE.length;
}

/**
 * Writes the response whose body is one line, the base64 of `bytes`, into
 * `out` at `at` (room: {@link framedBase64Size}); returns the end. The same
 * bytes as `frame([encodeBase64(bytes)])` encoded (a base64 line is never a
 * marker), without building any string: BPF_LOOKUP_ELEM's hot path.
 */
export function frameBase64Into(bytes: Uint8Array, out: Uint8Array, at: number): number {
  out.set(START_LINE, at);
  const o = encodeBase64Bytes(bytes, 0, bytes.length, out, at + START_LINE.length);
  out.set(END_LINE, o);
  return o + END_LINE.length;
}

/** What the splitter yields: a line, or the size of a line that was too long. */
export type SplitResult = { line: string } | { tooLong: number };

const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const EMPTY = new Uint8Array(0);

/**
 * Splits a byte stream into `\n`-terminated lines. Lines longer than the
 * limit are dropped whole (the bytes are not kept) and reported once.
 *
 * Pushed bytes are scanned in place, not copied: the splitter borrows them
 * until {@link next} returns null, and only then (having copied the tail of
 * an unterminated line) lets go, so a reader can reuse one input buffer for
 * every read.
 */
export class LineSplitter {
  #max: number;
  /** Copies of the earlier pieces of an unterminated line. */
  #parts: Uint8Array[] = [];
  #partLen = 0;
  /** The bytes being scanned (borrowed from the caller). */
  #buf: Uint8Array = EMPTY;
  #pos = 0;
  /** End of the line {@link peek} returned. */
  #peeked = -1;
  #discarding = 0;

  constructor(maxLine = MAX_LINE) {
    this.#max = maxLine;
  }

  /**
   * Adds bytes read from the stream. They are borrowed until {@link next}
   * returns null: the caller must not change them before that.
   */
  push(bytes: Uint8Array): void {
    if (this.#pos < this.#buf.length) {
      // Pushed before the previous bytes were drained: keep them in front (a copy).
      const rest = this.#buf.subarray(this.#pos);
      const merged = new Uint8Array(rest.length + bytes.length);
      merged.set(rest);
      merged.set(bytes, rest.length);
      this.#buf = merged;
    } else {
      this.#buf = bytes;
    }
    this.#pos = 0;
  }

  /** True when a complete line (or a too-long report) is ready without more input. */
  hasLine(): boolean {
    return this.#buf.indexOf(10, this.#pos) >= 0;
  }

  /**
   * The next line's bytes (without the newline) when it lies whole in the
   * buffer, as it nearly always does, without consuming it; else null. For a
   * hot path that parses bytes instead of strings: it then consumes the line
   * with {@link skip}, or leaves it to {@link next}. The view is valid until
   * the next push.
   */
  peek(): Uint8Array | null {
    if (this.#partLen || this.#discarding) return null;
    const nl = this.#buf.indexOf(10, this.#pos);
    if (nl < 0 || nl - this.#pos > this.#max) return null;
    this.#peeked = nl;
    return this.#buf.subarray(this.#pos, nl);
  }

  /** Consumes the line {@link peek} returned. */
  skip(): void {
    this.#pos = this.#peeked + 1;
  }

  /** True when bytes of an unterminated line are held (or being discarded). */
  hasPartial(): boolean {
    return this.#partLen > 0 || this.#discarding > 0 || this.#pos < this.#buf.length;
  }

  /** The next complete line, or null when more input is needed. */
  next(): SplitResult | null {
    const nl = this.#buf.indexOf(10, this.#pos);
    if (nl < 0) {
      this.#keepTail();
      return null;
    }
    const seg = this.#buf.subarray(this.#pos, nl);
    this.#pos = nl + 1;
    if (this.#discarding) {
      const n = this.#discarding + seg.length;
      this.#discarding = 0;
      return { tooLong: n };
    }
    if (this.#partLen === 0) {
      // The common case: the whole line is in the buffer.
      return seg.length > this.#max ? { tooLong: seg.length } : { line: decoder.decode(seg) };
    }
    const n = this.#partLen + seg.length;
    const parts = this.#parts;
    this.#parts = [];
    this.#partLen = 0;
    if (n > this.#max) return { tooLong: n };
    const bytes = new Uint8Array(n);
    let o = 0;
    for (const p of parts) {
      bytes.set(p, o);
      o += p.length;
    }
    bytes.set(seg, o);
    return { line: decoder.decode(bytes) };
  }

  /**
   * Out of complete lines: copies the unterminated tail (or only counts it,
   * if the line is too long) and lets go of the borrowed buffer.
   */
  #keepTail(): void {
    const tail = this.#buf.length - this.#pos;
    if (this.#discarding || this.#partLen + tail > this.#max) {
      this.#discarding = (this.#discarding || this.#partLen) + tail;
      this.#parts = [];
      this.#partLen = 0;
    } else if (tail > 0) {
      this.#parts.push(this.#buf.slice(this.#pos));
      this.#partLen += tail;
    }
    this.#buf = EMPTY;
    this.#pos = 0;
  }
}
