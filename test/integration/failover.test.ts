/**
 * Failures with workers as real child processes: stale rows at startup,
 * ownership taken away, a deleted registration, kill -9 of a worker and of
 * the leader, a terminated session backend. Durations are measured and
 * printed (`# failover ...`), never asserted tightly: waits are generous.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { holds, type TestDatabase, waitFor } from "../support/db.ts";
import { append } from "../support/events.ts";
import {
  allPositions,
  assignments,
  checkpoints,
  type Child,
  Cluster,
  handledRows,
  impostor,
  isBalanced,
  leaderKey,
  livenessKey,
  lockHolder,
  waitCaughtUp,
  closeCluster,
  openCluster,
} from "../support/cluster.ts";

describe("failover: workers as child processes", () => {
  let db: TestDatabase;
  let cluster: Cluster;
  before(async () => {
    ({ db, cluster } = await openCluster("failover"));
  });
  after(() => closeCluster(db, cluster));

  const owners = (consumers: readonly string[]) => assignments(db.sql, consumers);
  const ownerOf = async (consumer: string) => (await owners([consumer])).get(consumer) ?? null;
  const workerRows = async () => (await db.sql`select worker_id::text as id from sluice.worker_nodes order by 1`).map((r) => r.id as string);
  const report = (what: string) => console.log(`# failover: ${what}`);

  /** Every consumer handled every event exactly once; events after `cutoff` by the owner's label. */
  async function assertExactlyOnce(consumers: readonly string[], cutoff?: bigint) {
    const all = await allPositions(db.sql);
    const now = await owners(consumers);
    for (const c of consumers) {
      const rows = await handledRows(db.sql, c);
      assert.deepEqual(rows.map((r) => r.position), all, `${c} handled every event once`);
      if (cutoff === undefined) continue;
      const by = cluster.labelOf(now.get(c) ?? null);
      for (const r of rows.filter((r) => r.position > cutoff)) assert.equal(r.by, by, `${c}@${r.position}`);
    }
    assert.deepEqual(cluster.batchErrors(), []);
  }

  /** A worker row as a dead process leaves it: heartbeat `ageMs` ago, liveness lock free. */
  async function deadRow(ageMs: number, consumers: string[]): Promise<string> {
    const id = randomUUID();
    await db.sql`insert into sluice.worker_nodes (worker_id, heartbeat_at, consumers, liveness_key)
                 values (${id}, now() - ${ageMs} * interval '1 millisecond', ${consumers}, ${livenessKey(id).toString()})`;
    for (const c of consumers) {
      await db.sql`insert into sluice.consumer_assignments (consumer_name, worker_id) values (${c}, ${id})
                   on conflict (consumer_name) do update set worker_id = excluded.worker_id`;
    }
    return id;
  }

  it("startup cleanup: a row silent for over 2 x heartbeatTimeoutMs is deleted, a newer one kept but not live", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    const options = { heartbeatTimeoutMs: 2_000 };
    // The row is written after the child has loaded its modules, right before it starts.
    const x1 = await cluster.spawn("x1", { consumers: ["stale_c"], options });
    const veryStale = await deadRow(5_000, ["stale_c"]);
    await cluster.go(x1);
    assert.deepEqual(await workerRows(), [x1.workerId], "the -5 s row was deleted at startup");
    await waitFor("stale_c taken by x1", async () => (await ownerOf("stale_c")) === x1.workerId);
    assert.notEqual(x1.workerId, veryStale);
    assert.equal(await cluster.stop(x1), 0);

    const x2 = await cluster.spawn("x2", { consumers: ["stale_c"], options });
    const stale = await deadRow(3_000, ["stale_c"]);
    await cluster.go(x2);
    assert.deepEqual(await workerRows(), [stale, x2.workerId].sort(), "the -3 s row is newer than 4 s: kept");
    await waitFor("stale_c taken by x2 (the -3 s row is not live)", async () => (await ownerOf("stale_c")) === x2.workerId);
    await append(db.sql, 1);
    await waitCaughtUp(db.sql, ["stale_c"]);
    await assertExactlyOnce(["stale_c"]);
    assert.equal(await cluster.stop(x2), 0);
    await db.sql`delete from sluice.worker_nodes where worker_id = ${stale}`;
  });

  it("ownership lost: no batch commits while another live worker owns the consumer; it comes back when that one dies", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    // Slow ticks (1 s) so the worker usually meets the change in its batch fence before its tick sees it.
    const w = await cluster.start("sb1", {
      consumers: ["sb"],
      options: { heartbeatIntervalMs: 1_000, heartbeatTimeoutMs: 3_000, rebalanceIntervalMs: 1_000 },
    });
    await waitFor("sb owned by sb1", async () => (await ownerOf("sb")) === w.workerId);
    await append(db.sql, 2);
    await waitCaughtUp(db.sql, ["sb"]);

    // A live impostor (the test holds its liveness lock and beats) takes sb behind sb1's back.
    const imp = await impostor(db.sql, ["sb"]);
    try {
      await db.sql`update sluice.consumer_assignments set worker_id = ${imp.workerId} where consumer_name = 'sb'`;
      const cp = (await checkpoints(db.sql, ["sb"])).get("sb");
      const rows = (await handledRows(db.sql, "sb")).length;
      const [p] = await append(db.sql, 1);
      await holds("sb stays with the impostor, unprocessed", async () =>
        (await ownerOf("sb")) === imp.workerId && (await checkpoints(db.sql, ["sb"])).get("sb") === cp &&
        (await handledRows(db.sql, "sb")).length === rows, 1_000);
      await waitFor("sb1 let go of sb", () => w.status?.consumers.length === 0);
      assert.equal(w.exit, undefined, "sb1 keeps running");

      const t0 = Date.now();
      await imp.die();
      await waitFor("sb back on sb1", async () => (await ownerOf("sb")) === w.workerId);
      const owned = Date.now() - t0;
      await waitCaughtUp(db.sql, ["sb"]);
      const caught = Date.now() - t0;
      report(`ownership lost: impostor died -> sb reassigned in ${owned} ms, processed in ${caught} ms (1 s ticks)`);
      await assertExactlyOnce(["sb"]);
      assert.equal((await handledRows(db.sql, "sb")).find((r) => r.position === p)?.by, "sb1");
    } finally {
      await imp.die();
    }
    assert.equal(await cluster.stop(w), 0);
  });

  it("a worker whose registration row is deleted stops with REGISTRATION_LOST and commits nothing more", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    const w = await cluster.start("rl1", { consumers: ["rl"] });
    await waitFor("rl owned by rl1", async () => (await ownerOf("rl")) === w.workerId);
    await waitCaughtUp(db.sql, ["rl"]);
    const rows = (await handledRows(db.sql, "rl")).length;
    await db.sql`delete from sluice.worker_nodes where worker_id = ${w.workerId}`;
    await append(db.sql, 1);
    const t0 = Date.now();
    const exit = await waitFor("rl1 exits", () => w.exit, { timeoutMs: 15_000 });
    report(`registration lost: worker exited ${Date.now() - t0} ms after its row was deleted`);
    assert.equal(exit.code, 1);
    const last = w.lines.at(-1)!;
    assert.match(String(last.error), /registration/i);
    assert.equal(await ownerOf("rl"), null);
    assert.equal((await handledRows(db.sql, "rl")).length, rows, "nothing committed after the row was deleted");
    assert.deepEqual(cluster.batchErrors(), []);
  });

  it("kill -9 during an open batch: its writes roll back and a live worker handles the range exactly once", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    const a = await cluster.start("ob1", { consumers: ["ob"], slow: { aggregateType: "Slow_ob", delayMs: 30_000 } });
    await waitFor("ob on ob1", async () => (await ownerOf("ob")) === a.workerId);
    await waitCaughtUp(db.sql, ["ob"]);
    const b = await cluster.start("ob2", { consumers: ["ob"] });
    const [p] = await append(db.sql, [{ aggregateType: "Slow_ob" }]);
    const open = await cluster.slowBatch(a);
    assert.equal(open.to, p);
    const t0 = Date.now();
    await cluster.kill(a);
    await waitFor("ob on ob2", async () => (await ownerOf("ob")) === b.workerId, { timeoutMs: 15_000 });
    const owned = Date.now() - t0;
    await waitCaughtUp(db.sql, ["ob"], { timeoutMs: 15_000 });
    report(`kill -9 mid-batch: consumer reassigned in ${owned} ms, range handled again in ${Date.now() - t0} ms`);
    await assertExactlyOnce(["ob"], open.from);
    assert.equal(await cluster.stop(b), 0);
  });

  it("a terminated batch connection fails just that batch: the worker retries it and keeps running", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    const w = await cluster.start("tb1", { consumers: ["tb"], slow: { aggregateType: "Slow_tb", delayMs: 1_000 } });
    await waitFor("tb on tb1", async () => (await ownerOf("tb")) === w.workerId);
    await waitCaughtUp(db.sql, ["tb"]);
    const [p] = await append(db.sql, [{ aggregateType: "Slow_tb" }]);
    await cluster.slowBatch(w);
    // The batch transaction: the only one of this database idle in a transaction with an xid.
    const [b] = await db.sql`select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()
                             and state like 'idle in transaction%' and backend_xid is not null`;
    assert.ok(b, "the open batch's backend");
    await db.sql`select pg_terminate_backend(${b.pid})`;
    // The handler's next query through batch.tx meets the dead connection: that batch fails, the process must not.
    const end = await waitFor("tb handled again, or tb1 gone", async () =>
      w.exit ? "exited" : (await checkpoints(db.sql, ["tb"])).get("tb") === p && "handled", { timeoutMs: 15_000 });
    assert.equal(end, "handled", `tb1 exited ${JSON.stringify(w.exit)}: ${w.stderr.split("\n").filter((l) => !l.includes(" info]")).join(" | ")}`);
    assert.equal((await handledRows(db.sql, "tb")).find((r) => r.position === p)?.by, "tb1");
    assert.equal(await cluster.stop(w), 0);
  });

  it("a handler that outlives batchTimeoutMs cannot write through batch.tx after its batch rolled back", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    const w = await cluster.start("lw1", {
      consumers: ["lw"],
      options: { batchTimeoutMs: 300 },
      slow: { aggregateType: "Slow_lw", delayMs: 1_000, lateWrite: true },
    });
    await waitCaughtUp(db.sql, ["lw"]);
    const [p] = await append(db.sql, [{ aggregateType: "Slow_lw" }]);
    await cluster.slowBatch(w);
    await waitCaughtUp(db.sql, ["lw"]); // the retry (not slow) handles it
    const late = await waitFor("the late write", () => w.lines.find((l) => l.lateWrite)?.lateWrite as string | undefined);
    const [r] = await db.sql`select count(*)::int as n from handled where consumer = 'lw:late'`;
    assert.equal(r!.n, 0, `a write after the rollback landed outside any batch (lateWrite: ${late})`);
    assert.notEqual(late, "ok");
    assert.equal((await handledRows(db.sql, "lw")).find((x) => x.position === p)?.by, "lw1");
    assert.equal(await cluster.stop(w), 0);
  });

  const K = ["k1", "k2", "k3", "k4", "k5", "k6"];
  let ka: Child;
  let kc: Child;

  it("kill -9 of a worker that is not the leader: its consumers move to live workers and make progress", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    ka = await cluster.start("ka", { consumers: K });
    await waitFor("ka leads", () => ka.status?.leader);
    const [kb, kc_] = await Promise.all([cluster.start("kb", { consumers: K }), cluster.start("kc", { consumers: K })]);
    kc = kc_!;
    await waitFor("2/2/2", async () => isBalanced(await owners(K), [ka.workerId, kb!.workerId, kc.workerId]));
    await waitCaughtUp(db.sql, K);
    assert.equal(kb!.status?.leader, false);
    const victims = [...(await owners(K))].filter(([, w]) => w === kb!.workerId).map(([c]) => c);
    assert.equal(victims.length, 2);

    const cutoff = (await allPositions(db.sql)).at(-1)!;
    const t0 = Date.now();
    await cluster.kill(kb!);
    await append(db.sql, 1);
    await waitFor("victims owned by live workers", async () =>
      [...(await owners(victims)).values()].every((w) => w === ka.workerId || w === kc.workerId), { timeoutMs: 15_000 });
    const owned = Date.now() - t0;
    await waitCaughtUp(db.sql, K, { timeoutMs: 15_000 });
    const caught = Date.now() - t0;
    await waitFor("3/3", async () => isBalanced(await owners(K), [ka.workerId, kc.workerId]));
    report(`kill -9 non-leader: consumers reassigned in ${owned} ms, caught up in ${caught} ms`);
    await assertExactlyOnce(K, cutoff);
    assert.equal(ka.status?.leader, true, "the leader did not change");
  });

  it("kill -9 of the leader: another worker leads, takes its consumers, and they make progress", async () => {
    const kd = await cluster.start("kd", { consumers: K });
    const live = [ka.workerId, kc.workerId, kd.workerId];
    await waitFor("2/2/2", async () => isBalanced(await owners(K), live));
    await waitCaughtUp(db.sql, K);
    assert.equal(ka.status?.leader, true);
    const victims = [...(await owners(K))].filter(([, w]) => w === ka.workerId).map(([c]) => c);

    const cutoff = (await allPositions(db.sql)).at(-1)!;
    const t0 = Date.now();
    await cluster.kill(ka);
    await append(db.sql, 1);
    await waitFor("a new leader", async () => (kc.status?.leader || kd.status?.leader) && (await lockHolder(db.sql, leaderKey())) !== undefined, {
      timeoutMs: 15_000,
    });
    const led = Date.now() - t0;
    await waitFor("victims owned by live workers", async () =>
      [...(await owners(victims)).values()].every((w) => w === kc.workerId || w === kd.workerId), { timeoutMs: 15_000 });
    const owned = Date.now() - t0;
    await waitCaughtUp(db.sql, K, { timeoutMs: 15_000 });
    const caught = Date.now() - t0;
    await waitFor("3/3", async () => isBalanced(await owners(K), [kc.workerId, kd.workerId]));
    report(`kill -9 leader: new leader in ${led} ms, consumers reassigned in ${owned} ms, caught up in ${caught} ms`);
    await assertExactlyOnce(K, cutoff);
    assert.ok(kc.status?.leader !== kd.status?.leader, "exactly one leader");
    assert.deepEqual(await Promise.all([cluster.stop(kc), cluster.stop(kd)]), [0, 0]);
  });

  // A frozen process (SIGSTOP: a VM pause, a stuck event loop) keeps its TCP
  // connections, so its session locks stay held: only the heartbeat tells.
  const F = ["f1", "f2", "f3", "f4"];
  async function frozenPair(slow?: boolean) {
    await cluster.killAll(); // leftovers of a failed test only
    const leader = await cluster.start("fa", { consumers: F });
    await waitFor("fa leads", () => leader.status?.leader);
    const other = await cluster.start("fb", {
      consumers: F,
      options: { batchTimeoutMs: 2_000 },
      slow: slow ? { aggregateType: "Slow_fb", delayMs: 60_000 } : undefined,
    });
    await waitFor("2/2", async () => isBalanced(await owners(F), [leader.workerId, other.workerId]));
    await waitCaughtUp(db.sql, F);
    return { leader, other };
  }

  it("a frozen worker loses its consumers after heartbeatTimeoutMs; thawed, it commits nothing stale and rejoins", async () => {
    const { leader: fa, other: fb } = await frozenPair();
    const cutoff = (await allPositions(db.sql)).at(-1) ?? 0n;
    const t0 = Date.now();
    cluster.freeze(fb);
    await append(db.sql, 1);
    await waitFor("all on fa", async () => [...(await owners(F)).values()].every((w) => w === fa.workerId), { timeoutMs: 15_000 });
    const owned = Date.now() - t0;
    await waitCaughtUp(db.sql, F, { timeoutMs: 15_000 });
    report(`frozen non-leader (heartbeatTimeoutMs 1000): consumers reassigned in ${owned} ms, caught up in ${Date.now() - t0} ms`);
    cluster.thaw(fb);
    await waitFor("2/2 again", async () => isBalanced(await owners(F), [fa.workerId, fb.workerId]), { timeoutMs: 15_000 });
    await append(db.sql, 1);
    await waitCaughtUp(db.sql, F);
    await assertExactlyOnce(F);
    const rows = await db.sql`select count(*)::int as n from handled where consumer in ${db.sql(F)} and handled_by = 'fb' and position > ${cutoff.toString()}`;
    assert.equal(rows[0]!.n, 2, "fb handled only the last event of its 2 consumers after thawing");
    assert.deepEqual(await Promise.all([cluster.stop(fa), cluster.stop(fb)]), [0, 0]);
  });

  it("a worker frozen during a batch does not pin its consumer forever (batchTimeoutMs 2000)", async () => {
    const { leader: fa, other: fb } = await frozenPair(true);
    await append(db.sql, [{ aggregateType: "Slow_fb" }]);
    const open = await cluster.slowBatch(fb);
    const t0 = Date.now();
    cluster.freeze(fb);
    try {
      await waitFor(`${open.consumer} (open batch on the frozen fb) reassigned`, async () => (await ownerOf(open.consumer)) === fa.workerId, {
        timeoutMs: 20_000,
      });
      await waitCaughtUp(db.sql, F, { timeoutMs: 20_000 });
      report(`frozen mid-batch: ${open.consumer} reassigned and caught up in ${Date.now() - t0} ms`);
      await assertExactlyOnce(F);
    } finally {
      await cluster.kill(fb);
    }
    assert.equal(await cluster.stop(fa), 0);
  });

  it("a frozen leader does not stop the others from taking its consumers", async () => {
    const { leader: fa, other: fb } = await frozenPair();
    const t0 = Date.now();
    cluster.freeze(fa);
    try {
      await append(db.sql, 1);
      await waitFor("all on fb", async () => [...(await owners(F)).values()].every((w) => w === fb.workerId), { timeoutMs: 20_000 });
      await waitCaughtUp(db.sql, F, { timeoutMs: 20_000 });
      report(`frozen leader: consumers reassigned and caught up in ${Date.now() - t0} ms`);
      await assertExactlyOnce(F);
    } finally {
      await cluster.kill(fa);
    }
    assert.equal(await cluster.stop(fb), 0);
  });

  it("a terminated session backend: the worker re-locks on a new session and the cluster keeps processing", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    const T = ["t1", "t2", "t3", "t4"];
    const te = await cluster.start("te", { consumers: T });
    await waitFor("te leads", () => te.status?.leader);
    const tf = await cluster.start("tf", { consumers: T });
    await waitFor("2/2", async () => isBalanced(await owners(T), [te.workerId, tf.workerId]));
    await waitCaughtUp(db.sql, T);

    const pid = await lockHolder(db.sql, leaderKey());
    assert.ok(pid !== undefined);
    assert.equal(await lockHolder(db.sql, livenessKey(te.workerId)), pid, "the leader's session holds its liveness lock");
    const [app] = await db.sql`select application_name from pg_stat_activity where pid = ${pid}`;
    assert.equal(app?.application_name, "sluice-session");

    const t0 = Date.now();
    const [r] = await db.sql`select pg_terminate_backend(${pid}) as ok`;
    assert.equal(r!.ok, true);
    await append(db.sql, 2);
    const relocked = await waitFor("te holds its liveness lock on a new session", async () => {
      const p = await lockHolder(db.sql, livenessKey(te.workerId));
      return p !== undefined && p !== pid && p;
    }, { timeoutMs: 15_000 });
    const tRelock = Date.now() - t0;
    await waitFor("a leader", async () => (await lockHolder(db.sql, leaderKey())) !== undefined, { timeoutMs: 15_000 });
    const tLeader = Date.now() - t0;
    await waitCaughtUp(db.sql, T, { timeoutMs: 15_000 });
    const tCaught = Date.now() - t0;
    await waitFor("both healthy, 2/2 again", async () =>
      te.status?.healthy && tf.status?.healthy && isBalanced(await owners(T), [te.workerId, tf.workerId]), { timeoutMs: 15_000 });
    const tBalanced = Date.now() - t0;
    report(
      `terminated leader session: re-locked in ${tRelock} ms (pid ${pid} -> ${relocked}), a leader in ${tLeader} ms, ` +
        `caught up in ${tCaught} ms, rebalanced in ${tBalanced} ms; leader now ${te.status?.leader ? "te" : "tf"}`,
    );
    await waitFor("worker_nodes.backend_pid follows the new session", async () => {
      const [row] = await db.sql`select backend_pid from sluice.worker_nodes where worker_id = ${te.workerId}`;
      return row?.backend_pid === relocked;
    });
    assert.equal(te.exit, undefined);
    assert.equal(tf.exit, undefined);
    await assertExactlyOnce(T);
    assert.deepEqual(await Promise.all([cluster.stop(te), cluster.stop(tf)]), [0, 0]);
  });
});
