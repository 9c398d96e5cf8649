/**
 * Drizzle definitions of every sluice table, for any names (see `tables.ts`
 * for the public factory).
 *
 * Index and constraint names are always `<table>_<suffix>`: the migrator
 * renames them together with their table, so two deployments can share one
 * schema.
 *
 * @module
 */
import { sql } from "drizzle-orm";
import {
  bigint,
  bigserial,
  boolean,
  customType,
  foreignKey,
  index,
  integer,
  jsonb,
  pgSchema,
  pgTable,
  primaryKey,
  text,
  timestamp,
  unique,
  uuid,
} from "drizzle-orm/pg-core";
import type { ResolvedTableNames } from "./names.ts";

/**
 * PostgreSQL `xid8`: a 64-bit, never-wrapping transaction id. Read as a
 * decimal string (it does not fit a JS number).
 */
export const xid8: ReturnType<typeof customType<{ data: string; driverData: string }>> = customType<{
  data: string;
  driverData: string;
}>({ dataType: () => "xid8" });

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: "date" });

function tableFactory(schema: string): typeof pgTable {
  // drizzle refuses pgSchema("public"); plain pgTable means public.
  return (schema === "public" ? pgTable : pgSchema(schema).table) as typeof pgTable;
}

/**
 * The table definitions. Untyped on purpose: `scripts/gen-table-types.ts`
 * writes its inferred type to `tables.types.gen.ts`, which the public API
 * uses (JSR needs explicit types).
 */
