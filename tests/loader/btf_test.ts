// BTF and .BTF.ext parsing, helpers, fix-ups and serialization.
import assert from "../support/assert.ts";
import {
  Btf,
  BtfError,
  BtfKind,
  btfKindName,
  findTypeId,
  fixDatasecs,
  parseBtfExt,
} from "../../artifacts/btf.ts";
import { ElfFile } from "../../artifacts/elf.ts";
import { compile } from "./support.ts";

const VMLINUX = "/sys/kernel/btf/vmlinux";

Deno.test("btf: vmlinux parses, round-trips byte for byte, and answers lookups", () => {
  const raw = Deno.readFileSync(VMLINUX);
  const btf = Btf.parse(raw, VMLINUX);
  assert.ok(btf.types.length > 10_000);
  assert.deepEqual(btf.toBytes(), raw);
  const task = btf.find("task_struct", BtfKind.STRUCT)!;
  assert.ok(task && btf.sizeOf(task.id) > 1000);
  const members = btf.members(task.id);
  const rp = members.find((m) => m.name === "real_parent")!;
  assert.ok(rp.offset > 0);
  assert.equal(btf.resolve(rp.type).kind, BtfKind.PTR);
  assert.equal(btf.sizeOf(btf.find("pid_t")!.id), 4); // through the typedef
  const tp = findTypeId(raw, "btf_trace_sys_enter", BtfKind.TYPEDEF);
  assert.equal(tp, btf.find("btf_trace_sys_enter", BtfKind.TYPEDEF)?.id);
  assert.equal(findTypeId(raw, "no_such_type_anywhere", BtfKind.STRUCT), 0);
  assert.equal(btfKindName(BtfKind.ENUM64), "ENUM64");
  // Every kind the kernel emits appears and survived the round trip.
  const kinds = new Set(btf.types.map((t) => t.kind));
  for (const k of [BtfKind.INT, BtfKind.PTR, BtfKind.ARRAY, BtfKind.STRUCT, BtfKind.UNION]) {
    assert.ok(kinds.has(k), btfKindName(k));
  }
  for (const k of [BtfKind.ENUM, BtfKind.FUNC, BtfKind.FUNC_PROTO, BtfKind.VAR, BtfKind.DATASEC]) {
    assert.ok(kinds.has(k), btfKindName(k));
  }
});

Deno.test("btf: object BTF round-trips; DATASECs need the ELF layout fix-up", async () => {
  const bytes = await compile("calls");
  const elf = new ElfFile(bytes);
  const raw = elf.sectionData(".BTF");
  const btf = Btf.parse(raw);
  assert.deepEqual(btf.toBytes(), raw);
  const maps = btf.find(".maps", BtfKind.DATASEC)!;
  assert.ok(maps.kind === BtfKind.DATASEC);
  assert.equal(maps.size, 0); // what clang leaves in object files
  const fixed = fixDatasecs(btf, {
    sectionSize: (n) => elf.section(n)?.size,
    symbolOffset: (sec, name) => {
      const s = elf.symbols().find((x) => x.name === name && x.section === sec);
      return s && Number(s.value);
    },
  });
  const after = fixed.find(".maps", BtfKind.DATASEC)!;
  assert.ok(after.kind === BtfKind.DATASEC);
  assert.equal(after.size, elf.section(".maps")!.size);
  assert.notEqual(btf, fixed); // a new instance; the input is unchanged
  assert.equal((btf.find(".maps", BtfKind.DATASEC) as { size: number }).size, 0);
  assert.throws(
    () => fixDatasecs(btf, { sectionSize: () => undefined, symbolOffset: () => 0 }),
    /names a section the object does not have/,
  );
  assert.throws(
    () => fixDatasecs(btf, { sectionSize: () => 8, symbolOffset: () => undefined }),
    /has no symbol in the ELF symbol table/,
  );
});

Deno.test("btf: .BTF.ext func_info, line_info and CO-RE records per section", async () => {
  const elf = new ElfFile(await compile("core"));
  const btf = Btf.parse(elf.sectionData(".BTF"));
  const ext = parseBtfExt(elf.sectionData(".BTF.ext"), btf);
  assert.deepEqual([ext.funcInfoRecSize, ext.lineInfoRecSize, ext.coreReloRecSize], [8, 16, 16]);
  const sec = "tracepoint/syscalls/sys_enter_getppid";
  const [fi] = ext.funcInfo.get(sec)!;
  assert.deepEqual(fi.insnOff, 0);
  assert.equal(btf.type(fi.typeId).name, "on_getppid");
  assert.ok(ext.lineInfo.get(sec)!.length > 0);
  const relos = ext.coreRelos.get(sec)!;
  assert.ok(relos.length >= 2);
  assert.ok(relos.every((r) => r.insnOff % 8 === 0)); // bytes within the section
});

Deno.test("btf: malformed blobs raise BtfError with the problem", () => {
  const raw = Deno.readFileSync(VMLINUX).slice(0, 1 << 16);
  const expect = (b: Uint8Array, re: RegExp) =>
    assert.throws(() => Btf.parse(b), (e: unknown) => e instanceof BtfError && re.test(e.message));
  expect(new Uint8Array(4), /too short/);
  expect(raw, /truncated or corrupted/); // header claims far more than 64 KiB
  const be = new Uint8Array(32);
  be.set([0xeb, 0x9f, 1, 0]);
  expect(be, /not little-endian BTF/);
  // A tiny valid blob: one PTR to type 5, which does not exist.
  const strings = new Uint8Array([0]);
  const types = new Uint8Array(12);
  new DataView(types.buffer).setUint32(4, BtfKind.PTR << 24, true);
  new DataView(types.buffer).setUint32(8, 5, true);
  const blob = new Uint8Array(24 + 12 + 1);
  const dv = new DataView(blob.buffer);
  dv.setUint16(0, 0xeb9f, true);
  blob[2] = 1;
  dv.setUint32(4, 24, true);
  dv.setUint32(12, 12, true);
  dv.setUint32(16, 12, true);
  dv.setUint32(20, 1, true);
  blob.set(types, 24);
  blob.set(strings, 36);
  expect(blob, /refers to type 5 .* only 2 types/);
  dv.setUint32(24 + 4, 25 << 24, true); // unknown kind
  expect(blob, /unknown kind 25/);
});
