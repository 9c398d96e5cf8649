// healthHandler() on a real worker: healthy while running, 503 for a parked
// consumer, 503 once stopped.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type HealthBody, healthHandler } from "../../src/mod.ts";
import { createTestDatabase, type TestDatabase, waitFor } from "../support/db.ts";
import { append } from "../support/events.ts";
import { testWorker } from "../support/worker.ts";

describe("healthHandler on a worker", () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase("health");
  });
  after(async () => {
    await db?.drop();
  });

  it("is 200 while all is well, 503 with a parked consumer, 503 once stopped", async () => {
    await append(db.sql, 2);
    const w = testWorker(db.sql, { consumers: [{ name: "fine" }, { name: "poison" }], maxConsecutiveFailures: 2 });
    const health = healthHandler(w);
    const before = await health().json() as HealthBody;
    assert.deepEqual(before.reasons.map((r) => r.code), ["not_running"], "not started yet");
    let poisoned = false;
    const done = w.run(async (batch) => {
      if (batch.consumer === "poison" && poisoned) throw new Error("cannot handle it");
    });
    await w.caughtUp({ timeoutMs: 10_000 });
    const ok = health();
    assert.equal(ok.status, 200, await ok.clone().text());
    assert.deepEqual(((await ok.json()) as HealthBody).consumers.map((c) => c.name).sort(), ["fine", "poison"]);
    poisoned = true;
    await append(db.sql, 1);
    const parked = await waitFor("503 parked", async () => {
      const r = health();
      return r.status === 503 ? (await r.json()) as HealthBody : undefined;
    });
    assert.deepEqual(parked.reasons.map((r) => [r.code, r.consumer]), [["consumer_parked", "poison"]]);
    assert.match(parked.reasons[0]!.message, /cannot handle it/);
    await w.stop();
    await done;
    const stopped = (await health().json()) as HealthBody;
    assert.equal(stopped.status, "unhealthy");
    assert.ok(stopped.reasons.some((r) => r.code === "not_running"));
  });
});