// deno-lint-ignore explicit-function-return-type
export function defineTables(names: ResolvedTableNames) {
  const t = (k: keyof ResolvedTableNames) => tableFactory(names[k].schema);
  const n = (k: keyof ResolvedTableNames) => names[k].name;

  const workerNodes = t("workerNodes")(
    n("workerNodes"),
    {
      workerId: uuid("worker_id").primaryKey(),
      heartbeatAt: ts("heartbeat_at").notNull().defaultNow(),
      createdAt: ts("created_at").notNull().defaultNow(),
      updatedAt: ts("updated_at").notNull().defaultNow(),
      /** Names of the consumers this worker can run; the leader assigns only these. */
      consumers: text("consumers").array().notNull().default(sql`'{}'::text[]`),
      /** Advisory-lock key the worker holds while its coordination session lives. */
      livenessKey: bigint("liveness_key", { mode: "bigint" }),
      /** Backend pid of the coordination session (joins pg_locks / pg_stat_activity). */
      backendPid: integer("backend_pid"),
      /** Free-form facts for operators: host, pid, runtime, version. */
      info: jsonb("info").notNull().default(sql`'{}'::jsonb`),
    },
    (tb) => [index(`${n("workerNodes")}_heartbeat_idx`).on(tb.heartbeatAt)],
  );

  const consumerAssignments = t("consumerAssignments")(
    n("consumerAssignments"),
    {
      consumerName: text("consumer_name").primaryKey(),
      workerId: uuid("worker_id"),
      /** Paused consumers are not assigned to anyone. */
      paused: boolean("paused").notNull().default(false),
      /** Last state an owner reported: running, backing_off or parked (waiting on a hole shows in `worker.status()` only). */
      state: text("state"),
      lastError: text("last_error"),
      stateChangedAt: ts("state_changed_at"),
      createdAt: ts("created_at").notNull().defaultNow(),
      updatedAt: ts("updated_at").notNull().defaultNow(),
    },
    (tb) => [
      index(`${n("consumerAssignments")}_worker_idx`).on(tb.workerId),
      foreignKey({
        name: `${n("consumerAssignments")}_worker_fk`,
        columns: [tb.workerId],
        foreignColumns: [workerNodes.workerId],
      }).onDelete("set null"),
    ],
  );

  const consumerCheckpoints = t("consumerCheckpoints")(n("consumerCheckpoints"), {
    consumerName: text("consumer_name").primaryKey(),
    lastPosition: bigint("last_position", { mode: "bigint" }).notNull().default(sql`0`),
    createdAt: ts("created_at").notNull().defaultNow(),
    updatedAt: ts("updated_at").notNull().defaultNow(),
  });

  const consumerGapSkips = t("consumerGapSkips")(
    n("consumerGapSkips"),
    {
      id: bigserial("id", { mode: "bigint" }).primaryKey(),
      consumerName: text("consumer_name").notNull(),
      workerId: uuid("worker_id").notNull(),
      /** First missing position (checkpoint + 1). */
      gapPosition: bigint("gap_position", { mode: "bigint" }).notNull(),
      /** The checkpoint written together with this row. */
      skipToPosition: bigint("skip_to_position", { mode: "bigint" }).notNull(),
      highestVisiblePosition: bigint("highest_visible_position", { mode: "bigint" }).notNull(),
      /** Every position passed over, not only the first. */
      skippedPositions: bigint("skipped_positions", { mode: "bigint" }).array().notNull().default(sql`'{}'::bigint[]`),
      /** `rolled_back` (proven dead), `stale` (timed out) or `manual` (operator). */
      reason: text("reason").notNull(),
      firstSeenAt: ts("first_seen_at").notNull(),
      /** Positions passed as stale that later turned up (a late commit). */
      latePositions: bigint("late_positions", { mode: "bigint" }).array().notNull().default(sql`'{}'::bigint[]`),
      createdAt: ts("created_at").notNull().defaultNow(),
    },
    (tb) => [index(`${n("consumerGapSkips")}_consumer_idx`).on(tb.consumerName, tb.createdAt.desc())],
  );

  const events = t("events")(
    n("events"),
    {
      // bigserial: the sequence keeps the default CACHE 1. A larger cache
      // hands each session its own block, so positions would be drawn out of
      // transaction-start order and a hole could be filled by a transaction
      // that began after the hole was seen, which breaks the gap proof.
      globalPosition: bigserial("global_position", { mode: "bigint" }).primaryKey(),
      /** Id of the appending transaction, taken before its first position was drawn. */
      transactionId: xid8("transaction_id").notNull().default(sql`pg_current_xact_id()`),
      aggregateType: text("aggregate_type").notNull(),
      aggregateId: text("aggregate_id").notNull(),
      aggregateVersion: bigint("aggregate_version", { mode: "number" }).notNull(),
      eventId: uuid("event_id").notNull(),
      eventType: text("event_type").notNull(),
      eventVersion: integer("event_version").notNull().default(1),
      payload: jsonb("payload").notNull(),
      metadata: jsonb("metadata"),
      boundedContext: text("bounded_context"),
      traceId: text("trace_id"),
      correlationId: text("correlation_id"),
      causationId: text("causation_id"),
      createdAt: ts("created_at").notNull().defaultNow(),
    },
    (tb) => [
      unique(`${n("events")}_event_id_key`).on(tb.eventId),
      unique(`${n("events")}_aggregate_version_key`).on(tb.aggregateType, tb.aggregateId, tb.aggregateVersion),
      index(`${n("events")}_type_position_idx`).on(tb.aggregateType, tb.globalPosition),
      index(`${n("events")}_context_position_idx`).on(tb.boundedContext, tb.globalPosition),
    ],
  );

  const aggregateHeads = t("aggregateHeads")(
    n("aggregateHeads"),
    {
      aggregateType: text("aggregate_type").notNull(),
      aggregateId: text("aggregate_id").notNull(),
      aggregateVersion: bigint("aggregate_version", { mode: "number" }).notNull(),
      updatedAt: ts("updated_at").notNull().defaultNow(),
    },
    (tb) => [primaryKey({ name: `${n("aggregateHeads")}_pkey`, columns: [tb.aggregateType, tb.aggregateId] })],
  );

  return { workerNodes, consumerAssignments, consumerCheckpoints, consumerGapSkips, events, aggregateHeads };
}
