/**
 * Scenario 5: dead-gap stall. Each trial leaves a hole behind a committed
 * event: transaction A appends (draws position P) and stays open, B appends
 * and commits (P+1), then A rolls back. The consumers are caught up and
 * idle; each measures the time from A's rollback (the moment the hole is
 * dead) to P+1 being in its hands, i.e. how long it waited at the dead hole.
 *
 * Consumers, all following the same log at once (so they see the same holes):
 * - sluice, default settings (poll dispatcher 200 ms, provenGapMinAgeMs 250, batchPauseMs 200);
 * - sluice, dispatcher "notify", other settings default;
 * - raw, gap-safe: polls every 10 ms, stops at a hole and passes it once the
 *   snapshot's xmin has reached the xmax seen when the hole appeared.
 *
 *   node --import tsx bench/scenarios/deadgap.ts [--quick] [--trials 10] [--json out.json]
 */
import { randomUUID } from "node:crypto";
import { createStore } from "../../src/store/mod.ts";
import { createWorker, type Worker } from "../../src/worker.ts";
import { finish, num, parseArgs, progress, type Target } from "../lib/args.ts";
import { connect, scratch, silent } from "../lib/db.ts";
import { loadavg } from "../lib/env.ts";
import { createBenchTables, now, rawFollow } from "../lib/raw.ts";
import { fixed, int, latency, table } from "../lib/stats.ts";

const args = parseArgs();
const TRIALS = num(args.argv, "trials") ?? (args.quick ? 3 : 10);
const started = new Date();
const load0 = loadavg();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const KEYS = ["sluice-poll", "sluice-notify", "raw-gapsafe"] as const;
type Key = (typeof KEYS)[number];
const LABELS: Record<Key, string> = {
  "sluice-poll": "sluice, default settings (poll dispatcher)",
  "sluice-notify": 'sluice, dispatcher "notify"',
  "raw-gapsafe": "raw gap-safe loop, polling every 10 ms",
};
const seen: Record<Key, Map<bigint, number>> = { "sluice-poll": new Map(), "sluice-notify": new Map(), "raw-gapsafe": new Map() };
const stalls: Record<Key, number[]> = { "sluice-poll": [], "sluice-notify": [], "raw-gapsafe": [] };
const sinceCommit: Record<Key, number[]> = { "sluice-poll": [], "sluice-notify": [], "raw-gapsafe": [] };
let skips: { reason: string; n: number }[] = [];

const db = await scratch("deadgap", args.url);
const sql = connect(db.url, { max: 4 });
const pools = KEYS.map(() => connect(db.url, { max: 6 }));
const ctl = new AbortController();
const workers: Worker[] = [];
const loops: Promise<void>[] = [];
try {
  await createBenchTables(db.sql);
  const store = createStore(sql, { logger: silent });
  const ev = (id: string) => [{ aggregateType: "Gap", aggregateId: id, eventType: "Happened", payload: { id } }];
  await store.append(sql, ev("warmup"), { expectedVersion: "any" });
  // Consumers.
  for (const [i, key] of (["sluice-poll", "sluice-notify"] as const).entries()) {
    const w = createWorker({
      sql: pools[i]!,
      consumers: [{ name: `gap_${key}` }],
      ...(key === "sluice-notify" ? { dispatcher: "notify" as const } : {}),
      logger: silent,
    });
    workers.push(w);
    loops.push((async () => {
      for await (const batch of w.assigned()) {
        const t = now();
        for (const e of batch.events) seen[key].set(e.globalPosition, t);
      }
    })());
  }
  loops.push(rawFollow(pools[2]!, {
    name: `gap_raw_${randomUUID().slice(0, 6)}`,
    batchSize: 100,
    kind: "a",
    pollMs: 10,
    signal: ctl.signal,
    gapSafe: true,
    onRead: (rows) => {
      const t = now();
      for (const r of rows) seen["raw-gapsafe"].set(BigInt(r.global_position), t);
    },
  }));
  const caughtUp = async (p: bigint) => {
    const deadline = Date.now() + 15_000;
    while (!KEYS.every((k) => seen[k].has(p))) {
      if (Date.now() > deadline) throw new Error(`consumers did not reach ${p}: ${KEYS.filter((k) => !seen[k].has(p))}`);
      await sleep(10);
    }
  };
  const w0 = await store.append(sql, ev("start"), { expectedVersion: "any" });
  await caughtUp(w0.lastPosition);

  for (let t = 1; t <= TRIALS; t++) {
    await sleep(500); // idle
    const a = await sql.reserve();
    let rolledBackAt = 0;
    let p1: bigint;
    let committedAt: number;
    try {
      await a`begin`;
      const hole = await store.append(a as never, ev(`a${t}`), { expectedVersion: "any" });
      const b = await store.append(sql, ev(`b${t}`), { expectedVersion: "any" });
      committedAt = now();
      p1 = b.lastPosition;
      if (p1 !== hole.lastPosition + 1n) progress(`5 trial ${t}: positions ${hole.lastPosition} and ${p1} are not adjacent`);
      await a`rollback`;
      rolledBackAt = now();
    } finally {
      a.release();
    }
    await caughtUp(p1);
    for (const k of KEYS) {
      stalls[k].push(seen[k].get(p1)! - rolledBackAt);
      sinceCommit[k].push(seen[k].get(p1)! - committedAt);
    }
    progress(`5 trial ${t}: stall after the rollback ${KEYS.map((k) => `${k} ${int(stalls[k].at(-1)!)} ms`).join(", ")}`);
  }
  skips = (await sql`select reason, count(*)::int as n from sluice.consumer_gap_skips group by 1 order by 1`).map((r) => ({ reason: r.reason as string, n: r.n as number }));
} finally {
  ctl.abort();
  await Promise.all(workers.map((w) => w.stop()));
  await Promise.all(loops.map((l) => l.catch(() => {})));
  await Promise.all([sql, ...pools].map((p) => p.end({ timeout: 5 })));
  await db.drop();
}

