/**
 * Append throughput: raw postgres.js inserts vs `store.append`, side by side,
 * on a scratch database (created and dropped by this script).
 *
 *   node --import tsx bench/append.ts [--seconds 2] [--runs 3] [--sync both|on|off]
 *
 * DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres) names
 * the server; the scratch database is created next to it.
 *
 * Scenarios (each run for --seconds, --runs times, interleaved):
 * - batch:  one transaction inserting 100 rows (raw: a multi-row INSERT in
 *           sql.begin; store: one append of 100 events to a new aggregate);
 * - single: one autocommit single-row insert (raw) vs an append of 1 event
 *           (store, exact expected version on the writer's own aggregate);
 * each on 1 connection and on 16 concurrent connections. The store runs with
 * its default NOTIFY and with `notifyChannel: false`.
 *
 * Everything runs twice: with the server's synchronous_commit (durable: the
 * commit waits for the WAL flush, so small transactions measure the disk),
 * and with synchronous_commit=off for the session (measures the statements,
 * not the flush). `--sync on|off` runs one of them.
 *
 * Note on NOTIFY: PostgreSQL serialises the commits of all transactions that
 * sent a NOTIFY (a database-wide lock held until the commit record is
 * flushed), so with many concurrent small appends the NOTIFY, not the insert,
 * sets the pace. Compare the "(no NOTIFY)" lines.
 */
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { migrate } from "../src/db/migrate.ts";
import { createStore, type EventStore, type NewEvent } from "../src/store/mod.ts";

const args = process.argv.slice(2);
const opt = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const SECONDS = opt("seconds", 2);
const RUNS = opt("runs", 3);
const BATCH = 100;
const SYNC = (() => {
  const i = args.indexOf("--sync");
  const v = i >= 0 ? args[i + 1] : "both";
  return v === "on" ? ["on"] : v === "off" ? ["off"] : ["on", "off"];
})();

const adminUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const dbName = `sluice_bench_${randomUUID().slice(0, 8)}`;
const url = (() => {
  const u = new URL(adminUrl);
  u.pathname = `/${dbName}`;
  return u.toString();
})();
const silent = { debug() {}, info() {}, warn() {}, error() {} };
const quiet = { onnotice: () => {} };

/** One unit of work: returns the number of events it wrote. */
type Op = () => Promise<number>;
/** Makes the op of one concurrent writer. */
type Scenario = { name: string; make: (writer: number) => Op };

const payload = (i: number) => ({ amount: i, currency: "EUR", note: "benchmark event", tags: ["a", "b"] });

function rawRow(aggregateId: string, version: number) {
  return {
    aggregate_type: "Bench",
    aggregate_id: aggregateId,
    aggregate_version: version,
    event_id: randomUUID(),
    event_type: "Deposited",
    event_version: 1,
    payload: payload(version),
  };
}

