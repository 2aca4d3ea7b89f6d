/**
 * Per-architecture names the kernel-inputs module needs, in one table:
 * `uname -m` name → Debian architecture, kernel `arch/` directory, Debian cloud
 * flavour, and the Kconfig symbol that proves a `.config` is for that arch.
 *
 * @example
 * ```ts
 * import { archInfo } from "./arch.ts";
 * const a = archInfo("aarch64");
 * console.log(a.debArch, a.kernelDir, a.flavour); // arm64 arm64 cloud-arm64
 * ```
 * @module
 */

import { z } from "zod";
import { KernelInputError } from "./errors.ts";

/**
 * Architectures, by the name `uname -m` reports.
 *
 * @example
 * ```ts
 * import { ArchSchema } from "./arch.ts";
 * console.log(ArchSchema.parse("aarch64"));
 * ```
 */
export const ArchSchema = z.enum(["x86_64", "aarch64"]);
/**
 * An architecture, by the name `uname -m` reports (`x86_64`, `aarch64`).
 *
 * @example
 * ```ts
 * import type { Arch } from "./arch.ts";
 * const a: Arch = "x86_64";
 * ```
 */
export type Arch = z.infer<typeof ArchSchema>;

/**
 * Names of one architecture in the places this module touches.
 *
 * @example
 * ```ts
 * import { type ArchInfo, archInfo } from "./arch.ts";
 * const info: ArchInfo = archInfo("x86_64"); // { debArch: "amd64", kernelDir: "x86", … }
 * ```
 */
export interface ArchInfo {
  /** `uname -m` name. */
  arch: Arch;
  /** Debian architecture (`amd64`, `arm64`). */
  debArch: "amd64" | "arm64";
  /** Directory under the kernel's `arch/` (`x86`, `arm64`); also the `__TARGET_ARCH_` suffix. */
  kernelDir: "x86" | "arm64";
  /** Debian kernel flavour used for the matrix (`cloud-amd64`, `cloud-arm64`). */
  flavour: string;
  /** Kconfig symbol set to `y` in a `.config` for this arch. */
  configSymbol: string;
  /** ELF `e_machine` of a vmlinux for this arch. */
  elfMachine: number;
}

const TABLE: Record<Arch, ArchInfo> = {
  x86_64: {
    arch: "x86_64",
    debArch: "amd64",
    kernelDir: "x86",
    flavour: "cloud-amd64",
    configSymbol: "CONFIG_X86_64",
    elfMachine: 62,
  },
  aarch64: {
    arch: "aarch64",
    debArch: "arm64",
    kernelDir: "arm64",
    flavour: "cloud-arm64",
    configSymbol: "CONFIG_ARM64",
    elfMachine: 183,
  },
};

/**
 * The table row for an architecture.
 *
 * @example
 * ```ts
 * import { archInfo } from "./arch.ts";
 * console.log(archInfo("x86_64").kernelDir); // "x86"
 * ```
 */
export function archInfo(arch: Arch): ArchInfo {
  const info = TABLE[arch];
  if (!info) {
    throw new KernelInputError(
      "invalid-input",
      `unsupported architecture ${JSON.stringify(arch)}: use one of ${
        Object.keys(TABLE).join(", ")
      } (uname -m names)`,
    );
  }
  return info;
}

/**
 * Map a `uname -m` (or Debian/Go-style) machine name to an {@link Arch}.
 *
 * @example
 * ```ts
 * import { archFromMachine } from "./arch.ts";
 * console.log(archFromMachine("arm64")); // "aarch64"
 * ```
 */
export function archFromMachine(machine: string): Arch {
  switch (machine) {
    case "x86_64":
    case "amd64":
    case "x64":
      return "x86_64";
    case "aarch64":
    case "arm64":
      return "aarch64";
  }
  throw new KernelInputError(
    "invalid-input",
    `machine ${JSON.stringify(machine)} is not supported yet: supported are x86_64 and aarch64; ` +
      "add a row to compiler/kernels/arch.ts to support another one",
  );
}
