/**
 * BTF for CO-RE builds: find the raw BTF blob in a vmlinux (ELF `.BTF`
 * section) or in any kernel image (scan for the header `9f eb 01 00 18 00 00
 * 00`, size `hdr_len + max(type_off+type_len, str_off+str_len)`), check that
 * bpftool parses it, and generate `vmlinux.h` with
 * `bpftool btf dump file <blob> format c`.
 *
 * @example
 * ```ts
 * import { findBtf, writeBtfDir } from "./btf.ts";
 * const blob = findBtf(await Deno.readFile("/tmp/vmlinux"));
 * if (blob) await writeBtfDir(blob, "/tmp/btf-out");
 * ```
 * @module
 */

import { type Arch, ArchSchema } from "./arch.ts";
import { digestBytes } from "./digest.ts";
import { KernelInputError } from "./errors.ts";
import { run } from "./exec.ts";
import { removeIfExists, replaceDir, siblingTempDir } from "./fs_util.ts";
import { indexOfBytes } from "./version.ts";
import { z } from "zod";

/**
 * Header fields of a BTF blob.
 *
 * @example
 * ```ts
 * import { type BtfHeader, parseBtfHeader } from "./btf.ts";
 * const h: BtfHeader | undefined = parseBtfHeader(await Deno.readFile("/sys/kernel/btf/vmlinux"));
 * ```
 */
export interface BtfHeader {
  /** Header length (24 for every kernel so far). */
  hdrLen: number;
  /** Type section offset, after the header. */
  typeOff: number;
  /** Type section length. */
  typeLen: number;
  /** String section offset, after the header. */
  strOff: number;
  /** String section length. */
  strLen: number;
  /** Whole blob length: `hdrLen + max(typeOff+typeLen, strOff+strLen)`. */
  size: number;
}

/**
 * Parse and sanity-check a little-endian BTF header at `off`; `undefined` when
 * the bytes there are not a plausible, complete BTF blob.
 *
 * @example
 * ```ts
 * import { parseBtfHeader } from "./btf.ts";
 * const h = parseBtfHeader(await Deno.readFile("/sys/kernel/btf/vmlinux"));
 * console.log(h?.size);
 * ```
 */
export function parseBtfHeader(data: Uint8Array, off = 0): BtfHeader | undefined {
  if (off + 24 > data.length) return undefined;
  if (data[off] !== 0x9f || data[off + 1] !== 0xeb || data[off + 2] !== 1) return undefined;
  const v = new DataView(data.buffer, data.byteOffset + off, Math.min(32, data.length - off));
  const hdrLen = v.getUint32(4, true);
  const typeOff = v.getUint32(8, true);
  const typeLen = v.getUint32(12, true);
  const strOff = v.getUint32(16, true);
  const strLen = v.getUint32(20, true);
  if (hdrLen < 24 || hdrLen > 256 || typeOff % 4 !== 0 || strLen === 0) return undefined;
  const size = hdrLen + Math.max(typeOff + typeLen, strOff + strLen);
  if (off + size > data.length) return undefined;
  const strStart = off + hdrLen + strOff;
  if (data[strStart] !== 0 || data[strStart + strLen - 1] !== 0) return undefined;
  return { hdrLen, typeOff, typeLen, strOff, strLen, size };
}

/**
 * An ELF section found by {@link elfSection}.
 *
 * @example
 * ```ts
 * import { type ElfSection, elfSection } from "./btf.ts";
 * const s: ElfSection | undefined = elfSection(await Deno.readFile("vmlinux"), ".BTF");
 * ```
 */
export interface ElfSection {
  /** File offset. */
  offset: number;
  /** Size in bytes. */
  size: number;
}

/**
 * Locate a named section in a little-endian ELF64 file (a vmlinux); also
 * reports `e_machine`. `undefined` when the file is not such an ELF or has no
 * section of that name.
 *
 * @example
 * ```ts
 * import { elfSection } from "./btf.ts";
 * const s = elfSection(await Deno.readFile("vmlinux"), ".BTF");
 * console.log(s?.offset, s?.size);
 * ```
 */
