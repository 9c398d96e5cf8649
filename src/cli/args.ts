/**
 * Command-line parsing for the `sluice` CLI: option specs, `parseArgs` from
 * `node:util` (the same in Node 20, Bun and Deno), help text, and the shared
 * flags (connection, config file, table names).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { DEFAULT_SCHEMA, DEFAULT_TABLE_NAMES, type TableKey } from "../db/names.ts";

/** One flag of a command. */
export interface OptionSpec {
  /** `"string"` takes a value, `"boolean"` does not. */
  readonly type: "string" | "boolean";
  /** One-letter alias, without the dash. */
  readonly short?: string;
  /** Placeholder shown in help, such as `URL`. */
  readonly value?: string;
  /** One line of help. */
  readonly description: string;
}

/** The option specs of a command, keyed by long name (without `--`). */
export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

/** Parsed flag values: strings for string options, `true` for booleans, absent when not given. */
export type ParsedValues = Readonly<Record<string, string | boolean | undefined>>;

/** Where a command writes. The CLI passes `process.stdout` / `process.stderr`. */
export interface Io {
  /** Writes to standard output. */
  out(text: string): void;
  /** Writes to standard error. */
  err(text: string): void;
  /** The environment (`DATABASE_URL`, ...). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Directory relative paths resolve against. */
  readonly cwd: string;
}

/** A positional argument of a command (every one is required). */
export interface ArgumentSpec {
  /** Shown in usage and help, such as `consumer`. */
  readonly name: string;
  /** One line of help. */
  readonly description: string;
}

/** One `sluice` sub-command. Add a file in `src/cli/commands/` and list it in the registry. */
export interface Command {
  /** The word after `sluice`. */
  readonly name: string;
  /** One line, shown in `sluice --help`. */
  readonly summary: string;
  /** Usage line(s) after `sluice <name> `, such as `[options]`. */
  readonly usage: string;
  /** Paragraphs shown under the usage line of `sluice <name> --help`. */
  readonly description: string;
  /** Flags (`--help` is added by the CLI). */
  readonly options: OptionSpecs;
  /** Required positional arguments, in order (none when absent). */
  readonly arguments?: readonly ArgumentSpec[];
  /**
   * Runs the command; returns (or resolves to) the exit code. Throw
   * {@link UsageError} for a bad invocation. `args` are the positional
   * arguments, one per {@link Command.arguments} entry.
   */
  run(values: ParsedValues, io: Io, args: readonly string[]): number | Promise<number>;
}

/** Exit codes of the CLI. */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/**
 * An error the CLI reports as `sluice <command>: <code>: <message>` and exits
 * with `exitCode` (1 unless a subclass says otherwise).
 */
export class CliError extends Error {
  /** A stable code printed with the message (`USAGE`, `MISSING_DEPENDENCY`, or a SluiceError code). */
  readonly code: string;
  /** The process exit code. */
  readonly exitCode: number;

  constructor(message: string, code: string, exitCode: number = EXIT.failure, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CliError";
    this.code = code;
    this.exitCode = exitCode;
  }
}

/**
 * A bad invocation: unknown command or flag, missing or invalid value, bad
 * config file. The CLI prints it with a hint to `--help` and exits 2.
 */
export class UsageError extends CliError {
  constructor(message: string, code = "USAGE", options?: { cause?: unknown }) {
    super(message, code, EXIT.usage, options);
    this.name = "UsageError";
  }
}

/** The `--help` / `-h` flag every command has. */
export const HELP_OPTION: OptionSpecs = {
  help: { type: "boolean", short: "h", description: "Show this help and exit" },
};

/**
 * Parses `argv` strictly against `specs` (no positionals). Throws
 * {@link UsageError} for an unknown flag, a missing value or a stray argument.
 */
export function parseFlags(argv: readonly string[], specs: OptionSpecs): ParsedValues {
  return parseCommandLine(argv, specs, []).values;
}

/**
 * Parses `argv` strictly against `specs` and exactly `args.length`
 * positional arguments. Throws {@link UsageError} for an unknown flag, a
 * missing value, a missing argument or a stray one.
 */
