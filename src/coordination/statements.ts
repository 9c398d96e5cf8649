/**
 * Every SQL statement of worker coordination. Each takes the executor first
 * and the resolved table names second; identifiers are pre-quoted.
 *
 * @module
 */
import { type Executor, prep } from "../db/executor.ts";
import type { ResolvedTableNames } from "../db/names.ts";

type T = ResolvedTableNames;

// pg_locks shows a bigint advisory key as classid (high 32 bits) and objid
// (low 32 bits), objsubid 1. `key` is an SQL expression of type bigint.
/** SQL: true when the advisory lock `key` (a bigint expression) is held by some session. */
export const heldAdvisory = (key: string): string => `exists (select 1 from pg_locks l
  where l.locktype = 'advisory' and l.granted and l.objsubid = 1
    and l.database = (select oid from pg_database where datname = current_database())
    and l.classid::bigint = ((${key}) >> 32) & 4294967295 and l.objid::bigint = (${key}) & 4294967295)`;

/** Takes a session advisory lock without waiting. */
export async function tryAdvisoryLock(ex: Executor, key: bigint): Promise<boolean> {
  const [r] = await ex`select pg_try_advisory_lock(${key.toString()}::bigint) as ok`;
  return r!.ok as boolean;
}

/** Releases a session advisory lock; false when this session did not hold it. */
export async function advisoryUnlock(ex: Executor, key: bigint): Promise<boolean> {
  const [r] = await ex`select pg_advisory_unlock(${key.toString()}::bigint) as ok`;
  return r!.ok as boolean;
}

/** True when this session holds the advisory lock `key`. */
export async function holdsAdvisoryLock(ex: Executor, key: bigint): Promise<boolean> {
  const [r] = await ex.unsafe(
    `select exists (select 1 from pg_locks l where l.pid = pg_backend_pid() and l.locktype = 'advisory'
       and l.granted and l.objsubid = 1 and l.classid::bigint = ($1::bigint >> 32) & 4294967295
       and l.objid::bigint = $1::bigint & 4294967295) as ok`,
    [key.toString()], prep(ex));
  return r!.ok as boolean;
}

/**
 * Startup cleanup: deletes workers silent for `olderThanMs` whose liveness
 * lock is free (their assignments become NULL through the FK).
 */
export async function deleteStaleWorkers(ex: Executor, t: T, olderThanMs: number): Promise<number> {
  const rows = await ex.unsafe(
    `delete from ${t.workerNodes.sql} w where w.heartbeat_at < now() - $1 * interval '1 millisecond'
       and not (w.liveness_key is not null and ${heldAdvisory("w.liveness_key")}) returning worker_id`,
    [olderThanMs], prep(ex));
  return rows.length;
}

/** Registers a worker with the consumers it can run; creates their assignment and checkpoint rows. */
export async function registerWorker(
  ex: Executor,
  t: T,
  w: { workerId: string; consumers: readonly string[]; livenessKey: bigint; info: Record<string, unknown> },
): Promise<void> {
  const names = [...w.consumers];
  await ex.unsafe(
    `with w as (insert into ${t.workerNodes.sql} (worker_id, consumers, liveness_key, backend_pid, info)
                values ($1, array(select jsonb_array_elements_text($2::text::jsonb)), $3::bigint, pg_backend_pid(), $4::text::jsonb) returning 1),
          a as (insert into ${t.consumerAssignments.sql} (consumer_name) select jsonb_array_elements_text($2::text::jsonb)
                on conflict (consumer_name) do nothing returning 1),
          c as (insert into ${t.consumerCheckpoints.sql} (consumer_name) select jsonb_array_elements_text($2::text::jsonb)
                on conflict (consumer_name) do nothing returning 1)
     select (select count(*) from w) as w, (select count(*) from a) as a, (select count(*) from c) as c`,
    [w.workerId, JSON.stringify(names), w.livenessKey.toString(), JSON.stringify(w.info)], prep(ex));
}

