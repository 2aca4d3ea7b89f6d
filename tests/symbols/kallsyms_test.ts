import assert from "../support/assert.ts";
import { Kallsyms, parseKallsyms } from "../../runtime/symbols/kallsyms.ts";

const SYNTHETIC = [
  "ffffffff81000000 T _text",
  "ffffffff81000000 T _stext", // alias: the first listed wins
  "0000000000000000 A __per_cpu_start", // address 0: ignored by lookups
  "ffffffff81000200 T vfs_read",
  "this line is malformed",
  "",
  "ffffffff81000100 t helper", // out of order on purpose
  "ffffffffc0001000 t ext4_fill_super\t[ext4]",
  "ffffffffc0002000 t bpf_prog_6deef7357e7b4530_hello\t[bpf]",
  "ffffffff81000300 T vfs_read", // duplicate name: resolveName returns the first
].join("\n");

Deno.test("kallsyms: synthetic table, address lookups", () => {
  const t = parseKallsyms(SYNTHETIC);
  assert.equal(t.size, 8);
  assert.equal(t.restricted, false);
  assert.deepEqual(t.resolveAddr(0xffffffff81000205n), {
    name: "vfs_read",
    offset: 5,
    module: "kernel",
  });
  assert.deepEqual(t.resolveAddr(0xffffffff81000000n), {
    name: "_text",
    offset: 0,
    module: "kernel",
  });
  assert.deepEqual(t.resolveAddr(0xffffffff810000ffn), {
    name: "_text",
    offset: 0xff,
    module: "kernel",
  });
  assert.deepEqual(t.resolveAddr(0xffffffff81000150n), {
    name: "helper",
    offset: 0x50,
    module: "kernel",
  });
  assert.deepEqual(t.resolveAddr(0xffffffffc0001010n), {
    name: "ext4_fill_super",
    offset: 0x10,
    module: "ext4",
  });
  assert.deepEqual(t.resolveAddr(0xffffffffc0002000n)?.module, "bpf");
  // Below the first symbol, negative and beyond 64 bits.
  assert.equal(t.resolveAddr(12n), null);
  assert.equal(t.resolveAddr(0xffffffff80ffffffn), null);
  assert.equal(t.resolveAddr(-1n), null);
  assert.equal(t.resolveAddr(1n << 64n), null);
  // Past the last symbol: the last one, with the full distance.
  assert.deepEqual(t.resolveAddr(0xffffffffc0002000n + 0x123456n)?.offset, 0x123456);
});

Deno.test("kallsyms: synthetic table, name lookups", () => {
  const t = parseKallsyms(SYNTHETIC);
  assert.equal(t.resolveName("vfs_read"), 0xffffffff81000200n);
  assert.equal(t.resolveName("helper"), 0xffffffff81000100n);
  assert.equal(t.resolveName("ext4_fill_super"), 0xffffffffc0001000n);
  assert.equal(t.resolveName("__per_cpu_start"), null, "address 0 is not an address");
  assert.equal(t.resolveName("missing"), null);
  assert.equal(t.resolveName("vfs_rea"), null);
  assert.equal(t.resolveName(""), null);
  assert.equal(t.typeOf("helper"), "t");
  assert.equal(t.typeOf("missing"), null);
});

Deno.test("kallsyms: kptr_restrict (all zero) table resolves nothing", () => {
  const t = parseKallsyms("0000000000000000 T _text\n0000000000000000 T vfs_read\n");
  assert.equal(t.size, 2);
  assert.equal(t.restricted, true);
  assert.equal(t.resolveAddr(0xffffffff81000000n), null);
  assert.equal(t.resolveAddr(0n), null);
  assert.equal(t.resolveName("vfs_read"), null);
  assert.equal(parseKallsyms("").restricted, false);
  assert.equal(parseKallsyms("").resolveAddr(5n), null);
});

