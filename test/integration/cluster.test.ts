/**
 * Several workers as real child processes sharing one database: scale up and
 * down, restart, sticky rebalancing, capabilities, two deployments side by
 * side. Every child inserts one `handled` row per event and consumer through
 * the batch transaction (primary key (consumer, position)), so a duplicate
 * delivery fails its batch and shows up as a batch error.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { migrate } from "../../src/db/migrate.ts";
import { holds, type TestDatabase, waitFor } from "../support/db.ts";
import { append } from "../support/events.ts";
import {
  allPositions,
  assignments,
  checkpoints,
  type Child,
  Cluster,
  countPerWorker,
  handledRows,
  isBalanced,
  leaderKey,
  lockHolder,
  waitCaughtUp,
  closeCluster,
  openCluster,
} from "../support/cluster.ts";
import { silent } from "../support/worker.ts";

describe("cluster: workers as child processes", () => {
  let db: TestDatabase;
  let cluster: Cluster;
  before(async () => {
    ({ db, cluster } = await openCluster("cluster"));
  });
  after(() => closeCluster(db, cluster));

  const owners = (consumers: readonly string[], schema?: string) => assignments(db.sql, consumers, schema);
  const workerRows = async () => (await db.sql`select worker_id::text as id from sluice.worker_nodes order by 1`).map((r) => r.id as string);

  /** Every consumer handled every event exactly once, and events after `cutoff` by the expected worker. */
  async function assertExactlyOnce(consumers: readonly string[], byAfter: (consumer: string) => string | string[], cutoff: bigint) {
    const all = await allPositions(db.sql);
    for (const c of consumers) {
      const rows = await handledRows(db.sql, c);
      assert.deepEqual(rows.map((r) => r.position), all, `${c} handled every event once`);
      const want = [byAfter(c)].flat();
      for (const r of rows.filter((r) => r.position > cutoff)) assert.ok(want.includes(r.by), `${c}@${r.position} handled by ${r.by}, expected ${want}`);
    }
    assert.deepEqual(cluster.batchErrors(), []);
  }

  // Scenarios 1, 2 and 6 share these consumers and run in sequence.
  const C4 = ["c1", "c2", "c3", "c4"];
  let w1: Child;
  let w2: Child;

  it("scale up: a second worker takes half the consumers; every event once, handled by both", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    await append(db.sql, 5);
    w1 = await cluster.start("w1", { consumers: C4 });
    await waitFor("w1 owns all 4", async () => [...(await owners(C4)).values()].every((w) => w === w1.workerId));
    await waitCaughtUp(db.sql, C4);

    w2 = await cluster.start("w2", { consumers: C4 });
    const split = await waitFor("2/2 split", async () => {
      const a = await owners(C4);
      return isBalanced(a, [w1.workerId, w2.workerId]) && a;
    });
    assert.deepEqual([...countPerWorker(split).values()], [2, 2]);
    await holds("the split is stable", async () => [...(await owners(C4))].every(([c, w]) => split.get(c) === w), 300);

    const cutoff = (await allPositions(db.sql)).at(-1)!;
    await append(db.sql, 3);
    await waitCaughtUp(db.sql, C4);
    await assertExactlyOnce(C4, (c) => cluster.labelOf(split.get(c)!)!, cutoff);
    const labels = new Set((await db.sql`select distinct handled_by from handled where consumer in ${db.sql(C4)} and position > ${cutoff.toString()}`)
      .map((r) => r.handled_by));
    assert.deepEqual([...labels].sort(), ["w1", "w2"]);
  });

  it("scale down: a graceful stop deregisters at once and the survivor takes everything", async () => {
    const t0 = Date.now();
    assert.equal(await cluster.stop(w2), 0);
    // Deregistered before exiting: no row, and none of its consumers point at it.
    assert.deepEqual(await workerRows(), [w1.workerId]);
    assert.ok([...(await owners(C4)).values()].every((w) => w !== w2.workerId));
    await waitFor("w1 owns all 4", async () => [...(await owners(C4)).values()].every((w) => w === w1.workerId));
    const took = Date.now() - t0;
    assert.deepEqual(await workerRows(), [w1.workerId]);

    const cutoff = (await allPositions(db.sql)).at(-1)!;
    await append(db.sql, 3);
    await waitCaughtUp(db.sql, C4);
    await assertExactlyOnce(C4, () => "w1", cutoff);
    console.log(`# scale down: w1 owned all 4 consumers ${took} ms after SIGTERM to w2`);
  });

  it("a restarted worker (new id) resumes from the persisted checkpoints", async () => {
    assert.equal(await cluster.stop(w1), 0);
    assert.deepEqual(await workerRows(), []);
    assert.deepEqual([...(await owners(C4)).values()], [null, null, null, null]);
    const before = await checkpoints(db.sql, C4);
    const cutoff = (await allPositions(db.sql)).at(-1)!;
    assert.ok([...before.values()].every((p) => p === cutoff));

    await append(db.sql, 2);
    const w3 = await cluster.start("w3", { consumers: C4 });
    assert.notEqual(w3.workerId, w1.workerId);
    await waitCaughtUp(db.sql, C4);
    await assertExactlyOnce(C4, () => "w3", cutoff);
    const [r] = await db.sql`select count(*)::int as n from handled where consumer in ${db.sql(C4)} and handled_by = 'w3'`;
    assert.equal(r!.n, 4 * 2, "w3 handled only the 2 new events of each consumer");
    assert.equal(await cluster.stop(w3), 0);
  });

  // A graceful stop while a batch is open: it commits if it ends within shutdownTimeoutMs, else rolls back.
  for (const [name, delayMs, shutdownTimeoutMs, commits] of [["drain_ok", 600, 2_000, true], ["drain_late", 10_000, 300, false]] as const) {
    it(`SIGTERM during a batch of ${delayMs} ms with shutdownTimeoutMs ${shutdownTimeoutMs}: it ${commits ? "commits" : "rolls back"}; the successor goes on exactly once`, async () => {
      await cluster.killAll(); // leftovers of a failed test only
      const first = await cluster.start(`${name}1`, { consumers: [name], options: { shutdownTimeoutMs }, slow: { aggregateType: `Slow_${name}`, delayMs } });
      await waitFor(`${name} on the first worker`, async () => (await owners([name])).get(name) === first.workerId);
      await waitCaughtUp(db.sql, [name]);
      const second = await cluster.start(`${name}2`, { consumers: [name] });
      const [p] = await append(db.sql, [{ aggregateType: `Slow_${name}` }]);
      const open = await cluster.slowBatch(first);
      assert.equal(open.to, p);
      const t0 = Date.now();
      assert.equal(await cluster.stop(first), 0);
      const stopped = Date.now() - t0;
      // (The successor may already be at work: look at the first worker's rows only.)
      const rows = await handledRows(db.sql, name);
      assert.equal(rows.some((r) => r.position === p && r.by === first.label), commits, `the open batch ${commits ? "committed" : "rolled back"}`);
      if (!commits) assert.ok(stopped < delayMs, `stopped in ${stopped} ms, before the batch would have ended`);
      await append(db.sql, 1);
      await waitCaughtUp(db.sql, [name]);
      await assertExactlyOnce([name], () => `${name}2`, commits ? p! : open.from);
      assert.equal(await cluster.stop(second), 0);
    });
  }

  it("sticky: a 4th worker joining 3 balanced ones moves the minimum number of consumers", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    const S = ["s1", "s2", "s3", "s4", "s5", "s6"];
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((l) => cluster.start(l, { consumers: S })));
    const three = [a!.workerId, b!.workerId, c!.workerId];
    const before = await waitFor("2/2/2", async () => {
      const m = await owners(S);
      return isBalanced(m, three) && m;
    });
    await waitCaughtUp(db.sql, S);

    // Watch every owner each consumer has from now on.
    const seen = new Map(S.map((s) => [s, new Set<string | null>([before.get(s)!])]));
    let watching = true;
    const watch = (async () => {
      while (watching) {
        for (const [s, w] of await owners(S)) seen.get(s)!.add(w);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const d = await cluster.start("d", { consumers: S });
    const four = [...three, d.workerId];
    const final = await waitFor("balanced over 4", async () => {
      const m = await owners(S);
      return isBalanced(m, four) && m;
    });
    await holds("the assignment is stable", async () => [...(await owners(S))].every(([s, w]) => final.get(s) === w), 500);
    watching = false;
    await watch;

    // Minimum moves to reach floor/ceil from 2/2/2/0: the new worker needs floor(6/4) = 1.
    const lo = Math.floor(S.length / 4);
    const hi = Math.ceil(S.length / 4);
    const loads = four.map((w) => [...before.values()].filter((x) => x === w).length);
    const minimum = Math.max(loads.reduce((n, l) => n + Math.max(0, l - hi), 0), loads.reduce((n, l) => n + Math.max(0, lo - l), 0));
    assert.equal(minimum, 1);
    const moved = S.filter((s) => seen.get(s)!.size > 1);
    assert.equal(moved.length, minimum, `moved: ${moved.map((s) => `${s}: ${[...seen.get(s)!].map((w) => cluster.labelOf(w))}`)}`);
    for (const s of moved) assert.deepEqual([...seen.get(s)!], [before.get(s)!, d.workerId], "moved straight to the new worker, never unassigned");
    for (const w of four) {
      const k = countPerWorker(final).get(w) ?? 0;
      assert.ok(k >= lo && k <= hi, `${cluster.labelOf(w)} has ${k}`);
    }

    const cutoff = (await allPositions(db.sql)).at(-1)!;
    await append(db.sql, 2);
    await waitCaughtUp(db.sql, S);
    await assertExactlyOnce(S, (s) => cluster.labelOf(final.get(s)!)!, cutoff);
    assert.deepEqual(await Promise.all([a!, b!, c!, d].map((x) => cluster.stop(x))), [0, 0, 0, 0]);
  });

  it("a worker that lacks a consumer never gets it; with no capable worker left it stays unassigned", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    const full = await cluster.start("full", { consumers: ["cap_a", "cap_b"] });
    await waitFor("full owns both", async () => [...(await owners(["cap_a", "cap_b"])).values()].every((w) => w === full.workerId));
    const bOnFull = async () => (await owners(["cap_b"])).get("cap_b") === full.workerId;
    let bMoved = false;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        if (!(await bOnFull())) bMoved = true;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const partial = await cluster.start("partial", { consumers: ["cap_a"] });
    await waitFor("cap_a moves to partial", async () => (await owners(["cap_a"])).get("cap_a") === partial.workerId);
    await holds("cap_b stays on full", bOnFull, 500);
    watching = false;
    await watch;
    assert.equal(bMoved, false, "cap_b never left full");
    let cutoff = (await allPositions(db.sql)).at(-1)!;
    await append(db.sql, 2);
    await waitCaughtUp(db.sql, ["cap_a", "cap_b"]);
    await assertExactlyOnce(["cap_a"], () => "partial", cutoff);
    await assertExactlyOnce(["cap_b"], () => "full", cutoff);

    assert.equal(await cluster.stop(full), 0);
    await waitFor("cap_b unassigned, cap_a on partial", async () => {
      const m = await owners(["cap_a", "cap_b"]);
      return m.get("cap_b") === null && m.get("cap_a") === partial.workerId;
    });
    const bCheckpoint = (await checkpoints(db.sql, ["cap_b"])).get("cap_b")!;
    const bRows = (await handledRows(db.sql, "cap_b")).length;
    cutoff = (await allPositions(db.sql)).at(-1)!;
    await append(db.sql, 2);
    await waitCaughtUp(db.sql, ["cap_a"]);
    await holds("cap_b is neither assigned nor processed", async () => {
      const m = await owners(["cap_b"]);
      return m.get("cap_b") === null && (await checkpoints(db.sql, ["cap_b"])).get("cap_b") === bCheckpoint &&
        (await handledRows(db.sql, "cap_b")).length === bRows;
    }, 800);
    assert.deepEqual(partial.status?.consumers, ["cap_a"]);
    await assertExactlyOnce(["cap_a"], () => "partial", cutoff);
    assert.equal(await cluster.stop(partial), 0);
  });

  it("two deployments in one database: each has its own leader and processes its own events", async () => {
    await cluster.killAll(); // leftovers of a failed test only
    for (const schema of ["dep_a", "dep_b"]) await migrate(db.sql, { tables: { schema }, logger: silent });
    await append(db.sql, 3, "dep_a");
    await append(db.sql, 2, "dep_b");
    // The same consumer name in both deployments; `handled` tells them apart by prefix.
    const [a, b] = await Promise.all([
      cluster.start("A", { consumers: ["projection"], options: { tables: { schema: "dep_a" } }, handledPrefix: "dep_a/" }),
      cluster.start("B", { consumers: ["projection"], options: { tables: { schema: "dep_b" } }, handledPrefix: "dep_b/" }),
    ]);
    await waitFor("both lead at once", () => a!.status?.leader && b!.status?.leader);
    const [pa, pb] = await Promise.all([lockHolder(db.sql, leaderKey({ schema: "dep_a" })), lockHolder(db.sql, leaderKey({ schema: "dep_b" }))]);
    assert.ok(pa !== undefined && pb !== undefined && pa !== pb, `leader lock holders ${pa} / ${pb}`);
    assert.equal(await lockHolder(db.sql, leaderKey()), undefined, "the default deployment has no leader");

    await waitCaughtUp(db.sql, ["projection"], { schema: "dep_a", prefix: "dep_a/" });
    await waitCaughtUp(db.sql, ["projection"], { schema: "dep_b", prefix: "dep_b/" });
    for (const [schema, child] of [["dep_a", a!], ["dep_b", b!]] as const) {
      assert.equal((await owners(["projection"], schema)).get("projection"), child.workerId);
      const rows = await handledRows(db.sql, `${schema}/projection`);
      assert.deepEqual(rows.map((r) => r.position), await allPositions(db.sql, schema));
      assert.ok(rows.every((r) => r.by === child.label));
    }
    const rows = await workerRows();
    assert.ok(!rows.includes(a!.workerId) && !rows.includes(b!.workerId), "neither registered in the default deployment");
    assert.deepEqual(cluster.batchErrors(), []);
    assert.deepEqual(await Promise.all([cluster.stop(a!), cluster.stop(b!)]), [0, 0]);
  });
});
