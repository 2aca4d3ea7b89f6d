/**
 * Normalisation for replays: two sessions of the same commands differ in fd numbers, pids,
 * timestamps and addresses. A {@link Normaliser} compares a recorded line with an actual one
 * modulo those differences, learning bindings as it goes, and rewrites recorded commands with
 * the bound values before they are sent again.
 *
 * Rules:
 * - **fds by binding.** A number first seen in the `ret=` of a command that returns an fd
 *   (`bpf_create_map`, `bpf_prog_load`, `bpf_attach_*`, `bpf_open_perf_buffer`, …) or in the
 *   `map`/`prog`/`attach` lines of `BUNDLE_LOAD` is a variable: the recorded and the actual
 *   number are bound, and afterwards every whole space-separated token equal to the recorded
 *   number stands for the actual one (a later `ret=` of the same number rebinds it: fds are
 *   reused after a close). Caveat: a non-fd token that happens to equal a bound fd number is
 *   substituted too; fds of the runtime start around 20, sizes and counts rarely collide.
 * - **pids.** `pid=N` in `HELLO` is bound like an fd; `# replay self N` binds the recording
 *   client's pid to the replaying one's; `# replay pid <regex>` binds the capture groups of any
 *   line matching the regex.
 * - **marks** (`# replay …` notes, applied to every line that matches):
 *   - `mask <regex>`: the capture groups may differ (timestamps, paths);
 *   - `fd <regex>` / `pid <regex>`: the capture groups are variables;
 *   - `b64 <fields> <regex>`: capture group 1 is base64; `fields` is a comma list of
 *     `<kind>:<type>@<offset>` with kind `any` (ignored: timestamps, addresses, padding), `fd` or
 *     `pid` (bound), and type `u8`, `u16`, `u32`, `u64` (little-endian). The other bytes must
 *     match. In recorded commands, bound `fd`/`pid` fields are rewritten before sending.
 *
 * @example
 * ```ts
 * import { Normaliser } from "./normalise.ts";
 * const n = new Normaliser([]);
 * n.compare("bpf_create_map: ret=22", "bpf_create_map: ret=25"); // null: 22 is now bound to 25
 * console.log(n.rewrite("BPF_MAP_DUMP 22")); // BPF_MAP_DUMP 25
 * ```
 * @module
 */

import { abbreviation } from "./transcript.ts";

/** A field of a base64 payload. */
export interface B64Field {
  /** `any`: ignored; `fd`/`pid`: a bound variable. */
  kind: "any" | "fd" | "pid";
  /** Little-endian unsigned integer of this width. */
  type: "u8" | "u16" | "u32" | "u64";
  /** Byte offset in the decoded payload. */
  offset: number;
}

/** A normalisation mark (from a `# replay …` note). */
export type Mark =
  | { kind: "mask"; re: RegExp }
  | { kind: "fd" | "pid"; re: RegExp }
  | { kind: "b64"; re: RegExp; fields: B64Field[] }
  | { kind: "self"; value: string };

const SIZES = { u8: 1, u16: 2, u32: 4, u64: 8 } as const;

/**
 * Labels whose `ret=` is a new fd.
 *
 * @example
 * ```ts
 * import { FD_LABELS } from "./normalise.ts";
 * FD_LABELS.has("bpf_create_map"); // true
 * ```
 */
export const FD_LABELS: ReadonlySet<string> = new Set([
  "bpf_create_map",
  "bpf_prog_load",
  "bpf_attach_kprobe",
  "bpf_attach_uprobe",
  "bpf_attach_tracepoint",
  "bpf_attach_perf_event",
  "bpf_open_perf_buffer",
  "bpf_attach_prog",
]);

function regex(src: string, what: string): RegExp {
  try {
    return new RegExp(src, "d");
  } catch (e) {
    throw new Error(`# replay ${what}: bad regex ${JSON.stringify(src)}: ${(e as Error).message}`);
  }
}

/**
 * Parses the directive of a `# replay …` note into a {@link Mark}; null for actions (`run`,
 * `sleep`) and unknown words (ignored, so that newer transcripts still load).
 *
 * @example
 * ```ts
 * import { parseMark } from "./normalise.ts";
 * parseMark("b64 any:u64@8,pid:u32@4 ^\\d+ 16 (\\S+)$");
 * ```
 */
