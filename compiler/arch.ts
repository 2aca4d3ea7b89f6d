/**
 * The one table of per-architecture build facts. Everything arch-specific the
 * compiler does (Debian package arch, kernel `arch/<dir>`, `__TARGET_ARCH_`,
 * the host triple used to parse kernel headers, BPF endianness, and what the
 * arch check expects) is read from here: adding an arch is adding one entry.
 *
 * @example
 * ```ts
 * import { archInfo } from "./arch.ts";
 * const a = archInfo("arm64");
 * console.log(a.arch, a.kernelDir, a.triple); // aarch64 arm64 aarch64-linux-gnu
 * ```
 * @module
 */

/**
 * Architecture names as `uname -m` prints them on the device (the manifest's `arch`).
 *
 * @example
 * ```ts
 * import type { ArchName } from "./arch.ts";
 * const a: ArchName = "aarch64";
 * ```
 */
export type ArchName = "x86_64" | "aarch64" | "armv7l" | "riscv64" | "s390x";

/**
 * One load the arch check expects: `*(u<size*8> *)(ctx + offset)`.
 *
 * @example
 * ```ts
 * import type { CtxLoad } from "./arch.ts";
 * const di: CtxLoad = { offset: 112, size: 8 };
 * ```
 */
export interface CtxLoad {
  offset: number;
  size: number;
}

/**
 * Build facts of one architecture.
 *
 * @example
 * ```ts
 * import { archInfo, type ArchInfo } from "./arch.ts";
 * const a: ArchInfo = archInfo("x86_64");
 * console.log(`-D__TARGET_ARCH_${a.targetArch}`, `--target=${a.triple}`);
 * ```
 */
export interface ArchInfo {
  /** `uname -m` on the device; the key of the table. */
  arch: ArchName;
  /** Other spellings accepted on the command line (Debian and kernel names). */
  aliases: readonly string[];
  /** Debian package architecture (`linux-headers-…-<debian>`). */
  debian: string;
  /** Directory under the kernel tree's `arch/`. */
  kernelDir: string;
  /** The `X` of `-D__TARGET_ARCH_X` (libbpf's bpf_tracing.h). */
  targetArch: string;
  /** Host triple for parsing kernel headers in headers mode (`clang --target=`). */
  triple: string;
  /** `llc -march=` and the `-target` of core mode: BPF byte order of the target. */
  bpf: "bpfel" | "bpfeb";
  /** Extra clang flags needed to parse this arch's kernel headers. */
  headersFlags: readonly string[];
  /**
   * What the arch check must see: the context loads `PT_REGS_PARM1(ctx)` and
   * `PT_REGS_PARM2(ctx)` compile to, i.e. where this arch's `struct pt_regs`
   * keeps the first two argument registers and how wide they are.
   */
  parmLoads: readonly [CtxLoad, CtxLoad];
}

const TABLE: readonly ArchInfo[] = [
  {
    arch: "x86_64",
    aliases: ["amd64", "x86", "x64"],
    debian: "amd64",
    kernelDir: "x86",
    targetArch: "x86",
    triple: "x86_64-linux-gnu",
    bpf: "bpfel",
    headersFlags: [],
    // struct pt_regs { r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di ... }
    parmLoads: [{ offset: 112, size: 8 }, { offset: 104, size: 8 }],
  },
  {
    arch: "aarch64",
    aliases: ["arm64"],
    debian: "arm64",
    kernelDir: "arm64",
    targetArch: "arm64",
    triple: "aarch64-linux-gnu",
    bpf: "bpfel",
    headersFlags: [],
    // struct user_pt_regs { u64 regs[31]; ... }: x0, x1
    parmLoads: [{ offset: 0, size: 8 }, { offset: 8, size: 8 }],
  },
  {
    arch: "armv7l",
    aliases: ["arm", "armhf"],
    debian: "armhf",
    kernelDir: "arm",
    targetArch: "arm",
    triple: "arm-linux-gnueabihf",
    bpf: "bpfel",
    headersFlags: [],
    // struct pt_regs { unsigned long uregs[18]; }: r0, r1 (32-bit)
    parmLoads: [{ offset: 0, size: 4 }, { offset: 4, size: 4 }],
  },
  {
    arch: "riscv64",
    aliases: ["riscv"],
    debian: "riscv64",
    kernelDir: "riscv",
    targetArch: "riscv",
    triple: "riscv64-linux-gnu",
    bpf: "bpfel",
    headersFlags: [],
    // struct user_regs_struct { pc ra sp gp tp t0 t1 t2 s0 s1 a0 a1 ... }
    parmLoads: [{ offset: 80, size: 8 }, { offset: 88, size: 8 }],
  },
  {
    arch: "s390x",
    aliases: ["s390"],
    debian: "s390x",
    kernelDir: "s390",
    targetArch: "s390",
    triple: "s390x-linux-gnu",
    bpf: "bpfeb",
    headersFlags: [],
    // user_pt_regs { unsigned long args[1]; psw_t psw; unsigned long gprs[16]; ... }: gprs[2], gprs[3]
    parmLoads: [{ offset: 40, size: 8 }, { offset: 48, size: 8 }],
  },
];

/**
 * Raised for an architecture name the table does not know.
 *
 * @example
 * ```ts
 * import { archInfo, UnknownArchError } from "./arch.ts";
 * try {
 *   archInfo("mips");
 * } catch (e) {
 *   console.log(e instanceof UnknownArchError);
 * }
 * ```
 */
export class UnknownArchError extends Error {
  constructor(name: string) {
    super(
      `unknown architecture "${name}": use one of ${
        TABLE.map((a) => [a.arch, ...a.aliases].join("/")).join(", ")
      } (or add an entry to compiler/arch.ts)`,
    );
    this.name = "UnknownArchError";
  }
}

/**
 * Every known architecture, in table order.
 *
 * @example
 * ```ts
 * import { allArches } from "./arch.ts";
 * console.log(allArches().map((a) => a.arch).join(" "));
 * ```
 */
export function allArches(): readonly ArchInfo[] {
  return TABLE;
}

/**
 * Looks an architecture up by its `uname -m`, Debian, kernel or alias name.
 * Throws {@link UnknownArchError} for anything else.
 *
 * @example
 * ```ts
 * import { archInfo } from "./arch.ts";
 * console.log(archInfo("amd64").targetArch); // x86
 * console.log(archInfo("s390x").bpf); // bpfeb
 * ```
 */
export function archInfo(name: string): ArchInfo {
  const found = TABLE.find((a) => a.arch === name || a.aliases.includes(name));
  if (!found) throw new UnknownArchError(name);
  return found;
}
