/**
 * The SQL executor every statement function takes first: the caller's
 * postgres.js client, or a transaction it opened.
 *
 * @module
 */
import type postgres from "postgres";

/** A postgres.js client or a transaction/savepoint/reserved connection of it. */
// deno-lint-ignore no-explicit-any
export type Executor = postgres.Sql<any> | postgres.TransactionSql<any>;

/** A postgres.js client (not a transaction). */
// deno-lint-ignore no-explicit-any
export type Sql = postgres.Sql<any>;

/** A postgres.js transaction. */
// deno-lint-ignore no-explicit-any
export type Tx = postgres.TransactionSql<any>;

/** True when `ex` is a transaction (it can open savepoints, not transactions). */
export function isTransaction(ex: Executor): ex is Tx {
  return typeof (ex as { savepoint?: unknown }).savepoint === "function";
}

/**
 * Runs `fn` in a transaction: a savepoint-free pass-through when `ex` already
 * is one, else `ex.begin(fn)`. The callback gets the transaction only; never
 * use the outer client inside it.
 */
export async function inTransaction<T>(ex: Executor, fn: (tx: Tx) => Promise<T>): Promise<T> {
  if (isTransaction(ex)) return await fn(ex);
  return (await (ex as Sql).begin((tx) => fn(tx))) as T;
}

/** Converts an int8 sent as text (we never rely on the client's bigint parser) to a bigint. */
export function toBigInt(v: unknown): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number") return BigInt(v);
  if (typeof v === "string") return BigInt(v);
  throw new TypeError(`Cannot read a position: expected an integer, got ${typeof v}`);
}

/**
 * Options for `unsafe()`: postgres.js does not prepare unsafe statements by
 * default, which costs a second round trip per statement. Ours have fixed
 * text per deployment, so prepare them, unless the client was created with
 * `prepare: false` (PgBouncer in transaction mode).
 */
export function prep(ex: Executor): { prepare: boolean } {
  const o = (ex as { options?: { prepare?: boolean } }).options;
  return { prepare: o?.prepare ?? true };
}
