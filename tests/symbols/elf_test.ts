import assert from "../support/assert.ts";
import {
  ElfError,
  ElfFile,
  ElfSectionFlag,
  ElfSectionType,
  ElfSegmentFlag,
  ElfSegmentType,
  ElfSymbolType,
} from "../../artifacts/elf.ts";

/** The libc that /bin/sh links against (per ldd), or the Debian default. */
function libcPath(): string {
  try {
    const out = new Deno.Command("ldd", { args: ["/bin/sh"], stdout: "piped", stderr: "null" })
      .outputSync();
    const m = /libc\.so\.6 => (\S+)/.exec(new TextDecoder().decode(out.stdout));
    if (m) return m[1];
  } catch {
    // fall through
  }
  return "/usr/lib/x86_64-linux-gnu/libc.so.6";
}

function run(cmd: string, args: string[]): string {
  const out = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

const OBJECT_SOURCE = `
extern int ext_func(int);
int counter = 7;
static int helper(int x) { return x + counter; }
int entry(int x) { return ext_func(helper(x)); }
`;

/** Compiles OBJECT_SOURCE to a relocatable object (once per run). */
const objectFile: Uint8Array = (() => {
  const dir = Deno.makeTempDirSync({ prefix: "elf_test_" });
  try {
    Deno.writeTextFileSync(`${dir}/obj.c`, OBJECT_SOURCE);
    run("gcc", ["-O0", "-c", "-o", `${dir}/obj.o`, `${dir}/obj.c`]);
    return Deno.readFileSync(`${dir}/obj.o`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
})();

Deno.test("elf: libc headers, sections and segments", () => {
  const elf = ElfFile.open(libcPath());
  assert.equal(elf.header.machine, 62);
  assert.equal(elf.header.type, 3); // ET_DYN
  assert.equal(elf.sections.length, elf.header.shnum);
  assert.equal(elf.sections[0].type, ElfSectionType.NULL);
  const text = elf.section(".text");
  assert.ok(text, "libc has .text");
  assert.equal(text.type, ElfSectionType.PROGBITS);
  assert.ok((text.flags & ElfSectionFlag.EXECINSTR) !== 0);
  assert.equal(elf.sectionData(".text").length, text.size);
  assert.equal(elf.sectionAt(text.index), text);
  assert.equal(elf.section(".no-such-section"), undefined);
  assert.throws(() => elf.sectionData(".no-such-section"), ElfError);
  const bss = elf.section(".bss");
  if (bss) assert.equal(elf.sectionData(bss).length, 0);
  const loads = elf.programHeaders.filter((p) => p.type === ElfSegmentType.LOAD);
  assert.ok(loads.some((p) => (p.flags & ElfSegmentFlag.X) !== 0), "an executable PT_LOAD");
  const textOff = elf.fileOffsetOf(text.addr);
  assert.equal(textOff, text.offset);
  assert.equal(elf.vaddrOf(text.offset), text.addr);
  assert.equal(elf.fileOffsetOf(0xffff_ffff_0000n), null);
});

Deno.test("elf: getpid is a defined FUNC in libc's .dynsym, matching readelf", () => {
  const path = libcPath();
  const elf = ElfFile.open(path);
  const dynsym = elf.symbols(".dynsym");
  assert.ok(dynsym.length > 100);
  assert.equal(dynsym[0].name, "");
  const getpid = dynsym.find((s) => s.name === "getpid");
  assert.ok(getpid, "getpid in .dynsym");
  assert.equal(getpid.type, ElfSymbolType.FUNC);
  assert.equal(getpid.section, ".text");
  assert.ok(getpid.size > 0);
  assert.equal(elf.symbols(".dynsym"), dynsym, "symbol tables are cached");
  const line = run("readelf", ["-sW", "--dyn-syms", path]).split("\n")
    .find((l) => / getpid(@|$)/.test(l.trim()) || l.trim().endsWith(" getpid"));
  assert.ok(line, "readelf lists getpid");
  assert.equal(getpid.value, BigInt("0x" + line.trim().split(/\s+/)[1]));
  // Stripped libraries have no .symtab: a missing named table is empty.
  if (!elf.section(".symtab")) assert.deepEqual(elf.symbols(".symtab"), []);
});

Deno.test("elf: relocatable object symbols and RELA relocations", () => {
  const elf = new ElfFile(objectFile, "obj.o");
  assert.equal(elf.header.type, 1); // ET_REL
  assert.equal(elf.programHeaders.length, 0);
  const symtab = elf.symbols();
  const entry = symtab.find((s) => s.name === "entry");
  assert.ok(entry);
  assert.equal(entry.type, ElfSymbolType.FUNC);
  assert.equal(entry.section, ".text");
  const counter = symtab.find((s) => s.name === "counter");
  assert.equal(counter?.type, ElfSymbolType.OBJECT);
  assert.equal(counter?.section, ".data");
  const ext = symtab.find((s) => s.name === "ext_func");
  assert.ok(ext);
  assert.equal(ext.shndx, 0);
  assert.equal(ext.section, null);

  const relaText = elf.section(".rela.text");
  assert.ok(relaText, ".rela.text present");
  assert.equal(relaText.type, ElfSectionType.RELA);
  assert.equal(elf.sectionAt(relaText.info)?.name, ".text");
  const rels = elf.relocations(relaText);
  const linked = elf.symbols(relaText.link);
  const call = rels.find((r) => linked[r.symbol]?.name === "ext_func");
  assert.ok(call, "a relocation against ext_func");
  assert.equal(call.type, 4); // R_X86_64_PLT32
  assert.equal(call.addend, -4n);
  assert.ok(call.offset < BigInt(elf.section(".text")!.size));
  assert.ok(rels.every((r) => r.symbol < linked.length));
  assert.throws(() => elf.relocations(".text"), /not SHT_REL/);
  assert.throws(() => elf.symbols(".text"), /not SHT_SYMTAB/);
  assert.equal(elf.stringAt(".strtab", 0), "");
  assert.throws(() => elf.stringAt(".strtab", 1 << 30), /outside its/);
});

Deno.test("elf: 32-bit, big-endian and non-ELF input throw clear errors", () => {
  const header = (cls: number, data: number) => {
    const b = new Uint8Array(64);
    b.set([0x7f, 0x45, 0x4c, 0x46, cls, data, 1]);
    return b;
  };
  assert.throws(() => new ElfFile(header(1, 1)), /unsupported ELF class\/endianness \(32-bit/);
  assert.throws(() => new ElfFile(header(2, 2)), /unsupported ELF class\/endianness.*big-endian/);
  assert.throws(() => new ElfFile(new TextEncoder().encode("#!/bin/sh\necho hi\n")), /not an ELF/);
  assert.throws(() => new ElfFile(new Uint8Array(3)), /truncated ELF/);
  assert.throws(() => new ElfFile(header(2, 1).subarray(0, 40)), /truncated/);
  assert.throws(() => ElfFile.open("/nonexistent/file"), /cannot read the file/);
});

/** Exercises every decoder of a possibly corrupted image. */
function touchEverything(bytes: Uint8Array): void {
  let elf: ElfFile;
  try {
    elf = new ElfFile(bytes, "fuzz");
  } catch (e) {
    assertElfError(e);
    return;
  }
  for (const s of elf.sections) {
    for (
      const op of [
        () => elf.sectionData(s),
        () => elf.stringAt(s, 1),
        () => elf.symbols(s),
        () => elf.relocations(s),
      ]
    ) {
      try {
        op();
      } catch (e) {
        assertElfError(e);
      }
    }
  }
  for (const p of elf.programHeaders) {
    try {
      elf.segmentData(p);
    } catch (e) {
      assertElfError(e);
    }
    elf.vaddrOf(p.offset);
    elf.fileOffsetOf(p.vaddr);
  }
  for (const name of [".symtab", ".dynsym"]) {
    try {
      elf.symbols(name);
    } catch (e) {
      assertElfError(e);
    }
  }
}

function assertElfError(e: unknown): void {
  if (!(e instanceof ElfError)) throw new Error(`expected an ElfError, got ${e}`, { cause: e });
  assert.ok(e.message.length > 10);
}

Deno.test("elf: fuzzed truncations and bit flips only ever raise ElfError", () => {
  // Deterministic xorshift32.
  let seed = 0x2545f491;
  const rand = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const samples = [objectFile, Deno.readFileSync("/bin/true")];
  const started = performance.now();
  for (const original of samples) {
    touchEverything(original);
    const h = new ElfFile(original).header;
    // Boundaries around the header tables, then random cuts.
    const cuts = [0, 1, 15, 16, 63, 64, h.shoff, h.shoff + 1, h.shoff + 64, h.phoff + 1];
    for (let i = 0; i < 100; i++) cuts.push(rand(original.length));
    for (const cut of cuts) touchEverything(original.slice(0, Math.min(cut, original.length)));
    for (let i = 0; i < 250; i++) {
      const b = original.slice();
      const flips = 1 + rand(8);
      for (let k = 0; k < flips; k++) {
        // Bias half of the flips towards the headers, where they hurt most.
        const at = i % 2 === 0 ? rand(64) : rand(b.length);
        b[at] ^= 1 << rand(8);
      }
      if (i % 5 === 0) {
        // Smash a section header field with 0xff bytes.
        const at = h.shoff + rand(h.shnum * h.shentsize);
        b.fill(0xff, at, Math.min(at + 1 + rand(8), b.length));
      }
      touchEverything(b);
    }
  }
  assert.ok(performance.now() - started < 3000, "fuzzing stays fast (no pathological loops)");
});
