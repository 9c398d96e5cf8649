/**
 * Worker options: one valibot schema, validated once at the boundary. The
 * parsed config is frozen.
 *
 * @module
 */
import * as v from "valibot";
import { ConfigError, type ConfigIssue, isSluiceError } from "./errors.ts";
import { assertIdentifier, resolveTableNames, type ResolvedTableNames, type TableNamesInput } from "./db/names.ts";
import type { Logger } from "./logger.ts";
import type { Sql } from "./db/executor.ts";

const ms = (min: number, fallback: number) =>
  v.optional(v.pipe(v.number(), v.integer("must be an integer number of milliseconds"), v.minValue(min, `must be >= ${min}`)), fallback);
const count = (min: number, max: number, fallback: number) =>
  v.optional(v.pipe(v.number(), v.integer("must be an integer"), v.minValue(min, `must be >= ${min}`), v.maxValue(max, `must be <= ${max}`)), fallback);
const names = v.pipe(v.array(v.pipe(v.string("must be a string"), v.nonEmpty("must not be empty"))), v.readonly());

/** Schema of one consumer definition (internal; not part of the published API). */
export const ConsumerSchema = v.strictObject({
  name: v.pipe(
    v.string("must be a string"),
    v.nonEmpty("must not be empty"),
    v.maxLength(200, "must be at most 200 characters"),
  ),
  aggregateTypes: v.optional(names),
  boundedContexts: v.optional(names),
});

/**
 * A consumer: a named, durable position in the event log. Scoped consumers
 * receive only events of the listed aggregate types and/or bounded contexts,
 * but their checkpoint still advances over every event.
 *
 * @example
 * ```ts
 * const consumers: ConsumerDefinition[] = [
 *   { name: "account_projection", aggregateTypes: ["Account"] },
 *   { name: "outbox" },
 * ];
 * ```
 */
export interface ConsumerDefinition {
  /** Unique, non-empty, at most 200 characters. */
  readonly name: string;
  /** Only events of these aggregate types (all when absent or empty). */
  readonly aggregateTypes?: readonly string[];
  /** Only events of these bounded contexts (all when absent or empty). */
  readonly boundedContexts?: readonly string[];
}

/** Schema of every worker option except `sql`, `logger` and `clock`. */
export const WorkerOptionsSchema = v.strictObject({
  consumers: v.pipe(
    v.array(ConsumerSchema, "must be an array of consumer definitions"),
    v.check((list) => new Set(list.map((c) => c.name)).size === list.length, "consumer names must be unique"),
  ),
  /** Rows per probe and per batch. @default 100 */
  batchSize: count(1, 100_000, 100),
  /** Base consumer poll interval. @default 1000 */
  pollIntervalMs: ms(1, 1_000),
  /** Ceiling of the idle backoff. @default 30000 */
  maxPollIntervalMs: ms(1, 30_000),
  /** How consumers are woken: `"poll"` (latest-position polling) or `"notify"` (LISTEN). @default "poll" */
  dispatcher: v.optional(v.picklist(["poll", "notify"], 'must be "poll" or "notify"'), "poll"),
  /** Poll dispatcher period (poll mode only; in notify mode the coordination tick, at most every second, is the reconciliation poll). @default 200 */
  dispatcherIntervalMs: ms(1, 200),
  /** NOTIFY channel (must match the store's). @default "sluice_events" */
  notifyChannel: v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, "must be an SQL identifier")), "sluice_events"),
  /**
   * Connection string for the session-scoped connections (LISTEN, advisory
   * locks). Set it to a direct PostgreSQL address when `sql` goes through a
   * transaction-pooling PgBouncer. @default the options of `sql`
   */
  directUrl: v.optional(v.pipe(v.string(), v.nonEmpty("must not be empty"))),
  /** @default 5000 */
  heartbeatIntervalMs: ms(10, 5_000),
  /** A worker silent this long is dead. @default 30000 */
  heartbeatTimeoutMs: ms(10, 30_000),
  /** Leader cycle and assignment sync; the coordination tick runs every min(1000, heartbeatIntervalMs, rebalanceIntervalMs) ms. @default 5000 */
  rebalanceIntervalMs: ms(10, 5_000),
  /** Pause between full batches, and while blocked on a gap. @default 200 */
  batchPauseMs: ms(0, 200),
  /** A batch (probe, user code and commit) open longer than this is rolled back. @default 30000 */
  batchTimeoutMs: ms(1, 30_000),
  /** Pass a gap whose writers cannot be proven finished after this long; `false` never does. @default 30000 */
  staleGapThresholdMs: v.optional(v.union([v.pipe(v.number(), v.integer(), v.minValue(1)), v.literal(false)], "must be a positive integer or false"), 30_000),
  /** Rows to stay behind the visible head when passing a stale gap (clamped to batchSize - 1). @default 8 */
  staleGapHarborLag: count(0, 100_000, 8),
  /** A gap proven dead is passed only once it is at least this old. @default 250 */
  provenGapMinAgeMs: ms(0, 250),
  /** After a stale pass, watch the passed positions this long for late commits. @default 300000 */
  lateCommitWatchMs: ms(0, 300_000),
  /** Failed batches in a row before a consumer is parked. @default 5 */
  maxConsecutiveFailures: count(1, 1_000_000, 5),
  /** First retry delay after a failed batch (doubles, jittered). @default 500 */
  retryBaseMs: ms(1, 500),
  /** Longest retry delay. @default 30000 */
  retryMaxMs: ms(1, 30_000),
  /** How long `stop()` lets an open batch finish before rolling it back. @default 10000 */
  shutdownTimeoutMs: ms(0, 10_000),
  /** Table names (see `TableNamesInput`). @default schema "sluice" */
  tables: v.optional(v.strictObject({
    schema: v.optional(v.string("must be a string")),
    workerNodes: v.optional(v.string("must be a string")),
    consumerAssignments: v.optional(v.string("must be a string")),
    consumerCheckpoints: v.optional(v.string("must be a string")),
    consumerGapSkips: v.optional(v.string("must be a string")),
    events: v.optional(v.string("must be a string")),
    aggregateHeads: v.optional(v.string("must be a string")),
  })),
  /** This worker's id (a UUID). @default random */
  workerId: v.optional(v.pipe(v.string(), v.uuid("must be a UUID"))),
});

