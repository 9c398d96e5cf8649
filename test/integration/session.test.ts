/**
 * The worker's session connection: losing it (#99 variant, in-process),
 * holding the liveness lock again, the idle cost of a notify-mode worker, and
 * createWorker validation touching no database.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { type AddressInfo, connect as tcpConnect, createServer, type Socket } from "node:net";
import type postgres from "postgres";
import { ConfigError, createWorker, isSluiceError, type Worker, type WorkerOptions } from "../../src/mod.ts";
import { createTestDatabase, holds, type TestDatabase, waitFor } from "../support/db.ts";
import { append, head } from "../support/events.ts";
import { runtime } from "../support/runtime.ts";
import { checkpoint, silent, testWorker } from "../support/worker.ts";

let db: TestDatabase;
const running: { worker: Worker; done: Promise<void> }[] = [];

function startWorker(sql: postgres.Sql, consumer: string, options: Partial<WorkerOptions> = {}): Worker {
  const worker = testWorker(sql, { consumers: [{ name: consumer }], ...options });
  track(worker, consumer);
  return worker;
}

/** Runs `worker` with a handler that records each event once in `handled` (a duplicate fails the batch). */
function track(worker: Worker, consumer: string): void {
  const done = worker.run(async (batch) => {
    for (const e of batch.events) {
      await batch.tx`insert into handled (consumer, position) values (${consumer}, ${e.globalPosition.toString()})`;
    }
  });
  running.push({ worker, done: done.catch(() => {}) });
}

async function stopAll(): Promise<void> {
  await Promise.all(running.splice(0).map(async (r) => {
    await r.worker.stop();
    await r.done;
  }));
}

async function nodeRow(w: Worker): Promise<{ pid: number; key: string }> {
  const [r] = await db.sql`select backend_pid as pid, liveness_key::text as key from sluice.worker_nodes where worker_id = ${w.id}`;
  assert.ok(r, `worker_nodes row of ${w.id}`);
  return { pid: r.pid as number, key: r.key as string };
}

/** Backends holding the advisory lock `key` (bigint shown as classid/objid) in this database. */
async function lockHolders(key: string): Promise<number[]> {
  const rows = await db.sql.unsafe(
    `select l.pid from pg_locks l
     where l.locktype = 'advisory' and l.granted and l.objsubid = 1
       and l.database = (select oid from pg_database where datname = current_database())
       and l.classid::bigint = ($1::bigint >> 32) & 4294967295 and l.objid::bigint = $1::bigint & 4294967295`,
    [key],
  );
  return rows.map((r) => r.pid as number);
}

async function backendGone(pid: number): Promise<boolean> {
  const [r] = await db.sql`select count(*)::int as n from pg_stat_activity where pid = ${pid}`;
  return r!.n === 0;
}

async function handledCount(consumer: string): Promise<number> {
  const [r] = await db.sql`select count(*)::int as n from handled where consumer = ${consumer}`;
  return r!.n as number;
}

/**
 * Blocks the worker's coordination tick (it updates worker_nodes) by holding a
 * SHARE lock on worker_nodes, so a reconnecting session stays unhealthy until
 * `release()`. Reads of worker_nodes still work.
 */
async function blockTicks(): Promise<{ release(): Promise<void> }> {
  const r = await db.sql.reserve();
  await r`begin`;
  await r`lock table sluice.worker_nodes in share mode`;
  let done = false;
  return {
    async release() {
      if (done) return;
      done = true;
      await r`commit`;
      r.release();
    },
  };
}

before(async () => {
  db = await createTestDatabase("session");
  await db.sql`create table handled (consumer text, position bigint, primary key (consumer, position))`;
});
after(async () => {
  await stopAll();
  await db?.drop();
});