export function parseMark(directive: string): Mark | null {
  const sp = directive.indexOf(" ");
  const word = sp < 0 ? directive : directive.slice(0, sp);
  const rest = sp < 0 ? "" : directive.slice(sp + 1);
  switch (word) {
    case "self":
      if (!/^\d+$/.test(rest)) throw new Error(`# replay self: expected a pid, got ${rest}`);
      return { kind: "self", value: rest };
    case "mask":
    case "fd":
    case "pid":
      return { kind: word, re: regex(rest, word) };
    case "b64": {
      const sp2 = rest.indexOf(" ");
      if (sp2 < 0) throw new Error("# replay b64: expected <fields> <regex>");
      const fields = rest.slice(0, sp2).split(",").map((f) => {
        const m = /^(any|fd|pid):(u8|u16|u32|u64)@(\d+)$/.exec(f);
        if (!m) {
          throw new Error(`# replay b64: bad field ${JSON.stringify(f)} (want kind:type@offset)`);
        }
        return { kind: m[1], type: m[2], offset: Number(m[3]) } as B64Field;
      });
      return { kind: "b64", re: regex(rest.slice(sp2 + 1), "b64"), fields };
    }
  }
  return null;
}

const HELLO_PID: Mark = { kind: "pid", re: /^pid=(\d+)$/d };
const PLACE = "\u0000";

function readField(b: Uint8Array, f: B64Field): bigint | null {
  const n = SIZES[f.type];
  if (f.offset + n > b.length) return null;
  let v = 0n;
  for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[f.offset + i]);
  return v;
}

function writeField(b: Uint8Array, f: B64Field, v: bigint): void {
  for (let i = 0; i < SIZES[f.type]; i++) b[f.offset + i] = Number((v >> BigInt(8 * i)) & 0xffn);
}

/** Replaces each capture group's text (from a `d`-flag match) with `f(group text, index)`. */
function spliceGroups(
  line: string,
  m: RegExpExecArray,
  f: (text: string, i: number) => string,
): string {
  const idx = m.indices!;
  const spans: [number, number, number][] = [];
  for (let g = 1; g < idx.length; g++) if (idx[g]) spans.push([idx[g]![0], idx[g]![1], g]);
  spans.sort((a, b) => b[0] - a[0]);
  let out = line;
  for (const [s, e, g] of spans) out = out.slice(0, s) + f(out.slice(s, e), g) + out.slice(e);
  return out;
}

/**
 * Compares recorded lines with actual ones modulo bindings and marks.
 *
 * @example
 * ```ts
 * import { Normaliser, parseMark } from "./normalise.ts";
 * const n = new Normaliser([parseMark("mask ^release=(.*)$")!]);
 * console.log(n.compare("release=6.1", "release=6.18")); // null (equal after masking)
 * ```
 */
export class Normaliser {
  #marks: Mark[];
  #recToAct = new Map<string, string>();
  #actToRec = new Map<string, string>();

  /** `selfPid`: the replaying client's pid, bound to the recorded `# replay self`. */
  constructor(marks: Mark[], opts: { selfPid?: number } = {}) {
    this.#marks = [HELLO_PID, ...marks.filter((m) => m.kind !== "self")];
    for (const m of marks) {
      if (m.kind === "self") this.#bind(m.value, String(opts.selfPid ?? Deno.pid), true);
    }
  }

  /** Builds a normaliser from a transcript's `# replay …` directives. */
  static fromDirectives(directives: string[], opts: { selfPid?: number } = {}): Normaliser {
    return new Normaliser(
      directives.map(parseMark).filter((m): m is Mark => m !== null),
      opts,
    );
  }

  /** The bindings, recorded → actual (for reports). */
  get bindings(): ReadonlyMap<string, string> {
    return this.#recToAct;
  }