/** What one coordination tick learns. */
export interface TickResult {
  /** Backend pid of the session that ran the tick (a change means the session was replaced). */
  readonly pid: number;
  /** False when this worker's row is gone. */
  readonly registered: boolean;
  /** Result of the leader-lock attempt, when one was made. */
  readonly acquired: boolean | null;
  /** True when this tick ended a frozen leader's session. */
  readonly evicted: boolean;
  /** Highest visible position (0 when empty). */
  readonly head: bigint;
  /** xmax of the tick's snapshot. */
  readonly xmax: bigint;
  /** Consumers assigned to this worker, not paused. */
  readonly mine: readonly string[];
  /** The leader's view, when asked for. */
  readonly view: { workers: WorkerRow[]; assignments: AssignmentRow[] } | undefined;
}

/**
 * The coordination tick: one statement on the session connection that beats
 * the heartbeat (when `beat`), tries the leader lock (when `tryLead`), reads
 * the head position and this worker's assignments.
 */
export async function tick(
  ex: Executor,
  t: T,
  p: { workerId: string; beat: boolean; tryLead: boolean; leaderKey: bigint; heartbeatTimeoutMs: number; withView: boolean },
): Promise<TickResult> {
  // The leader's view rides along when this worker already leads: one
  // statement per tick, leader or not.
  const view = p.withView ? `, ${viewColumns(t, "$1::uuid", "$5")}` : "";
  // A follower that cannot take the leader lock ends the holder's session
  // when the holder's heartbeat is older than the timeout: a frozen leader
  // (SIGSTOP, a paused VM) keeps its session and its lock alive, and would
  // otherwise stop every rebalance until it thaws.
  const [r] = await ex.unsafe(
    `with hb as (update ${t.workerNodes.sql} set heartbeat_at = now(), updated_at = now(), backend_pid = pg_backend_pid()
                 where worker_id = $1 and $2::boolean returning 1),
          lead as materialized (select case when $3::boolean then pg_try_advisory_lock($4::bigint) end as acquired)
     select pg_backend_pid() as pid,
       ((select count(*) from hb) > 0 or exists (select 1 from ${t.workerNodes.sql} where worker_id = $1)) as registered,
       (select acquired from lead) as acquired,
       case when (select acquired from lead) = false then
         (select bool_or(pg_terminate_backend(l.pid)) from pg_locks l join ${t.workerNodes.sql} w on w.backend_pid = l.pid
          where l.locktype = 'advisory' and l.granted and l.objsubid = 1
            and l.database = (select oid from pg_database where datname = current_database())
            and l.classid::bigint = ($4::bigint >> 32) & 4294967295 and l.objid::bigint = $4::bigint & 4294967295
            and w.heartbeat_at < now() - $5 * interval '1 millisecond')
       end as evicted,
       coalesce((select max(global_position) from ${t.events.sql}), 0)::text as head,
       pg_snapshot_xmax(pg_current_snapshot())::text as xmax,
       coalesce((select json_agg(consumer_name order by consumer_name) from ${t.consumerAssignments.sql}
                 where worker_id = $1 and not paused), '[]'::json) as mine${view}`,
    [p.workerId, p.beat, p.tryLead, p.leaderKey.toString(), p.heartbeatTimeoutMs],
    prep(ex),
  );
  return {
    pid: r!.pid as number,
    registered: r!.registered as boolean,
    acquired: r!.acquired as boolean | null,
    evicted: r!.evicted === true,
    head: BigInt(r!.head as string),
    xmax: BigInt(r!.xmax as string),
    mine: parseJson<string[]>(r!.mine),
    view: p.withView ? toView(r!) : undefined,
  };
}

/** A registered worker as the leader sees it. */
export interface WorkerRow {
  readonly workerId: string;
  readonly consumers: readonly string[];
  /** Heartbeat fresh and (for others) liveness lock held. */
  readonly alive: boolean;
}