describe("session loss (#99, in-process)", () => {
  it("turns unhealthy, starts no batch, reconnects, holds its liveness lock again and goes on without duplicates", async () => {
    await stopAll();
    await append(db.sql, 3);
    const w = startWorker(db.sql, "sess");
    await waitFor("caught up", async () => w.status().healthy && (await checkpoint(db.sql, "sess")) === (await head(db.sql)));
    await waitFor("leader", () => w.status().leader && w.status().healthy);
    const before = await nodeRow(w);
    assert.deepEqual(await lockHolders(before.key), [before.pid], "the session backend holds the liveness lock");
    const [app] = await db.sql`select application_name from pg_stat_activity where pid = ${before.pid}`;
    assert.equal(app!.application_name, "sluice-session");

    const gate = await blockTicks();
    try {
      await db.sql`select pg_terminate_backend(${before.pid})`;
      await waitFor("unhealthy", () => !w.status().healthy);
      await waitFor("old backend gone", () => backendGone(before.pid));
      const n0 = await handledCount("sess");
      const during = (await append(db.sql, 2)).at(-1)!;
      await holds("no batch starts while the worker cannot prove it is alive", async () => !w.status().healthy && (await handledCount("sess")) === n0, 400);
      await gate.release();
      await waitFor("healthy again", () => w.status().healthy);
      await waitFor("the event appended meanwhile is handled", async () => (await checkpoint(db.sql, "sess")) >= during);
    } finally {
      await gate.release();
    }
    const last = (await append(db.sql, 2)).at(-1)!;
    await waitFor("processing continues", async () => (await checkpoint(db.sql, "sess")) === last);

    const after = await waitFor("heartbeat from the new backend", async () => {
      const r = await nodeRow(w);
      return r.pid !== before.pid && r;
    });
    assert.equal(after.key, before.key);
    assert.deepEqual(await lockHolders(after.key), [after.pid], "the new session backend holds the liveness lock");
    await waitFor("leader again", () => w.status().leader);
    const [dups] = await db.sql`select count(*)::int as n, count(distinct position)::int as d from handled where consumer = 'sess'`;
    assert.equal(dups!.n, dups!.d);
    assert.equal(dups!.n, Number(await head(db.sql)), "every event exactly once (no holes in this log)");
    const s = w.status().consumers.find((c) => c.name === "sess")!;
    assert.equal(s.failures, 0, s.lastError);
  });

  it("stays unhealthy (starts no batch) while another session holds its liveness lock, and takes it back once free", async () => {
    await stopAll();
    const w = startWorker(db.sql, "sess_contended");
    await waitFor("registered, idle and caught up", async () =>
      w.status().healthy && w.status().consumers[0]?.state === "idle" && (await checkpoint(db.sql, "sess_contended")) === (await head(db.sql)));
    const before = await nodeRow(w);
    const gate = await blockTicks();
    const intruder = await db.sql.reserve();
    try {
      await db.sql`select pg_terminate_backend(${before.pid})`;
      await waitFor("unhealthy", () => !w.status().healthy);
      await waitFor("old backend gone", () => backendGone(before.pid));
      const [got] = await intruder`select pg_try_advisory_lock(${before.key}::bigint) as ok`;
      assert.equal(got!.ok, true, "the liveness lock was free once the old backend died");
      await gate.release(); // the worker reconnects and fails to take its lock back
      const cp = await checkpoint(db.sql, "sess_contended");
      await append(db.sql, 1);
      let broke = "";
      await holds(
        "the worker stays unhealthy and starts no batch while it cannot hold its liveness lock",
        async () => {
          if (w.status().healthy) broke = "worker.status().healthy became true";
          else if ((await checkpoint(db.sql, "sess_contended")) !== cp) broke = "a batch committed";
          return !broke;
        },
        1_500,
      ).catch(async (e) => {
        const holders = await lockHolders(before.key);
        throw new Error(`${(e as Error).message}: ${broke} while the liveness lock is held by backend(s) [${holders}] (the intruder), not by the worker`);
      });
      await intruder`select pg_advisory_unlock(${before.key}::bigint)`;
      const mine = await waitFor("the worker holds its liveness lock again", async () => {
        const r = await nodeRow(w);
        const holders = await lockHolders(r.key);
        return holders.length === 1 && holders[0] === r.pid && r.pid !== before.pid && r.pid;
      });
      assert.ok(mine);
      await waitFor("healthy", () => w.status().healthy);
      await waitFor("caught up", async () => (await checkpoint(db.sql, "sess_contended")) === (await head(db.sql)));
    } finally {
      await gate.release();
      await intruder`select pg_advisory_unlock_all()`.catch(() => {});
      intruder.release();
    }
  });
});

