import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, isSluiceError, type SluiceErrorCode } from "../../src/errors.ts";
import type { Sql } from "../../src/db/executor.ts";
import { createStore, type NewEvent } from "../../src/store/mod.ts";
import { prepareAppend } from "../../src/store/events.ts";
import { pgArray } from "../../src/store/statements.ts";

const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** A fake postgres.js client that records every statement and returns no rows. */
function fakeSql(): { sql: Sql; calls: { text: string; params: unknown[] }[] } {
  const calls: { text: string; params: unknown[] }[] = [];
  const tag = (() => {
    throw new Error("tagged queries are not expected");
  }) as unknown as Record<string, unknown>;
  tag.unsafe = (text: string, params: unknown[] = []) => {
    calls.push({ text, params });
    return { values: () => Promise.resolve([]) };
  };
  return { sql: tag as unknown as Sql, calls };
}

const good = (extra: Record<string, unknown> = {}): NewEvent =>
  ({ aggregateType: "Account", aggregateId: "42", eventType: "Opened", payload: { a: 1 }, ...extra }) as NewEvent;

function expectError(code: SluiceErrorCode, message: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(isSluiceError(e, code), `expected ${code}, got ${String(e)}`);
    assert.match((e as Error).message, message);
    return true;
  };
}

describe("store.append validation", () => {
  const cyclic: Record<string, unknown> = { a: [1] };
  (cyclic.a as unknown[]).push(cyclic);
  const eventCases: [string, Record<string, unknown>, RegExp][] = [
    ["missing aggregateType", { aggregateType: undefined }, /events\[2\]\.aggregateType is required/],
    ["empty aggregateId", { aggregateId: "" }, /events\[2\]\.aggregateId must not be empty/],
    ["numeric eventType", { eventType: 7 }, /events\[2\]\.eventType must be a string/],
    ["missing eventType", { eventType: undefined }, /events\[2\]\.eventType is required/],
    ["bigint payload", { payload: { amount: 10n } }, /events\[2\]\.payload\.amount is not JSON-serialisable \(a bigint/],
    ["function payload", { payload: { list: [1, () => 2] } }, /events\[2\]\.payload\.list\[1\] is not JSON-serialisable \(a function/],
    ["cyclic payload", { payload: cyclic }, /events\[2\]\.payload is not JSON-serialisable \(it contains a circular reference/],
    ["undefined payload", { payload: undefined }, /events\[2\]\.payload is not JSON-serialisable \(undefined/],
    ["absent payload", { payload: "drop" }, /events\[2\]\.payload is required/],
    ["undefined in an array", { payload: [1, undefined] }, /events\[2\]\.payload\[1\] is not JSON-serialisable \(undefined/],
    ["symbol", { payload: { s: Symbol("x") } }, /events\[2\]\.payload\.s is not JSON-serialisable \(a symbol/],
    ["NaN", { payload: { "odd key": Number.NaN } }, /events\[2\]\.payload\["odd key"\] is not JSON-serialisable \(a non-finite/],
    ["Map", { payload: { m: new Map([[1, 2]]) } }, /events\[2\]\.payload\.m is not JSON-serialisable \(a Map/],
    ["bytes", { payload: new Uint8Array(2) }, /events\[2\]\.payload is not JSON-serialisable \(binary/],
    ["NUL in a JSON string", { payload: { s: "a\u0000b" } }, /events\[2\]\.payload\.s must not contain NUL/],
    ["lone surrogate", { payload: ["\ud800"] }, /events\[2\]\.payload\[0\] must not contain NUL characters or lone surrogates/],
    ["NUL in a text field", { eventType: "a\u0000" }, /events\[2\]\.eventType must not contain NUL/],
    ["malformed eventId", { eventId: "1234" }, /events\[2\]\.eventId must be a UUID/],
    ["eventVersion 0", { eventVersion: 0 }, /events\[2\]\.eventVersion must be an integer >= 1/],
    ["eventVersion 1.5", { eventVersion: 1.5 }, /events\[2\]\.eventVersion must be an integer >= 1/],
    ["eventVersion as text", { eventVersion: "2" }, /events\[2\]\.eventVersion must be an integer >= 1/],
    ["array metadata", { metadata: [1] }, /events\[2\]\.metadata must be a JSON object/],
    ["bigint in metadata", { metadata: { n: 1n } }, /events\[2\]\.metadata\.n is not JSON-serialisable/],
    ["empty boundedContext", { boundedContext: "" }, /events\[2\]\.boundedContext must not be empty/],
    ["numeric traceId", { traceId: 5 }, /events\[2\]\.traceId must be a string/],
  ];
  for (const [what, patch, message] of eventCases) {
    it(`INVALID_EVENT for ${what}, naming the field and index, before any statement`, async () => {
      const { sql, calls } = fakeSql();
      const store = createStore(sql, { logger: silent });
      const bad: Record<string, unknown> = { ...good(), ...patch };
      if (patch.payload === "drop") delete bad.payload;
      await assert.rejects(store.append(sql, [good(), good(), bad as unknown as NewEvent], { expectedVersion: "any" }), expectError("INVALID_EVENT", message));
      assert.equal(calls.length, 0);
    });
  }

  const callCases: [string, unknown, unknown, SluiceErrorCode, RegExp][] = [
    ["an empty list", [], { expectedVersion: "any" }, "INVALID_ARGUMENT", /events must not be empty/],
    ["not a list", good(), { expectedVersion: "any" }, "INVALID_ARGUMENT", /events must be an array/],
    ["mixed aggregate ids", [good(), good({ aggregateId: "43" })], { expectedVersion: "any" }, "INVALID_ARGUMENT", /events\[1\]\.aggregateId must match events\[0\]/],
    ["mixed aggregate types", [good(), good({ aggregateType: "User" })], { expectedVersion: "any" }, "INVALID_ARGUMENT", /events\[1\]\.aggregateType must match/],
    ["a negative version", [good()], { expectedVersion: -1 }, "INVALID_ARGUMENT", /expectedVersion must be "any", "no-stream" or an integer >= 0/],
    ["a fractional version", [good()], { expectedVersion: 1.5 }, "INVALID_ARGUMENT", /expectedVersion/],
    ["an unknown version keyword", [good()], { expectedVersion: "latest" }, "INVALID_ARGUMENT", /expectedVersion/],
    ["a missing version", [good()], {}, "INVALID_ARGUMENT", /expectedVersion/],
    ["missing options", [good()], undefined, "INVALID_ARGUMENT", /options must be an object/],
    ["a null event", [good(), null], { expectedVersion: "any" }, "INVALID_EVENT", /events\[1\] must be an event object/],
    ["duplicate ids in one call", [good({ eventId: "0c4f9e3e-3a3c-4d7e-9a45-2f1f1f1f1f1f" }), good({ eventId: "0C4F9E3E-3A3C-4D7E-9A45-2F1F1F1F1F1F" })], { expectedVersion: "any" }, "INVALID_EVENT", /events\[1\]\.eventId duplicates events\[0\]\.eventId/],
  ];
  for (const [what, events, options, code, message] of callCases) {
    it(`${code} for ${what}, before any statement`, async () => {
      const { sql, calls } = fakeSql();
      const store = createStore(sql, { logger: silent });
      await assert.rejects(store.append(sql, events as NewEvent[], options as { expectedVersion: "any" }), expectError(code, message));
      assert.equal(calls.length, 0);
    });
  }

  it("rejects an executor that is not a postgres.js client", async () => {
    const { sql, calls } = fakeSql();
    const store = createStore(sql, { logger: silent });
    await assert.rejects(store.append({} as Sql, [good()], { expectedVersion: "any" }), expectError("INVALID_ARGUMENT", /executor must be a postgres\.js client/));
    assert.equal(calls.length, 0);
  });

  it("sends one statement with text parameters for a valid append", async () => {
    const { sql, calls } = fakeSql();
    const store = createStore(sql, { logger: silent });
    const when = new Date("2024-05-01T00:00:00Z");
    // The fake returns no row: a version conflict, then the actual version is read.
    await assert.rejects(
      store.append(sql, [good({ payload: { when, gone: undefined, q: 'a"b\\c' } }), good({ eventId: "0C4F9E3E-3A3C-4D7E-9A45-2F1F1F1F1F1F", metadata: { k: "v" } })], { expectedVersion: 3 }),
      expectError("CONCURRENCY_CONFLICT", /expected version 3, actual version 0/),
    );
    assert.equal(calls.length, 2);
    const [append] = calls;
    assert.match(append!.text, /pg_current_xact_id\(\)/);
    assert.match(append!.text, /pg_notify\('sluice_events'/);
    assert.ok(append!.params.every((p) => typeof p === "string"), "every parameter is text");
    assert.deepEqual(append!.params.slice(0, 3), ["Account", "42", "2"]);
    assert.match(append!.params[3] as string, /^\{"[0-9a-f-]{36}","0c4f9e3e-3a3c-4d7e-9a45-2f1f1f1f1f1f"\}$/);
    assert.equal(append!.params[6], pgArray(['{"when":"2024-05-01T00:00:00.000Z","q":"a\\"b\\\\c"}', '{"a":1}']));
    assert.equal(append!.params[7], '{NULL,"{\\"k\\":\\"v\\"}"}');
    assert.equal(append!.params[12], "3");
  });

  it("omits the NOTIFY when notifyChannel is false", async () => {
    const { sql, calls } = fakeSql();
    const store = createStore(sql, { notifyChannel: false, logger: silent });
    await assert.rejects(store.append(sql, [good()], { expectedVersion: "no-stream" }), expectError("CONCURRENCY_CONFLICT", /no-stream/));
    assert.doesNotMatch(calls[0]!.text, /pg_notify/);
  });

  it("accepts what round-trips, through the fast and the strict path alike", () => {
    class Money {
      amount: number;
      currency: string;
      constructor(amount: number, currency: string) {
        this.amount = amount;
        this.currency = currency;
      }
    }
    const bare = Object.assign(Object.create(null) as Record<string, unknown>, { a: 1 });
    const cases: [unknown, string][] = [
      [{ a: [1, "x", null, true, { b: {} }], gone: undefined }, '{"a":[1,"x",null,true,{"b":{}}]}'],
      [new Money(5, "EUR"), '{"amount":5,"currency":"EUR"}'],
      [{ at: new Date("2024-01-02T03:04:05.678Z") }, '{"at":"2024-01-02T03:04:05.678Z"}'],
      [bare, '{"a":1}'],
      ["backslash-u0000 as text: \\u0000 \\ud800", '"backslash-u0000 as text: \\\\u0000 \\\\ud800"'],
      ["emoji 🎉 and 日本", '"emoji 🎉 and 日本"'],
      [{ toJSON: () => ({ x: 1 }) }, '{"x":1}'],
    ];
    for (const [payload, text] of cases) {
      const b = prepareAppend([good({ payload })], { expectedVersion: "any" });
      assert.equal(b.events[0]!.payloadJson, text);
      assert.deepEqual(JSON.parse(b.events[0]!.payloadJson), JSON.parse(JSON.stringify(payload)));
    }
    // deno-lint-ignore no-sparse-arrays
    assert.throws(() => prepareAppend([good({ payload: [1, , 3] })], { expectedVersion: "any" }), /events\[0\]\.payload\[1\] is not JSON-serialisable/);
    assert.throws(() => prepareAppend([good({ payload: { toJSON: () => 1n } })], { expectedVersion: "any" }), /events\[0\]\.payload is not JSON-serialisable \(a bigint/);
    assert.throws(() => prepareAppend([good({ payload: { ["k\u0000"]: 1 } })], { expectedVersion: "any" }), /events\[0\]\.payload\["k\\u0000"\] has a key with a NUL/);
  });

  it("quotes array literals like PostgreSQL reads them", () => {
    assert.equal(pgArray(["a", 'q"', "b\\s", "{,} x", null]), '{"a","q\\"","b\\\\s","{,} x",NULL}');
    assert.equal(pgArray(['{"k":"a\\"b"}'], true), pgArray(['{"k":"a\\"b"}']));
    assert.equal(pgArray([]), "{}");
  });

  it("prepareAppend generates lowercase UUIDs and defaults eventVersion to 1", () => {
    const b = prepareAppend([good(), good({ eventVersion: 4 })], { expectedVersion: 0 });
    assert.equal(b.mode, "no-stream");
    assert.match(b.events[0]!.eventId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(b.events[0]!.eventId, b.events[1]!.eventId);
    assert.deepEqual(b.events.map((e) => e.eventVersion), [1, 4]);
  });
});

describe("createStore options", () => {
  const { sql } = fakeSql();
  const cases: [string, unknown, RegExp][] = [
    ["a channel that is not an identifier", { notifyChannel: "bad-name" }, /notifyChannel: must be an SQL identifier/],
    ["a channel that is not a string", { notifyChannel: 5 }, /notifyChannel: must be an SQL identifier or false/],
    ["channel true", { notifyChannel: true }, /notifyChannel/],
    ["an unknown option", { notify: "x" }, /notify: is not a known option/],
    ["a bad schema", { tables: { schema: "x; drop" } }, /tables\.schema/],
    ["a bad table name", { tables: { events: 'a"b' } }, /tables\.events/],
    ["a non-string table name", { tables: { events: 3 } }, /tables\.events: must be a string/],
    ["a bad logger", { logger: { info() {} } }, /logger: must be a logger/],
  ];
  for (const [what, options, message] of cases) {
    it(`ConfigError for ${what}`, () => {
      assert.throws(() => createStore(sql, options as never), (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.equal((e as ConfigError).code, "CONFIG_INVALID");
        assert.match((e as Error).message, message);
        return true;
      });
    });
  }

  it("defaults the channel and the tables, and accepts false", () => {
    const s = createStore(sql);
    assert.equal(s.notifyChannel, "sluice_events");
    assert.equal(s.tables.events.sql, '"sluice"."events"');
    assert.equal(createStore(sql, { notifyChannel: false }).notifyChannel, false);
    assert.equal(createStore(sql, { tables: { schema: "app", aggregateHeads: "other.heads" } }).tables.aggregateHeads.sql, '"other"."heads"');
  });

  it("rejects a sql argument that is not a client", () => {
    assert.throws(() => createStore({} as Sql), (e: unknown) => isSluiceError(e, "INVALID_ARGUMENT"));
  });
});

describe("read argument validation", () => {
  const { sql, calls } = fakeSql();
  const store = createStore(sql, { logger: silent });
  const cases: [string, () => Promise<unknown>, RegExp][] = [
    ["a number position", () => store.readAfter(5 as unknown as bigint, 10), /position must be a bigint/],
    ["a negative position", () => store.readAfter(-1n, 10), /position must be a bigint >= 0n/],
    ["a zero limit", () => store.readAfter(0n, 0), /limit must be an integer >= 1/],
    ["a fractional limit", () => store.readAfter(0n, 2.5), /limit/],
    ["a scope that is not a list", () => store.readAfter(0n, 1, { aggregateTypes: "Account" as unknown as string[] }), /scope\.aggregateTypes must be an array/],
    ["an empty scope entry", () => store.readAfter(0n, 1, { boundedContexts: [""] }), /scope\.boundedContexts\[0\] must be a non-empty string/],
    ["an empty aggregate type", () => store.readAggregate("", "1"), /aggregateType must be a non-empty string/],
    ["a negative fromVersion", () => store.readAggregate("A", "1", -1), /fromVersion must be an integer >= 0/],
  ];
  for (const [what, run, message] of cases) {
    it(`INVALID_ARGUMENT for ${what}`, async () => {
      await assert.rejects(run(), expectError("INVALID_ARGUMENT", message));
      assert.equal(calls.length, 0);
    });
  }
});
