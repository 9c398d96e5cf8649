/**
 * Scenario 2: twenty consumers catching up N events each (default 30,000:
 * 600,000 deliveries), one worker process vs three worker processes, and
 * the raw loops (20 in one process; 3 processes with the consumers split
 * statically). No-op handler, batch 1,000, sluice with `batchPauseMs: 0` and
 * the notify dispatcher; the raw loops LISTEN too.
 *
 * Each run: a fresh schema (migrate), the processes started and (sluice)
 * the 20 consumers balanced over the live workers, all idle at position 0;
 * then one INSERT ... SELECT appends the N events and NOTIFYs on commit.
 * "catch-up" is from that commit to the last consumer's last commit; events/s
 * is 20 x N over the first yielded batch to that last commit.
 *
 *   node --import tsx bench/scenarios/consumers.ts [--quick] [--runs 3] [--events 50000] [--json out.json]
 */
import { migrate } from "../../src/db/migrate.ts";
import { finish, num, parseArgs, progress, type Target } from "../lib/args.ts";
import { type Child, start } from "../lib/child.ts";
import { fillEvents, scratch, silent } from "../lib/db.ts";
import { loadavg } from "../lib/env.ts";
import { createBenchTables, now } from "../lib/raw.ts";
import { fixed, int, mmm, spread, summarize, table } from "../lib/stats.ts";

const args = parseArgs();
const N = num(args.argv, "events") ?? (args.quick ? 10_000 : 30_000);
const CONSUMERS = 20;
const BATCH = 1000;
const started = new Date();
const load0 = loadavg();

type Config = { system: "raw" | "sluice"; processes: 1 | 3 };
const CONFIGS: Config[] = [
  { system: "raw", processes: 1 },
  { system: "sluice", processes: 1 },
  { system: "raw", processes: 3 },
  { system: "sluice", processes: 3 },
];
interface Run {
  catchUpMs: number;
  eventsPerSec: number;
  startupMs: number;
  perProcess: number[];
}
const results = new Map<string, Run[]>();
const key = (c: Config) => `${c.system} x${c.processes}`;

