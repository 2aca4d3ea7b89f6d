// The loader on the running kernel: objects compiled by clang-19 at test time,
// loaded and attached by runtime/loader (not libbpf), observed through maps,
// a ring buffer and perf buffers.
import assert from "../support/assert.ts";
import { mapInfo, mapLookup, mapUpdate } from "../../runtime/kernel/bpf.ts";
import { SysError } from "../../runtime/kernel/errno.ts";
import { libc } from "../../runtime/kernel/ffi.ts";
import { PerfReader, type Sample } from "../../runtime/kernel/perf.ts";
import { RingBufReader } from "../../runtime/kernel/ringbuf.ts";
import { onlineCpus } from "../../runtime/kernel/target.ts";
import { attachProgram, detachProgram } from "../../runtime/loader/attach.ts";
import {
  closeObject,
  type LoadedObject,
  type LoadedResource,
  loadObject,
  ObjectLoadError,
  ProgramLoadError,
} from "../../runtime/loader/load.ts";
import { parseObject } from "../../artifacts/bpf_object.ts";
import { Btf, BtfKind } from "../../artifacts/btf.ts";
import {
  compile,
  eventually,
  getpidTimes,
  getppidTimes,
  gettid,
  leftovers,
  snapshotIds,
} from "./support.ts";

const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
const KEY0 = u32(0);
const TID = gettid();
const GETPPID_NR = Deno.build.arch === "aarch64" ? 173 : 110;

async function load(name: string, options: Parameters<typeof loadObject>[1] = {}) {
  const spec = parseObject(await compile(name), `${name}.bpf.o`);
  return { spec, obj: loadObject(spec, options) };
}

/** Reads a u64 variable of a global data map. */
function variable(obj: LoadedObject, map: string, name: string): bigint {
  const m = obj.maps[map];
  const v = m.spec.variables.find((x) => x.name === name);
  assert.ok(v, `${name} in ${map}`);
  const value = mapLookup(m.fd, KEY0, m.spec.valueSize);
  return new DataView(value.buffer).getBigUint64(v.offset, true);
}

function statusField(pid: number | "self", field: string): number {
  const m = new RegExp(`^${field}:\\s*(\\d+)`, "m").exec(
    Deno.readTextFileSync(`/proc/${pid}/status`),
  );
  return Number(m?.[1]);
}

interface OpenEvent {
  tgid: number;
  comm: string;
  filename: string;
}

function decodeEvent(s: Sample): OpenEvent {
  const dv = new DataView(s.data.buffer, s.data.byteOffset, s.data.byteLength);
  const str = (off: number, len: number) => {
    const b = s.data.subarray(off, off + len);
    const end = b.indexOf(0);
    return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
  };
  return { tgid: dv.getUint32(0, true), comm: str(8, 16), filename: str(24, 96) };
}

Deno.test("loader: tracepoint program feeds a BTF hash map, a ring buffer and a perf array", async () => {
  const registered: LoadedResource[] = [];
  const { spec, obj } = await load("events", { register: (r) => void registered.push(r) });
  assert.deepEqual(registered.map((r) => `${r.kind}:${r.name}`), [
    "btf:events.bpf.o",
    "map:opens",
    "map:ring",
    "map:perf",
    "prog:on_openat",
  ]);
  assert.equal(obj.maps.opens.btf, true); // created with BTF key/value types
  assert.equal(obj.maps.perf.maxEntries > 0, true); // one slot per possible CPU
  assert.equal(spec.maps.find((m) => m.name === "perf")?.maxEntries, 0);
  const readers: PerfReader[] = [];
  let ring: RingBufReader | null = null;
  const path = await Deno.makeTempFile({ prefix: "bpfpack-loader-open-" });
  try {
    for (const cpu of onlineCpus().cpus) {
      const r = PerfReader.open(-1, cpu, 8);
      readers.push(r);
      mapUpdate(obj.maps.perf.fd, u32(cpu), u32(r.fd), 0);
    }
    ring = RingBufReader.open(obj.maps.ring.fd, 64 * 1024);
    const att = attachProgram(obj.programs.on_openat);
    assert.equal(att.what, "tracepoint:syscalls:sys_enter_openat");
    try {
      for (let i = 0; i < 3; i++) Deno.openSync(path).close();
    } finally {
      detachProgram(att);
    }
    const mine = (e: OpenEvent) => e.filename === path && e.tgid === Deno.pid;
    const fromRing = ring.drain().samples.map(decodeEvent).filter(mine);
    assert.equal(fromRing.length, 3, "three ring buffer events for our file");
    assert.ok(fromRing[0].comm.length > 0);
    const fromPerf = readers.flatMap((r) => r.drain().samples).map(decodeEvent).filter(mine);
    assert.equal(fromPerf.length, 3, "three perf events for our file");
    const count = new DataView(mapLookup(obj.maps.opens.fd, u32(Deno.pid), 8).buffer)
      .getBigUint64(0, true);
    assert.ok(count >= 3n, `opens[${Deno.pid}] = ${count}`);
  } finally {
    ring?.close();
    for (const r of readers) {
      r.close();
    }
    Deno.removeSync(path);
    for (const r of registered.reverse()) libc.close(r.fd);
  }
});