  /** Binds `rec` to `act`; `fresh` replaces earlier bindings of either (fd reuse). */
  #bind(rec: string, act: string, fresh: boolean): string | null {
    const cur = this.#recToAct.get(rec);
    if (!fresh) {
      if (cur !== undefined) return cur === act ? null : `${rec} is bound to ${cur}, not ${act}`;
      const back = this.#actToRec.get(act);
      if (back !== undefined && back !== rec) return `${act} is already bound to ${back}`;
    } else {
      if (cur !== undefined) this.#actToRec.delete(cur);
      const back = this.#actToRec.get(act);
      if (back !== undefined) this.#recToAct.delete(back);
    }
    this.#recToAct.set(rec, act);
    this.#actToRec.set(act, rec);
    return null;
  }

  /**
   * Compares recorded line `rec` with actual line `act`, binding new variables. Returns null when
   * they match, else the reason.
   */
  compare(rec: string, act: string): string | null {
    const ab = abbreviation(rec);
    if (ab) {
      return act.startsWith(ab.prefix) && [...act].length === ab.length
        ? null
        : "differs from the abbreviated recorded line";
    }
    if (rec === act && !/\d/.test(rec)) return null;
    let r = rec;
    let a = act;
    for (const mark of this.#marks) {
      if (mark.kind === "self") continue;
      const mr = mark.re.exec(r);
      if (!mr) continue;
      const ma = mark.re.exec(a);
      if (!ma) return `the recorded line matches the mark /${mark.re.source}/, the actual not`;
      if (mark.kind === "mask") {
        r = spliceGroups(r, mr, () => PLACE);
        a = spliceGroups(a, ma, () => PLACE);
      } else if (mark.kind === "fd" || mark.kind === "pid") {
        for (let g = 1; g < mr.length; g++) {
          if (mr[g] === undefined || ma[g] === undefined) continue;
          const why = this.#bind(mr[g], ma[g], false);
          if (why) return `${mark.kind} ${why}`;
        }
        r = spliceGroups(r, mr, () => PLACE);
        a = spliceGroups(a, ma, () => PLACE);
      } else if (mark.kind === "b64") {
        const why = this.#comparePayload(mark, mr[1] ?? "", ma[1] ?? "");
        if (why) return why;
        r = spliceGroups(r, mr, (t, g) => g === 1 ? PLACE : t);
        a = spliceGroups(a, ma, (t, g) => g === 1 ? PLACE : t);
      }
    }
    // fd-returning status lines and BUNDLE_LOAD's map/prog/attach lines bind afresh.
    const sr = /^(\S+): ret=(\d+)$/.exec(r);
    const sa = /^(\S+): ret=(\d+)$/.exec(a);
    if (sr && sa && sr[1] === sa[1] && FD_LABELS.has(sr[1])) {
      this.#bind(sr[2], sa[2], true);
      return null;
    }
    const lr = /^(map|prog|attach) (\d+) /.exec(r);
    const la = /^(map|prog|attach) (\d+) /.exec(a);
    if (lr && la && lr[1] === la[1]) {
      this.#bind(lr[2], la[2], true);
      r = r.slice(lr[0].length);
      a = a.slice(la[0].length);
    }
    return this.#compareTokens(r, a);
  }

  #comparePayload(mark: Mark & { kind: "b64" }, r64: string, a64: string): string | null {
    let rb: Uint8Array;
    let ab: Uint8Array;
    try {
      rb = Uint8Array.fromBase64(r64);
      ab = Uint8Array.fromBase64(a64);
    } catch {
      return r64 === a64 ? null : "marked base64 payload does not decode";
    }
    if (rb.length !== ab.length) return `payload of ${ab.length} bytes, recorded ${rb.length}`;
    for (const f of mark.fields) {
      const rv = readField(rb, f);
      const av = readField(ab, f);
      if (rv === null || av === null) continue;
      if (f.kind !== "any") {
        const why = this.#bind(String(rv), String(av), false);
        if (why) return `payload ${f.kind} at offset ${f.offset}: ${why}`;
      }
      writeField(rb, f, 0n);
      writeField(ab, f, 0n);
    }
    for (let i = 0; i < rb.length; i++) {
      if (rb[i] !== ab[i]) {
        return `payload byte ${i} is 0x${ab[i].toString(16)}, recorded 0x${
          rb[i].toString(16)
        } (mark it with # replay b64 if it may vary)`;
      }
    }
    return null;
  }

  #compareTokens(r: string, a: string): string | null {
    const rt = r.split(" ");
    const at = a.split(" ");
    if (rt.length !== at.length) return "different number of fields";
    for (let i = 0; i < rt.length; i++) {
      let x = rt[i];
      let y = at[i];
      // `ret=N` compares its number like a token (bound numbers are substituted).
      if (x.startsWith("ret=") && y.startsWith("ret=")) {
        x = x.slice(4);
        y = y.slice(4);
      }
      const want = /^\d+$/.test(x) ? this.#recToAct.get(x) ?? x : x;
      if (want !== y) {
        return `field ${i + 1} is ${JSON.stringify(y)}, expected ${JSON.stringify(want)}`;
      }
    }
    return null;
  }

  /**
   * Rewrites a recorded command for sending: bound numbers (whole tokens), bound capture groups
   * of `fd`/`pid` marks and bound fields of `b64` marks get their actual values.
   */
  rewrite(rec: string): string {
    let out = rec;
    for (const mark of this.#marks) {
      if (mark.kind === "self" || mark.kind === "mask") continue;
      const m = mark.re.exec(out);
      if (!m) continue;
      if (mark.kind === "b64") {
        out = spliceGroups(out, m, (t, g) => {
          if (g !== 1) return t;
          let b: Uint8Array;
          try {
            b = Uint8Array.fromBase64(t);
          } catch {
            return t;
          }
          for (const f of mark.fields) {
            const v = readField(b, f);
            const act = f.kind === "any" || v === null ? undefined : this.#recToAct.get(String(v));
            if (act !== undefined) writeField(b, f, BigInt(act));
          }
          return b.toBase64();
        });
      } else {
        out = spliceGroups(out, m, (t) => this.#recToAct.get(t) ?? t);
      }
    }
    return out.split(" ").map((t) => /^\d+$/.test(t) ? this.#recToAct.get(t) ?? t : t).join(" ");
  }
}
