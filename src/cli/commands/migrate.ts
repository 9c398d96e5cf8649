/**
 * `sluice migrate`: applies the embedded migrations, or with `--verify`
 * only checks that every table, column and index exists.
 *
 * @module
 */
import { migrate, verifySchema } from "../../db/migrate.ts";
import { DEFAULT_TABLE_NAMES, type ResolvedTableNames, TABLE_KEYS } from "../../db/names.ts";
import { silentLogger } from "../../logger.ts";
import { type Command, CONFIG_OPTION, DATABASE_OPTION, EXIT, type Io, type ParsedValues, TABLE_OPTIONS } from "../args.ts";
import { configFrom, connect, databaseUrlFrom, tablesFrom } from "../settings.ts";

/** The `migrate` command. */
export const migrateCommand: Command = {
  name: "migrate",
  summary: "Create or update the sluice tables (--verify: only check them)",
  usage: "[--database-url URL] [--schema NAME] [--<table>-table [SCHEMA.]NAME ...] [--verify] [--config FILE]",
  description: [
    "Applies every embedded migration not yet applied for these table names, in one",
    "transaction under an advisory lock: running it twice, or from several processes",
    "at once, is safe. With --verify nothing is changed: it lists every missing table,",
    "column or index and exits 1 when something is missing.",
  ].join("\n"),
  options: {
    ...DATABASE_OPTION,
    ...TABLE_OPTIONS,
    verify: { type: "boolean", description: "Only check the schema; exit 1 and list what is missing" },
    ...CONFIG_OPTION,
  },
  run: runMigrate,
};

async function runMigrate(values: ParsedValues, io: Io): Promise<number> {
  const config = configFrom(values, io);
  const { input, names } = tablesFrom(values, config);
  const { url } = databaseUrlFrom(values, config, io);
  const where = describeTables(names);
  const sql = await connect(url);
  try {
    if (values.verify === true) {
      const r = await verifySchema(sql, { tables: input, logger: silentLogger });
      if (r.ok) {
        io.out(`Schema OK: ${where}\n`);
        return EXIT.ok;
      }
      io.err(
        `sluice migrate: SCHEMA_MISMATCH: ${r.missing.length} missing (run "sluice migrate" to create them):\n` +
          r.missing.map((m) => `  - ${m}\n`).join(""),
      );
      return EXIT.failure;
    }
    const { applied } = await migrate(sql, { tables: input, logger: silentLogger });
    io.out(
      applied.length === 0
        ? `Already up to date: ${where}\n`
        : `Applied ${applied.length} migration${applied.length === 1 ? "" : "s"} (${applied.join(", ")}): ${where}\n`,
    );
    return EXIT.ok;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** `schema sluice` when every table has its default name in one schema, else the full list. */
function describeTables(names: ResolvedTableNames): string {
  const schemas = new Set(TABLE_KEYS.map((k) => names[k].schema));
  const renamed = TABLE_KEYS.some((k) => names[k].name !== DEFAULT_TABLE_NAMES[k]);
  if (schemas.size === 1 && !renamed) return `schema ${names.workerNodes.schema}`;
  return TABLE_KEYS.map((k) => `${names[k].schema}.${names[k].name}`).join(", ");
}
