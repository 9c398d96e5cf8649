/**
 * Test helpers for the facts consumers must cope with: an append can stay
 * uncommitted while later positions commit (out-of-order visibility), and a
 * rolled-back append leaves a permanent hole in `global_position`. Not part
 * of the public entry point; tests import this file directly.
 *
 * @module
 */
import type { Sql } from "../db/executor.ts";
import type { AppendOptions, AppendResult, NewEvent } from "./events.ts";
import type { EventStore } from "./store.ts";

/**
 * An append whose transaction is held open until {@link HeldAppend.commit}
 * or {@link HeldAppend.rollback}.
 *
 * @example
 * ```ts
 * const a = await holdAppend(sql, store, [event], { expectedVersion: "any" });
 * // a.result.lastPosition is drawn but invisible to other sessions
 * await a.rollback(); // a permanent hole
 * ```
 */
export interface HeldAppend<P = unknown> {
  /** What the append returned inside the open transaction. */
  readonly result: AppendResult<P>;
  /** `xid8` of the open transaction, decimal. */
  readonly transactionId: string;
  /** Commits the transaction (the events and their NOTIFY become visible). */
  commit(): Promise<void>;
  /** Rolls the transaction back (its positions become holes forever). */
  rollback(): Promise<void>;
}

const ROLLBACK = Symbol("rollback");

/**
 * Opens a transaction on `sql` (it takes one connection until the end), runs
 * `store.append` in it and returns once the append is done, leaving the
 * transaction open. Rejects with the append's error (the transaction is then
 * rolled back).
 *
 * @example
 * ```ts
 * const a = await holdAppend(sql, store, [e1], { expectedVersion: "any" });
 * const b = await store.append(sql, [e2], { expectedVersion: "any" }); // commits first
 * await a.commit(); // a.result.lastPosition < b.lastPosition, visible only now
 * ```
 */
export async function holdAppend<P = unknown>(
  sql: Sql,
  store: EventStore,
  events: readonly NewEvent<P>[],
  options: AppendOptions,
): Promise<HeldAppend<P>> {
  let decide!: (commit: boolean) => void;
  const decision = new Promise<boolean>((r) => {
    decide = r;
  });
  let appended!: (r: AppendResult<P>) => void;
  const whenAppended = new Promise<AppendResult<P>>((r) => {
    appended = r;
  });
  const outcome: Promise<void> = sql
    .begin(async (tx) => {
      appended(await store.append(tx, events, options));
      if (!(await decision)) throw ROLLBACK;
    })
    .then(
      () => undefined,
      (e: unknown) => {
        if (e !== ROLLBACK) throw e;
      },
    );
  const ended = outcome.then(() => {
    throw new Error("the transaction ended before the append returned");
  });
  const result = await Promise.race([whenAppended, ended]);
  ended.catch(() => {});
  return {
    result,
    transactionId: result.events[0]!.transactionId,
    async commit() {
      decide(true);
      await outcome;
    },
    async rollback() {
      decide(false);
      await outcome;
    },
  };
}
