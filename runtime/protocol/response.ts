/**
 * Building response bodies: status lines with errno, diagnostics that always
 * come after the status line, and the original's error literals.
 *
 * @example
 * ```ts
 * import { status, failure } from "./response.ts";
 * console.log(status("bpf_create_map", 4)); // "bpf_create_map: ret=4"
 * console.log(failure("bpf_create_map", 22, "max_entries must be > 0"));
 * // ["bpf_create_map: ret=-1 errno=22 EINVAL", "error: max_entries must be > 0"]
 * ```
 * @module
 */

import { errnoName } from "../kernel/errno.ts";
import { NOT_RECOGNIZED, OPEN_FAILED } from "./framing.ts";

/** `<label>: ret=<n>`. */
export function status(label: string, ret: number | bigint): string {
  return `${label}: ret=${ret}`;
}

const MAX_DIAG = 1000;
// deno-lint-ignore no-control-regex
const CONTROL = new RegExp("[\\x00-\\x1f\\x7f]", "g");

/**
 * A diagnostic as one safe line: control characters escaped (`\x0d`), and at
 * most 1000 characters (client tokens echoed in messages can be huge).
 */
export function cleanDiagnostic(msg: string): string {
  const s = msg.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  return s.length > MAX_DIAG ? `${s.slice(0, MAX_DIAG)}…(${s.length} characters)` : s;
}

/** Diagnostic line prefix for an explanation. */
export const ERROR_PREFIX = "error: ";
/** Diagnostic line prefix for each verifier log line. */
export const LOG_PREFIX = "verifier: ";

/**
 * A failed command: `<label>: ret=<ret> errno=<n> <NAME>`, then `error: …`,
 * then the verifier log (one `verifier: ` line each), if any.
 */
export function failure(
  label: string,
  err: number,
  message: string,
  opts: { ret?: number; log?: string } = {},
): string[] {
  const out = [`${label}: ret=${opts.ret ?? -1} errno=${err} ${errnoName(err)}`];
  if (message) out.push(ERROR_PREFIX + cleanDiagnostic(message));
  if (opts.log) {
    const lines = opts.log.replace(/\s+$/, "").split("\n");
    for (const l of lines) out.push(LOG_PREFIX + cleanDiagnostic(l));
  }
  return out;
}

/** The original's parse-error answer plus the reason. */
export function notRecognized(message: string): string[] {
  return [NOT_RECOGNIZED, ERROR_PREFIX + cleanDiagnostic(message)];
}

/** The original's answer when a file cannot be opened, plus the reason. */
export function openFailed(message: string): string[] {
  return [OPEN_FAILED, NOT_RECOGNIZED, ERROR_PREFIX + cleanDiagnostic(message)];
}
