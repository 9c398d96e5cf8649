/**
 * One-off processing: run consumers up to the head seen at the start, in
 * this process, without registering a worker or electing a leader. For
 * tests, backfills and scripts.
 *
 * @module
 */
import * as v from "valibot";
import { type Clock, ConsumerSchema, type ConsumerDefinition, parseWith, systemClock, WorkerOptionsSchema } from "./config.ts";
import type { Sql, Tx } from "./db/executor.ts";
import { resolveTableNames, type ResolvedTableNames, type TableNamesInput } from "./db/names.ts";
import { isSluiceError, SluiceError, wrapDbError } from "./errors.ts";
import { deferred, sleep } from "./internal/deferred.ts";
import { defaultLogger, type Logger } from "./logger.ts";
import { type Batch, type BatchDb, drizzleTx, guardTx } from "./consumption/batch.ts";
import { GapTracker } from "./consumption/gaps.ts";
import { toSkipRecords } from "./consumption/late-watch.ts";
import { Horizon, parseSnapshot } from "./consumption/snapshot.ts";
import { eventsUpTo, fence, loadCheckpoint, probe, readHead, type Scope } from "./consumption/statements.ts";
import { clearOwner, consumerOwners, ensureConsumers, NIL_WORKER_ID, recordGapSkips, setCheckpoint } from "./coordination/admin-statements.ts";
import type { PersistedEvent } from "./store/events.ts";
import type postgres from "postgres";

const w = WorkerOptionsSchema.entries;

/** Schema of the {@link catchUp} options that are validated (all but `tables`, `logger`, `clock`). */
const CatchUpOptionsSchema = v.strictObject({
  batchSize: w.batchSize,
  batchPauseMs: w.batchPauseMs,
  batchTimeoutMs: w.batchTimeoutMs,
  heartbeatTimeoutMs: w.heartbeatTimeoutMs,
  staleGapThresholdMs: w.staleGapThresholdMs,
  staleGapHarborLag: w.staleGapHarborLag,
  provenGapMinAgeMs: w.provenGapMinAgeMs,
  timeoutMs: v.optional(v.pipe(v.number(), v.integer("must be an integer number of milliseconds"), v.minValue(1, "must be >= 1")), 60_000),
  tables: v.optional(v.unknown()),
});

/**
 * Options of {@link catchUp}. The batch and gap options mean what they mean
 * for a worker, with the same defaults.
 *
 * @example
 * ```ts
 * const options: CatchUpOptions = { batchSize: 500, timeoutMs: 120_000, tables: { schema: "infra" } };
 * ```
 */
export interface CatchUpOptions {
  /** Rows per probe and per batch. @default 100 */
  batchSize?: number;
  /** Pause between probes while waiting on a hole. @default 200 */
  batchPauseMs?: number;
  /** A batch (your handler and the commit) open longer than this is rolled back and `catchUp` rejects. @default 30000 */
  batchTimeoutMs?: number;
  /** A worker whose heartbeat is older than this is not alive (its consumers can be taken). @default 30000 */
  heartbeatTimeoutMs?: number;
  /** Pass a hole whose writers cannot be proven finished after this long; `false` never does. @default 30000 */
  staleGapThresholdMs?: number | false;
  /** Rows to stay behind the window's end after a stale pass. @default 8 */
  staleGapHarborLag?: number;
  /** A hole proven dead is passed only once it is at least this old. @default 250 */
  provenGapMinAgeMs?: number;
  /** How long to wait on a hole that cannot be passed yet before rejecting with `TIMEOUT`. @default 60000 */
  timeoutMs?: number;
  /** Where the tables live. @default schema "sluice" */
  tables?: TableNamesInput;
  /** @default LogTape category ["sluice", "catch-up"] */
  logger?: Logger;
  /** Time, for tests. */
  clock?: Clock;
}

/**
 * What {@link catchUp} did for one consumer.
 *
 * @example
 * ```ts
 * const { consumers } = await catchUp(sql, ["outbox"], handler);
 * for (const r of consumers) console.log(`${r.consumer}: ${r.from} -> ${r.to}, ${r.events} events`);
 * ```
 */
export interface CatchUpReport {
  readonly consumer: string;
  /** Checkpoint before. */
  readonly from: bigint;
  /** Checkpoint after (the head seen at the start, or more if it was already past it). */
  readonly to: bigint;
  /** Batches handed to the handler. */
  readonly batches: number;
  /** Events handed to the handler. */
  readonly events: number;
}

