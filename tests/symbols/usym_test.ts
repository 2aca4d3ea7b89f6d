import assert from "../support/assert.ts";
import {
  parseMaps,
  resolveAddr,
  resolveName,
  symbolFileOffset,
  UserSymbols,
} from "../../runtime/symbols/usym.ts";
import { ElfFile, ElfSegmentFlag, ElfSegmentType } from "../../artifacts/elf.ts";

const LIBC = "/lib/x86_64-linux-gnu/libc.so.6";

const SOURCE = `
#include <stdio.h>
#include <unistd.h>
int counter = 41;
__attribute__((noinline)) int myfunc(int x) { return x * 3 + counter; }
int main(void) {
  printf("%p %p\\n", (void *)&myfunc, (void *)&counter);
  fflush(stdout);
  sleep(30);
  return myfunc(2);
}
`;

function run(cmd: string, args: string[]): string {
  const out = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** A running copy of the test program and the addresses it printed. */
interface Target {
  child: Deno.ChildProcess;
  pid: number;
  myfunc: bigint;
  counter: bigint;
  stop(): Promise<void>;
}

async function start(path: string): Promise<Target> {
  const child = new Deno.Command(path, { stdout: "piped", stderr: "null" }).spawn();
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${path} exited before printing its addresses`);
    text += new TextDecoder().decode(value);
  }
  const [myfunc, counter] = text.trim().split(" ").map((s) => BigInt(s));
  return {
    child,
    pid: child.pid,
    myfunc,
    counter,
    async stop() {
      reader.releaseLock();
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel();
    },
  };
}

const dir = Deno.makeTempDirSync({ prefix: "usym_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const prog = `${dir}/prog`;
Deno.writeTextFileSync(`${dir}/prog.c`, SOURCE);
run("gcc", ["-O0", "-g0", "-o", prog, `${dir}/prog.c`]);

/** myfunc's file offset computed from readelf alone (independent of elf.ts). */
function readelfFileOffset(path: string, name: string): number {
  const symLine = run("readelf", ["-sW", path]).split("\n")
    .find((l) => l.trim().endsWith(` ${name}`) && l.includes("FUNC"));
  assert.ok(symLine, `readelf lists ${name}`);
  const value = parseInt(symLine.trim().split(/\s+/)[1], 16);
  for (const l of run("readelf", ["-lW", path]).split("\n")) {
    const f = l.trim().split(/\s+/);
    if (f[0] !== "LOAD") continue;
    const [offset, vaddr, filesz] = [parseInt(f[1], 16), parseInt(f[2], 16), parseInt(f[4], 16)];
    if (value >= vaddr && value < vaddr + filesz) return value - vaddr + offset;
  }
  throw new Error(`no PT_LOAD contains ${name}`);
}

Deno.test("usym: parseMaps handles pseudo-paths, spaces and deleted files", () => {
  const maps = parseMaps([
    "55d0c0a00000-55d0c0a01000 r--p 00000000 fe:00 1234                       /usr/bin/my app",
    "55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:00 1234 /tmp/x (deleted)",
    "55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]",
    "7f0000000000-7f0000001000 rw-p 00000000 00:00 0",
    "garbage",
    "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]",
  ].join("\n"));
  assert.equal(maps.length, 5);
  assert.deepEqual(maps[0], {
    start: 0x55d0c0a00000n,
    end: 0x55d0c0a01000n,
    perms: "r--p",
    offset: 0,
    dev: "fe:00",
    major: 0xfe,
    minor: 0,
    inode: 1234,
    path: "/usr/bin/my app",
    range: "55d0c0a00000-55d0c0a01000",
  });
  assert.equal(maps[1].path, "/tmp/x (deleted)");
  assert.equal(maps[1].offset, 0x1000);
  assert.equal(maps[2].path, "[heap]");
  assert.equal(maps[3].path, "");
  assert.equal(maps[4].end, 0xffffffffff601000n);
});

Deno.test("usym: symbolFileOffset matches readelf and lands in an executable PT_LOAD", () => {
  const off = symbolFileOffset(prog, "myfunc");
  assert.equal(off, readelfFileOffset(prog, "myfunc"));
  const elf = ElfFile.open(prog);
  assert.ok(
    elf.programHeaders.some((p) =>
      p.type === ElfSegmentType.LOAD && (p.flags & ElfSegmentFlag.X) !== 0 &&
      off >= p.offset && off < p.offset + p.filesz
    ),
    "inside an executable PT_LOAD",
  );
  assert.equal(resolveName(-1, "myfunc", prog), BigInt(off), "pid -1 gives the file offset");
  assert.equal(symbolFileOffset(prog, "no_such_function"), null);
  assert.equal(symbolFileOffset(`${dir}/prog.c`, "myfunc"), null, "not an ELF file");
  assert.equal(symbolFileOffset(`${dir}/missing`, "myfunc"), null);
  const getpid = symbolFileOffset(LIBC, "getpid");
  assert.ok(getpid !== null && getpid > 0, "libc's getpid via .dynsym");
});

Deno.test("usym: a live process resolves its own function both ways", async () => {
  const target = await start(prog);
  try {
    assert.deepEqual(resolveAddr(target.pid, target.myfunc), {
      name: "myfunc",
      offset: 0,
      module: prog,
    });
    assert.deepEqual(resolveAddr(target.pid, target.myfunc + 4n, { demangle: true }), {
      name: "myfunc",
      offset: 4,
      module: prog,
    });
    assert.equal(resolveName(target.pid, "myfunc", prog), target.myfunc);
    // A data symbol in a writable segment (file offset not page aligned).
    assert.equal(resolveName(target.pid, "counter", prog), target.counter);
    assert.deepEqual(resolveAddr(target.pid, target.counter)?.name, "counter");
    // A library given by its /lib path while the maps say /usr/lib.
    const getpid = resolveName(target.pid, "getpid", LIBC);
    assert.ok(getpid !== null, "getpid is mapped in the child");
    const sym = resolveAddr(target.pid, getpid);
    assert.ok(sym && ["getpid", "__getpid"].includes(sym.name), `got ${sym?.name}`);
    assert.equal(sym.offset, 0);
    assert.ok(sym.module.endsWith("/libc.so.6"));
    // Misses.
    assert.equal(resolveAddr(target.pid, 0x10n), null);
    assert.equal(resolveName(target.pid, "no_such_function", prog), null);
    assert.equal(resolveName(target.pid, "myfunc", `${dir}/not-mapped`), null);
  } finally {
    await target.stop();
  }
  assert.equal(resolveAddr(target.pid, target.myfunc), null, "the process is gone");
});

Deno.test("usym: a deleted executable still resolves through map_files", async () => {
  const copy = `${dir}/doomed`;
  Deno.copyFileSync(prog, copy);
  const target = await start(copy);
  try {
    Deno.removeSync(copy);
    const resolver = new UserSymbols({ maxFiles: 2, maxProcesses: 2 });
    const sym = resolver.resolveAddr(target.pid, target.myfunc + 1n);
    assert.deepEqual(sym, { name: "myfunc", offset: 1, module: `${copy} (deleted)` });
  } finally {
    await target.stop();
  }
});

Deno.test("usym: bogus pids resolve to null", () => {
  assert.equal(resolveAddr(0x7ffffff0, 0x1000n), null);
  assert.equal(resolveName(0x7ffffff0, "getpid", LIBC), null);
  assert.equal(resolveAddr(-5, 0x1000n), null);
});
