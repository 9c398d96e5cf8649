/**
 * Wakeups end to end: the poll dispatcher (#87), the notify dispatcher with
 * NOTIFY really sent (#101 fixed, #24), LISTEN reconnection, and wakeups that
 * arrive while a consumer is busy (#18). Idle polls are set far away (60 s)
 * so only a wakeup can explain a reaction within PROMPT_MS.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type postgres from "postgres";
import type { Batch, Worker, WorkerOptions } from "../../src/mod.ts";
import { createStore } from "../../src/store/mod.ts";
import { type Deferred, deferred } from "../../src/internal/deferred.ts";
import { createTestDatabase, holds, type TestDatabase, waitFor } from "../support/db.ts";
import { append, head, insertEvents } from "../support/events.ts";
import { runtime } from "../support/runtime.ts";
import { checkpoint, testWorker } from "../support/worker.ts";

const CHANNEL = "sluice_wakeup_test";
/** The coordination tick (which also reads the head) runs once a second. */
const slowTicks = { heartbeatIntervalMs: 1_000, heartbeatTimeoutMs: 5_000, rebalanceIntervalMs: 1_000 } as const;
const notifyMode = { dispatcher: "notify", notifyChannel: CHANNEL, dispatcherIntervalMs: 600_000, ...slowTicks } as const;
/** Idle polls here: a consumer that missed its wakeup sleeps this long. */
const IDLE_POLL = { pollIntervalMs: 60_000, maxPollIntervalMs: 60_000 } as const;
/**
 * "Promptly": far below IDLE_POLL, so only a wakeup explains it, and far above
 * any scheduling stall of a loaded CI machine (a wakeup takes milliseconds).
 */
const PROMPT_MS = 15_000;
/** Marks the consumer's probe statement (src/consumption/statements.ts). */
const PROBE = "/* sluice:probe */";

let db: TestDatabase;
const running: { worker: Worker; done: Promise<void> }[] = [];

/** Starts a worker running one consumer whose handler records each event in `handled`. */
function startWorker(
  sql: postgres.Sql,
  consumer: string,
  options: Partial<WorkerOptions>,
  beforeHandle?: (batch: Batch) => Promise<void>,
): Worker {
  const worker = testWorker(sql, { consumers: [{ name: consumer }], ...options });
  const done = worker.run(async (batch) => {
    await beforeHandle?.(batch);
    for (const e of batch.events) {
      await batch.tx`insert into handled (consumer, position) values (${batch.consumer}, ${e.globalPosition.toString()})`;
    }
  });
  running.push({ worker, done: done.catch(() => {}) });
  return worker;
}

async function stopAll(): Promise<void> {
  await Promise.all(running.splice(0).map(async (r) => {
    await r.worker.stop();
    await r.done;
  }));
}

function stateOf(w: Worker, consumer: string): string | undefined {
  return w.status().consumers.find((c) => c.name === consumer)?.state;
}

/** Waits until the consumer has caught up with the head and sleeps. */
async function idleAtHead(w: Worker, consumer: string): Promise<void> {
  const top = await head(db.sql);
  await waitFor(`${consumer} idle at ${top}`, () => {
    const c = w.status().consumers.find((s) => s.name === consumer);
    return c?.state === "idle" && c.checkpoint === top;
  });
}

async function handledAt(consumer: string, position: bigint): Promise<boolean> {
  const [r] = await db.sql`select count(*)::int as n from handled where consumer = ${consumer} and position = ${position.toString()}`;
  return r!.n === 1;
}

/** Milliseconds until `position` is handled and checkpointed (fails after `timeoutMs`). */
async function latencyTo(consumer: string, position: bigint, since: number, timeoutMs = PROMPT_MS): Promise<number> {
  await waitFor(`${consumer} handled ${position}`, async () => (await checkpoint(db.sql, consumer)) === position && handledAt(consumer, position), {
    timeoutMs,
    everyMs: 5,
  });
  return Date.now() - since;
}

function report(what: string, ms: number): void {
  console.log(`[wakeups/${runtime}] ${what}: ${ms} ms`);
}

/** Appends one event and NOTIFYs its position in the same transaction (what the store does). */
async function appendNotified(sql: postgres.Sql): Promise<bigint> {
  return (await sql.begin(async (tx) => {
    const [p] = await insertEvents(tx, [{}]);
    await tx`select pg_notify(${CHANNEL}, ${p!.toString()})`;
    return p!;
  })) as bigint;
}

/** A pool client that counts the consumer probes it sends. */
function countingClient(): { sql: postgres.Sql; probes: () => number } {
  let n = 0;
  const sql = db.client({ debug: (_c: number, q: string) => void (q.includes(PROBE) && n++) });
  return { sql, probes: () => n };
}

/** The worker LISTEN backends in this database (session connections whose last statement was a LISTEN). */
async function listenBackends(): Promise<number[]> {
  const rows = await db.sql`select pid from pg_stat_activity
    where datname = current_database() and application_name = 'sluice-session' and query ilike 'listen%'`;
  return rows.map((r) => r.pid as number);
}

