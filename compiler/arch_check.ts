/**
 * The arch check: proof, from the compiled bytes, that an (arch, mode,
 * kernel) build unit really targets the arch it is labelled with.
 *
 * `compiler/arch_check.bpf.c` is compiled with exactly the flags of the
 * unit's tool objects; its `PT_REGS_PARM1/2(ctx)` become two context loads
 * whose offsets and widths are fixed by the `struct pt_regs` the compiler saw
 * and the register names `__TARGET_ARCH_<x>` selected. {@link checkArchLoads}
 * compares them with the arch table ({@link ArchInfo.parmLoads}): a wrong
 * `__TARGET_ARCH_`, a header tree or `vmlinux.h` of another arch, or a wrong
 * parse triple cannot produce the expected pair, so such a unit fails instead
 * of shipping objects that silently read the wrong registers.
 *
 * {@link checkObjectHeader} additionally checks every shipped object's ELF
 * header: a relocatable `EM_BPF` object in the arch's byte order.
 *
 * @example
 * ```ts
 * import { archInfo } from "./arch.ts";
 * import { checkArchLoads, ctxLoads } from "./arch_check.ts";
 * const obj = Deno.readFileSync(".cache/build/check.o");
 * const problem = checkArchLoads(archInfo("aarch64"), ctxLoads(obj));
 * if (problem) throw new Error(problem);
 * ```
 * @module
 */

import type { ArchInfo, CtxLoad } from "./arch.ts";

/**
 * The canary's program section.
 *
 * @example
 * ```ts
 * import { CHECK_SECTION } from "./arch_check.ts";
 * console.log(CHECK_SECTION); // kprobe/bpfpack_arch_check
 * ```
 */
export const CHECK_SECTION = "kprobe/bpfpack_arch_check";

const EM_BPF = 247;
const ET_REL = 1;

/**
 * Raised when a build unit's objects do not fit the arch they are labelled with.
 *
 * @example
 * ```ts
 * import { ArchMismatchError } from "./arch_check.ts";
 * const refused = (e: unknown) => e instanceof ArchMismatchError;
 * ```
 */
export class ArchMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ArchMismatchError";
  }
}

interface Elf {
  view: DataView;
  le: boolean;
  machine: number;
  type: number;
  sections: { name: string; offset: number; size: number }[];
}

/** Just enough ELF64 (either byte order) to find sections by name. */
function readElf(bytes: Uint8Array): Elf {
  const bad = (what: string) => new ArchMismatchError(`not a usable ELF64 object: ${what}`);
  if (bytes.length < 64 || bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c) {
    throw bad("bad magic");
  }
  if (bytes[4] !== 2) throw bad("not ELFCLASS64");
  if (bytes[5] !== 1 && bytes[5] !== 2) throw bad("unknown byte order");
  const le = bytes[5] === 1;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = view.getUint16(16, le);
  const machine = view.getUint16(18, le);
  const shoff = Number(view.getBigUint64(40, le));
  const shentsize = view.getUint16(58, le);
  const shnum = view.getUint16(60, le);
  const shstrndx = view.getUint16(62, le);
  if (shentsize !== 64 || shoff + shnum * 64 > bytes.length || shstrndx >= shnum) {
    throw bad("section headers out of range");
  }
  const raw = [];
  for (let i = 0; i < shnum; i++) {
    const at = shoff + i * 64;
    raw.push({
      nameOff: view.getUint32(at, le),
      offset: Number(view.getBigUint64(at + 24, le)),
      size: Number(view.getBigUint64(at + 32, le)),
    });
  }
  const strtab = raw[shstrndx];
  const name = (off: number) => {
    let end = strtab.offset + off;
    while (end < bytes.length && bytes[end] !== 0) end++;
    return new TextDecoder().decode(bytes.subarray(strtab.offset + off, end));
  };
  const sections = raw.map((s) => ({ name: name(s.nameOff), offset: s.offset, size: s.size }));
  for (const s of sections) {
    if (s.offset + s.size > bytes.length) throw bad(`section ${s.name} out of range`);
  }
  return { view, le, machine, type, sections };
}