/** A consumer's assignment row. */
export interface AssignmentRow {
  readonly consumer: string;
  readonly workerId: string | null;
  readonly paused: boolean;
}

// The leader's view as two json columns; shared by leaderView and the tick.
const viewColumns = (t: T, self: string, timeout: string) =>
  `coalesce((select json_agg(json_build_object('workerId', w.worker_id, 'consumers', w.consumers, 'alive',
         w.heartbeat_at >= now() - ${timeout} * interval '1 millisecond'
         and (w.worker_id = ${self} or (w.liveness_key is not null and ${heldAdvisory("w.liveness_key")})))
         order by w.worker_id) from ${t.workerNodes.sql} w), '[]'::json) as workers,
       coalesce((select json_agg(json_build_object('consumer', consumer_name, 'workerId', worker_id, 'paused', paused)
         order by consumer_name) from ${t.consumerAssignments.sql}), '[]'::json) as assignments`;

/** The leader's view parsed from a row with the `viewColumns`. */
function toView(r: Record<string, unknown>): { workers: WorkerRow[]; assignments: AssignmentRow[] } {
  return { workers: parseJson<WorkerRow[]>(r.workers), assignments: parseJson<AssignmentRow[]>(r.assignments) };
}

/**
 * The leader's view: every worker with its liveness, and every assignment. A
 * worker is alive when its heartbeat is fresh and its liveness lock is held
 * (a dead process loses its session, and the lock, at once).
 */
export async function leaderView(
  ex: Executor,
  t: T,
  p: { workerId: string; heartbeatTimeoutMs: number },
): Promise<{ workers: WorkerRow[]; assignments: AssignmentRow[] }> {
  const [r] = await ex.unsafe(`select ${viewColumns(t, "$1::uuid", "$2")}`, [p.workerId, p.heartbeatTimeoutMs], prep(ex));
  return toView(r!);
}

/**
 * Moves one consumer, only if it is still where the leader saw it. Waits at
 * most `lockTimeoutMs` for an in-flight batch holding the row. Returns true
 * when the row changed.
 */
export async function moveConsumer(
  ex: Executor,
  t: T,
  p: { consumer: string; from: string | null; to: string | null; lockTimeoutMs: number },
): Promise<boolean> {
  return await (ex as import("../db/executor.ts").Sql).begin(async (tx) => {
    await tx`select set_config('lock_timeout', ${String(p.lockTimeoutMs)}, true)`;
    const rows = await tx.unsafe(
      `update ${t.consumerAssignments.sql} set worker_id = $2, updated_at = now(), state = null, last_error = null,
         state_changed_at = now()
       where consumer_name = $1 and worker_id is not distinct from $3::uuid returning 1`,
      [p.consumer, p.to, p.from], prep(tx));
    return rows.length > 0;
  });
}

/** Sends a notification (delivered at commit, or at once outside a transaction). */
export async function notify(ex: Executor, channel: string, payload: string): Promise<void> {
  await ex`select pg_notify(${channel}, ${payload})`;
}

/** Deletes workers whose liveness lock is free and whose heartbeat is older than `olderThanMs`. */
export async function pruneDeadWorkers(ex: Executor, t: T, olderThanMs: number): Promise<string[]> {
  const rows = await ex.unsafe(
    `delete from ${t.workerNodes.sql} w where w.heartbeat_at < now() - $1 * interval '1 millisecond'
       and not (w.liveness_key is not null and ${heldAdvisory("w.liveness_key")}) returning worker_id::text as id`,
    [olderThanMs], prep(ex));
  return rows.map((r) => r.id as string);
}

/** Releases every consumer of a worker (graceful shutdown). */
export async function releaseConsumers(ex: Executor, t: T, workerId: string): Promise<number> {
  const rows = await ex.unsafe(
    `update ${t.consumerAssignments.sql} set worker_id = null, updated_at = now() where worker_id = $1 returning 1`,
    [workerId], prep(ex));
  return rows.length;
}

