/**
 * One owned consumer's loop: probe the window after its checkpoint, decide
 * how far it may go (gaps), prepare a batch for the user's loop, learn how it
 * ended, back off or park on failures, and sleep adaptively.
 *
 * @module
 */
import type { Clock, ResolvedConfig } from "../config.ts";
import type { Sql } from "../db/executor.ts";
import { isConnectionError, sqlStateOf } from "../errors.ts";
import { backoffDelay, nextPollInterval } from "../internal/backoff.ts";
import { deferred, sleep } from "../internal/deferred.ts";
import { errorFields, type Logger } from "../logger.ts";
import type { Wakeups } from "../wakeup/wakeups.ts";
import { beginBatchTx, type Outcome, type PendingBatchTx, type ReadyBatch } from "./batch.ts";
import { GapTracker, type PassedRange } from "./gaps.ts";
import { LateWatch, toSkipRecords } from "./late-watch.ts";
import type { Claim, Scheduler } from "./scheduler.ts";
import { type Horizon, parseSnapshot } from "./snapshot.ts";
import {
  advance,
  eventsUpTo,
  type Fence,
  fencedProbe,
  foreignXids,
  loadCheckpoint,
  probe,
  type Probe,
  type ProbeMode,
  type Scope,
} from "./statements.ts";

/** What a consumer is doing. */
export type ConsumerState = "starting" | "running" | "idle" | "blocked" | "backing_off" | "parked" | "stopped";

/** A consumer's state as `worker.status()` reports it. */
export interface ConsumerStatus {
  readonly name: string;
  readonly state: ConsumerState;
  /** Last committed checkpoint this worker knows. */
  readonly checkpoint: bigint;
  /** First missing position it waits on, while blocked. */
  readonly blockedAt: bigint | undefined;
  /** Since when (epoch ms) it waits on that position. */
  readonly blockedSince: number | undefined;
  /** Failed batches in a row. */
  readonly failures: number;
  readonly lastError: string | undefined;
}

/** What a runner needs from its worker. */
export interface RunnerContext {
  readonly config: ResolvedConfig;
  readonly sql: Sql;
  readonly workerId: string;
  readonly clock: Clock;
  readonly log: Logger;
  readonly wakeups: Wakeups;
  readonly horizon: Horizon;
  readonly scheduler: Scheduler;
  /** False while the worker cannot prove it is alive: start no batch. */
  canStart(): boolean;
  /** Records a state for operators (best effort). */
  report(consumer: string, state: ConsumerState, lastError: string | null): void;
  /** The consumer is no longer ours: resync assignments. */
  ownershipLost(consumer: string): void;
}

// While blocked on a hole, never probe more often than this (batchPauseMs may be 0).
const MIN_BLOCKED_DELAY_MS = 20;
const TRANSIENT = new Set(["40001", "40P01"]);

/** The stored checkpoint differs from ours. */
class CheckpointMoved extends Error {}

interface Prefetched {
  readonly from: bigint;
  readonly pr: Probe;
  readonly sentAt: number;
  readonly receivedAt: number;
}

/** A batch transaction opened for a claimed loop, the window read inside it. */
interface Direct {
  readonly pending: PendingBatchTx<{ probe: Probe; fence: Fence | undefined }>;
  readonly claim: Claim;
}

/** Runs one consumer while this worker owns it. */
export class ConsumerRunner {
  readonly name: string;
  readonly #scope: Scope;
  readonly #ctx: RunnerContext;
  readonly #gaps: GapTracker;
  readonly #stop = new AbortController();
  #done: Promise<void> | undefined;
  #state: ConsumerState = "starting";
  #checkpoint = 0n;
  #blockedAt: bigint | undefined;
  #blockedSince: number | undefined;
  #failures = 0;
  #lastError: string | undefined;
  readonly #late: LateWatch;

  constructor(def: { name: string; aggregateTypes?: readonly string[]; boundedContexts?: readonly string[] }, ctx: RunnerContext) {
    this.name = def.name;
    this.#scope = { aggregateTypes: def.aggregateTypes ?? [], boundedContexts: def.boundedContexts ?? [] };
    this.#ctx = ctx;
    const c = ctx.config;
    this.#late = new LateWatch(def.name, ctx);
    this.#gaps = new GapTracker({ minAgeMs: c.provenGapMinAgeMs, staleAfterMs: c.staleGapThresholdMs, harborLag: c.staleGapHarborLag });
  }