/**
 * Checks an object's ELF header against the arch: relocatable, `EM_BPF`, and
 * little-endian for `bpfel` / big-endian for `bpfeb` arches. Returns a
 * problem description, or null when it fits.
 *
 * @example
 * ```ts
 * import { archInfo } from "./arch.ts";
 * import { checkObjectHeader } from "./arch_check.ts";
 * console.log(checkObjectHeader(archInfo("x86_64"), Deno.readFileSync("out/x.bpf.o")));
 * ```
 */
export function checkObjectHeader(arch: ArchInfo, bytes: Uint8Array): string | null {
  let elf: Elf;
  try {
    elf = readElf(bytes);
  } catch (e) {
    return (e as Error).message;
  }
  if (elf.machine !== EM_BPF) return `e_machine is ${elf.machine}, not EM_BPF (${EM_BPF})`;
  if (elf.type !== ET_REL) return `e_type is ${elf.type}, not ET_REL`;
  const want = arch.bpf === "bpfel";
  if (elf.le !== want) {
    return `object is ${elf.le ? "little" : "big"}-endian but ${arch.arch} needs ${arch.bpf}`;
  }
  return null;
}

/**
 * Names of an object's sections, in file order (either byte order).
 *
 * @example
 * ```ts
 * import { sectionNames } from "./arch_check.ts";
 * const names = sectionNames(Deno.readFileSync("out.bpf.o"));
 * console.log(names.includes(".BTF.ext"), names.some((n) => n.startsWith(".debug_")));
 * ```
 */
export function sectionNames(bytes: Uint8Array): string[] {
  return readElf(bytes).sections.map((s) => s.name);
}

/**
 * The context loads (`LDX_MEM` from any register, in program order) of the
 * arch check's program section.
 *
 * @example
 * ```ts
 * import { ctxLoads } from "./arch_check.ts";
 * console.log(ctxLoads(Deno.readFileSync("check.o"))); // e.g. [{offset: 104, size: 8}, {offset: 112, size: 8}]
 * ```
 */
export function ctxLoads(bytes: Uint8Array, section = CHECK_SECTION): CtxLoad[] {
  const elf = readElf(bytes);
  const text = elf.sections.find((s) => s.name === section);
  if (!text) throw new ArchMismatchError(`the arch check object has no ${section} section`);
  const loads: CtxLoad[] = [];
  for (let at = text.offset; at + 8 <= text.offset + text.size; at += 8) {
    const op = elf.view.getUint8(at);
    if (op === 0x18) { // ld_imm64 takes two slots
      at += 8;
      continue;
    }
    if ((op & 0x07) !== 0x01 || (op & 0xe0) !== 0x60) continue; // class LDX, mode MEM
    const size = { 0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8 }[op & 0x18]!;
    loads.push({ offset: elf.view.getInt16(at + 2, elf.le), size });
  }
  return loads;
}

const fmt = (loads: readonly CtxLoad[]) =>
  loads.length ? loads.map((l) => `+${l.offset}/${l.size * 8}-bit`).join(", ") : "none";

/**
 * Compares the arch check's context loads with what `arch` expects
 * (PT_REGS_PARM1 and PARM2, in either order). Returns a problem description,
 * or null when they match.
 *
 * @example
 * ```ts
 * import { archInfo } from "./arch.ts";
 * import { checkArchLoads } from "./arch_check.ts";
 * console.log(checkArchLoads(archInfo("aarch64"), [{ offset: 112, size: 8 }, { offset: 104, size: 8 }]));
 * // "PT_REGS_PARM1/2 compile to loads at +112/64-bit, +104/64-bit; aarch64 needs +0/64-bit, +8/64-bit"
 * ```
 */
export function checkArchLoads(arch: ArchInfo, loads: readonly CtxLoad[]): string | null {
  const key = (l: CtxLoad) => `${l.offset}:${l.size}`;
  const got = loads.map(key).sort();
  const want = arch.parmLoads.map(key).sort();
  if (got.length === want.length && got.every((g, i) => g === want[i])) return null;
  return `PT_REGS_PARM1/2 compile to loads at ${fmt(loads)}; ${arch.arch} needs ${
    fmt(arch.parmLoads)
  }`;
}
