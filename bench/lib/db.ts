/**
 * Scratch databases for the benchmarks: each scenario creates its own
 * database next to DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
 * migrates it with the package's migrate(), and drops it at the end.
 */
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { migrate } from "../../src/db/migrate.ts";

export const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** The server's admin connection string (a database we never drop). */
export function adminUrl(): string {
  return process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
}

/** `base` with its database replaced. */
export function urlFor(database: string, base: string = adminUrl()): string {
  const u = new URL(base);
  u.pathname = `/${database}`;
  return u.toString();
}

// deno-lint-ignore no-explicit-any
export type Options = postgres.Options<any>;

/** A postgres.js client that does not print notices. */
export function connect(url: string, options: Options = {}): postgres.Sql {
  return postgres(url, { onnotice: () => {}, max: 10, ...options });
}

export interface Scratch {
  readonly name: string;
  readonly url: string;
  /** A small client (max 4) for set-up and checks. */
  readonly sql: postgres.Sql;
  drop(): Promise<void>;
}

/**
 * A fresh, migrated database `sluice_bench_<label>_<random>`. With
 * `existing`, attaches to that database instead (a parent scenario prepared
 * it) and `drop()` only closes the client.
 */
export async function scratch(label: string, existing?: string): Promise<Scratch> {
  if (existing) {
    const sql = connect(existing, { max: 4 });
    return { name: new URL(existing).pathname.slice(1), url: existing, sql, drop: () => sql.end({ timeout: 5 }) };
  }
  const name = `sluice_bench_${label.replace(/[^a-z0-9_]/gi, "_").toLowerCase()}_${randomUUID().slice(0, 8)}`;
  const admin = connect(adminUrl(), { max: 1 });
  try {
    await admin.unsafe(`create database "${name}"`);
  } finally {
    await admin.end({ timeout: 5 });
  }
  const url = urlFor(name);
  const sql = connect(url, { max: 4 });
  let dropped = false;
  const drop = async (): Promise<void> => {
    if (dropped) return;
    dropped = true;
    await sql.end({ timeout: 5 }).catch(() => {});
    if (process.env.SLUICE_BENCH_KEEP_DB) return;
    const a = connect(adminUrl(), { max: 1 });
    try {
      await a.unsafe(`drop database if exists "${name}" with (force)`);
    } finally {
      await a.end({ timeout: 5 });
    }
  };
  try {
    await migrate(sql, { logger: silent });
  } catch (e) {
    await drop();
    throw e;
  }
  return { name, url, sql, drop };
}

/**
 * The JSON payload of fill row `g` (about 200 bytes as text), as an SQL
 * expression over the integer `g`.
 */
const PAYLOAD = `jsonb_build_object(
  'amount', (g % 997) + 1, 'currency', 'EUR', 'account', 'acc-' || (g % 1000), 'sequence', g,
  'note', 'benchmark deposit, reference ' || md5(g::text),
  'tags', jsonb_build_array('bench', 'deposit', 'eur'), 'channel', 'api')`;

/**
 * Appends `n` events in one INSERT ... SELECT generate_series (one
 * transaction, so one transaction_id: fine for a benchmark): `aggregates`
 * aggregates of type Account, interleaved (position p belongs to aggregate
 * p % aggregates), version = p / aggregates + 1, ~200-byte payloads.
 * `schema` selects the tables; `notify` sends a NOTIFY on commit.
 */
export async function fillEvents(
  sql: postgres.Sql,
  n: number,
  o: { aggregates?: number; schema?: string; notify?: string; firstIndex?: number } = {},
): Promise<{ ms: number; head: bigint }> {
  const aggregates = o.aggregates ?? 1000;
  const schema = o.schema ?? "sluice";
  const first = o.firstIndex ?? 0;
  const t0 = performance.now();
  const head = await sql.begin(async (tx) => {
    await tx.unsafe(
      `insert into "${schema}".events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
       select 'Account', 'acc-' || (g % ${aggregates}), (g / ${aggregates}) + 1, gen_random_uuid(), 'Deposited', ${PAYLOAD}
       from generate_series(${first}::int, ${first + n - 1}::int) g order by g`,
    );
    const [r] = await tx.unsafe(`select coalesce(max(global_position), 0)::text as h from "${schema}".events`);
    if (o.notify) await tx.unsafe(`select pg_notify($1, $2)`, [o.notify, r!.h as string]);
    return BigInt(r!.h as string);
  });
  return { ms: performance.now() - t0, head: head as bigint };
}

/** VACUUM ANALYZE the events table and read it once (hint bits set, pages cached). */
export async function settle(sql: postgres.Sql, schema = "sluice"): Promise<void> {
  await sql.unsafe(`vacuum (analyze) "${schema}".events`);
  await sql.unsafe(`select sum(octet_length(payload::text)) from "${schema}".events`);
}

/** Average payload size in bytes (as text). */
export async function payloadBytes(sql: postgres.Sql, schema = "sluice"): Promise<number> {
  const [r] = await sql.unsafe(`select avg(octet_length(payload::text))::float8 as b from (select payload from "${schema}".events limit 1000) x`);
  return Math.round(r!.b as number);
}

/** Highest visible position. */
export async function head(sql: postgres.Sql, schema = "sluice"): Promise<bigint> {
  const [r] = await sql.unsafe(`select coalesce(max(global_position), 0)::text as p from "${schema}".events`);
  return BigInt(r!.p as string);
}

/** Checkpoints of the named consumers. */
export async function checkpoints(sql: postgres.Sql, names: readonly string[], schema = "sluice"): Promise<Map<string, bigint>> {
  const rows = await sql.unsafe(
    `select consumer_name as c, last_position::text as p from "${schema}".consumer_checkpoints
     where consumer_name in (select jsonb_array_elements_text($1::text::jsonb))`,
    [JSON.stringify(names)],
  );
  return new Map(rows.map((r) => [r.c as string, BigInt(r.p as string)]));
}
