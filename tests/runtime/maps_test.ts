// Map commands on the real kernel: types 1, 2, 4, 5, 6, 7, 9, success and failure paths.
import assert from "../support/assert.ts";
import { errnoOf, retOf } from "../../tools/client/raw.ts";
import { must, startBpfd } from "../support/bpfd.ts";
import { u32b64, u64b64, view } from "../../tools/client/asm.ts";
import { possibleCpus } from "../../runtime/kernel/target.ts";

const NCPU = possibleCpus().cpus.length;

Deno.test("hash map (1): update flags, lookup, next key, dump, delete, clear", async () => {
  const c = startBpfd();
  try {
    const h = await must(c, "BPF_CREATE_MAP 1 counts 4 8 16 0");
    assert.deepEqual(await c.send(`BPF_UPDATE_ELEM ${h} ${u32b64(1)} 4 ${u64b64(2)} 8 0`), [
      "bpf_update_elem: ret=0",
    ]);
    await must(c, `BPF_UPDATE_ELEM ${h} ${u32b64(5)} 4 ${u64b64(6)} 8 0`);
    const noexist = await c.send(`BPF_UPDATE_ELEM ${h} ${u32b64(1)} 4 ${u64b64(3)} 8 1`);
    assert.equal(noexist[0], "bpf_update_elem: ret=-1 errno=17 EEXIST");
    assert.match(noexist[1], /^error: .*BPF_NOEXIST/);
    const exist = await c.send(`BPF_UPDATE_ELEM ${h} ${u32b64(9)} 4 ${u64b64(3)} 8 2`);
    assert.equal(exist[0], "bpf_update_elem: ret=-1 errno=2 ENOENT");
    assert.deepEqual(await c.send(`BPF_LOOKUP_ELEM ${h} ${u32b64(1)} 4 8`), [u64b64(2)]);
    assert.equal(
      (await c.send(`BPF_LOOKUP_ELEM ${h} ${u32b64(9)} 4 8`))[0],
      "bpf_lookup_elem: ret=-1 errno=2 ENOENT",
    );
    // Dump: alternating key/value lines and a final empty line; order is the kernel's.
    const dump = await c.send(`BPF_GET_FIRST_KEY ${h} 4 8 1`);
    assert.equal(dump.length, 5);
    assert.equal(dump[4], "");
    const pairs = new Map([[dump[0], dump[1]], [dump[2], dump[3]]]);
    assert.deepEqual(pairs, new Map([[u32b64(1), u64b64(2)], [u32b64(5), u64b64(6)]]));
    // First key and next key agree with the dump order.
    assert.deepEqual(await c.send(`BPF_GET_FIRST_KEY ${h} 4 8 0`), [dump[0]]);
    assert.deepEqual(await c.send(`BPF_GET_NEXT_KEY ${h} ${dump[0]} 4`), [dump[2]]);
    const end = await c.send(`BPF_GET_NEXT_KEY ${h} ${dump[2]} 4`);
    assert.equal(end[0], "bpf_get_next_key: ret=-1 errno=2 ENOENT");
    assert.deepEqual(await c.send(`BPF_DELETE_ELEM ${h} ${u32b64(5)} 4`), [
      "bpf_delete_elem: ret=0",
    ]);
    assert.equal(errnoOf(await c.send(`BPF_DELETE_ELEM ${h} ${u32b64(5)} 4`)), 2);
    assert.deepEqual(await c.send(`BPF_CLEAR_MAP ${h} 4`), ["bpf_clear_map: ret=1"]);
    assert.deepEqual(await c.send(`BPF_CLEAR_MAP ${h} 4`), ["bpf_clear_map: ret=0"]);
    const empty = await c.send(`BPF_GET_FIRST_KEY ${h} 4 8 1`);
    assert.equal(empty[0], "bpf_get_first_key: ret=-1 errno=2 ENOENT");
  } finally {
    assert.equal(await c.close(), 0);
  }
});

