/**
 * Every SQL statement of the event store. Each function takes the executor
 * first (the caller's client or transaction) and the statement texts built
 * once per store by {@link buildStatements}.
 *
 * Conventions, so that a client shared with drizzle (which swaps the date
 * parsers) or configured with its own parsers, serialisers, column transforms
 * or `fetch_types: false` reads the same values:
 *
 * - every parameter is sent as text (`$1::text::int8`); arrays are sent as
 *   array literals we build ourselves (`$4::text::uuid[]`), JSON as text;
 * - every column is selected as text and read by position (`.values()`):
 *   positions become bigints with `toBigInt`, `created_at` is epoch
 *   milliseconds, JSON is parsed here;
 * - statements use `sql.unsafe(text, params, { prepare: true })`: the table
 *   names are configured, so the texts are built, but they are constant per
 *   store and prepared once per connection (unless the client disables
 *   prepared statements, e.g. for PgBouncer).
 *
 * @module
 */
import type { Executor } from "../db/executor.ts";
import { toBigInt } from "../db/executor.ts";
import type { ResolvedTableNames } from "../db/names.ts";
import type { PersistedEvent, PreparedAppend } from "./events.ts";

/**
 * The store's SQL texts, built once for its table names and channel.
 *
 * @example
 * ```ts
 * const st = buildStatements(resolveTableNames(), "sluice_events");
 * ```
 */
export interface StoreStatements {
  readonly appendAny: string;
  readonly appendNoStream: string;
  readonly appendExact: string;
  readonly headVersion: string;
  /** Indexed by scope: bit 1 = aggregate types, bit 2 = bounded contexts. */
  readonly readAfter: readonly string[];
  readonly readAggregate: string;
  readonly latestPosition: string;
}

const EVENT_COLUMNS = [
  "global_position::text",
  "transaction_id::text",
  "aggregate_type",
  "aggregate_id",
  "aggregate_version::text",
  "event_id::text",
  "event_type",
  "event_version::text",
  "payload::text",
  "metadata::text",
  "bounded_context",
  "trace_id",
  "correlation_id",
  "causation_id",
  "(extract(epoch FROM created_at) * 1000)::text",
].join(", ");

/**
 * Builds the statement texts. `names` are validated and quoted (`.sql`);
 * `channel` is a validated identifier (or `false`: no NOTIFY).
 *
 * @example
 * ```ts
 * const st = buildStatements(resolveTableNames({ schema: "app" }), false);
 * ```
 */
