// Parsing BPF objects into specs: pure, deterministic, and clear about what
// it cannot use. Objects are compiled by clang-19 at test time.
import assert from "../support/assert.ts";
import { BtfKind } from "../../artifacts/btf.ts";
import {
  BpfObjectError,
  parseObject,
  parseObjectFile,
  programTypeOf,
  SECTION_TABLE,
} from "../../artifacts/bpf_object.ts";
import { ElfFile } from "../../artifacts/elf.ts";
import { compile, objectPath } from "./support.ts";

const OBJECTS = ["events", "globals", "calls", "core", "raw_tp", "tp_btf", "verifier_fail"];

Deno.test("spec: parsing the same object twice gives deep-equal specs", async () => {
  for (const name of OBJECTS) {
    const bytes = await compile(name);
    const a = parseObject(bytes, name);
    const b = parseObject(bytes.slice(), name);
    assert.deepEqual(a, b, name);
    assert.notEqual(a.programs[0].insns, b.programs[0].insns); // no shared mutable state
  }
  const legacy = await compile("legacy", false);
  assert.deepEqual(parseObject(legacy, "l"), parseObject(legacy.slice(), "l"));
  const path = await objectPath("events");
  assert.deepEqual(parseObjectFile(path), parseObject(await compile("events"), path));
});

Deno.test("spec: the section table", () => {
  const cases: [string, number, number, unknown][] = [
    ["tracepoint/syscalls/sys_enter_openat", 5, 0, {
      kind: "tracepoint",
      category: "syscalls",
      name: "sys_enter_openat",
    }],
    ["tp/sched/sched_switch", 5, 0, {
      kind: "tracepoint",
      category: "sched",
      name: "sched_switch",
    }],
    ["tracepoint", 5, 0, { kind: "tracepoint" }],
    ["raw_tracepoint/sys_enter", 17, 0, { kind: "raw_tracepoint", name: "sys_enter" }],
    ["raw_tp/sched_switch", 17, 0, { kind: "raw_tracepoint", name: "sched_switch" }],
    ["kprobe/do_sys_openat2", 2, 0, {
      kind: "kprobe",
      retprobe: false,
      function: "do_sys_openat2",
      offset: 0,
    }],
    ["kretprobe/vfs_read+0x10", 2, 0, {
      kind: "kprobe",
      retprobe: true,
      function: "vfs_read",
      offset: 16,
    }],
    ["uprobe//usr/lib/x86_64-linux-gnu/libc.so.6:malloc", 2, 0, {
      kind: "uprobe",
      retprobe: false,
      binary: "/usr/lib/x86_64-linux-gnu/libc.so.6",
      symbol: "malloc",
      offset: 0,
    }],
    ["uretprobe/bash:readline+4", 2, 0, {
      kind: "uprobe",
      retprobe: true,
      binary: "bash",
      symbol: "readline",
      offset: 4,
    }],
    ["uprobe/libc.so.6:0x1234", 2, 0, {
      kind: "uprobe",
      retprobe: false,
      binary: "libc.so.6",
      offset: 0x1234,
    }],
    ["uprobe", 2, 0, { kind: "uprobe", retprobe: false, offset: 0 }],
    ["perf_event", 7, 0, { kind: "perf_event" }],
    ["tp_btf/sched_switch", 26, 23, { kind: "tp_btf", target: "sched_switch" }],
    ["fentry/do_sys_openat2", 26, 24, { kind: "fentry", target: "do_sys_openat2" }],
    ["fexit/do_sys_openat2", 26, 25, { kind: "fexit", target: "do_sys_openat2" }],
    ["socket", 1, 0, { kind: "none" }],
    ["xdp", 6, 0, { kind: "none" }],
  ];
  for (const [section, type, eat, attach] of cases) {
    const r = programTypeOf(section);
    assert.ok(r, section);
    assert.deepEqual([r.type, r.expectedAttachType, r.attach], [type, eat, attach], section);
  }
  for (const unknown of ["tpx/a/b", "kprobes/x", "sprocket", "tracepoints/a/b", ""]) {
    assert.equal(programTypeOf(unknown), null, unknown);
  }
  assert.throws(() => programTypeOf("tracepoint/only_one"), /tracepoint\/<category>\/<name>/);
  assert.throws(() => programTypeOf("uprobe/nocolon"), /uprobe\/<binary>:<symbol>/);
  assert.ok(SECTION_TABLE.length >= 16);
});

