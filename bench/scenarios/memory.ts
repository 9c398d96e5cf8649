/**
 * Scenario 7: memory. Peak RSS of a process catching up N events (default
 * 1,000,000, filled with one INSERT ... SELECT generate_series; the events
 * share one transaction_id, fine for a benchmark) with one consumer, batch
 * 1,000, no-op handler: a sluice worker process (batchPauseMs: 0) vs a raw
 * loop process. Each child (bundled with esbuild, run on plain Node: no tsx
 * loader in the measured process) samples process.memoryUsage().rss every
 * 10 ms and after every batch; "base" is its RSS before connecting.
 *
 *   node --import tsx bench/scenarios/memory.ts [--quick] [--runs 3] [--events 1000000] [--json out.json]
 */
import { randomUUID } from "node:crypto";
import { finish, num, parseArgs, progress, type Target } from "../lib/args.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundle, startPlain } from "../lib/child.ts";
import { fillEvents, scratch, settle } from "../lib/db.ts";
import { loadavg } from "../lib/env.ts";
import { createBenchTables } from "../lib/raw.ts";
import { fixed, int, mmm, summarize, table } from "../lib/stats.ts";

const args = parseArgs();
const N = num(args.argv, "events") ?? (args.quick ? 100_000 : 1_000_000);
const BATCH = 1000;
const LIMIT_MB = 150;
const started = new Date();
const load0 = loadavg();

interface Run {
  peakMb: number;
  baseMb: number;
  eventsPerSec: number;
}
const runs: Record<"raw" | "sluice", Run[]> = { raw: [], sluice: [] };
let fillMs = 0;

const dir = mkdtempSync(join(tmpdir(), "sluice-mem-"));
const bundles = { sluice: bundle("bench/lib/worker-child.ts", dir), raw: bundle("bench/lib/raw-child.ts", dir) };
const db = await scratch("memory", args.url);
try {
  await createBenchTables(db.sql);
  progress(`filling ${N} events`);
  const f = await fillEvents(db.sql, N);
  fillMs = f.ms;
  progress(`filled in ${int(f.ms)} ms`);
  await settle(db.sql);
  for (let run = 1; run <= args.runs; run++) {
    for (const system of ["raw", "sluice"] as const) {
      const name = `m7_${system}_${run}_${randomUUID().slice(0, 6)}`;
      const config = system === "sluice"
        ? { url: db.url, label: name, consumers: [name], options: { batchSize: BATCH, batchPauseMs: 0 }, rss: true, stopAtHead: f.head.toString() }
        : { url: db.url, label: name, consumers: [name], batchSize: BATCH, wake: "poll", pollMs: 10, rss: true, stopAtHead: f.head.toString() };
      const c = startPlain(bundles[system], [JSON.stringify(config)]);
      const done = await c.waitLine((l) => l.done === true, 600_000);
      await c.exited;
      const rss = done.rss as { peak: number; base: number };
      const r: Run = { peakMb: rss.peak / 2 ** 20, baseMb: rss.base / 2 ** 20, eventsPerSec: N / (((done.lastAt as number) - (done.firstAt as number)) / 1000) };
      runs[system].push(r);
      progress(`7 run ${run} ${system}: peak RSS ${fixed(r.peakMb, 1)} MB (base ${fixed(r.baseMb, 1)} MB), ${int(r.eventsPerSec)} events/s`);
    }
  }
} finally {
  await db.drop();
  rmSync(dir, { recursive: true, force: true });
}

const rows = (["raw", "sluice"] as const).map((s) => [
  s,
  mmm(summarize(runs[s].map((r) => r.peakMb)), (x) => fixed(x, 1)),
  fixed(summarize(runs[s].map((r) => r.baseMb)).median, 1),
  fixed(summarize(runs[s].map((r) => r.peakMb - r.baseMb)).median, 1),
  int(summarize(runs[s].map((r) => r.eventsPerSec)).median),
]);
const peak = Math.max(...runs.sluice.map((r) => r.peakMb));
const targets: Target[] = [{ name: "7 peak RSS catching up 1M events (sluice, worst run)", goal: `< ${LIMIT_MB} MB`, measured: `${fixed(peak, 1)} MB`, met: peak < LIMIT_MB }];
const md = `${int(N)} events (filled in ${int(fillMs)} ms), one consumer, batch ${BATCH}, no-op handler, each side in its own Node process ` +
  `(node ${process.version}, each child bundled with esbuild and run as plain JS, so the tsx loader's compiler does not count), ${args.runs} runs interleaved. RSS in MB: peak min / **median** / max; base is the ` +
  `child's RSS right after loading its modules.\n\n` +
  table(["system", "peak RSS (MB)", "base RSS (MB)", "peak - base (MB)", "events/s (median)"], rows);

finish(args, {
  id: "7",
  title: "Memory: peak RSS catching up 1,000,000 events",
  startedAt: started.toISOString(),
  seconds: (Date.now() - started.getTime()) / 1000,
  quick: args.quick,
  load: [load0, loadavg()],
  markdown: md,
  targets,
  data: { events: N, batch: BATCH, fillMs, runs },
});
process.exit(0);
