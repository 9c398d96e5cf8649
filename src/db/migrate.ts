/**
 * Applies the embedded drizzle-kit migrations for any table names, verifies a
 * database, and renders a plain SQL script for teams without drizzle-kit.
 *
 * @module
 */
import { getTableConfig, type PgTable } from "drizzle-orm/pg-core";
import { SluiceError, wrapDbError } from "../errors.ts";
import { defaultLogger, type Logger } from "../logger.ts";
import { type Executor, inTransaction } from "./executor.ts";
import { MIGRATIONS } from "./migrations.gen.ts";
import {
  DEFAULT_SCHEMA,
  DEFAULT_TABLE_NAMES,
  namespaceOf,
  quoteIdent,
  type ResolvedTableNames,
  resolveTableNames,
  schemasOf,
  TABLE_KEYS,
  type TableKey,
  type TableNamesInput,
} from "./names.ts";
import { defineTables } from "./table-defs.ts";

/** Options of {@link migrate} and {@link verifySchema}. */
export interface MigrateOptions {
  /** Where the tables live (validated). @default schema "sluice", default names */
  tables?: TableNamesInput;
  /** @default LogTape category ["sluice", "migrate"] */
  logger?: Logger;
}

/** What {@link migrate} did. */
export interface MigrateResult {
  /** Tags of the migrations applied by this call (empty when up to date). */
  readonly applied: readonly string[];
}

/** What {@link verifySchema} found. */
export interface VerifyResult {
  /** True when nothing is missing. */
  readonly ok: boolean;
  /** Each missing table, column or index, as `table sluice.events` or `index sluice.events_type_position_idx`. */
  readonly missing: readonly string[];
}

/** Name of the table (in the worker-nodes schema) recording applied migrations. */
export const MIGRATIONS_TABLE = "sluice_migrations";
// One key for every sluice migration in a database: CREATE SCHEMA races even
// between deployments with different table names.
const MIGRATE_LOCK = "sluice:migrate";

/**
 * Rewrites one drizzle-kit statement (written for the default names in schema
 * `sluice`) for `names`. Index and constraint names are `<table>_<suffix>`, so
 * they follow their table. Done in one pass so a new name is never rewritten
 * again.
 */
export function rewriteStatement(statement: string, names: ResolvedTableNames): string {
  const prefixes = TABLE_KEYS.map((k) => [DEFAULT_TABLE_NAMES[k], k] as const).sort((a, b) => b[0].length - a[0].length);
  const owner = (id: string): TableKey | undefined =>
    prefixes.find(([d]) => id === d || id.startsWith(d + "_"))?.[1];
  const rename = (id: string): string => {
    const k = owner(id);
    return k === undefined ? id : names[k].name + id.slice(DEFAULT_TABLE_NAMES[k].length);
  };
  const re = new RegExp(`"${DEFAULT_SCHEMA}"\\."([^"]+)"|"([^"]+)"`, "g");
  return statement
    .replace(/^CREATE SCHEMA[^;]*;?\s*$/m, "")
    .replace(re, (whole, qualified: string | undefined, bare: string | undefined) => {
      if (qualified !== undefined) {
        const k = owner(qualified);
        const schema = k === undefined ? names.workerNodes.schema : names[k].schema;
        return `${quoteIdent(schema)}.${quoteIdent(rename(qualified))}`;
      }
      if (bare !== undefined && owner(bare) !== undefined && bare !== DEFAULT_TABLE_NAMES[owner(bare)!]) {
        return quoteIdent(rename(bare));
      }
      return whole;
    });
}

/** Every statement of every migration, rewritten for `names`, schemas first. */
export function migrationStatements(names: ResolvedTableNames): { tag: string; hash: string; statements: string[] }[] {
  return MIGRATIONS.map((m) => ({
    tag: m.tag,
    hash: m.hash,
    statements: m.statements.map((s) => rewriteStatement(s, names)).filter((s) => s.trim().length > 0),
  }));
}

/** The table recording applied migrations (see MIGRATIONS_TABLE), created if missing. */
function createRecordTable(record: string): string {
  return `CREATE TABLE IF NOT EXISTS ${record} (namespace text NOT NULL, tag text NOT NULL, hash text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (namespace, tag));`;
}

const recordOf = (names: ResolvedTableNames): string => `${quoteIdent(names.workerNodes.schema)}.${quoteIdent(MIGRATIONS_TABLE)}`;
const literal = (s: string): string => `'${s.replaceAll("'", "''")}'`;

function createSchemas(names: ResolvedTableNames): string[] {
  return schemasOf(names).filter((s) => s !== "public").map((s) => `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(s)};`);
}

/**
 * Renders a plain SQL script that creates every table for `tables` on an empty
 * database (schemas included). For teams that run their own migration tool.
 * Like {@link migrate}, it records each migration in `sluice_migrations`, so
 * a later `migrate` on that database applies only newer ones.
 *
 * @example
 * ```ts
 * await Deno.writeTextFile("002_sluice.sql", renderMigrationScript({ workerNodes: "infra.worker_nodes" }));
 * ```
 */
