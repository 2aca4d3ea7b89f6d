/**
 * Small statistics and formatting helpers shared by the benchmarks, and the
 * result row every benchmark reports.
 *
 * @example
 * ```ts
 * import { median, percentile } from "./stats.ts";
 * console.log(median([3, 1, 2]), percentile([1, 2, 3, 4], 50)); // 2 2
 * ```
 * @module
 */

/** One figure of a benchmark, measured against a baseline of the same run. */
export interface Row {
  /** Benchmark name (`lookup`, `dump`, `startup`). */
  bench: string;
  /** What was measured, e.g. `p50 round trip`. */
  metric: string;
  /** Unit of `value` and `baseline`: `us`, `ms` or `MiB`. */
  unit: "us" | "ms" | "MiB";
  /** The runtime's figure. */
  value: number;
  /** The baseline's figure (same unit), or null when there is none. */
  baseline: number | null;
  /** What the baseline is, e.g. `C daemon`. */
  baselineName: string;
  /** value / baseline, or null. */
  ratio: number | null;
  /** The target ratio (value/baseline must be at most this), if the brief sets one. */
  goal?: number;
  /** Whether the goal was met (absent without a goal). */
  pass?: boolean;
  /** Free-form remark (extrapolation, sample counts, …). */
  note?: string;
}

/** Builds a {@link Row}, computing the ratio and the goal verdict. */
export function row(
  r: Omit<Row, "ratio" | "pass" | "baseline" | "baselineName"> & {
    baseline?: number | null;
    baselineName?: string;
  },
): Row {
  const baseline = r.baseline ?? null;
  const ratio = baseline !== null && baseline > 0 ? r.value / baseline : null;
  const out: Row = {
    ...r,
    baseline,
    baselineName: r.baselineName ?? "",
    ratio,
  };
  if (r.goal !== undefined) out.pass = ratio !== null && ratio <= r.goal;
  return out;
}

/** Nearest-rank percentile (p in 0..100) of unsorted numbers; NaN when empty. */
export function percentile(xs: ArrayLike<number>, p: number): number {
  const n = xs.length;
  if (n === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  const rank = Math.min(n, Math.max(1, Math.ceil((p / 100) * n)));
  return s[rank - 1];
}

/** Median (the 50th nearest-rank percentile). */
export function median(xs: ArrayLike<number>): number {
  return percentile(xs, 50);
}

/** Arithmetic mean; NaN when empty. */
export function mean(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  return xs.length ? s / xs.length : NaN;
}

/** Formats a number with `digits` significant figures at most (no exponent for normal sizes). */
export function fmtNum(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "-";
  const a = Math.abs(x);
  if (a >= 10 ** digits) return Math.round(x).toString();
  if (a === 0) return "0";
  const decimals = Math.max(0, digits - 1 - Math.floor(Math.log10(a)));
  return x.toFixed(Math.min(decimals, 6));
}

/** `1.23×`, or `-`. */
export function fmtRatio(r: number | null): string {
  return r === null || !Number.isFinite(r) ? "-" : `${r.toFixed(2)}×`;
}

/** Renders rows as a plain-text table with aligned columns. */
export function table(header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 || i === 1 ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ")
      .trimEnd();
  return [line(header), w.map((n) => "-".repeat(n)).join("  "), ...rows.map(line)].join("\n");
}

/** Milliseconds since an arbitrary origin (high resolution). */
export function nowMs(): number {
  return performance.now();
}

/** VmRSS (or another `Vm…` field) of a live process in kB, or null. */
export function procStatusKb(pid: number, field = "VmRSS"): number | null {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
