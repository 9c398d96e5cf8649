/**
 * A consumer woken from idle by an events NOTIFY reads its window inside the
 * batch's transaction, fenced in the same statement (`fencedProbe`), and
 * hands that transaction to a waiting loop. These tests pin the statement
 * (same window as a probe, locks, timeouts) and every way the path can end
 * other than "batch yielded": paused, rewound, blocked by a hole, a pool of
 * one connection, and a worker stopping while the statement waits.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type postgres from "postgres";
import type { Worker } from "../../src/mod.ts";
import { resolveTableNames } from "../../src/db/names.ts";
import { fencedProbe, probe } from "../../src/consumption/statements.ts";
import { createTestDatabase, holds, type TestDatabase, waitFor } from "../support/db.ts";
import { head, holdAppend, insertEvents, type RawEvent } from "../support/events.ts";
import { checkpoint, testWorker } from "../support/worker.ts";

const CHANNEL = "sluice_direct_test";
const t = resolveTableNames();
/** Only a NOTIFY wakes an idle consumer here (idle polls every 60 s, ticks every second). */
const notifyOnly = {
  dispatcher: "notify",
  notifyChannel: CHANNEL,
  dispatcherIntervalMs: 600_000,
  pollIntervalMs: 60_000,
  maxPollIntervalMs: 60_000,
  heartbeatIntervalMs: 1_000,
  heartbeatTimeoutMs: 5_000,
  rebalanceIntervalMs: 1_000,
} as const;
const FENCED = "/* fenced */";
/** The separate fence a loop sends when it opens a prepared batch. */
const FENCE = "as owner, a.paused, c.last_position::text as cp";

let db: TestDatabase;
/** Positions each consumer's handler was given (outside any transaction: rollbacks do not erase them). */
const yielded = new Map<string, bigint[]>();
const workers: { worker: Worker; done: Promise<void> }[] = [];

before(async () => {
  db = await createTestDatabase("direct_wake");
  await db.sql`create table handled (consumer text, position bigint, n int not null default 1, primary key (consumer, position))`;
});
after(async () => {
  await stopAll();
  await db?.drop();
});

async function stopAll(): Promise<void> {
  await Promise.all(workers.splice(0).map(async (w) => {
    await w.worker.stop();
    await w.done;
  }));
}

/** Appends and commits events with a NOTIFY on the test channel (what the store does). */
async function appendNotify(events: RawEvent[] | number): Promise<bigint[]> {
  const list = typeof events === "number" ? Array.from({ length: events }, () => ({})) : events;
  return (await db.sql.begin(async (tx) => {
    const ps = await insertEvents(tx, list);
    await tx`select pg_notify(${CHANNEL}, ${ps.at(-1)!.toString()})`;
    return ps;
  })) as bigint[];
}

/** A client that counts the statements it sends whose text includes each marker. */
function countingClient(options: postgres.Options<Record<string, never>> = {}): { sql: postgres.Sql; count: (marker: string) => number } {
  const seen: string[] = [];
  const sql = db.client({ ...options, debug: (_c: number, q: string) => void seen.push(q) });
  return { sql, count: (m) => seen.filter((q) => q.includes(m)).length };
}

function start(sql: postgres.Sql, consumer: string): Worker {
  const worker = testWorker(sql, { consumers: [{ name: consumer }], ...notifyOnly });
  const done = worker.run(async (batch) => {
    yielded.set(batch.consumer, [...(yielded.get(batch.consumer) ?? []), ...batch.events.map((e) => e.globalPosition)]);
    for (const e of batch.events) {
      await batch.tx`insert into handled (consumer, position) values (${batch.consumer}, ${e.globalPosition.toString()})
        on conflict (consumer, position) do update set n = handled.n + 1`;
    }
  });
  workers.push({ worker, done: done.catch(() => {}) });
  return worker;
}

async function idleAt(w: Worker, consumer: string, at: bigint): Promise<void> {
  await waitFor(`${consumer} idle at ${at}`, () => {
    const s = w.status().consumers.find((c) => c.name === consumer);
    return s?.state === "idle" && s.checkpoint === at;
  });
}

async function handled(consumer: string): Promise<Map<bigint, number>> {
  const rows = await db.sql`select position::text as p, n from handled where consumer = ${consumer}`;
  return new Map(rows.map((r) => [BigInt(r.p as string), r.n as number]));
}