/**
 * What {@link catchUp} returns.
 *
 * @example
 * ```ts
 * const r: CatchUpResult = await catchUp(sql, ["outbox"], handler);
 * console.log(`every consumer is at or past ${r.head}`);
 * ```
 */
export interface CatchUpResult {
  /** The head position seen at the start: every consumer's checkpoint is at least this now. */
  readonly head: bigint;
  readonly consumers: readonly CatchUpReport[];
}

/** Thrown inside the transaction to roll back. */
class Rollback extends Error {
  readonly reason: unknown;
  constructor(reason: unknown) {
    super("rollback");
    this.reason = reason;
  }
}

/** A batch of a one-off run: the same shape as a worker's. */
class OneOffBatch implements Batch {
  readonly consumer: string;
  readonly events: readonly PersistedEvent[];
  readonly tx: postgres.TransactionSql;
  readonly from: bigint;
  readonly to: bigint;
  readonly #abort = new AbortController();
  readonly #failed = deferred<never>();
  #db: BatchDb | undefined;
  #ended: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(p: { consumer: string; events: readonly PersistedEvent[]; tx: Tx; from: bigint; to: bigint }) {
    this.consumer = p.consumer;
    this.events = p.events;
    // Closed to the handler once the batch has ended (see guardTx).
    this.tx = guardTx(p.tx, () => this.#closed, p.consumer) as postgres.TransactionSql;
    this.from = p.from;
    this.to = p.to;
  }

  /** @internal no query may go through `tx` any more. */
  close(): void {
    this.#closed = true;
  }

