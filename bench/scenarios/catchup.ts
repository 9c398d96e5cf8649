/**
 * Scenario 1: catch-up of N events (default 200,000: 1,000 aggregates x 200,
 * ~200-byte JSON payloads) by one consumer, batch 100 and 1,000, sluice vs a
 * hand-written raw postgres.js loop, interleaved (raw, sluice, raw, sluice...).
 *
 *   a: no-op handler        vs raw "read + transaction + checkpoint upsert"
 *   b: one multi-row insert vs the same raw loop with one insert ... select from unnest(...)
 *   c: one awaited insert per event vs its raw twin
 *
 * sluice runs with batchPauseMs: 0 (the default 200 ms pause between full
 * batches is a throttle, not a cost). Both sides are timed from the first
 * batch in hand to the last commit; start-up (worker start to first yielded
 * batch; for raw, the first read) is reported separately. With more than one
 * series, each runs in a fresh child process (`--in-process` to keep them in
 * one).
 *
 *   node --import tsx bench/scenarios/catchup.ts [--quick] [--runs 3] [--handlers a,b,c]
 *        [--batches 100,1000] [--events 200000] [--systems raw,sluice] [--url <prepared db>] [--json out.json]
 *   node_modules/.bin/bun bench/scenarios/catchup.ts ...     (scenario 8)
 *   node_modules/.bin/deno run -A bench/scenarios/catchup.ts ...
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { finish, list, num, parseArgs, progress, str, type Target } from "../lib/args.ts";
import { runToEnd, type Runtime } from "../lib/child.ts";
import { connect, fillEvents, head as readHead, payloadBytes, scratch, settle } from "../lib/db.ts";
import { type CpuUse, cpuMeter } from "../lib/cpu.ts";
import { loadavg, runtimeVersion } from "../lib/env.ts";
import { type CatchUp, createBenchTables, type HandlerKind, rawCatchUp } from "../lib/raw.ts";
import { sluiceCatchUp } from "../lib/sluice.ts";
import { fixed, int, mmm, spread, summarize, table } from "../lib/stats.ts";

const parsed = parseArgs();
const args = { ...parsed, runs: num(parsed.argv, "runs") ?? (parsed.quick ? 2 : 3) };
/**
 * 1a is the series with a 1.0x goal and the one noise moves most (both loops
 * are bound by the client's CPU): 5 runs unless --runs says otherwise.
 */
const runsFor = (handler: HandlerKind): number => (handler === "a" && num(parsed.argv, "runs") === undefined && !parsed.quick ? 5 : args.runs);
const handlers = (list(args.argv, "handlers") ?? ["a", "b", "c"]) as HandlerKind[];
const batches = (list(args.argv, "batches") ?? ["100", "1000"]).map(Number);
const systems = (list(args.argv, "systems") ?? ["raw", "sluice"]) as ("raw" | "sluice")[];
const N = num(args.argv, "events") ?? (args.quick ? 10_000 : 200_000);
/**
 * To keep the whole bench under 15 minutes, the slow series catch up only the
 * start of the log (their rate is set per batch or per event, not by the
 * log's length): batch 100 the first HALF events, 1c the first C_EVENTS.
 */
const C_EVENTS = Math.min(N, num(args.argv, "events-c") ?? (args.quick ? 2_000 : 30_000));
const SMALL_BATCH_EVENTS = Math.min(N, num(args.argv, "events-100") ?? (args.quick ? 5_000 : 100_000));
const target = (handler: HandlerKind, batchSize: number): number =>
  handler === "c" ? C_EVENTS : batchSize <= 100 ? SMALL_BATCH_EVENTS : N;
const AGGREGATES = 1_000;
const started = new Date();
const load0 = loadavg();

const TITLES: Record<HandlerKind, string> = {
  a: "no-op handler vs raw read + transaction + checkpoint upsert",
  b: "one multi-row insert per batch (insert ... select from unnest) vs its raw twin",
  c: "one awaited insert per event vs its raw twin",
};
/** The figures measured before on this kind of machine (raw loop, batch 1000), for reference. */
const BEFORE: Record<HandlerKind, number> = { a: 132_000, b: 72_000, c: 9_000 };
const GOAL: Record<HandlerKind, number> = { a: 1.0, b: 0.9, c: 0.9 };

interface Series {
  handler: HandlerKind;
  batchSize: number;
  system: "raw" | "sluice";
  runs: (CatchUp & { cpu: CpuUse })[];
}