Deno.test("loader: .data/.bss counters and a const volatile .rodata filter set at load", async () => {
  const { obj } = await load("globals", { rodata: { target_pid: TID } });
  try {
    assert.equal(variable(obj, ".rodata", "step"), 1n); // default kept
    const rodata = mapLookup(obj.maps[".rodata"].fd, KEY0, obj.maps[".rodata"].spec.valueSize);
    assert.equal(new DataView(rodata.buffer).getUint32(0, true), TID);
    // Frozen: user space cannot change the filter any more.
    assert.throws(
      () => mapUpdate(obj.maps[".rodata"].fd, KEY0, rodata, 0),
      (e: unknown) => e instanceof SysError && e.errno === 1,
    );
    assert.equal(variable(obj, ".data", "seen"), 1000n); // initial value from the object
    const att = attachProgram(obj.programs.count_getpid);
    try {
      getpidTimes(50);
      assert.equal(variable(obj, ".bss", "matched"), 50n);
      // A child shell calls getpid too (for $$): it is seen but not matched.
      const others = variable(obj, ".bss", "others");
      await new Deno.Command("/bin/sh", { args: ["-c", "echo $$"], stdout: "null" }).output();
      assert.ok(variable(obj, ".bss", "others") > others);
    } finally {
      detachProgram(att);
    }
    assert.ok(variable(obj, ".data", "seen") >= 1051n);
  } finally {
    closeObject(obj);
  }
  // The same object with another filter value: none of our calls match.
  const { obj: other } = await load("globals", { rodata: { target_pid: 0x7ffffff0 } });
  try {
    const att = attachProgram(other.programs.count_getpid);
    try {
      getpidTimes(20);
    } finally {
      detachProgram(att);
    }
    assert.equal(variable(other, ".bss", "matched"), 0n);
    assert.ok(variable(other, ".bss", "others") >= 20n);
  } finally {
    closeObject(other);
  }
});

Deno.test("loader: bad rodata options are refused before anything is created", async () => {
  const spec = parseObject(await compile("globals"), "globals.bpf.o");
  const before = snapshotIds();
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ target_tgid: 1 }, /no const volatile variable "target_tgid".*known: target_pid, step/],
    [{ target_pid: new Uint8Array(8) }, /got 8 bytes; pass exactly 4 bytes/],
    [{ target_pid: 2 ** 32 }, /does not fit in 4 bytes/],
    [{ target_pid: 1.5 }, /is not an integer/],
  ];
  for (const [rodata, re] of cases) {
    assert.throws(
      () => loadObject(spec, { rodata: rodata as Record<string, number> }),
      (e: unknown) => e instanceof ObjectLoadError && re.test(e.message),
    );
  }
  assert.deepEqual(leftovers(before, [".rodata", ".data", ".bss", "count_getpid"]), []);
});

Deno.test("loader: bpf-to-bpf calls from two programs of one section, and a bpf_loop callback", async () => {
  const { spec, obj } = await load("calls", { rodata: { target_pid: TID } });
  try {
    const [first, second] = spec.programs;
    assert.equal(first.section, second.section);
    assert.deepEqual(first.functions.map((f) => `${f.section}:${f.name}`), [
      "tracepoint/syscalls/sys_enter_getppid:first",
      ".text:mine",
      ".text:bump",
    ]);
    assert.ok(second.functions.some((f) => f.name === "loop_step"));
    // func_info covers every placed function, at its placed instruction.
    assert.deepEqual(first.funcInfo.map((r) => r.insnOff), first.functions.map((f) => f.insn));
    const atts = [attachProgram(obj.programs.first), attachProgram(obj.programs.second)];
    try {
      getppidTimes(20);
    } finally {
      atts.forEach(detachProgram);
    }
    const slot = (i: number) =>
      new DataView(mapLookup(obj.maps.slots.fd, u32(i), 8).buffer).getBigUint64(0, true);
    assert.equal(slot(0), 20n);
    assert.equal(slot(1), 200n);
    assert.equal(slot(2), 60n); // bpf_loop ran the callback 3 times per call
  } finally {
    closeObject(obj);
  }
});