export function elfSection(
  data: Uint8Array,
  name: string,
): (ElfSection & { machine: number }) | undefined {
  if (data.length < 64 || data[0] !== 0x7f || data[1] !== 0x45 || data[2] !== 0x4c) {
    return undefined;
  }
  if (data[3] !== 0x46 || data[4] !== 2 || data[5] !== 1) return undefined; // ELF64, LE
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const machine = v.getUint16(0x12, true);
  const shoff = Number(v.getBigUint64(0x28, true));
  const shentsize = v.getUint16(0x3a, true);
  const shnum = v.getUint16(0x3c, true);
  const shstrndx = v.getUint16(0x3e, true);
  if (shoff === 0 || shentsize < 64 || shoff + shnum * shentsize > data.length) return undefined;
  const hdr = (i: number) => shoff + i * shentsize;
  const strtab = Number(v.getBigUint64(hdr(shstrndx) + 0x18, true));
  const want = new TextEncoder().encode(name + "\0");
  for (let i = 0; i < shnum; i++) {
    const nameOff = strtab + v.getUint32(hdr(i), true);
    if (nameOff + want.length > data.length) continue;
    if (want.every((b, j) => data[nameOff + j] === b)) {
      const offset = Number(v.getBigUint64(hdr(i) + 0x18, true));
      const size = Number(v.getBigUint64(hdr(i) + 0x20, true));
      if (offset + size > data.length) return undefined;
      return { offset, size, machine };
    }
  }
  return undefined;
}

const BTF_MAGIC = new Uint8Array([0x9f, 0xeb, 0x01, 0x00]);

/**
 * The raw BTF blob of a kernel: the data itself when it already is BTF, the
 * `.BTF` section of an ELF vmlinux, or the first valid BTF header found by
 * scanning (an uncompressed arm64 `Image`, a decompressed bzImage payload).
 * Returns a view into `data`, or `undefined` when there is none.
 *
 * @example
 * ```ts
 * import { findBtf } from "./btf.ts";
 * const blob = findBtf(await Deno.readFile("/tmp/Image"));
 * console.log(blob?.length);
 * ```
 */
export function findBtf(data: Uint8Array): Uint8Array | undefined {
  const direct = parseBtfHeader(data, 0);
  if (direct) return data.subarray(0, direct.size);
  const section = elfSection(data, ".BTF");
  if (section) {
    const h = parseBtfHeader(data, section.offset);
    if (h) return data.subarray(section.offset, section.offset + h.size);
  }
  let at = indexOfBytes(data, BTF_MAGIC, 0);
  while (at >= 0) {
    const h = parseBtfHeader(data, at);
    if (h) return data.subarray(at, at + h.size);
    at = indexOfBytes(data, BTF_MAGIC, at + 1);
  }
  return undefined;
}

/**
 * Check that bpftool parses a BTF file: the first line of
 * `bpftool btf dump file <blob> format raw` must be type `[1]`.
 *
 * @example
 * ```ts
 * import { checkBtfWithBpftool } from "./btf.ts";
 * await checkBtfWithBpftool("/sys/kernel/btf/vmlinux");
 * ```
 */
export async function checkBtfWithBpftool(path: string): Promise<void> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("bpftool", {
      args: ["btf", "dump", "file", path, "format", "raw"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new KernelInputError(
        "tool-missing",
        "bpftool not found on PATH: install it (apt-get install bpftool)",
        { cause: e },
      );
    }
    throw e;
  }
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let head = "";
  while (!head.includes("\n") && head.length < 4096) {
    const { value, done } = await reader.read();
    if (done) break;
    head += decoder.decode(value, { stream: true });
  }
  await reader.cancel().catch(() => {});
  try {
    child.kill("SIGTERM");
  } catch {
    // already exited
  }
  await child.status;
  const first = head.split("\n")[0];
  if (!/^\[1\] /.test(first)) {
    throw new KernelInputError(
      "btf-not-found",
      `bpftool cannot parse the BTF in ${path}: ${(await stderr).trim() || first}; ` +
        "the image may be damaged: delete its cache entry and resolve again",
    );
  }
}

/**
 * The architecture a `vmlinux.h` was generated for, judged by `struct pt_regs`
 * (`r15` on x86_64, `regs[31]`/`user_pt_regs` on arm64); `undefined` if unclear.
 *
 * @example
 * ```ts
 * import { archOfVmlinuxH } from "./btf.ts";
 * console.log(archOfVmlinuxH("struct pt_regs {\n\tlong unsigned int r15;\n};\n")); // "x86_64"
 * ```
 */