/**
 * Options of `createWorker`. Durations are milliseconds (`...Ms`).
 *
 * @example
 * ```ts
 * const options: WorkerOptions = {
 *   sql, consumers: [{ name: "outbox" }], dispatcher: "notify", batchSize: 500,
 * };
 * ```
 */
export interface WorkerOptions {
  /** The postgres.js client the worker uses for its queries and batch transactions. */
  sql: Sql;
  /** The consumers this worker can run (unique names). */
  consumers: readonly ConsumerDefinition[];
  /** Rows per probe and per batch (1..100000). @default 100 */
  batchSize?: number;
  /** Base consumer poll interval. @default 1000 */
  pollIntervalMs?: number;
  /** Ceiling of the idle backoff (>= pollIntervalMs). @default 30000 */
  maxPollIntervalMs?: number;
  /** How consumers are woken. @default "poll" */
  dispatcher?: "poll" | "notify";
  /** Poll dispatcher period, poll mode only (in notify mode the coordination tick, at most every second, reconciles). @default 200 */
  dispatcherIntervalMs?: number;
  /** NOTIFY channel, the same as the store's (an SQL identifier). @default "sluice_events" */
  notifyChannel?: string;
  /** Direct connection string for the session connections (LISTEN, advisory locks) when `sql` goes through PgBouncer. */
  directUrl?: string;
  /** @default 5000 */
  heartbeatIntervalMs?: number;
  /** A worker silent this long is dead (> heartbeatIntervalMs). @default 30000 */
  heartbeatTimeoutMs?: number;
  /** Leader cycle and assignment sync; the coordination tick runs every min(1000, heartbeatIntervalMs, rebalanceIntervalMs) ms. @default 5000 */
  rebalanceIntervalMs?: number;
  /** Pause between full batches and while blocked on a gap (0 allowed). @default 200 */
  batchPauseMs?: number;
  /** A batch open longer than this is rolled back. @default 30000 */
  batchTimeoutMs?: number;
  /** Pass a hole that cannot be proven dead after this long; `false` never does. @default 30000 */
  staleGapThresholdMs?: number | false;
  /** Rows to stay behind the window's end after a stale pass (capped at batchSize - 1). @default 8 */
  staleGapHarborLag?: number;
  /** A hole proven dead is passed only once known this long. @default 250 */
  provenGapMinAgeMs?: number;
  /** After a stale pass, watch the passed positions this long for late commits. @default 300000 */
  lateCommitWatchMs?: number;
  /** Failed batches in a row before a consumer is parked. @default 5 */
  maxConsecutiveFailures?: number;
  /** First retry delay after a failed batch. @default 500 */
  retryBaseMs?: number;
  /** Longest retry delay (>= retryBaseMs). @default 30000 */
  retryMaxMs?: number;
  /** How long stop() lets open batches finish. @default 10000 */
  shutdownTimeoutMs?: number;
  /** Where the tables live. @default schema "sluice" */
  tables?: TableNamesInput;
  /** This worker's id (a UUID). @default random */
  workerId?: string;
  /** @default LogTape category ["sluice", ...] */
  logger?: Logger;
  /** Clock and randomness, for tests. */
  clock?: Clock;
}

