/**
 * The public table factory.
 *
 * @module
 */
import { resolveTableNames, type TableNamesInput } from "./names.ts";
import { defineTables } from "./table-defs.ts";
import type { SluiceTables } from "./tables.types.gen.ts";

export { xid8 } from "./table-defs.ts";
export type { SluiceTables } from "./tables.types.gen.ts";

/**
 * Builds the Drizzle tables for one deployment.
 *
 * @param input table names (validated; see {@link TableNamesInput})
 * @returns the six tables: `workerNodes`, `consumerAssignments`,
 *   `consumerCheckpoints`, `consumerGapSkips`, `events`, `aggregateHeads`
 * @throws SluiceError `INVALID_IDENTIFIER` for a name that is not a plain SQL identifier
 *
 * @example
 * ```ts
 * // In your own drizzle-kit schema file:
 * import { createTables } from "@sluice/worker/schema";
 * export const { workerNodes, consumerAssignments, consumerCheckpoints,
 *   consumerGapSkips, events, aggregateHeads } = createTables({ schema: "infra" });
 * ```
 */
export function createTables(input: TableNamesInput = {}): SluiceTables {
  return defineTables(resolveTableNames(input));
}
