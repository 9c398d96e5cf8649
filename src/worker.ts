/**
 * The worker: registers with the others, runs the consumers assigned to it,
 * and hands their batches to your loop.
 *
 * @module
 */
import { randomUUID } from "node:crypto";
import { type Clock, type ConsumerDefinition, parseWorkerConfig, type ResolvedConfig, systemClock, type WorkerOptions } from "./config.ts";
import { Coordinator } from "./coordination/coordinator.ts";
import { reportConsumerState } from "./coordination/statements.ts";
import type { Sql } from "./db/executor.ts";
import { ConfigError, SluiceError } from "./errors.ts";
import { defaultLogger, errorFields, type Logger } from "./logger.ts";
import { type Batch, type OpenBatch, openBatch } from "./consumption/batch.ts";
import { ConsumerRunner, type ConsumerStatus } from "./consumption/runner.ts";
import { Scheduler } from "./consumption/scheduler.ts";
import { Horizon } from "./consumption/snapshot.ts";
import { checkpointsOf, readHead } from "./consumption/statements.ts";
import { sleep } from "./internal/deferred.ts";
import { pollHead } from "./wakeup/poll.ts";
import { Wakeups } from "./wakeup/wakeups.ts";

/** A consumer's status with its lag. */
export interface ConsumerReport extends ConsumerStatus {
  /** Positions between the checkpoint and the head this worker last saw. */
  readonly lag: bigint;
}

/** What `worker.status()` returns. */
export interface WorkerStatus {
  readonly workerId: string;
  readonly running: boolean;
  /** True while this worker is the leader. */
  readonly leader: boolean;
  /** False while the worker cannot prove it is alive (its session is being re-established). */
  readonly healthy: boolean;
  /** The head position this worker last saw. */
  readonly head: bigint;
  /** The consumers this worker runs. */
  readonly consumers: readonly ConsumerReport[];
}

/** Options of `worker.assigned()` and `worker.run()`. */
export interface LoopOptions {
  /** Aborting it stops the worker gracefully (the open batch may finish). */
  signal?: AbortSignal;
}

/**
 * A worker. Create it with {@link createWorker}.
 *
 * @example
 * ```ts
 * const worker = createWorker({ sql, consumers: [{ name: "outbox" }] });
 * for await (const batch of worker.assigned({ signal })) {
 *   for (const e of batch.events) await publish(e);
 * }
 * ```
 */
export class Worker implements AsyncDisposable {
  /** This worker's id (its `worker_nodes` key). */
  readonly id: string;
  /** The validated configuration. */
  readonly config: ResolvedConfig;
  readonly #sql: Sql;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #wakeups = new Wakeups();
  readonly #horizon = new Horizon();
  readonly #scheduler = new Scheduler();
  readonly #runners = new Map<string, ConsumerRunner>();
  readonly #open = new Set<OpenBatch>();
  readonly #stopCtl = new AbortController();
  readonly #coordinator: Coordinator;
  #head = 0n;
  #started: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #fatal: SluiceError | undefined;
  #poller: Promise<void> | undefined;

