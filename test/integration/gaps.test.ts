import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createTestDatabase, holds, type TestDatabase, waitFor } from "../support/db.ts";
import { append, head, holdAppend } from "../support/events.ts";
import { checkpoint, memoryLogger, testWorker } from "../support/worker.ts";
import type { Worker } from "../../src/mod.ts";

describe("gaps", () => {
  let db: TestDatabase;
  const running: { w: Worker; done: Promise<void> }[] = [];
  before(async () => {
    db = await createTestDatabase("gaps");
    await db.sql`create table handled (consumer text, position bigint, primary key (consumer, position))`;
  });
  after(async () => {
    for (const r of running) await r.w.stop().then(() => r.done);
    await db?.drop();
  });

  function start(name: string, options: Record<string, unknown> = {}) {
    const w = testWorker(db.sql, { consumers: [{ name }], ...options });
    const done = w.run(async (batch) => {
      for (const e of batch.events) await batch.tx`insert into handled values (${name}, ${e.globalPosition.toString()})`;
    });
    running.push({ w, done });
    return w;
  }
  const handled = async (name: string) =>
    (await db.sql`select position::text as p from handled where consumer = ${name} order by position`).map((r) => BigInt(r.p));
  const skips = (name: string, reason = "%") =>
    db.sql`select gap_position::text as gap, skip_to_position::text as skip_to, highest_visible_position::text as highest,
             skipped_positions::text[] as skipped, reason, late_positions::text[] as late
           from sluice.consumer_gap_skips where consumer_name = ${name} and reason like ${reason} order by id`;

  it("waits for a lower position that commits late, before the threshold, and skips nothing", async () => {
    start("late_ok", { staleGapThresholdMs: 5_000 });
    const before = await head(db.sql);
    const held = await holdAppend(db.sql, 1);
    const later = await append(db.sql, 3);
    await holds("checkpoint stays below the held position", async () => (await checkpoint(db.sql, "late_ok")) === before, 700);
    assert.deepEqual(await handled("late_ok"), []);
    await held.commit();
    await waitFor("all four handled", async () => (await checkpoint(db.sql, "late_ok")) === later.at(-1));
    assert.deepEqual(await handled("late_ok"), [...held.positions, ...later]);
    assert.equal((await skips("late_ok")).length, 0);
  });

  it("passes a rolled-back append at once, proven, with reason rolled_back", async () => {
    start("proven", { staleGapThresholdMs: 60_000 });
    const held = await holdAppend(db.sql, 2);
    const later = await append(db.sql, 2);
    await holds("held while its writer runs", async () => (await checkpoint(db.sql, "proven")) < held.positions[0]!, 400);
    await held.rollback();
    await waitFor("past the dead hole", async () => (await checkpoint(db.sql, "proven")) === later.at(-1), { timeoutMs: 5_000 });
    const s = await skips("proven");
    assert.equal(s.length, 1);
    assert.equal(s[0]!.reason, "rolled_back");
    assert.deepEqual(s[0]!.skipped.map(BigInt), held.positions);
    const got = await handled("proven");
    assert.deepEqual(got.filter((p) => p > held.positions[0]!), later);
    assert.ok(!got.some((p) => held.positions.includes(p)));
  });

  it("passes a hole held past the stale threshold to the safe harbor, and records a late commit", async () => {
    const log = memoryLogger();
    const top0 = await head(db.sql);
    // Catch up first: older dead holes are proven only while no older writer runs.
    start("stale", { staleGapThresholdMs: 300, staleGapHarborLag: 1, logger: log });
    await waitFor("caught up", async () => (await checkpoint(db.sql, "stale")) === top0);
    const held = await holdAppend(db.sql, 1);
    const later = await append(db.sql, 4);
    await waitFor("one stale pass", async () => (await skips("stale", "stale")).length === 1);
    const [s] = await skips("stale", "stale");
    assert.equal(s!.reason, "stale");
    assert.equal(BigInt(s!.gap), held.positions[0]);
    assert.equal(BigInt(s!.skip_to), later[2], "one row behind the window's end");
    assert.equal(BigInt(s!.highest), later[3]);
    await waitFor("then the rest", async () => (await checkpoint(db.sql, "stale")) === later[3]);
    assert.deepEqual((await handled("stale")).filter((p) => p > top0), later);
    // The held transaction commits after all: a late commit, logged and recorded.
    await held.commit();
    await waitFor("late commit recorded", async () => (await skips("stale", "stale"))[0]!.late.length === 1);
    assert.deepEqual((await skips("stale", "stale"))[0]!.late.map(BigInt), held.positions);
    assert.ok(log.records.some((r) => r.level === "error" && r.message.startsWith("Late commit")));
  });

  it("replays a history with many dead holes without waiting on them", async () => {
    const holes: bigint[] = [];
    const kept: bigint[] = [];
    for (let i = 0; i < 40; i++) {
      kept.push(...(await append(db.sql, 5)));
      await db.sql.begin(async (tx) => {
        await tx`select pg_current_xact_id()`;
        const [r] = await tx`insert into sluice.events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
          values ('T', ${"h" + i}, 1, gen_random_uuid(), 'E', '{}') returning global_position::text as p`;
        holes.push(BigInt(r!.p));
        throw new Error("roll back");
      }).catch(() => {});
    }
    kept.push(...(await append(db.sql, 1)));
    // Default stale threshold (30 s): only the proof can get past 40 holes in time.
    start("replay", { batchSize: 20 });
    await waitFor("replayed", async () => (await checkpoint(db.sql, "replay")) === kept.at(-1), { timeoutMs: 10_000 });
    const all = await handled("replay");
    assert.ok(kept.every((p) => all.includes(p)));
    const s = await skips("replay");
    assert.ok(s.every((r) => r.reason === "rolled_back"));
    const passed = s.flatMap((r) => r.skipped.map(BigInt));
    for (const h of holes) assert.ok(passed.includes(h), `hole ${h} recorded`);
  });
});
