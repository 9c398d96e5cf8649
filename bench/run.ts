/**
 * `npm run bench`: runs every scenario (each in its own child process, each
 * on its own scratch database), then writes bench/RESULTS.md and
 * bench/results.json.
 *
 *   npm run bench                       # everything (about 15 minutes)
 *   npm run bench -- --quick            # fewer events, runs and seconds (about 3 minutes);
 *                                       # writes RESULTS.quick.md / results.quick.json
 *   npm run bench -- --only 1a,3        # some scenarios; their sections replace those in the existing files
 *   npm run bench -- --runs 5           # more runs per series
 *   npm run bench -- --render           # only re-render RESULTS.md from results.json (after editing observations.md)
 *
 * Scenario ids: 1 (or 1a, 1b, 1c), 2, 3, 4, 5, 6, 7, 8, P (the profile of 1a).
 * Every scenario is also runnable alone: node --import tsx bench/scenarios/<file>.ts [flags] (see the head of each file).
 * DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres) names the server.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { list, num, type ScenarioResult } from "./lib/args.ts";
import { root, runToEnd } from "./lib/child.ts";
import { adminUrl, connect } from "./lib/db.ts";
import { environment, loadavg } from "./lib/env.ts";
import { fixed, table } from "./lib/stats.ts";

const argv = process.argv.slice(2);
const quick = argv.includes("--quick");
const runs = num(argv, "runs");
const only = list(argv, "only");
const renderOnly = argv.includes("--render");

interface Entry {
  id: string;
  script: string;
  args?: string[];
}
const ALL: Entry[] = [
  { id: "1", script: "bench/scenarios/catchup.ts" },
  { id: "P", script: "bench/scenarios/profile.ts" },
  { id: "2", script: "bench/scenarios/consumers.ts" },
  { id: "3", script: "bench/scenarios/wakeup.ts" },
  { id: "4", script: "bench/scenarios/failover.ts" },
  { id: "5", script: "bench/scenarios/deadgap.ts" },
  { id: "6", script: "bench/scenarios/idle.ts" },
  { id: "7", script: "bench/scenarios/memory.ts" },
  { id: "8", script: "bench/scenarios/runtimes.ts" },
];

function selected(): Entry[] {
  if (!only) return ALL;
  const out: Entry[] = [];
  for (const e of ALL) {
    const picks = only.filter((o) => o.toUpperCase() === e.id || (e.id === "1" && /^1[abc]$/i.test(o)));
    if (picks.length === 0) continue;
    const handlers = picks.filter((o) => /^1[abc]$/i.test(o)).map((o) => o[1]!.toLowerCase());
    out.push(handlers.length && !picks.includes("1") ? { ...e, args: ["--handlers", handlers.join(",")] } : e);
  }
  const unknown = only.filter((o) => !ALL.some((e) => o.toUpperCase() === e.id) && !/^1[abc]$/i.test(o));
  if (unknown.length) throw new Error(`unknown scenario id(s): ${unknown.join(", ")} (known: ${ALL.map((e) => e.id).join(", ")}, 1a, 1b, 1c)`);
  return out;
}

const suffix = quick ? ".quick" : "";
const jsonPath = join(root, "bench", `results${suffix}.json`);
const mdPath = join(root, "bench", `RESULTS${suffix}.md`);
const dir = mkdtempSync(join(tmpdir(), "sluice-bench-"));
const started = new Date();
const load0 = loadavg();

interface Results {
  generatedAt: string;
  quick: boolean;
  environment: Record<string, string>;
  /** 1-minute load average at the start and at the end of the run. */
  load?: [number, number];
  scenarios: Record<string, ScenarioResult>;
}
const previous: Results | undefined = (only || renderOnly) && existsSync(jsonPath) ? JSON.parse(readFileSync(jsonPath, "utf8")) as Results : undefined;
if (renderOnly && !previous) throw new Error(`--render: ${jsonPath} not found`);
const env = renderOnly ? previous!.environment : await (async () => {
  const admin = connect(adminUrl(), { max: 1 });
  return await environment(admin).finally(() => admin.end({ timeout: 5 }));
})();
const results: Results = renderOnly
  ? previous!
  : { generatedAt: started.toISOString(), quick, environment: env, load: [load0, load0], scenarios: { ...previous?.scenarios } };
const failures: string[] = [];

