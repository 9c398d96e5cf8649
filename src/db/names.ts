/**
 * Table and channel names: validation, quoting and resolution of the
 * configurable identifiers. Every identifier that reaches SQL text passes
 * through {@link quoteIdent} after {@link assertIdentifier}.
 *
 * @module
 */
import { SluiceError } from "../errors.ts";

/** Default schema that holds every sluice table. */
export const DEFAULT_SCHEMA = "sluice";

/** The logical tables and their default names. */
export const DEFAULT_TABLE_NAMES = {
  workerNodes: "worker_nodes",
  consumerAssignments: "consumer_assignments",
  consumerCheckpoints: "consumer_checkpoints",
  consumerGapSkips: "consumer_gap_skips",
  events: "events",
  aggregateHeads: "aggregate_heads",
} as const;

/** Key of one logical table. */
export type TableKey = keyof typeof DEFAULT_TABLE_NAMES;

/** The keys of every logical table, in creation order. */
export const TABLE_KEYS: readonly TableKey[] = Object.keys(DEFAULT_TABLE_NAMES) as TableKey[];

/**
 * Where the tables live. `schema` applies to every table; a table name of the
 * form `"other_schema.table"` overrides the schema for that one table.
 *
 * @example
 * ```ts
 * const names: TableNamesInput = { schema: "infra", events: "public.events" };
 * ```
 */
export interface TableNamesInput {
  /** Schema of every table without an explicit prefix. @default "sluice" */
  schema?: string;
  /** @default "worker_nodes" */
  workerNodes?: string;
  /** @default "consumer_assignments" */
  consumerAssignments?: string;
  /** @default "consumer_checkpoints" */
  consumerCheckpoints?: string;
  /** @default "consumer_gap_skips" */
  consumerGapSkips?: string;
  /** @default "events" */
  events?: string;
  /** @default "aggregate_heads" */
  aggregateHeads?: string;
}

/** A resolved, validated table name. */
export interface QualifiedName {
  readonly schema: string;
  readonly name: string;
  /** `"schema"."name"`, safe to splice into SQL text. */
  readonly sql: string;
}

/** Every table, resolved. */
export type ResolvedTableNames = { readonly [K in TableKey]: QualifiedName };

// Unquoted-style identifiers only: quoting protects us anyway, but names with
// dots, quotes or spaces are almost always a configuration mistake. The limit
// leaves room for the suffixes of derived index and constraint names inside
// PostgreSQL's 63-byte identifier limit.
const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Longest accepted table name (derived index names add up to 23 bytes). */
export const MAX_TABLE_NAME = 40;

/**
 * Throws `INVALID_IDENTIFIER` unless `value` is a plain SQL identifier
 * (`[A-Za-z_][A-Za-z0-9_]*`, at most `max` bytes).
 */
export function assertIdentifier(field: string, value: unknown, max = 63): string {
  if (typeof value !== "string" || !IDENT.test(value) || value.length > max) {
    throw new SluiceError(
      "INVALID_IDENTIFIER",
      `Invalid ${field}: ${JSON.stringify(value)} must be an SQL identifier ` +
        `(letters, digits and _, not starting with a digit, at most ${max} characters)`,
      { details: { field, value } },
    );
  }
  return value;
}

/** Double-quotes an identifier, doubling embedded quotes. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Splits `"schema.table"` or `"table"` and validates both parts. */
export function qualify(field: string, value: string, defaultSchema: string): QualifiedName {
  if (typeof value !== "string") assertIdentifier(field, value);
  const parts = value.split(".");
  if (parts.length > 2) assertIdentifier(field, value);
  const schema = parts.length === 2 ? assertIdentifier(field, parts[0]) : defaultSchema;
  const name = assertIdentifier(field, parts[parts.length - 1], MAX_TABLE_NAME);
  return { schema, name, sql: `${quoteIdent(schema)}.${quoteIdent(name)}` };
}

/**
 * Resolves and validates table names. Throws `INVALID_IDENTIFIER` naming the
 * offending field, or `INVALID_ARGUMENT` when two tables would collide.
 *
 * @example
 * ```ts
 * resolveTableNames({ workerNodes: "infra.worker_nodes" }).workerNodes.sql; // "infra"."worker_nodes"
 * ```
 */
export function resolveTableNames(input: TableNamesInput = {}): ResolvedTableNames {
  const schema = assertIdentifier("schema", input.schema ?? DEFAULT_SCHEMA);
  const out = {} as Record<TableKey, QualifiedName>;
  const seen = new Map<string, TableKey>();
  for (const key of TABLE_KEYS) {
    const raw = input[key] ?? DEFAULT_TABLE_NAMES[key];
    const q = qualify(key, raw, schema);
    const other = seen.get(q.sql);
    if (other) {
      throw new SluiceError("INVALID_ARGUMENT", `Invalid ${key}: ${q.sql} is also used for ${other}`, {
        details: { field: key },
      });
    }
    seen.set(q.sql, key);
    out[key] = q;
  }
  return out;
}

/** The distinct schemas the tables live in, sorted. */
export function schemasOf(names: ResolvedTableNames): string[] {
  return [...new Set(TABLE_KEYS.map((k) => names[k].schema))].sort();
}

/**
 * A stable text naming one deployment (one set of tables). Lock keys and the
 * migration record are derived from it, so two deployments that share a
 * database never contend.
 */
export function namespaceOf(names: ResolvedTableNames): string {
  return TABLE_KEYS.map((k) => `${names[k].schema}.${names[k].name}`).join(",");
}