Deno.test("array map (2): all slots dump, delete and clear refused with a reason", async () => {
  const c = startBpfd();
  try {
    const a = await must(c, "BPF_CREATE_MAP 2 arr 4 4 4 0");
    await must(c, `BPF_UPDATE_ELEM ${a} ${u32b64(2)} 4 ${u32b64(7)} 4 0`);
    assert.deepEqual(await c.send(`BPF_LOOKUP_ELEM ${a} ${u32b64(2)} 4 4`), [u32b64(7)]);
    const oob = await c.send(`BPF_LOOKUP_ELEM ${a} ${u32b64(4)} 4 4`);
    assert.equal(retOf(oob), -1);
    const dump = await c.send(`BPF_GET_FIRST_KEY ${a} 4 4 1`);
    assert.deepEqual(dump, [
      u32b64(0),
      u32b64(0),
      u32b64(1),
      u32b64(0),
      u32b64(2),
      u32b64(7),
      u32b64(3),
      u32b64(0),
      "",
    ]);
    const del = await c.send(`BPF_DELETE_ELEM ${a} ${u32b64(2)} 4`);
    assert.equal(del[0], "bpf_delete_elem: ret=-1 errno=22 EINVAL");
    assert.match(del[1], /array/);
    const clr = await c.send(`BPF_CLEAR_MAP ${a} 4`);
    assert.equal(clr[0], "bpf_clear_map: ret=-1 errno=22 EINVAL");
    const big = await c.send(`BPF_UPDATE_ELEM ${a} ${u32b64(9)} 4 ${u32b64(7)} 4 0`);
    assert.equal(retOf(big), -1);
    assert.match(big[1], /out of range/);
  } finally {
    await c.close();
  }
});

Deno.test("per-CPU maps (5, 6): values sized by the target's possible CPUs", async () => {
  const c = startBpfd();
  try {
    for (const type of [5, 6]) {
      const m = await must(c, `BPF_CREATE_MAP ${type} pc${type} 4 4 8 0`);
      // One value: replicated on every CPU (slots are rounded up to 8 bytes).
      await must(c, `BPF_UPDATE_ELEM ${m} ${u32b64(1)} 4 ${u32b64(42)} 4 0`);
      const v = await c.send(`BPF_LOOKUP_ELEM ${m} ${u32b64(1)} 4 4`);
      const dv = view(v[0]);
      assert.equal(dv.byteLength, 8 * NCPU);
      for (let cpu = 0; cpu < NCPU; cpu++) assert.equal(dv.getUint32(cpu * 8, true), 42);
      // A full per-CPU value: distinct per CPU.
      const full = new Uint8Array(8 * NCPU);
      for (let cpu = 0; cpu < NCPU; cpu++) {
        new DataView(full.buffer).setUint32(cpu * 8, 100 + cpu, true);
      }
      await must(c, `BPF_UPDATE_ELEM ${m} ${u32b64(1)} 4 ${full.toBase64()} ${full.length} 0`);
      assert.deepEqual(await c.send(`BPF_LOOKUP_ELEM ${m} ${u32b64(1)} 4 ${full.length}`), [
        full.toBase64(),
      ]);
      // A host-sized value (wrong CPU count) is refused with the expected size.
      const wrong = new Uint8Array(8 * (NCPU + 3));
      const bad = await c.send(
        `BPF_UPDATE_ELEM ${m} ${u32b64(1)} 4 ${wrong.toBase64()} ${wrong.length} 0`,
      );
      assert.equal(errnoOf(bad), 22);
      assert.match(bad[1], new RegExp(`${8 * NCPU} = round_up\\(4, 8\\) × ${NCPU} possible CPUs`));
      const dump = await c.send(`BPF_GET_FIRST_KEY ${m} 4 ${full.length} 1`);
      assert.ok(dump.includes(full.toBase64()));
    }
  } finally {
    await c.close();
  }
});

