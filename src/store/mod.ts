/**
 * The sluice event store: append events inside your own transactions with
 * optimistic concurrency, and read them back by global position or by
 * aggregate. Every append stores its transaction id (taken before its first
 * position was drawn) and NOTIFYs its last position on commit, which is what
 * the sluice worker's gap handling relies on.
 *
 * @example
 * ```ts
 * import postgres from "postgres";
 * import { createStore } from "@sluice/worker/store";
 *
 * const sql = postgres(process.env.DATABASE_URL!);
 * const store = createStore(sql);
 * await sql.begin(async (tx) => {
 *   await store.append(tx, [
 *     { aggregateType: "Account", aggregateId: "42", eventType: "Opened", payload: { owner: "Ada" } },
 *   ], { expectedVersion: "no-stream" });
 * });
 * const page = await store.readAfter(0n, 100);
 * ```
 *
 * @module
 */
export {
  createStore,
  DEFAULT_NOTIFY_CHANNEL,
  type EventStore,
  type ReadScope,
  type StoreOptions,
} from "./store.ts";
export type { AppendOptions, AppendResult, ExpectedVersion, NewEvent, PersistedEvent } from "./events.ts";
export { isSluiceError, SluiceError, type SluiceErrorCode } from "../errors.ts";
export type { Executor } from "../db/executor.ts";
export type { TableNamesInput } from "../db/names.ts";
export type { Logger } from "../logger.ts";
