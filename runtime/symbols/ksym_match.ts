/**
 * Kernel functions matching a glob, for `KSYM_MATCH` (docs/protocol.md §5.9): what a host tool
 * such as funccount needs to expand `vfs_*` into kprobe targets on the target's kernel.
 *
 * The names come from tracefs `available_filter_functions` (the functions ftrace, and so
 * kprobes, can attach to), else from the text symbols of `/proc/kallsyms` (without the
 * `__pfx_`/`__cfi_` padding symbols and `.cold` fragments, which are not function entries).
 * Names in the kprobe blacklist (`<debugfs>/kprobes/blacklist`), when it is readable, are
 * left out and counted.
 *
 * @example
 * ```ts
 * import { matchKernelFunctions } from "./ksym_match.ts";
 * const m = matchKernelFunctions("vfs_read*", 100);
 * console.log(m.source, m.matched, m.names);
 * ```
 * @module
 */

import { SysError } from "../kernel/errno.ts";
import { mountsOf, tracefs } from "../kernel/tracefs.ts";

/** The result of {@link matchKernelFunctions}. */
export interface KsymMatch {
  /** The file the names came from. */
  source: string;
  /** How many distinct names match (after leaving out blacklisted ones). */
  matched: number;
  /** Matching names left out because they are in the kprobe blacklist. */
  excluded: number;
  /** The first `max` matching names, sorted. */
  names: string[];
}

/** Where to read from (tests point these at fixture files). */
export interface KsymMatchSources {
  /** `available_filter_functions` (default: in the tracefs bpfd found). */
  filterFunctions?: string;
  /** kallsyms (default `/proc/kallsyms`). */
  kallsyms?: string;
  /** The kprobe blacklist (default: `kprobes/blacklist` under a mounted debugfs). */
  blacklist?: string;
}

/** Longest glob accepted (a kernel symbol is at most 512 bytes long). */
const MAX_GLOB = 512;

/**
 * A shell-style glob as an anchored RegExp: `*` any run, `?` one character, `[abc]`, `[a-z]`
 * and `[!abc]` classes; everything else literal. Throws {@link SysError} EINVAL for a
 * malformed pattern.
 *
 * @example
 * ```ts
 * import { globToRegExp } from "./ksym_match.ts";
 * console.log(globToRegExp("vfs_[rw]*").test("vfs_write")); // true
 * ```
 */
export function globToRegExp(glob: string): RegExp {
  if (glob.length === 0 || glob.length > MAX_GLOB) {
    throw new SysError(22, `pattern must be 1 to ${MAX_GLOB} characters long`);
  }
  let re = "^";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) throw new SysError(22, `pattern ${JSON.stringify(glob)}: unclosed [`);
      let body = glob.slice(i + 1, end);
      const negate = body.startsWith("!") || body.startsWith("^");
      if (negate) body = body.slice(1);
      if (!/^[A-Za-z0-9_.$-]+$/.test(body) || body.startsWith("-")) {
        throw new SysError(
          22,
          `pattern ${
            JSON.stringify(glob)
          }: a [class] may hold letters, digits, _ . $ and ranges a-z`,
        );
      }
      re += `[${negate ? "^" : ""}${body.replace(/[.$]/g, "\\$&")}]`;
      i = end;
    } else re += c.replace(/[\\^$.|+(){}\]]/g, "\\$&");
  }
  try {
    return new RegExp(`${re}$`);
  } catch (e) {
    throw new SysError(22, `pattern ${JSON.stringify(glob)}: ${(e as Error).message}`);
  }
}

function readText(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null; // absent, or refused (e.g. EPERM under lockdown)
  }
}

/** Names in the kprobe blacklist (`0xstart-0xend\tname`), or null when it cannot be read. */
function blacklistNames(path?: string): Set<string> | null {
  const candidates = path !== undefined ? [path] : [
    ...mountsOf("debugfs").map((d) => `${d}/kprobes/blacklist`),
    "/sys/kernel/debug/kprobes/blacklist",
  ];
  for (const p of candidates) {
    const text = readText(p);
    if (text === null) continue;
    const out = new Set<string>();
    for (const line of text.split("\n")) {
      const name = line.split(/\s+/)[1];
      if (name) out.add(name);
    }
    return out;
  }
  return null;
}

/**
 * Kernel functions matching `glob`, sorted, at most `max` of them (0: none, only the counts).
 * Throws {@link SysError}: EINVAL for a bad pattern, ENOENT when no list can be read.
 *
 * @example
 * ```ts
 * import { matchKernelFunctions } from "./ksym_match.ts";
 * const { names, matched } = matchKernelFunctions("tcp_send*", 10);
 * if (names.length < matched) console.log("truncated");
 * ```
 */
export function matchKernelFunctions(
  glob: string,
  max: number,
  sources: KsymMatchSources = {},
): KsymMatch {
  const re = globToRegExp(glob);
  let filterFile = sources.filterFunctions;
  if (filterFile === undefined) {
    try {
      filterFile = `${tracefs().path}/available_filter_functions`;
    } catch { /* no tracefs: kallsyms only */ }
  }
  const found = new Set<string>();
  let source = "";
  const filterText = filterFile === undefined ? null : readText(filterFile);
  if (filterText !== null) {
    source = filterFile!;
    // `name` or `name [module]` per line.
    for (const line of filterText.split("\n")) {
      const name = line.split(" ", 1)[0];
      if (name && re.test(name)) found.add(name);
    }
  } else {
    const kallsyms = sources.kallsyms ?? "/proc/kallsyms";
    const text = readText(kallsyms);
    if (text === null) {
      throw new SysError(
        2,
        `cannot read ${filterFile ?? "available_filter_functions (no tracefs)"} nor ${kallsyms}: ` +
          "mount tracefs and procfs and run bpfd as root",
      );
    }
    source = kallsyms;
    // `address type name[\t[module]]`; text symbols are t/T.
    for (const line of text.split("\n")) {
      const f = line.split(/[ \t]/, 3);
      if (f.length < 3 || (f[1] !== "t" && f[1] !== "T")) continue;
      const name = f[2];
      if (
        name.startsWith("__pfx_") || name.startsWith("__cfi_") || name.includes(".cold")
      ) continue;
      if (re.test(name)) found.add(name);
    }
  }
  const blacklist = blacklistNames(sources.blacklist);
  let excluded = 0;
  if (blacklist) {
    for (const n of found) {
      if (blacklist.has(n)) {
        found.delete(n);
        excluded++;
      }
    }
  }
  const all = [...found].sort();
  return { source, matched: all.length, excluded, names: all.slice(0, Math.max(0, max)) };
}