/**
 * A TCP proxy in front of PostgreSQL that counts what clients send: Execute
 * and simple Query messages (statements), and Sync, Flush and simple Query
 * messages (round trips: postgres.js sends Parse/Describe/Flush and waits
 * before Bind/Execute/Sync for an unprepared statement with parameters). The worker's session and LISTEN connections go through it
 * (`directUrl`), which the postgres.js debug callback of the user's client
 * cannot see.
 */
async function countingProxy(target: string): Promise<{ url: string; statements: () => number; roundTrips: () => number; close(): Promise<void> }> {
  let statements = 0;
  let roundTrips = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const t = new URL(target);
    const upstream = tcpConnect(Number(t.port || 5432), t.hostname);
    sockets.add(client).add(upstream);
    let buf = Buffer.alloc(0);
    let started = false;
    client.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (!started) {
          // Untyped: SSLRequest / GSSENCRequest (then the startup message) or the startup message.
          if (buf.length < 8) break;
          const len = buf.readInt32BE(0);
          if (buf.length < len) break;
          const code = buf.readInt32BE(4);
          started = code !== 80877103 && code !== 80877104;
          buf = buf.subarray(len);
          continue;
        }
        if (buf.length < 5) break;
        const len = buf.readInt32BE(1);
        if (buf.length < 1 + len) break;
        const type = String.fromCharCode(buf[0]!);
        if (type === "E" || type === "Q") statements++;
        if (type === "S" || type === "H" || type === "Q") roundTrips++; // Sync, Flush (describe first), Query
        buf = buf.subarray(1 + len);
      }
    });
    client.pipe(upstream);
    upstream.pipe(client);
    const kill = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on("error", kill);
      s.on("close", kill);
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const u = new URL(target);
  u.hostname = "127.0.0.1";
  u.port = String((server.address() as AddressInfo).port);
  return {
    url: u.toString(),
    statements: () => statements,
    roundTrips: () => roundTrips,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe("idle cost", () => {
  it("an idle notify-mode worker (default settings) sends few statements per second", async () => {
    await stopAll();
    const proxy = await countingProxy(db.url);
    try {
      let pool = 0;
      const sql = db.client({ debug: () => void pool++ });
      const w = createWorker({ sql, directUrl: proxy.url, consumers: [{ name: "idle" }], dispatcher: "notify", logger: silent });
      track(w, "idle");
      await waitFor("idle at head", async () => {
        const c = w.status().consumers.find((s) => s.name === "idle");
        return c?.state === "idle" && c.checkpoint === (await head(db.sql));
      });
      await holds("settled", () => w.status().consumers[0]?.state === "idle", 1_000);

      // pg_stat_statements needs shared_preload_libraries; use it when it works.
      let pgss = true;
      try {
        await db.sql`create extension if not exists pg_stat_statements`;
        await db.sql`select pg_stat_statements_reset()`;
      } catch (e) {
        pgss = false;
        console.log(`[session/${runtime}] pg_stat_statements unavailable (${(e as Error).message}): skipping its assertion; counting the pool with the postgres.js debug callback and the session + LISTEN connections with a counting TCP proxy (directUrl)`);
      }
      const p0 = pool;
      const s0 = proxy.statements();
      const r0 = proxy.roundTrips();
      const t0 = Date.now();
      await holds("stays idle", () => w.status().consumers[0]?.state === "idle", 3_000, 50);
      const secs = (Date.now() - t0) / 1_000;
      const poolRate = (pool - p0) / secs;
      const sessionRate = (proxy.statements() - s0) / secs;
      const sessionTrips = (proxy.roundTrips() - r0) / secs;
      let pgssRate: number | undefined;
      if (pgss) {
        const [r] = await db.sql`select coalesce(sum(calls), 0)::int as n from pg_stat_statements
          where dbid = (select oid from pg_database where datname = current_database()) and query not ilike '%pg_stat_statements%'`;
        pgssRate = (r!.n as number) / secs;
      }
      console.log(
        `[session/${runtime}] idle notify worker over ${secs.toFixed(1)} s: pool ${poolRate.toFixed(2)} q/s, ` +
          `session ${sessionRate.toFixed(2)} q/s (${sessionTrips.toFixed(2)} round trips/s), total ${(poolRate + sessionRate).toFixed(2)} q/s` +
          (pgssRate === undefined ? "" : `; pg_stat_statements ${pgssRate.toFixed(2)} q/s`),
      );
      assert.ok(sessionRate > 0, "the proxy saw the coordination tick");
      assert.ok(poolRate + sessionRate < 10, `pool + session: ${poolRate + sessionRate} q/s`);
      if (pgssRate !== undefined) assert.ok(pgssRate < 10, `pg_stat_statements: ${pgssRate} q/s`);
      await stopAll();
    } finally {
      await stopAll();
      await proxy.close();
    }
  });
});

describe("createWorker validation", () => {
  async function nothingWritten(): Promise<void> {
    const [r] = await db.sql`select
      (select count(*)::int from sluice.worker_nodes) as workers,
      (select count(*)::int from sluice.consumer_assignments where consumer_name like 'invalid%') as assignments,
      (select count(*)::int from pg_stat_activity where datname = current_database() and application_name = 'sluice-session') as sessions`;
    assert.deepEqual({ ...r }, { workers: 0, assignments: 0, sessions: 0 });
  }

  it("a bad option throws a ConfigError listing every bad field, and nothing reaches the database", async () => {
    await stopAll();
    await waitFor("no session left", async () => {
      const [r] = await db.sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = 'sluice-session'`;
      return r!.n === 0;
    });
    const bad = { sql: db.sql, consumers: [{ name: "invalid_a" }], batchSize: 0, dispatcher: "listen", notifyChannel: "no-dash", pollInterval: 5 };
    assert.throws(() => createWorker(bad as unknown as WorkerOptions), (e) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.code, "CONFIG_INVALID");
      assert.deepEqual(e.issues.map((i) => i.path).sort(), ["batchSize", "dispatcher", "notifyChannel", "pollInterval"]);
      for (const f of ["batchSize", "dispatcher", "notifyChannel", "pollInterval"]) assert.match(e.message, new RegExp(`${f}:`));
      assert.match(e.message, /pollInterval: is not a known option/);
      return true;
    });
    assert.throws(
      () => createWorker({ sql: db.sql, consumers: [{ name: "invalid_b" }], pollIntervalMs: 5_000, maxPollIntervalMs: 1_000, logger: silent }),
      (e) => e instanceof ConfigError && e.issues.length === 1 && e.issues[0]!.path === "maxPollIntervalMs",
    );
    await nothingWritten();
  });

  it("a missing or wrong sql is a clear CONFIG_INVALID error", async () => {
    for (const sql of [undefined, null, {}, "postgres://x"]) {
      assert.throws(
        () => createWorker({ sql, consumers: [{ name: "invalid_c" }] } as unknown as WorkerOptions),
        (e) => isSluiceError(e, "CONFIG_INVALID") && /sql: must be a postgres\.js client/.test((e as Error).message),
      );
    }
    assert.throws(() => createWorker(undefined as unknown as WorkerOptions), (e) => isSluiceError(e, "CONFIG_INVALID") && /sql/.test((e as Error).message));
    await nothingWritten();
  });

  it("a valid worker touches no database until it starts; stop() before start() is fine", async () => {
    const w = createWorker({ sql: db.sql, consumers: [{ name: "invalid_d" }], logger: silent });
    assert.equal(w.status().running, false);
    assert.equal(w.status().healthy, false);
    await nothingWritten();
    await w.stop();
    await assert.rejects(w.start(), (e) => isSluiceError(e, "WORKER_STOPPED"));
    await nothingWritten();
  });
});
