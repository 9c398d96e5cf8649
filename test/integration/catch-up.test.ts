// catchUp(): one-off processing up to the head seen at the start, with the
// worker's batches, gap handling and fence, and no worker registered.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { pgTable, text } from "drizzle-orm/pg-core";
import { type Batch, catchUp, isSluiceError, type Worker } from "../../src/mod.ts";
import { impostor } from "../support/cluster.ts";
import { createTestDatabase, type TestDatabase, waitFor } from "../support/db.ts";
import { append, holdAppend } from "../support/events.ts";
import { checkpoint, silent, testWorker } from "../support/worker.ts";

const notes = pgTable("notes", { id: text("id").primaryKey(), consumer: text("consumer").notNull() });
const NIL = "00000000-0000-0000-0000-000000000000";
const quick = { logger: silent, provenGapMinAgeMs: 50, batchPauseMs: 10 } as const;

describe("catchUp()", () => {
  let db: TestDatabase;
  const running: { w: Worker; done: Promise<void> }[] = [];
  before(async () => {
    db = await createTestDatabase("catch_up");
    await db.sql`create table seen (consumer text not null, position bigint not null, primary key (consumer, position))`;
    await db.sql`create table notes (id text primary key, consumer text not null)`;
  });
  after(async () => {
    for (const r of running) await r.w.stop().then(() => r.done);
    await db?.drop();
  });

  const record = (name: string) => async (batch: Batch) => {
    for (const e of batch.events) await batch.tx`insert into seen values (${name}, ${e.globalPosition.toString()})`;
  };
  const seen = async (name: string): Promise<bigint[]> =>
    (await db.sql`select position::text as p from seen where consumer = ${name} order by position`).map((r) => BigInt(r.p as string));
  const workerRows = async (): Promise<number> => (await db.sql`select count(*)::int as n from sluice.worker_nodes`)[0]!.n as number;

  it("processes every event up to the head seen at the start, in batches, then returns; registers no worker", async () => {
    const ps = await append(db.sql, 5);
    const batches: { from: bigint; to: bigint; n: number }[] = [];
    let appendedDuring: bigint[] = [];
    const r = await catchUp(db.sql, ["one"], async (batch) => {
      assert.equal(batch.consumer, "one");
      if (batches.length === 0) appendedDuring = await append(db.client({ max: 1 }), 2); // after the start: not ours
      batches.push({ from: batch.from, to: batch.to, n: batch.events.length });
      await record("one")(batch);
      await batch.db.insert(notes).values({ id: `one-${batch.to}`, consumer: "one" });
    }, { ...quick, batchSize: 2 });
    const top = ps.at(-1)!;
    assert.equal(r.head, top);
    assert.deepEqual(r.consumers, [{ consumer: "one", from: 0n, to: top, batches: 3, events: 5 }]);
    assert.deepEqual(batches.map((b) => b.n), [2, 2, 1]);
    assert.equal(batches[0]!.from, 0n);
    assert.equal(batches.at(-1)!.to, top);
    assert.deepEqual(await seen("one"), ps);
    assert.ok(appendedDuring[0]! > top);
    assert.equal(await checkpoint(db.sql, "one"), top);
    const n = (await db.sql`select count(*)::int as n from notes where consumer = 'one'`)[0]!.n;
    assert.equal(n, 3, "batch.db writes committed with their batches");
    assert.equal(await workerRows(), 0);

    // A second run continues from the checkpoint: only the later events.
    const again = await catchUp(db.sql, [{ name: "one" }], record("one"), quick);
    assert.deepEqual(again.consumers[0], { consumer: "one", from: top, to: appendedDuring.at(-1)!, batches: 1, events: 2 });
    assert.deepEqual(await seen("one"), [...ps, ...appendedDuring]);
  });

  it("honours scopes: the checkpoint passes every event, the handler gets the matching ones", async () => {
    const ps = await append(db.sql, [{ aggregateType: "Wanted" }, { aggregateType: "Other" }, { aggregateType: "Wanted" }]);
    const r = await catchUp(db.sql, [{ name: "scoped", aggregateTypes: ["Wanted"] }], record("scoped"), quick);
    assert.equal(r.consumers[0]!.to, ps.at(-1));
    assert.deepEqual((await seen("scoped")).filter((p) => p >= ps[0]!), [ps[0], ps[2]]);
  });

  it("refuses a consumer a live worker owns, and takes over one owned by a dead worker", async () => {
    await append(db.sql, 1);
    const w = testWorker(db.client({ max: 4 }), { consumers: [{ name: "owned" }] });
    running.push({ w, done: w.run(record("owned")) });
    await waitFor("owned assigned", async () => {
      const [a] = await db.sql`select worker_id::text as w from sluice.consumer_assignments where consumer_name = 'owned'`;
      return a?.w === w.id;
    });
    const before = await seen("free");
    await assert.rejects(catchUp(db.sql, ["free", "owned"], record("x"), quick), (e) => {
      assert.ok(isSluiceError(e, "CONSUMER_OWNED"), String(e));
      assert.equal(e.details.consumer, "owned");
      assert.equal(e.details.owner, w.id);
      return true;
    });
    assert.deepEqual(await seen("free"), before, "nothing was processed");

    // A consumer whose owner is registered but dead (lock released, heartbeat old).
    const ghost = await impostor(db.sql, ["orphan"]);
    await db.sql`insert into sluice.consumer_assignments (consumer_name, worker_id) values ('orphan', ${ghost.workerId})`;
    await db.sql`insert into sluice.consumer_checkpoints (consumer_name) values ('orphan')`;
    await assert.rejects(catchUp(db.sql, ["orphan"], record("orphan"), quick), (e) => isSluiceError(e, "CONSUMER_OWNED"));
    await ghost.die();
    const r = await catchUp(db.sql, ["orphan"], record("orphan"), { ...quick, heartbeatTimeoutMs: 60_000 });
    assert.ok(r.consumers[0]!.events > 0);
    const [a] = await db.sql`select worker_id from sluice.consumer_assignments where consumer_name = 'orphan'`;
    assert.equal(a!.worker_id, null, "the dead owner was cleared");
  });

  it("passes a rolled-back hole (proven, audited) and waits for an in-flight one", async () => {
    const dead = await holdAppend(db.sql, 1);
    const inflight = await holdAppend(db.sql, 1);
    const later = await append(db.sql, 2);
    await dead.rollback();
    let finished = false;
    const running = catchUp(db.sql, ["holey"], record("holey"), { ...quick, staleGapThresholdMs: false }).then((r) => {
      finished = true;
      return r;
    });
    // Holes D (dead) and I (in flight) touch: the run D..I waits for I's writer.
    await waitFor("processed up to the holes", async () => (await checkpoint(db.sql, "holey")) === dead.positions[0]! - 1n);
    assert.equal(finished, false);
    await inflight.commit();
    const r = await running;
    assert.equal(r.consumers[0]!.to, later.at(-1));
    const got = await seen("holey");
    assert.ok(got.includes(inflight.positions[0]!), "the in-flight event, committed later, was delivered");
    assert.ok(!got.includes(dead.positions[0]!));
    const skips = await db.sql`select reason, worker_id::text as w, skipped_positions::text[] as s
                               from sluice.consumer_gap_skips where consumer_name = 'holey'`;
    assert.equal(skips.length, 1);
    assert.deepEqual([skips[0]!.reason, skips[0]!.w, skips[0]!.s.map(BigInt)], ["rolled_back", NIL, dead.positions]);
  });

  it("gives up with TIMEOUT on a hole it cannot pass within timeoutMs", async () => {
    const inflight = await holdAppend(db.sql, 1);
    await append(db.sql, 1);
    try {
      await assert.rejects(
        catchUp(db.sql, ["stuck"], record("stuck"), { ...quick, staleGapThresholdMs: false, timeoutMs: 300 }),
        // Blocked at the in-flight position, or at an older dead hole it cannot prove while that writer runs.
        (e) => isSluiceError(e, "TIMEOUT") && BigInt(e.details.position as string) <= inflight.positions[0]!,
      );
    } finally {
      await inflight.rollback();
    }
  });

  it("rolls back the failing batch and rejects with the handler's error; earlier batches stay committed", async () => {
    const ps = await append(db.sql, 4);
    const boom = new Error("boom");
    let calls = 0;
    await assert.rejects(catchUp(db.sql, [{ name: "fails" }], async (batch) => {
      await record("fails")(batch);
      if (++calls === 2) throw boom;
    }, { ...quick, batchSize: 2 }), (e) => e === boom);
    const cp = await checkpoint(db.sql, "fails");
    assert.ok(cp < ps[3]!, "the failed batch did not commit");
    assert.equal((await seen("fails")).at(-1), cp);

    const nope = new Error("nope");
    await assert.rejects(catchUp(db.sql, ["fails"], async (batch) => {
      await record("fails")(batch);
      await batch.fail(nope);
    }, quick), (e) => e === nope);
    assert.equal(await checkpoint(db.sql, "fails"), cp);
    await assert.rejects(catchUp(db.sql, ["x"], record("x"), { ...quick, batchSize: 0 }), (e) => isSluiceError(e, "CONFIG_INVALID"));
  });
});
