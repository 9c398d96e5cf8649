/**
 * Event types of the store, and the validation of an append: every check runs
 * here, synchronously, before anything is sent to the database.
 *
 * @module
 */
import { randomUUID } from "node:crypto";
import { SluiceError } from "../errors.ts";

/**
 * An event to append. All events of one `append` call belong to one aggregate.
 *
 * @example
 * ```ts
 * const opened: NewEvent = {
 *   aggregateType: "Account", aggregateId: "acc-42", eventType: "AccountOpened",
 *   payload: { owner: "Ada", currency: "EUR" }, boundedContext: "banking",
 * };
 * ```
 */
export interface NewEvent<P = unknown> {
  /** A UUID; generated (`crypto.randomUUID()`) when absent. Unique across the store. */
  eventId?: string;
  /** Non-empty. */
  aggregateType: string;
  /** Non-empty. */
  aggregateId: string;
  /** Non-empty. */
  eventType: string;
  /** Schema version of the payload, an integer >= 1. @default 1 */
  eventVersion?: number;
  /**
   * Any JSON-serialisable value (stored as `jsonb`). Rejected: bigints,
   * functions, symbols, cycles, non-finite numbers, `undefined` (at the top
   * or inside an array), Map/Set/typed arrays, NUL characters and lone
   * surrogates in strings. `undefined` object properties are dropped, as
   * `JSON.stringify` does.
   */
  payload: P;
  /** A JSON object, or absent. */
  metadata?: Readonly<Record<string, unknown>> | null;
  boundedContext?: string | null;
  traceId?: string | null;
  correlationId?: string | null;
  causationId?: string | null;
}

/**
 * An event as stored. Positions are bigints (they outgrow 2^53); the
 * transaction id is the `xid8` of the appending transaction, as a decimal
 * string.
 *
 * @example
 * ```ts
 * const [e] = await store.readAfter(0n, 1);
 * console.log(e.globalPosition, e.aggregateVersion, e.createdAt.toISOString());
 * ```
 */
export interface PersistedEvent<P = unknown> {
  /** Position in the global log (gaps are possible: rolled-back appends). */
  readonly globalPosition: bigint;
  /** `xid8` of the appending transaction, decimal. */
  readonly transactionId: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  /** 1 for the first event of an aggregate, then consecutive. */
  readonly aggregateVersion: number;
  readonly eventId: string;
  readonly eventType: string;
  readonly eventVersion: number;
  readonly payload: P;
  readonly metadata: Record<string, unknown> | null;
  readonly boundedContext: string | null;
  readonly traceId: string | null;
  readonly correlationId: string | null;
  readonly causationId: string | null;
  /** Database time of the appending transaction (`now()`). */
  readonly createdAt: Date;
}

/**
 * Optimistic concurrency check of an append: `"any"` (no check),
 * `"no-stream"` (the aggregate has no events yet) or the exact current
 * version (`0` is the same as `"no-stream"`).
 *
 * @example
 * ```ts
 * const expected: ExpectedVersion = loaded.length; // the version we read
 * ```
 */
export type ExpectedVersion = "any" | "no-stream" | number;

/**
 * Options of `store.append`.
 *
 * @example
 * ```ts
 * await store.append(sql, events, { expectedVersion: "no-stream" });
 * ```
 */
export interface AppendOptions {
  expectedVersion: ExpectedVersion;
}

/**
 * What `store.append` wrote.
 *
 * @example
 * ```ts
 * const { firstPosition, lastPosition, version } = await store.append(sql, events, { expectedVersion: "any" });
 * ```
 */
export interface AppendResult<P = unknown> {
  /** The stored events, in order. */
  readonly events: PersistedEvent<P>[];
  readonly firstPosition: bigint;
  readonly lastPosition: bigint;
  /** The aggregate's version after the append (its last event's version). */
  readonly version: number;
}

