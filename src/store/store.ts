/**
 * The event store: append events with optimistic concurrency inside the
 * caller's transaction, read them back by global position or by aggregate.
 *
 * @module
 */
import * as v from "valibot";
import { parseWith } from "../config.ts";
import { ConfigError, isSluiceError, SluiceError, sqlStateOf, wrapDbError } from "../errors.ts";
import { type Executor, isTransaction, type Sql } from "../db/executor.ts";
import { resolveTableNames, type ResolvedTableNames, type TableNamesInput } from "../db/names.ts";
import { defaultLogger, type Logger } from "../logger.ts";
import {
  type AppendOptions,
  type AppendResult,
  type ExpectedVersion,
  type NewEvent,
  type PersistedEvent,
  type PreparedAppend,
  prepareAppend,
} from "./events.ts";
import {
  buildStatements,
  insertEvents,
  selectAggregateEvents,
  selectEventsAfter,
  selectHeadVersion,
  selectLatestPosition,
  type StoreStatements,
} from "./statements.ts";

/**
 * The default NOTIFY channel (the worker's default too).
 *
 * @example
 * ```ts
 * await listener.listen(DEFAULT_NOTIFY_CHANNEL, (position) => wake(BigInt(position)));
 * ```
 */
export const DEFAULT_NOTIFY_CHANNEL = "sluice_events";

/**
 * Options of {@link createStore}.
 *
 * @example
 * ```ts
 * const options: StoreOptions = { tables: { schema: "app" }, notifyChannel: "app_events" };
 * ```
 */
export interface StoreOptions {
  /** Where the tables live (must match the worker's). @default schema "sluice" */
  tables?: TableNamesInput;
  /**
   * Channel NOTIFYed with the last position of each append, on commit; `false`
   * sends nothing (the worker then has to poll). @default "sluice_events"
   */
  notifyChannel?: string | false;
  /** @default LogTape category ["sluice", "store"] */
  logger?: Logger;
}

/**
 * Which events a read returns. An absent or empty list does not filter; when
 * both lists are given an event must match both.
 *
 * @example
 * ```ts
 * const scope: ReadScope = { aggregateTypes: ["Account"], boundedContexts: ["banking"] };
 * ```
 */
export interface ReadScope {
  aggregateTypes?: readonly string[];
  boundedContexts?: readonly string[];
}

/**
 * The event store returned by {@link createStore}.
 *
 * @example
 * ```ts
 * const store = createStore(sql);
 * await sql.begin(async (tx) => {
 *   await tx`update accounts set balance = balance + 10 where id = 42`;
 *   await store.append(tx, [{ aggregateType: "Account", aggregateId: "42", eventType: "Deposited", payload: { amount: 10 } }],
 *     { expectedVersion: 7 });
 * });
 * ```
 */
export interface EventStore {
  /** The resolved table names. */
  readonly tables: ResolvedTableNames;
  /** The NOTIFY channel, or `false`. */
  readonly notifyChannel: string | false;
  /**
   * Appends the events of one aggregate with consecutive versions, in one
   * statement on `executor` (your client, or your transaction: the events
   * commit with your writes). Throws `CONCURRENCY_CONFLICT` when the
   * expected version does not hold, another transaction appended to the
   * aggregate first, or an event id exists; `INVALID_EVENT` /
   * `INVALID_ARGUMENT` (before sending anything) for bad input.
   */
  append<P = unknown>(
    executor: Executor,
    events: readonly NewEvent<P>[],
    options: AppendOptions,
  ): Promise<AppendResult<P>>;
  /** Up to `limit` events with a position above `position`, in position order. */
  readAfter(position: bigint, limit: number, scope?: ReadScope, executor?: Executor): Promise<PersistedEvent[]>;
  /** One aggregate's events from `fromVersion` (inclusive, default 1), in version order. */
  readAggregate(aggregateType: string, aggregateId: string, fromVersion?: number, executor?: Executor): Promise<PersistedEvent[]>;
  /** The highest visible global position, `0n` when there is none. */
  latestPosition(executor?: Executor): Promise<bigint>;
}

const CHANNEL = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
const tableName = v.optional(v.string("must be a string"));