export function buildStatements(names: ResolvedTableNames, channel: string | false): StoreStatements {
  const events = names.events.sql;
  const heads = names.aggregateHeads.sql;
  // $1 aggregate type, $2 aggregate id, $3 number of events, $4..$12 one
  // array literal per column, $13 the expected version (exact mode only).
  const n = "$3::text::int8";
  const headAny = `INSERT INTO ${heads} AS h (aggregate_type, aggregate_id, aggregate_version)
    VALUES ($1::text, $2::text, ${n})
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
      SET aggregate_version = h.aggregate_version + EXCLUDED.aggregate_version, updated_at = now()
    RETURNING h.aggregate_version - ${n} AS base, pg_current_xact_id() AS xid`;
  const headNoStream = `INSERT INTO ${heads} AS h (aggregate_type, aggregate_id, aggregate_version)
    VALUES ($1::text, $2::text, ${n})
    ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING
    RETURNING 0::int8 AS base, pg_current_xact_id() AS xid`;
  const headExact = `UPDATE ${heads} AS h
    SET aggregate_version = h.aggregate_version + ${n}, updated_at = now()
    WHERE h.aggregate_type = $1::text AND h.aggregate_id = $2::text AND h.aggregate_version = $13::text::int8
    RETURNING $13::text::int8 AS base, pg_current_xact_id() AS xid`;

  // THE ORDERING ARGUMENT (the worker's gap proof depends on it): an append
  // must own a transaction id before it draws its first global_position, and
  // every row records that id. One statement does it:
  //
  // 1. `head` writes the aggregate_heads row (reserving the versions) and
  //    returns pg_current_xact_id(); writing a row, or calling that function,
  //    assigns the transaction its xid if it had none.
  // 2. `ins` inserts SELECT ... CROSS JOIN head. global_position's default,
  //    nextval(), is part of the INSERT's target list, which PostgreSQL
  //    evaluates above the join (on the rows it produces, after ORDER BY):
  //    no row exists, so no nextval is drawn, before `head` has run and
  //    returned its row. The rows store head.xid as transaction_id.
  // 3. When `head` returns nothing (the concurrency check failed) the join is
  //    empty: nothing is inserted, no position is drawn, no NOTIFY is sent.
  //
  // Hence: any position that was drawn belongs to a transaction whose xid was
  // assigned first. A reader that sees a hole at position P can look at the
  // xids in progress in its snapshot: the writer of P is one of them, or has
  // finished (committed rows become visible, rolled-back ones never will).
  //
  // The sequence keeps CACHE 1 (see table-defs.ts): with a larger cache each
  // session draws from its own block, so positions would no longer follow the
  // order in which transactions drew them, and a hole could be filled by a
  // transaction that started after the hole was observed.
  const append = (head: string): string => {
    // The channel is spliced as a literal: createStore accepted it only as an
    // identifier ([A-Za-z_][A-Za-z0-9_]*), so it holds no quote.
    const notify = channel === false
      ? ""
      : `, note AS MATERIALIZED (
    SELECT pg_notify('${channel}', max(global_position)::text) FROM ins HAVING count(*) > 0
  )`;
    return `WITH head AS (
    ${head}
  ), ins AS (
    INSERT INTO ${events} (transaction_id, aggregate_type, aggregate_id, aggregate_version, event_id, event_type,
      event_version, payload, metadata, bounded_context, trace_id, correlation_id, causation_id)
    SELECT head.xid, $1::text, $2::text, head.base + u.ord, u.event_id, u.event_type,
      u.event_version, u.payload::jsonb, u.metadata::jsonb, u.bounded_context, u.trace_id, u.correlation_id, u.causation_id
    FROM unnest($4::text::uuid[], $5::text::text[], $6::text::int4[], $7::text::text[], $8::text::text[],
        $9::text::text[], $10::text::text[], $11::text::text[], $12::text::text[])
      WITH ORDINALITY AS u(event_id, event_type, event_version, payload, metadata, bounded_context, trace_id,
        correlation_id, causation_id, ord)
    CROSS JOIN head
    ORDER BY u.ord
    RETURNING global_position, aggregate_version, transaction_id, created_at
  )${notify}
  SELECT ins.global_position::text, ins.aggregate_version::text, ins.transaction_id::text,
    (extract(epoch FROM ins.created_at) * 1000)::text
  FROM ins${channel === false ? "" : " LEFT JOIN note ON true"}
  ORDER BY ins.global_position`;
  };

  const readAfter = [0, 1, 2, 3].map((scope) => {
    const where = ["global_position > $1::text::int8"];
    let p = 3;
    if (scope & 1) where.push(`aggregate_type = ANY($${p++}::text::text[])`);
    if (scope & 2) where.push(`bounded_context = ANY($${p++}::text::text[])`);
    return `SELECT ${EVENT_COLUMNS} FROM ${events} WHERE ${where.join(" AND ")} ORDER BY global_position LIMIT $2::text::int8`;
  });

  return {
    appendAny: append(headAny),
    appendNoStream: append(headNoStream),
    appendExact: append(headExact),
    headVersion: `SELECT aggregate_version::text FROM ${heads} WHERE aggregate_type = $1::text AND aggregate_id = $2::text`,
    readAfter,
    readAggregate: `SELECT ${EVENT_COLUMNS} FROM ${events}
      WHERE aggregate_type = $1::text AND aggregate_id = $2::text AND aggregate_version >= $3::text::int8
      ORDER BY aggregate_version`,
    latestPosition: `SELECT coalesce(max(global_position), 0)::text FROM ${events}`,
  };
}

type Row = (string | null)[];

async function run(ex: Executor, text: string, params: (string | null)[]): Promise<Row[]> {
  const rows = await ex.unsafe(text, params, { prepare: true }).values();
  return rows as unknown as Row[];
}

/**
 * A PostgreSQL array literal of text elements (`{"a","b",NULL}`), cast
 * server-side to the column's array type. `json: true` is for elements that
 * are JSON texts made by JSON.stringify: those hold no control characters and
 * no lone surrogates (validation rejects them), so the only escapes that
 * JSON.stringify adds when quoting them are `\"` and `\\`, exactly the
 * array-literal quoting, and it is several times faster than replacing.
 *
 * @example
 * ```ts
 * pgArray(['a"b', null]); // {"a\"b",NULL}
 * ```
 */