Deno.test("spec: BTF maps, ring buffer, perf array and one tracepoint program", async () => {
  const spec = parseObject(await compile("events"), "events.o");
  assert.equal(spec.license, "GPL");
  assert.equal(spec.kernelVersion, 0);
  const m = Object.fromEntries(spec.maps.map((x) => [x.name, x]));
  assert.deepEqual(Object.keys(m), ["opens", "ring", "perf"]);
  assert.deepEqual(
    [m.opens.type, m.opens.keySize, m.opens.valueSize, m.opens.maxEntries, m.opens.origin],
    [1, 4, 8, 1024, "btf"],
  );
  assert.equal(spec.btf!.type(m.opens.btfKeyTypeId).name, "u32");
  assert.equal(spec.btf!.type(m.opens.btfValueTypeId).name, "u64");
  assert.deepEqual([m.ring.type, m.ring.keySize, m.ring.maxEntries], [27, 0, 65536]);
  assert.deepEqual([m.perf.type, m.perf.keySize, m.perf.valueSize, m.perf.maxEntries], [
    4,
    4,
    4,
    0,
  ]);
  const [p] = spec.programs;
  assert.equal(spec.programs.length, 1);
  assert.deepEqual([p.name, p.type, p.section], [
    "on_openat",
    5,
    "tracepoint/syscalls/sys_enter_openat",
  ]);
  assert.deepEqual(p.references.map((r) => `${r.kind}:${r.map}`), [
    "map:opens",
    "map:opens",
    "map:ring",
    "map:perf",
  ]);
  for (const r of p.references) assert.equal(p.insns[r.insn * 8], 0x18); // ld_imm64
  assert.equal(p.funcInfo.length, 1);
  assert.equal(p.funcInfo[0].insnOff, 0);
  assert.ok(p.lineInfo.length > 5);
  assert.equal(p.lineInfo[0].insnOff, 0);
  assert.ok(p.lineInfo.every((l, i) => i === 0 || l.insnOff > p.lineInfo[i - 1].insnOff));
});

Deno.test("spec: DATASEC sizes and VAR offsets are fixed from the ELF", async () => {
  const bytes = await compile("globals");
  const elf = new ElfFile(bytes);
  const spec = parseObject(bytes, "globals.o");
  const btf = spec.btf!;
  const syms = elf.symbols();
  for (const sec of [".rodata", ".data", ".bss"]) {
    const ds = btf.find(sec, BtfKind.DATASEC);
    assert.ok(ds && ds.kind === BtfKind.DATASEC, sec);
    assert.equal(ds.size, elf.section(sec)!.size, `${sec} size`);
    const offsets = ds.vars.map((v) => v.offset);
    assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b), `${sec} sorted`);
    for (const v of ds.vars) {
      const name = btf.type(v.type).name;
      const sym = syms.find((s) => s.name === name)!;
      assert.equal(v.offset, Number(sym.value), name);
    }
  }
  const rodata = spec.maps.find((m) => m.name === ".rodata")!;
  assert.deepEqual(
    [rodata.origin, rodata.type, rodata.keySize, rodata.maxEntries, rodata.flags, rodata.freeze],
    ["data", 2, 4, 1, 128, true],
  );
  assert.deepEqual(rodata.variables.map((v) => [v.name, v.size]), [["target_pid", 4], [
    "step",
    8,
  ]]);
  const data = spec.maps.find((m) => m.name === ".data")!;
  assert.equal(new DataView(data.contents!.buffer).getBigUint64(0, true), 1000n);
  assert.equal(data.freeze, false);
  const bss = spec.maps.find((m) => m.name === ".bss")!;
  assert.deepEqual(bss.contents, new Uint8Array(16));
  // The fixed BTF serializes and parses back to the same types.
  const again = (await import("../../artifacts/btf.ts")).Btf.parse(btf.toBytes());
  assert.deepEqual(again.types, btf.types);
});

Deno.test("spec: calls are placed once per program and a callback becomes BPF_PSEUDO_FUNC", async () => {
  const spec = parseObject(await compile("calls"), "calls.o");
  const second = spec.programs.find((p) => p.name === "second")!;
  const at = (n: string) => second.functions.find((f) => f.name === n)!.insn;
  // Every call with src_reg 1 now points at the start of a placed function.
  const starts = new Set(second.functions.map((f) => f.insn));
  const dv = new DataView(second.insns.buffer);
  let calls = 0, funcs = 0;
  for (let i = 0; i < second.insns.length / 8; i++) {
    const op = second.insns[i * 8], src = second.insns[i * 8 + 1] >> 4;
    if (op === 0x85 && src === 1) {
      calls++;
      assert.ok(starts.has(i + 1 + dv.getInt32(i * 8 + 4, true)), `call at ${i}`);
    }
    if (op === 0x18 && src === 4) {
      funcs++;
      assert.equal(i + 1 + dv.getInt32(i * 8 + 4, true), at("loop_step"));
    }
    if (op === 0x18) i++;
  }
  assert.ok(calls >= 3, `${calls} calls`);
  assert.equal(funcs, 1);
  assert.equal(new Set(second.functions.map((f) => f.name)).size, second.functions.length);
});

