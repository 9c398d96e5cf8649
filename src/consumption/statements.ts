/**
 * Every SQL statement of consumption: probe, event fetch, fence, checkpoint
 * advance with its gap audit, late-commit watch. Executor first; positions
 * travel as text so the client's bigint and date parsers never matter (the
 * user's client may be shared with Drizzle, which changes them).
 *
 * @module
 */
import { type Executor, prep } from "../db/executor.ts";
import type { ResolvedTableNames } from "../db/names.ts";
import type { PersistedEvent } from "../store/events.ts";
import type { PassReason } from "./gaps.ts";

type T = ResolvedTableNames;

/** Which events a consumer receives (every listed filter must match). */
export interface Scope {
  readonly aggregateTypes: readonly string[];
  readonly boundedContexts: readonly string[];
}

// Arrays travel as JSON text: a client with fetch_types off cannot send arrays.
const relevant = (alias: string) =>
  `((jsonb_array_length($3::text::jsonb) = 0 or ${alias}.aggregate_type in (select jsonb_array_elements_text($3::text::jsonb)))
    and (jsonb_array_length($4::text::jsonb) = 0 or ${alias}.bounded_context in (select jsonb_array_elements_text($4::text::jsonb))))`;

const EVENT_COLUMNS = (e: string) =>
  `${e}.global_position::text as global_position, ${e}.transaction_id::text as transaction_id,
   ${e}.aggregate_type, ${e}.aggregate_id, ${e}.aggregate_version::text as aggregate_version,
   ${e}.event_id::text as event_id, ${e}.event_type, ${e}.event_version, ${e}.payload::text as payload,
   ${e}.metadata::text as metadata, ${e}.bounded_context, ${e}.trace_id, ${e}.correlation_id, ${e}.causation_id,
   (extract(epoch from ${e}.created_at) * 1000)::float8 as created_ms`;

/** Maps a row selected with EVENT_COLUMNS. */
export function toEvent(r: Record<string, unknown>): PersistedEvent {
  return {
    globalPosition: BigInt(r.global_position as string),
    transactionId: r.transaction_id as string,
    aggregateType: r.aggregate_type as string,
    aggregateId: r.aggregate_id as string,
    aggregateVersion: Number(r.aggregate_version),
    eventId: r.event_id as string,
    eventType: r.event_type as string,
    eventVersion: Number(r.event_version),
    payload: JSON.parse(r.payload as string),
    metadata: r.metadata == null ? null : JSON.parse(r.metadata as string),
    boundedContext: (r.bounded_context as string | null) ?? null,
    traceId: (r.trace_id as string | null) ?? null,
    correlationId: (r.correlation_id as string | null) ?? null,
    causationId: (r.causation_id as string | null) ?? null,
    createdAt: new Date(Number(r.created_ms)),
  };
}

/** What a probe saw. */
export interface Probe {
  /** Visible positions after the checkpoint, ascending (at most the batch size). */
  readonly positions: bigint[];
  /** Full events for the relevant rows of the contiguous run right after the checkpoint. */
  readonly events: PersistedEvent[];
  /** The statement's snapshot, as text (undefined when nothing was visible). */
  readonly snapshot: string | undefined;
  /** The checkpoint stored for the consumer (undefined when it has no row). */
  readonly stored: bigint | undefined;
}

/**
 * Probes the window after `checkpoint`: positions of up to `limit` visible
 * events, plus full rows only for relevant events before the first hole, in
 * one statement. While blocked on a hole this reads positions only.
 */
