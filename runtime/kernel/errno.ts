/**
 * errno names (Linux generic numbering, identical on x86_64 and arm64) and a
 * helper that formats the ` errno=N NAME` suffix of a failed status line.
 *
 * @example
 * ```ts
 * import { errnoName } from "./errno.ts";
 * console.log(errnoName(22)); // "EINVAL"
 * ```
 * @module
 */

const NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  8: "ENOEXEC",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  25: "ENOTTY",
  27: "EFBIG",
  28: "ENOSPC",
  34: "ERANGE",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  61: "ENODATA",
  75: "EOVERFLOW",
  90: "EMSGSIZE",
  95: "EOPNOTSUPP",
  524: "ENOTSUPP",
};

/** Symbolic errno name, or `E<n>` when unknown. */
export function errnoName(n: number): string {
  return NAMES[n] ?? `E${n}`;
}

/** Inverse lookup: `EINVAL` → 22. */
export function errnoNumber(name: string): number | undefined {
  for (const [k, v] of Object.entries(NAMES)) if (v === name) return Number(k);
  return undefined;
}

/** An error carrying an errno and a message that says what to do next. */
export class SysError extends Error {
  /** The errno value (positive). */
  readonly errno: number;
  constructor(errno: number, message: string) {
    super(message);
    this.errno = errno;
    this.name = "SysError";
  }
}
