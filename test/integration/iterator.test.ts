import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { pgTable, text } from "drizzle-orm/pg-core";
import { isSluiceError } from "../../src/mod.ts";
import { createTestDatabase, holds, type TestDatabase, waitFor } from "../support/db.ts";
import { append } from "../support/events.ts";
import { checkpoint, memoryLogger, testWorker } from "../support/worker.ts";

const notes = pgTable("notes", { id: text("id").primaryKey(), consumer: text("consumer").notNull() });

describe("assigned(): commit, rollback, break, throw, fail", () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase("iterator");
    await db.sql`create table notes (id text primary key, consumer text not null)`;
  });
  after(async () => {
    await db?.drop();
  });

  it("commits a batch (user writes and checkpoint) when the loop asks for the next one", async () => {
    const [p] = await append(db.sql, 1);
    const w = testWorker(db.sql, { consumers: [{ name: "c1" }] });
    let seen = 0;
    for await (const batch of w.assigned()) {
      assert.equal(batch.consumer, "c1");
      assert.equal(batch.from, 0n);
      assert.equal(batch.to, p);
      await batch.tx`insert into notes values (${"c1-" + batch.events[0]!.eventId}, 'c1')`;
      // Not visible outside the batch transaction yet.
      const [r] = await db.sql`select count(*)::int as n from notes where consumer = 'c1'`;
      assert.equal(r!.n, 0);
      if (++seen === 1) {
        // The next iteration commits this batch; stop right after.
        setTimeout(() => void w.stop(), 0);
      }
    }
    const [r] = await db.sql`select count(*)::int as n from notes where consumer = 'c1'`;
    assert.equal(r!.n, 1);
    assert.equal(await checkpoint(db.sql, "c1"), p);
  });

  it("rolls back a whole batch whose own writes break the checkpoint fence, although COMMIT went out with the advance", async () => {
    const [p] = await append(db.sql, 1);
    const logger = memoryLogger();
    const w = testWorker(db.sql, { consumers: [{ name: "cf" }], logger });
    let deliveries = 0;
    for await (const batch of w.assigned()) {
      deliveries++;
      await batch.tx`insert into notes values (${"cf-" + deliveries}, 'cf')`;
      if (deliveries === 1) {
        // Moves the checkpoint under the batch's own lock: the advance cannot hold.
        await batch.tx`update sluice.consumer_checkpoints set last_position = last_position + 1000 where consumer_name = 'cf'`;
      } else {
        assert.equal(batch.from, 0n, "the same range again");
        assert.equal(batch.to, p);
        setTimeout(() => void w.stop(), 0);
      }
    }
    assert.equal(deliveries, 2);
    const rows = await db.sql`select id from notes where consumer = 'cf' order by id`;
    assert.deepEqual(rows.map((r) => r.id), ["cf-2"], "nothing of the first delivery committed");
    assert.equal(await checkpoint(db.sql, "cf"), p);
    // Recognised as a lost fence (the runner resyncs), not as a failure of the handler.
    assert.ok(logger.records.some((r) => r.message.includes("no longer owned") && r.props.consumer === "cf"));
    assert.ok(!logger.records.some((r) => r.level === "warn" && r.props.consumer === "cf"));
  });

  it("rolls back and stops the worker when the loop body throws; the error propagates", async () => {
    await append(db.sql, 1);
    const w = testWorker(db.sql, { consumers: [{ name: "c2" }] });
    const boom = new Error("boom");
    await assert.rejects((async () => {
      for await (const batch of w.assigned()) {
        await batch.tx`insert into notes values ('c2-x', 'c2')`;
        throw boom;
      }
    })(), (e) => e === boom);
    assert.equal(w.status().running, false);
    const [r] = await db.sql`select count(*)::int as n from notes where consumer = 'c2'`;
    assert.equal(r!.n, 0);
    assert.equal(await checkpoint(db.sql, "c2"), 0n);
    const [a] = await db.sql`select worker_id from sluice.consumer_assignments where consumer_name = 'c2'`;
    assert.equal(a!.worker_id, null, "released for other workers");
  });

  it("rolls back and stops the worker on break", async () => {
    const w = testWorker(db.sql, { consumers: [{ name: "c3" }] });
    for await (const batch of w.assigned()) {
      await batch.db.insert(notes).values({ id: "c3-x", consumer: "c3" });
      break;
    }
    assert.equal(w.status().running, false);
    const [r] = await db.sql`select count(*)::int as n from notes where consumer = 'c3'`;
    assert.equal(r!.n, 0);
    assert.equal(await checkpoint(db.sql, "c3"), 0n);
  });

  it("fail() rolls back just that batch and the loop goes on; batch.db commits with the batch", async () => {
    const top = (await append(db.sql, 1)).at(-1)!;
    const w = testWorker(db.sql, { consumers: [{ name: "c4" }] });
    let attempts = 0;
    for await (const batch of w.assigned()) {
      attempts++;
      await batch.db.insert(notes).values({ id: `c4-${attempts}`, consumer: "c4" });
      if (attempts === 1) {
        await batch.fail(new Error("not yet"));
        continue;
      }
      assert.equal(batch.from, 0n, "the failed range is delivered again");
      assert.equal(batch.to, top);
      setTimeout(() => void w.stop(), 0);
    }
    const rows = await db.sql`select id from notes where consumer = 'c4' order by id`;
    assert.deepEqual(rows.map((r) => r.id), ["c4-2"]);
    assert.equal(await checkpoint(db.sql, "c4"), top);
  });

  it("run() fails a batch whose handler throws, retries it, and keeps going", async () => {
    const top = (await append(db.sql, 2)).at(-1)!;
    const w = testWorker(db.sql, { consumers: [{ name: "c5" }] });
    let calls = 0;
    const done = w.run(async (batch) => {
      calls++;
      await batch.tx`insert into notes values (${"c5-" + calls}, 'c5')`;
      if (calls < 3) throw new Error(`flaky ${calls}`);
    });
    await waitFor("c5 checkpoint", async () => (await checkpoint(db.sql, "c5")) === top);
    await w.stop();
    await done;
    const rows = await db.sql`select id from notes where consumer = 'c5'`;
    assert.deepEqual(rows.map((r) => r.id), ["c5-3"]);
  });

  it("retries a batch that failed on a serialization failure or deadlock at once, three times, before backing off", async () => {
    const top = (await append(db.sql, 1)).at(-1)!;
    // Any backoff would stall these consumers for a minute; two counted failures would park them.
    const w = testWorker(db.sql, {
      consumers: [{ name: "tr_ok" }, { name: "tr_always" }],
      retryBaseMs: 60_000,
      retryMaxMs: 60_000,
      maxConsecutiveFailures: 2,
    });
    const calls = new Map<string, number>();
    const raise = (code: string) => `do $$ begin raise exception 'simulated ${code}' using errcode = '${code}'; end $$`;
    const done = w.run(async (batch) => {
      const n = (calls.get(batch.consumer) ?? 0) + 1;
      calls.set(batch.consumer, n);
      if (batch.consumer === "tr_always") await batch.tx.unsafe(raise("40001"));
      if (n <= 2) await batch.tx.unsafe(raise("40001"));
      if (n === 3) await batch.tx.unsafe(raise("40P01"));
      await batch.tx`insert into notes values (${"tr-" + n}, ${batch.consumer})`;
    });
    await waitFor("tr_ok at the head", async () => (await checkpoint(db.sql, "tr_ok")) === top);
    // Reached within waitFor's timeout: none of the three retries waited for the one-minute backoff.
    assert.equal(calls.get("tr_ok"), 4);
    // The fourth transient failure in a row counts, and backs off.
    await waitFor("tr_always backing off", () => w.status().consumers.find((c) => c.name === "tr_always")?.state === "backing_off");
    const always = w.status().consumers.find((c) => c.name === "tr_always")!;
    assert.equal(always.failures, 1);
    assert.match(always.lastError ?? "", /simulated 40001/);
    assert.equal(calls.get("tr_always"), 4);
    await holds("no retry during the backoff", () => calls.get("tr_always") === 4, 300);
    await w.stop();
    await done;
    const rows = await db.sql`select id from notes where consumer = 'tr_ok'`;
    assert.deepEqual(rows.map((r) => r.id), ["tr-4"]);
  });

  it("parks a consumer after maxConsecutiveFailures while the others go on", async () => {
    const top = (await append(db.sql, 1)).at(-1)!;
    const w = testWorker(db.sql, { consumers: [{ name: "poison" }, { name: "healthy" }], maxConsecutiveFailures: 3 });
    let poisonCalls = 0;
    const done = w.run(async (batch) => {
      if (batch.consumer === "poison") {
        poisonCalls++;
        throw new Error("cannot handle this event");
      }
    });
    await waitFor("parked", () => w.status().consumers.find((c) => c.name === "poison")?.state === "parked");
    await waitFor("healthy caught up", async () => (await checkpoint(db.sql, "healthy")) === top);
    assert.equal(poisonCalls, 3);
    const poison = w.status().consumers.find((c) => c.name === "poison")!;
    assert.equal(poison.failures, 3);
    assert.equal(poison.lastError, "cannot handle this event");
    await holds("no more attempts once parked", () => poisonCalls === 3, 300);
    const [a] = await db.sql`select state, last_error from sluice.consumer_assignments where consumer_name = 'poison'`;
    assert.deepEqual([a!.state, a!.last_error], ["parked", "cannot handle this event"]);
    assert.equal(await checkpoint(db.sql, "poison"), 0n);
    await w.stop();
    await done;
  });

  it("rolls back a batch that outlives batchTimeoutMs and aborts its signal", async () => {
    await append(db.sql, 1);
    const w = testWorker(db.sql, { consumers: [{ name: "slow" }], batchTimeoutMs: 200, maxConsecutiveFailures: 100 });
    let first = true;
    let aborted: unknown;
    const done = w.run(async (batch) => {
      if (first) {
        first = false;
        await batch.tx`insert into notes values ('slow-1', 'slow')`;
        await new Promise<void>((r) => batch.signal.addEventListener("abort", () => r(), { once: true }));
        aborted = batch.signal.reason;
        return;
      }
      await batch.tx`insert into notes values ('slow-2', 'slow')`;
    });
    await waitFor("retried after the timeout", async () => (await checkpoint(db.sql, "slow")) > 0n);
    assert.ok(isSluiceError(aborted, "BATCH_TIMEOUT"), String(aborted));
    const rows = await db.sql`select id from notes where consumer = 'slow'`;
    assert.deepEqual(rows.map((r) => r.id), ["slow-2"]);
    await w.stop();
    await done;
  });

  it("a range with no event for a scoped consumer advances its checkpoint without yielding", async () => {
    const top = (await append(db.sql, [{ aggregateType: "Other" }, { aggregateType: "Other" }])).at(-1)!;
    const w = testWorker(db.sql, { consumers: [{ name: "scoped", aggregateTypes: ["Wanted"] }] });
    let yielded = 0;
    const done = w.run(async () => void yielded++);
    await waitFor("scoped at head", async () => (await checkpoint(db.sql, "scoped")) === top);
    assert.equal(yielded, 0);
    await w.stop();
    await done;
  });

  it("drains on stop: the open batch commits", async () => {
    const top = (await append(db.sql, 1)).at(-1)!;
    const w = testWorker(db.sql, { consumers: [{ name: "drain" }] });
    let stopping: Promise<void> | undefined;
    for await (const batch of w.assigned()) {
      stopping = w.stop(); // stop while the batch is open
      await new Promise((r) => setTimeout(r, 50));
      await batch.tx`insert into notes values ('drain-1', 'drain')`;
    }
    await stopping;
    assert.equal(await checkpoint(db.sql, "drain"), top);
    const [r] = await db.sql`select count(*)::int as n from notes where consumer = 'drain'`;
    assert.equal(r!.n, 1);
  });
});
