// healthHandler(): the verdict from worker.status() alone, stuck detection
// with an injected clock, and the node:http adapter.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { type ConsumerReport, type HealthBody, healthHandler, isSluiceError, toNodeListener, type WorkerStatus } from "../../src/mod.ts";

function consumer(name: string, o: Partial<ConsumerReport> = {}): ConsumerReport {
  return { name, state: "idle", checkpoint: 10n, blockedAt: undefined, blockedSince: undefined, failures: 0, lastError: undefined, lag: 0n, ...o };
}

/** A fake worker whose status the test sets. */
function fake(consumers: ConsumerReport[] = [consumer("a")], o: Partial<WorkerStatus> = {}) {
  const state: { status: WorkerStatus } = {
    status: { workerId: "w-1", running: true, leader: true, healthy: true, head: 10n, consumers, ...o },
  };
  return { state, worker: { status: () => state.status } };
}

async function call(h: (r?: Request) => Response, request?: Request): Promise<{ code: number; body: HealthBody }> {
  const res = h(request);
  assert.equal(res.headers.get("content-type"), "application/json; charset=utf-8");
  return { code: res.status, body: (await res.json()) as HealthBody };
}

describe("healthHandler", () => {
  it("answers 200 with the worker's state when healthy", async () => {
    const { worker } = fake([consumer("a", { checkpoint: 7n, lag: 3n, state: "running" })]);
    const { code, body } = await call(healthHandler(worker));
    assert.equal(code, 200);
    assert.equal(body.status, "ok");
    assert.deepEqual(body.reasons, []);
    assert.equal(body.workerId, "w-1");
    assert.equal(body.head, "10");
    assert.deepEqual(body.consumers[0], {
      name: "a", state: "running", checkpoint: "7", lag: "3", failures: 0, lastError: null, lagNotFallingMs: 0,
    });
  });

  it("answers 503 when the worker is not running or lost its session", async () => {
    const stopped = await call(healthHandler(fake([], { running: false }).worker));
    assert.equal(stopped.code, 503);
    assert.equal(stopped.body.status, "unhealthy");
    assert.deepEqual(stopped.body.reasons.map((r) => r.code), ["not_running"]);
    const lost = await call(healthHandler(fake([], { healthy: false }).worker));
    assert.equal(lost.code, 503);
    assert.deepEqual(lost.body.reasons.map((r) => r.code), ["session_lost"]);
  });

  it("answers 503 naming a parked consumer and its error", async () => {
    const { worker } = fake([consumer("ok"), consumer("poison", { state: "parked", failures: 5, lastError: "bad event", lag: 4n })]);
    const { code, body } = await call(healthHandler(worker));
    assert.equal(code, 503);
    assert.equal(body.reasons.length, 1);
    assert.equal(body.reasons[0]!.code, "consumer_parked");
    assert.equal(body.reasons[0]!.consumer, "poison");
    assert.match(body.reasons[0]!.message, /5 failed batches: bad event/);
  });

  it("reports a consumer stuck when its lag stays above zero without falling for stuckAfterMs", async () => {
    let now = 1_000_000;
    const { state, worker } = fake([consumer("slow", { lag: 10n, state: "blocked" })]);
    const h = healthHandler(worker, { stuckAfterMs: 60_000, now: () => now });
    const set = (lag: bigint) => (state.status = { ...state.status, consumers: [consumer("slow", { lag, state: "blocked" })] });
    assert.equal((await call(h)).code, 200);
    now += 30_000;
    set(12n); // rising is not falling
    assert.equal((await call(h)).code, 200);
    now += 30_000;
    const stuck = await call(h);
    assert.equal(stuck.code, 503);
    assert.equal(stuck.body.reasons[0]!.code, "consumer_stuck");
    assert.equal(stuck.body.reasons[0]!.consumer, "slow");
    assert.equal(stuck.body.consumers[0]!.lagNotFallingMs, 60_000);
    now += 1_000;
    set(11n); // it fell: a new period starts
    assert.equal((await call(h)).code, 200);
    now += 59_999;
    assert.equal((await call(h)).code, 200);
    now += 1;
    assert.equal((await call(h)).code, 503);
    set(0n); // caught up
    const ok = await call(h);
    assert.equal(ok.code, 200);
    assert.equal(ok.body.consumers[0]!.lagNotFallingMs, undefined);
    now += 120_000;
    assert.equal((await call(h)).code, 200);
    assert.throws(() => healthHandler(worker, { stuckAfterMs: -1 }), (e) => isSluiceError(e, "INVALID_ARGUMENT"));
  });

  it("answers HEAD without a body", async () => {
    const res = healthHandler(fake().worker)(new Request("http://x/health", { method: "HEAD" }));
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "");
  });

  it("serves through node:http with toNodeListener", async () => {
    const { state, worker } = fake();
    const seen: string[] = [];
    const h = healthHandler(worker);
    const server = createServer(toNodeListener((req) => {
      seen.push(`${req.method} ${new URL(req.url).pathname} ${req.headers.get("x-probe")}`);
      return h(req);
    }));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/healthz`;
      const ok = await fetch(url, { headers: { "x-probe": "k8s" } });
      assert.equal(ok.status, 200);
      assert.equal(((await ok.json()) as HealthBody).status, "ok");
      state.status = { ...state.status, healthy: false };
      const bad = await fetch(url);
      assert.equal(bad.status, 503);
      assert.equal(bad.headers.get("cache-control"), "no-store");
      assert.deepEqual(((await bad.json()) as HealthBody).reasons.map((r) => r.code), ["session_lost"]);
      assert.deepEqual(seen, ["GET /healthz k8s", "GET /healthz null"]);
      const broken = createServer(toNodeListener(() => {
        throw new Error("kaput");
      }));
      await new Promise<void>((r) => broken.listen(0, "127.0.0.1", r));
      try {
        const res = await fetch(`http://127.0.0.1:${(broken.address() as AddressInfo).port}/`);
        assert.equal(res.status, 500);
        assert.match(await res.text(), /kaput/);
      } finally {
        await new Promise((r) => broken.close(r));
      }
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