Deno.test("kallsyms: many short lines grow the tables; non-ASCII names survive", () => {
  const lines: string[] = [];
  for (let i = 1; i <= 3000; i++) lines.push(`${i.toString(16)} T s${i}`);
  lines.push("ffff T ünïcode\t[mödule]");
  const t = parseKallsyms(lines.join("\n") + "\n");
  assert.equal(t.size, 3001);
  assert.deepEqual(t.resolveAddr(0x400n), { name: "s1024", offset: 0, module: "kernel" });
  assert.deepEqual(t.resolveAddr(0xbb8n + 7n), { name: "s3000", offset: 7, module: "kernel" });
  assert.deepEqual(t.resolveAddr(0x10000n), { name: "ünïcode", offset: 1, module: "mödule" });
  assert.equal(t.resolveName("s2999"), 2999n);
  assert.equal(t.resolveName("ünïcode"), 0xffffn);
});

// ---- the real /proc/kallsyms ----------------------------------------------

const realText = Deno.readTextFileSync("/proc/kallsyms");
const realLines = realText.split("\n").filter((l) => l.length > 0);
const vfsLine = realLines.find((l) => l.endsWith(" vfs_read"));
const restricted = realLines.every((l) => /^0+ /.test(l));

Deno.test({
  name: "kallsyms: /proc/kallsyms loads fast and resolves vfs_read both ways",
  ignore: restricted,
  fn() {
    const started = performance.now();
    const ksyms = Kallsyms.load("/proc/kallsyms", { reload: true });
    const ms = performance.now() - started;
    console.log(`    loaded ${ksyms.size} symbols in ${ms.toFixed(1)} ms`);
    assert.ok(ms < 1000, `load took ${ms} ms`);
    assert.ok(ksyms.size > 1000);
    assert.equal(Kallsyms.load(), ksyms, "cached per path");
    assert.ok(vfsLine, "vfs_read is listed in /proc/kallsyms");
    const expected = BigInt("0x" + vfsLine.split(" ")[0]);
    assert.equal(ksyms.resolveName("vfs_read"), expected);
    assert.deepEqual(ksyms.resolveAddr(expected + 5n), {
      name: "vfs_read",
      offset: 5,
      module: "kernel",
    });
    assert.equal(ksyms.resolveAddr(12n), null, "GET_KSYM_NAME 12 fails");
    assert.equal(ksyms.resolveName("no_such_symbol_xyz"), null);
  },
});

/** A module symbol whose address is not shared with another line (so it resolves to itself). */
function uniqueModuleLine(): { addr: bigint; name: string; module: string } | null {
  const counts = new Map<string, number>();
  for (const l of realLines) counts.set(l.slice(0, 16), (counts.get(l.slice(0, 16)) ?? 0) + 1);
  for (const l of realLines) {
    const m = /^([0-9a-f]+) \S (\S+)\t\[(.+)\]$/.exec(l);
    if (m && counts.get(m[1]) === 1 && !/^0+$/.test(m[1])) {
      return { addr: BigInt("0x" + m[1]), name: m[2], module: m[3] };
    }
  }
  return null;
}
const moduleSym = uniqueModuleLine();
if (moduleSym === null && !restricted) {
  console.log("kallsyms: no module symbols in /proc/kallsyms (/proc/modules empty): skipping");
}

Deno.test({
  name: "kallsyms: a module symbol reports its module name",
  ignore: moduleSym === null || restricted,
  fn() {
    const ksyms = Kallsyms.load();
    const sym = moduleSym!;
    assert.deepEqual(ksyms.resolveAddr(sym.addr + 1n), {
      name: sym.name,
      offset: 1,
      module: sym.module,
    });
    assert.notEqual(sym.module, "kernel");
  },
});

Deno.test("kallsyms: unreadable file gives an actionable error", () => {
  assert.throws(() => Kallsyms.load("/nonexistent/kallsyms"), /cannot read.*procfs/);
});