/**
 * One validated event, serialised for the database.
 *
 * @example
 * ```ts
 * const e: PreparedEvent = prepareAppend([event], { expectedVersion: "any" }).events[0];
 * e.payloadJson; // '{"amount":10}'
 * ```
 */
export interface PreparedEvent {
  readonly eventId: string;
  readonly eventType: string;
  readonly eventVersion: number;
  readonly payloadJson: string;
  readonly metadataJson: string | null;
  readonly boundedContext: string | null;
  readonly traceId: string | null;
  readonly correlationId: string | null;
  readonly causationId: string | null;
}

/**
 * A validated append: one aggregate, its events and the concurrency check.
 *
 * @example
 * ```ts
 * const batch: PreparedAppend = prepareAppend(events, { expectedVersion: 0 });
 * batch.mode; // "no-stream"
 * ```
 */
export interface PreparedAppend {
  readonly aggregateType: string;
  readonly aggregateId: string;
  /** As the caller gave it (for messages). */
  readonly expectedVersion: ExpectedVersion;
  /** How the aggregate head is reserved. `exact` carries `expected >= 1`. */
  readonly mode: "any" | "no-stream" | "exact";
  readonly expected: number;
  readonly events: readonly PreparedEvent[];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// PostgreSQL rejects NUL in text and jsonb, and lone surrogates in jsonb.
const BAD_CHARS = /[\0\uD800-\uDFFF]/u;
const MAX_INT4 = 2_147_483_647;

function invalidEvent(field: string, index: number, rule: string, value?: unknown): SluiceError {
  return new SluiceError("INVALID_EVENT", `Invalid event: ${field} ${rule}`, { details: { field, index, value } });
}

function invalidArgument(field: string, rule: string, value?: unknown): SluiceError {
  return new SluiceError("INVALID_ARGUMENT", `Invalid argument: ${field} ${rule}`, { details: { field, value } });
}

function requiredText(e: Record<string, unknown>, key: string, index: number): string {
  const v = e[key];
  const field = `events[${index}].${key}`;
  if (typeof v !== "string") throw invalidEvent(field, index, v === undefined ? "is required" : "must be a string", v);
  if (v.length === 0) throw invalidEvent(field, index, "must not be empty", v);
  if (BAD_CHARS.test(v)) throw invalidEvent(field, index, "must not contain NUL characters or lone surrogates", v);
  return v;
}

function optionalText(e: Record<string, unknown>, key: string, index: number): string | null {
  const v = e[key];
  if (v === undefined || v === null) return null;
  return requiredText(e, key, index);
}

const IDENT_KEY = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

// A JSON text that may hold a NUL or a lone surrogate (JSON.stringify escapes
// both as \u....): such texts take the strict path, which decides exactly.
const SUSPECT_ESCAPE = /\\u(?:0000|d[89a-f])/;

/** True when `v` is plain JSON data that JSON.stringify renders faithfully. */
function isPlainJson(v: unknown, inArray: boolean): boolean {
  switch (typeof v) {
    case "string":
    case "boolean":
      return true;
    case "number":
      return Number.isFinite(v);
    case "undefined":
      return !inArray;
    case "object": {
      if (v === null) return true;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) if (!isPlainJson(v[i], true)) return false;
        return true;
      }
      const proto = Object.getPrototypeOf(v) as unknown;
      if (proto !== Object.prototype && proto !== null) return false;
      if (typeof (v as { toJSON?: unknown }).toJSON === "function") return false;
      const r = v as Record<string, unknown>;
      for (const k of Object.keys(r)) if (!isPlainJson(r[k], false)) return false;
      return true;
    }
    default:
      return false;
  }
}

