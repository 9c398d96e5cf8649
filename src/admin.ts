/**
 * Operator actions on consumers, as library functions (the `sluice rewind`,
 * `pause`, `resume` and `gaps` commands call them): move a checkpoint, pause
 * and resume a consumer, list the gap-skip audit rows. They work from any
 * process; no worker is needed, and none is disturbed beyond what they say.
 *
 * @module
 */
import { deploymentKeys } from "./coordination/keys.ts";
import { type Executor, inTransaction, isTransaction } from "./db/executor.ts";
import { resolveTableNames, type ResolvedTableNames, type TableNamesInput } from "./db/names.ts";
import { isSluiceError, SluiceError, sqlStateOf, wrapDbError } from "./errors.ts";
import { notify } from "./coordination/statements.ts";
import { gapSkips, type GapSkipRow, lockAssignment, lockCheckpoint, NIL_WORKER_ID, recordGapSkips, setCheckpoint, setPaused } from "./coordination/admin-statements.ts";

/**
 * Options shared by the admin functions.
 *
 * @example
 * ```ts
 * const options: AdminOptions = { tables: { schema: "infra" } };
 * await pauseConsumer(sql, "outbox", options);
 * ```
 */
export interface AdminOptions {
  /** Where the tables live (the workers' `tables`). @default schema "sluice" */
  tables?: TableNamesInput;
}

/**
 * Options of {@link rewindConsumer}.
 *
 * @example
 * ```ts
 * await rewindConsumer(sql, "balances", 1200n, { lockTimeoutMs: 5_000 });
 * ```
 */
export interface RewindOptions extends AdminOptions {
  /**
   * How long to wait for the consumer's rows, which an open batch holds
   * until it commits or rolls back; then `TIMEOUT`. Ignored when `sql` is a
   * transaction (yours, whose `lock_timeout` applies). @default 60000
   */
  lockTimeoutMs?: number;
}

/**
 * What {@link rewindConsumer} did.
 *
 * @example
 * ```ts
 * const r: RewindResult = await rewindConsumer(sql, "balances", "start");
 * if (r.direction === "back") console.log(`re-delivering ${r.to + 1n}..${r.from}`);
 * ```
 */
export interface RewindResult {
  readonly consumer: string;
  /** The checkpoint before. */
  readonly from: bigint;
  /** The checkpoint now. */
  readonly to: bigint;
  /** `back`: positions `to+1..from` are delivered again; `forward`: `from+1..to` are skipped; `none`: unchanged. */
  readonly direction: "back" | "forward" | "none";
  /** Id of the `consumer_gap_skips` row (reason `manual`) that records it. */
  readonly auditId: string;
  /** The worker that owned the consumer at the time, if any. */
  readonly owner: string | null;
}

/**
 * One row of the gap-skip audit (see {@link listGapSkips}).
 *
 * @example
 * ```ts
 * const [latest]: GapSkip[] = await listGapSkips(sql, { limit: 1 });
 * if (latest && latest.latePositions.length > 0) console.error("events never delivered:", latest.latePositions);
 * ```
 */
export interface GapSkip {
  readonly id: string;
  readonly consumer: string;
  /** The worker that passed the hole; the nil UUID for a manual move or a one-off run. */
  readonly workerId: string;
  /** First position passed (for a manual move: the new checkpoint + 1). */
  readonly gapPosition: bigint;
  /** The checkpoint written with this row. */
  readonly skipToPosition: bigint;
  /** Highest visible position then (for a manual move: the old checkpoint). */
  readonly highestVisiblePosition: bigint;
  /** The missing positions passed over (at most 1000 listed). */
  readonly skippedPositions: readonly bigint[];
  /** `rolled_back` (proven dead), `stale` (timed out) or `manual` (an operator moved the checkpoint). */
  readonly reason: string;
  readonly firstSeenAt: Date;
  /** Positions passed as stale that were committed later (they were never delivered). */
  readonly latePositions: readonly bigint[];
  readonly createdAt: Date;
}

function checkConsumer(consumer: unknown): string {
  if (typeof consumer !== "string" || consumer.length === 0) {
    throw new SluiceError("INVALID_ARGUMENT", `Invalid consumer name: ${JSON.stringify(consumer)} must be a non-empty string`);
  }
  return consumer;
}

function notFound(consumer: string): SluiceError {
  return new SluiceError("NOT_FOUND", `Consumer "${consumer}" does not exist (no worker listing it has ever registered)`, {
    details: { consumer },
  });
}

