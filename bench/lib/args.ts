/** Command-line options shared by the scenario scripts. */
import { writeFileSync } from "node:fs";

export interface CommonArgs {
  /** Fewer events, runs and seconds (the `--quick` pass of `npm run bench`). */
  readonly quick: boolean;
  /** Runs per measured series (default 3; 1 with --quick, 2 for scenario 1). */
  readonly runs: number;
  /** Write the scenario's JSON result here. */
  readonly json: string | undefined;
  /** Use this prepared database instead of creating one (it is not dropped). */
  readonly url: string | undefined;
  readonly argv: readonly string[];
}

export function parseArgs(argv: readonly string[] = process.argv.slice(2)): CommonArgs {
  const quick = argv.includes("--quick");
  return {
    quick,
    runs: num(argv, "runs") ?? (quick ? 1 : 3),
    json: str(argv, "json"),
    url: str(argv, "url"),
    argv,
  };
}

export function str(argv: readonly string[], name: string): string | undefined {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
}

export function num(argv: readonly string[], name: string): number | undefined {
  const v = str(argv, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name} expects a number, got ${v}`);
  return n;
}

export function list(argv: readonly string[], name: string): string[] | undefined {
  return str(argv, name)?.split(",").map((s) => s.trim()).filter(Boolean);
}

/** What a scenario hands back to bench/run.ts (and prints when run alone). */
export interface ScenarioResult {
  readonly id: string;
  readonly title: string;
  readonly startedAt: string;
  readonly seconds: number;
  readonly quick: boolean;
  /** Load average (1 min) before and after: a noise indicator. */
  readonly load: readonly [number, number];
  /** Markdown of the scenario's tables and notes. */
  readonly markdown: string;
  /** Goals checked by this scenario. */
  readonly targets: readonly Target[];
  /** Every raw figure (per run), for results.json. */
  readonly data: unknown;
}

export interface Target {
  readonly name: string;
  readonly goal: string;
  readonly measured: string;
  readonly met: boolean | null;
}

/** Prints the result and writes its JSON when --json was given. */
export function finish(args: CommonArgs, r: ScenarioResult): void {
  process.stdout.write(`\n## ${r.id}. ${r.title}\n\n${r.markdown}\n`);
  if (r.targets.length) {
    process.stdout.write("\nTargets:\n");
    for (const t of r.targets) process.stdout.write(`  ${t.met === null ? "?" : t.met ? "MET " : "MISS"}  ${t.name}: ${t.measured} (goal ${t.goal})\n`);
  }
  if (args.json) writeFileSync(args.json, JSON.stringify(r, (_k, v) => (typeof v === "bigint" ? v.toString() : v), 2));
}

/** Progress on stderr (stdout carries the result). */
export function progress(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}