export function pgArray(items: readonly (string | null)[], json = false): string {
  let s = "{";
  for (let i = 0; i < items.length; i++) {
    const x = items[i];
    if (i > 0) s += ",";
    if (x === null || x === undefined) s += "NULL";
    else if (json) s += JSON.stringify(x);
    else if (x.includes("\\") || x.includes('"')) s += `"${x.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
    else s += `"${x}"`;
  }
  return s + "}";
}

/**
 * One row the append inserted.
 *
 * @example
 * ```ts
 * const [row]: InsertedRow[] = await insertEvents(sql, st, batch);
 * row.globalPosition; // 42n
 * ```
 */
export interface InsertedRow {
  readonly globalPosition: bigint;
  readonly aggregateVersion: number;
  readonly transactionId: string;
  readonly createdAt: Date;
}

/**
 * Runs the append statement. Returns the inserted rows in position order, or
 * an empty list when the concurrency check failed (nothing was written).
 *
 * @example
 * ```ts
 * const rows = await insertEvents(tx, st, prepareAppend(events, { expectedVersion: 3 }));
 * if (rows.length === 0) // conflict
 * ```
 */
export async function insertEvents(ex: Executor, st: StoreStatements, batch: PreparedAppend): Promise<InsertedRow[]> {
  const ev = batch.events;
  const params: (string | null)[] = [
    batch.aggregateType,
    batch.aggregateId,
    String(ev.length),
    pgArray(ev.map((e) => e.eventId)),
    pgArray(ev.map((e) => e.eventType)),
    pgArray(ev.map((e) => String(e.eventVersion))),
    pgArray(ev.map((e) => e.payloadJson), true),
    pgArray(ev.map((e) => e.metadataJson), true),
    pgArray(ev.map((e) => e.boundedContext)),
    pgArray(ev.map((e) => e.traceId)),
    pgArray(ev.map((e) => e.correlationId)),
    pgArray(ev.map((e) => e.causationId)),
  ];
  let text = st.appendAny;
  if (batch.mode === "no-stream") text = st.appendNoStream;
  else if (batch.mode === "exact") {
    text = st.appendExact;
    params.push(String(batch.expected));
  }
  const rows = await run(ex, text, params);
  return rows.map((r) => ({
    globalPosition: toBigInt(r[0]),
    aggregateVersion: Number(r[1]),
    transactionId: r[2] as string,
    createdAt: new Date(Number(r[3])),
  }));
}

/**
 * The aggregate's current version (0 when it has no events).
 *
 * @example
 * ```ts
 * const version = await selectHeadVersion(sql, st, "Account", "acc-42");
 * ```
 */
export async function selectHeadVersion(ex: Executor, st: StoreStatements, aggregateType: string, aggregateId: string): Promise<number> {
  const rows = await run(ex, st.headVersion, [aggregateType, aggregateId]);
  return rows.length === 0 ? 0 : Number(rows[0]![0]);
}

function decodeEvent(r: Row): PersistedEvent {
  return {
    globalPosition: toBigInt(r[0]),
    transactionId: r[1] as string,
    aggregateType: r[2] as string,
    aggregateId: r[3] as string,
    aggregateVersion: Number(r[4]),
    eventId: r[5] as string,
    eventType: r[6] as string,
    eventVersion: Number(r[7]),
    payload: JSON.parse(r[8] as string) as unknown,
    metadata: r[9] === null ? null : JSON.parse(r[9] as string) as Record<string, unknown>,
    boundedContext: r[10] ?? null,
    traceId: r[11] ?? null,
    correlationId: r[12] ?? null,
    causationId: r[13] ?? null,
    createdAt: new Date(Number(r[14])),
  };
}

/**
 * Events after `position`, in position order, optionally limited to some
 * aggregate types and/or bounded contexts (both given: both must match).
 *
 * @example
 * ```ts
 * const page = await selectEventsAfter(sql, st, 0n, 100, { aggregateTypes: ["Account"] });
 * ```
 */
export async function selectEventsAfter(
  ex: Executor,
  st: StoreStatements,
  position: bigint,
  limit: number,
  scope: { aggregateTypes?: readonly string[] | undefined; boundedContexts?: readonly string[] | undefined } = {},
): Promise<PersistedEvent[]> {
  const params: string[] = [position.toString(), String(limit)];
  let variant = 0;
  if (scope.aggregateTypes && scope.aggregateTypes.length > 0) {
    variant |= 1;
    params.push(pgArray(scope.aggregateTypes));
  }
  if (scope.boundedContexts && scope.boundedContexts.length > 0) {
    variant |= 2;
    params.push(pgArray(scope.boundedContexts));
  }
  return (await run(ex, st.readAfter[variant]!, params)).map(decodeEvent);
}

/**
 * One aggregate's events from `fromVersion` (inclusive), in version order.
 *
 * @example
 * ```ts
 * const history = await selectAggregateEvents(sql, st, "Account", "acc-42", 1);
 * ```
 */
export async function selectAggregateEvents(
  ex: Executor,
  st: StoreStatements,
  aggregateType: string,
  aggregateId: string,
  fromVersion: number,
): Promise<PersistedEvent[]> {
  return (await run(ex, st.readAggregate, [aggregateType, aggregateId, String(fromVersion)])).map(decodeEvent);
}

/**
 * The highest visible global position, `0n` when the store is empty.
 *
 * @example
 * ```ts
 * const head = await selectLatestPosition(sql, st);
 * ```
 */
export async function selectLatestPosition(ex: Executor, st: StoreStatements): Promise<bigint> {
  const rows = await run(ex, st.latestPosition, []);
  return toBigInt(rows[0]![0]);
}
