/**
 * Helpers for the loader tests: compiles `tests/loader/bpf/*.bpf.c` with
 * clang-19 against a `vmlinux.h` generated from the running kernel's BTF
 * (once per test run, shared by its modules through a temp dir named after
 * the `deno test` process), triggers system calls from this process, and
 * finds BPF objects a failed load may have left behind.
 *
 * @example
 * ```ts
 * import { compile } from "./support.ts";
 * const bytes = await compile("events");
 * ```
 * @module
 */

import { Cmd, listIds } from "../../runtime/kernel/bpf.ts";
import { arena, bpf, libc } from "../../runtime/kernel/ffi.ts";

const SRC = new URL("./bpf/", import.meta.url).pathname;
const CLANG = "clang-19";
const FLAGS = ["-O2", "-target", "bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86"];
const TMP = Deno.env.get("TMPDIR") ?? "/tmp";
/** One cache per `deno test` process: every test module of a run shares it. */
const RUN_DIR = `${TMP}/bpfpack-loader-run-${Deno.pid}`;

async function run(cmd: string, args: string[], stdout?: string): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).slice(0, 2000)}`,
    );
  }
  if (stdout) await Deno.writeFile(stdout, out.stdout);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Removes caches of test runs whose process is gone. */
function removeStale(): void {
  for (const e of Deno.readDirSync(TMP)) {
    const m = /^bpfpack-loader-(?:run|build)-(\d+)/.exec(e.name);
    if (m && Number(m[1]) !== Deno.pid && !exists(`/proc/${m[1]}`)) {
      try {
        Deno.removeSync(`${TMP}/${e.name}`, { recursive: true });
      } catch { /* another run is cleaning up */ }
    }
  }
}

/**
 * Builds every `bpf/*.bpf.c` once per test run: vmlinux.h from the kernel's
 * BTF, a precompiled header of it (each object then takes ~60 ms instead of
 * ~0.7 s), and the objects, four compilers at a time. A failed compile
 * leaves `<name>.err` with clang's message.
 */
async function build(): Promise<string> {
  if (exists(`${RUN_DIR}/.complete`)) return RUN_DIR;
  removeStale();
  const dir = await Deno.makeTempDir({ dir: TMP, prefix: `bpfpack-loader-build-${Deno.pid}-` });
  await run(
    "bpftool",
    ["btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
    `${dir}/vmlinux.h`,
  );
  await run(CLANG, [
    ...FLAGS,
    "-g",
    "-x",
    "c-header",
    `${dir}/vmlinux.h`,
    "-o",
    `${dir}/vmlinux.h.pch`,
  ]);
  const names = [...Deno.readDirSync(SRC)]
    .map((e) => e.name)
    .filter((n) => n.endsWith(".bpf.c"))
    .map((n) => n.slice(0, -6))
    .sort();
  const jobs = names.flatMap((n) => [[n, true], [n, false]] as [string, boolean][])
    .filter(([n, btf]) => btf || n === "legacy");
  const one = async ([name, btf]: [string, boolean]) => {
    const out = `${dir}/${name}${btf ? "" : ".nobtf"}.o`;
    const args = [...FLAGS, ...(btf ? ["-g", "-include-pch", `${dir}/vmlinux.h.pch`] : [])];
    try {
      await run(CLANG, [...args, `-I${dir}`, `-I${SRC}`, "-c", `${SRC}/${name}.bpf.c`, "-o", out]);
    } catch (e) {
      await Deno.writeTextFile(`${out}.err`, (e as Error).message);
    }
  };
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let job = jobs.shift(); job; job = jobs.shift()) await one(job);
    }),
  );
  await Deno.writeTextFile(`${dir}/.complete`, "");
  try {
    await Deno.rename(dir, RUN_DIR);
  } catch {
    await Deno.remove(dir, { recursive: true }); // another test module of this run won
  }
  return RUN_DIR;
}

let built: Promise<string> | null = null;

/**
 * Compiles `bpf/<name>.bpf.c` (with `-g`; `btf` false builds the no-BTF
 * variant, available for `legacy`) and returns the object bytes. All sources
 * are built on the first call of a test run and shared by its modules.
 */
export async function compile(name: string, btf = true): Promise<Uint8Array> {
  built ??= build();
  const dir = await built;
  const out = `${dir}/${name}${btf ? "" : ".nobtf"}.o`;
  if (exists(`${out}.err`)) throw new Error(await Deno.readTextFile(`${out}.err`));
  return await Deno.readFile(out);
}

/** The path of a compiled object (with BTF). */
export async function objectPath(name: string): Promise<string> {
  await compile(name);
  return `${await built}/${name}.o`;
}

const sys = Deno.dlopen("libc.so.6", {
  getppid: { parameters: [], result: "i32" },
  gettid: { parameters: [], result: "i32" },
});

/**
 * The kernel pid (thread id) of the thread running the tests: BPF filters
 * use it because Deno's other threads make system calls of their own.
 */
export function gettid(): number {
  return sys.symbols.gettid();
}

/** Calls getpid(2) `n` times (a real syscall each time on glibc ≥ 2.25). */
export function getpidTimes(n: number): void {
  for (let i = 0; i < n; i++) libc.getpid();
}

/** Calls getppid(2) `n` times; returns the parent pid. */
export function getppidTimes(n: number): number {
  let r = 0;
  for (let i = 0; i < n; i++) r = sys.symbols.getppid();
  return r;
}

/** Snapshot of the system's BPF program and map IDs. */
export function snapshotIds(): { prog: Set<number>; map: Set<number> } {
  return { prog: new Set(listIds("prog")), map: new Set(listIds("map")) };
}

function nameById(kind: "prog" | "map", id: number): string | null {
  arena.reset();
  const a = arena.alloc(144);
  a.dv.setUint32(0, id, true);
  const fd = bpf(kind === "prog" ? Cmd.PROG_GET_FD_BY_ID : Cmd.MAP_GET_FD_BY_ID, a.ptr, 144);
  if (fd < 0) return null; // gone already
  try {
    const infoLen = kind === "prog" ? 232 : 88;
    const info = arena.alloc(infoLen);
    const b = arena.alloc(144);
    b.dv.setUint32(0, fd, true);
    b.dv.setUint32(4, infoLen, true);
    b.dv.setBigUint64(8, BigInt(info.ptr), true);
    if (bpf(Cmd.OBJ_GET_INFO_BY_FD, b.ptr, 144) < 0) return null;
    const raw = info.u8.subarray(kind === "prog" ? 64 : 24, (kind === "prog" ? 64 : 24) + 16);
    const end = raw.indexOf(0);
    return new TextDecoder().decode(raw.subarray(0, end < 0 ? 16 : end));
  } finally {
    libc.close(fd);
  }
}

/**
 * Programs and maps created since `before` whose kernel names are in `names`
 * (other processes on the machine may create BPF objects concurrently, so
 * only names from the object under test count).
 */
export function leftovers(
  before: { prog: Set<number>; map: Set<number> },
  names: string[],
): string[] {
  const want = new Set(names.map((n) => n.slice(0, 15)));
  const now = snapshotIds();
  const out: string[] = [];
  for (const kind of ["prog", "map"] as const) {
    for (const id of now[kind]) {
      if (before[kind].has(id)) continue;
      const name = nameById(kind, id);
      if (name !== null && want.has(name)) out.push(`${kind} ${id} ${name}`);
    }
  }
  return out;
}

/** Waits until `check` returns true (polling every 10 ms, at most `ms`). */
export async function eventually(check: () => boolean, ms = 2000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return check();
}