/**
 * `JSON.stringify` that refuses what would not round-trip, naming the path of
 * the offending value (`events[2].payload.items[0]`). Throws `INVALID_EVENT`.
 *
 * Plain data (objects, arrays, strings, finite numbers, booleans, null) takes
 * a fast path: JSON.stringify, then a walk that checks nothing was dropped or
 * changed. Anything else (class instances, Dates and other toJSON objects, a
 * failure) goes through the strict replacer, which reports the exact path.
 *
 * @example
 * ```ts
 * toJsonText({ a: [1, "x"] }, "events[0].payload", 0); // '{"a":[1,"x"]}'
 * toJsonText({ n: 1n }, "events[0].payload", 0);      // throws: events[0].payload.n ... a bigint
 * ```
 */
export function toJsonText(value: unknown, where: string, index: number): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    text = undefined;
  }
  // The walk only runs once JSON.stringify succeeded, so it cannot meet a cycle.
  if (text !== undefined && isPlainJson(value, false) && !SUSPECT_ESCAPE.test(text)) return text;
  return strictJsonText(value, where, index);
}

/** The strict path of {@link toJsonText}: a replacer that checks every value. */
function strictJsonText(value: unknown, where: string, index: number): string {
  const paths = new WeakMap<object, string>();
  const fail = (path: string, rule: string, v?: unknown) => invalidEvent(path, index, rule, v);
  function replacer(this: unknown, key: string, v: unknown): unknown {
    const holder = this as object;
    const parent = paths.get(holder);
    let path = where;
    if (parent !== undefined) {
      if (Array.isArray(holder)) path = `${parent}[${key}]`;
      else {
        if (BAD_CHARS.test(key)) throw fail(`${parent}[${JSON.stringify(key)}]`, "has a key with a NUL character or a lone surrogate");
        path = IDENT_KEY.test(key) ? `${parent}.${key}` : `${parent}[${JSON.stringify(key)}]`;
      }
    }
    switch (typeof v) {
      case "string":
        if (BAD_CHARS.test(v)) throw fail(path, "must not contain NUL characters or lone surrogates (jsonb rejects them)");
        return v;
      case "number":
        if (!Number.isFinite(v)) throw fail(path, "is not JSON-serialisable (a non-finite number)", v);
        return v;
      case "bigint":
        throw fail(path, "is not JSON-serialisable (a bigint; pass it as a string)", v);
      case "function":
        throw fail(path, "is not JSON-serialisable (a function)");
      case "symbol":
        throw fail(path, "is not JSON-serialisable (a symbol)");
      case "undefined":
        if (parent === undefined || Array.isArray(holder)) throw fail(path, "is not JSON-serialisable (undefined)");
        return v; // dropped, as JSON.stringify does
      case "object":
        if (v === null) return v;
        if (v instanceof Map || v instanceof Set || v instanceof WeakMap || v instanceof WeakSet) {
          throw fail(path, `is not JSON-serialisable (a ${v.constructor.name}; convert it to an object or array)`);
        }
        if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) throw fail(path, "is not JSON-serialisable (binary data; encode it as a string)");
        paths.set(v, path);
        return v;
      default:
        return v;
    }
  }
  let text: string | undefined;
  try {
    text = JSON.stringify(value, replacer);
  } catch (e) {
    if (e instanceof SluiceError) throw e;
    // The only other failure is a cycle (TypeError: circular structure).
    throw fail(where, "is not JSON-serialisable (it contains a circular reference)");
  }
  if (text === undefined) throw fail(where, "is not JSON-serialisable (undefined)");
  return text;
}

function parseExpected(options: unknown): { mode: PreparedAppend["mode"]; expected: number; given: ExpectedVersion } {
  if (typeof options !== "object" || options === null) {
    throw invalidArgument("options", 'must be an object with expectedVersion ("any", "no-stream" or an integer >= 0)', options);
  }
  const v = (options as { expectedVersion?: unknown }).expectedVersion;
  if (v === "any") return { mode: "any", expected: 0, given: v };
  if (v === "no-stream" || v === 0) return { mode: "no-stream", expected: 0, given: v };
  if (typeof v === "number" && Number.isSafeInteger(v) && v > 0) return { mode: "exact", expected: v, given: v };
  throw invalidArgument("expectedVersion", 'must be "any", "no-stream" or an integer >= 0', v);
}