Deno.test("loader: CO-RE BPF_CORE_READ(task, real_parent, tgid) matches /proc PPid", async () => {
  const { spec, obj } = await load("core");
  try {
    assert.ok(spec.programs[0].coreRelos.length >= 2);
    const att = attachProgram(obj.programs.on_getppid);
    let childPid = 0;
    let childPPid = 0;
    let childSeen: number | null = null;
    try {
      getppidTimes(1);
      // A child shell (dash calls getppid at start-up to set $PPID).
      const child = new Deno.Command("/bin/sh", {
        args: ["-c", "read x"],
        stdin: "piped",
        stdout: "null",
      }).spawn();
      childPid = child.pid;
      const parentOf = () => {
        try {
          return new DataView(mapLookup(obj.maps.parents.fd, u32(childPid), 4).buffer)
            .getUint32(0, true);
        } catch {
          return null;
        }
      };
      await eventually(() => parentOf() !== null);
      childPPid = statusField(childPid, "PPid");
      childSeen = parentOf();
      await child.stdin.close();
      await child.status;
    } finally {
      detachProgram(att);
    }
    const self = new DataView(mapLookup(obj.maps.parents.fd, u32(Deno.pid), 4).buffer)
      .getUint32(0, true);
    assert.equal(self, statusField("self", "PPid"));
    assert.equal(childSeen, childPPid);
    assert.equal(childSeen, Deno.pid);
  } finally {
    closeObject(obj);
  }
});

Deno.test("loader: a legacy maps section (struct bpf_map_def, no BTF) loads and counts", async () => {
  const spec = parseObject(await compile("legacy", false), "legacy.bpf.o");
  assert.equal(spec.btf, null);
  assert.equal(spec.kernelVersion, 0x060000);
  const obj = loadObject(spec);
  try {
    const calls = mapInfo(obj.maps.calls.fd);
    assert.deepEqual(
      [calls.type, calls.keySize, calls.valueSize, calls.maxEntries, calls.name],
      [2, 4, 8, 1, "calls"],
    );
    const byTgid = mapInfo(obj.maps.by_tgid.fd);
    assert.deepEqual([byTgid.type, byTgid.maxEntries, byTgid.flags], [1, 128, 1]);
    const att = attachProgram(obj.programs.legacy_count);
    try {
      getppidTimes(10);
    } finally {
      detachProgram(att);
    }
    const n = new DataView(mapLookup(obj.maps.calls.fd, KEY0, 8).buffer).getBigUint64(0, true);
    assert.ok(n >= 10n, `counted ${n}`);
  } finally {
    closeObject(obj);
  }
});

Deno.test("loader: a raw_tracepoint program attaches through BPF_RAW_TRACEPOINT_OPEN", async () => {
  const { obj } = await load("raw_tp", {
    rodata: { target_pid: TID, syscall_nr: GETPPID_NR },
  });
  try {
    const att = attachProgram(obj.programs.count_sys_enter);
    assert.equal(att.kind, "link");
    assert.equal(att.what, "raw_tracepoint:sys_enter");
    try {
      getppidTimes(25);
    } finally {
      detachProgram(att);
    }
    assert.equal(variable(obj, ".bss", "hits"), 25n);
    getppidTimes(5); // detached: no more counting
    assert.equal(variable(obj, ".bss", "hits"), 25n);
  } finally {
    closeObject(obj);
  }
});

