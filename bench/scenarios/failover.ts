/**
 * Scenario 4: failover. Three worker processes share six consumers, with
 * default settings (poll dispatcher, coordination tick every second); an
 * appender adds one event every 20 ms (the load). Each trial kills (kill -9)
 * the process owning consumers (alternately the leader and a non-leader),
 * and measures, for each consumer it owned, the time from the kill to that
 * consumer's next committed batch in another process (reported by the
 * processes themselves: commit times on the same clock). A standby process,
 * spawned beforehand, then joins and the trial waits for the consumers to
 * be balanced again.
 *
 * The raw twin: three processes of raw loops where each consumer's loop first
 * takes a session advisory lock (blocking) on its own connection, the
 * hand-written owner/standby scheme; the owner of c0 is killed.
 *
 *   node --import tsx bench/scenarios/failover.ts [--quick] [--trials 20] [--json out.json]
 */
import { readStatus } from "../../src/coordination/status.ts";
import { createStore } from "../../src/store/mod.ts";
import { finish, num, parseArgs, progress, type Target } from "../lib/args.ts";
import { type Child, start } from "../lib/child.ts";
import { connect, scratch, silent } from "../lib/db.ts";
import { loadavg } from "../lib/env.ts";
import { createBenchTables, now } from "../lib/raw.ts";
import { fixed, int, latency, table } from "../lib/stats.ts";

const args = parseArgs();
const TRIALS = num(args.argv, "trials") ?? (args.quick ? 3 : 20);
const CONSUMERS = Array.from({ length: 6 }, (_, i) => `c${i}`);
const APPEND_EVERY_MS = 20;
const started = new Date();
const load0 = loadavg();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Trial {
  victimWasLeader: boolean;
  consumers: number;
  /** ms from the kill to each moved consumer's next commit elsewhere. */
  perConsumer: number[];
  /** ms until all of them had committed elsewhere. */
  all: number;
}
const trials: { sluice: Trial[]; raw: Trial[] } = { sluice: [], raw: [] };

const db = await scratch("failover", args.url);
const sql = connect(db.url, { max: 4 });
let appending = true;
let appended = 0;
const appender = (async () => {
  const store = createStore(sql, { logger: silent });
  while (appending) {
    await store.append(sql, [{ aggregateType: "Load", aggregateId: "load", eventType: "Ticked", payload: { n: appended } }], { expectedVersion: "any" })
      .then(() => appended++, () => {});
    await sleep(APPEND_EVERY_MS);
  }
})();
const all: Child[] = [];
try {
  await createBenchTables(db.sql);

  /** The first commit, after `after`, of `consumer` by a process other than `victim`. */
  const commitElsewhere = (children: Child[], victim: Child, consumer: string, after: number): number | undefined => {
    let best: number | undefined;
    for (const c of children) {
      if (c === victim) continue;
      for (let i = c.lines.length - 1; i >= 0; i--) {
        const l = c.lines[i]!;
        if (l.c !== consumer) continue;
        if ((l.at as number) <= after) break;
        best = Math.min(best ?? Infinity, l.at as number);
      }
    }
    return best;
  };
  const waitMoved = async (children: Child[], victim: Child, consumers: string[], tKill: number): Promise<number[]> => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const at = consumers.map((c) => commitElsewhere(children, victim, c, tKill));
      if (at.every((x) => x !== undefined)) return at.map((x) => x! - tKill);
      if (Date.now() > deadline) throw new Error(`consumers ${consumers} did not move within 60 s`);
      await sleep(5);
    }
  };

  // --- sluice ---
  {
    const spawnWorker = (label: string): Child => {
      const c = start("node", "bench/lib/worker-child.ts", [JSON.stringify({ url: db.url, label, consumers: CONSUMERS, waitGo: true })]);
      all.push(c);
      return c;
    };
    const go = async (c: Child): Promise<string> => {
      await c.waitLine((l) => l.loaded === true);
      c.proc.stdin!.write("go\n");
      return (await c.waitLine((l) => l.ready === true)).workerId as string;
    };
    const live: Child[] = [];
    const ids = new Map<Child, string>();
    for (const label of ["w1", "w2", "w3"]) {
      const c = spawnWorker(label);
      ids.set(c, await go(c));
      live.push(c);
    }
    let standby = spawnWorker("w4");
    for (let t = 0; t < TRIALS; t++) {
      // Balanced: every live worker owns two consumers.
      const deadline = Date.now() + 60_000;
      let owners: Map<string, string[]>;
      for (;;) {
        const rows = await sql`select consumer_name as c, worker_id::text as w from sluice.consumer_assignments`;
        owners = new Map();
        for (const r of rows) if (r.w) owners.set(r.w as string, [...(owners.get(r.w as string) ?? []), r.c as string]);
        if (owners.size === 3 && [...owners.values()].every((x) => x.length === 2) && [...owners.keys()].every((w) => [...ids.values()].includes(w))) break;
        if (Date.now() > deadline) throw new Error(`not balanced within 60 s: ${JSON.stringify([...owners])}`);
        await sleep(50);
      }
      await sleep(500); // let every consumer commit at its new owner first
      const st = await readStatus(sql);
      const leader = st.workers.find((w) => w.leader)?.workerId;
      const wantLeader = t % 2 === 0;
      const victim = live.find((c) => (ids.get(c) === leader) === wantLeader)!;
      const owned = owners.get(ids.get(victim)!) ?? [];
      const tKill = now();
      victim.proc.kill("SIGKILL");
      const times = await waitMoved(all, victim, owned, tKill);
      trials.sluice.push({ victimWasLeader: ids.get(victim) === leader, consumers: owned.length, perConsumer: times, all: Math.max(...times) });
      progress(`4 sluice trial ${t + 1}: killed ${wantLeader ? "the leader" : "a non-leader"}; ${owned.join(",")} committed elsewhere after ${times.map((x) => int(x)).join(", ")} ms`);
      await victim.exited;
      live.splice(live.indexOf(victim), 1);
      ids.set(standby, await go(standby));
      live.push(standby);
      standby = spawnWorker(`w${5 + t}`);
    }
    for (const c of [...live, standby]) c.proc.kill("SIGTERM");
    await Promise.all([...live, standby].map((c) => c.exited));
  }

  // --- raw ---
  {
    const spawnRaw = (label: string): Child => {
      const c = start("node", "bench/lib/raw-child.ts", [JSON.stringify({
        url: db.url,
        label,
        consumers: CONSUMERS,
        batchSize: 100,
        wake: "notify",
        pollMs: 1000,
        lock: true,
      })]);
      all.push(c);
      return c;
    };
    const live: Child[] = [];
    for (const label of ["r1", "r2", "r3"]) {
      const c = spawnRaw(label);
      await c.waitLine((l) => l.ready === true);
      live.push(c);
    }
    const ownerOf = (consumer: string): Child | undefined => {
      let best: { c: Child; at: number } | undefined;
      for (const c of live) {
        for (const l of c.lines) if (l.owns === consumer && (!best || (l.at as number) > best.at)) best = { c, at: l.at as number };
      }
      return best?.c;
    };
    for (let t = 0; t < TRIALS; t++) {
      const deadline = Date.now() + 30_000;
      while (!CONSUMERS.every((c) => ownerOf(c))) {
        if (Date.now() > deadline) throw new Error("raw: consumers without an owner");
        await sleep(20);
      }
      await sleep(300);
      const victim = ownerOf("c0")!;
      const owned = CONSUMERS.filter((c) => ownerOf(c) === victim);
      const tKill = now();
      victim.proc.kill("SIGKILL");
      const times = await waitMoved(all, victim, owned, tKill);
      trials.raw.push({ victimWasLeader: false, consumers: owned.length, perConsumer: times, all: Math.max(...times) });
      progress(`4 raw trial ${t + 1}: ${owned.join(",")} committed elsewhere after ${times.map((x) => int(x)).join(", ")} ms`);
      await victim.exited;
      live.splice(live.indexOf(victim), 1);
      const r = spawnRaw(`r${4 + t}`);
      await r.waitLine((l) => l.ready === true);
      live.push(r);
    }
    for (const c of live) c.proc.kill("SIGTERM");
    await Promise.all(live.map((c) => c.exited));
  }
} finally {
  for (const c of all) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
  appending = false;
  await appender;
  await sql.end({ timeout: 5 });
  await db.drop();
}

