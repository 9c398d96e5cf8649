/**
 * Test databases: each test file gets a fresh database cloned from a migrated
 * template (CREATE DATABASE ... TEMPLATE is a file copy: fast), and drops it
 * afterwards. The server is DATABASE_URL, or 127.0.0.1:5432; `npm test`
 * starts an embedded PostgreSQL and sets DATABASE_URL when neither answers.
 */
import { createHash, randomUUID } from "node:crypto";
import postgres from "postgres";
import { migrate } from "../../src/db/migrate.ts";
import { MIGRATIONS } from "../../src/db/migrations.gen.ts";
import type { TableNamesInput } from "../../src/db/names.ts";

/** The admin connection string (a database we never drop). */
export function adminUrl(): string {
  return process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
}

/** `url` with its database replaced. */
export function urlFor(database: string, base: string = adminUrl()): string {
  const u = new URL(base);
  u.pathname = `/${database}`;
  return u.toString();
}

const quiet = { onnotice: () => {}, max: 4, idle_timeout: 5 } as const;

/** A postgres.js client for `url` that does not print notices. */
// deno-lint-ignore no-explicit-any
export function connect(url: string, options: postgres.Options<any> = {}): postgres.Sql {
  return postgres(url, { ...quiet, ...options });
}

const templateName = `sluice_tpl_${createHash("sha256").update(MIGRATIONS.map((m) => m.hash).join()).digest("hex").slice(0, 12)}`;

async function withAdmin<T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const admin = connect(adminUrl(), { max: 1 });
  try {
    return await fn(admin);
  } finally {
    await admin.end({ timeout: 5 });
  }
}

export interface TestDatabase {
  readonly name: string;
  readonly url: string;
  /** A client on the database (closed by drop). */
  readonly sql: postgres.Sql;
  /** Closes every client made with `client()` and drops the database. */
  drop(): Promise<void>;
  /** Another client on the database, closed by drop(). */
  // deno-lint-ignore no-explicit-any
  client(options?: postgres.Options<any>): postgres.Sql;
}

/**
 * A fresh database. `migrated: false` gives an empty one; `tables` migrates
 * other names on top of the default ones.
 */
export async function createTestDatabase(
  label: string,
  options: { migrated?: boolean; tables?: TableNamesInput } = {},
): Promise<TestDatabase> {
  const name = `sluice_t_${label.replace(/[^a-z0-9_]/gi, "_").toLowerCase().slice(0, 30)}_${randomUUID().slice(0, 8)}`;
  await withAdmin(async (admin) => {
    // One process builds the template; the lock serialises the copies too
    // (CREATE DATABASE fails while another session is connected to the source).
    await admin`select pg_advisory_lock(hashtext(${templateName}))`;
    try {
      if (options.migrated !== false) {
        const [exists] = await admin`select 1 from pg_database where datname = ${templateName}`;
        if (!exists) {
          const building = `${templateName}_build_${process.pid}`;
          await admin.unsafe(`drop database if exists "${building}"`);
          await admin.unsafe(`create database "${building}"`);
          const t = connect(urlFor(building), { max: 1 });
          try {
            await migrate(t, { logger: silent });
          } finally {
            await t.end({ timeout: 5 });
          }
          await admin.unsafe(`alter database "${building}" rename to "${templateName}"`);
        }
        await admin.unsafe(`create database "${name}" template "${templateName}"`);
      } else {
        await admin.unsafe(`create database "${name}"`);
      }
    } finally {
      await admin`select pg_advisory_unlock(hashtext(${templateName}))`;
    }
  });
  const url = urlFor(name);
  const clients: postgres.Sql[] = [];
  // deno-lint-ignore no-explicit-any
  const client = (o: postgres.Options<any> = {}) => {
    const c = connect(url, o);
    clients.push(c);
    return c;
  };
  const sql = client();
  if (options.tables) await migrate(sql, { tables: options.tables, logger: silent });
  return {
    name,
    url,
    sql,
    client,
    async drop() {
      await Promise.all(clients.map((c) => c.end({ timeout: 5 }).catch(() => {})));
      if (process.env.SLUICE_KEEP_DB) return;
      await withAdmin(async (admin) => {
        await admin.unsafe(`drop database if exists "${name}" with (force)`);
      });
    },
  };
}

const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** Polls `check` every `everyMs` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  { timeoutMs = 15_000, everyMs = 25 }: { timeoutMs?: number; everyMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const r = await check();
      if (r) return r as T;
      last = r;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what} (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Asserts that `check` stays truthy for `forMs` (a "nothing happens" claim
 * held for a while, not checked once).
 */
export async function holds(what: string, check: () => Promise<boolean> | boolean, forMs: number, everyMs = 25): Promise<void> {
  const until = Date.now() + forMs;
  while (Date.now() < until) {
    if (!(await check())) throw new Error(`Expected ${what} to hold for ${forMs} ms, but it stopped holding`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