/**
 * The channel the coordinators LISTEN on for assignment changes. Must match
 * `Coordinator.assignChannel` (src/coordination/coordinator.ts).
 */
function assignChannel(tables: ResolvedTableNames): string {
  return deploymentKeys(tables).assignChannel;
}

/** Tells every worker to run its coordination tick now (best effort: they tick every second anyway). */
async function nudgeWorkers(ex: Executor, tables: ResolvedTableNames): Promise<void> {
  await notify(ex, assignChannel(tables), "").catch(() => {});
}

/**
 * Moves a consumer's checkpoint to `to` (a position, or `"start"` for 0),
 * safely even while a worker runs it, and records the move in
 * `consumer_gap_skips` with reason `manual`.
 *
 * In one transaction it locks the consumer's assignment row and then its
 * checkpoint row, the rows every batch transaction locks first; so it waits
 * for an open batch to end, and no batch that started before can commit its
 * old checkpoint over the new one (a batch commits only if the checkpoint is
 * still the one it started from). The owner then reloads the checkpoint at its
 * next batch attempt and continues from `to`.
 *
 * Moving back re-delivers positions `to+1..from` (at-least-once: handlers see
 * those events again). Moving forward skips `from+1..to`: those events are
 * never delivered to this consumer.
 *
 * @throws SluiceError `NOT_FOUND` (unknown consumer), `INVALID_ARGUMENT`,
 * `TIMEOUT` (rows held longer than `lockTimeoutMs`), `DATABASE_ERROR`
 * @example
 * ```ts
 * import { rewindConsumer } from "@sluice/worker";
 * const r = await rewindConsumer(sql, "account_projection", "start");
 * console.log(`${r.consumer}: ${r.from} -> ${r.to}`); // its owner re-delivers every event
 * ```
 */
export async function rewindConsumer(
  sql: Executor,
  consumer: string,
  to: bigint | "start",
  options: RewindOptions = {},
): Promise<RewindResult> {
  checkConsumer(consumer);
  const target = to === "start" ? 0n : to;
  if (typeof target !== "bigint" || target < 0n) {
    throw new SluiceError("INVALID_ARGUMENT", `Invalid position: ${String(to)} must be a bigint >= 0 or "start"`);
  }
  const lockTimeoutMs = options.lockTimeoutMs ?? 60_000;
  if (!Number.isInteger(lockTimeoutMs) || lockTimeoutMs < 1) {
    throw new SluiceError("INVALID_ARGUMENT", `Invalid lockTimeoutMs: ${lockTimeoutMs} must be an integer >= 1`);
  }
  const tables = resolveTableNames(options.tables);
  try {
    const result = await inTransaction(sql, async (tx) => {
      // Inside the caller's own transaction its lock_timeout applies: leave it alone.
      if (!isTransaction(sql)) await tx`select set_config('lock_timeout', ${String(lockTimeoutMs)}, true)`;
      const a = await lockAssignment(tx, tables, consumer);
      if (!a) throw notFound(consumer);
      const from = await lockCheckpoint(tx, tables, consumer);
      if (from === undefined) throw notFound(consumer);
      if (!(await setCheckpoint(tx, tables, { consumer, from, to: target }))) {
        throw new SluiceError("DATABASE_ERROR", `Checkpoint of "${consumer}" changed under its lock`);
      }
      const [auditId] = await recordGapSkips(tx, tables, {
        consumer,
        workerId: NIL_WORKER_ID,
        to: target,
        skips: [{ gapPosition: target + 1n, highestVisible: from, positions: [], reason: "manual" }],
      });
      const direction = target < from ? "back" : target > from ? "forward" : "none";
      return { consumer, from, to: target, direction, auditId: auditId!, owner: a.owner } as const;
    });
    await nudgeWorkers(sql, tables);
    return result;
  } catch (e) {
    if (isSluiceError(e)) throw e;
    if (sqlStateOf(e) === "55P03") {
      throw new SluiceError("TIMEOUT", `Consumer "${consumer}" stayed locked by a batch for more than ${lockTimeoutMs} ms`, {
        cause: e,
        details: { consumer },
      });
    }
    throw wrapDbError(`move the checkpoint of "${consumer}"`, e, { consumer });
  }
}

/**
 * What {@link pauseConsumer} and {@link resumeConsumer} did.
 *
 * @example
 * ```ts
 * const r: PauseResult = await pauseConsumer(sql, "outbox");
 * if (!r.changed) console.log("outbox already was paused");
 * ```
 */
export interface PauseResult {
  readonly consumer: string;
  /** The paused flag now. */
  readonly paused: boolean;
  /** False when it already had that value. */
  readonly changed: boolean;
}

