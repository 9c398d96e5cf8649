/** Test helpers that append events the way the store does (transaction id first). */
import type postgres from "postgres";

export interface RawEvent {
  aggregateType?: string;
  aggregateId?: string;
  eventType?: string;
  boundedContext?: string | null;
  payload?: unknown;
}

let seq = 0;

/** Appends events in one transaction inside `tx` (caller commits). Returns their positions. */
export async function insertEvents(tx: postgres.TransactionSql | postgres.Sql, events: RawEvent[], schema = "sluice"): Promise<bigint[]> {
  await tx`select pg_current_xact_id()`;
  const out: bigint[] = [];
  for (const e of events) {
    const id = e.aggregateId ?? `agg-${process.pid}-${++seq}`;
    const [r] = await tx.unsafe(
      `insert into "${schema}".events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload, bounded_context)
       values ($1, $2, 1, gen_random_uuid(), $3, $4::text::jsonb, $5) returning global_position::text as p`,
      [e.aggregateType ?? "Thing", id, e.eventType ?? "Happened", JSON.stringify(e.payload ?? { n: seq }), e.boundedContext ?? null],
    );
    out.push(BigInt(r!.p as string));
  }
  return out;
}

/** Appends and commits `n` events (or the given ones), one transaction. */
export async function append(sql: postgres.Sql, events: RawEvent[] | number, schema = "sluice"): Promise<bigint[]> {
  const list = typeof events === "number" ? Array.from({ length: events }, () => ({})) : events;
  return (await sql.begin((tx) => insertEvents(tx, list, schema))) as bigint[];
}

/**
 * Appends inside a transaction that stays open until `commit()` or
 * `rollback()`: a hole for everyone else meanwhile.
 */
export async function holdAppend(sql: postgres.Sql, events: RawEvent[] | number = 1): Promise<{
  positions: bigint[];
  commit(): Promise<void>;
  rollback(): Promise<void>;
}> {
  const reserved = await sql.reserve();
  await reserved`begin`;
  const list = typeof events === "number" ? Array.from({ length: events }, () => ({})) : events;
  const positions = await insertEvents(reserved, list);
  let done = false;
  const end = async (cmd: "commit" | "rollback") => {
    if (done) return;
    done = true;
    await reserved.unsafe(cmd);
    reserved.release();
  };
  return { positions, commit: () => end("commit"), rollback: () => end("rollback") };
}

/** Highest visible position. */
export async function head(sql: postgres.Sql, schema = "sluice"): Promise<bigint> {
  const [r] = await sql.unsafe(`select coalesce(max(global_position), 0)::text as p from "${schema}".events`);
  return BigInt(r!.p as string);
}