/** More than one series: each in a fresh child process (see seriesInChild). */
const isolate = handlers.length * batches.length > 1 && !args.argv.includes("--in-process");
const db = await scratch("catchup", args.url);
const series: Series[] = [];
let payload = 0;
try {
  await createBenchTables(db.sql);
  let h = await readHead(db.sql);
  if (h < BigInt(N)) {
    progress(`filling ${N} events`);
    const f = await fillEvents(db.sql, N - Number(h), { aggregates: AGGREGATES, firstIndex: Number(h) });
    progress(`filled in ${Math.round(f.ms)} ms`);
    h = f.head;
  }
  const head = h;
  await settle(db.sql);
  payload = await payloadBytes(db.sql);
  for (const handler of handlers) {
    for (const batchSize of batches) {
      if (isolate) series.push(...(await seriesInChild(handler, batchSize)));
      else series.push(...(await seriesHere(handler, batchSize, head)));
    }
  }
} finally {
  await db.drop();
}

/**
 * One series in a fresh child process (this script with one handler and one
 * batch size): a series measured after another in the same process favours
 * raw (its loop keeps getting cheaper as the process repeats it; sluice's
 * does not), so none follows another.
 */
async function seriesInChild(handler: HandlerKind, batchSize: number): Promise<Series[]> {
  const dir = mkdtempSync(join(tmpdir(), "sluice-c1-"));
  const pass = ["runs", "events", "events-c", "events-100", "systems"].flatMap((k) => {
    const v = str(args.argv, k);
    return v === undefined ? [] : [`--${k}`, v];
  });
  try {
    const json = join(dir, "series.json");
    await runToEnd(currentRuntime(), "bench/scenarios/catchup.ts", [
      "--url", db.url, "--handlers", handler, "--batches", String(batchSize), "--json", json,
      ...(args.quick ? ["--quick"] : []), ...pass,
    ], { echo: true });
    return (JSON.parse(readFileSync(json, "utf8")) as { data: { series: Series[] } }).data.series;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One series in this process: raw and sluice runs interleaved, the side that runs first alternating. */
async function seriesHere(handler: HandlerKind, batchSize: number, head: bigint): Promise<Series[]> {
  const clients = { raw: connect(db.url, { max: 10 }), sluice: connect(db.url, { max: 10 }) };
  const s = Object.fromEntries(systems.map((sys) => [sys, { handler, batchSize, system: sys, runs: [] } as Series])) as Record<string, Series>;
  try {
    for (let run = 1; run <= runsFor(handler); run++) {
      // Alternate which side runs first, so neither always inherits the
      // other's garbage and warm caches.
      for (const sys of run % 2 === 1 ? systems : [...systems].reverse()) {
        if (handler !== "a") await db.sql`truncate bench_proj`;
        const name = `c1${handler}_${batchSize}_${sys}_${run}_${randomUUID().slice(0, 6)}`;
        let cpu: CpuUse = { clientMs: NaN, serverMs: NaN };
        const meter = await cpuMeter(db.sql, db.name);
        const onEnd = async () => void (cpu = await meter.stop());
        const o = { name, batchSize, head: BigInt(Math.min(Number(head), target(handler, batchSize))), kind: handler, onEnd };
        const r = sys === "raw" ? await rawCatchUp(clients.raw, o) : await sluiceCatchUp(clients.sluice, o);
        if (r.events !== Number(o.head)) throw new Error(`${sys} ${name}: ${r.events} events handled, expected ${o.head}`);
        if (handler !== "a") {
          const [c] = await db.sql`select count(*)::int as n from bench_proj`;
          if (c!.n !== r.events) throw new Error(`${sys} ${name}: ${c!.n} projection rows, expected ${r.events}`);
        }
        s[sys]!.runs.push({ ...r, cpu });
        progress(
          `1${handler} batch ${batchSize} run ${run} ${sys}: ${int(r.eventsPerSec)} events/s (${int(r.ms)} ms, start-up ${int(r.startupMs)} ms; ` +
            `CPU ${int(cpu.clientMs)} ms client, ${int(cpu.serverMs)} ms server)`,
        );
      }
    }
  } finally {
    await Promise.all([clients.raw.end({ timeout: 5 }), clients.sluice.end({ timeout: 5 })]);
  }
  return systems.map((sys) => s[sys]!);
}

/** The runtime this script runs on (its series children run on the same one). */
function currentRuntime(): Runtime {
  const g = globalThis as { Bun?: unknown; Deno?: unknown };
  return g.Bun ? "bun" : g.Deno ? "deno" : "node";
}

// Report.
const targets: Target[] = [];
const parts: string[] = [
  `${int(N)} events (${AGGREGATES} aggregates, ~${payload}-byte payloads), one consumer; ${args.runs} runs per series ` +
  `(${runsFor("a")} for 1a), interleaved, the side that runs first alternating (${systems.join(", ")}, then ${[...systems].reverse().join(", ")}); ` +
  (isolate ? `each series in a fresh process (one series measured after another in the same process favours raw); ` : "") +
  `${runtimeVersion()}; sluice with \`batchPauseMs: 0\`, other settings default (poll dispatcher). ` +
  `Events/s are min / **median** / max over the runs; "ratio" is sluice's median over raw's median, "pair ratios" ` +
  `the per-run sluice/raw ratios of adjacent runs (min / median / max), which share the machine's noise best. ` +
  `CPU columns (medians) are the benchmark process's CPU (the loop, postgres.js, GC) and the PostgreSQL backends' CPU ` +
  `(from /proc), per 1,000 events, start-up included: unlike events/s they hardly depend on what else the machine runs.`,
];
for (const handler of handlers) {
  const rows: string[][] = [];
  for (const batchSize of batches) {
    const raw = series.find((x) => x.handler === handler && x.batchSize === batchSize && x.system === "raw");
    const sl = series.find((x) => x.handler === handler && x.batchSize === batchSize && x.system === "sluice");
    const rs = raw ? summarize(raw.runs.map((r) => r.eventsPerSec)) : undefined;
    const ss = sl ? summarize(sl.runs.map((r) => r.eventsPerSec)) : undefined;
    const pairs = raw && sl ? sl.runs.map((r, i) => r.eventsPerSec / (raw.runs[i]?.eventsPerSec ?? NaN)).filter(Number.isFinite) : [];
    const ps = summarize(pairs);
    const ratio = rs && ss ? ss.median / rs.median : NaN;
    for (const [label, x, sm] of [["raw", raw, rs], ["sluice", sl, ss]] as const) {
      if (!x || !sm) continue;
      rows.push([
        String(batchSize),
        label,
        mmm(sm),
        `${fixed(spread(sm), 0)}%`,
        int(summarize(x.runs.map((r) => r.startupMs)).median),
        int(summarize(x.runs.map((r) => r.ms)).median),
        label === "sluice" && raw ? `**${fixed(ratio, 2)}x**` : "",
        label === "sluice" && raw ? `${fixed(ps.min, 2)} / ${fixed(ps.median, 2)} / ${fixed(ps.max, 2)}` : "",
        fixed(summarize(x.runs.map((r) => (r.cpu.clientMs / r.events) * 1000)).median, 1),
        fixed(summarize(x.runs.map((r) => (r.cpu.serverMs / r.events) * 1000)).median, 1),
      ]);
    }
    if (batchSize === 1000 && raw && sl) {
      targets.push({
        name: `1${handler} batch 1000, sluice / raw`,
        goal: `>= ${GOAL[handler].toFixed(1)}x`,
        measured: `${fixed(ratio, 2)}x (${int(ss!.median)} vs ${int(rs!.median)} events/s; pair ratios ${fixed(ps.min, 2)}..${fixed(ps.max, 2)})`,
        met: ratio >= GOAL[handler],
      });
    }
  }
  parts.push(
    `### 1${handler}. ${TITLES[handler]}\n\n` +
      table(
        ["batch", "system", "events/s", "spread", "start-up ms (median)", "catch-up ms (median)", "ratio", "pair ratios", "client CPU ms / 1k events", "server CPU ms / 1k events"],
        rows,
      ) +
      `\n\nEvents caught up per run: ${batches.map((b) => `batch ${b}: ${int(target(handler, b))}`).join(", ")}` +
      (batches.some((b) => target(handler, b) < N) ? ` (the slow series stop early to keep the bench under 15 minutes; their rate is set per batch or per event).` : ".") +
      `\n\nRaw loop measured before on this kind of machine (batch 1000): ~${int(BEFORE[handler])} events/s.`,
  );
}

finish(args, {
  id: "1",
  title: "Catch-up of one consumer",
  startedAt: started.toISOString(),
  seconds: (Date.now() - started.getTime()) / 1000,
  quick: args.quick,
  load: [load0, loadavg()],
  markdown: parts.join("\n\n"),
  targets,
  data: { events: N, eventsC: C_EVENTS, eventsBatch100: SMALL_BATCH_EVENTS, aggregates: AGGREGATES, payloadBytes: payload, runtime: runtimeVersion(), runs: args.runs, runs1a: runsFor("a"), series },
});
process.exit(0);