Deno.test("spec: CO-RE records move to program instruction indices", async () => {
  const bytes = await compile("core");
  const spec = parseObject(bytes, "core.o");
  const [p] = spec.programs;
  assert.ok(p.coreRelos.length >= 2);
  for (const r of p.coreRelos) {
    assert.ok(r.insnOff >= 0 && r.insnOff < p.insns.length / 8);
    assert.equal(r.kind, 0); // field byte offset
    assert.equal(spec.btf!.type(r.typeId).name, "task_struct");
    assert.match(spec.btf!.string(r.accessStrOff), /^0(:\d+)+$/);
  }
});

Deno.test("spec: a legacy maps section", async () => {
  const spec = parseObject(await compile("legacy", false), "legacy.o");
  assert.equal(spec.btf, null);
  assert.equal(spec.kernelVersion, 0x060000);
  assert.deepEqual(
    spec.maps.map((m) => [m.name, m.origin, m.type, m.keySize, m.valueSize, m.maxEntries, m.flags]),
    [["calls", "legacy", 2, 4, 8, 1, 0], ["by_tgid", "legacy", 1, 4, 8, 128, 1]],
  );
  assert.deepEqual(spec.programs[0].funcInfo, []);
});

Deno.test("spec: bad objects give a BpfObjectError naming the problem", async () => {
  const good = await compile("events");
  const expect = (bytes: Uint8Array, re: RegExp) =>
    assert.throws(
      () => parseObject(bytes, "x.o"),
      (e: unknown) =>
        e instanceof BpfObjectError && re.test(e.message) && e.message.startsWith("x.o:"),
    );
  expect(good.slice(0, good.length >> 1), /truncated or corrupted ELF/);
  expect(good.slice(0, 10), /truncated ELF/);
  expect(new Uint8Array(0), /truncated ELF/);
  expect(Deno.readFileSync("/bin/true"), /not a BPF object: e_machine is \d+, not 247/);
  const be = good.slice();
  be[5] = 2;
  expect(be, /big-endian BPF objects \(bpfeb\) are not supported/);
  // A corrupted BTF header: type_len runs past the section.
  const elf = new ElfFile(good);
  const btfOff = elf.section(".BTF")!.offset;
  const badBtf = good.slice();
  new DataView(badBtf.buffer).setUint32(btfOff + 12, 0x7fffffff, true);
  expect(badBtf, /\.BTF is truncated or corrupted: the type section/);
  // A relocation naming a symbol that does not exist.
  const rel = elf.sections.find((s) => s.name === ".reltracepoint/syscalls/sys_enter_openat")!;
  const badRel = good.slice();
  new DataView(badRel.buffer).setUint32(rel.offset + 12, 99999, true);
  expect(badRel, /names symbol 99999, which does not exist/);
  expect(await compile("unknown_section"), /unknown section "my_settings"/);
  expect(
    await compile("unknown_prog"),
    /program section "sprocket\/thing" has no known program type.*tracepoint, tp, raw_tracepoint/,
  );
});

Deno.test("spec: random corruption never escapes as anything but BpfObjectError", async () => {
  const good = await compile("calls");
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const elf = new ElfFile(good);
  // Aim at the interesting parts: headers, code, relocations, BTF and BTF.ext.
  const regions = [
    [0, 64],
    [elf.header.shoff, elf.header.shnum * 64],
    ...elf.sections.filter((s) => s.size && s.type !== 8).map((s) => [s.offset, s.size]),
  ];
  let parsed = 0;
  for (let i = 0; i < 400; i++) {
    const b = good.slice();
    const [off, len] = regions[rnd(regions.length)];
    for (let k = 0; k < 1 + rnd(4); k++) b[off + rnd(len)] = rnd(256);
    try {
      parseObject(b, "fuzz.o");
      parsed++;
    } catch (e) {
      assert.ok(e instanceof BpfObjectError, `mutation ${i}: ${e}`);
    }
  }
  assert.ok(parsed > 0 && parsed < 400, `${parsed} of 400 mutations still parsed`);
});