export function parseCommandLine(
  argv: readonly string[],
  specs: OptionSpecs,
  args: readonly ArgumentSpec[],
): { values: ParsedValues; positionals: string[] } {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {};
  for (const [name, s] of Object.entries(specs)) {
    options[name] = s.short === undefined ? { type: s.type } : { type: s.type, short: s.short };
  }
  let parsed: { values: ParsedValues; positionals: string[] };
  try {
    const r = parseArgs({ args: [...argv], options, strict: true, allowPositionals: args.length > 0 });
    parsed = { values: r.values as ParsedValues, positionals: r.positionals };
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_")) {
      throw new UsageError((e as Error).message.split("\n")[0]!, "USAGE", { cause: e });
    }
    throw e;
  }
  const missing = args.slice(parsed.positionals.length);
  if (missing.length > 0) throw new UsageError(`Missing required argument <${missing[0]!.name}>`);
  const stray = parsed.positionals[args.length];
  if (stray !== undefined) throw new UsageError(`Unexpected argument '${stray}'`);
  for (const [i, a] of args.entries()) {
    if (parsed.positionals[i]!.length === 0) throw new UsageError(`Argument <${a.name}> must not be empty`);
  }
  return parsed;
}

/** A string flag's value, or `undefined`. Throws {@link UsageError} when given empty. */
export function stringFlag(values: ParsedValues, name: string): string | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v.length === 0) throw new UsageError(`Option '--${name}' must not be empty`);
  return v;
}

/** Renders `sluice <name> --help`. */
export function commandHelp(cmd: Command): string {
  const specs = { ...cmd.options, ...HELP_OPTION };
  const rows = Object.entries(specs).map(([name, s]) => {
    const flag = `${s.short ? `-${s.short}, ` : "    "}--${name}${s.type === "string" ? ` ${s.value ?? "VALUE"}` : ""}`;
    return [flag, s.description] as const;
  });
  const args = (cmd.arguments ?? []).map((a) => [`<${a.name}>`, a.description] as const);
  const width = Math.max(...rows.map(([f]) => f.length), ...args.map(([f]) => f.length)) + 2;
  return [
    `Usage: sluice ${cmd.name} ${cmd.usage}`,
    "",
    cmd.description,
    "",
    ...(args.length > 0 ? ["Arguments:", ...args.map(([f, d]) => `  ${f.padEnd(width)}${d}`), ""] : []),
    "Options:",
    ...rows.map(([f, d]) => `  ${f.padEnd(width)}${d}`),
    "",
    EXIT_CODES_HELP,
    "",
  ].join("\n");
}

/** The exit-code paragraph shared by every help text. */
export const EXIT_CODES_HELP: string = [
  "Exit codes:",
  "  0  success",
  "  1  the command ran and failed (database error, schema incomplete, file not written,",
  "     unknown consumer)",
  "  2  usage error: unknown command or flag, missing or invalid value, bad config file",
].join("\n");

/** Flag name (`events-table`) of each table key, and back. */
export const TABLE_FLAGS: Readonly<Record<TableKey, string>> = {
  workerNodes: "worker-nodes-table",
  consumerAssignments: "consumer-assignments-table",
  consumerCheckpoints: "consumer-checkpoints-table",
  consumerGapSkips: "consumer-gap-skips-table",
  events: "events-table",
  aggregateHeads: "aggregate-heads-table",
};

/** `--schema` and one `--<table>-table` flag per table. */
export const TABLE_OPTIONS: OptionSpecs = {
  schema: { type: "string", value: "NAME", description: `Schema of every table without a schema prefix (default "${DEFAULT_SCHEMA}")` },
  ...Object.fromEntries(
    (Object.keys(TABLE_FLAGS) as TableKey[]).map((k) => [
      TABLE_FLAGS[k],
      { type: "string", value: "NAME", description: `The ${DEFAULT_TABLE_NAMES[k]} table (NAME or SCHEMA.NAME)` },
    ]),
  ),
};

/** `--config FILE`. */
export const CONFIG_OPTION: OptionSpecs = {
  config: { type: "string", value: "FILE", description: "JSON config file (databaseUrl, tables); flags override it" },
};

/** `--database-url URL`. */
export const DATABASE_OPTION: OptionSpecs = {
  "database-url": {
    type: "string",
    value: "URL",
    description: "Connection string (else: config file, DATABASE_URL, PG* variables)",
  },
};
