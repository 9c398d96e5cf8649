import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseWorkerConfig } from "../../src/config.ts";
import { ConfigError, isSluiceError, SluiceError } from "../../src/errors.ts";

const one = [{ name: "outbox" }];

describe("parseWorkerConfig", () => {
  it("fills the seed's defaults", () => {
    const c = parseWorkerConfig({ consumers: one });
    assert.equal(c.batchSize, 100);
    assert.equal(c.pollIntervalMs, 1_000);
    assert.equal(c.maxPollIntervalMs, 30_000);
    assert.equal(c.dispatcherIntervalMs, 200);
    assert.equal(c.dispatcher, "poll");
    assert.equal(c.heartbeatIntervalMs, 5_000);
    assert.equal(c.heartbeatTimeoutMs, 30_000);
    assert.equal(c.rebalanceIntervalMs, 5_000);
    assert.equal(c.batchPauseMs, 200);
    assert.equal(c.batchTimeoutMs, 30_000);
    assert.equal(c.staleGapThresholdMs, 30_000);
    assert.equal(c.staleGapHarborLag, 8);
    assert.equal(c.maxConsecutiveFailures, 5);
    assert.equal(c.notifyChannel, "sluice_events");
    assert.equal(c.tables.consumerGapSkips.name, "consumer_gap_skips");
  });

  it("keeps given values, allows zero pause and zero harbor lag", () => {
    const c = parseWorkerConfig({ consumers: one, batchSize: 17, pollIntervalMs: 2_000, maxPollIntervalMs: 9_000, batchPauseMs: 0, staleGapHarborLag: 0, staleGapThresholdMs: false });
    assert.deepEqual([c.batchSize, c.pollIntervalMs, c.maxPollIntervalMs, c.batchPauseMs, c.staleGapHarborLag, c.staleGapThresholdMs], [17, 2_000, 9_000, 0, 0, false]);
  });

  it("caps the harbor lag to the batch window", () => {
    assert.equal(parseWorkerConfig({ consumers: one, batchSize: 5, staleGapHarborLag: 99 }).staleGapHarborLag, 4);
  });

  it("is frozen", () => {
    const c = parseWorkerConfig({ consumers: one });
    assert.ok(Object.isFrozen(c));
    assert.ok(Object.isFrozen(c.consumers));
    assert.throws(() => { (c as { batchSize: number }).batchSize = 3; });
  });

  it("lists every bad field with path, value and rule", () => {
    let err: unknown;
    try {
      parseWorkerConfig({
        consumers: [{ name: "" }, { name: "b", aggregateTypes: [1 as unknown as string] }],
        batchSize: 0,
        pollIntervalMs: 1.5,
        dispatcher: "pubsub" as "poll",
        bogus: true,
      } as never);
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ConfigError);
    assert.ok(err instanceof SluiceError);
    assert.ok(isSluiceError(err, "CONFIG_INVALID"));
    const paths = err.issues.map((i) => i.path);
    assert.deepEqual(paths.sort(), ["batchSize", "bogus", "consumers.0.name", "consumers.1.aggregateTypes.0", "dispatcher", "pollIntervalMs"]);
    assert.match(err.message, /batchSize: must be >= 1 \(got 0\)/);
    assert.match(err.message, /bogus: is not a known option/);
  });

  it("rejects duplicate consumer names", () => {
    assert.throws(() => parseWorkerConfig({ consumers: [{ name: "a" }, { name: "a" }] }), /consumer names must be unique/);
  });

  it("checks relations between fields", () => {
    assert.throws(() => parseWorkerConfig({ consumers: one, pollIntervalMs: 5_000, maxPollIntervalMs: 1_000 }), /maxPollIntervalMs: must be >= pollIntervalMs/);
    assert.throws(() => parseWorkerConfig({ consumers: one, heartbeatIntervalMs: 1_000, heartbeatTimeoutMs: 1_000 }), /heartbeatTimeoutMs/);
  });

  it("rejects unsafe table names as config errors", () => {
    assert.throws(() => parseWorkerConfig({ consumers: one, tables: { events: "x; drop table y" } }), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.issues[0]?.path, "tables.events");
      return true;
    });
    assert.throws(() => parseWorkerConfig({ consumers: one, tables: { evnts: "e" } as never }), /tables.evnts: is not a known option/);
  });
});

describe("SluiceError", () => {
  it("keeps code, cause and SQLSTATE", () => {
    const pg = Object.assign(new Error("duplicate key"), { name: "PostgresError", code: "23505" });
    const e = new SluiceError("CONCURRENCY_CONFLICT", "lost", { cause: pg });
    assert.equal(e.code, "CONCURRENCY_CONFLICT");
    assert.equal(e.cause, pg);
    assert.equal(e.sqlState, "23505");
    assert.ok(isSluiceError(e, "CONCURRENCY_CONFLICT"));
    assert.ok(!isSluiceError(e, "NOT_FOUND"));
    assert.ok(!isSluiceError(new Error("x")));
    assert.ok(isSluiceError({ name: "SluiceError", code: "TIMEOUT" }), "structural, not instanceof");
  });
});

describe("isConnectionError", () => {
  it("recognises connection failures, not work failures", async () => {
    const { isConnectionError } = await import("../../src/errors.ts");
    assert.ok(isConnectionError(Object.assign(new Error("x"), { code: "CONNECTION_CLOSED" })));
    assert.ok(isConnectionError(Object.assign(new Error("x"), { name: "PostgresError", code: "57P01" })));
    assert.ok(isConnectionError(Object.assign(new Error("x"), { name: "PostgresError", code: "08006" })));
    assert.ok(isConnectionError(new SluiceError("DATABASE_ERROR", "wrapped", { cause: Object.assign(new Error("x"), { code: "ECONNREFUSED" }) })));
    assert.ok(!isConnectionError(Object.assign(new Error("x"), { name: "PostgresError", code: "23505" })));
    assert.ok(!isConnectionError(new Error("handler bug")));
  });
});