/** Injectable time and randomness. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** A number in [0, 1). */
  random(): number;
}

/** The system clock. */
export const systemClock: Clock = { now: () => Date.now(), random: () => Math.random() };

/** Validated, defaulted, frozen worker configuration. */
export interface ResolvedConfig {
  readonly consumers: readonly ConsumerDefinition[];
  readonly batchSize: number;
  readonly pollIntervalMs: number;
  readonly maxPollIntervalMs: number;
  readonly dispatcher: "poll" | "notify";
  readonly dispatcherIntervalMs: number;
  readonly notifyChannel: string;
  readonly directUrl: string | undefined;
  readonly heartbeatIntervalMs: number;
  readonly heartbeatTimeoutMs: number;
  readonly rebalanceIntervalMs: number;
  readonly batchPauseMs: number;
  readonly batchTimeoutMs: number;
  readonly staleGapThresholdMs: number | false;
  readonly staleGapHarborLag: number;
  readonly provenGapMinAgeMs: number;
  readonly lateCommitWatchMs: number;
  readonly maxConsecutiveFailures: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  readonly shutdownTimeoutMs: number;
  readonly workerId: string | undefined;
  readonly tables: ResolvedTableNames;
}

/**
 * Validates worker options (all but `sql`, `logger` and `clock`). Throws a
 * {@link ConfigError} listing every bad field; never returns a partial config.
 *
 * @example
 * ```ts
 * const config = parseWorkerConfig({ consumers: [{ name: "outbox" }], batchSize: 500 });
 * config.batchSize; // 500
 * ```
 */
export function parseWorkerConfig(input: Omit<WorkerOptions, "sql" | "logger" | "clock">): ResolvedConfig {
  const out: Omit<ResolvedConfig, "tables" | "directUrl" | "workerId"> & { directUrl?: string; workerId?: string } = parseWith(
    WorkerOptionsSchema,
    input,
    "worker options",
  );
  const issues: ConfigIssue[] = [];
  if (out.maxPollIntervalMs < out.pollIntervalMs) {
    issues.push({ path: "maxPollIntervalMs", value: out.maxPollIntervalMs, rule: `must be >= pollIntervalMs (${out.pollIntervalMs})` });
  }
  if (out.heartbeatTimeoutMs <= out.heartbeatIntervalMs) {
    issues.push({ path: "heartbeatTimeoutMs", value: out.heartbeatTimeoutMs, rule: `must be > heartbeatIntervalMs (${out.heartbeatIntervalMs})` });
  }
  if (out.retryMaxMs < out.retryBaseMs) {
    issues.push({ path: "retryMaxMs", value: out.retryMaxMs, rule: `must be >= retryBaseMs (${out.retryBaseMs})` });
  }
  let tables: ResolvedTableNames | undefined;
  try {
    tables = resolveTableNames(input.tables);
  } catch (e) {
    if (!isSluiceError(e)) throw e;
    const field = String(e.details.field ?? "");
    issues.push({ path: `tables.${field}`, value: e.details.value, rule: e.message });
  }
  if (issues.length > 0 || tables === undefined) throw new ConfigError("worker options", issues);
  return Object.freeze({
    ...out,
    directUrl: out.directUrl,
    workerId: out.workerId,
    // The seed's clamp: the harbor must leave at least one row to process.
    staleGapHarborLag: Math.min(out.staleGapHarborLag, out.batchSize - 1),
    consumers: Object.freeze(out.consumers.map((c) => Object.freeze({ ...c }))),
    tables,
  });
}

/**
 * Parses `input` with a valibot schema, turning every issue into a
 * {@link ConfigIssue} of one {@link ConfigError}.
 */
export function parseWith<S extends v.GenericSchema>(schema: S, input: unknown, subject: string): v.InferOutput<S> {
  const r = v.safeParse(schema, input);
  if (r.success) return r.output;
  throw new ConfigError(subject, r.issues.map((i) => ({
    path: v.getDotPath(i) ?? "",
    value: i.input,
    rule: i.type === "strict_object" && i.expected === "never" ? "is not a known option" : i.message,
  })));
}

/** Validates a NOTIFY channel name. */
export function assertChannel(value: unknown): string {
  return assertIdentifier("notifyChannel", value);
}