  /** The consumer's current status. */
  status(): ConsumerStatus {
    return {
      name: this.name,
      state: this.#state,
      checkpoint: this.#checkpoint,
      blockedAt: this.#blockedAt,
      blockedSince: this.#blockedSince,
      failures: this.#failures,
      lastError: this.#lastError,
    };
  }

  /** True once the loop has ended (stopped, parked or ownership lost). */
  get finished(): boolean {
    return this.#state === "stopped" || this.#state === "parked";
  }

  start(): void {
    this.#done ??= this.#loop().catch((e) => {
      this.#ctx.log.error("Consumer loop crashed", { consumer: this.name, ...errorFields(e) });
    }).finally(() => {
      if (this.#state !== "parked") this.#state = "stopped";
    });
  }

  /** Stops the loop after its current step; resolves when it has ended. */
  async stop(): Promise<void> {
    this.#stop.abort();
    this.#ctx.scheduler.withdraw(this.name);
    await this.#done;
  }

  async #loop(): Promise<void> {
    const { config: c, sql, clock, log, wakeups, horizon } = this.#ctx;
    const t = c.tables;
    const signal = this.#stop.signal;
    this.#checkpoint = await this.#retrying(() => loadCheckpoint(sql, t, this.name));
    let poll = c.pollIntervalMs;
    let delay = 0;
    // Waited before `delay`, deaf to wakeups: a failing consumer backs off,
    // and a blocked one does not re-probe on every append.
    let floor = 0;
    let gen = wakeups.generation;
    let transientRetries = 0;
    // The next window, probed while the user worked on the current batch.
    let prefetched: Prefetched | undefined;
    // False while the last NOTIFY found nothing for this consumer (a scoped
    // consumer among many, say): its next one reads the window outside a
    // transaction again, so irrelevant appends do not cost it a BEGIN, row
    // locks and a ROLLBACK each.
    let warm = true;
    let notified = false;
    // The batch transaction a wakeup read its window in, until it is given
    // to the loop or rolled back; nothing else of ours may use `sql` while
    // it is open (with a pool of one it holds the only connection).
    let direct: Direct | undefined;
    const release = async (): Promise<void> => {
      const d = direct;
      if (!d) return;
      direct = undefined;
      d.claim.release();
      await d.pending.release();
    };
    while (!signal.aborted) {
      if (floor > 0) {
        if (!(await sleep(floor, signal))) break;
        floor = 0;
      }
      notified = false;
      if (delay > 0) {
        const w = await wakeups.wait(gen, delay, signal);
        if (w === "aborted") break;
        if (w === "woken") poll = c.pollIntervalMs;
        // Woken by an events NOTIFY, not by a head read or a health change.
        notified = w === "woken" && wakeups.notifiedSince(gen);
      }
      if (!this.#ctx.canStart()) {
        gen = wakeups.generation;
        delay = c.pollIntervalMs;
        continue;
      }
      gen = wakeups.generation; // before probing: a wakeup during this step is kept
      let outcome: Outcome;
      let full = false;
      // In notify mode every append wakes the consumer (wakeups since `gen`
      // are kept), so after a batch that took everything its probe saw there
      // is nothing to re-probe for. The poll dispatcher learns of appends
      // only at its next read: there the re-probe after a batch finds what
      // arrived meanwhile one interval sooner.
      let drained = false;
      try {
        const use = prefetched?.from === this.#checkpoint ? prefetched : undefined;
        prefetched = undefined;
        // Still waiting on the hole that blocked the last probe: positions suffice.
        const mode = this.#state === "blocked" ? "positions" : "rows";
        // Woken from idle (notify mode) with a loop waiting: read the window
        // inside the batch's transaction, fenced in the same statement (BEGIN
        // and one statement instead of probe, BEGIN and fence).
        const claim = !use && notified && warm && this.#state === "idle" ? this.#ctx.scheduler.claim() : undefined;
        let got: Prefetched;
        if (use) got = use;
        else if (claim) ({ got, direct } = await this.#fencedProbe(this.#checkpoint, claim));
        else got = await this.#probe(this.#checkpoint, mode);
        const { pr, sentAt, receivedAt } = got;
        full = pr.positions.length === c.batchSize;
        if (pr.stored !== undefined && pr.stored !== this.#checkpoint && !use) {
          // Moved elsewhere (an operator's rewind): handled as a conflict below.
          throw new CheckpointMoved();
        }
        if (this.#late.active) {
          await release();
          await this.#late.check(receivedAt);
        }
        if (pr.positions.length === 0) {
          if (notified) warm = false;
          this.#gaps.reset();
          this.#setBlocked(undefined, undefined);
          this.#state = "idle";
          poll = nextPollInterval(poll, c.maxPollIntervalMs, c.pollIntervalMs);
          delay = poll;
          continue;
        }
        let snap = parseSnapshot(pr.snapshot!);
        horizon.record({ sentAt, receivedAt, position: pr.positions.at(-1)!, xmax: snap.xmax });
        let d = this.#gaps.decide(receivedAt, this.#checkpoint, pr.positions, snap, horizon);
        if (d.blockedAt !== undefined && snap.xip.length > 0) {
          // Snapshots list every database's transactions; those of other
          // databases cannot fill our holes.
          await release();
          const foreign = await foreignXids(sql);
          if (snap.xip.some((x) => foreign.has(x))) {
            snap = { ...snap, xip: snap.xip.filter((x) => !foreign.has(x)) };
            d = this.#gaps.decide(receivedAt, this.#checkpoint, pr.positions, snap, horizon);
          }
        }
        if (d.target <= this.#checkpoint) {
          this.#setBlocked(d.blockedAt, d.blockedSince);
          this.#state = "blocked";
          poll = c.pollIntervalMs;
          // Re-probe when the hole is old enough to be proven, or after the pause.
          const provable = d.blockedSince === undefined ? Infinity : d.blockedSince + c.provenGapMinAgeMs + 5 - receivedAt;
          floor = MIN_BLOCKED_DELAY_MS;
          delay = Math.max(0, (provable > 0 ? Math.min(c.batchPauseMs, provable) : c.batchPauseMs) - floor);
          continue;
        }
        this.#setBlocked(d.blockedAt, d.blockedSince);
        this.#state = "running";
        drained = c.dispatcher === "notify" && !full && d.blockedAt === undefined && d.target === pr.positions.at(-1);
        const events = await eventsUpTo(sql, t, pr, this.#checkpoint, d.target, this.#scope);
        const skips = toSkipRecords(d.passed, d.highestVisible ?? d.target);
        if (events.length === 0) {
          // Nothing for this consumer in the range: advance without yielding.
          if (notified) warm = false;
          await release();
          const r = await advance(sql, t, { consumer: this.name, workerId: this.#ctx.workerId, from: this.#checkpoint, to: d.target, skips });
          outcome = r.advanced ? { kind: "committed", skipIds: r.skipIds } : { kind: "conflict" };
        } else {
          const rb: ReadyBatch = { consumer: this.name, from: this.#checkpoint, to: d.target, events, skips, outcome: deferred<Outcome>() };
          const dt = direct;
          direct = undefined;
          if (dt) {
            const opened: ReadyBatch = { ...rb, open: () => dt.pending.use(opened) };
            if (!dt.claim.give(opened)) {
              // That loop has gone: roll back, and let any loop open the batch.
              await dt.pending.release();
              this.#ctx.scheduler.submit(rb);
            }
          } else {
            this.#ctx.scheduler.submit(rb);
          }
          warm = true;
          // Catching up: probe the next window now, while the user works.
          const next = full ? this.#probe(d.target).catch(() => undefined) : undefined;
          outcome = await rb.outcome.promise;
          if (outcome.kind === "committed" && next) prefetched = await next;
        }
        if (outcome.kind === "committed") this.#afterCommit(d.target, d.passed, outcome.skipIds, receivedAt);
      } catch (e) {
        outcome = e instanceof CheckpointMoved ? { kind: "conflict" } : { kind: "failed", error: e };
      } finally {
        await release().catch(() => {});
      }
      switch (outcome.kind) {
        case "committed":
          if (this.#failures > 0 || this.#lastError) this.#ctx.report(this.name, "running", null);
          this.#failures = 0;
          this.#lastError = undefined;
          transientRetries = 0;
          poll = c.pollIntervalMs;
          if (drained) {
            this.#state = "idle";
            delay = poll;
          } else {
            delay = full ? c.batchPauseMs : 0;
          }
          break;
        case "conflict":
          // The checkpoint moved under us (an operator's rewind): start over from it.
          this.#gaps.reset();
          this.#checkpoint = await this.#retrying(() => loadCheckpoint(sql, t, this.name));
          log.info("Checkpoint of {consumer} changed elsewhere; continuing from {checkpoint}", { consumer: this.name, checkpoint: this.#checkpoint });
          delay = 0;
          break;
        case "ownership_lost":
          log.info("Consumer {consumer} is no longer owned by this worker", { consumer: this.name });
          this.#ctx.ownershipLost(this.name);
          return;
        case "discarded":
          return;
        case "failed": {
          if (signal.aborted) return;
          const e = outcome.error;
          if (TRANSIENT.has(sqlStateOf(e) ?? "") && transientRetries < 3) {
            transientRetries++;
            delay = 0;
            break;
          }
          transientRetries = 0;
          this.#failures++;
          this.#lastError = e instanceof Error ? e.message : String(e);
          // The database being away is not this consumer's fault: back off, never park for it.
          if (this.#failures >= c.maxConsecutiveFailures && !isConnectionError(e)) {
            this.#state = "parked";
            log.error("Consumer {consumer} parked after {failures} failed batches at position {position}: {error}", {
              consumer: this.name,
              failures: this.#failures,
              position: (this.#checkpoint + 1n).toString(),
              ...errorFields(e),
            });
            this.#ctx.report(this.name, "parked", this.#lastError);
            return;
          }
          this.#state = "backing_off";
          floor = Math.round(backoffDelay(this.#failures, { baseMs: c.retryBaseMs, maxMs: c.retryMaxMs }, clock.random));
          // While the database is away, retry at least every second: it is
          // back quickly after a restart, and nothing wakes a backing-off consumer.
          if (isConnectionError(e)) floor = Math.min(floor, 1_000);
          delay = 0;
          log.warn("Batch of {consumer} failed ({failures} in a row); retrying in {delay} ms", {
            consumer: this.name,
            failures: this.#failures,
            delay: floor,
            ...errorFields(e),
          });
          this.#ctx.report(this.name, "backing_off", this.#lastError);
        }
      }
    }
  }

  async #probe(from: bigint, mode: ProbeMode = "rows"): Promise<Prefetched> {
    const { config: c, sql, clock } = this.#ctx;
    const sentAt = clock.now();
    const pr = await probe(sql, c.tables, from, c.batchSize, this.#scope, this.name, mode);
    return { from, pr, sentAt, receivedAt: clock.now() };
  }

  /** Begins a batch transaction for the claimed loop and reads the window in it. */
  async #fencedProbe(from: bigint, claim: Claim): Promise<{ got: Prefetched; direct: Direct }> {
    const { config: c, sql, clock, workerId } = this.#ctx;
    const sentAt = clock.now();
    let pending: Direct["pending"];
    try {
      pending = await beginBatchTx(
        { sql, config: c, workerId, timeoutMs: c.batchTimeoutMs },
        (tx) => fencedProbe(tx, c.tables, { checkpoint: from, limit: c.batchSize, scope: this.#scope, consumer: this.name, statementTimeoutMs: c.batchTimeoutMs }),
      );
    } catch (e) {
      claim.release();
      throw e;
    }
    return { got: { from, pr: pending.first.probe, sentAt, receivedAt: clock.now() }, direct: { pending, claim } };
  }

  #afterCommit(to: bigint, passed: readonly PassedRange[], skipIds: readonly string[], now: number): void {
    this.#checkpoint = to;
    this.#late.passed(passed, skipIds, now);
  }

  #setBlocked(at: bigint | undefined, since: number | undefined): void {
    this.#blockedAt = at;
    this.#blockedSince = since;
  }

  async #retrying<V>(fn: () => Promise<V>): Promise<V> {
    for (let attempt = 1;; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (this.#stop.signal.aborted) throw e;
        const c = this.#ctx.config;
        const delay = backoffDelay(attempt, { baseMs: c.retryBaseMs, maxMs: c.retryMaxMs }, this.#ctx.clock.random);
        this.#ctx.log.warn("Consumer {consumer} cannot read its checkpoint; retrying", { consumer: this.name, ...errorFields(e) });
        await this.#ctx.wakeups.wait(this.#ctx.wakeups.generation, delay, this.#stop.signal);
      }
    }
  }
}
