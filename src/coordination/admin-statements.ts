/**
 * Operator and one-off statements (src/admin.ts, src/catch-up.ts, the CLI):
 * rewinds, pauses, audit reads, consumers without a worker. Executor first.
 *
 * @module
 */
import { type Executor, prep } from "../db/executor.ts";
import type { ResolvedTableNames } from "../db/names.ts";
import { heldAdvisory, parseJson } from "./statements.ts";

type T = ResolvedTableNames;

/** `worker_id` of the audit rows written by an operator or a one-off run (no worker). */
export const NIL_WORKER_ID = "00000000-0000-0000-0000-000000000000";

/**
 * Locks a consumer's assignment row (first, as batches do) and returns its
 * owner and paused flag; undefined when the consumer has no row.
 */
export async function lockAssignment(ex: Executor, t: T, consumer: string): Promise<{ owner: string | null; paused: boolean } | undefined> {
  const [r] = await ex.unsafe(
    `select worker_id::text as owner, paused from ${t.consumerAssignments.sql} where consumer_name = $1 for update`,
    [consumer], prep(ex));
  return r ? { owner: (r.owner as string | null) ?? null, paused: r.paused as boolean } : undefined;
}

/** Locks a consumer's checkpoint row (after its assignment row) and returns the checkpoint; undefined without a row. */
export async function lockCheckpoint(ex: Executor, t: T, consumer: string): Promise<bigint | undefined> {
  const [r] = await ex.unsafe(
    `select last_position::text as p from ${t.consumerCheckpoints.sql} where consumer_name = $1 for update`,
    [consumer], prep(ex));
  return r ? BigInt(r.p as string) : undefined;
}

/** Sets a checkpoint from `from` to `to` (compare-and-set, either direction); false when it was not `from`. */
export async function setCheckpoint(ex: Executor, t: T, p: { consumer: string; from: bigint; to: bigint }): Promise<boolean> {
  const rows = await ex.unsafe(
    `update ${t.consumerCheckpoints.sql} set last_position = $3::bigint, updated_at = now()
     where consumer_name = $1 and last_position = $2::bigint returning 1`,
    [p.consumer, p.from.toString(), p.to.toString()], prep(ex));
  return rows.length > 0;
}

/** One audit row for {@link recordGapSkips}; `firstSeenAt` undefined means now. */
export interface GapSkipInput {
  readonly gapPosition: bigint;
  readonly highestVisible: bigint;
  readonly positions: readonly bigint[];
  readonly reason: "rolled_back" | "stale" | "manual";
  readonly firstSeenAt?: number;
}

/** Inserts gap-skip audit rows written with checkpoint `to`; returns their ids. */
export async function recordGapSkips(
  ex: Executor,
  t: T,
  p: { consumer: string; workerId: string; to: bigint; skips: readonly GapSkipInput[] },
): Promise<string[]> {
  if (p.skips.length === 0) return [];
  const rows = await ex.unsafe(
    `insert into ${t.consumerGapSkips.sql}
       (consumer_name, worker_id, gap_position, skip_to_position, highest_visible_position, skipped_positions, reason, first_seen_at)
     select $1, $2, x.gap_position, $3::bigint, x.highest, x.positions, x.reason,
            coalesce(to_timestamp(x.first_seen_ms / 1000.0), now())
     from jsonb_to_recordset($4::text::jsonb) as x(gap_position bigint, highest bigint, positions bigint[], reason text, first_seen_ms float8)
     returning id::text as id`,
    [
      p.consumer,
      p.workerId,
      p.to.toString(),
      JSON.stringify(p.skips.map((s) => ({
        gap_position: s.gapPosition.toString(),
        highest: s.highestVisible.toString(),
        positions: s.positions.map(String),
        reason: s.reason,
        first_seen_ms: s.firstSeenAt ?? null,
      }))),
    ], prep(ex));
  return rows.map((r) => r.id as string);
}

/** Sets a consumer's paused flag; returns the previous value, or undefined when the consumer has no row. */
export async function setPaused(ex: Executor, t: T, consumer: string, paused: boolean): Promise<{ was: boolean } | undefined> {
  const [r] = await ex.unsafe(
    `with old as (select consumer_name, paused from ${t.consumerAssignments.sql} where consumer_name = $1 for update)
     update ${t.consumerAssignments.sql} a set paused = $2, updated_at = now()
     from old where a.consumer_name = old.consumer_name returning old.paused as was`,
    [consumer, paused], prep(ex));
  return r ? { was: r.was as boolean } : undefined;
}

/** A `consumer_gap_skips` row. */
export interface GapSkipRow {
  readonly id: string;
  readonly consumer: string;
  readonly workerId: string;
  readonly gapPosition: string;
  readonly skipToPosition: string;
  readonly highestVisiblePosition: string;
  readonly skippedPositions: string[];
  readonly reason: string;
  readonly firstSeenAt: string;
  readonly latePositions: string[];
  readonly createdAt: string;
}

