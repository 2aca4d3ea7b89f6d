/**
 * Kernel version facts: `LINUX_VERSION_CODE` (from `version.h` or computed),
 * `#define` values of generated headers, and the `Linux version …` banner of a
 * kernel image (gives `uname -r` and `uname -v` without booting).
 *
 * @example
 * ```ts
 * import { kernelVersionCode, versionCodeFromRelease } from "./version.ts";
 * console.log(kernelVersionCode(6, 1, 119)); // 393591
 * console.log(versionCodeFromRelease("6.12.9+deb12-cloud-arm64")); // 396297
 * ```
 * @module
 */

/**
 * `KERNEL_VERSION(a, b, c)` exactly as the kernel computes it (sublevel capped at 255).
 *
 * @example
 * ```ts
 * import { kernelVersionCode } from "./version.ts";
 * console.log(kernelVersionCode(5, 4, 300)); // 328959
 * ```
 */
export function kernelVersionCode(major: number, minor: number, sublevel: number): number {
  return (major << 16) + (minor << 8) + Math.min(sublevel, 255);
}

/**
 * Version code from the leading `a.b[.c]` of a release or upstream version
 * string; `undefined` when it does not start with one.
 *
 * Debian's 6.1 releases are `6.1.0-<abi>`: the `0` is not the real sublevel,
 * so prefer {@link versionCodeFromUnameVersion} or `version.h` for those.
 *
 * @example
 * ```ts
 * import { versionCodeFromRelease } from "./version.ts";
 * console.log(versionCodeFromRelease("6.18.44-fc-v445")); // 397868
 * ```
 */
export function versionCodeFromRelease(release: string): number | undefined {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(release);
  if (!m) return undefined;
  return kernelVersionCode(Number(m[1]), Number(m[2]), Number(m[3] ?? 0));
}

/**
 * Version code from a `uname -v` string that names the upstream version, as
 * Debian's does (`#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)`);
 * `undefined` otherwise.
 *
 * @example
 * ```ts
 * import { versionCodeFromUnameVersion } from "./version.ts";
 * console.log(versionCodeFromUnameVersion("#1 SMP Debian 6.1.119-1 (2024-11-22)")); // 393591
 * ```
 */
export function versionCodeFromUnameVersion(version: string): number | undefined {
  const m = /\bDebian (\d+\.\d+\.\d+)/.exec(version);
  return m ? versionCodeFromRelease(m[1]) : undefined;
}

/**
 * Value of `#define NAME value` in a header's text: a quoted string is
 * unquoted, anything else returned as written. `undefined` when absent.
 *
 * @example
 * ```ts
 * import { readDefine } from "./version.ts";
 * console.log(readDefine('#define UTS_RELEASE "6.1.0-28-cloud-arm64"', "UTS_RELEASE"));
 * ```
 */
export function readDefine(text: string, name: string): string | undefined {
  const m = new RegExp(`^[ \\t]*#[ \\t]*define[ \\t]+${name}[ \\t]+(.+?)[ \\t]*$`, "m").exec(text);
  if (!m) return undefined;
  const value = m[1];
  const quoted = /^"(.*)"$/.exec(value);
  return quoted ? quoted[1] : value;
}

/**
 * `LINUX_VERSION_CODE` from the text of `include/generated/uapi/linux/version.h`
 * (a number, or a `KERNEL_VERSION(a,b,c)`-style expansion in some trees).
 *
 * @example
 * ```ts
 * import { parseVersionH } from "./version.ts";
 * console.log(parseVersionH("#define LINUX_VERSION_CODE 393664\n")); // 393664
 * ```
 */
export function parseVersionH(text: string): number | undefined {
  const raw = readDefine(text, "LINUX_VERSION_CODE");
  if (raw === undefined) return undefined;
  if (/^\d+$/.test(raw)) return Number(raw);
  const major = readDefine(text, "LINUX_VERSION_MAJOR");
  const minor = readDefine(text, "LINUX_VERSION_PATCHLEVEL");
  const sub = readDefine(text, "LINUX_VERSION_SUBLEVEL");
  if (major && minor && sub) return kernelVersionCode(Number(major), Number(minor), Number(sub));
  return undefined;
}

/**
 * What a kernel banner says.
 *
 * @example
 * ```ts
 * import { type Banner, findBanner } from "./version.ts";
 * const b: Banner | undefined = findBanner(await Deno.readFile("/tmp/Image"));
 * ```
 */
export interface Banner {
  /** `uname -r`. */
  release: string;
  /** `uname -v` (starts with `#`). */
  version: string;
}

const BANNER = new TextEncoder().encode("Linux version ");

/**
 * Find the `Linux version <release> (<builder>) (<compiler>) #<n> …` banner in a
 * (decompressed) kernel image. With `release`, only a banner for that release
 * counts. The first banner with a real build number (`#1`, not the `# ` of a
 * format string) wins.
 *
 * @example
 * ```ts
 * import { findBanner } from "./version.ts";
 * const img = new TextEncoder().encode(
 *   "\0Linux version 6.1.0-28-cloud-arm64 (x@y) (gcc 12) #1 SMP Debian 6.1.119-1 (2024-11-22)\n\0",
 * );
 * console.log(findBanner(img)?.version); // "#1 SMP Debian 6.1.119-1 (2024-11-22)"
 * ```
 */
export function findBanner(image: Uint8Array, release?: string): Banner | undefined {
  const latin1 = new TextDecoder("latin1");
  let at = indexOfBytes(image, BANNER, 0);
  while (at >= 0) {
    let end = at;
    while (end < image.length && end - at < 1024 && image[end] !== 0 && image[end] !== 0x0a) end++;
    const line = latin1.decode(image.subarray(at, end));
    const m = /^Linux version (\S+) .*?\) (#\d+ .+)$/.exec(line);
    if (m && (release === undefined || m[1] === release)) return { release: m[1], version: m[2] };
    at = indexOfBytes(image, BANNER, at + 1);
  }
  return undefined;
}

/**
 * Index of `needle` in `hay` at or after `from`, or -1.
 *
 * @example
 * ```ts
 * import { indexOfBytes } from "./version.ts";
 * console.log(indexOfBytes(new Uint8Array([1, 2, 3, 2, 3]), new Uint8Array([2, 3]), 2)); // 3
 * ```
 */
export function indexOfBytes(hay: Uint8Array, needle: Uint8Array, from = 0): number {
  if (needle.length === 0) return from;
  const first = needle[0];
  let i = hay.indexOf(first, from);
  while (i >= 0 && i + needle.length <= hay.length) {
    let j = 1;
    while (j < needle.length && hay[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
    i = hay.indexOf(first, i + 1);
  }
  return -1;
}

/**
 * Compare two version strings numerically by their digit runs
 * (`6.1.0-56` > `6.1.0-9`; `6.12.95+deb12` > `6.12.9+deb12`).
 *
 * @example
 * ```ts
 * import { compareVersions } from "./version.ts";
 * console.log(["6.1.0-9", "6.1.0-56"].sort(compareVersions)); // ["6.1.0-9", "6.1.0-56"]
 * ```
 */
export function compareVersions(a: string, b: string): number {
  const pa = a.match(/\d+|\D+/g) ?? [];
  const pb = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? "";
    const y = pb[i] ?? "";
    if (x === y) continue;
    if (/^\d+$/.test(x) && /^\d+$/.test(y)) return Number(x) - Number(y);
    return x < y ? -1 : 1;
  }
  return 0;
}