const db = await scratch("consumers", args.url);
try {
  await createBenchTables(db.sql);
  for (let run = 1; run <= args.runs; run++) {
    for (const cfg of CONFIGS) {
      const schema = `s2_${run}_${cfg.system}_${cfg.processes}`;
      const channel = `${schema}_events`;
      await migrate(db.sql, { tables: { schema }, logger: silent });
      const names = Array.from({ length: CONSUMERS }, (_, i) => `${schema}_c${String(i).padStart(2, "0")}`);
      const children: Child[] = [];
      const t0 = now();
      try {
        for (let p = 0; p < cfg.processes; p++) {
          const mine = cfg.system === "raw" ? names.filter((_, i) => i % cfg.processes === p) : names;
          const config = cfg.system === "sluice"
            ? {
              url: db.url,
              label: `w${p}`,
              consumers: mine,
              concurrency: Math.ceil(CONSUMERS / cfg.processes),
              options: { tables: { schema }, batchSize: BATCH, batchPauseMs: 0, dispatcher: "notify", notifyChannel: channel },
            }
            : { url: db.url, label: `r${p}`, consumers: mine, batchSize: BATCH, wake: "notify", pollMs: 1000, channel, schema };
          children.push(start("node", cfg.system === "sluice" ? "bench/lib/worker-child.ts" : "bench/lib/raw-child.ts", [JSON.stringify(config)]));
        }
        await Promise.all(children.map((c) => c.waitLine((l) => l.ready === true)));
        const ready = now();
        if (cfg.system === "sluice") {
          // Wait until the 20 consumers are spread over the live workers (balanced and sticky).
          const deadline = Date.now() + 30_000;
          for (;;) {
            const rows = await db.sql.unsafe(`select worker_id::text as w, count(*)::int as n from "${schema}".consumer_assignments group by 1`);
            const owned = rows.filter((r) => r.w !== null);
            const total = owned.reduce((a, r) => a + (r.n as number), 0);
            const lo = Math.floor(CONSUMERS / cfg.processes);
            if (total === CONSUMERS && owned.length === cfg.processes && owned.every((r) => (r.n as number) >= lo)) break;
            if (Date.now() > deadline) throw new Error(`${key(cfg)}: consumers not balanced within 30 s: ${JSON.stringify(rows)}`);
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        const balanced = now();
        await new Promise((r) => setTimeout(r, 300)); // every consumer idle at 0
        const { head } = await fillEvents(db.sql, N, { schema, notify: channel });
        const filled = now();
        // Wait for every consumer's commit at the head.
        const doneAt = new Map<string, number>();
        const deadline = Date.now() + 300_000;
        while (doneAt.size < CONSUMERS) {
          for (const c of children) {
            for (const l of c.lines) {
              if (typeof l.c === "string" && BigInt(l.to as string) >= head && !doneAt.has(l.c)) doneAt.set(l.c, l.at as number);
            }
          }
          if (Date.now() > deadline) throw new Error(`${key(cfg)}: not caught up within 300 s`);
          if (doneAt.size < CONSUMERS) await new Promise((r) => setTimeout(r, 20));
        }
        const commits = children.flatMap((c) => c.lines.filter((l) => typeof l.c === "string" && (l.at as number) >= filled - 1));
        const delivered = commits.reduce((a, l) => a + (l.n as number), 0);
        if (delivered < CONSUMERS * N) throw new Error(`${key(cfg)}: ${delivered} deliveries, expected ${CONSUMERS * N}`);
        const first = Math.min(...commits.map((l) => l.y as number));
        const last = Math.max(...doneAt.values());
        const r: Run = {
          catchUpMs: last - filled,
          eventsPerSec: (CONSUMERS * N) / ((last - first) / 1000),
          startupMs: balanced - t0,
          perProcess: children.map((c) => c.lines.filter((l) => typeof l.c === "string").reduce((a, l) => a + (l.n as number), 0)),
        };
        void ready;
        results.set(key(cfg), [...(results.get(key(cfg)) ?? []), r]);
        progress(`2 run ${run} ${key(cfg)}: ${int(r.eventsPerSec)} events/s, caught up in ${int(r.catchUpMs)} ms (deliveries per process ${r.perProcess.join("/")})`);
      } finally {
        for (const c of children) c.proc.kill("SIGTERM");
        await Promise.all(children.map((c) => Promise.race([c.exited, new Promise((r) => setTimeout(r, 10_000))])));
        for (const c of children) if (c.proc.exitCode === null) c.proc.kill("SIGKILL");
        await db.sql.unsafe(`drop schema "${schema}" cascade`);
      }
    }
  }
} finally {
  await db.drop();
}

const rows: string[][] = [];
const targets: Target[] = [];
for (const c of CONFIGS) {
  const rs = results.get(key(c)) ?? [];
  const raw = results.get(key({ system: "raw", processes: c.processes })) ?? [];
  const ev = summarize(rs.map((r) => r.eventsPerSec));
  const rawEv = summarize(raw.map((r) => r.eventsPerSec));
  const pairs = summarize(rs.map((r, i) => r.eventsPerSec / (raw[i]?.eventsPerSec ?? NaN)).filter(Number.isFinite));
  rows.push([
    c.system,
    String(c.processes),
    mmm(ev),
    `${fixed(spread(ev), 0)}%`,
    mmm(summarize(rs.map((r) => r.catchUpMs))),
    c.system === "sluice" ? `**${fixed(ev.median / rawEv.median, 2)}x** (pairs ${fixed(pairs.min, 2)}..${fixed(pairs.max, 2)})` : "",
    int(summarize(rs.map((r) => r.startupMs)).median),
  ]);
}
const one = summarize((results.get("sluice x1") ?? []).map((r) => r.eventsPerSec)).median;
const three = summarize((results.get("sluice x3") ?? []).map((r) => r.eventsPerSec)).median;
const md = `20 consumers x ${int(N)} events (${int(CONSUMERS * N)} deliveries), no-op handler, batch ${BATCH}; sluice: notify dispatcher, ` +
  `\`batchPauseMs: 0\`, other settings default, ceil(20 / processes) loops over \`worker.assigned()\` per process (one per consumer it may own); raw: 20 LISTEN-woken loops, split statically over the processes. ${args.runs} runs, ` +
  `configurations interleaved. Events/s and catch-up (ms from the append's commit to the last consumer's last commit) are min / **median** / max; ` +
  `start-up is process spawn to ready (sluice: and consumers balanced).\n\n` +
  table(["system", "processes", "events/s (all consumers)", "spread", "catch-up ms", "sluice / raw", "start-up ms"], rows) +
  `\n\nsluice, three processes vs one: ${fixed(three / one, 2)}x the events/s (2 cores: the processes compete with PostgreSQL for them).`;

finish(args, {
  id: "2",
  title: "Twenty consumers: one worker process vs three",
  startedAt: started.toISOString(),
  seconds: (Date.now() - started.getTime()) / 1000,
  quick: args.quick,
  load: [load0, loadavg()],
  markdown: md,
  targets,
  data: { events: N, consumers: CONSUMERS, batch: BATCH, runs: Object.fromEntries(results) },
});
process.exit(0);