Deno.test("loader: a verifier failure closes every map and program already created", async () => {
  const spec = parseObject(await compile("verifier_fail"), "verifier_fail.bpf.o");
  const before = snapshotIds();
  const registered: LoadedResource[] = [];
  const err = assert.throws(
    () => loadObject(spec, { register: (r) => void registered.push(r) }),
    (e: unknown) => {
      assert.ok(e instanceof ProgramLoadError, String(e));
      assert.equal(e.program, "vf_unchecked");
      assert.equal(e.errno, 13);
      assert.match(e.message, /program "vf_unchecked" \(section "tracepoint\/syscalls/);
      assert.match(e.message, /invalid mem access 'map_value_or_null'/);
      assert.match(e.log, /verifier_fail\.bpf\.c:\d+/); // line info reached the kernel
      return true;
    },
  );
  void err;
  assert.deepEqual(registered, []);
  // Maps used by a closed program are released after an RCU grace period.
  const names = ["vf_values", ".bss", "vf_fine", "vf_unchecked"];
  await eventually(() => leftovers(before, names).length === 0);
  assert.deepEqual(leftovers(before, names), []);
});

Deno.test("loader: tp_btf loads with its vmlinux BTF id; attach works or fails clearly", async () => {
  const { spec, obj } = await load("tp_btf", { rodata: { target_pid: TID } });
  try {
    assert.deepEqual(spec.programs[0].attach, { kind: "tp_btf", target: "sys_enter" });
    let att;
    try {
      att = attachProgram(obj.programs.btf_sys_enter);
    } catch (e) {
      // Allowed to fail on kernels that refuse tracing links; must say which program.
      assert.ok(e instanceof SysError);
      assert.match(e.message, /program "btf_sys_enter"/);
      return;
    }
    try {
      getppidTimes(5);
    } finally {
      detachProgram(att);
    }
    assert.ok(variable(obj, ".bss", "btf_hits") >= 5n);
  } finally {
    closeObject(obj);
  }
});

Deno.test("loader: attach errors name the program and say what to pass", async () => {
  const { obj } = await load("events");
  try {
    const prog = obj.programs.on_openat;
    assert.throws(
      () => attachProgram({ ...prog, attach: { kind: "tracepoint" } }),
      /program "on_openat".*names no tracepoint; pass options.target/,
    );
    assert.throws(
      () => attachProgram({ ...prog, attach: { kind: "perf_event" } }),
      /perf_event programs need explicit event parameters/,
    );
    assert.throws(
      () => attachProgram(prog, { target: "syscalls/sys_exit_openat" }),
      /program "on_openat".*EACCES.*reads past this event's context/,
    );
    assert.throws(
      () => attachProgram(prog, { target: "syscalls/no_such_tracepoint_here" }),
      /program "on_openat".*no_such_tracepoint_here does not exist/,
    );
    // An explicit target re-derives the attach point through the section table.
    const att = attachProgram(prog, { target: "syscalls/sys_enter_openat2" });
    assert.equal(att.what, "tracepoint:syscalls:sys_enter_openat2");
    detachProgram(att);
  } finally {
    closeObject(obj);
  }
});

Deno.test("loader: bad inputs fail clearly and leave nothing loaded", async () => {
  const before = snapshotIds();
  const good = await compile("events");
  const bad: [string, Uint8Array, RegExp][] = [
    ["truncated", good.slice(0, good.length - 999), /truncated or corrupted ELF/],
    ["corrupted", good.map((b, i) => (i >= 64 && i < 4096 ? b ^ 0x5a : b)), /corrupted/],
    ["non-BPF ELF", Deno.readFileSync("/bin/true"), /not a BPF object: e_machine is/],
    ["unknown section", await compile("unknown_section"), /unknown section "my_settings"/],
    ["unknown program section", await compile("unknown_prog"), /"sprocket\/thing" has no known/],
  ];
  for (const [what, bytes, re] of bad) {
    assert.throws(() => loadObject(parseObject(bytes, what)), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, re, what);
      assert.ok(e.message.startsWith(`${what}:`), e.message);
      return true;
    });
  }
  // The verifier failure is the one case where maps were created first.
  assert.throws(
    () => loadObject(parseObject(Deno.readFileSync("/dev/null"), "empty")),
    /empty: .*truncated ELF/,
  );
  const verifierFail = await compile("verifier_fail");
  assert.throws(
    () => loadObject(parseObject(verifierFail, "vf")),
    (e: unknown) => e instanceof ProgramLoadError && /^vf: program "vf_unchecked"/.test(e.message),
  );
  const names = ["opens", "ring", "perf", "on_openat", "vf_values", "vf_fine", "vf_unchecked"];
  await eventually(() => leftovers(before, names).length === 0);
  assert.deepEqual(leftovers(before, names), []);
});