/** The latest gap-skip audit rows, newest first, of one consumer or all. */
export async function gapSkips(ex: Executor, t: T, p: { consumer?: string; limit: number }): Promise<GapSkipRow[]> {
  const [r] = await ex.unsafe(
    `select coalesce(json_agg(json_build_object(
         'id', s.id::text, 'consumer', s.consumer_name, 'workerId', s.worker_id::text,
         'gapPosition', s.gap_position::text, 'skipToPosition', s.skip_to_position::text,
         'highestVisiblePosition', s.highest_visible_position::text,
         'skippedPositions', (select coalesce(json_agg(x::text order by o), '[]'::json) from unnest(s.skipped_positions) with ordinality u(x, o)),
         'reason', s.reason,
         'firstSeenAt', to_char(s.first_seen_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
         'latePositions', (select coalesce(json_agg(x::text order by o), '[]'::json) from unnest(s.late_positions) with ordinality u(x, o)),
         'createdAt', to_char(s.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
       order by s.created_at desc, s.id desc), '[]'::json) as rows
     from (select * from ${t.consumerGapSkips.sql} where $1::text is null or consumer_name = $1
           order by created_at desc, id desc limit $2) s`,
    [p.consumer ?? null, p.limit], prep(ex));
  return parseJson<GapSkipRow[]>(r!.rows);
}

/** Creates missing assignment and checkpoint rows (checkpoint 0) for `consumers`, without registering a worker. */
export async function ensureConsumers(ex: Executor, t: T, consumers: readonly string[]): Promise<void> {
  await ex.unsafe(
    `with a as (insert into ${t.consumerAssignments.sql} (consumer_name) select jsonb_array_elements_text($1::text::jsonb)
                on conflict (consumer_name) do nothing returning 1),
          c as (insert into ${t.consumerCheckpoints.sql} (consumer_name) select jsonb_array_elements_text($1::text::jsonb)
                on conflict (consumer_name) do nothing returning 1)
     select (select count(*) from a) as a, (select count(*) from c) as c`,
    [JSON.stringify(consumers)], prep(ex));
}

/**
 * Owners of `consumers` and whether each owner is alive (heartbeat within
 * `heartbeatTimeoutMs` and liveness lock held, as the leader judges it).
 */
export async function consumerOwners(
  ex: Executor,
  t: T,
  p: { consumers: readonly string[]; heartbeatTimeoutMs: number },
): Promise<{ consumer: string; owner: string | null; ownerAlive: boolean; paused: boolean }[]> {
  const rows = await ex.unsafe(
    `select a.consumer_name as consumer, a.worker_id::text as owner, a.paused,
       coalesce(w.heartbeat_at >= now() - $2 * interval '1 millisecond'
                and w.liveness_key is not null and ${heldAdvisory("w.liveness_key")}, false) as alive
     from ${t.consumerAssignments.sql} a left join ${t.workerNodes.sql} w on w.worker_id = a.worker_id
     where a.consumer_name in (select jsonb_array_elements_text($1::text::jsonb)) order by a.consumer_name`,
    [JSON.stringify(p.consumers), p.heartbeatTimeoutMs], prep(ex));
  return rows.map((r) => ({
    consumer: r.consumer as string,
    owner: (r.owner as string | null) ?? null,
    ownerAlive: r.alive as boolean,
    paused: r.paused as boolean,
  }));
}

/** Clears a consumer's owner if it still is `workerId` (a dead worker); true when it did. */
export async function clearOwner(ex: Executor, t: T, consumer: string, workerId: string): Promise<boolean> {
  const rows = await ex.unsafe(
    `update ${t.consumerAssignments.sql} set worker_id = null, updated_at = now(), state = null, last_error = null, state_changed_at = now()
     where consumer_name = $1 and worker_id = $2 returning 1`,
    [consumer, workerId], prep(ex));
  return rows.length > 0;
}

/**
 * Events in `(after, upTo]` for each consumer, counted up to `cap` (a count
 * equal to `cap` means "at least"): the lag in events, holes not counted.
 */
export async function countEventsAfter(
  ex: Executor,
  t: T,
  p: { after: readonly { consumer: string; position: bigint }[]; upTo: bigint; cap: number },
): Promise<Map<string, number>> {
  if (p.after.length === 0) return new Map();
  const rows = await ex.unsafe(
    `select x.name, (select count(*) from (select 1 from ${t.events.sql} e
                      where e.global_position > x.after and e.global_position <= $2::bigint limit $3) s)::int as n
     from jsonb_to_recordset($1::text::jsonb) as x(name text, after bigint)`,
    [JSON.stringify(p.after.map((a) => ({ name: a.consumer, after: a.position.toString() }))), p.upTo.toString(), p.cap], prep(ex));
  return new Map(rows.map((r) => [r.name as string, r.n as number]));
}