export function renderMigrationScript(tables: TableNamesInput = {}): string {
  const names = resolveTableNames(tables);
  const record = recordOf(names);
  const lines = [
    "-- sluice worker and event store tables",
    ...TABLE_KEYS.map((k) => `--   ${k}: ${names[k].schema}.${names[k].name}`),
    "",
    ...createSchemas(names),
    "",
    `-- applied migrations, as "sluice migrate" records them`,
    createRecordTable(record),
    "",
  ];
  const namespace = namespaceOf(names);
  for (const m of migrationStatements(names)) {
    lines.push(`-- migration ${m.tag}`);
    for (const s of m.statements) lines.push(s.endsWith(";") ? s : s + ";", "");
    lines.push(
      `INSERT INTO ${record} (namespace, tag, hash) VALUES (${literal(namespace)}, ${literal(m.tag)}, ${literal(m.hash)});`,
      "",
    );
  }
  return lines.join("\n");
}

/**
 * Applies every embedded migration not yet applied for these table names, in
 * one transaction under an advisory lock. Idempotent, and safe when several
 * processes call it at once: the others wait, then find nothing to do.
 *
 * @param sql a postgres.js client (or transaction: then the caller commits)
 * @throws SluiceError `INVALID_IDENTIFIER` for a bad name (nothing is sent);
 *   `MIGRATION_FAILED` when a statement fails (nothing is applied)
 *
 * @example
 * ```ts
 * import postgres from "postgres";
 * import { migrate } from "@sluice/worker";
 * const sql = postgres(process.env.DATABASE_URL!);
 * const { applied } = await migrate(sql);            // schema "sluice"
 * await migrate(sql, { tables: { schema: "infra" } }); // another deployment
 * ```
 */
export async function migrate(sql: Executor, options: MigrateOptions = {}): Promise<MigrateResult> {
  const names = resolveTableNames(options.tables);
  const log = options.logger ?? defaultLogger("migrate");
  const namespace = namespaceOf(names);
  const record = recordOf(names);
  const plan = migrationStatements(names);
  let current = "";
  try {
    const applied = await inTransaction(sql, async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtextextended(${MIGRATE_LOCK}, 0))`;
      for (const s of createSchemas(names)) await tx.unsafe(s);
      await tx.unsafe(createRecordTable(record));
      const done = new Set(
        (await tx.unsafe(`SELECT tag FROM ${record} WHERE namespace = $1`, [namespace])).map((r) => r.tag as string),
      );
      const now: string[] = [];
      for (const m of plan) {
        if (done.has(m.tag)) continue;
        for (const s of m.statements) {
          current = `${m.tag}: ${s.slice(0, 120)}`;
          await tx.unsafe(s);
        }
        await tx.unsafe(`INSERT INTO ${record} (namespace, tag, hash) VALUES ($1, $2, $3)`, [namespace, m.tag, m.hash]);
        now.push(m.tag);
      }
      return now;
    });
    if (applied.length > 0) log.info("Applied migrations {applied}", { applied, namespace });
    else log.debug("Migrations up to date", { namespace });
    return { applied };
  } catch (e) {
    throw new SluiceError("MIGRATION_FAILED", `Cannot migrate ${namespace}${current ? ` at ${current}` : ""}: ${
      e instanceof Error ? e.message : String(e)
    }`, { cause: e });
  }
}

/**
 * Checks that every table, column and index sluice needs exists for these
 * names. Read-only.
 *
 * @example
 * ```ts
 * const { ok, missing } = await verifySchema(sql);
 * if (!ok) throw new Error(`run "sluice migrate": missing ${missing.join(", ")}`);
 * ```
 */
export async function verifySchema(sql: Executor, options: MigrateOptions = {}): Promise<VerifyResult> {
  const names = resolveTableNames(options.tables);
  const tables = defineTables(names);
  const schemas = schemasOf(names);
  let cols: { schema: string; table: string; column: string }[];
  let idx: { schema: string; index: string }[];
  try {
    cols = (await sql`select table_schema as schema, table_name as table, column_name as column
      from information_schema.columns where table_schema in ${sql(schemas)}`) as unknown as typeof cols;
    idx = (await sql`select schemaname as schema, indexname as index from pg_indexes
      where schemaname in ${sql(schemas)}`) as unknown as typeof idx;
  } catch (e) {
    throw wrapDbError("verify the schema", e);
  }
  const haveCol = new Set(cols.map((c) => `${c.schema}.${c.table}.${c.column}`));
  const haveTable = new Set(cols.map((c) => `${c.schema}.${c.table}`));
  const haveIdx = new Set(idx.map((i) => `${i.schema}.${i.index}`));
  const missing: string[] = [];
  for (const key of TABLE_KEYS) {
    const { schema, name } = names[key];
    const cfg = getTableConfig(tables[key] as PgTable);
    if (!haveTable.has(`${schema}.${name}`)) {
      missing.push(`table ${schema}.${name}`);
      continue;
    }
    for (const c of cfg.columns) if (!haveCol.has(`${schema}.${name}.${c.name}`)) missing.push(`column ${schema}.${name}.${c.name}`);
    const wanted = [
      ...cfg.indexes.map((i) => i.config.name),
      ...cfg.uniqueConstraints.map((u) => u.name),
      ...cfg.primaryKeys.map((p) => p.name),
    ];
    if (cfg.columns.some((c) => c.primary)) wanted.push(`${name}_pkey`);
    for (const i of wanted) if (i && !haveIdx.has(`${schema}.${i}`)) missing.push(`index ${schema}.${i}`);
  }
  return { ok: missing.length === 0, missing };
}
