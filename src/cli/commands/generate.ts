/**
 * `sluice generate`: writes the plain SQL that creates every sluice table,
 * for teams whose own migration tool applies it.
 *
 * @module
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { renderMigrationScript } from "../../db/migrate.ts";
import { type Command, CliError, CONFIG_OPTION, EXIT, type Io, type ParsedValues, stringFlag, TABLE_OPTIONS, UsageError } from "../args.ts";
import { configFrom, tablesFrom } from "../settings.ts";

/** The `generate` command. */
export const generateCommand: Command = {
  name: "generate",
  summary: "Write the SQL that creates the sluice tables, for your own migration tool",
  usage: "--out DIR [--filename FILE] [--schema NAME] [--<table>-table [SCHEMA.]NAME ...] [--config FILE] [--force]",
  description: [
    "Writes one SQL file that creates every sluice table (and the schemas they live in,",
    "such as infra for --worker-nodes-table infra.worker_nodes) on an empty database.",
    "It needs no database connection. Apply it with your migration tool, or with",
    "psql -v ON_ERROR_STOP=1 -f FILE. The file records its migrations in sluice_migrations,",
    "as \"sluice migrate\" does: a later \"sluice migrate\" applies only newer ones.",
  ].join("\n"),
  options: {
    out: { type: "string", value: "DIR", description: "Directory to write to (created if missing); required" },
    filename: { type: "string", value: "FILE", description: "File name (default YYYYMMDDhhmmss_sluice.sql, UTC)" },
    ...TABLE_OPTIONS,
    ...CONFIG_OPTION,
    force: { type: "boolean", description: "Overwrite the file if it exists" },
  },
  run: runGenerate,
};

/** `YYYYMMDDhhmmss_sluice.sql` for `now`, in UTC. */
export function defaultFilename(now: Date = new Date()): string {
  return `${now.toISOString().replace(/\D/g, "").slice(0, 14)}_sluice.sql`;
}

function runGenerate(values: ParsedValues, io: Io): number {
  const out = stringFlag(values, "out");
  if (out === undefined) throw new UsageError("Missing required option '--out DIR'");
  const filename = stringFlag(values, "filename") ?? defaultFilename();
  if (/[/\\]/.test(filename) || filename === "." || filename === "..") {
    throw new UsageError(`Invalid --filename: ${JSON.stringify(filename)} must be a file name, not a path (use --out for the directory)`);
  }
  const config = configFrom(values, io);
  const { input } = tablesFrom(values, config);
  // Rendered (and so validated) before anything touches the file system.
  const script = renderMigrationScript(input);
  const path = join(out, filename);
  try {
    mkdirSync(resolve(io.cwd, out), { recursive: true });
  } catch (e) {
    throw writeError(`Cannot create directory ${out}`, e);
  }
  try {
    writeFileSync(resolve(io.cwd, path), script, { flag: values.force === true ? "w" : "wx" });
  } catch (e) {
    if ((e as { code?: unknown }).code === "EEXIST") {
      throw new CliError(`${path} already exists (use --force to overwrite it)`, "FILE_EXISTS", EXIT.failure, { cause: e });
    }
    throw writeError(`Cannot write ${path}`, e);
  }
  io.out(`Generated PostgreSQL migration: ${path}\n`);
  return EXIT.ok;
}

function writeError(what: string, e: unknown): CliError {
  const code = (e as { code?: unknown }).code;
  return new CliError(`${what}: ${(e as Error).message}`, typeof code === "string" ? code : "WRITE_FAILED", EXIT.failure, { cause: e });
}