function scenarios(sql: postgres.Sql, store: EventStore, quietStore: EventStore): { group: string; list: Scenario[] }[] {
  const event = (aggregateId: string, i: number): NewEvent => ({
    aggregateType: "Bench",
    aggregateId,
    eventType: "Deposited",
    payload: payload(i),
  });
  const rawBatch: Scenario = {
    name: "raw INSERT 100 rows / tx",
    make: () => async () => {
      const id = randomUUID();
      const rows = Array.from({ length: BATCH }, (_, i) => rawRow(id, i + 1));
      await sql.begin((tx) => tx`insert into sluice.events ${tx(rows)}`);
      return BATCH;
    },
  };
  const storeBatch = (s: EventStore, label: string): Scenario => ({
    name: `store.append 100 events${label}`,
    make: () => async () => {
      const id = randomUUID();
      await s.append(sql, Array.from({ length: BATCH }, (_, i) => event(id, i)), { expectedVersion: "no-stream" });
      return BATCH;
    },
  });
  const rawSingle: Scenario = {
    name: "raw INSERT 1 row, autocommit",
    make: () => {
      const id = randomUUID();
      let version = 0;
      return async () => {
        const r = rawRow(id, ++version);
        await sql`insert into sluice.events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, event_version, payload)
          values (${r.aggregate_type}, ${r.aggregate_id}, ${r.aggregate_version}, ${r.event_id}, ${r.event_type}, ${r.event_version}, ${sql.json(r.payload)})`;
        return 1;
      };
    },
  };
  const storeSingle = (s: EventStore, label: string): Scenario => ({
    name: `store.append 1 event${label}`,
    make: () => {
      const id = randomUUID();
      let version = 0;
      return async () => {
        const r = await s.append(sql, [event(id, version)], { expectedVersion: version });
        version = r.version;
        return 1;
      };
    },
  });
  return [
    { group: "batch", list: [rawBatch, storeBatch(store, ""), storeBatch(quietStore, " (no NOTIFY)")] },
    { group: "single", list: [rawSingle, storeSingle(store, ""), storeSingle(quietStore, " (no NOTIFY)")] },
  ];
}

async function measure(s: Scenario, writers: number): Promise<number> {
  const ops = Array.from({ length: writers }, (_, w) => s.make(w));
  // Warm up: prepares the statements on the connections.
  await Promise.all(ops.map((op) => op()));
  const deadline = performance.now() + SECONDS * 1000;
  const start = performance.now();
  const counts = await Promise.all(ops.map(async (op) => {
    let n = 0;
    while (performance.now() < deadline) n += await op();
    return n;
  }));
  const elapsed = (performance.now() - start) / 1000;
  return counts.reduce((a, b) => a + b, 0) / elapsed;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (n: number): string => Math.round(n).toLocaleString("en-US").padStart(9);

async function bench(mode: string): Promise<void> {
  const sql = postgres(url, { ...quiet, max: 16, ...(mode === "off" ? { connection: { synchronous_commit: "off" } } : {}) });
  try {
    const [info] = await sql`select current_setting('synchronous_commit') as sc, current_setting('fsync') as fs`;
    console.log(`### synchronous_commit=${info!.sc} (fsync=${info!.fs})\n`);
    const store = createStore(sql, { logger: silent });
    const quietStore = createStore(sql, { notifyChannel: false, logger: silent });
    for (const { group, list } of scenarios(sql, store, quietStore)) {
      for (const writers of [1, 16]) {
        const results = list.map(() => [] as number[]);
        for (let run = 0; run < RUNS; run++) {
          for (let i = 0; i < list.length; i++) results[i]!.push(await measure(list[i]!, writers));
        }
        const raw = median(results[0]!);
        console.log(`${group}, ${writers} connection${writers > 1 ? "s" : ""}:`);
        list.forEach((s, i) => {
          const m = median(results[i]!);
          const runs = results[i]!.map((r) => Math.round(r)).join(" / ");
          const ratio = i === 0 ? "" : `  ${(m / raw * 100).toFixed(0)}% of raw`;
          console.log(`  ${s.name.padEnd(34)} ${fmt(m)} events/s  (runs ${runs})${ratio}`);
        });
        console.log("");
      }
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function main(): Promise<void> {
  const admin = postgres(adminUrl, { ...quiet, max: 1 });
  await admin.unsafe(`create database "${dbName}"`);
  try {
    const sql = postgres(url, { ...quiet, max: 1 });
    await migrate(sql, { logger: silent });
    const [info] = await sql`select version() as v`;
    await sql.end({ timeout: 5 });
    console.log(`${info!.v}\n${RUNS} runs x ${SECONDS}s per scenario, interleaved; the median is shown\n`);
    for (const mode of SYNC) await bench(mode);
  } finally {
    await admin.unsafe(`drop database if exists "${dbName}" with (force)`);
    await admin.end({ timeout: 5 });
  }
}

await main();