const row = (label: string, xs: number[]) => {
  const l = latency(xs);
  return [label, String(l.n), int(l.p50), int(l.p95), int(l.max), int(l.mean)];
};
const sc = trials.sluice.flatMap((t) => t.perConsumer);
const rc = trials.raw.flatMap((t) => t.perConsumer);
const rows = [
  row("sluice, per moved consumer", sc),
  row("sluice, per trial (all its consumers moved)", trials.sluice.map((t) => t.all)),
  row("sluice, leader killed (per consumer)", trials.sluice.filter((t) => t.victimWasLeader).flatMap((t) => t.perConsumer)),
  row("sluice, non-leader killed (per consumer)", trials.sluice.filter((t) => !t.victimWasLeader).flatMap((t) => t.perConsumer)),
  row("raw advisory-lock standby, per moved consumer", rc),
  row("raw, per trial", trials.raw.map((t) => t.all)),
];
const p95 = latency(sc).p95;
const targets: Target[] = [{ name: "4 failover p95 (per moved consumer)", goal: "<= 3000 ms", measured: `${int(p95)} ms`, met: p95 <= 3000 }];
const md = `${TRIALS} kill -9 trials per system; 3 worker processes, 6 consumers, an append every ${APPEND_EVERY_MS} ms; sluice with default settings ` +
  `(poll dispatcher every 200 ms, coordination tick every 1 s, heartbeat 5 s); trials alternate killing the leader and a non-leader. ` +
  `Time in ms from the kill to the consumer's next committed batch in another process.\n\n` +
  table(["series", "samples", "p50", "p95", "max", "mean"], rows);

finish(args, {
  id: "4",
  title: "Failover after kill -9 of the owner",
  startedAt: started.toISOString(),
  seconds: (Date.now() - started.getTime()) / 1000,
  quick: args.quick,
  load: [load0, loadavg()],
  markdown: md,
  targets,
  data: { trials: TRIALS, appendEveryMs: APPEND_EVERY_MS, appended, ...trials },
});
process.exit(0);