Deno.test("LRU hash (9) evicts instead of failing; plain hash (1) reports full", async () => {
  const c = startBpfd();
  try {
    const lru = await must(c, "BPF_CREATE_MAP 9 lru 4 4 4 0");
    for (let i = 0; i < 64; i++) {
      await must(c, `BPF_UPDATE_ELEM ${lru} ${u32b64(i)} 4 ${u32b64(i)} 4 0`);
    }
    const dump = await c.send(`BPF_GET_FIRST_KEY ${lru} 4 4 1`);
    assert.ok(dump.length >= 3 && dump.length <= 2 * 64 + 1);
    assert.deepEqual(await c.send(`BPF_LOOKUP_ELEM ${lru} ${u32b64(63)} 4 4`), [u32b64(63)]);
    const h = await must(c, "BPF_CREATE_MAP 1 small 4 4 2 0");
    await must(c, `BPF_UPDATE_ELEM ${h} ${u32b64(1)} 4 ${u32b64(1)} 4 0`);
    await must(c, `BPF_UPDATE_ELEM ${h} ${u32b64(2)} 4 ${u32b64(1)} 4 0`);
    const full = await c.send(`BPF_UPDATE_ELEM ${h} ${u32b64(3)} 4 ${u32b64(1)} 4 0`);
    assert.equal(full[0], "bpf_update_elem: ret=-1 errno=7 E2BIG");
    assert.match(full[1], /full \(max_entries 2\)/);
  } finally {
    await c.close();
  }
});

Deno.test("perf event array (4) holds only this session's perf readers", async () => {
  const c = startBpfd();
  try {
    const ev = await must(c, "BPF_CREATE_MAP 4 events 4 4 2 0");
    const r = await must(c, "BPF_OPEN_PERF_BUFFER -1 0 8");
    await must(c, `BPF_UPDATE_ELEM ${ev} ${u32b64(0)} 4 ${u32b64(r)} 4 0`);
    // fd 1 is the runtime's stdout: refused before the kernel sees it.
    const foreign = await c.send(`BPF_UPDATE_ELEM ${ev} ${u32b64(1)} 4 ${u32b64(1)} 4 0`);
    assert.equal(foreign[0], "bpf_update_elem: ret=-1 errno=9 EBADF");
    assert.deepEqual(await c.send(`BPF_DELETE_ELEM ${ev} ${u32b64(0)} 4`), [
      "bpf_delete_elem: ret=0",
    ]);
  } finally {
    await c.close();
  }
});

Deno.test("stack trace map (7): create, lookup of a missing id, dump of an empty map", async () => {
  const c = startBpfd();
  try {
    const st = await must(c, "BPF_CREATE_MAP 7 stacks 4 1016 64 0");
    const miss = await c.send(`BPF_LOOKUP_ELEM ${st} ${u32b64(3)} 4 1016`);
    assert.equal(retOf(miss), -1);
    const dump = await c.send(`BPF_GET_FIRST_KEY ${st} 4 1016 1`);
    assert.equal(dump[0], "bpf_get_first_key: ret=-1 errno=2 ENOENT");
    // A stack map with a value size that is not a multiple of 8 is refused by the kernel.
    const bad = await c.send("BPF_CREATE_MAP 7 badstk 4 1017 64 0");
    assert.equal(errnoOf(bad), 22);
  } finally {
    await c.close();
  }
});

Deno.test("1-byte keys and values work (the original could not encode them)", async () => {
  const c = startBpfd();
  try {
    const m = await must(c, "BPF_CREATE_MAP 1 tiny 1 1 4 0");
    const k = new Uint8Array([7]).toBase64();
    const v = new Uint8Array([9]).toBase64();
    await must(c, `BPF_UPDATE_ELEM ${m} ${k} 1 ${v} 1 0`);
    assert.deepEqual(await c.send(`BPF_LOOKUP_ELEM ${m} ${k} 1 1`), [v]);
    assert.deepEqual(await c.send(`BPF_GET_FIRST_KEY ${m} 1 1 0`), [k]);
    assert.deepEqual(await c.send(`BPF_GET_FIRST_KEY ${m} 1 1 1`), [k, v, ""]);
  } finally {
    await c.close();
  }
});

