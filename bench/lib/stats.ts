/** Small statistics and formatting helpers for the benchmark reports. */

/** min / median / max of a list (median: mean of the two middle values for even lengths). */
export interface Summary {
  readonly n: number;
  readonly min: number;
  readonly median: number;
  readonly max: number;
}

export function summarize(xs: readonly number[]): Summary {
  if (xs.length === 0) return { n: 0, min: NaN, median: NaN, max: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { n: s.length, min: s[0]!, median: m, max: s.at(-1)! };
}

/** Nearest-rank percentile (p in 0..100) of an unsorted list. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * s.length));
  return s[Math.min(s.length, rank) - 1]!;
}

export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

export interface Latency {
  readonly n: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly mean: number;
  readonly max: number;
}

export function latency(xs: readonly number[]): Latency {
  return {
    n: xs.length,
    p50: percentile(xs, 50),
    p95: percentile(xs, 95),
    p99: percentile(xs, 99),
    mean: mean(xs),
    max: xs.length ? Math.max(...xs) : NaN,
  };
}

/** Thousands-separated integer. */
export function int(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "-";
}

/** Fixed decimals. */
export function fixed(n: number, d = 1): string {
  return Number.isFinite(n) ? n.toFixed(d) : "-";
}

/** "min / median / max" of integers. */
export function mmm(s: Summary, f: (n: number) => string = int): string {
  return s.n === 0 ? "-" : `${f(s.min)} / **${f(s.median)}** / ${f(s.max)}`;
}

/** A markdown table. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.join(" | ")} |`;
  return [line(head), line(head.map(() => "---")), ...rows.map(line)].join("\n");
}

/** Relative spread (max - min) / median, in percent: the run-to-run noise of a series. */
export function spread(s: Summary): number {
  return s.n === 0 || s.median === 0 ? NaN : ((s.max - s.min) / s.median) * 100;
}
