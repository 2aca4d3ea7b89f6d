/**
 * The one error type of the kernel-inputs module. Every message says what went
 * wrong and what to do next; `code` lets callers branch without parsing text.
 *
 * @example
 * ```ts
 * import { KernelInputError } from "./errors.ts";
 * try {
 *   throw new KernelInputError("network", "cannot reach the Debian archive: check your proxy");
 * } catch (e) {
 *   if (e instanceof KernelInputError && e.code === "network") console.log("offline");
 * }
 * ```
 * @module
 */

/**
 * What kind of failure a {@link KernelInputError} reports.
 *
 * @example
 * ```ts
 * import type { KernelErrorCode } from "./errors.ts";
 * const code: KernelErrorCode = "network";
 * ```
 */
export type KernelErrorCode =
  /** The Debian archive (or a mirror/proxy) could not be reached. */
  | "network"
  /** A package, file or cache entry that should exist does not. */
  | "not-found"
  /** A host tool (apt-get, dpkg-deb, bpftool, xz, …) is not installed. */
  | "tool-missing"
  /** The caller passed something that cannot work (bad spec, wrong arch, not a tree). */
  | "invalid-input"
  /** A package or kernel image could not be unpacked. */
  | "extract-failed"
  /** No usable BTF was found where it was expected. */
  | "btf-not-found"
  /** A command failed for a reason not covered above. */
  | "command-failed";

/**
 * An error from resolving kernel inputs. The message names the next step.
 *
 * @example
 * ```ts
 * import { KernelInputError } from "./errors.ts";
 * const e = new KernelInputError("tool-missing", "bpftool not found: apt-get install bpftool");
 * console.log(e.code, e.message);
 * ```
 */
export class KernelInputError extends Error {
  /** Machine-readable failure kind. */
  readonly code: KernelErrorCode;

  /**
   * @param code failure kind
   * @param message what happened and what to do next
   * @param options standard error options (`cause`)
   */
  constructor(code: KernelErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "KernelInputError";
    this.code = code;
  }
}
