/**
 * Settings shared by the CLI commands: the `--config` JSON file (validated
 * with valibot), table names merged from the file and the flags, and the
 * database connection.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import * as v from "valibot";
import { parseWith } from "../config.ts";
import { DEFAULT_TABLE_NAMES, resolveTableNames, type ResolvedTableNames, type TableKey, type TableNamesInput } from "../db/names.ts";
import { isSluiceError } from "../errors.ts";
import type { Sql } from "../db/executor.ts";
import { CliError, EXIT, type Io, type ParsedValues, stringFlag, TABLE_FLAGS, UsageError } from "./args.ts";

const name = v.pipe(v.string("must be a string"), v.nonEmpty("must not be empty"));

/** Schema of the `--config` file. Unknown keys are rejected. */
export const ConfigFileSchema = v.strictObject(
  {
    /** Connection string. */
    databaseUrl: v.optional(name),
    /** Table names, as in `TableNamesInput`. */
    tables: v.optional(
      v.strictObject(
        {
          schema: v.optional(name),
          ...(Object.fromEntries((Object.keys(DEFAULT_TABLE_NAMES) as TableKey[]).map((k) => [k, v.optional(name)])) as Record<
            TableKey,
            v.OptionalSchema<typeof name, undefined>
          >),
        },
        "must be an object",
      ),
    ),
  },
  "must be a JSON object",
);

/** The contents of a `--config` file. */
export type ConfigFile = v.InferOutput<typeof ConfigFileSchema>;

/**
 * Reads and validates a config file. Every problem (unreadable, not JSON, an
 * unknown or mistyped field, a bad identifier) is a {@link UsageError} that
 * names the file and the field.
 */
export function loadConfigFile(path: string, cwd: string): ConfigFile {
  const abs = resolve(cwd, path);
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch (e) {
    throw new UsageError(`Cannot read config file ${path}: ${(e as Error).message}`, "CONFIG_INVALID", { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`Config file ${path} is not valid JSON: ${(e as Error).message}`, "CONFIG_INVALID", { cause: e });
  }
  let config: ConfigFile;
  try {
    config = parseWith(ConfigFileSchema, json, `config file ${path}`);
  } catch (e) {
    if (isSluiceError(e)) throw new UsageError(e.message, e.code, { cause: e });
    throw e;
  }
  if (config.tables) {
    try {
      resolveTableNames(config.tables);
    } catch (e) {
      if (!isSluiceError(e)) throw e;
      const field = String(e.details.field ?? "");
      throw new UsageError(
        `Invalid config file ${path}:\n  - tables.${field}: ${e.message.replace(/^Invalid \w+: /, "")}`,
        "CONFIG_INVALID",
        { cause: e },
      );
    }
  }
  return config;
}

/** The config file named by `--config`, or an empty one. */
export function configFrom(values: ParsedValues, io: Io): ConfigFile {
  const path = stringFlag(values, "config");
  return path === undefined ? {} : loadConfigFile(path, io.cwd);
}

/** Table names from the config file, overridden by `--schema` and the `--<table>-table` flags, validated. */
export function tablesFrom(values: ParsedValues, config: ConfigFile): { input: TableNamesInput; names: ResolvedTableNames } {
  const input: Record<string, string> = {};
  const source: Record<string, string> = {};
  for (const [k, val] of Object.entries(config.tables ?? {})) {
    if (val !== undefined) {
      input[k] = val;
      source[k] = `tables.${k} (config file)`;
    }
  }
  const schema = stringFlag(values, "schema");
  if (schema !== undefined) {
    input.schema = schema;
    source.schema = "--schema";
  }
  for (const k of Object.keys(TABLE_FLAGS) as TableKey[]) {
    const val = stringFlag(values, TABLE_FLAGS[k]);
    if (val !== undefined) {
      input[k] = val;
      source[k] = `--${TABLE_FLAGS[k]}`;
    }
  }
  try {
    return { input, names: resolveTableNames(input) };
  } catch (e) {
    if (!isSluiceError(e)) throw e;
    const field = String(e.details.field ?? "");
    const where = source[field] ?? field;
    throw new UsageError(e.message.replace(/^Invalid \w+:/, `Invalid ${where}:`), e.code, { cause: e });
  }
}

/** Where the connection settings come from, for messages. */
export type UrlSource = "--database-url" | "config file" | "DATABASE_URL" | "PG* variables";

/** The connection string: `--database-url`, the config file, `DATABASE_URL`; `undefined` lets postgres.js read PG*. */
export function databaseUrlFrom(values: ParsedValues, config: ConfigFile, io: Io): { url: string | undefined; source: UrlSource } {
  const flag = stringFlag(values, "database-url");
  if (flag !== undefined) return { url: flag, source: "--database-url" };
  if (config.databaseUrl !== undefined) return { url: config.databaseUrl, source: "config file" };
  const env = io.env.DATABASE_URL;
  if (env) return { url: env, source: "DATABASE_URL" };
  return { url: undefined, source: "PG* variables" };
}

/**
 * Opens a one-connection postgres.js client. `postgres` is a peer dependency,
 * loaded only by the commands that need a database.
 */
export async function connect(url: string | undefined): Promise<Sql> {
  const mod = await import("postgres").catch((e: unknown) => {
    throw new CliError(`This command needs the "postgres" package: npm install postgres (${(e as Error).message})`, "MISSING_DEPENDENCY", EXIT.failure, {
      cause: e,
    });
  });
  const options = { max: 1, onnotice: () => {}, connect_timeout: 10 };
  return url === undefined ? mod.default(options) : mod.default(url, options);
}
