/**
 * Batches: a range of one consumer's events, processed inside one transaction
 * that also writes the checkpoint. A runner prepares a batch without holding
 * a connection; the iterator opens its transaction only when the user takes
 * it, so waiting batches never pin pool connections.
 *
 * @module
 */
import { PgDialect } from "drizzle-orm/pg-core";
import { PostgresJsSession, PostgresJsTransaction } from "drizzle-orm/postgres-js";
import type postgres from "postgres";
import type { ResolvedConfig } from "../config.ts";
import type { Sql, Tx } from "../db/executor.ts";
import { isConnectionError, isSluiceError, SluiceError } from "../errors.ts";
import { deferred, type Deferred } from "../internal/deferred.ts";
import type { PersistedEvent } from "../store/events.ts";
import { advance, type Fence, fence, type GapSkipRecord, isFenceLost } from "./statements.ts";

/** A Drizzle transaction bound to a batch's transaction. */
export type BatchDb = PostgresJsTransaction<Record<string, never>, Record<string, never>>;

/**
 * One batch of a consumer's events. Write your effects through `tx` (or
 * `db`); they commit together with the checkpoint when your loop asks for
 * the next batch, and roll back if it throws or breaks.
 *
 * @example
 * ```ts
 * for await (const batch of worker.assigned()) {
 *   for (const e of batch.events) await batch.tx`insert into seen ${batch.tx({ id: e.eventId })}`;
 * }
 * ```
 */
export interface Batch {
  /** The consumer this batch belongs to. */
  readonly consumer: string;
  /** The events to handle, in position order, already filtered by the consumer's scope. */
  readonly events: readonly PersistedEvent[];
  /** The postgres.js transaction that will also write the checkpoint. Never commit or roll it back yourself. */
  readonly tx: postgres.TransactionSql;
  /** A Drizzle transaction on the same transaction (created on first use). */
  readonly db: BatchDb;
  /** Checkpoint before this batch. */
  readonly from: bigint;
  /** Checkpoint after this batch (may pass positions with no event for this consumer). */
  readonly to: bigint;
  /** Aborted when the batch outlives `batchTimeoutMs` or the worker shuts down past its drain time. */
  readonly signal: AbortSignal;
  /**
   * Rolls this batch back now and backs the consumer off (it is retried, and
   * parked after `maxConsecutiveFailures`); your loop goes on.
   */
  fail(error?: unknown): Promise<void>;
}

/** How a prepared batch ended, as its runner sees it. */
export type Outcome =
  | { kind: "committed"; skipIds: string[] }
  | { kind: "failed"; error: unknown }
  | { kind: "conflict" }
  | { kind: "ownership_lost" }
  | { kind: "discarded" };

/** A batch a runner prepared (events read, no connection held). */
export interface ReadyBatch {
  readonly consumer: string;
  readonly from: bigint;
  readonly to: bigint;
  readonly events: readonly PersistedEvent[];
  readonly skips: readonly GapSkipRecord[];
  readonly outcome: Deferred<Outcome>;
  /** Set when the batch's transaction is already open and fenced (see `PendingBatchTx`). */
  readonly open?: () => Promise<OpenBatch | undefined>;
}

/** Thrown inside the transaction callback to roll back without it being an error of ours. */
class Rollback extends Error {
  readonly reason: unknown;
  constructor(reason: unknown) {
    super("rollback");
    this.reason = reason;
  }
}

const dialect = new PgDialect();

/** Wraps a postgres.js transaction as a Drizzle transaction (drizzle(tx) does not work on one). */
export function drizzleTx(tx: Tx): BatchDb {
  const session = new (PostgresJsSession as unknown as new (...a: unknown[]) => unknown)(tx, dialect, undefined, {});
  return new PostgresJsTransaction(dialect, session as never, undefined) as BatchDb;
}

/**
 * Wraps a transaction so that no query is sent through it once the batch has
 * ended. After the transaction ends postgres.js would run such a query on the
 * pooled connection outside any transaction (an autocommitted effect of a
 * rolled-back batch: exactly-once broken); and after its connection closed it
 * writes to a null socket from a setImmediate, which kills the process.
 */
export function guardTx(tx: Tx, isClosed: () => boolean, consumer: string): Tx {
  const check = (): void => {
    if (isClosed()) {
      throw new SluiceError("BATCH_CLOSED", `The batch of ${consumer} has ended (committed, rolled back or lost its connection); its transaction is gone`);
    }
  };
  return new Proxy(tx, {
    apply(target, thisArg, args) {
      check();
      return Reflect.apply(target as unknown as (...a: unknown[]) => unknown, thisArg, args);
    },
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        check();
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  }) as Tx;
}