export async function probe(ex: Executor, t: T, checkpoint: bigint, limit: number, scope: Scope, consumer: string): Promise<Probe> {
  // One range scan; payloads are sent only for rows the consumer can take now
  // (relevant, before the first hole), so a blocked consumer reads positions.
  // The stored checkpoint comes back even when nothing follows it, so an
  // operator's rewind of an idle consumer is seen at once.
  const rows = await ex.unsafe(
    `/* sluice:probe */ select h.stored, h.snap, w.global_position::text as global_position, w.take,
       w.transaction_id::text as transaction_id, w.aggregate_type, w.aggregate_id, w.aggregate_version::text as aggregate_version,
       w.event_id::text as event_id, w.event_type, w.event_version, w.bounded_context, w.trace_id, w.correlation_id, w.causation_id,
       (extract(epoch from w.created_at) * 1000)::float8 as created_ms,
       case when w.take then w.payload::text end as payload, case when w.take then w.metadata::text end as metadata
     from (select (select last_position::text from ${t.consumerCheckpoints.sql} where consumer_name = $5) as stored,
                  pg_current_snapshot()::text as snap) h
     left join lateral (
       select e.*, (e.global_position = $1::bigint + row_number() over (order by e.global_position)) and ${relevant("e")} as take
       from (select * from ${t.events.sql} where global_position > $1::bigint order by global_position limit $2) e) w on true`,
    [checkpoint.toString(), limit, JSON.stringify(scope.aggregateTypes), JSON.stringify(scope.boundedContexts), consumer],
    prep(ex),
  );
  // Rows arrive in position order (index range scan, window in that order);
  // checked, not trusted: sorted here if a plan ever changes that.
  const list = rows.filter((r) => r.global_position != null).map((r) => ({ r, p: BigInt(r.global_position as string) }));
  let sorted = true;
  for (let i = 1; i < list.length && sorted; i++) sorted = list[i - 1]!.p < list[i]!.p;
  if (!sorted) list.sort((a, b) => (a.p < b.p ? -1 : 1));
  const positions: bigint[] = [];
  const events: PersistedEvent[] = [];
  for (const { r, p } of list) {
    positions.push(p);
    if (r.take) events.push(toEvent(r));
  }
  const stored = rows[0]?.stored as string | null | undefined;
  return {
    positions,
    events,
    snapshot: positions.length > 0 ? (rows[0]!.snap as string) : undefined,
    stored: stored == null ? undefined : BigInt(stored),
  };
}

/** Relevant events in `(after, upTo]`, ascending (used after a hole was passed). */
export async function fetchEvents(ex: Executor, t: T, after: bigint, upTo: bigint, scope: Scope): Promise<PersistedEvent[]> {
  const rows = await ex.unsafe(
    `select ${EVENT_COLUMNS("e")} from ${t.events.sql} e
     where e.global_position > $1::bigint and e.global_position <= $2::bigint and ${relevant("e")}
     order by e.global_position`,
    [after.toString(), upTo.toString(), JSON.stringify(scope.aggregateTypes), JSON.stringify(scope.boundedContexts)], prep(ex));
  return rows.map(toEvent);
}

/** The committed checkpoint of a consumer (0 when it has no row). */
export async function loadCheckpoint(ex: Executor, t: T, consumer: string): Promise<bigint> {
  const [r] = await ex.unsafe(`select last_position::text as p from ${t.consumerCheckpoints.sql} where consumer_name = $1`, [consumer], prep(ex));
  return r ? BigInt(r.p as string) : 0n;
}

/** What the fence found under lock. */
export interface Fence {
  readonly owner: string | null;
  readonly paused: boolean;
  readonly checkpoint: bigint;
}

/**
 * First statement of a batch transaction: locks the consumer's assignment and
 * checkpoint rows (the rebalance waits for this batch) and bounds every
 * statement, and every idle wait between statements, by `statementTimeoutMs`:
 * a frozen process cannot pin its consumer's rows past that (the server ends
 * its session).
 */
export async function fence(ex: Executor, t: T, consumer: string, statementTimeoutMs: number): Promise<Fence | undefined> {
  const [r] = await ex.unsafe(
    `select a.worker_id::text as owner, a.paused, c.last_position::text as cp,
            set_config('statement_timeout', $2, true) as st,
            set_config('idle_in_transaction_session_timeout', $3, true) as it
     from ${t.consumerAssignments.sql} a join ${t.consumerCheckpoints.sql} c on c.consumer_name = a.consumer_name
     where a.consumer_name = $1 for update of a, c`,
    // The server's idle limit is a little longer than ours, so our own timeout
    // normally wins and keeps the connection; the server's catches a frozen process.
    [consumer, String(statementTimeoutMs), String(statementTimeoutMs + 1_000)], prep(ex));
  if (!r) return undefined;
  return { owner: (r.owner as string | null) ?? null, paused: r.paused as boolean, checkpoint: BigInt(r.cp as string) };
}

/** One audit row to write with a checkpoint advance. */
export interface GapSkipRecord {
  readonly gapPosition: bigint;
  readonly highestVisible: bigint;
  readonly positions: readonly bigint[];
  readonly reason: PassReason;
  readonly firstSeenAt: number;
}

/**
 * Advances a checkpoint from `from` to `to` only if this worker owns the
 * consumer, it is not paused and the checkpoint still is `from`
 * (compare-and-set, GREATEST kept for parity with the seed); writes the gap
 * audit rows in the same statement. Returns false (and writes nothing) when
 * the fence does not hold.
 */
