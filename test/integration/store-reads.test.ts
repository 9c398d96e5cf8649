import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { drizzle } from "drizzle-orm/postgres-js";
import { migrate } from "../../src/db/migrate.ts";
import { isSluiceError } from "../../src/errors.ts";
import { createStore, type EventStore, type NewEvent } from "../../src/store/mod.ts";
import { createTestDatabase, type TestDatabase } from "../support/db.ts";

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

describe("event store reads", () => {
  let db: TestDatabase;
  let store: EventStore;

  before(async () => {
    db = await createTestDatabase("store_reads");
    store = createStore(db.sql, { logger: silent });
  });
  after(async () => {
    await db?.drop();
  });

  it("latestPosition is 0n on an empty store", async () => {
    assert.equal(await store.latestPosition(), 0n);
    assert.deepEqual(await store.readAfter(0n, 10), []);
  });

  it("readAfter pages in position order; latestPosition is the highest visible position", async () => {
    const start = await store.latestPosition();
    const ids = [newId(), newId()];
    await store.append(db.sql, [ev(ids[0]!), ev(ids[0]!)], { expectedVersion: "any" });
    const last = await store.append(db.sql, [ev(ids[1]!), ev(ids[1]!), ev(ids[1]!)], { expectedVersion: "any" });
    assert.equal(await store.latestPosition(), last.lastPosition);
    const pages: bigint[][] = [];
    for (let p = start; ;) {
      const page = await store.readAfter(p, 2);
      if (page.length === 0) break;
      pages.push(page.map((e) => e.globalPosition));
      p = page[page.length - 1]!.globalPosition;
    }
    assert.deepEqual(pages.map((pg) => pg.length), [2, 2, 1]);
    const flat = pages.flat();
    assert.deepEqual(flat, [...flat].sort((x, y) => (x < y ? -1 : 1)));
    assert.equal(flat[flat.length - 1], last.lastPosition);
    const inTx = await db.sql.begin((tx) => store.readAfter(start, 1, undefined, tx));
    assert.equal(inTx.length, 1);
  });

  it("filters by aggregate types, bounded contexts, or both", async () => {
    const start = await store.latestPosition();
    const mk = (type: string, ctx: string | null) =>
      store.append(db.sql, [{ aggregateType: type, aggregateId: newId(), eventType: "X", payload: null, boundedContext: ctx }], { expectedVersion: "any" });
    await mk("Order", "sales");
    await mk("Invoice", "billing");
    await mk("Order", "billing");
    await mk("Customer", null);
    const pick = async (scope: { aggregateTypes?: string[]; boundedContexts?: string[] }) =>
      (await store.readAfter(start, 100, scope)).map((e) => `${e.aggregateType}@${e.boundedContext}`);
    assert.deepEqual(await pick({ aggregateTypes: ["Order"] }), ["Order@sales", "Order@billing"]);
    assert.deepEqual(await pick({ boundedContexts: ["billing"] }), ["Invoice@billing", "Order@billing"]);
    assert.deepEqual(await pick({ aggregateTypes: ["Order", "Customer"], boundedContexts: ["billing"] }), ["Order@billing"]);
    assert.deepEqual(await pick({ aggregateTypes: [], boundedContexts: [] }), ["Order@sales", "Invoice@billing", "Order@billing", "Customer@null"]);
  });

  it("readAggregate from a version", async () => {
    const id = newId();
    await store.append(db.sql, [ev(id), ev(id), ev(id), ev(id)], { expectedVersion: "no-stream" });
    assert.deepEqual((await store.readAggregate("Account", id, 3)).map((e) => e.aggregateVersion), [3, 4]);
    assert.deepEqual(await store.readAggregate("Account", "nobody"), []);
  });

  it("round-trips JSON exactly: nested, unicode, numbers, ~1 MB", async () => {
    const id = newId();
    const nested = { a: { b: { c: [1, [2, [3, { d: null }]]] } }, t: true, f: false, empty: {}, list: [] };
    const unicode = { s: "héllo wörld ✓ 日本語 עברית 🎉👩‍👩‍👧", q: 'quo"te \\ back\\slash \n\t{,}', "key with spaces": "🔑", "{}": "NULL" };
    const numbers = { big: 9007199254740991, neg: -1.5e-7, exp: 1e300, zero: 0, frac: 0.1 };
    const large = { items: Array.from({ length: 10_000 }, (_, i) => ({ i, text: `item ${i} `.padEnd(90, "x") })) };
    assert.ok(JSON.stringify(large).length > 1_000_000);
    const payloads = [nested, unicode, numbers, large, "plain string", 42, null, [1, "two", { three: 3 }]];
    const metadata = { user: "ü", tags: ["a", "b"] };
    const r = await store.append(db.sql, payloads.map((payload) => ev(id, { payload, metadata, traceId: "t-1", correlationId: "c-1", causationId: "k-1" })), { expectedVersion: "no-stream" });
    const read = await store.readAggregate("Account", id);
    assert.deepEqual(read.map((e) => e.payload), payloads);
    assert.deepEqual(r.events.map((e) => e.payload), payloads);
    assert.deepEqual(read[0]!.metadata, metadata);
    assert.deepEqual([read[0]!.traceId, read[0]!.correlationId, read[0]!.causationId], ["t-1", "c-1", "k-1"]);
    assert.deepEqual(read, r.events);
    const after = await store.readAfter(r.firstPosition - 1n, 100);
    assert.deepEqual(after.map((e) => e.payload), payloads);
  });

  it("honours custom, quoted table names in another schema", async () => {
    const tables = { schema: "Tenant_X", events: "log", aggregateHeads: "heads" };
    await migrate(db.sql, { tables, logger: silent });
    const other = createStore(db.sql, { tables, notifyChannel: false, logger: silent });
    assert.equal(other.tables.events.sql, '"Tenant_X"."log"');
    assert.equal(await other.latestPosition(), 0n);
    const id = newId();
    const r = await other.append(db.sql, [ev(id), ev(id)], { expectedVersion: "no-stream" });
    assert.deepEqual(r.events.map((e) => e.globalPosition), [1n, 2n]);
    await assert.rejects(other.append(db.sql, [ev(id)], { expectedVersion: "no-stream" }), conflict("no-stream", "2"));
    assert.deepEqual((await other.readAggregate("Account", id)).map((e) => e.aggregateVersion), [1, 2]);
    assert.deepEqual(await store.readAggregate("Account", id), [], "the default tables are untouched");
    const [h] = await db.sql`select aggregate_version::int as v from "Tenant_X".heads where aggregate_id = ${id}`;
    assert.equal(h!.v, 2);
  });

  it("reads the same through a client shared with drizzle, with its own parsers, transforms and no prepared statements", async () => {
    const odd = db.client({
      max: 2,
      prepare: false,
      fetch_types: false,
      transform: postgres.camel,
      types: { bigint: postgres.BigInt },
    });
    drizzle(odd); // swaps the date and json parsers/serialisers of the client
    const shared = createStore(odd, { logger: silent });
    const id = newId();
    const payload = { nested: { when: "2024-01-01T00:00:00Z", list: [1, "x"] }, ünï: "cödé" };
    const r = await shared.append(odd, [ev(id, { payload, metadata: { m: 1 } }), ev(id)], { expectedVersion: "no-stream" });
    assert.equal(typeof r.firstPosition, "bigint");
    assert.ok(r.events[0]!.createdAt instanceof Date && !Number.isNaN(r.events[0]!.createdAt.getTime()));
    const viaOdd = await shared.readAggregate("Account", id);
    const viaPlain = await store.readAggregate("Account", id);
    assert.deepEqual(viaOdd, viaPlain);
    assert.deepEqual(viaOdd, r.events);
    assert.deepEqual(await shared.readAfter(r.firstPosition - 1n, 10, { aggregateTypes: ["Account"] }, odd), await store.readAfter(r.firstPosition - 1n, 10));
    assert.equal(await shared.latestPosition(), await store.latestPosition());
    await assert.rejects(shared.append(odd, [ev(id)], { expectedVersion: 1 }), conflict("1", "2"));
  });

  // Last: it moves the sequence past 2^53.
  it("keeps positions past 2^53 exact", async () => {
    const base = 2n ** 53n;
    await db.sql`select setval('sluice.events_global_position_seq', ${base.toString()}::int8)`;
    const id = newId();
    const r = await store.append(db.sql, [ev(id), ev(id), ev(id)], { expectedVersion: "any" });
    assert.deepEqual(r.events.map((e) => e.globalPosition), [base + 1n, base + 2n, base + 3n]);
    assert.equal(r.lastPosition, 9007199254740995n);
    assert.equal(await store.latestPosition(), base + 3n);
    assert.deepEqual((await store.readAfter(base + 1n, 10)).map((e) => e.globalPosition), [base + 2n, base + 3n]);
    const [row] = await db.sql`select global_position::text as p from sluice.events where aggregate_id = ${id} order by 1 limit 1`;
    assert.equal(row!.p, "9007199254740993");
  });
});
