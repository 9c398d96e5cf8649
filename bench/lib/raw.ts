/**
 * The hand-written raw postgres.js loops sluice is compared with: no
 * framework, just "read after my checkpoint, handle in a transaction that
 * upserts the checkpoint". They know nothing of gaps, ownership or wakeups
 * beyond what each scenario gives them.
 */
import type postgres from "postgres";

/** A raw row as `select *` returns it with postgres.js defaults (int8 as string, jsonb parsed). */
export interface RawRow {
  global_position: string;
  event_id: string;
  aggregate_id: string;
  aggregate_version: string;
  payload: { amount: number } & Record<string, unknown>;
  [k: string]: unknown;
}

/** Tables the raw loops and the handlers write to (idempotent). */
export async function createBenchTables(sql: postgres.Sql): Promise<void> {
  await sql.unsafe(`
    create table if not exists raw_checkpoints (name text primary key, position bigint not null, updated_at timestamptz not null default now());
    create table if not exists bench_proj (event_id uuid primary key, aggregate_id text not null, version bigint not null, amount int not null);
  `);
}

/** Upserts a raw loop's checkpoint (inside its transaction). */
export async function rawCheckpoint(tx: postgres.TransactionSql, name: string, position: string | bigint): Promise<void> {
  await tx`insert into raw_checkpoints (name, position) values (${name}, ${String(position)})
    on conflict (name) do update set position = excluded.position, updated_at = now()`;
}

/** Loads a raw loop's checkpoint (0 when none). */
export async function rawLoad(sql: postgres.Sql | postgres.TransactionSql, name: string): Promise<bigint> {
  const [r] = await sql`select position::text as p from raw_checkpoints where name = ${name}`;
  return r ? BigInt(r.p as string) : 0n;
}

/** The raw read: the next `limit` events after `after`. */
export async function rawRead(sql: postgres.Sql, after: bigint, limit: number, schema = "sluice"): Promise<RawRow[]> {
  return (await sql.unsafe(
    `select * from "${schema}".events where global_position > $1 order by global_position limit $2`,
    [after.toString(), limit],
    { prepare: true },
  )) as unknown as RawRow[];
}

/** What a catch-up handler gets: one row per event, in order. */
export interface Row {
  readonly eventId: string;
  readonly aggregateId: string;
  readonly version: number | string;
  readonly amount: number;
}

export type HandlerKind = "a" | "b" | "c";

/**
 * The scenario-1 handlers, written once for both sides:
 * - a: nothing;
 * - b: one multi-row `insert ... select from unnest(...)` per batch;
 * - c: one awaited single-row insert per event.
 */
export async function handle(kind: HandlerKind, tx: postgres.TransactionSql, rows: readonly Row[]): Promise<void> {
  if (kind === "a" || rows.length === 0) return;
  if (kind === "b") {
    await tx`insert into bench_proj (event_id, aggregate_id, version, amount)
      select * from unnest(${rows.map((r) => r.eventId)}::uuid[], ${rows.map((r) => r.aggregateId)}::text[],
                           ${rows.map((r) => String(r.version))}::int8[], ${rows.map((r) => String(r.amount))}::int4[])`;
    return;
  }
  for (const r of rows) {
    await tx`insert into bench_proj (event_id, aggregate_id, version, amount)
      values (${r.eventId}, ${r.aggregateId}, ${String(r.version)}, ${r.amount})`;
  }
}

/** Raw rows as handler rows. */
export function rawRows(rows: readonly RawRow[]): Row[] {
  return rows.map((r) => ({ eventId: r.event_id, aggregateId: r.aggregate_id, version: r.aggregate_version, amount: r.payload.amount }));
}

/** Timing of one catch-up: start-up to first batch, first batch to last commit. */
export interface CatchUp {
  /** ms from the start (client ready) to the first batch in hand. */
  readonly startupMs: number;
  /** ms from the first batch in hand to the last commit. */
  readonly ms: number;
  readonly events: number;
  readonly batches: number;
  readonly eventsPerSec: number;
  /** performance.timeOrigin + performance.now() of the first batch and the last commit. */
  readonly firstAt: number;
  readonly lastAt: number;
  /** Monotonic µs (the clock of V8's .cpuprofile) of the start and the last commit. */
  readonly monoStart: number;
  readonly monoEnd: number;
}

export const now = (): number => performance.timeOrigin + performance.now();
/** CLOCK_MONOTONIC in µs, the clock of .cpuprofile timestamps. */
export const mono = (): number => Number(process.hrtime.bigint() / 1000n);

/**
 * The raw catch-up loop: read the next window, then one transaction with the
 * handler and the checkpoint upsert; until `head`. Timed like sluice: from
 * the first window in hand to the last commit.
 */
