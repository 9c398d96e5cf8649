/**
 * Registration, heartbeat, leadership and rebalancing for one worker, driven
 * by one coordination tick per interval on the worker's session connection.
 *
 * - Liveness: the worker holds an advisory lock on its session for as long as
 *   it lives. A dead process loses its session and the lock at once, so the
 *   leader reassigns its consumers at its next tick instead of waiting for the
 *   heartbeat timeout (which still covers a frozen host whose session lingers).
 * - Leadership: a second advisory lock on the same session, keyed by the
 *   deployment's table names so deployments sharing a database never contend.
 * - A change of backend pid means postgres.js reconnected: every session lock
 *   is gone. The worker stops starting batches until it holds its liveness
 *   lock again, and competes for leadership anew.
 *
 * @module
 */
import type { Clock, ResolvedConfig } from "../config.ts";
import type { Sql } from "../db/executor.ts";
import { SluiceError, sqlStateOf } from "../errors.ts";
import { deploymentKeys } from "./keys.ts";
import { errorFields, type Logger } from "../logger.ts";
import { assignmentChanges, computeAssignments } from "./assignment.ts";
import { openSession } from "./session.ts";
import {
  deleteStaleWorkers,
  deregisterWorker,
  holdsAdvisoryLock,
  leaderView,
  moveConsumer,
  notify,
  pruneDeadWorkers,
  registerWorker,
  tick,
  tryAdvisoryLock,
  type AssignmentRow,
  type WorkerRow,
} from "./statements.ts";

/** What the coordinator tells the worker. */
export interface CoordinatorEvents {
  /** The consumers this worker owns now (not paused). */
  assignments(mine: readonly string[]): void;
  /** The head position and a snapshot xmax, with local send/receive times. */
  head(s: { head: bigint; xmax: bigint; sentAt: number; receivedAt: number }): void;
  /** A NOTIFY on the events channel (or the LISTEN connection came back). */
  eventsNotified(): void;
  /** Whether the worker can prove it is alive (holds its liveness lock). */
  health(healthy: boolean): void;
  /** The worker must stop (its registration is gone). */
  fatal(e: SluiceError): void;
}

/** How long a leader waits for an in-flight batch holding a row it moves. */
const MOVE_LOCK_TIMEOUT_MS = 1_000;

/** Coordinates one worker with the others through PostgreSQL. */
export class Coordinator {
  readonly workerId: string;
  readonly livenessKey: bigint;
  readonly leaderKey: bigint;
  /** Channel on which the leader announces assignment changes. */
  readonly assignChannel: string;
  readonly #config: ResolvedConfig;
  readonly #sql: Sql;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #on: CoordinatorEvents;
  #session: Sql | undefined;
  #pid: number | undefined;
  #leader = false;
  #healthy = false;
  #lastBeat = -Infinity;
  #missing = 0;
  #ticks = 0;
  #stopped = false;
  #wake: (() => void) | undefined;
  #requested = false;
  #loop: Promise<void> | undefined;

  constructor(
    p: { config: ResolvedConfig; sql: Sql; log: Logger; clock: Clock; workerId: string; on: CoordinatorEvents },
  ) {
    this.#config = p.config;
    this.#sql = p.sql;
    this.#log = p.log;
    this.#clock = p.clock;
    this.#on = p.on;
    this.workerId = p.workerId;
    const keys = deploymentKeys(p.config.tables);
    this.livenessKey = keys.livenessKey(p.workerId);
    this.leaderKey = keys.leaderKey;
    this.assignChannel = keys.assignChannel;
  }

  /** True while this worker holds leadership. */
  get isLeader(): boolean {
    return this.#leader;
  }

  /** True while the worker holds its liveness lock. */
  get healthy(): boolean {
    return this.#healthy;
  }

