import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createWorker, type Worker } from "../../src/mod.ts";
import { createTestDatabase, type TestDatabase, waitFor } from "../support/db.ts";
import { append, head } from "../support/events.ts";

const fast = {
  batchSize: 50,
  pollIntervalMs: 50,
  maxPollIntervalMs: 200,
  dispatcherIntervalMs: 50,
  heartbeatIntervalMs: 100,
  heartbeatTimeoutMs: 1_000,
  rebalanceIntervalMs: 200,
  batchPauseMs: 10,
  provenGapMinAgeMs: 50,
};
const silent = { debug() {}, info() {}, warn() {}, error() {} };

describe("worker: one worker, several consumers", () => {
  let db: TestDatabase;
  let worker: Worker;
  let loop: Promise<void>;
  const handled = new Map<string, bigint[]>();

  before(async () => {
    db = await createTestDatabase("worker_basic");
    await db.sql`create table handled (consumer text, position bigint, primary key (consumer, position))`;
    worker = createWorker({
      sql: db.sql,
      consumers: [
        { name: "all" },
        { name: "accounts", aggregateTypes: ["Account"] },
        { name: "orders", aggregateTypes: ["Order"] },
        { name: "billing", boundedContexts: ["billing"] },
        { name: "billing_orders", aggregateTypes: ["Order"], boundedContexts: ["billing"] },
      ],
      logger: silent,
      ...fast,
    });
    loop = (async () => {
      for await (const batch of worker.assigned()) {
        for (const e of batch.events) {
          assert.deepEqual(e.payload, { n: e.aggregateType });
          await batch.tx`insert into handled values (${batch.consumer}, ${e.globalPosition.toString()})`;
        }
      }
    })();
  });
  after(async () => {
    await worker?.stop();
    await loop;
    await db?.drop();
  });

  it("assigns every consumer to the lone worker at once", async () => {
    await waitFor("5 assignments", async () => {
      const [r] = await db.sql`select count(*)::int as n from sluice.consumer_assignments where worker_id = ${worker.id}`;
      return r!.n === 5;
    });
    assert.equal(worker.status().leader, true);
  });

  it("delivers scoped events (by aggregate type, by bounded context, by both) and moves every checkpoint to the head", async () => {
    const ev = (aggregateType: string, boundedContext: string | null = null) => ({ aggregateType, boundedContext, payload: { n: aggregateType } });
    await append(db.sql, [ev("Account"), ev("Account"), ev("Account")]);
    await append(db.sql, [ev("Order", "billing"), ev("Order", "sales"), ev("Invoice", "billing")]);
    const top = await head(db.sql);
    await waitFor("checkpoints at head", async () => {
      const rows = await db.sql`select last_position::text as p from sluice.consumer_checkpoints`;
      return rows.length === 5 && rows.every((r) => BigInt(r.p) === top);
    });
    const counts = await db.sql`select consumer, count(*)::int as n from handled group by 1 order by 1`;
    assert.deepEqual(counts.map((r) => [r.consumer, r.n]), [["accounts", 3], ["all", 6], ["billing", 2], ["billing_orders", 1], ["orders", 2]]);
    const s = worker.status();
    assert.deepEqual(s.consumers.map((c) => c.lag), [0n, 0n, 0n, 0n, 0n]);
  });
});

describe("worker.caughtUp", () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase("caught_up");
  });
  after(async () => {
    await db?.drop();
  });

  it("resolves once every consumer reached the head seen at the call, and times out otherwise", async () => {
    const w = createWorker({ sql: db.sql, consumers: [{ name: "a" }, { name: "b" }], logger: silent, ...fast });
    const top = (await append(db.sql, 3)).at(-1)!;
    const done = w.run(async () => {});
    await w.caughtUp({ timeoutMs: 10_000 });
    const rows = await db.sql`select last_position::text as p from sluice.consumer_checkpoints where consumer_name in ('a', 'b')`;
    assert.deepEqual(rows.map((r) => BigInt(r.p)), [top, top]);
    await w.stop();
    await done;
    await append(db.sql, 1);
    await assert.rejects(w.caughtUp({ timeoutMs: 100 }), (e: unknown) => (e as { code?: string }).code === "TIMEOUT");
  });
});