export function archOfVmlinuxH(text: string): Arch | undefined {
  const start = text.indexOf("\nstruct pt_regs {\n");
  if (start < 0) return undefined;
  const end = text.indexOf("\n};\n", start);
  const body = text.slice(start, end < 0 ? start + 4096 : end);
  if (/\br15;/.test(body)) return "x86_64";
  if (/\bregs\[31\];|struct user_pt_regs user_regs;/.test(body)) return "aarch64";
  return undefined;
}

/**
 * What {@link writeBtfDir} wrote.
 *
 * @example
 * ```ts
 * import { BtfDirStampSchema } from "./btf.ts";
 * const stamp = BtfDirStampSchema.parse(JSON.parse(await Deno.readTextFile("/tmp/btf/btf.json")));
 * ```
 */
export const BtfDirStampSchema = z.object({
  stamp: z.literal("bpfpack.kernels.btf.v1"),
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  bytes: z.number().int().positive(),
  vmlinuxHDigest: z.string(),
  arch: ArchSchema.optional(),
});
/**
 * The stamp file of a BTF directory.
 *
 * @example
 * ```ts
 * import type { BtfDirStamp } from "./btf.ts";
 * const s: BtfDirStamp = {
 *   stamp: "bpfpack.kernels.btf.v1",
 *   digest: `sha256:${"0".repeat(64)}`,
 *   bytes: 4_223_369,
 *   vmlinuxHDigest: `sha256:${"1".repeat(64)}`,
 *   arch: "aarch64",
 * };
 * ```
 */
export type BtfDirStamp = z.infer<typeof BtfDirStampSchema>;

/**
 * File names inside a BTF directory.
 *
 * @example
 * ```ts
 * import { BTF_FILES } from "./btf.ts";
 * console.log(`/tmp/btf/${BTF_FILES.header}`); // "/tmp/btf/vmlinux.h"
 * ```
 */
export const BTF_FILES = {
  blob: "vmlinux.btf",
  header: "vmlinux.h",
  stamp: "btf.json",
} as const;

/**
 * Write `<dir>/vmlinux.btf` and `<dir>/vmlinux.h` for a BTF blob, checked with
 * bpftool, atomically (a temporary sibling renamed into place; the stamp
 * `btf.json` inside is written before the rename, so a present stamp means a
 * complete directory).
 *
 * @example
 * ```ts
 * import { writeBtfDir } from "./btf.ts";
 * const s = await writeBtfDir(await Deno.readFile("/sys/kernel/btf/vmlinux"), "/tmp/btf");
 * console.log(s.digest, s.arch);
 * ```
 */
export async function writeBtfDir(blob: Uint8Array, dir: string): Promise<BtfDirStamp> {
  const tmp = await siblingTempDir(dir);
  try {
    const blobPath = `${tmp}/${BTF_FILES.blob}`;
    await Deno.writeFile(blobPath, blob);
    await checkBtfWithBpftool(blobPath);
    const r = await run("bpftool", ["btf", "dump", "file", blobPath, "format", "c"]);
    const header = new TextDecoder().decode(r.stdout);
    if (!header.includes("struct task_struct {")) {
      throw new KernelInputError(
        "btf-not-found",
        "the BTF has no struct task_struct: it is not a vmlinux BTF (a module's split BTF?); " +
          "pass the kernel's own BTF (/sys/kernel/btf/vmlinux or the vmlinuz of its image package)",
      );
    }
    await Deno.writeFile(`${tmp}/${BTF_FILES.header}`, r.stdout);
    const stamp: BtfDirStamp = {
      stamp: "bpfpack.kernels.btf.v1",
      digest: digestBytes(blob),
      bytes: blob.length,
      vmlinuxHDigest: digestBytes(r.stdout),
      arch: archOfVmlinuxH(header),
    };
    await Deno.writeTextFile(`${tmp}/${BTF_FILES.stamp}`, JSON.stringify(stamp, null, 2) + "\n");
    await replaceDir(tmp, dir);
    return stamp;
  } catch (e) {
    await removeIfExists(tmp);
    throw e;
  }
}
