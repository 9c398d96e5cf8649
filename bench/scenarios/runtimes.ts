/**
 * Scenario 8: scenario 1a (no-op handler, raw vs sluice, batch 1000 by
 * default) under Node, Bun and Deno: bench/scenarios/catchup.ts runs as a
 * child on each runtime (node --import tsx, node_modules/.bin/bun,
 * node_modules/.bin/deno run -A) against one prepared database, one run per
 * child, the runtimes interleaved round by round (node, bun, deno, node...).
 *
 *   node --import tsx bench/scenarios/runtimes.ts [--quick] [--runs 5] [--batches 1000] [--events 200000] [--json out.json]
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { finish, list, num, parseArgs, progress, type Target } from "../lib/args.ts";
import { runToEnd, type Runtime } from "../lib/child.ts";
import { fillEvents, scratch, settle } from "../lib/db.ts";
import { environment, loadavg } from "../lib/env.ts";
import { createBenchTables } from "../lib/raw.ts";
import { fixed, int, mmm, summarize, table } from "../lib/stats.ts";

const args = parseArgs();
/** Rounds (one run per runtime and side each): 5 unless --runs says otherwise. */
const rounds = num(args.argv, "runs") ?? (args.quick ? 1 : 5);
const N = num(args.argv, "events") ?? (args.quick ? 10_000 : 200_000);
const batches = list(args.argv, "batches") ?? ["1000"];
const RUNTIMES: Runtime[] = ["node", "bun", "deno"];
const started = new Date();
const load0 = loadavg();
const dir = mkdtempSync(join(tmpdir(), "sluice-rt-"));

interface Run {
  eventsPerSec: number;
  startupMs: number;
  cpu: { clientMs: number; serverMs: number };
  events: number;
}
const results = new Map<string, Run[]>(); // `${runtime} ${batch} ${system}`
const versions: Record<string, string> = {};

const db = await scratch("runtimes", args.url);
try {
  await createBenchTables(db.sql);
  const env = await environment(db.sql);
  for (const r of RUNTIMES) versions[r] = env[r] ?? "?";
  progress(`filling ${N} events`);
  await fillEvents(db.sql, N);
  await settle(db.sql);
  for (let round = 1; round <= rounds; round++) {
    for (const runtime of RUNTIMES) {
      const json = join(dir, `${runtime}-${round}.json`);
      // The side that runs first in each child alternates by round.
      await runToEnd(runtime, "bench/scenarios/catchup.ts", [
        "--url", db.url, "--handlers", "a", "--batches", batches.join(","), "--runs", "1", "--json", json,
        "--systems", round % 2 === 1 ? "raw,sluice" : "sluice,raw",
      ], { echo: false });
      const r = JSON.parse(readFileSync(json, "utf8")) as {
        data: { series: { batchSize: number; system: string; runs: Run[] }[] };
      };
      for (const s of r.data.series) {
        const k = `${runtime} ${s.batchSize} ${s.system}`;
        results.set(k, [...(results.get(k) ?? []), ...s.runs]);
      }
      progress(`8 round ${round} ${runtime}: ${r.data.series.map((s) => `${s.system}@${s.batchSize} ${int(s.runs[0]!.eventsPerSec)}`).join(", ")} events/s`);
    }
  }
} finally {
  await db.drop();
  rmSync(dir, { recursive: true, force: true });
}

const rows: string[][] = [];
const targets: Target[] = [];
for (const batch of batches) {
  for (const runtime of RUNTIMES) {
    const raw = results.get(`${runtime} ${batch} raw`) ?? [];
    const sl = results.get(`${runtime} ${batch} sluice`) ?? [];
    const rs = summarize(raw.map((r) => r.eventsPerSec));
    const ss = summarize(sl.map((r) => r.eventsPerSec));
    const pairs = summarize(sl.map((r, i) => r.eventsPerSec / (raw[i]?.eventsPerSec ?? NaN)).filter(Number.isFinite));
    const cpu = (xs: Run[]) => fixed(summarize(xs.map((r) => (r.cpu.clientMs / r.events) * 1000)).median, 1);
    rows.push([runtime, versions[runtime] ?? "", batch, mmm(rs), mmm(ss), `**${fixed(ss.median / rs.median, 2)}x**`, `${fixed(pairs.min, 2)} / ${fixed(pairs.median, 2)} / ${fixed(pairs.max, 2)}`, cpu(raw), cpu(sl), int(summarize(sl.map((r) => r.startupMs)).median)]);
    if (batch === "1000") {
      targets.push({ name: `8 1a batch 1000 on ${runtime}, sluice / raw`, goal: ">= 1.0x", measured: `${fixed(ss.median / rs.median, 2)}x`, met: ss.median / rs.median >= 1 });
    }
  }
}
const md = `Scenario 1a (${int(N)} events, no-op handler) run by bench/scenarios/catchup.ts as a child on each runtime, ${rounds} rounds ` +
  `(one raw and one sluice run per child, raw first in odd rounds and sluice first in even ones; runtimes interleaved). Events/s min / **median** / max; client CPU is the child's CPU per 1,000 events.\n\n` +
  table(["runtime", "version", "batch", "raw events/s", "sluice events/s", "ratio", "pair ratios", "raw client CPU ms/1k", "sluice client CPU ms/1k", "sluice start-up ms"], rows);

finish(args, {
  id: "8",
  title: "Scenario 1a on Node, Bun and Deno",
  startedAt: started.toISOString(),
  seconds: (Date.now() - started.getTime()) / 1000,
  quick: args.quick,
  load: [load0, loadavg()],
  markdown: md,
  targets,
  data: { events: N, batches, versions, runs: Object.fromEntries(results) },
});
process.exit(0);