try {
  for (const e of renderOnly ? [] : selected()) {
    const json = join(dir, `${e.id}.json`);
    const t0 = Date.now();
    process.stderr.write(`\n=== scenario ${e.id}: ${e.script} ${(e.args ?? []).join(" ")}\n`);
    try {
      await runToEnd("node", e.script, [...(e.args ?? []), ...(quick ? ["--quick"] : []), ...(runs ? ["--runs", String(runs)] : []), "--json", json], {
        echo: true,
        onLine: () => {},
      });
      const r = JSON.parse(readFileSync(json, "utf8")) as ScenarioResult;
      const prev = results.scenarios[e.id];
      // A partial scenario 1 (--only 1a) keeps the other handlers' section from the previous results.
      results.scenarios[e.id] = e.id === "1" && e.args && prev ? mergeCatchUp(prev, r) : r;
      process.stderr.write(`=== scenario ${e.id} done in ${Math.round((Date.now() - t0) / 1000)} s\n`);
    } catch (err) {
      failures.push(`${e.id}: ${(err as Error).message}`);
      process.stderr.write(`=== scenario ${e.id} FAILED: ${(err as Error).message}\n`);
    }
    // Save after each scenario: a long run interrupted keeps what it measured.
    write();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
if (renderOnly) write();

/** Replaces the handler sections of `next` in `prev` (scenario 1 run with --handlers). */
function mergeCatchUp(prev: ScenarioResult, next: ScenarioResult): ScenarioResult {
  const sections = (md: string) => new Map(md.split(/\n(?=### 1[abc]\. )/).slice(1).map((s) => [s.slice(4, 6), s] as const));
  const a = sections(prev.markdown);
  for (const [k, v] of sections(next.markdown)) a.set(k, v);
  const intro = next.markdown.split(/\n(?=### 1[abc]\. )/)[0]!;
  const targets = [...prev.targets.filter((t) => !next.targets.some((n) => n.name === t.name)), ...next.targets].sort((x, y) => x.name.localeCompare(y.name));
  return { ...next, markdown: [intro, ...[...a.keys()].sort().map((k) => a.get(k)!)].join("\n"), targets, data: { previous: prev.data, latest: next.data } };
}

function write(): void {
  if (!renderOnly) results.load = [load0, loadavg()];
  writeFileSync(jsonPath, JSON.stringify(results, (_k, v) => (typeof v === "bigint" ? v.toString() : v), 2) + "\n");
  writeFileSync(mdPath, render());
}

function render(): string {
  const order = ALL.map((e) => e.id).filter((id) => results.scenarios[id]);
  const s = order.map((id) => results.scenarios[id]!);
  const load = results.load ?? [s[0]?.load[0] ?? NaN, s.at(-1)?.load[1] ?? NaN];
  const targets = s.flatMap((r) => r.targets.map((t) => [
    t.met === null ? "?" : t.met ? "met" : "**missed**",
    t.name,
    t.goal,
    t.measured,
  ]));
  const envRows = Object.entries(results.environment).map(([k, v]) => [k, v]);
  const scenarioRows = s.map((r) => [
    `${r.id}`,
    r.title,
    r.startedAt.replace("T", " ").slice(0, 19),
    `${Math.round(r.seconds)} s`,
    `${fixed(r.load[0], 1)} → ${fixed(r.load[1], 1)}`,
    r.quick ? "quick" : "full",
  ]);
  const observations = join(root, "bench", "observations.md");
  return [
    `# sluice benchmarks${quick ? " (quick pass)" : ""}`,
    `Generated by \`npm run bench${quick ? " -- --quick" : ""}\` (bench/run.ts) on ${results.generatedAt.slice(0, 16).replace("T", " ")} UTC; ` +
    `the raw figures are in \`bench/${`results${suffix}.json`}\`. Each scenario runs sluice and a hand-written raw postgres.js loop ` +
    `in the same run, interleaved, on a scratch database of its own (created, migrated with \`migrate()\`, dropped). ` +
    `Throughput runs set \`batchPauseMs: 0\` (the default 200 ms pause between full batches is a throttle); everything else is default unless a scenario says otherwise.`,
    `**Noise.** This machine has 2 cores and other agents run their test suites on it and on the same PostgreSQL server at the same time ` +
    `(1-minute load average ${fixed(load[0], 1)} when this run started, ${fixed(load[1], 1)} at the end; per scenario below). ` +
    `Absolute events/s move by tens of percent between adjacent runs; compare the sluice/raw ratios of adjacent runs ("pair ratios"), ` +
    `and the CPU per 1,000 events, which depends much less on the neighbours. Spread = (max - min) / median.`,
    `## Machine and runtimes\n\n` + table(["", ""], envRows),
    `## Targets\n\n` + table(["", "target", "goal", "measured"], targets),
    ...(failures.length ? [`## Failed scenarios\n\n${failures.map((f) => `- ${f}`).join("\n")}`] : []),
    `## Scenarios run\n\n` + table(["id", "scenario", "started (UTC)", "took", "load avg (1 min)", "pass"], scenarioRows),
    ...s.map((r) => `## ${r.id}. ${r.title}\n\n${r.markdown}`),
    `## Observations\n\n` + (existsSync(observations) ? readFileSync(observations, "utf8").trim() : "(bench/observations.md not found)"),
    `## Reproducing\n\n` +
    "```sh\nnpm run bench                 # all scenarios, ~15 min\nnpm run bench -- --quick      # ~3 min, writes RESULTS.quick.md\n" +
    "npm run bench -- --only 1a,3  # some scenarios\nnode --import tsx bench/scenarios/catchup.ts --handlers a --batches 1000   # one scenario alone\n" +
    "node_modules/.bin/bun bench/scenarios/catchup.ts --handlers a   # on Bun (deno: node_modules/.bin/deno run -A ...)\n```",
  ].join("\n\n") + "\n";
}

process.stderr.write(`\nwrote ${mdPath} and ${jsonPath} in ${Math.round((Date.now() - started.getTime()) / 1000)} s\n`);
if (failures.length) process.exitCode = 1;
