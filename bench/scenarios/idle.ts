/**
 * Scenario 6: idle cost, in queries per second that one idle worker (one
 * consumer, caught up) sends, in poll and notify modes, default settings.
 *
 * pg_stat_statements is used when the server preloads it; otherwise (as
 * here) the queries are counted in two places, as
 * test/integration/session.test.ts does: the postgres.js `debug` callback of
 * the worker's pool client, and a counting TCP proxy on 127.0.0.1 through
 * which the worker's session connections (coordination tick, LISTEN) go
 * (`directUrl`). The raw twins: a LISTEN/NOTIFY loop and loops polling every
 * 200 ms (the default dispatcherIntervalMs) and every 10 ms.
 *
 * After a settling period, `runs` consecutive windows are measured.
 *
 *   node --import tsx bench/scenarios/idle.ts [--quick] [--runs 3] [--window 10] [--settle 5] [--json out.json]
 */
import { createWorker, type Worker } from "../../src/worker.ts";
import { finish, num, parseArgs, progress, type Target } from "../lib/args.ts";
import { connect, scratch, silent } from "../lib/db.ts";
import { loadavg } from "../lib/env.ts";
import { startProxy } from "../lib/proxy.ts";
import { createBenchTables, rawFollow, Waker } from "../lib/raw.ts";
import { fixed, summarize, table } from "../lib/stats.ts";

const args = parseArgs();
const WINDOW_S = num(args.argv, "window") ?? (args.quick ? 2 : 5);
const SETTLE_S = num(args.argv, "settle") ?? (args.quick ? 1 : 5);
const started = new Date();
const load0 = loadavg();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Mode {
  key: string;
  label: string;
  kind: "sluice" | "raw";
  wake: "notify" | "poll";
  pollMs?: number;
}
const MODES: Mode[] = [
  { key: "sluice-notify", label: 'sluice, dispatcher "notify"', kind: "sluice", wake: "notify" },
  { key: "sluice-poll", label: 'sluice, dispatcher "poll" (default, 200 ms)', kind: "sluice", wake: "poll" },
  { key: "raw-notify", label: "raw LISTEN/NOTIFY loop", kind: "raw", wake: "notify" },
  { key: "raw-poll-200", label: "raw loop polling every 200 ms", kind: "raw", wake: "poll", pollMs: 200 },
  { key: "raw-poll-10", label: "raw loop polling every 10 ms", kind: "raw", wake: "poll", pollMs: 10 },
];
interface Window {
  pool: number;
  session: number;
  sessionRoundTrips: number;
  total: number;
  pgss?: number;
}
const results = new Map<string, Window[]>();
let pgssNote = "";

