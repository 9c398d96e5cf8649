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

/**
 * An event's columns, in the order `toEvent` reads them. Rows travel as
 * arrays (postgres.js `.values()`): no property stores per column. The
 * probe replaces the payload and metadata columns for scoped consumers (sent
 * only for events in scope).
 */
const EVENT_COLUMNS = (e: string, payload = `${e}.payload::text, ${e}.metadata::text`) =>
  `${e}.global_position::text, ${e}.transaction_id::text, ${e}.aggregate_type, ${e}.aggregate_id,
   ${e}.aggregate_version::text, ${e}.event_id::text, ${e}.event_type, ${e}.event_version,
   ${e}.bounded_context, ${e}.trace_id, ${e}.correlation_id, ${e}.causation_id,
   date_part('epoch', ${e}.created_at) * 1000, ${payload}`;
const EVENT_COLUMN_COUNT = 15;

/** Maps an array row whose event columns (EVENT_COLUMNS) start at `at`; `position`: the first of them, already parsed. */
export function toEvent(r: readonly unknown[], at: number, position?: bigint): PersistedEvent {
  const metadata = r[at + 14] as string | null;
  return {
    globalPosition: position ?? BigInt(r[at] as string),
    transactionId: r[at + 1] as string,
    aggregateType: r[at + 2] as string,
    aggregateId: r[at + 3] as string,
    aggregateVersion: Number(r[at + 4]),
    eventId: r[at + 5] as string,
    eventType: r[at + 6] as string,
    eventVersion: Number(r[at + 7]),
    boundedContext: (r[at + 8] as string | null) ?? null,
    traceId: (r[at + 9] as string | null) ?? null,
    correlationId: (r[at + 10] as string | null) ?? null,
    causationId: (r[at + 11] as string | null) ?? null,
    createdAt: new Date(Number(r[at + 12])),
    payload: JSON.parse(r[at + 13] as string),
    metadata: metadata == null ? null : JSON.parse(metadata),
  };
}

/** What a probe saw. */
export interface Probe {
  /** Visible positions after the checkpoint, ascending (at most the batch size). */
  readonly positions: bigint[];
  /**
   * Relevant events among `positions`: every one of them when `complete`,
   * none in a positions-only probe.
   */
  readonly events: PersistedEvent[];
  /** True when `events` holds every relevant visible event of the window. */
  readonly complete: boolean;
  /** The statement's snapshot, as text (undefined when nothing was visible). */
  readonly snapshot: string | undefined;
  /** The checkpoint stored for the consumer (undefined when it has no row). */
  readonly stored: bigint | undefined;
}

/** What a probe reads: whole rows (the next batch) or positions only (waiting on a hole). */
export type ProbeMode = "rows" | "positions";

// Statement texts per deployment, scope shape and mode: the same text each
// time, so postgres.js prepares each once per connection.
const probeTexts = new WeakMap<T, Map<string, string>>();

/** Leading columns of a probe's rows: the header's, null in event rows. */
const lead = (fenced: boolean): number => (fenced ? 4 : 2);