  constructor(options: WorkerOptions) {
    const { sql, logger, clock, ...rest } = options ?? ({} as WorkerOptions);
    const sqlIssue = !sql || typeof (sql as { begin?: unknown }).begin !== "function"
      ? [{ path: "sql", value: sql === undefined ? undefined : typeof sql, rule: "must be a postgres.js client (postgres(url))" }]
      : [];
    try {
      this.config = parseWorkerConfig(rest);
    } catch (e) {
      if (e instanceof ConfigError && sqlIssue.length > 0) throw new ConfigError("worker options", [...sqlIssue, ...e.issues]);
      throw e;
    }
    if (sqlIssue.length > 0) throw new ConfigError("worker options", sqlIssue);
    this.#sql = sql;
    this.#log = logger ?? defaultLogger("worker");
    this.#clock = clock ?? systemClock;
    this.id = this.config.workerId ?? randomUUID();
    this.#coordinator = new Coordinator({
      config: this.config,
      sql,
      log: this.#log,
      clock: this.#clock,
      workerId: this.id,
      on: {
        assignments: (mine) => this.#sync(mine),
        head: (s) => this.#onHead(s),
        eventsNotified: () => this.#wakeups.signal(true),
        health: (h) => {
          if (h) this.#wakeups.signal();
          else this.#log.warn("Worker cannot prove it is alive; not starting batches", { workerId: this.id });
        },
        fatal: (e) => {
          this.#fatal ??= e;
          this.#log.error(e.message, { workerId: this.id });
          void this.stop();
        },
      },
    });
  }

  /**
   * Registers the worker and starts coordinating. Called by the first
   * `assigned()`/`run()`; idempotent.
   *
   * @throws SluiceError `WORKER_STOPPED` after `stop()`
   */
  start(): Promise<void> {
    if (this.#stopping) return Promise.reject(new SluiceError("WORKER_STOPPED", `Worker ${this.id} was stopped`));
    this.#started ??= (async () => {
      const info = { pid: (globalThis as { process?: { pid?: number } }).process?.pid, runtime: runtimeName() };
      await this.#coordinator.start(info);
      if (this.config.dispatcher === "poll") {
        this.#poller = pollHead({
          sql: this.#sql,
          tables: this.config.tables,
          intervalMs: this.config.dispatcherIntervalMs,
          clock: this.#clock,
          log: this.#log,
          signal: this.#stopCtl.signal,
        }, (s) => this.#onHead(s));
      }
      this.#log.info("Worker {workerId} started with consumers {consumers}", {
        workerId: this.id,
        consumers: this.config.consumers.map((c) => c.name),
      });
    })();
    return this.#started;
  }

  /**
   * Yields batches of the consumers assigned to this worker. A batch commits
   * (your writes through `batch.tx`/`batch.db`, the checkpoint, gap audit
   * rows) when the loop asks for the next one. If the loop body throws or
   * breaks, the batch rolls back and the worker stops gracefully. Several
   * loops over `assigned()` share the work.
   *
   * @throws SluiceError `REGISTRATION_LOST` when the worker had to stop
   * @example
   * ```ts
   * for await (const batch of worker.assigned({ signal })) {
   *   for (const e of batch.events) {
   *     await batch.tx`insert into accounts (id, balance) values (${e.aggregateId}, 0) on conflict do nothing`;
   *   }
   * }
   * ```
   */
  async *assigned(options: LoopOptions = {}): AsyncGenerator<Batch, void, undefined> {
    const signal = options.signal;
    const onAbort = (): void => void this.stop();
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) void this.stop();
    let held: OpenBatch | undefined;
    let suspended = false;
    try {
      await this.start();
      for (;;) {
        const rb = await this.#scheduler.take(this.#stopCtl.signal);
        if (!rb) break;
        const batch = await openBatch(rb, { sql: this.#sql, config: this.config, workerId: this.id, timeoutMs: this.config.batchTimeoutMs });
        if (!batch) continue;
        held = batch;
        this.#open.add(batch);
        suspended = true;
        yield batch;
        suspended = false;
        await batch.commit();
        this.#open.delete(batch);
        held = undefined;
      }
      if (this.#fatal) throw this.#fatal;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (held) {
        await held.rollback(new SluiceError("WORKER_STOPPED", "The loop over assigned() ended during this batch"));
        this.#open.delete(held);
      }
      // An early exit (break or throw in the loop body) stops the worker.
      if (suspended) await this.stop();
    }
  }

  /**
   * Runs `handler` for every batch, `concurrency` batches at a time (of
   * different consumers). A throwing handler fails just that batch (it is
   * retried with backoff, then parked). Resolves when the worker stops.
   *
   * @example
   * ```ts
   * await worker.run(async (batch) => {
   *   await batch.db.insert(accounts).values(batch.events.map(toRow));
   * }, { concurrency: 4, signal });
   * ```
   */
  async run(handler: (batch: Batch) => Promise<void>, options: LoopOptions & { concurrency?: number } = {}): Promise<void> {
    const n = options.concurrency ?? 1;
    if (!Number.isInteger(n) || n < 1) throw new SluiceError("INVALID_ARGUMENT", `Invalid concurrency: ${n} must be an integer >= 1`);
    await Promise.all(Array.from({ length: n }, async () => {
      for await (const batch of this.assigned(options)) {
        try {
          await handler(batch);
        } catch (e) {
          await batch.fail(e);
        }
      }
    }));
  }

  /**
   * Stops gracefully: takes no new batch, lets open batches finish within
   * `shutdownTimeoutMs` (then rolls them back), releases its consumers for
   * the other workers, deregisters and closes the connections it opened.
   * Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#stopCtl.abort();
      this.#scheduler.close();
      const runners = [...this.#runners.values()];
      const stopped = Promise.all(runners.map((r) => r.stop()));
      if (this.#open.size > 0) {
        // Let the loops finish their open batches (they commit on next())...
        let timer: ReturnType<typeof setTimeout> | undefined;
        const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), this.config.shutdownTimeoutMs)));
        const drained = Promise.all([...this.#open].map((b) => b.ended));
        const r = await Promise.race([drained, timeout]);
        clearTimeout(timer);
        // ...and roll back what is still open after shutdownTimeoutMs.
        if (r === "timeout") {
          await Promise.all([...this.#open].map((b) => b.rollback(new SluiceError("WORKER_STOPPED", "Shutdown timeout: batch rolled back"))));
        }
      }
      await stopped;
      await this.#poller;
      if (this.#started) await this.#started.catch(() => {});
      await this.#coordinator.stop();
      this.#log.info("Worker {workerId} stopped", { workerId: this.id });
    })();
    return this.#stopping;
  }

  /**
   * Resolves when every (not paused) consumer of this worker's configuration
   * has a checkpoint at or past the head position seen at the call, whichever
   * worker owns it. For tests, scripts and demos: wait on this, not a sleep.
   *
   * @throws SluiceError `TIMEOUT` after `timeoutMs` (default 30000)
   * @example
   * ```ts
   * await store.append(sql, events, { expectedVersion: "any" });
   * await worker.caughtUp({ timeoutMs: 5_000 });
   * ```
   */
  async caughtUp(options: { timeoutMs?: number; pollMs?: number } = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? 30_000;
    const t = this.config.tables;
    const names = this.config.consumers.map((c) => c.name);
    const deadline = this.#clock.now() + timeoutMs;
    const { head } = await readHead(this.#sql, t);
    for (;;) {
      const { checkpoints, paused } = await checkpointsOf(this.#sql, t, names);
      // A consumer without a row yet (worker not registered) is behind too.
      const behind = names.filter((n) => !paused.has(n) && (checkpoints.get(n) ?? -1n) < head);
      if (behind.length === 0) return;
      if (this.#clock.now() >= deadline) {
        throw new SluiceError("TIMEOUT", `Consumers ${behind.join(", ")} did not reach position ${head} within ${timeoutMs} ms`, {
          details: { behind, head: head.toString() },
        });
      }
      await sleep(options.pollMs ?? 25);
    }
  }

  /** `await using worker = createWorker(...)` stops it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  /** Leadership, health and every running consumer's state, checkpoint and lag. */
  status(): WorkerStatus {
    return {
      workerId: this.id,
      running: this.#started !== undefined && this.#stopping === undefined,
      leader: this.#coordinator.isLeader,
      healthy: this.#coordinator.healthy,
      head: this.#head,
      consumers: [...this.#runners.values()].map((r) => {
        const s = r.status();
        return { ...s, lag: this.#head > s.checkpoint ? this.#head - s.checkpoint : 0n };
      }),
    };
  }

  #onHead(s: { head: bigint; xmax: bigint; sentAt: number; receivedAt: number }): void {
    this.#horizon.record({ sentAt: s.sentAt, receivedAt: s.receivedAt, position: s.head, xmax: s.xmax });
    if (s.head > this.#head) {
      this.#head = s.head;
      this.#wakeups.signal();
    }
  }

  #sync(mine: readonly string[]): void {
    if (this.#stopping) return;
    const want = new Set(mine);
    for (const [name, runner] of this.#runners) {
      if (!want.has(name)) {
        this.#runners.delete(name);
        void runner.stop();
        this.#log.info("Released consumer {consumer}", { consumer: name });
      }
    }
    for (const name of want) {
      const existing = this.#runners.get(name);
      if (existing && !(existing.finished && existing.status().state === "stopped")) continue;
      const def = this.config.consumers.find((c) => c.name === name) as ConsumerDefinition | undefined;
      if (!def) continue; // the leader assigns only consumers we listed; be safe anyway
      const runner = new ConsumerRunner(def, {
        config: this.config,
        sql: this.#sql,
        workerId: this.id,
        clock: this.#clock,
        log: this.#log,
        wakeups: this.#wakeups,
        horizon: this.#horizon,
        scheduler: this.#scheduler,
        canStart: () => this.#coordinator.healthy && !this.#stopping,
        report: (consumer, state, lastError) => {
          reportConsumerState(this.#sql, this.config.tables, { consumer, workerId: this.id, state, lastError }).catch((e) =>
            this.#log.debug("Cannot record consumer state", errorFields(e))
          );
        },
        ownershipLost: () => this.#coordinator.requestTick(),
      });
      this.#runners.set(name, runner);
      runner.start();
      this.#log.info("Acquired consumer {consumer}", { consumer: name });
    }
  }
}

function runtimeName(): string {
  if ("Deno" in globalThis) return "deno";
  if ("Bun" in globalThis) return "bun";
  return "node";
}

/**
 * Creates a worker. Validates every option (a {@link ConfigError} lists each
 * bad field) and touches no database until it starts.
 *
 * @example
 * ```ts
 * import postgres from "postgres";
 * import { createWorker } from "@sluice/worker";
 *
 * const sql = postgres(process.env.DATABASE_URL!);
 * const worker = createWorker({
 *   sql,
 *   consumers: [{ name: "account_projection", aggregateTypes: ["Account"] }, { name: "outbox" }],
 *   dispatcher: "notify",
 * });
 * for await (const batch of worker.assigned()) {
 *   for (const e of batch.events) await batch.tx`insert into accounts_seen (id) values (${e.eventId})`;
 * }
 * ```
 */
export function createWorker(options: WorkerOptions): Worker {
  return new Worker(options);
}
