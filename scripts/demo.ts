/**
 * The main job: `npm run demo [-- --seconds N]`.
 *
 * Starts an embedded PostgreSQL (or uses DATABASE_URL, in a schema of its
 * own), migrates, runs three worker processes sharing six consumers, appends
 * events continuously (some appends roll back), kills one worker with SIGKILL
 * midway and restarts it later, shows a live view, and ends with a checked
 * summary: every committed event processed exactly once by every consumer
 * whose scope matches it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import postgres from "postgres";
import { migrate, readStatus } from "../src/mod.ts";
import { createStore } from "../src/store/mod.ts";
import { startDatabase } from "./database.ts";
import { tsCommand } from "./runtime.ts";

const argv = process.argv.slice(2);
const secondsArg = argv.indexOf("--seconds");
const seconds = secondsArg >= 0 ? Number(argv[secondsArg + 1]) : 30;
if (!Number.isFinite(seconds) || seconds < 5) {
  console.error("usage: npm run demo [-- --seconds N]   (N >= 5)");
  process.exit(2);
}
const out = (s: string) => process.stdout.write(s + "\n");
const tty = process.stdout.isTTY === true;

const db = await startDatabase((m) => out(m), { embeddedOnly: true });
const schema = process.env.DATABASE_URL ? `sluice_demo_${process.pid}` : "sluice_demo";
const channel = `${schema}_events`;
const sql = postgres(db.url, { onnotice: () => {}, max: 6 });
const S = `"${schema}"`;
const children = new Map<string, { proc: ChildProcess; workerId?: string }>();
let cleaned = false;

async function cleanup(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  for (const c of children.values()) c.proc.kill("SIGKILL");
  if (process.env.DATABASE_URL) await sql.unsafe(`drop schema if exists ${S} cascade`).catch(() => {});
  await sql.end({ timeout: 5 }).catch(() => {});
  await db.stop();
}

let interrupted = false;
process.on("SIGINT", () => {
  interrupted = true;
});

try {
  out(`sluice demo: ${seconds} s, PostgreSQL ${db.embedded ? "embedded" : "from DATABASE_URL"}, schema ${schema}`);
  await migrate(sql, { tables: { schema }, logger: { debug() {}, info() {}, warn() {}, error() {} } });
  await sql.unsafe(`
    create table ${S}.processed (consumer text not null, event_id uuid not null, position bigint not null, worker text not null);
    create table ${S}.account_balances (account_id text primary key, balance numeric not null, events int not null);
    create table ${S}.outbox (event_id uuid primary key, topic text not null, created_at timestamptz not null default now());
    create table ${S}.event_stats (event_type text primary key, n int not null);
  `);
  const store = createStore(sql, { tables: { schema }, notifyChannel: channel });

  const startWorker = (label: string): Promise<void> => {
    const c = tsCommand("scripts/demo-worker.ts", [JSON.stringify({ url: db.url, schema, label, channel })]);
    const proc = spawn(c.cmd, c.args, { stdio: ["ignore", "pipe", "inherit"] });
    const entry: { proc: ChildProcess; workerId?: string } = { proc };
    children.set(label, entry);
    return new Promise((resolve, reject) => {
      proc.once("exit", (code) => reject(new Error(`worker ${label} exited early (${code})`)));
      createInterface({ input: proc.stdout! }).on("line", (line) => {
        try {
          const m = JSON.parse(line) as { ready?: boolean; workerId?: string };
          if (m.ready) {
            entry.workerId = m.workerId;
            resolve();
          }
        } catch { /* not ours */ }
      });
    });
  };
  await Promise.all(["w1", "w2", "w3"].map(startWorker));
  for (const c of children.values()) c.proc.removeAllListeners("exit");

  // Appender: random accounts and orders; every tenth append rolls back.
  let appended = 0;
  let rolledBack = 0;
  let appending = true;
  const appender = (async () => {
    let n = 0;
    while (appending) {
      n++;
      const kind = n % 3 === 0 ? "Order" : "Account";
      const id = `${kind.toLowerCase()}-${n % 40}`;
      const events = Array.from({ length: 1 + (n % 3) }, (_, i) => ({
        aggregateType: kind,
        aggregateId: id,
        eventType: kind === "Account" ? (i % 2 ? "Withdrawn" : "Deposited") : "Placed",
        boundedContext: n % 5 === 0 ? "billing" : "core",
        payload: { amount: (n % 7) + i, note: "demo" },
      }));
      try {
        await sql.begin(async (tx) => {
          await store.append(tx, events, { expectedVersion: "any" });
          if (n % 10 === 0) throw new Error("rollback");
        });
        appended += events.length;
      } catch {
        rolledBack += events.length;
      }
      await new Promise((r) => setTimeout(r, 15));
    }
  })();

  const started = Date.now();
  const killAt = started + seconds * 400;
  const restartAt = started + seconds * 700;
  let killed: { label: string; workerId: string; at: number; consumers: string[]; checkpoints: Map<string, bigint> } | undefined;
  let failoverMs: number | undefined;
  let restarted = false;
  const lastCounts = new Map<string, number>();

  while (Date.now() - started < seconds * 1000 && !interrupted) {
    await new Promise((r) => setTimeout(r, 1000));
    const st = await readStatus(sql, { tables: { schema } });
    const counts = new Map((await sql.unsafe(`select consumer, count(*)::int as n from ${S}.processed group by 1`)).map((r) => [r.consumer as string, r.n as number]));
    const labelOf = (id: string | null) => [...children.entries()].find(([, c]) => c.workerId === id)?.[0] ?? (id ? id.slice(0, 8) : "-");
    if (!killed && Date.now() >= killAt) {
      // SIGKILL the worker that owns the most consumers.
      const owners = new Map<string, string[]>();
      for (const c of st.consumers) if (c.owner) owners.set(c.owner, [...(owners.get(c.owner) ?? []), c.name]);
      const [victim, consumers] = [...owners.entries()].sort((a, b) => b[1].length - a[1].length)[0]!;
      const label = labelOf(victim);
      children.get(label)!.proc.kill("SIGKILL");
      killed = { label, workerId: victim, at: Date.now(), consumers, checkpoints: new Map(st.consumers.map((c) => [c.name, c.checkpoint])) };
      out(`>>> kill -9 ${label}: it owned ${consumers.join(", ")}`);
    }
    if (killed && failoverMs === undefined) {
      const moved = killed.consumers.every((name) => {
        const c = st.consumers.find((x) => x.name === name)!;
        return c.owner !== null && c.owner !== killed!.workerId && c.checkpoint > killed!.checkpoints.get(name)!;
      });
      if (moved) {
        failoverMs = Date.now() - killed.at;
        out(`>>> ${killed.label}'s consumers moved and progressed within ${(failoverMs / 1000).toFixed(1)} s (measured at 1 s resolution)`);
      }
    }
    if (killed && !restarted && Date.now() >= restartAt) {
      restarted = true;
      await startWorker(killed.label);
      out(`>>> restarted ${killed.label}`);
    }
    const lines = [`t=${Math.round((Date.now() - started) / 1000)}s  head ${st.head}  appended ${appended}  rolled back ${rolledBack}`];
    lines.push("workers:");
    for (const w of st.workers) {
      lines.push(`  ${labelOf(w.workerId).padEnd(4)} ${w.workerId.slice(0, 8)} ${w.leader ? "LEADER" : "      "} heartbeat ${(w.heartbeatAgeMs / 1000).toFixed(1)}s ${w.alive ? "alive" : "DEAD"}`);
    }
    lines.push("consumers:        owner  checkpoint    lag  events/s");
    for (const c of st.consumers) {
      const n = counts.get(c.name) ?? 0;
      const rate = n - (lastCounts.get(c.name) ?? 0);
      lastCounts.set(c.name, n);
      lines.push(`  ${c.name.padEnd(15)} ${labelOf(c.owner).padEnd(5)} ${String(c.checkpoint).padStart(10)} ${String(c.lag).padStart(6)} ${String(rate).padStart(9)}`);
    }
    lines.push(`gap passes: ${st.gapPasses.map((g) => `${g.reason} ${g.count}`).join(", ") || "none"}`);
    if (tty) out("\x1b[2J\x1b[H" + lines.join("\n"));
    else if (Math.round((Date.now() - started) / 1000) % 5 === 0) out(lines.join("\n"));
  }

  appending = false;
  await appender;
  out("stopping appends; waiting for every consumer to reach the head...");
  const head = (await readStatus(sql, { tables: { schema } })).head;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const st = await readStatus(sql, { tables: { schema } });
    if (st.consumers.every((c) => c.checkpoint >= head)) break;
    if (Date.now() > deadline) throw new Error("consumers did not catch up within 30 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const c of children.values()) c.proc.kill("SIGTERM");
  await Promise.all([...children.values()].map((c) => new Promise((r) => c.proc.exitCode !== null ? r(null) : c.proc.once("exit", r))));

  // Check every consumer against the events its scope selects.
  const scopes: Record<string, string> = {
    balances: "aggregate_type = 'Account'",
    account_audit: "aggregate_type = 'Account'",
    orders: "aggregate_type = 'Order'",
    billing: "bounded_context = 'billing'",
    outbox: "true",
    stats: "true",
  };
  out("\nsummary");
  out(`  events appended ${appended}, rolled back ${rolledBack}, committed positions up to ${head}`);
  let bad = 0;
  for (const [name, where] of Object.entries(scopes)) {
    const [r] = await sql.unsafe(
      `select (select count(*)::int from ${S}.events e where ${where}) as expected,
         (select count(*)::int from ${S}.processed p where p.consumer = $1) as processed,
         (select count(*)::int from ${S}.events e where ${where}
            and not exists (select 1 from ${S}.processed p where p.consumer = $1 and p.event_id = e.event_id)) as missing,
         (select count(*)::int - count(distinct event_id)::int from ${S}.processed p where p.consumer = $1) as duplicates`,
      [name],
    );
    bad += r!.missing + r!.duplicates;
    out(`  ${name.padEnd(14)} expected ${String(r!.expected).padStart(6)}  processed ${String(r!.processed).padStart(6)}  missing ${r!.missing}  duplicates ${r!.duplicates}`);
  }
  const gaps = (await readStatus(sql, { tables: { schema } })).gapPasses;
  out(`  gap passes: ${gaps.map((g) => `${g.reason} ${g.count}`).join(", ") || "none"}`);
  out(`  failover after kill -9: ${failoverMs === undefined ? "not measured" : `${(failoverMs / 1000).toFixed(1)} s`}`);
  out(bad === 0 ? "OK: every committed event was processed exactly once by every consumer" : `FAILED: ${bad} missing or duplicate`);
  await cleanup();
  process.exit(bad === 0 ? 0 : 1);
} catch (e) {
  console.error(e);
  await cleanup();
  process.exit(1);
}