function probeText(t: T, scope: Scope, mode: ProbeMode, limit: number, fenceMs: number | undefined): string {
  const key = `${mode}:${limit}:${fenceMs}:${scope.aggregateTypes.length > 0}:${scope.boundedContexts.length > 0}`;
  let texts = probeTexts.get(t);
  if (!texts) probeTexts.set(t, (texts = new Map()));
  let text = texts.get(key);
  if (text !== undefined) return text;
  // Scope filters, each only when it lists something (an empty list takes
  // every event and costs nothing per row).
  const filters: string[] = [];
  if (scope.aggregateTypes.length > 0) filters.push(`e.aggregate_type in (select jsonb_array_elements_text($3::text::jsonb))`);
  if (scope.boundedContexts.length > 0) {
    filters.push(`e.bounded_context in (select jsonb_array_elements_text($${filters.length + 3}::text::jsonb))`);
  }
  const rel = filters.length > 0 ? filters.join(" and ") : undefined;
  // Row layout: the lead (stored, snap, and when fenced owner and paused),
  // [rel], then the event columns (or only the position). The first row is a
  // header with the lead, so it is sent once and comes back when nothing
  // follows the checkpoint; the rest is one index range scan in position
  // order. One statement: the header and the rows share its snapshot.
  const columns = mode === "positions"
    ? `e.global_position::text`
    : `${rel ? `${rel}, ` : ""}${EVENT_COLUMNS("e", rel ? `case when ${rel} then e.payload::text end, case when ${rel} then e.metadata::text end` : undefined)}`;
  const width = mode === "positions" ? 1 : EVENT_COLUMN_COUNT + (rel ? 1 : 0);
  const fenced = fenceMs !== undefined;
  // Fenced: the fence (see `fence`) runs in the same statement, so its row
  // locks are taken before the rows are read and the stored checkpoint is the
  // locked one. The timeouts are validated integers, in the text like the limit.
  const header = fenced
    ? `with f as materialized (select c.last_position::text as cp, a.worker_id::text as owner, a.paused::text as paused,
            set_config('statement_timeout', '${fenceMs}', true) as st,
            set_config('idle_in_transaction_session_timeout', '${fenceMs + 1_000}', true) as it
          from ${t.consumerAssignments.sql} a join ${t.consumerCheckpoints.sql} c on c.consumer_name = a.consumer_name
          where a.consumer_name = $2 for update of a, c)
     select (select cp from f), pg_current_snapshot()::text, (select owner from f),
            (select paused || left(st, 0) || left(it, 0) from f)`
    : `select (select last_position::text from ${t.consumerCheckpoints.sql} where consumer_name = $2), pg_current_snapshot()::text`;
  // The limit is part of the text (a validated integer): with `limit $n`
  // PostgreSQL's generic plan assumes a tenth of the table, so it plans the
  // probe anew at every execution (about 0.2 ms); with a constant it keeps
  // the generic plan.
  text = `/* sluice:probe */${fenced ? " /* fenced */" : ""} ${header}${", null".repeat(width)}
     union all
     (select ${"null, ".repeat(lead(fenced))}${columns} from ${t.events.sql} e
      where e.global_position > $1::bigint order by e.global_position limit ${limit})`;
  texts.set(key, text);
  return text;
}

/**
 * Probes the window after `checkpoint`, in one statement: the positions of up
 * to `limit` visible events with their snapshot and the consumer's stored
 * checkpoint, and, in `rows` mode, every relevant event of the window (the
 * caller keeps those up to where it may advance). A consumer waiting on a
 * hole probes in `positions` mode: an index-only read, no payloads.
 */
export async function probe(
  ex: Executor,
  t: T,
  checkpoint: bigint,
  limit: number,
  scope: Scope,
  consumer: string,
  mode: ProbeMode = "rows",
): Promise<Probe> {
  return (await probeWith(ex, t, { checkpoint, limit, scope, consumer, mode, fenceMs: undefined })).probe;
}

/**
 * The fence (see `fence`) and a `rows` probe in one statement, inside a batch
 * transaction: the consumer's rows are locked before the window is read, and
 * `stored` is the locked checkpoint. One round trip fewer than a probe
 * followed by a fence (a consumer woken from idle).
 */
export async function fencedProbe(
  tx: Executor,
  t: T,
  p: { checkpoint: bigint; limit: number; scope: Scope; consumer: string; statementTimeoutMs: number },
): Promise<{ probe: Probe; fence: Fence | undefined }> {
  if (!Number.isSafeInteger(p.statementTimeoutMs) || p.statementTimeoutMs < 0) {
    throw new RangeError(`fencedProbe: statementTimeoutMs must be a non-negative integer, got ${p.statementTimeoutMs}`);
  }
  const r = await probeWith(tx, t, { ...p, mode: "rows", fenceMs: p.statementTimeoutMs });
  return { probe: r.probe, fence: r.fence };
}