const StoreOptionsSchema = v.strictObject({
  tables: v.optional(v.strictObject({
    schema: tableName,
    workerNodes: tableName,
    consumerAssignments: tableName,
    consumerCheckpoints: tableName,
    consumerGapSkips: tableName,
    events: tableName,
    aggregateHeads: tableName,
  }, "must be an object of table names")),
  notifyChannel: v.optional(
    v.union(
      [v.pipe(v.string(), v.regex(CHANNEL, "must be an SQL identifier (letters, digits and _, at most 63)")), v.literal(false)],
      "must be an SQL identifier or false",
    ),
    DEFAULT_NOTIFY_CHANNEL,
  ),
  logger: v.optional(v.custom<Logger>(isLogger, "must be a logger with debug, info, warn and error methods")),
});

function isLogger(x: unknown): boolean {
  if (typeof x !== "object" || x === null) return false;
  const l = x as Record<string, unknown>;
  return ["debug", "info", "warn", "error"].every((m) => typeof l[m] === "function");
}

function invalid(field: string, rule: string, value?: unknown): SluiceError {
  return new SluiceError("INVALID_ARGUMENT", `Invalid argument: ${field} ${rule}`, { details: { field, value } });
}

function assertExecutor(field: string, ex: unknown): asserts ex is Executor {
  if (typeof ex !== "function" || typeof (ex as { unsafe?: unknown }).unsafe !== "function") {
    throw invalid(field, "must be a postgres.js client or transaction");
  }
}

function assertName(field: string, value: unknown): asserts value is string {
  if (typeof value !== "string" || value.length === 0) throw invalid(field, "must be a non-empty string", value);
}

function assertNames(field: string, value: unknown): readonly string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw invalid(field, "must be an array of non-empty strings", value);
  value.forEach((x, i) => assertName(`${field}[${i}]`, x));
  return value as string[];
}

const MAX_INT8 = 9_223_372_036_854_775_807n;

function showExpected(e: ExpectedVersion): string {
  return typeof e === "number" ? String(e) : e;
}

/**
 * Creates an event store on the postgres.js client `sql` (it may be shared
 * with drizzle). Options are validated here: a bad one throws a
 * `ConfigError` naming the field. Nothing is sent to the database.
 *
 * @example
 * ```ts
 * import postgres from "postgres";
 * import { createStore } from "@sluice/worker/store";
 * const sql = postgres(process.env.DATABASE_URL!);
 * const store = createStore(sql);
 * const { lastPosition } = await store.append(sql, [
 *   { aggregateType: "Account", aggregateId: "42", eventType: "Opened", payload: { owner: "Ada" } },
 * ], { expectedVersion: "no-stream" });
 * ```
 */