export async function rawCatchUp(
  sql: postgres.Sql,
  o: { name: string; batchSize: number; head: bigint; kind: HandlerKind; schema?: string; onBatch?: () => void; onEnd?: () => Promise<void> },
): Promise<CatchUp> {
  const start = now();
  const monoStart = mono();
  let cp = await rawLoad(sql, o.name);
  let first = 0;
  let events = 0;
  let batches = 0;
  while (cp < o.head) {
    const rows = await rawRead(sql, cp, o.batchSize, o.schema);
    if (first === 0) first = now();
    if (rows.length === 0) {
      await new Promise((r) => setTimeout(r, 5));
      continue;
    }
    const last = rows.at(-1)!.global_position;
    await sql.begin(async (tx) => {
      await handle(o.kind, tx, rawRows(rows));
      await rawCheckpoint(tx, o.name, last);
    });
    cp = BigInt(last);
    events += rows.length;
    batches++;
    o.onBatch?.();
  }
  const end = now();
  const monoEnd = mono();
  await o.onEnd?.();
  const ms = end - first;
  return { startupMs: first - start, ms, events, batches, eventsPerSec: events / (ms / 1000), firstAt: first, lastAt: end, monoStart, monoEnd };
}

/** A broadcast wake-up with a generation counter (a wake during a read is not lost). */
export class Waker {
  generation = 0;
  #waiters = new Set<() => void>();
  wake(): void {
    this.generation++;
    for (const w of [...this.#waiters]) w();
    this.#waiters.clear();
  }
  /** Waits until the generation differs from `since`, or `ms` passes. */
  wait(since: number, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.generation !== since || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#waiters.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }
}

/**
 * A raw loop that follows the log: read after the checkpoint; when nothing
 * is there, wait for `waker` (notify) or `pollMs` (poll); else handle the
 * rows in one transaction with the checkpoint upsert. `onRead` sees the
 * rows as soon as they are in hand (before the transaction), `onCommit`
 * after it.
 *
 * `gapSafe`: stop at a hole (a missing position below a visible one) and
 * pass it only once every transaction that could have drawn it has ended:
 * the snapshot's xmin has reached the xmax seen when the hole was first seen
 * (the same proof sluice uses, given that appends take their transaction id
 * before drawing a position, but with no minimum age and a conservative
 * "every older transaction ended").
 */
export async function rawFollow(
  sql: postgres.Sql,
  o: {
    name: string;
    batchSize: number;
    kind: HandlerKind;
    schema?: string;
    waker?: Waker;
    pollMs: number;
    signal: AbortSignal;
    gapSafe?: boolean;
    onRead?: (rows: RawRow[]) => void;
    onCommit?: (to: bigint, n: number) => void;
  },
): Promise<void> {
  let cp = await rawLoad(sql, o.name);
  const schema = o.schema ?? "sluice";
  let hole: { at: bigint; xmax: bigint } | undefined;
  while (!o.signal.aborted) {
    const gen = o.waker?.generation ?? 0;
    let rows = o.gapSafe
      ? ((await sql.unsafe(
        `select e.*, pg_snapshot_xmin(x.s)::text as snap_xmin, pg_snapshot_xmax(x.s)::text as snap_xmax
         from "${schema}".events e, (select pg_current_snapshot() as s) x
         where e.global_position > $1 order by e.global_position limit $2`,
        [cp.toString(), o.batchSize],
        { prepare: true },
      )) as unknown as RawRow[])
      : await rawRead(sql, cp, o.batchSize, schema);
    if (o.gapSafe && rows.length > 0) {
      const run = (from: bigint, start: number): number => {
        let end = from;
        let i = start;
        while (i < rows.length && BigInt(rows[i]!.global_position) === end + 1n) end = BigInt(rows[i++]!.global_position);
        return i;
      };
      let n = run(cp, 0);
      if (n < rows.length) {
        const at = n === 0 ? cp + 1n : BigInt(rows[n - 1]!.global_position) + 1n;
        const xmin = BigInt(rows[0]!.snap_xmin as string);
        if (!hole || hole.at !== at) hole = { at, xmax: BigInt(rows[0]!.snap_xmax as string) };
        if (xmin >= hole.xmax) {
          // Proven dead: pass it, and take the run after it.
          n = run(BigInt(rows[n]!.global_position) - 1n, n);
          hole = undefined;
        }
      }
      rows = rows.slice(0, n);
    }
    if (rows.length === 0) {
      if (o.waker) await o.waker.wait(gen, o.pollMs, o.signal);
      else await new Promise((r) => setTimeout(r, o.pollMs));
      continue;
    }
    o.onRead?.(rows);
    const last = rows.at(-1)!.global_position;
    await sql.begin(async (tx) => {
      await handle(o.kind, tx, rawRows(rows));
      await rawCheckpoint(tx, o.name, last);
    });
    cp = BigInt(last);
    o.onCommit?.(cp, rows.length);
  }
}
