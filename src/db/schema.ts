/**
 * The sluice tables with their default names in schema `sluice`, and the
 * factory that builds them elsewhere. drizzle-kit reads this file to write
 * `drizzle/`; applications import it as `@sluice/worker/schema`.
 *
 * @example
 * ```ts
 * import { createTables } from "@sluice/worker/schema";
 * export const { events, consumerCheckpoints } = createTables({ schema: "infra" });
 * ```
 *
 * @module
 */
import { createTables, type SluiceTables } from "./tables.ts";

export { createTables, xid8, type SluiceTables } from "./tables.ts";
export {
  DEFAULT_SCHEMA,
  DEFAULT_TABLE_NAMES,
  resolveTableNames,
  type QualifiedName,
  type ResolvedTableNames,
  type TableKey,
  type TableNamesInput,
} from "./names.ts";

const defaults: SluiceTables = createTables();

/** `sluice.worker_nodes`: live workers, their heartbeats and the consumers they can run. */
export const workerNodes: SluiceTables["workerNodes"] = defaults.workerNodes;
/** `sluice.consumer_assignments`: which worker owns each consumer. */
export const consumerAssignments: SluiceTables["consumerAssignments"] = defaults.consumerAssignments;
/** `sluice.consumer_checkpoints`: the last position each consumer has committed. */
export const consumerCheckpoints: SluiceTables["consumerCheckpoints"] = defaults.consumerCheckpoints;
/** `sluice.consumer_gap_skips`: audit of every position a consumer passed without an event. */
export const consumerGapSkips: SluiceTables["consumerGapSkips"] = defaults.consumerGapSkips;
/** `sluice.events`: the append-only event log. */
export const events: SluiceTables["events"] = defaults.events;
/** `sluice.aggregate_heads`: current version of every aggregate (optimistic concurrency). */
export const aggregateHeads: SluiceTables["aggregateHeads"] = defaults.aggregateHeads;