async function probeWith(
  ex: Executor,
  t: T,
  p: { checkpoint: bigint; limit: number; scope: Scope; consumer: string; mode: ProbeMode; fenceMs: number | undefined },
): Promise<{ probe: Probe; fence: Fence | undefined }> {
  const { limit, scope, mode } = p;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`probe: limit must be a positive integer, got ${limit}`);
  const params: unknown[] = [p.checkpoint.toString(), p.consumer];
  if (scope.aggregateTypes.length > 0) params.push(JSON.stringify(scope.aggregateTypes));
  if (scope.boundedContexts.length > 0) params.push(JSON.stringify(scope.boundedContexts));
  const scoped = params.length > 2;
  const fenced = p.fenceMs !== undefined;
  const relAt = lead(fenced);
  const at = relAt + (scoped ? 1 : 0); // the position's column
  const rows = (await ex.unsafe(probeText(t, scope, mode, limit, p.fenceMs), params as never[], prep(ex)).values()) as unknown[][];
  const positions: bigint[] = [];
  const events: PersistedEvent[] = [];
  let header: unknown[] | undefined;
  // Rows arrive in position order (one index range scan after the header);
  // checked, not trusted: sorted here if a plan ever changes that.
  let sorted = true;
  for (const r of rows) {
    if (r[at] == null) {
      header = r;
      continue;
    }
    const pos = BigInt(r[at] as string);
    if (positions.length > 0 && positions[positions.length - 1]! >= pos) sorted = false;
    positions.push(pos);
    // Out of scope (`rel` false or null): a position, no event.
    if (mode === "rows" && (!scoped || r[relAt] === true)) events.push(toEvent(r, at, pos));
  }
  if (!sorted) {
    positions.sort((a, b) => (a < b ? -1 : 1));
    events.sort((a, b) => (a.globalPosition < b.globalPosition ? -1 : 1));
  }
  const stored = header?.[0] as string | null | undefined;
  const probe: Probe = {
    positions,
    events,
    complete: mode === "rows",
    snapshot: positions.length > 0 ? (header?.[1] as string) : undefined,
    stored: stored == null ? undefined : BigInt(stored),
  };
  // No fence row: the consumer has no assignment or no checkpoint row.
  const fence = fenced && stored != null
    ? { owner: (header![2] as string | null) ?? null, paused: header![3] === "true", checkpoint: BigInt(stored) }
    : undefined;
  return { probe, fence };
}

/**
 * The relevant events in `(from, upTo]`: from the probe when it read them all,
 * else from the table (after a positions-only probe). `upTo` is one of the
 * probe's positions.
 */
export async function eventsUpTo(ex: Executor, t: T, pr: Probe, from: bigint, upTo: bigint, scope: Scope): Promise<PersistedEvent[]> {
  if (pr.complete) return pr.events.filter((e) => e.globalPosition <= upTo);
  return await fetchEvents(ex, t, from, upTo, scope);
}

/** Relevant events in `(after, upTo]`, ascending (after a positions-only probe). */
export async function fetchEvents(ex: Executor, t: T, after: bigint, upTo: bigint, scope: Scope): Promise<PersistedEvent[]> {
  const rows = await ex.unsafe(
    `select ${EVENT_COLUMNS("e")} from ${t.events.sql} e
     where e.global_position > $1::bigint and e.global_position <= $2::bigint and ${relevant("e")}
     order by e.global_position`,
    [after.toString(), upTo.toString(), JSON.stringify(scope.aggregateTypes), JSON.stringify(scope.boundedContexts)], prep(ex)).values();
  return (rows as unknown[][]).map((r) => toEvent(r, 0));
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

/** Starts the message of the error a strict `advance` raises when its fence does not hold. */
export const FENCE_LOST_MARK = "sluice: checkpoint fence lost";

/** True for the error a strict `advance` raises when its fence does not hold. */
export function isFenceLost(e: unknown): boolean {
  return e instanceof Error && (e as { code?: unknown }).code === "22P02" && e.message.includes(FENCE_LOST_MARK);
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
 * audit rows in the same statement. When the fence does not hold it writes
 * nothing and returns false, or, with `mustAdvance`, fails with SQLSTATE
 * 22P02 and a message starting with `FENCE_LOST_MARK`: the transaction is then
 * aborted, so a COMMIT already sent behind it rolls everything back.
 */
export async function advance(
  ex: Executor,
  t: T,
  p: { consumer: string; workerId: string; from: bigint; to: bigint; skips: readonly GapSkipRecord[]; mustAdvance?: boolean },
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
     select (select count(*) from u)::int as advanced, coalesce((select json_agg(id) from s), '[]'::json)::text as ids${
      // Plain SQL cannot raise: a failed cast does, only when evaluated, and
      // the subquery keeps the planner from folding it.
      p.mustAdvance ? `, case when not exists (select 1 from u) then ('${FENCE_LOST_MARK} ' || (select count(*) from u))::int end as fence` : ""}`,
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