Deno.test("loader: fentry loads and counts, or fails naming the missing kernel feature", async () => {
  const spec = parseObject(await compile("fentry"), "fentry.bpf.o");
  const before = snapshotIds();
  let obj: LoadedObject;
  try {
    obj = loadObject(spec);
  } catch (e) {
    assert.ok(e instanceof ProgramLoadError, String(e));
    assert.equal(e.errno, 1);
    assert.match(e.message, /program "fentry_openat2".*refuses fentry\/fexit programs/);
    await eventually(() => leftovers(before, [".bss", "fentry_openat2"]).length === 0);
    assert.deepEqual(leftovers(before, [".bss", "fentry_openat2"]), []);
    return;
  }
  try {
    const att = attachProgram(obj.programs.fentry_openat2);
    try {
      Deno.openSync("/proc/self/status").close();
    } finally {
      detachProgram(att);
    }
    assert.ok(variable(obj, ".bss", "fentry_hits") >= 1n);
  } finally {
    closeObject(obj);
  }
});

Deno.test("loader: BTF the kernel refuses is dropped with a warning unless CO-RE needs it", async () => {
  const spec = parseObject(await compile("globals"), "globals.bpf.o");
  const btf = spec.btf!;
  // An INT wider than its size: the kernel's BTF checker rejects the blob.
  const broken = new Btf([...btf.types, {
    id: btf.types.length,
    kind: BtfKind.INT,
    name: "",
    nameOff: 0,
    kflag: false,
    size: 1,
    encoding: 0,
    bitOffset: 0,
    bits: 99,
  }], btf.strings);
  const obj = loadObject({ ...spec, btf: broken }, { rodata: { target_pid: TID } });
  try {
    assert.equal(obj.btfFd, null);
    assert.match(obj.warnings.join("\n"), /the kernel refused the object's BTF/);
    assert.equal(obj.maps[".bss"].btf, false);
    const att = attachProgram(obj.programs.count_getpid);
    try {
      getpidTimes(7);
    } finally {
      detachProgram(att);
    }
    assert.equal(variable(obj, ".bss", "matched"), 7n);
  } finally {
    closeObject(obj);
  }
  const core = parseObject(await compile("core"), "core.bpf.o");
  const coreBroken = new Btf([...core.btf!.types, {
    ...broken.types.at(-1)!,
    id: core.btf!.types.length,
  }], core.btf!.strings);
  const before = snapshotIds();
  assert.throws(
    () => loadObject({ ...core, btf: coreBroken }),
    /core\.bpf\.o: the kernel refused the object's BTF .*program "on_getppid" has CO-RE relocations/,
  );
  assert.deepEqual(leftovers(before, ["parents", "on_getppid"]), []);
});

Deno.test("loader: uprobe/uretprobe by library:symbol, kprobe where the kernel has them, perf_event", async () => {
  const { obj } = await load("probes", { rodata: { target_pid: TID } });
  try {
    // uprobes: "libc.so.6" resolves through the library dirs, getppid through its symbols.
    const atts = [
      attachProgram(obj.programs.up_getppid),
      attachProgram(obj.programs.urp_getppid),
    ];
    assert.match(atts[0].what, /^uprobe:\/.*libc\.so\.6:0x[0-9a-f]+$/);
    try {
      getppidTimes(5);
    } finally {
      atts.forEach(detachProgram);
    }
    assert.equal(variable(obj, ".bss", "uprobe_hits"), 5n);
    assert.equal(variable(obj, ".bss", "uretprobe_hits"), 5n);
    // kprobes: attach, or say clearly that this kernel has none.
    let kp;
    try {
      kp = attachProgram(obj.programs.kp_openat2);
    } catch (e) {
      assert.ok(e instanceof SysError);
      assert.match(e.message, /program "kp_openat2".*kprobes are not available on this kernel/);
    }
    if (kp) {
      try {
        Deno.openSync("/proc/self/status").close();
      } finally {
        detachProgram(kp);
      }
      assert.ok(variable(obj, ".bss", "kprobe_hits") >= 1n);
    }
    // perf_event: sample this thread's CPU clock every millisecond while it spins.
    const pe = attachProgram(obj.programs.on_sample, {
      perfEvent: {
        type: 1, // PERF_TYPE_SOFTWARE
        config: 0, // PERF_COUNT_SW_CPU_CLOCK
        samplePeriod: 1_000_000n,
        sampleFreq: 0n,
        pid: TID,
        cpu: -1,
        groupFd: -1,
      },
    });
    try {
      const end = Date.now() + 30;
      while (Date.now() < end) { /* spin */ }
    } finally {
      detachProgram(pe);
    }
    assert.ok(variable(obj, ".bss", "samples") >= 5n, `${variable(obj, ".bss", "samples")}`);
  } finally {
    closeObject(obj);
  }
});