export async function advance(
  ex: Executor,
  t: T,
  p: { consumer: string; workerId: string; from: bigint; to: bigint; skips: readonly GapSkipRecord[] },
): Promise<{ advanced: boolean; skipIds: string[] }> {
  const skips = p.skips.map((s) => ({
    gap_position: s.gapPosition.toString(),
    highest: s.highestVisible.toString(),
    positions: s.positions.map(String),
    reason: s.reason,
    first_seen_ms: s.firstSeenAt,
  }));
  const [r] = await ex.unsafe(
    `with a as (select 1 from ${t.consumerAssignments.sql} where consumer_name = $1 and worker_id = $2 and not paused),
          u as (update ${t.consumerCheckpoints.sql} set last_position = greatest(last_position, $4::bigint), updated_at = now()
                where consumer_name = $1 and last_position = $3::bigint and exists (select 1 from a) returning 1),
          s as (insert into ${t.consumerGapSkips.sql}
                  (consumer_name, worker_id, gap_position, skip_to_position, highest_visible_position, skipped_positions, reason, first_seen_at)
                select $1, $2, x.gap_position, $4::bigint, x.highest, x.positions, x.reason, to_timestamp(x.first_seen_ms / 1000.0)
                from u, jsonb_to_recordset($5::text::jsonb) as x(gap_position bigint, highest bigint, positions bigint[], reason text, first_seen_ms float8)
                returning id::text as id)
     select (select count(*) from u)::int as advanced, coalesce((select json_agg(id) from s), '[]'::json)::text as ids`,
    [p.consumer, p.workerId, p.from.toString(), p.to.toString(), JSON.stringify(skips)], prep(ex));
  return { advanced: (r!.advanced as number) > 0, skipIds: JSON.parse(r!.ids as string) as string[] };
}

/** Positions among the watched ranges that are now visible (late commits). */
export async function findLate(ex: Executor, t: T, ranges: readonly { from: bigint; to: bigint }[]): Promise<bigint[]> {
  if (ranges.length === 0) return [];
  const rows = await ex.unsafe(
    `select e.global_position::text as p from ${t.events.sql} e
     join jsonb_to_recordset($1::text::jsonb) as r(a bigint, b bigint) on e.global_position between r.a and r.b order by 1`,
    [JSON.stringify(ranges.map((r) => ({ a: r.from.toString(), b: r.to.toString() })))], prep(ex));
  return rows.map((r) => BigInt(r.p as string));
}

/** Appends late positions to a gap-skip audit row. */
export async function recordLate(ex: Executor, t: T, skipId: string, positions: readonly bigint[]): Promise<void> {
  await ex.unsafe(
    `update ${t.consumerGapSkips.sql} set late_positions = late_positions
       || array(select x::bigint from jsonb_array_elements_text($2::text::jsonb) x) where id = $1::bigint`,
    [skipId, JSON.stringify(positions.map(String))], prep(ex));
}

/** The highest visible position (0 when empty) and the snapshot's xmax. */
export async function readHead(ex: Executor, t: T): Promise<{ head: bigint; xmax: bigint }> {
  const [r] = await ex.unsafe(
    `select coalesce((select max(global_position) from ${t.events.sql}), 0)::text as head,
            pg_snapshot_xmax(pg_current_snapshot())::text as xmax`, [], prep(ex));
  return { head: BigInt(r!.head as string), xmax: BigInt(r!.xmax as string) };
}

/** Checkpoints of the named consumers: paused ones are left out, unknown ones are absent. */
export async function checkpointsOf(ex: Executor, t: T, consumers: readonly string[]): Promise<{ checkpoints: Map<string, bigint>; paused: Set<string> }> {
  const rows = await ex.unsafe(
    `select a.consumer_name as name, coalesce(c.last_position, 0)::text as p, a.paused from ${t.consumerAssignments.sql} a
     left join ${t.consumerCheckpoints.sql} c on c.consumer_name = a.consumer_name
     where a.consumer_name in (select jsonb_array_elements_text($1::text::jsonb))`,
    [JSON.stringify(consumers)], prep(ex));
  return {
    checkpoints: new Map(rows.filter((r) => !r.paused).map((r) => [r.name as string, BigInt(r.p as string)])),
    paused: new Set(rows.filter((r) => r.paused).map((r) => r.name as string)),
  };
}

/**
 * Ids of transactions running in other databases of the server (they cannot
 * write our events, yet appear in every snapshot). Sessions whose details the
 * role may not see show no xid and are left in: conservative.
 */
export async function foreignXids(ex: Executor): Promise<Set<bigint>> {
  const rows = await ex.unsafe(
    `select backend_xid::text as x from pg_stat_activity where datname is distinct from current_database() and backend_xid is not null
     union all
     select transaction::text from pg_prepared_xacts where database <> current_database()`,
    [],
    prep(ex),
  );
  return new Set(rows.map((r) => BigInt(r.x as string)));
}