  /** Registers the worker, starts listening and runs the first tick (leading at once when nobody else does). */
  async start(info: Record<string, unknown>): Promise<void> {
    const t = this.#config.tables;
    const session = openSession(this.#sql, this.#config.directUrl, () => this.#onClose());
    this.#session = session;
    try {
      // Lock first, then the row: a row whose lock is free is a dead worker.
      if (!(await tryAdvisoryLock(session, this.livenessKey))) {
        throw new SluiceError("INVALID_ARGUMENT", `Cannot start worker ${this.workerId}: another session holds its liveness lock`);
      }
      try {
        const n = await deleteStaleWorkers(this.#sql, t, 2 * this.#config.heartbeatTimeoutMs);
        if (n > 0) this.#log.info("Removed {count} stale worker rows", { count: n });
      } catch (e) {
        this.#log.warn("Startup cleanup of stale workers failed", errorFields(e));
      }
      await registerWorker(session, t, {
        workerId: this.workerId,
        consumers: this.#config.consumers.map((c) => c.name),
        livenessKey: this.livenessKey,
        info,
      });
      this.#lastBeat = this.#clock.now();
      await session.listen(this.assignChannel, () => this.requestTick());
      if (this.#config.dispatcher === "notify") {
        await session.listen(this.#config.notifyChannel, () => this.#on.eventsNotified(), () => this.#on.eventsNotified());
      }
      this.#setHealth(true);
      await this.#tickOnce();
    } catch (e) {
      await session.end({ timeout: 1 }).catch(() => {});
      this.#session = undefined;
      throw e instanceof SluiceError ? e : new SluiceError("DATABASE_ERROR", `Cannot register worker: ${(e as Error).message}`, { cause: e });
    }
    this.#loop = this.#run();
  }

  /** Runs a tick as soon as possible (after a NOTIFY of an assignment change). */
  requestTick(): void {
    this.#requested = true;
    this.#wake?.();
  }

  /** Stops ticking, deregisters (releasing every consumer) and closes the session. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
    const session = this.#session;
    if (!session) return;
    try {
      // ON DELETE SET NULL releases the assignments; tell the others at once.
      await deregisterWorker(session, this.#config.tables, this.workerId);
      await notify(session, this.assignChannel, "");
    } catch (e) {
      this.#log.warn("Deregistration failed; the leader will reassign after the liveness check", errorFields(e));
    }
    // Ending the session releases the liveness and leader locks and the LISTEN.
    await session.end({ timeout: 5 }).catch(() => {});
    this.#leader = false;
    this.#setHealth(false);
  }

  async #run(): Promise<void> {
    const interval = Math.min(1_000, this.#config.heartbeatIntervalMs, this.#config.rebalanceIntervalMs);
    while (!this.#stopped) {
      if (!this.#requested) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, interval);
          function done(): void {
            clearTimeout(timer);
            resolve();
          }
          this.#wake = done;
        });
        this.#wake = undefined;
      }
      this.#requested = false;
      if (this.#stopped) break;
      await this.#tickOnce();
    }
  }

  async #tickOnce(): Promise<void> {
    const session = this.#session!;
    const t = this.#config.tables;
    const sentAt = this.#clock.now();
    const beat = sentAt - this.#lastBeat >= this.#config.heartbeatIntervalMs;
    let r;
    try {
      // Compete for leadership only while we can prove we are alive.
      r = await tick(session, t, {
        workerId: this.workerId,
        beat,
        tryLead: !this.#leader && this.#healthy,
        leaderKey: this.leaderKey,
        heartbeatTimeoutMs: this.#config.heartbeatTimeoutMs,
        withView: this.#leader && this.#healthy,
      });
    } catch (e) {
      this.#log.warn("Coordination tick failed; not starting batches until the session is back", errorFields(e));
      this.#leader = false;
      this.#setHealth(false);
      return;
    }
    const receivedAt = this.#clock.now();
    this.#ticks++;
    if (this.#pid !== undefined && r.pid !== this.#pid) {
      this.#log.warn("Session was replaced (backend {old} -> {new}); re-acquiring session locks", { old: this.#pid, new: r.pid });
      this.#leader = false;
      this.#setHealth(false);
    }
    if (!this.#healthy) {
      // Healthy only once this session holds the liveness lock again (a new
      // session must retake it; a lingering old one may still hold it).
      const held = await holdsAdvisoryLock(session, this.livenessKey).catch(() => false) ||
        await tryAdvisoryLock(session, this.livenessKey).catch(() => false);
      if (held) this.#setHealth(true);
      else this.#log.warn("Liveness lock is held by another session; waiting", { workerId: this.workerId });
    }
    this.#pid = r.pid;
    if (!r.registered) {
      if (++this.#missing >= 2) {
        this.#on.fatal(new SluiceError("REGISTRATION_LOST", `Worker ${this.workerId} lost its registration row; stopping`));
        return;
      }
      this.#log.warn("Worker registration row missing", { workerId: this.workerId });
    } else this.#missing = 0;
    if (beat) this.#lastBeat = sentAt;
    if (r.evicted) {
      this.#log.warn("Ended the session of a leader whose heartbeat is older than heartbeatTimeoutMs", { workerId: this.workerId });
      this.requestTick();
    }
    if (r.acquired === true) {
      this.#leader = true;
      this.#log.info("Became leader", { workerId: this.workerId });
    }
    this.#on.head({ head: r.head, xmax: r.xmax, sentAt, receivedAt });
    if (this.#healthy) this.#on.assignments(r.mine);
    else this.#on.assignments([]);
    if (this.#leader && this.#healthy) await this.#rebalance(r.view);
  }

  async #rebalance(fromTick: { workers: WorkerRow[]; assignments: AssignmentRow[] } | undefined): Promise<void> {
    const t = this.#config.tables;
    try {
      // Read separately only in the tick that won leadership.
      const view = fromTick ??
        await leaderView(this.#session!, t, { workerId: this.workerId, heartbeatTimeoutMs: this.#config.heartbeatTimeoutMs });
      const live = view.workers.filter((w) => w.alive);
      const current = new Map(view.assignments.map((a) => [a.consumer, a.workerId] as const));
      const desired = computeAssignments(view.assignments.filter((a) => !a.paused).map((a) => a.consumer), live, current);
      for (const a of view.assignments) if (a.paused) desired.set(a.consumer, null);
      let moved = 0;
      for (const c of assignmentChanges(current, desired)) {
        try {
          if (await moveConsumer(this.#sql, t, { consumer: c.consumer, from: c.from, to: c.to, lockTimeoutMs: MOVE_LOCK_TIMEOUT_MS })) moved++;
        } catch (e) {
          if (sqlStateOf(e) !== "55P03") throw e;
          this.#log.debug("Consumer {consumer} is busy; moving it at the next tick", { consumer: c.consumer });
        }
      }
      if (moved > 0) {
        this.#log.info("Rebalanced {moved} consumers across {workers} live workers", { moved, workers: live.length });
        await notify(this.#session!, this.assignChannel, "");
      }
      if (this.#ticks % 30 === 0) {
        const gone = await pruneDeadWorkers(this.#sql, t, 2 * this.#config.heartbeatTimeoutMs);
        if (gone.length > 0) this.#log.info("Pruned dead workers {gone}", { gone });
      }
    } catch (e) {
      this.#log.warn("Rebalance failed; retrying at the next tick", errorFields(e));
    }
  }

  #onClose(): void {
    if (this.#stopped) return;
    // The session connection closed: its locks are gone. Tick now to reconnect.
    this.#leader = false;
    this.#setHealth(false);
    this.requestTick();
  }

  #setHealth(h: boolean): void {
    if (h === this.#healthy) return;
    this.#healthy = h;
    this.#on.health(h);
  }
}