before(async () => {
  db = await createTestDatabase("wakeups");
  await db.sql`create table handled (consumer text, position bigint, primary key (consumer, position))`;
});
after(async () => {
  await stopAll();
  await db?.drop();
});

describe("poll dispatcher", () => {
  it("wakes an idle consumer long before its idle poll (#87)", async () => {
    await stopAll();
    const w = startWorker(db.sql, "poll_idle", { ...IDLE_POLL, dispatcherIntervalMs: 50, ...slowTicks });
    await idleAtHead(w, "poll_idle");
    await holds("consumer stays idle", () => stateOf(w, "poll_idle") === "idle", 500);
    const [p] = await append(db.sql, 1);
    const ms = await latencyTo("poll_idle", p!, Date.now());
    report("poll dispatcher, idle consumer -> handled", ms);
    assert.ok(ms < PROMPT_MS, `took ${ms} ms`);
  });
});

describe("notify dispatcher", () => {
  it("a bare NOTIFY makes an idle consumer probe at once (the worker really LISTENs)", async () => {
    await stopAll();
    const c = countingClient();
    const w = startWorker(c.sql, "notify_bare", { ...notifyMode, ...IDLE_POLL });
    await idleAtHead(w, "notify_bare");
    const before = c.probes();
    await holds("no probe while idle (idle poll is 60 s, the head does not move)", () => c.probes() === before, 300);
    const t0 = Date.now();
    await db.sql`select pg_notify(${CHANNEL}, '')`;
    await waitFor("a probe after the NOTIFY", () => c.probes() > before, { timeoutMs: PROMPT_MS, everyMs: 5 });
    report("bare NOTIFY -> probe", Date.now() - t0);
    assert.equal(stateOf(w, "notify_bare"), "idle");
  });

  it("an append that NOTIFYs in its transaction is handled promptly, and the NOTIFY is delivered (#101 fixed, #24)", async () => {
    await stopAll();
    const listener = db.client({ max: 1 });
    const got: string[] = [];
    const { unlisten } = await listener.listen(CHANNEL, (x) => void got.push(x));
    try {
      const w = startWorker(db.sql, "notify_raw", { ...notifyMode, ...IDLE_POLL });
      await idleAtHead(w, "notify_raw");
      await waitFor("the worker's LISTEN backend", async () => (await listenBackends()).length === 1);
      await holds("consumer stays idle", () => stateOf(w, "notify_raw") === "idle", 300);
      const t0 = Date.now();
      const p = await appendNotified(db.sql);
      const ms = await latencyTo("notify_raw", p, t0);
      report("append + pg_notify -> handled", ms);
      assert.ok(ms < PROMPT_MS, `took ${ms} ms`);
      await waitFor("our own LISTEN got the payload", () => got.includes(p.toString()));
    } finally {
      await unlisten();
    }
  });

  it("an append through createStore (which NOTIFYs) is handled promptly", async () => {
    await stopAll();
    const store = createStore(db.sql, { notifyChannel: CHANNEL });
    const listener = db.client({ max: 1 });
    const got: string[] = [];
    const { unlisten } = await listener.listen(CHANNEL, (x) => void got.push(x));
    try {
      const w = startWorker(db.sql, "notify_store", { ...notifyMode, ...IDLE_POLL });
      await idleAtHead(w, "notify_store");
      await holds("consumer stays idle", () => stateOf(w, "notify_store") === "idle", 300);
      const t0 = Date.now();
      const r = await db.sql.begin((tx) =>
        store.append(tx, [{ aggregateType: "Thing", aggregateId: `store-${t0}`, eventType: "Made", payload: { n: 1 } }], {
          expectedVersion: "no-stream",
        })
      );
      const ms = await latencyTo("notify_store", r.lastPosition, t0);
      report("store.append -> handled", ms);
      assert.ok(ms < PROMPT_MS, `took ${ms} ms`);
      await waitFor("the store's NOTIFY carried the last position", () => got.includes(r.lastPosition.toString()));
    } finally {
      await unlisten();
    }
  });
});