export function createStore(sql: Sql, options: StoreOptions = {}): EventStore {
  assertExecutor("sql", sql);
  const opts = parseWith(StoreOptionsSchema, options ?? {}, "store options");
  let tables: ResolvedTableNames;
  try {
    tables = resolveTableNames(opts.tables);
  } catch (e) {
    if (!isSluiceError(e)) throw e;
    const field = String(e.details.field ?? "");
    throw new ConfigError("store options", [{ path: `tables.${field}`, value: e.details.value, rule: e.message }]);
  }
  const notifyChannel = opts.notifyChannel;
  const log = opts.logger ?? defaultLogger("store");
  const st: StoreStatements = buildStatements(tables, notifyChannel);
  const eventIdKey = `${tables.events.name}_event_id_key`;

  async function conflict(ex: Executor, batch: PreparedAppend, cause?: unknown): Promise<SluiceError> {
    const state = sqlStateOf(cause);
    // After an error inside the caller's transaction, that transaction is
    // aborted: nothing more can be read on it.
    let actual: number | null = null;
    if (cause === undefined || !isTransaction(ex)) {
      try {
        actual = await selectHeadVersion(ex, st, batch.aggregateType, batch.aggregateId);
      } catch {
        actual = null;
      }
    }
    const constraint = (cause as { constraint_name?: unknown } | undefined)?.constraint_name;
    const reason = cause === undefined
      ? "version check failed"
      : constraint === eventIdKey
      ? "duplicate event id"
      : state === "40001"
      ? "serialization failure: a concurrent transaction appended to the aggregate"
      : "a concurrent append took the same version";
    const expected = showExpected(batch.expectedVersion);
    const actualText = actual === null ? "unknown (the failed insert aborted the transaction)" : String(actual);
    const details = {
      aggregateType: batch.aggregateType,
      aggregateId: batch.aggregateId,
      expectedVersion: batch.expectedVersion,
      actualVersion: actual,
      reason,
      ...(typeof constraint === "string" ? { constraint } : {}),
    };
    log.debug("Append lost its concurrency check", details);
    return new SluiceError(
      "CONCURRENCY_CONFLICT",
      `Concurrency conflict appending to ${batch.aggregateType}/${batch.aggregateId}: ` +
        `expected version ${expected}, actual version ${actualText} (${reason})`,
      { cause, sqlState: state, details },
    );
  }

  return {
    tables,
    notifyChannel,

    async append<P = unknown>(
      executor: Executor,
      events: readonly NewEvent<P>[],
      options: AppendOptions,
    ): Promise<AppendResult<P>> {
      assertExecutor("executor", executor);
      const batch = prepareAppend(events, options);
      let rows;
      try {
        rows = await insertEvents(executor, st, batch);
      } catch (e) {
        const state = sqlStateOf(e);
        // 23505: a duplicate event id, or a version taken by a writer that
        // bypassed aggregate_heads. 40001: under REPEATABLE READ or
        // SERIALIZABLE, another transaction updated the aggregate head.
        if (state === "23505" || state === "40001") throw await conflict(executor, batch, e);
        throw wrapDbError(`append events to ${batch.aggregateType}/${batch.aggregateId}`, e, {
          aggregateType: batch.aggregateType,
          aggregateId: batch.aggregateId,
        });
      }
      if (rows.length === 0) throw await conflict(executor, batch);
      const firstVersion = rows.reduce((m, r) => Math.min(m, r.aggregateVersion), Number.POSITIVE_INFINITY);
      const persisted: PersistedEvent<P>[] = new Array(rows.length);
      for (const r of rows) {
        const i = r.aggregateVersion - firstVersion;
        const e = batch.events[i]!;
        persisted[i] = {
          globalPosition: r.globalPosition,
          transactionId: r.transactionId,
          aggregateType: batch.aggregateType,
          aggregateId: batch.aggregateId,
          aggregateVersion: r.aggregateVersion,
          eventId: e.eventId,
          eventType: e.eventType,
          eventVersion: e.eventVersion,
          payload: JSON.parse(e.payloadJson) as P,
          metadata: e.metadataJson === null ? null : JSON.parse(e.metadataJson) as Record<string, unknown>,
          boundedContext: e.boundedContext,
          traceId: e.traceId,
          correlationId: e.correlationId,
          causationId: e.causationId,
          createdAt: r.createdAt,
        };
      }
      const last = persisted[persisted.length - 1]!;
      return {
        events: persisted,
        firstPosition: persisted[0]!.globalPosition,
        lastPosition: last.globalPosition,
        version: last.aggregateVersion,
      };
    },

    async readAfter(position: bigint, limit: number, scope?: ReadScope, executor?: Executor): Promise<PersistedEvent[]> {
      if (typeof position !== "bigint" || position < 0n || position > MAX_INT8) {
        throw invalid("position", "must be a bigint >= 0n", position);
      }
      if (typeof limit !== "number" || !Number.isSafeInteger(limit) || limit < 1) {
        throw invalid("limit", "must be an integer >= 1", limit);
      }
      if (scope !== undefined && (typeof scope !== "object" || scope === null)) throw invalid("scope", "must be an object", scope);
      const s = {
        aggregateTypes: assertNames("scope.aggregateTypes", scope?.aggregateTypes),
        boundedContexts: assertNames("scope.boundedContexts", scope?.boundedContexts),
      };
      const ex = executor ?? sql;
      assertExecutor("executor", ex);
      try {
        return await selectEventsAfter(ex, st, position, limit, s);
      } catch (e) {
        throw wrapDbError("read events", e, { position: position.toString() });
      }
    },

    async readAggregate(aggregateType: string, aggregateId: string, fromVersion = 1, executor?: Executor): Promise<PersistedEvent[]> {
      assertName("aggregateType", aggregateType);
      assertName("aggregateId", aggregateId);
      if (typeof fromVersion !== "number" || !Number.isSafeInteger(fromVersion) || fromVersion < 0) {
        throw invalid("fromVersion", "must be an integer >= 0", fromVersion);
      }
      const ex = executor ?? sql;
      assertExecutor("executor", ex);
      try {
        return await selectAggregateEvents(ex, st, aggregateType, aggregateId, fromVersion);
      } catch (e) {
        throw wrapDbError(`read aggregate ${aggregateType}/${aggregateId}`, e, { aggregateType, aggregateId });
      }
    },

    async latestPosition(executor?: Executor): Promise<bigint> {
      const ex = executor ?? sql;
      assertExecutor("executor", ex);
      try {
        return await selectLatestPosition(ex, st);
      } catch (e) {
        throw wrapDbError("read the latest position", e);
      }
    },
  };
}