Deno.test("key/value length checks: klen, vlen, base64", async () => {
  const c = startBpfd();
  try {
    const m = await must(c, "BPF_CREATE_MAP 1 lens 4 8 4 0");
    // 12 bytes sent with klen=4: the original stored a garbage key; we refuse.
    const long = await c.send(`BPF_UPDATE_ELEM ${m} AAAAAAAAAAAAAAAA 4 ${u64b64(1)} 8 0`);
    assert.equal(long[0], "bpf_update_elem: ret=-1 errno=22 EINVAL");
    assert.match(long[1], /key decodes to 12 bytes but klen is 4/);
    const klen = await c.send(`BPF_LOOKUP_ELEM ${m} AQAAAAAAAAA= 8 8`);
    assert.match(klen[1], /klen 8 but map fd \d+ has key_size 4/);
    const vlen = await c.send(`BPF_LOOKUP_ELEM ${m} ${u32b64(1)} 4 4`);
    assert.match(vlen[1], /vlen 4 but map fd \d+ has value_size 8/);
    const b64 = await c.send(`BPF_UPDATE_ELEM ${m} ==== 4 ${u64b64(1)} 8 0`);
    assert.equal(b64[0], "bpf_update_elem: ret=-22 errno=22 EINVAL");
    assert.match(b64[1], /^error: key: invalid base64/);
  } finally {
    await c.close();
  }
});

Deno.test("map create failures carry errno and a reason", async () => {
  const c = startBpfd();
  try {
    const zero = await c.send("BPF_CREATE_MAP 1 zero 4 4 0 0");
    assert.equal(zero[0], "bpf_create_map: ret=-1 errno=22 EINVAL");
    assert.match(zero[1], /max_entries must be greater than 0/);
    assert.equal(errnoOf(await c.send("BPF_CREATE_MAP 999 badtype 4 4 4 0")), 22);
    assert.ok((await must(c, "BPF_CREATE_MAP 1 __none__ 4 4 4 0")) > 2);
    // A name the kernel refuses is sanitised, not fatal.
    assert.ok((await must(c, "BPF_CREATE_MAP 1 a-very-long-name-with-dashes 4 4 4 0")) > 2);
  } finally {
    await c.close();
  }
});

Deno.test("BPF_MAP_DUMP extension: every entry of a large hash map in one round trip", async () => {
  const c = startBpfd();
  try {
    const n = 5000;
    const m = await must(c, `BPF_CREATE_MAP 1 big 4 8 ${n} 0`);
    const lines = [];
    for (let i = 0; i < n; i++) {
      lines.push(`BPF_UPDATE_ELEM ${m} ${u32b64(i)} 4 ${u64b64(BigInt(i) * 3n)} 8 0`);
    }
    const res = await c.pipeline(lines);
    assert.ok(res.every((b) => b[0] === "bpf_update_elem: ret=0"));
    const dump = await c.send(`BPF_MAP_DUMP ${m}`);
    assert.equal(dump[0], `bpf_map_dump: ret=${n}`);
    const seen = new Map<number, bigint>();
    for (const line of dump.slice(1)) {
      const [cnt, k64, v64] = line.split(" ");
      const keys = view(k64);
      const vals = view(v64);
      assert.equal(keys.byteLength, Number(cnt) * 4);
      assert.equal(vals.byteLength, Number(cnt) * 8);
      for (let i = 0; i < Number(cnt); i++) {
        seen.set(keys.getUint32(i * 4, true), vals.getBigUint64(i * 8, true));
      }
    }
    assert.equal(seen.size, n);
    for (const [k, v] of seen) assert.equal(v, BigInt(k) * 3n);
  } finally {
    await c.close();
  }
});