describe("notify dispatcher: LISTEN reconnection", () => {
  /** Terminates the worker's LISTEN backend and waits for postgres.js to LISTEN again on a new one. */
  async function killListen(): Promise<{ old: number; fresh: number }> {
    const [old] = await waitFor("exactly one LISTEN backend", async () => {
      const pids = await listenBackends();
      return pids.length === 1 && pids;
    });
    const [t] = await db.sql`select pg_terminate_backend(${old!}) as ok`;
    assert.equal(t!.ok, true);
    const [fresh] = await waitFor("a new LISTEN backend", async () => {
      const pids = await listenBackends();
      return pids.length === 1 && pids[0] !== old && pids;
    });
    return { old: old!, fresh: fresh! };
  }

  it("re-LISTENs after its LISTEN backend is terminated; an append with NOTIFY is handled well before the idle poll (#101)", async () => {
    await stopAll();
    const w = startWorker(db.sql, "relisten", { ...notifyMode, ...IDLE_POLL });
    await idleAtHead(w, "relisten");
    const { old, fresh } = await killListen();
    assert.notEqual(fresh, old);
    await idleAtHead(w, "relisten");
    const t0 = Date.now();
    const p = await appendNotified(db.sql);
    const ms = await latencyTo("relisten", p, t0);
    report("after LISTEN reconnection: append + NOTIFY -> handled", ms);
    assert.ok(w.status().healthy, "losing the LISTEN connection does not affect health");
  });

  it("after the reconnection a bare NOTIFY still reaches the worker (no reliance on the reconciliation poll)", async () => {
    await stopAll();
    const c = countingClient();
    const w = startWorker(c.sql, "relisten_bare", { ...notifyMode, ...IDLE_POLL });
    await idleAtHead(w, "relisten_bare");
    const beforeKill = c.probes();
    await killListen();
    // The LISTEN coming back is itself a wakeup (events may have been missed meanwhile).
    await waitFor("a probe once the LISTEN is back", () => c.probes() > beforeKill);
    await idleAtHead(w, "relisten_bare");
    const before = c.probes();
    await holds("no probe while idle", () => c.probes() === before, 300);
    const t0 = Date.now();
    await db.sql`select pg_notify(${CHANNEL}, '')`;
    await waitFor("a probe after the NOTIFY", () => c.probes() > before, { timeoutMs: PROMPT_MS, everyMs: 5 });
    report("after LISTEN reconnection: bare NOTIFY -> probe", Date.now() - t0);
  });
});

/**
 * `sql` whose next consumer probe, once armed, holds its (already received)
 * rows until `open()`: a wakeup can then be sent after the probe's snapshot
 * and before the consumer goes to sleep.
 */
function gatedProbes(sql: postgres.Sql): { sql: postgres.Sql; arm(): { received: Deferred<void>; open(): void } } {
  let armed: { received: Deferred<void>; gate: Deferred<void> } | undefined;
  const unsafe = sql.unsafe.bind(sql) as unknown as (q: string, ...a: unknown[]) => Promise<unknown>;
  const proxy = new Proxy(sql, {
    get(target, prop) {
      if (prop !== "unsafe") return Reflect.get(target, prop, target);
      return (q: string, ...a: unknown[]) => {
        const rows = unsafe(q, ...a);
        const g = armed;
        if (!g || !q.includes(PROBE)) return rows;
        armed = undefined;
        return rows.then(async (r) => {
          g.received.resolve();
          await g.gate.promise;
          return r;
        });
      };
    },
  });
  return {
    sql: proxy,
    arm() {
      const g = { received: deferred<void>(), gate: deferred<void>() };
      armed = g;
      return { received: g.received, open: () => g.gate.resolve() };
    },
  };
}

describe("a wakeup while the consumer is busy is not lost (#18)", () => {
  const quiet = { ...IDLE_POLL, dispatcherIntervalMs: 25 } as const;

  it("an event appended while the user's loop holds a batch is processed promptly after it", async () => {
    await stopAll();
    let hold: { entered: Deferred<void>; release: Deferred<void> } | undefined;
    const w = startWorker(db.sql, "busy", quiet, async () => {
      const h = hold;
      if (!h) return;
      hold = undefined;
      h.entered.resolve();
      await h.release.promise;
    });
    await idleAtHead(w, "busy");
    const h = { entered: deferred<void>(), release: deferred<void>() };
    hold = h;
    const [p1] = await append(db.sql, 1);
    await h.entered.promise;
    const [p2] = await append(db.sql, 1);
    await waitFor("the dispatcher saw the second event", () => w.status().head >= p2!);
    assert.ok((await checkpoint(db.sql, "busy")) < p1!, "the held batch has not committed yet");
    const t0 = Date.now();
    h.release.resolve();
    const ms = await latencyTo("busy", p2!, t0);
    report("event appended during a held batch -> handled after release", ms);
    assert.ok(ms < PROMPT_MS, `took ${ms} ms (the idle poll is 60 s)`);
  });

  it("a wakeup between an empty probe and the sleep is kept: no idle sleep", async () => {
    await stopAll();
    const gated = gatedProbes(db.sql);
    let hold: { entered: Deferred<void>; release: Deferred<void> } | undefined;
    const w = startWorker(gated.sql, "busy_probe", quiet, async () => {
      const h = hold;
      if (!h) return;
      hold = undefined;
      h.entered.resolve();
      await h.release.promise;
    });
    await idleAtHead(w, "busy_probe");
    const h = { entered: deferred<void>(), release: deferred<void>() };
    hold = h;
    await append(db.sql, 1);
    await h.entered.promise;
    // After this batch commits the consumer probes again at once; that probe
    // finds nothing and is held before the consumer can decide to sleep.
    const gate = gated.arm();
    h.release.resolve();
    await gate.received.promise;
    const [p2] = await append(db.sql, 1);
    await waitFor("the wakeup for the new event was broadcast", () => w.status().head >= p2!);
    const t0 = Date.now();
    gate.open();
    const ms = await latencyTo("busy_probe", p2!, t0);
    report("wakeup between empty probe and sleep -> handled", ms);
    assert.ok(ms < PROMPT_MS, `took ${ms} ms: the wakeup was lost and the consumer slept its idle poll`);
  });
});
