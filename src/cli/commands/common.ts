/**
 * Helpers shared by the operator commands (status, rewind, pause, resume,
 * gaps): the connection/table flags, a connected client for the length of a
 * command, integer flags and plain-text tables.
 *
 * @module
 */
import type { Sql } from "../../db/executor.ts";
import type { TableNamesInput } from "../../db/names.ts";
import { CONFIG_OPTION, DATABASE_OPTION, type Io, type OptionSpecs, type ParsedValues, stringFlag, TABLE_OPTIONS, UsageError } from "../args.ts";
import { configFrom, connect, databaseUrlFrom, tablesFrom } from "../settings.ts";

/** `--database-url`, `--schema`, `--<table>-table`, `--config`. */
export const CONNECTION_OPTIONS: OptionSpecs = { ...DATABASE_OPTION, ...TABLE_OPTIONS, ...CONFIG_OPTION };

/** The usage fragment of {@link CONNECTION_OPTIONS}. */
export const CONNECTION_USAGE = "[--database-url URL] [--schema NAME] [--<table>-table [SCHEMA.]NAME ...] [--config FILE]";

/**
 * Validates the settings (usage errors first, before connecting), opens a
 * one-connection client, runs `fn` and closes the client.
 */
export async function withDatabase<T>(values: ParsedValues, io: Io, fn: (sql: Sql, tables: TableNamesInput) => Promise<T>): Promise<T> {
  const config = configFrom(values, io);
  const { input } = tablesFrom(values, config);
  const { url } = databaseUrlFrom(values, config, io);
  const sql = await connect(url);
  try {
    return await fn(sql, input);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** An integer flag in `[min, max]`, or `fallback`. Throws {@link UsageError} otherwise. */
export function intFlag(values: ParsedValues, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = stringFlag(values, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new UsageError(`Invalid --${name}: ${JSON.stringify(raw)} must be an integer`);
  const n = Number(raw);
  if (n < min || n > max) throw new UsageError(`Invalid --${name}: ${raw} must be between ${min} and ${max}`);
  return n;
}

/** Renders rows as a left-aligned plain-text table with a header row, two spaces between columns. */
export function textTable(headers: readonly string[], rows: readonly (readonly string[])[], indent = "  "): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) => indent + cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ");
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

/** JSON with bigints as strings. */
export function toJson(value: unknown, space?: number): string {
  return JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? v.toString() : v), space);
}
