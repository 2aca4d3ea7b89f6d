/**
 * Generates `syscall_table.ts` (syscall numbers → names for x86_64 and aarch64, errno names)
 * from the kernel's own headers, so no table is typed by hand:
 *
 * - x86_64: `arch/x86/include/generated/uapi/asm/unistd_64.h` of a kernel header tree (what
 *   the kernel build generates from `syscall_64.tbl`), else the installed
 *   `/usr/include/x86_64-linux-gnu/asm/unistd_64.h` (linux-libc-dev; may be older);
 * - aarch64: `arch/arm64/include/generated/uapi/asm/unistd_64.h` of an arm64 header tree (from
 *   `scripts/syscall.tbl` since 6.11; arm64 has no such file in linux-libc-dev for amd64);
 * - errno: `include/uapi/asm-generic/errno-base.h` and `errno.h` (the numbering both arches use).
 *
 * The header trees are the compiler stage's Debian trees. Fetch them once with
 * `deno task build --kernel debian:6.12:x86_64 --mode headers --tool syscount` (and the same with
 * `debian:6.12:aarch64`), then run this script; it picks the newest cached trees:
 *
 * @example
 * ```sh
 * deno run -A tools/syscount/gen_syscalls.ts                # writes tools/syscount/syscall_table.ts
 * deno run -A tools/syscount/gen_syscalls.ts --x86_64 FILE --aarch64 FILE --errno-dir DIR
 * ```
 * @module
 */

import { parseArgs } from "../../artifacts/cli.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const OUT = `${ROOT}tools/syscount/syscall_table.ts`;
const TREES = `${ROOT}.cache/kernels/debian`;

/**
 * Syscalls added after the newest Debian header tree the compiler stage uses (6.12). Since
 * Linux 5.1 every architecture gives a new syscall the same number (the unified table in
 * `scripts/syscall.tbl` and `syscall_64.tbl` from 424 up), so one list serves both arches.
 * Release where each appeared: setxattrat…removexattrat 6.13, open_tree_attr 6.15,
 * file_getattr/file_setattr 6.17. Only numbers the trees do not have are added.
 */
const NEWER: [number, string][] = [
  [463, "setxattrat"],
  [464, "getxattrat"],
  [465, "listxattrat"],
  [466, "removexattrat"],
  [467, "open_tree_attr"],
  [468, "file_getattr"],
  [469, "file_setattr"],
];

/** `#define __NR_name N` lines of a generated unistd header. */
export function parseUnistd(text: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const m of text.matchAll(/^#define\s+__NR_([a-z0-9_]+)\s+(\d+)\s*$/gm)) {
    out.set(Number(m[2]), m[1]);
  }
  return out;
}

/** `#define ENAME N` lines (aliases such as `EWOULDBLOCK EAGAIN` are skipped). */
export function parseErrno(text: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const m of text.matchAll(/^#define\s+(E[A-Z0-9]+)\s+(\d+)\b/gm)) {
    if (!out.has(Number(m[2]))) out.set(Number(m[2]), m[1]);
  }
  return out;
}

/** The newest cached Debian tree directory for `arch`, or null. */
function newestTree(arch: string): string | null {
  const found: string[] = [];
  try {
    for (const e of Deno.readDirSync(TREES)) {
      try {
        if (Deno.statSync(`${TREES}/${e.name}/${arch}/headers/include`).isDirectory) {
          found.push(e.name);
        }
      } catch { /* not this arch */ }
    }
  } catch { /* no cache */ }
  const v = (s: string) => s.split(/[.+-]/).map((p) => Number(p) || 0);
  found.sort((a, b) => {
    const [x, y] = [v(a), v(b)];
    for (let i = 0; i < Math.max(x.length, y.length); i++) {
      if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
    }
    return 0;
  });
  const last = found.pop();
  return last ? `${TREES}/${last}/${arch}/headers` : null;
}