/**
 * Validates and serialises one append. Throws `INVALID_ARGUMENT` for
 * call-level problems (not a list, empty, mixed aggregates, bad
 * expectedVersion) and `INVALID_EVENT` for a bad event, naming the field and
 * index (`events[2].payload`).
 *
 * @example
 * ```ts
 * const batch = prepareAppend([{ aggregateType: "A", aggregateId: "1", eventType: "E", payload: {} }], { expectedVersion: "any" });
 * batch.events[0].eventId; // a fresh UUID
 * ```
 */
export function prepareAppend(events: unknown, options: unknown): PreparedAppend {
  if (!Array.isArray(events)) throw invalidArgument("events", "must be an array of events", events);
  if (events.length === 0) throw invalidArgument("events", "must not be empty");
  const { mode, expected, given } = parseExpected(options);
  const out: PreparedEvent[] = [];
  const seen = new Map<string, number>();
  let aggregateType = "";
  let aggregateId = "";
  for (let i = 0; i < events.length; i++) {
    const e = events[i] as unknown;
    if (typeof e !== "object" || e === null || Array.isArray(e)) throw invalidEvent(`events[${i}]`, i, "must be an event object", e);
    const r = e as Record<string, unknown>;
    const type = requiredText(r, "aggregateType", i);
    const id = requiredText(r, "aggregateId", i);
    if (i === 0) {
      aggregateType = type;
      aggregateId = id;
    } else if (type !== aggregateType || id !== aggregateId) {
      const field = type !== aggregateType ? "aggregateType" : "aggregateId";
      throw invalidArgument(
        `events[${i}].${field}`,
        `must match events[0] (one aggregate per append: ${aggregateType}/${aggregateId}, got ${type}/${id})`,
        field === "aggregateType" ? type : id,
      );
    }
    const eventType = requiredText(r, "eventType", i);
    let eventId: string;
    if (r.eventId === undefined || r.eventId === null) eventId = randomUUID();
    else if (typeof r.eventId === "string" && UUID.test(r.eventId)) eventId = r.eventId.toLowerCase();
    else throw invalidEvent(`events[${i}].eventId`, i, "must be a UUID (8-4-4-4-12 hex digits)", r.eventId);
    const dup = seen.get(eventId);
    if (dup !== undefined) throw invalidEvent(`events[${i}].eventId`, i, `duplicates events[${dup}].eventId`, eventId);
    seen.set(eventId, i);
    const ev = r.eventVersion ?? 1;
    if (typeof ev !== "number" || !Number.isInteger(ev) || ev < 1 || ev > MAX_INT4) {
      throw invalidEvent(`events[${i}].eventVersion`, i, "must be an integer >= 1", ev);
    }
    if (!("payload" in r)) throw invalidEvent(`events[${i}].payload`, i, "is required");
    const payloadJson = toJsonText(r.payload, `events[${i}].payload`, i);
    let metadataJson: string | null = null;
    if (r.metadata !== undefined && r.metadata !== null) {
      if (typeof r.metadata !== "object" || Array.isArray(r.metadata)) {
        throw invalidEvent(`events[${i}].metadata`, i, "must be a JSON object", r.metadata);
      }
      metadataJson = toJsonText(r.metadata, `events[${i}].metadata`, i);
    }
    out.push({
      eventId,
      eventType,
      eventVersion: ev,
      payloadJson,
      metadataJson,
      boundedContext: optionalText(r, "boundedContext", i),
      traceId: optionalText(r, "traceId", i),
      correlationId: optionalText(r, "correlationId", i),
      causationId: optionalText(r, "causationId", i),
    });
  }
  return { aggregateType, aggregateId, expectedVersion: given, mode, expected, events: out };
}