describe("fencedProbe", () => {
  it("reads the same window as a probe, with the fence's owner, pause flag and the locked checkpoint", async () => {
    await db.sql`insert into sluice.worker_nodes (worker_id) values ('00000000-0000-4000-8000-000000000001') on conflict do nothing`;
    await db.sql`insert into sluice.consumer_assignments (consumer_name, worker_id) values ('fp', '00000000-0000-4000-8000-000000000001')`;
    const base = await head(db.sql);
    await db.sql`insert into sluice.consumer_checkpoints (consumer_name, last_position) values ('fp', ${base.toString()})`;
    await appendNotify([{ aggregateType: "A", payload: { x: 1 } }, { aggregateType: "B", boundedContext: "ctx" }, { aggregateType: "A" }]);
    for (const scope of [{ aggregateTypes: [], boundedContexts: [] }, { aggregateTypes: ["A"], boundedContexts: [] }, { aggregateTypes: ["B"], boundedContexts: ["ctx"] }]) {
      const plain = await probe(db.sql, t, base, 2, scope, "fp");
      const fenced = (await db.sql.begin((tx) => fencedProbe(tx, t, { checkpoint: base, limit: 2, scope, consumer: "fp", statementTimeoutMs: 7_000 }))) as Awaited<ReturnType<typeof fencedProbe>>;
      assert.deepEqual(fenced.probe.positions, plain.positions);
      assert.deepEqual(fenced.probe.events, plain.events, `events for ${JSON.stringify(scope)}`);
      assert.equal(fenced.probe.stored, base);
      assert.equal(fenced.probe.complete, true);
      assert.ok(fenced.probe.snapshot);
      assert.deepEqual(fenced.fence, { owner: "00000000-0000-4000-8000-000000000001", paused: false, checkpoint: base });
    }
    await db.sql`update sluice.consumer_assignments set paused = true where consumer_name = 'fp'`;
    const paused = (await db.sql.begin((tx) => fencedProbe(tx, t, { checkpoint: base, limit: 10, scope: { aggregateTypes: [], boundedContexts: [] }, consumer: "fp", statementTimeoutMs: 7_000 }))) as Awaited<ReturnType<typeof fencedProbe>>;
    assert.equal(paused.fence?.paused, true);
    const none = (await db.sql.begin((tx) => fencedProbe(tx, t, { checkpoint: base, limit: 10, scope: { aggregateTypes: [], boundedContexts: [] }, consumer: "nobody", statementTimeoutMs: 7_000 }))) as Awaited<ReturnType<typeof fencedProbe>>;
    assert.equal(none.fence, undefined);
    assert.equal(none.probe.stored, undefined);
    assert.equal(none.probe.positions.length, 3, "the window does not depend on the fence row");
  });

  it("holds the consumer's rows locked and bounds the transaction's statements and idle waits", async () => {
    const other = db.client({ max: 1 });
    await db.sql.begin(async (tx) => {
      await fencedProbe(tx, t, { checkpoint: 0n, limit: 1, scope: { aggregateTypes: [], boundedContexts: [] }, consumer: "fp", statementTimeoutMs: 7_000 });
      const [s] = await tx`select current_setting('statement_timeout') as st, current_setting('idle_in_transaction_session_timeout') as it`;
      assert.deepEqual({ st: s!.st, it: s!.it }, { st: "7s", it: "8s" });
      for (const table of ["consumer_assignments", "consumer_checkpoints"]) {
        await assert.rejects(
          other.begin(async (o) => {
            await o`set local lock_timeout = '50ms'`;
            await o.unsafe(`select 1 from sluice.${table} where consumer_name = 'fp' for update`);
          }),
          (e: { code?: string }) => e.code === "55P03",
          `${table} row is locked`,
        );
      }
    });
    const [s] = await db.sql`select current_setting('statement_timeout') as st`;
    assert.equal(s!.st, "0", "the timeouts are local to the transaction");
  });

  it("rejects a timeout that is not a non-negative integer, before sending anything", async () => {
    await assert.rejects(
      db.sql.begin((tx) => fencedProbe(tx, t, { checkpoint: 0n, limit: 1, scope: { aggregateTypes: [], boundedContexts: [] }, consumer: "fp", statementTimeoutMs: 1.5 })),
      /statementTimeoutMs/,
    );
  });
});