async function setPausedFlag(sql: Executor, consumer: string, paused: boolean, options: AdminOptions): Promise<PauseResult> {
  checkConsumer(consumer);
  const tables = resolveTableNames(options.tables);
  let r: { was: boolean } | undefined;
  try {
    r = await setPaused(sql, tables, consumer, paused);
  } catch (e) {
    throw wrapDbError(`${paused ? "pause" : "resume"} "${consumer}"`, e, { consumer });
  }
  if (!r) throw notFound(consumer);
  await nudgeWorkers(sql, tables);
  return { consumer, paused, changed: r.was !== paused };
}

/**
 * Pauses a consumer: no batch of it starts any more (the batch fence refuses
 * a paused consumer), its owner drops it at its next coordination tick, and
 * the leader leaves it unassigned until {@link resumeConsumer}. An open batch
 * finishes normally. The checkpoint is kept.
 *
 * @throws SluiceError `NOT_FOUND`, `INVALID_ARGUMENT`, `DATABASE_ERROR`
 * @example
 * ```ts
 * import { pauseConsumer, resumeConsumer } from "@sluice/worker";
 * await pauseConsumer(sql, "outbox");   // e.g. while the broker is down
 * await resumeConsumer(sql, "outbox");
 * ```
 */
export function pauseConsumer(sql: Executor, consumer: string, options: AdminOptions = {}): Promise<PauseResult> {
  return setPausedFlag(sql, consumer, true, options);
}

/**
 * Resumes a paused consumer: the leader assigns it to a live worker that
 * lists it at its next tick, and that worker continues from its checkpoint.
 * A consumer that was parked (too many failed batches) starts afresh once it
 * has been paused and resumed.
 *
 * @throws SluiceError `NOT_FOUND`, `INVALID_ARGUMENT`, `DATABASE_ERROR`
 * @example
 * ```ts
 * const r = await resumeConsumer(sql, "outbox");
 * if (!r.changed) console.log("outbox was not paused");
 * ```
 */
export function resumeConsumer(sql: Executor, consumer: string, options: AdminOptions = {}): Promise<PauseResult> {
  return setPausedFlag(sql, consumer, false, options);
}

/**
 * Options of {@link listGapSkips}.
 *
 * @example
 * ```ts
 * const options: ListGapSkipsOptions = { consumer: "outbox", limit: 20 };
 * const rows = await listGapSkips(sql, options);
 * ```
 */
export interface ListGapSkipsOptions extends AdminOptions {
  /** Only this consumer's rows. */
  consumer?: string;
  /** Most rows returned, newest first. @default 100 */
  limit?: number;
}

/**
 * The gap-skip audit, newest first: every hole a consumer passed (reasons
 * `rolled_back` and `stale`, with late commits noted) and every manual
 * checkpoint move (`manual`).
 *
 * @throws SluiceError `INVALID_ARGUMENT`, `DATABASE_ERROR`
 * @example
 * ```ts
 * import { listGapSkips } from "@sluice/worker";
 * for (const g of await listGapSkips(sql, { consumer: "outbox", limit: 20 })) {
 *   console.log(g.createdAt, g.reason, g.gapPosition, g.skipToPosition, g.latePositions);
 * }
 * ```
 */
export async function listGapSkips(sql: Executor, options: ListGapSkipsOptions = {}): Promise<GapSkip[]> {
  const limit = options.limit ?? 100;
  if (!Number.isInteger(limit) || limit < 1) throw new SluiceError("INVALID_ARGUMENT", `Invalid limit: ${limit} must be an integer >= 1`);
  if (options.consumer !== undefined) checkConsumer(options.consumer);
  const tables = resolveTableNames(options.tables);
  let rows: GapSkipRow[];
  try {
    rows = await gapSkips(sql, tables, { consumer: options.consumer, limit });
  } catch (e) {
    throw wrapDbError("list the gap skips", e);
  }
  return rows.map((r) => ({
    id: r.id,
    consumer: r.consumer,
    workerId: r.workerId,
    gapPosition: BigInt(r.gapPosition),
    skipToPosition: BigInt(r.skipToPosition),
    highestVisiblePosition: BigInt(r.highestVisiblePosition),
    skippedPositions: r.skippedPositions.map((p) => BigInt(p)),
    reason: r.reason,
    firstSeenAt: new Date(r.firstSeenAt),
    latePositions: r.latePositions.map((p) => BigInt(p)),
    createdAt: new Date(r.createdAt),
  }));
}