const rows = KEYS.map((k) => {
  const l = latency(stalls[k]);
  const c = latency(sinceCommit[k]);
  return [LABELS[k], String(l.n), int(l.p50), int(l.p95), int(l.max), int(l.mean), int(c.p50)];
});
// A trial where the raw gap-safe loop (the limit) also waited > 100 ms was held up by a transaction
// elsewhere on the server (xids and snapshots are cluster-wide; other test suites share this server).
const disturbed = stalls["raw-gapsafe"].map((x) => x > 100);
const sluiceStalls = [...stalls["sluice-poll"], ...stalls["sluice-notify"]];
const over = (k: Key) => stalls[k].map((x, i) => ({ x, i })).filter((e) => e.x > 1000);
const overAll = [...over("sluice-poll"), ...over("sluice-notify")];
const unexplained = overAll.filter((e) => !disturbed[e.i]);
const clean = (k: Key) => stalls[k].filter((_, i) => !disturbed[i]);
const cleanMax = Math.max(...clean("sluice-poll"), ...clean("sluice-notify"));
const targets: Target[] = [{
  name: "5 dead-gap stall (sluice, both dispatchers)",
  goal: "<= 1000 ms",
  measured: `p50 ${int(latency(sluiceStalls).p50)} ms, worst ${int(Math.max(...sluiceStalls))} ms; worst of the ${disturbed.filter((d) => !d).length} trials ` +
    `the raw limit passed at once: ${int(cleanMax)} ms; ${overAll.length} stall(s) over 1 s, ${unexplained.length} not explained by a foreign transaction`,
  met: unexplained.length === 0 && latency(sluiceStalls).p50 <= 1000,
}];
const md = `${TRIALS} trials; the three consumers follow the same log concurrently (one process). Stall: ms from the rollback of the ` +
  `transaction that drew the missing position to the next event (committed just before the rollback) being in the consumer's hands. ` +
  `Gap passes recorded by sluice: ${skips.map((s) => `${s.reason} ${s.n}`).join(", ") || "none"} (two consumers x trials).\n\n` +
  table(["consumer", "trials", "p50", "p95", "max", "mean", "p50 from B's commit"], rows) +
  `\n\nPer trial (ms after the rollback; * = the raw loop also waited > 100 ms, i.e. a transaction elsewhere on the server held the proof):\n\n` +
  table(["trial", ...KEYS.map((k) => LABELS[k])], stalls["raw-gapsafe"].map((_, i) => [`${i + 1}${disturbed[i] ? " *" : ""}`, ...KEYS.map((k) => int(stalls[k][i]!))]));

finish(args, {
  id: "5",
  title: "Dead-gap stall (hole left by a rolled-back append)",
  startedAt: started.toISOString(),
  seconds: (Date.now() - started.getTime()) / 1000,
  quick: args.quick,
  load: [load0, loadavg()],
  markdown: md,
  targets,
  data: { trials: TRIALS, stalls, sinceCommit, skips, disturbed },
});
void fixed;
process.exit(0);