function firstFile(cands: (string | null)[], what: string): string {
  for (const c of cands) {
    if (!c) continue;
    try {
      if (Deno.statSync(c).isFile) return c;
    } catch { /* next */ }
  }
  throw new Error(
    `no ${what} found (tried ${cands.filter(Boolean).join(", ") || "nothing"}): fetch a header ` +
      "tree with `deno task build --kernel debian:6.12:<arch> --mode headers --tool syscount`, " +
      "or pass the file explicitly (see --help)",
  );
}

/** Space-separated `N name` pairs, wrapped into lines of at most `width` characters. */
function pairs(m: Map<number, string>, width = 96): string {
  const lines: string[] = [];
  let cur = "";
  for (const [n, name] of [...m].sort((a, b) => a[0] - b[0])) {
    const item = `${n} ${name}`;
    if (cur && cur.length + 1 + item.length > width) {
      lines.push(cur);
      cur = item;
    } else cur = cur ? `${cur} ${item}` : item;
  }
  if (cur) lines.push(cur);
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      x86_64: { type: "string" },
      aarch64: { type: "string" },
      "errno-dir": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(
      "Usage: deno run -A tools/syscount/gen_syscalls.ts [--x86_64 unistd_64.h] " +
        "[--aarch64 unistd_64.h] [--errno-dir DIR]\n(defaults: the newest cached Debian header trees)",
    );
    Deno.exit(0);
  }
  const xt = newestTree("x86_64");
  const at = newestTree("aarch64");
  const x86 = firstFile([
    values.x86_64 ?? null,
    xt && `${xt}/arch/x86/include/generated/uapi/asm/unistd_64.h`,
    "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
  ], "x86_64 unistd_64.h");
  const arm = firstFile([
    values.aarch64 ?? null,
    at && `${at}/arch/arm64/include/generated/uapi/asm/unistd_64.h`,
  ], "arm64 unistd_64.h");
  const errDir = values["errno-dir"] ??
    ((xt ?? at) ? `${xt ?? at}/include/uapi/asm-generic` : "/usr/include/asm-generic");
  const errno = new Map([
    ...parseErrno(await Deno.readTextFile(firstFile([`${errDir}/errno-base.h`], "errno-base.h"))),
    ...parseErrno(await Deno.readTextFile(firstFile([`${errDir}/errno.h`], "errno.h"))),
  ]);
  const tables: Record<string, Map<number, string>> = {
    x86_64: parseUnistd(await Deno.readTextFile(x86)),
    aarch64: parseUnistd(await Deno.readTextFile(arm)),
  };
  for (const [arch, t] of Object.entries(tables)) {
    if (t.size < 250) throw new Error(`${arch}: only ${t.size} syscalls parsed: wrong file?`);
    for (const [n, name] of NEWER) if (!t.has(n)) t.set(n, name);
  }
  const rel = (p: string) => p.startsWith(ROOT) ? p.slice(ROOT.length) : p;
  const text = `// Generated by tools/syscount/gen_syscalls.ts: do not edit; re-run it to refresh.
// x86_64:  ${rel(x86)}
// aarch64: ${rel(arm)}
// errno:   ${rel(errDir)}/errno-base.h, errno.h
// plus syscalls newer than those trees (see NEWER in gen_syscalls.ts).

/** Syscall numbers and names per target arch (\`uname -m\`), as \`N name\` pairs. */
export const SYSCALL_PAIRS: Record<"x86_64" | "aarch64", string> = {
  x86_64: \`
${pairs(tables.x86_64)}
\`,
  aarch64: \`
${pairs(tables.aarch64)}
\`,
};

/** errno numbers and names (asm-generic: x86_64 and aarch64 share them), as \`N NAME\` pairs. */
export const ERRNO_PAIRS = \`
${pairs(errno)}
\`;
`;
  await Deno.writeTextFile(OUT, text);
  console.error(
    `wrote ${rel(OUT)}: x86_64 ${tables.x86_64.size}, aarch64 ${tables.aarch64.size} syscalls, ` +
      `${errno.size} errnos`,
  );
}