  get db(): BatchDb {
    return (this.#db ??= drizzleTx(this.tx as Tx));
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** Rejects when the batch must roll back. */
  get failed(): Promise<never> {
    return this.#failed.promise;
  }

  /** @internal */
  attach(ended: Promise<unknown>): void {
    this.#ended = ended;
  }

  /** @internal */
  abort(reason: unknown): void {
    this.#closed = true;
    if (!this.#abort.signal.aborted) this.#abort.abort(reason);
    this.#failed.reject(new Rollback(reason));
  }

  /** Rolls this batch back; `catchUp` then rejects with `error`. */
  async fail(error?: unknown): Promise<void> {
    this.abort(error ?? new Error("batch.fail() called"));
    await this.#ended.catch(() => {});
  }
}

type Handler = (batch: Batch) => Promise<void> | void;

/**
 * Processes every event visible when it starts, for each consumer in turn,
 * then returns. No worker is registered and no leader is involved: it runs
 * in the calling process, with the same batches, gap handling and checkpoint
 * fence as a worker. For tests, backfills and scripts.
 *
 * - It refuses (`CONSUMER_OWNED`) a consumer that a live worker owns, before
 *   processing anything, and stops the same way if a worker takes one over
 *   meanwhile. A consumer owned by a dead worker is taken over. A paused
 *   consumer is processed (pause it in the cluster, back-fill, resume).
 * - Each batch is one transaction that locks the consumer's rows, requires
 *   that no worker owns it and that its checkpoint is unchanged, runs
 *   `handler` and commits the checkpoint with your writes (`batch.tx`,
 *   `batch.db`). A consumer without rows gets them (checkpoint 0).
 * - Holes are judged as a worker judges them; one that cannot be proven dead
 *   is waited on (passed as stale after `staleGapThresholdMs`), for at most
 *   `timeoutMs`, then it rejects with `TIMEOUT`.
 * - If `handler` throws or calls `batch.fail(err)`, that batch rolls back and
 *   `catchUp` rejects with the error; earlier batches stay committed.
 *
 * @throws SluiceError `CONSUMER_OWNED`, `TIMEOUT`, `BATCH_TIMEOUT`,
 * `CONFIG_INVALID`, `DATABASE_ERROR`, or what `handler` threw
 * @example
 * ```ts
 * import { catchUp } from "@sluice/worker";
 * const r = await catchUp(sql, [{ name: "account_projection", aggregateTypes: ["Account"] }], async (batch) => {
 *   for (const e of batch.events) await batch.tx`insert into accounts_seen (id) values (${e.eventId})`;
 * });
 * console.log(`caught up to ${r.head}`);
 * ```
 */
export async function catchUp(
  sql: Sql,
  consumers: readonly (ConsumerDefinition | string)[],
  handler: Handler,
  options: CatchUpOptions = {},
): Promise<CatchUpResult> {
  if (!sql || typeof (sql as { begin?: unknown }).begin !== "function") {
    throw new SluiceError("INVALID_ARGUMENT", "catchUp: sql must be a postgres.js client");
  }
  if (typeof handler !== "function") throw new SluiceError("INVALID_ARGUMENT", "catchUp: handler must be a function");
  const { logger, clock, ...rest } = options;
  const o = parseWith(CatchUpOptionsSchema, rest, "catchUp options");
  const defs = parseWith(
    v.pipe(
      v.array(ConsumerSchema, "must be an array of consumer definitions"),
      v.check((list) => new Set(list.map((c) => c.name)).size === list.length, "consumer names must be unique"),
    ),
    (consumers as unknown[]).map((c) => (typeof c === "string" ? { name: c } : c)),
    "catchUp consumers",
  );
  const t = resolveTableNames(options.tables);
  const ctx: Ctx = {
    sql,
    t,
    handler,
    log: logger ?? defaultLogger("catch-up"),
    clock: clock ?? systemClock,
    batchSize: o.batchSize,
    pauseMs: Math.max(o.batchPauseMs, 20),
    batchTimeoutMs: o.batchTimeoutMs,
    heartbeatTimeoutMs: o.heartbeatTimeoutMs,
    timeoutMs: o.timeoutMs,
    policy: {
      minAgeMs: o.provenGapMinAgeMs,
      staleAfterMs: o.staleGapThresholdMs,
      harborLag: Math.min(o.staleGapHarborLag, o.batchSize - 1),
    },
    horizon: new Horizon(),
  };
  const names = defs.map((d) => d.name);
  let head: bigint;
  try {
    await ensureConsumers(sql, t, names);
    const owned = (await consumerOwners(sql, t, { consumers: names, heartbeatTimeoutMs: ctx.heartbeatTimeoutMs })).filter((r) => r.ownerAlive);
    if (owned.length > 0) throw ownedError(owned[0]!.consumer, owned[0]!.owner!, owned.map((r) => r.consumer));
    // The head seen at the start; also dates every hole below it for the gap proof.
    const sentAt = ctx.clock.now();
    const h = await readHead(sql, t);
    ctx.horizon.record({ sentAt, receivedAt: ctx.clock.now(), position: h.head, xmax: h.xmax });
    head = h.head;
  } catch (e) {
    throw wrapDbError("start catchUp", e);
  }
  const reports: CatchUpReport[] = [];
  for (const def of defs) {
    reports.push(await runOne(ctx, def, head));
  }
  return { head, consumers: reports };
}

interface Ctx {
  readonly sql: Sql;
  readonly t: ResolvedTableNames;
  readonly handler: Handler;
  readonly log: Logger;
  readonly clock: Clock;
  readonly batchSize: number;
  readonly pauseMs: number;
  readonly batchTimeoutMs: number;
  readonly heartbeatTimeoutMs: number;
  readonly timeoutMs: number;
  readonly policy: { minAgeMs: number; staleAfterMs: number | false; harborLag: number };
  readonly horizon: Horizon;
}

function ownedError(consumer: string, owner: string, all: readonly string[] = [consumer]): SluiceError {
  return new SluiceError(
    "CONSUMER_OWNED",
    `Consumer "${consumer}" is owned by live worker ${owner}; stop that worker or pause the consumer (sluice pause) first`,
    { details: { consumer, owner, consumers: all } },
  );
}

async function runOne(ctx: Ctx, def: v.InferOutput<typeof ConsumerSchema>, head: bigint): Promise<CatchUpReport> {
  const { sql, t, clock, log } = ctx;
  const name = def.name;
  const scope: Scope = { aggregateTypes: def.aggregateTypes ?? [], boundedContexts: def.boundedContexts ?? [] };
  const gaps = new GapTracker(ctx.policy);
  const start = await loadCheckpoint(sql, t, name).catch((e) => {
    throw wrapDbError(`read the checkpoint of "${name}"`, e);
  });
  let checkpoint = start;
  let batches = 0;
  let events = 0;
  let blockedSince: number | undefined;
  while (checkpoint < head) {
    const sentAt = clock.now();
    let pr;
    try {
      pr = await probe(sql, t, checkpoint, ctx.batchSize, scope, name, blockedSince === undefined ? "rows" : "positions");
    } catch (e) {
      throw wrapDbError(`probe "${name}"`, e);
    }
    const receivedAt = clock.now();
    // Only what was visible at the start matters; holes below it are judged as usual.
    const positions = pr.positions.filter((p) => p <= head);
    if (positions.length === 0) break; // the events up to the head were deleted
    const snap = parseSnapshot(pr.snapshot!);
    ctx.horizon.record({ sentAt, receivedAt, position: pr.positions.at(-1)!, xmax: snap.xmax });
    const d = gaps.decide(receivedAt, checkpoint, positions, snap, ctx.horizon);
    if (d.target <= checkpoint) {
      blockedSince ??= receivedAt;
      if (receivedAt - blockedSince >= ctx.timeoutMs) {
        throw new SluiceError(
          "TIMEOUT",
          `catchUp of "${name}" waited ${ctx.timeoutMs} ms on position ${d.blockedAt}, which a running transaction may still fill`,
          { details: { consumer: name, position: d.blockedAt?.toString(), checkpoint: checkpoint.toString() } },
        );
      }
      await sleep(ctx.pauseMs);
      continue;
    }
    blockedSince = undefined;
    const batchEvents = await eventsUpTo(sql, t, pr, checkpoint, d.target, scope).catch((e) => {
      throw wrapDbError(`read the events of "${name}"`, e);
    });
    const skips = toSkipRecords(d.passed, d.highestVisible ?? d.target);
    const outcome = await commitBatch(ctx, { consumer: name, from: checkpoint, to: d.target, events: batchEvents, skips });
    if (outcome === "conflict") {
      // The checkpoint moved (an operator's rewind): continue from it.
      gaps.reset();
      checkpoint = await loadCheckpoint(sql, t, name);
      log.info("Checkpoint of {consumer} changed elsewhere; continuing from {checkpoint}", { consumer: name, checkpoint });
      continue;
    }
    for (const p of d.passed.filter((p) => p.reason === "stale")) {
      log.warn("Consumer {consumer} passed positions {from}..{to} as stale", { consumer: name, from: p.from.toString(), to: p.to.toString() });
    }
    if (batchEvents.length > 0) {
      batches++;
      events += batchEvents.length;
    }
    checkpoint = d.target;
  }
  return { consumer: name, from: start, to: checkpoint, batches, events };
}

/** One batch transaction; "conflict" when the checkpoint is no longer `from`. */
async function commitBatch(
  ctx: Ctx,
  p: { consumer: string; from: bigint; to: bigint; events: readonly PersistedEvent[]; skips: ReturnType<typeof toSkipRecords> },
): Promise<"committed" | "conflict"> {
  const { sql, t } = ctx;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ended = sql.begin(async (tx) => {
    const f = await fence(tx, t, p.consumer, ctx.batchTimeoutMs);
    if (!f) throw new SluiceError("NOT_FOUND", `Consumer "${p.consumer}" has no assignment or checkpoint row any more`);
    if (f.owner !== null) {
      const [o] = await consumerOwners(tx, t, { consumers: [p.consumer], heartbeatTimeoutMs: ctx.heartbeatTimeoutMs });
      if (o?.ownerAlive) throw ownedError(p.consumer, f.owner);
      // Its owner is dead: take the consumer over (the leader would unassign it too).
      await clearOwner(tx, t, p.consumer, f.owner);
    }
    if (f.checkpoint !== p.from) return "conflict" as const;
    if (p.events.length > 0) {
      const b = new OneOffBatch({ consumer: p.consumer, events: p.events, tx, from: p.from, to: p.to });
      b.attach(ended);
      timer = setTimeout(() => {
        b.abort(new SluiceError("BATCH_TIMEOUT", `Batch of ${p.consumer} (${p.from}..${p.to}) outlived batchTimeoutMs (${ctx.batchTimeoutMs} ms)`));
      }, ctx.batchTimeoutMs);
      try {
        await Promise.race([Promise.resolve().then(() => ctx.handler(b)), b.failed]);
      } catch (e) {
        throw e instanceof Rollback ? e : new Rollback(e);
      } finally {
        b.close(); // the handler is done: nothing of its may reach the transaction now
      }
      if (b.signal.aborted) throw new Rollback(b.signal.reason);
    }
    if (!(await setCheckpoint(tx, t, { consumer: p.consumer, from: p.from, to: p.to }))) {
      throw new SluiceError("DATABASE_ERROR", `Checkpoint of "${p.consumer}" changed under its lock`);
    }
    await recordGapSkips(tx, t, { consumer: p.consumer, workerId: NIL_WORKER_ID, to: p.to, skips: p.skips });
    return "committed" as const;
  }) as Promise<"committed" | "conflict">;
  try {
    return await ended;
  } catch (e) {
    if (e instanceof Rollback) throw e.reason;
    if (isSluiceError(e)) throw e;
    throw wrapDbError(`commit a batch of "${p.consumer}"`, e, { consumer: p.consumer });
  } finally {
    clearTimeout(timer);
  }
}