/** An open batch: the transaction is running and waits for a verdict. */
export class OpenBatch implements Batch {
  readonly consumer: string;
  readonly events: readonly PersistedEvent[];
  readonly tx: postgres.TransactionSql;
  readonly from: bigint;
  readonly to: bigint;
  readonly #abort = new AbortController();
  readonly #verdict = deferred<"commit" | Rollback>();
  #done!: Promise<void>;
  #db: BatchDb | undefined;
  #settled = false;

  constructor(rb: ReadyBatch, tx: Tx, isDead: () => boolean) {
    this.consumer = rb.consumer;
    this.events = rb.events;
    this.from = rb.from;
    this.to = rb.to;
    this.tx = guardTx(tx, () => this.#settled || isDead(), rb.consumer) as postgres.TransactionSql;
  }

  get db(): BatchDb {
    return (this.#db ??= drizzleTx(this.tx as Tx));
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** True once a verdict was given. */
  get settled(): boolean {
    return this.#settled;
  }

  /** Resolves when the transaction has ended (committed or rolled back). */
  get ended(): Promise<void> {
    return this.#done;
  }

  /** @internal */
  attach(done: Promise<void>): void {
    this.#done = done;
  }

  /** @internal waits for the verdict inside the transaction callback. */
  verdict(): Promise<"commit" | Rollback> {
    return this.#verdict.promise;
  }

  /** Commits (the runner learns the outcome); resolves when the transaction has ended. */
  async commit(): Promise<void> {
    if (this.#settled) return await this.#done;
    this.#settled = true;
    this.#verdict.resolve("commit");
    await this.#done;
  }

  /** Rolls back with `reason`; resolves when the transaction has ended. */
  async rollback(reason: unknown): Promise<void> {
    if (!this.#settled) {
      this.#settled = true;
      this.#abort.abort(reason);
      this.#verdict.resolve(new Rollback(reason));
    }
    await this.#done;
  }

  fail(error?: unknown): Promise<void> {
    return this.rollback(error ?? new Error("batch.fail() called"));
  }
}

/** What a batch transaction needs from its worker. */
export interface BatchTxParams {
  readonly sql: Sql;
  readonly config: ResolvedConfig;
  readonly workerId: string;
  readonly timeoutMs: number;
}

/**
 * A batch transaction begun and fenced before its batch is known: a
 * consumer woken from idle reads its window inside it (`fencedProbe`), so
 * the batch needs no fence of its own. Exactly one of `use` and `release`
 * must follow, with no other statement of the runner in between (the
 * transaction holds a pool connection and the consumer's rows).
 */
export interface PendingBatchTx<R> {
  /** What the transaction's first statement returned. */
  readonly first: R;
  /**
   * Makes the transaction the batch of `rb`: resolves with the open batch,
   * or undefined (with `rb.outcome` settled) when the fence does not hold
   * for it or the transaction has ended.
   */
  use(rb: ReadyBatch): Promise<OpenBatch | undefined>;
  /** Rolls the transaction back unless it was used; resolves when it has ended. */
  release(): Promise<void>;
}

/** Marks the rollback of a released (unused) pending transaction. */
const RELEASED: unique symbol = Symbol("released");

/**
 * Begins a batch transaction and runs `first` in it: a fence, or a fenced
 * probe. Rejects when BEGIN or `first` fails (the transaction is then gone).
 * The transaction then waits for its batch (`use`) or its release; once
 * used, it waits for the batch's verdict and commits the checkpoint advance
 * with the user's writes, or rolls back.
 */
export function beginBatchTx<R extends { readonly fence: Fence | undefined }>(
  p: BatchTxParams,
  first: (tx: Tx) => Promise<R>,
): Promise<PendingBatchTx<R>> {
  const t = p.config.tables;
  const started = deferred<R>();
  const bound = deferred<ReadyBatch | typeof RELEASED>();
  const opened = deferred<OpenBatch | undefined>();
  let rb: ReadyBatch | undefined;
  let batch: OpenBatch | undefined;
  let early: Outcome | undefined;
  // Why the transaction ended before its batch was bound (its connection closed).
  let lost: unknown;
  let timer: ReturnType<typeof setTimeout> | undefined;
  // Assigned right after begin() returns, long before its callback runs.
  let ended: Promise<void> = Promise.resolve();
  // Set when begin() rejected because the connection closed: from then on
  // nothing may be sent on this transaction (see guardTx), not even ROLLBACK,
  // so the callback below never settles.
  let dead = false;
  const never = (): Promise<never> => new Promise<never>(() => {});
  const done = p.sql.begin(async (tx) => {
    try {
      const r = await first(tx);
      started.resolve(r);
      const b0 = await bound.promise;
      if (dead) return await never();
      if (b0 === RELEASED) throw new Rollback(RELEASED);
      rb = b0;
      const f = r.fence;
      if (!f || f.owner !== p.workerId || f.paused) {
        early = { kind: "ownership_lost" };
        throw new Rollback(early);
      }
      if (f.checkpoint !== rb.from) {
        early = { kind: "conflict" };
        throw new Rollback(early);
      }
      batch = new OpenBatch(rb, tx, () => dead);
      const b = batch;
      const r0 = rb;
      b.attach(ended);
      timer = setTimeout(() => {
        void b.rollback(new SluiceError("BATCH_TIMEOUT", `Batch of ${r0.consumer} (${r0.from}..${r0.to}) outlived batchTimeoutMs (${p.timeoutMs} ms)`));
      }, p.timeoutMs);
      opened.resolve(b);
      const v = await b.verdict();
      if (dead) return await never();
      if (v !== "commit") throw v;
      // The advance fails inside the transaction when its fence does not
      // hold, so COMMIT can follow it without waiting for its reply: the
      // callback returns at once (not a thenable) and postgres.js sends COMMIT
      // right behind it; a failed advance turns that COMMIT into a rollback.
      const advanced = advance(tx, t, { consumer: r0.consumer, workerId: p.workerId, from: r0.from, to: r0.to, skips: r0.skips, mustAdvance: true });
      advanced.catch(() => {}); // read once the transaction has ended
      return { advanced };
    } catch (e) {
      // Connection gone: postgres.js would send ROLLBACK on it and crash.
      if (dead || (!(e instanceof Rollback) && isConnectionError(e))) {
        dead = true;
        return await never();
      }
      throw e;
    }
  });
  ended = (done as Promise<{ advanced: ReturnType<typeof advance> }>).then(
    // COMMIT succeeded; it committed only if the advance did (else the server rolled back).
    async ({ advanced }) => rb!.outcome.resolve({ kind: "committed", skipIds: (await advanced).skipIds }),
  ).then(
    () => {},
    (e: unknown) => {
      if (!(e instanceof Rollback) && !isSluiceError(e) && isConnectionError(e)) {
        dead = true;
        void batch?.rollback(e);
      }
      // Before its batch was bound: the caller learns it from `started`
      // (BEGIN or `first` failed), from `use` (see there), or released the
      // transaction itself.
      started.reject(e);
      if (!rb) {
        if (!(e instanceof Rollback)) lost = e;
        return;
      }
      if (e instanceof Rollback) {
        rb.outcome.resolve(early ?? { kind: "failed", error: e.reason });
      } else if (isFenceLost(e)) {
        rb.outcome.resolve({ kind: "ownership_lost" });
      } else {
        rb.outcome.resolve({ kind: "failed", error: e });
      }
    },
  ).finally(() => {
    clearTimeout(timer);
    opened.resolve(undefined);
  });
  return started.promise.then((first) => ({
    first,
    use(b: ReadyBatch): Promise<OpenBatch | undefined> {
      bound.resolve(b);
      // Ended before it could be used (its connection closed): the batch
      // was never opened, so nothing of it ran.
      void ended.then(() => {
        if (rb === undefined) {
          b.outcome.resolve({ kind: "failed", error: lost ?? new SluiceError("DATABASE_ERROR", `The transaction for the batch of ${b.consumer} ended before the batch opened`) });
        }
      });
      return opened.promise;
    },
    release(): Promise<void> {
      bound.resolve(RELEASED);
      return ended;
    },
  }));
}

/**
 * Opens the transaction of a prepared batch: fences it (assignment and
 * checkpoint rows locked; owner and checkpoint unchanged), then waits for the
 * verdict. Resolves with the open batch, or undefined when the fence failed
 * (the runner re-probes or stops).
 */
export async function openBatch(rb: ReadyBatch, p: BatchTxParams): Promise<OpenBatch | undefined> {
  if (rb.open) return await rb.open();
  let pending: PendingBatchTx<{ fence: Fence | undefined }>;
  try {
    pending = await beginBatchTx(p, async (tx) => ({ fence: await fence(tx, p.config.tables, rb.consumer, p.timeoutMs) }));
  } catch (e) {
    rb.outcome.resolve({ kind: "failed", error: e });
    return undefined;
  }
  return await pending.use(rb);
}