/** Deletes a worker's row. */
export async function deregisterWorker(ex: Executor, t: T, workerId: string): Promise<void> {
  await ex.unsafe(`delete from ${t.workerNodes.sql} where worker_id = $1`, [workerId], prep(ex));
}

/** Records a consumer's state for operators (`sluice status`). */
export async function reportConsumerState(
  ex: Executor,
  t: T,
  p: { consumer: string; workerId: string; state: string; lastError: string | null },
): Promise<void> {
  await ex.unsafe(
    `update ${t.consumerAssignments.sql} set state = $3, last_error = $4, state_changed_at = now()
     where consumer_name = $1 and worker_id = $2`,
    [p.consumer, p.workerId, p.state, p.lastError], prep(ex));
}

/** postgres.js returns json columns parsed unless the client changed its parsers; accept both. */
export function parseJson<V>(v: unknown): V {
  return (typeof v === "string" ? JSON.parse(v) : v) as V;
}

/** One statement reading everything `sluice status` shows. */
export async function clusterStatus(
  ex: Executor,
  t: T,
  p: { leaderKey: bigint; heartbeatTimeoutMs: number },
): Promise<{
  head: bigint;
  workers: { workerId: string; heartbeatAgeMs: number; leader: boolean; alive: boolean; consumers: string[]; info: Record<string, unknown> }[];
  consumers: { name: string; owner: string | null; paused: boolean; state: string | null; lastError: string | null; checkpoint: string }[];
  gapPasses: { reason: string; count: number; last: string | null }[];
}> {
  // Ages use clock_timestamp(): a heartbeat whose transaction began after this
  // statement's now() may still be visible to it (a negative age otherwise).
  const [r] = await ex.unsafe(
    `select coalesce((select max(global_position) from ${t.events.sql}), 0)::text as head,
       coalesce((select json_agg(json_build_object(
           'workerId', w.worker_id,
           'heartbeatAgeMs', greatest(0, extract(epoch from clock_timestamp() - w.heartbeat_at) * 1000)::float8,
           'leader', exists (select 1 from pg_locks l where l.pid = w.backend_pid and l.locktype = 'advisory' and l.granted
                               and l.objsubid = 1 and l.classid::bigint = ($1::bigint >> 32) & 4294967295
                               and l.objid::bigint = $1::bigint & 4294967295),
           'alive', w.heartbeat_at >= now() - $2 * interval '1 millisecond'
                    and w.liveness_key is not null and ${heldAdvisory("w.liveness_key")},
           'consumers', w.consumers, 'info', w.info) order by w.created_at, w.worker_id)
         from ${t.workerNodes.sql} w), '[]'::json) as workers,
       coalesce((select json_agg(json_build_object('name', a.consumer_name, 'owner', a.worker_id, 'paused', a.paused,
           'state', case when a.worker_id is null then null else a.state end, 'lastError', a.last_error, 'checkpoint', coalesce(c.last_position, 0)::text) order by a.consumer_name)
         from ${t.consumerAssignments.sql} a left join ${t.consumerCheckpoints.sql} c on c.consumer_name = a.consumer_name), '[]'::json) as consumers,
       coalesce((select json_agg(json_build_object('reason', reason, 'count', n, 'last', last) order by reason)
         from (select reason, count(*)::int as n, max(created_at)::text as last from ${t.consumerGapSkips.sql} group by reason) g),
         '[]'::json) as gaps`,
    [p.leaderKey.toString(), p.heartbeatTimeoutMs], prep(ex));
  return {
    head: BigInt(r!.head as string),
    workers: parseJson(r!.workers),
    consumers: parseJson(r!.consumers),
    gapPasses: parseJson(r!.gaps),
  };
}