const db = await scratch("idle", args.url);
try {
  await createBenchTables(db.sql);
  let pgss = true;
  try {
    await db.sql`create extension if not exists pg_stat_statements`;
    await db.sql`select pg_stat_statements_reset()`;
    pgssNote = "pg_stat_statements available: its call counts are shown too.";
  } catch (e) {
    pgss = false;
    pgssNote = `pg_stat_statements unavailable here (${(e as Error).message}); counted with the postgres.js debug callback (pool) and a counting TCP proxy (session connections, via directUrl).`;
  }
  for (const mode of MODES) {
    const proxy = await startProxy(db.url);
    let pool = 0;
    const sql = connect(db.url, { max: 10, debug: () => void pool++ });
    let worker: Worker | undefined;
    const ctl = new AbortController();
    let loop: Promise<void> = Promise.resolve();
    try {
      if (mode.kind === "sluice") {
        const w = createWorker({ sql, directUrl: proxy.url, consumers: [{ name: `idle_${mode.key}` }], dispatcher: mode.wake, logger: silent });
        worker = w;
        loop = (async () => {
          for await (const _ of w.assigned()) { /* idle: no events */ }
        })();
        const deadline = Date.now() + 10_000;
        while (w.status().consumers[0]?.state !== "idle") {
          if (Date.now() > deadline) throw new Error(`${mode.key} never idle`);
          await sleep(20);
        }
      } else {
        const waker = new Waker();
        if (mode.wake === "notify") await sql.listen("sluice_events", () => waker.wake());
        loop = rawFollow(sql, {
          name: `idle_${mode.key}`,
          batchSize: 100,
          kind: "a",
          waker: mode.wake === "notify" ? waker : undefined,
          pollMs: mode.pollMs ?? 3_600_000,
          signal: ctl.signal,
        });
      }
      await sleep(SETTLE_S * 1000);
      for (let i = 0; i < args.runs; i++) {
        if (pgss) await db.sql`select pg_stat_statements_reset()`;
        const p0 = pool;
        const s0 = proxy.stats();
        const t0 = performance.now();
        await sleep(WINDOW_S * 1000);
        const secs = (performance.now() - t0) / 1000;
        const s1 = proxy.stats();
        const w: Window = {
          pool: (pool - p0) / secs,
          session: (s1.statements - s0.statements) / secs,
          sessionRoundTrips: (s1.roundTrips - s0.roundTrips) / secs,
          total: (pool - p0 + s1.statements - s0.statements) / secs,
        };
        if (pgss) {
          const [r] = await db.sql`select coalesce(sum(calls), 0)::int as n from pg_stat_statements
            where dbid = (select oid from pg_database where datname = current_database()) and query not ilike '%pg_stat_statements%'`;
          w.pgss = (r!.n as number) / secs;
        }
        results.set(mode.key, [...(results.get(mode.key) ?? []), w]);
        progress(`6 ${mode.key} window ${i + 1}: ${fixed(w.total, 2)} q/s (pool ${fixed(w.pool, 2)}, session ${fixed(w.session, 2)})`);
      }
    } finally {
      ctl.abort();
      await worker?.stop();
      await loop.catch(() => {});
      await sql.end({ timeout: 5 });
      await proxy.close();
    }
  }
} finally {
  await db.drop();
}

const rows = MODES.map((m) => {
  const ws = results.get(m.key) ?? [];
  const t = summarize(ws.map((w) => w.total));
  return [
    m.label,
    `${fixed(t.min, 2)} / **${fixed(t.median, 2)}** / ${fixed(t.max, 2)}`,
    fixed(summarize(ws.map((w) => w.pool)).median, 2),
    fixed(summarize(ws.map((w) => w.session)).median, 2),
    fixed(summarize(ws.map((w) => w.sessionRoundTrips)).median, 2),
    ws.some((w) => w.pgss !== undefined) ? fixed(summarize(ws.map((w) => w.pgss ?? NaN)).median, 2) : "n/a",
  ];
});
const notify = summarize((results.get("sluice-notify") ?? []).map((w) => w.total));
const targets: Target[] = [{ name: "6 idle notify-mode worker", goal: "<= 2 queries/s", measured: `${fixed(notify.median, 2)} q/s (windows ${fixed(notify.min, 2)}..${fixed(notify.max, 2)})`, met: notify.max <= 2 }];
const md = `One worker, one consumer caught up, no appends; default settings except the dispatcher. ${SETTLE_S} s to settle, then ` +
  `${args.runs} consecutive windows of ${WINDOW_S} s (min / **median** / max of the windows). ${pgssNote}\n\n` +
  table(["mode", "queries/s total", "pool (debug callback)", "session (proxy)", "session round trips/s", "pg_stat_statements"], rows);

finish(args, {
  id: "6",
  title: "Idle cost",
  startedAt: started.toISOString(),
  seconds: (Date.now() - started.getTime()) / 1000,
  quick: args.quick,
  load: [load0, loadavg()],
  markdown: md,
  targets,
  data: { windowSeconds: WINDOW_S, settleSeconds: SETTLE_S, windows: Object.fromEntries(results) },
});
process.exit(0);