describe("a consumer woken from idle", () => {
  it("gets its batch through the fenced probe, without a separate fence, exactly once", async () => {
    await stopAll();
    const c = countingClient();
    const w = start(c.sql, "direct");
    await w.caughtUp();
    const top = await head(db.sql);
    await idleAt(w, "direct", top);
    const fences = c.count(FENCE);
    const fenced = c.count(FENCED);
    for (let i = 0; i < 5; i++) {
      const [p] = await appendNotify(1);
      await waitFor(`event ${p} handled`, async () => (await handled("direct")).has(p!));
      await idleAt(w, "direct", p!);
    }
    assert.ok(c.count(FENCED) - fenced >= 5, `fenced probes: ${c.count(FENCED) - fenced}`);
    assert.equal(c.count(FENCE) - fences, 0, "no separate fence");
    const h = await handled("direct");
    assert.ok([...h.values()].every((n) => n === 1), "each event handled once");
    assert.equal(await checkpoint(db.sql, "direct"), await head(db.sql));
  });

  it("yields nothing when the consumer was paused under it, and resumes once unpaused", async () => {
    await stopAll();
    const w = start(db.sql, "paused");
    await w.caughtUp();
    await idleAt(w, "paused", await head(db.sql));
    const before = await checkpoint(db.sql, "paused");
    // Paused behind the leader's back: the wake's fence sees it first.
    await db.sql`update sluice.consumer_assignments set paused = true where consumer_name = 'paused'`;
    const [p] = await appendNotify(1);
    await holds(
      "nothing yielded, handled or advanced while paused",
      async () => !yielded.get("paused")?.includes(p!) && !(await handled("paused")).has(p!) && (await checkpoint(db.sql, "paused")) === before,
      1_500,
    );
    await db.sql`update sluice.consumer_assignments set paused = false where consumer_name = 'paused'`;
    await waitFor(`event ${p} handled after unpausing`, async () => (await handled("paused")).get(p!) === 1);
  });

  it("starts over from a checkpoint rewound while it was idle", async () => {
    await stopAll();
    const w = start(db.sql, "rewound");
    const [p1, p2] = await appendNotify(2);
    await waitFor("both handled", async () => (await handled("rewound")).has(p2!));
    await idleAt(w, "rewound", await head(db.sql));
    await db.sql`update sluice.consumer_checkpoints set last_position = ${(p1! - 1n).toString()} where consumer_name = 'rewound'`;
    const [p3] = await appendNotify(1);
    await waitFor("p1..p3 handled after the rewind", async () => {
      const h = await handled("rewound");
      return h.get(p1!) === 2 && h.get(p2!) === 2 && h.get(p3!) === 1;
    });
  });

  it("with a pool of one connection, waits on a hole and passes it without deadlock", async () => {
    await stopAll();
    const one = db.client({ max: 1 });
    const w = start(one, "pool1");
    await w.caughtUp();
    await idleAt(w, "pool1", await head(db.sql));
    const hole = await holdAppend(db.sql, 1);
    const [after] = await appendNotify(1);
    // Blocked on the open append: the hole is in the snapshot, so the runner
    // looks up other databases' transactions, which needs the connection the
    // wake's transaction held.
    await waitFor("blocked at the hole", () => w.status().consumers.find((x) => x.name === "pool1")?.blockedAt === hole.positions[0]);
    await hole.commit();
    await waitFor("both handled", async () => {
      const h = await handled("pool1");
      return h.get(hole.positions[0]!) === 1 && h.get(after!) === 1;
    });
    for (let i = 0; i < 3; i++) {
      const [p] = await appendNotify(2);
      await waitFor(`event ${p} handled`, async () => (await handled("pool1")).has(p!));
    }
    const rows = await db.sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and state = 'idle in transaction'`;
    assert.equal(rows[0]!.n, 0);
  });

  it("stopping while the wake's statement waits on the consumer's rows loses nothing", async () => {
    await stopAll();
    const w = start(db.sql, "stopping");
    await w.caughtUp();
    const at = await head(db.sql);
    await idleAt(w, "stopping", at);
    const locker = await db.sql.reserve();
    try {
      await locker`begin`;
      await locker`select 1 from sluice.consumer_checkpoints where consumer_name = 'stopping' for update`;
      const [p] = await appendNotify(1);
      await waitFor("the fenced probe waits on the lock", async () => {
        const [r] = await db.sql`select count(*)::int as n from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock' and query like ${"%" + FENCED + "%"}`;
        return r!.n > 0;
      });
      const entry = workers.pop()!;
      const stopped = entry.worker.stop().then(() => entry.done);
      await waitFor("the worker stopping", () => !entry.worker.status().running);
      await locker`rollback`;
      await stopped;
      assert.equal((await handled("stopping")).has(p!), false);
      assert.equal(yielded.get("stopping")?.includes(p!) ?? false, false, "the stopping worker never yielded it");
      assert.equal(await checkpoint(db.sql, "stopping"), at);
      const w2 = start(db.sql, "stopping");
      await waitFor(`event ${p} handled by the next worker`, async () => (await handled("stopping")).get(p!) === 1);
      await idleAt(w2, "stopping", p!);
    } finally {
      locker.release();
    }
  });
});
