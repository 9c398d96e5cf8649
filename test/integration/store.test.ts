import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { isSluiceError, type SluiceError } from "../../src/errors.ts";
import { createStore, type EventStore, type NewEvent } from "../../src/store/mod.ts";
import { holdAppend } from "../../src/store/testing.ts";
import { createTestDatabase, holds, type TestDatabase, waitFor } from "../support/db.ts";

const silent = { debug() {}, info() {}, warn() {}, error() {} };

let seq = 0;
const newId = (): string => `agg-${++seq}-${randomUUID().slice(0, 8)}`;
const ev = (aggregateId: string, extra: Partial<NewEvent> = {}): NewEvent => ({
  aggregateType: "Account",
  aggregateId,
  eventType: "Deposited",
  payload: { amount: seq },
  ...extra,
});

function conflict(expected: string, actual: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(isSluiceError(e, "CONCURRENCY_CONFLICT"), String(e));
    assert.match((e as Error).message, new RegExp(`expected version ${expected}, actual version ${actual}`));
    return true;
  };
}

describe("event store", () => {
  let db: TestDatabase;
  let store: EventStore;
  const rowsOf = async (id: string) =>
    (await db.sql`select aggregate_version::int as v from sluice.events where aggregate_id = ${id} order by 1`).map((r) => r.v as number);
  const lastValue = async () =>
    (await db.sql`select last_value::text as v from sluice.events_global_position_seq`)[0]!.v as string;
  const headVersion = async (id: string) =>
    (await db.sql`select aggregate_version::int as v from sluice.aggregate_heads where aggregate_id = ${id}`)[0]?.v as number | undefined;

  before(async () => {
    db = await createTestDatabase("store");
    store = createStore(db.sql, { logger: silent });
  });
  after(async () => {
    await db?.drop();
  });

  describe("append", () => {
    it("gives one aggregate's events consecutive versions and increasing positions", async () => {
      const id = newId();
      const r = await store.append(db.sql, [ev(id), ev(id, { eventType: "Withdrawn", eventVersion: 2 }), ev(id)], { expectedVersion: "no-stream" });
      assert.equal(r.version, 3);
      assert.deepEqual(r.events.map((e) => e.aggregateVersion), [1, 2, 3]);
      assert.deepEqual(r.events.map((e) => e.globalPosition), [r.firstPosition, r.firstPosition + 1n, r.firstPosition + 2n]);
      assert.equal(r.lastPosition, r.firstPosition + 2n);
      assert.equal(r.events[1]!.eventVersion, 2);
      assert.ok(r.events[0]!.createdAt instanceof Date);
      const [now] = await db.sql`select (extract(epoch from now()) * 1000)::float8 as ms`;
      assert.ok(Math.abs(r.events[0]!.createdAt.getTime() - now!.ms) < 60_000);
      const read = await store.readAggregate("Account", id);
      assert.deepEqual(read, r.events);
      assert.equal(await headVersion(id), 3);
    });

    it("exact versions: appends at the current version, conflicts otherwise and writes nothing", async () => {
      const id = newId();
      await store.append(db.sql, [ev(id), ev(id)], { expectedVersion: 0 });
      assert.equal((await store.append(db.sql, [ev(id)], { expectedVersion: 2 })).version, 3);
      const seqBefore = await lastValue();
      await assert.rejects(store.append(db.sql, [ev(id)], { expectedVersion: 2 }), conflict("2", "3"));
      await assert.rejects(store.append(db.sql, [ev(id)], { expectedVersion: 7 }), conflict("7", "3"));
      await assert.rejects(store.append(db.sql, [ev(newId())], { expectedVersion: 1 }), conflict("1", "0"));
      await assert.rejects(store.append(db.sql, [ev(id)], { expectedVersion: 0 }), conflict("0", "3"));
      const err = (await store.append(db.sql, [ev(id)], { expectedVersion: 1 }).then(() => assert.fail("no conflict"), (e: unknown) => e)) as SluiceError;
      assert.deepEqual([err.details.expectedVersion, err.details.actualVersion, err.details.aggregateId], [1, 3, id]);
      assert.deepEqual(await rowsOf(id), [1, 2, 3]);
      assert.equal(await lastValue(), seqBefore, "a failed check draws no position");
    });

    it("no-stream only for a new aggregate; any appends after whatever is there", async () => {
      const id = newId();
      assert.equal((await store.append(db.sql, [ev(id)], { expectedVersion: "no-stream" })).version, 1);
      await assert.rejects(store.append(db.sql, [ev(id)], { expectedVersion: "no-stream" }), conflict("no-stream", "1"));
      assert.equal((await store.append(db.sql, [ev(id), ev(id)], { expectedVersion: "any" })).version, 3);
      const fresh = newId();
      assert.equal((await store.append(db.sql, [ev(fresh)], { expectedVersion: "any" })).version, 1);
      assert.deepEqual(await rowsOf(id), [1, 2, 3]);
    });

    const waitForLockWait = () =>
      waitFor("the second appender to wait on the first", async () =>
        (await db.sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`)[0]!.n > 0);

    for (const mode of ["exact", "no-stream"] as const) {
      it(`two concurrent appenders (${mode}): one wins, the other conflicts with no partial rows`, async () => {
        const id = newId();
        const expectedVersion = mode === "exact" ? 1 : "no-stream";
        if (mode === "exact") await store.append(db.sql, [ev(id)], { expectedVersion: "no-stream" });
        const a = await holdAppend(db.sql, store, [ev(id), ev(id)], { expectedVersion });
        const b = db.sql.begin((tx) => store.append(tx, [ev(id), ev(id), ev(id)], { expectedVersion }));
        b.catch(() => {});
        await waitForLockWait();
        await a.commit();
        const won = mode === "exact" ? 3 : 2;
        await assert.rejects(b, conflict(mode === "exact" ? "1" : "no-stream", String(won)));
        assert.deepEqual(await rowsOf(id), mode === "exact" ? [1, 2, 3] : [1, 2]);
        assert.equal(await headVersion(id), won);
      });
    }

    it("two concurrent appenders (any): both succeed, one after the other", async () => {
      const id = newId();
      const a = await holdAppend(db.sql, store, [ev(id), ev(id)], { expectedVersion: "any" });
      const b = db.sql.begin((tx) => store.append(tx, [ev(id), ev(id), ev(id)], { expectedVersion: "any" }));
      await waitForLockWait();
      await a.commit();
      assert.deepEqual((await b).events.map((e) => e.aggregateVersion), [3, 4, 5]);
      assert.deepEqual(await rowsOf(id), [1, 2, 3, 4, 5]);
    });

    it("under REPEATABLE READ the loser conflicts with SQLSTATE 40001", async () => {
      const id = newId();
      await store.append(db.sql, [ev(id)], { expectedVersion: "no-stream" });
      const a = await holdAppend(db.sql, store, [ev(id)], { expectedVersion: 1 });
      const b = db.sql.begin("isolation level repeatable read", (tx) => store.append(tx, [ev(id)], { expectedVersion: 1 }));
      b.catch(() => {});
      await waitForLockWait();
      await a.commit();
      await assert.rejects(b, (e: unknown) => {
        assert.ok(isSluiceError(e, "CONCURRENCY_CONFLICT"), String(e));
        assert.equal((e as SluiceError).sqlState, "40001");
        assert.match((e as Error).message, /expected version 1, actual version unknown/);
        return true;
      });
      assert.deepEqual(await rowsOf(id), [1, 2]);
    });

    it("a duplicate event id conflicts with SQLSTATE 23505 and writes nothing", async () => {
      const id = newId();
      const first = await store.append(db.sql, [ev(id)], { expectedVersion: "any" });
      const dup = first.events[0]!.eventId;
      await assert.rejects(store.append(db.sql, [ev(id), ev(id, { eventId: dup.toUpperCase() })], { expectedVersion: 1 }), (e: unknown) => {
        conflict("1", "1")(e);
        assert.equal((e as SluiceError).sqlState, "23505");
        assert.match((e as Error).message, /duplicate event id/);
        return true;
      });
      // Inside the caller's transaction the failed insert aborts it: the actual version is unknown.
      await assert.rejects(db.sql.begin((tx) => store.append(tx, [ev(newId(), { eventId: dup })], { expectedVersion: "any" })), (e: unknown) => {
        conflict("any", "unknown")(e);
        assert.equal((e as SluiceError).sqlState, "23505");
        return true;
      });
      assert.deepEqual(await rowsOf(id), [1]);
      assert.equal(await headVersion(id), 1);
    });

    it("commits and rolls back with the caller's transaction; a failed check keeps it usable", async () => {
      const id = newId();
      await db.sql`create table if not exists app_ledger (id text primary key)`;
      await assert.rejects(db.sql.begin(async (tx) => {
        await tx`insert into app_ledger values (${id})`;
        await store.append(tx, [ev(id)], { expectedVersion: "no-stream" });
        throw new Error("boom");
      }), /boom/);
      assert.deepEqual(await rowsOf(id), []);
      assert.equal(await headVersion(id), undefined);
      await db.sql.begin(async (tx) => {
        await tx`insert into app_ledger values (${id})`;
        await assert.rejects(store.append(tx, [ev(id)], { expectedVersion: 4 }), conflict("4", "0"));
        await store.append(tx, [ev(id)], { expectedVersion: "no-stream" });
      });
      assert.deepEqual(await rowsOf(id), [1]);
      assert.equal((await db.sql`select count(*)::int as n from app_ledger where id = ${id}`)[0]!.n, 1);
    });
  });

  describe("transaction ids and positions", () => {
    it("stores the appending transaction's id on every row", async () => {
      const id = newId();
      const { xid, before, r } = await db.sql.begin(async (tx) => {
        const [b] = await tx`select pg_current_xact_id_if_assigned()::text as x`;
        const r = await store.append(tx, [ev(id), ev(id)], { expectedVersion: "any" });
        const [x] = await tx`select pg_current_xact_id()::text as x`;
        return { xid: x!.x as string, before: b!.x as string | null, r };
      });
      assert.equal(before, null, "the transaction had no id before the append");
      assert.deepEqual(r.events.map((e) => e.transactionId), [xid, xid]);
      const rows = await db.sql`select transaction_id::text as x from sluice.events where aggregate_id = ${id}`;
      assert.deepEqual(rows.map((row) => row.x), [xid, xid]);
      const auto = await store.append(db.sql, [ev(id)], { expectedVersion: "any" });
      const [row] = await db.sql`select transaction_id::text as x from sluice.events where global_position = ${auto.lastPosition.toString()}::int8`;
      assert.equal(row!.x, auto.events[0]!.transactionId);
      assert.notEqual(auto.events[0]!.transactionId, xid);
    });

    it("an open append is invisible and its writer is in progress in other snapshots", async () => {
      const a = await holdAppend(db.sql, store, [ev(newId())], { expectedVersion: "any" });
      const [s] = await db.sql`select pg_xact_status(${a.transactionId}::xid8) as st,
        pg_visible_in_snapshot(${a.transactionId}::xid8, pg_current_snapshot()) as vis`;
      assert.deepEqual([s!.st, s!.vis], ["in progress", false]);
      assert.deepEqual(await store.readAfter(a.result.firstPosition - 1n, 10), []);
      await a.commit();
      const [c] = await db.sql`select pg_xact_status(${a.transactionId}::xid8) as st`;
      assert.equal(c!.st, "committed");
      assert.equal((await store.readAfter(a.result.firstPosition - 1n, 10))[0]!.globalPosition, a.result.firstPosition);
    });

    it("concurrent appends can commit out of position order", async () => {
      const a = await holdAppend(db.sql, store, [ev(newId())], { expectedVersion: "any" });
      const b = await store.append(db.sql, [ev(newId())], { expectedVersion: "any" });
      assert.ok(b.firstPosition > a.result.lastPosition);
      const seen = await store.readAfter(a.result.firstPosition - 1n, 10);
      assert.deepEqual(seen.map((e) => e.globalPosition), [b.firstPosition], "B visible, A's lower position not yet");
      assert.equal(await store.latestPosition(), b.lastPosition);
      await a.commit();
      const now = await store.readAfter(a.result.firstPosition - 1n, 10);
      assert.deepEqual(now.map((e) => e.globalPosition), [a.result.firstPosition, b.firstPosition]);
    });

    it("a rolled-back append leaves a permanent hole in global_position", async () => {
      const a = await holdAppend(db.sql, store, [ev(newId())], { expectedVersion: "any" });
      const b = await store.append(db.sql, [ev(newId())], { expectedVersion: "any" });
      await a.rollback();
      const c = await store.append(db.sql, [ev(newId())], { expectedVersion: "any" });
      assert.ok(c.firstPosition > b.lastPosition, "positions are never reused");
      const seen = await store.readAfter(a.result.firstPosition - 1n, 10);
      assert.deepEqual(seen.map((e) => e.globalPosition), [b.firstPosition, c.firstPosition]);
      const [n] = await db.sql`select count(*)::int as n from sluice.events where global_position = ${a.result.firstPosition.toString()}::int8`;
      assert.equal(n!.n, 0);
    });
  });

  describe("NOTIFY", () => {
    let got: string[];
    const listen = async (channel: string) => {
      const listener = db.client({ max: 1 });
      await listener.listen(channel, (payload) => got.push(`${channel}:${payload}`));
    };
    const sentinel = async (channel: string) => {
      const mark = `sentinel-${randomUUID()}`;
      await db.sql`select pg_notify(${channel}, ${mark})`;
      await waitFor(`the sentinel on ${channel}`, () => got.includes(`${channel}:${mark}`));
    };
    before(async () => {
      got = [];
      await listen("sluice_events");
      await listen("custom_events");
    });

    it("sends the last position once, on commit only", async () => {
      const id = newId();
      const a = await holdAppend(db.sql, store, [ev(id), ev(id), ev(id)], { expectedVersion: "any" });
      const msg = `sluice_events:${a.result.lastPosition}`;
      await holds("no notification before commit", () => !got.includes(msg), 300);
      await a.commit();
      await waitFor("the notification", () => got.includes(msg));
      await sentinel("sluice_events");
      const mine = got.filter((g) => [a.result.firstPosition, a.result.firstPosition + 1n, a.result.lastPosition].some((p) => g === `sluice_events:${p}`));
      assert.deepEqual(mine, [msg]);
    });

    it("never after a rollback or a failed check", async () => {
      const id = newId();
      const a = await holdAppend(db.sql, store, [ev(id)], { expectedVersion: "no-stream" });
      await a.rollback();
      await assert.rejects(store.append(db.sql, [ev(newId())], { expectedVersion: 3 }), conflict("3", "0"));
      await holds("no notification after rollback", () => !got.includes(`sluice_events:${a.result.lastPosition}`), 300);
      const before = got.length;
      await sentinel("sluice_events");
      assert.equal(got.length, before + 1, `only the sentinel: ${JSON.stringify(got.slice(before))}`);
    });

    it("uses a custom channel, and none when notifyChannel is false", async () => {
      const custom = createStore(db.sql, { notifyChannel: "custom_events", logger: silent });
      const quiet = createStore(db.sql, { notifyChannel: false, logger: silent });
      const before = got.length;
      const c = await custom.append(db.sql, [ev(newId())], { expectedVersion: "any" });
      await waitFor("the custom notification", () => got.includes(`custom_events:${c.lastPosition}`));
      await quiet.append(db.sql, [ev(newId())], { expectedVersion: "any" });
      await sentinel("sluice_events");
      await sentinel("custom_events");
      assert.equal(got.length, before + 3, `custom append + two sentinels: ${JSON.stringify(got.slice(before))}`);
    });
  });


  describe("validation", () => {
    it("rejects bad input before sending anything: no statement, no row, no position", async () => {
      const sent: string[] = [];
      const watched = db.client({ max: 1, debug: (_conn: number, query: string) => sent.push(query) });
      const s = createStore(watched, { logger: silent });
      const id = newId();
      const seqBefore = await lastValue();
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      const cases: [string, () => Promise<unknown>, string, RegExp][] = [
        ["bigint", () => s.append(watched, [ev(id), ev(id), ev(id, { payload: { n: 1n } })], { expectedVersion: "any" }), "INVALID_EVENT", /events\[2\]\.payload\.n/],
        ["function", () => s.append(watched, [ev(id, { payload: { f: () => 1 } })], { expectedVersion: "any" }), "INVALID_EVENT", /events\[0\]\.payload\.f/],
        ["cycle", () => s.append(watched, [ev(id), ev(id, { payload: cyclic })], { expectedVersion: "any" }), "INVALID_EVENT", /events\[1\]\.payload .*circular/],
        ["undefined", () => s.append(watched, [ev(id, { payload: undefined })], { expectedVersion: "any" }), "INVALID_EVENT", /events\[0\]\.payload/],
        ["empty type", () => s.append(watched, [ev(id, { aggregateType: "" })], { expectedVersion: "any" }), "INVALID_EVENT", /events\[0\]\.aggregateType/],
        ["bad uuid", () => s.append(watched, [ev(id, { eventId: "nope" })], { expectedVersion: "any" }), "INVALID_EVENT", /events\[0\]\.eventId/],
        ["mixed", () => s.append(watched, [ev(id), ev(newId())], { expectedVersion: "any" }), "INVALID_ARGUMENT", /events\[1\]\.aggregateId/],
        ["empty list", () => s.append(watched, [], { expectedVersion: "any" }), "INVALID_ARGUMENT", /events must not be empty/],
        ["version", () => s.append(watched, [ev(id)], { expectedVersion: -1 }), "INVALID_ARGUMENT", /expectedVersion/],
      ];
      for (const [what, run, code, message] of cases) {
        await assert.rejects(run(), (e: unknown) => {
          assert.ok(isSluiceError(e, code as "INVALID_EVENT"), `${what}: ${String(e)}`);
          assert.match((e as Error).message, message, what);
          return true;
        });
      }
      assert.deepEqual(sent, [], "no statement reached the database");
      assert.equal(await lastValue(), seqBefore);
      assert.deepEqual(await rowsOf(id), []);
      assert.equal(await headVersion(id), undefined);
    });
  });
});
