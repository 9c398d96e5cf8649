#!/usr/bin/env node
/**
 * The `sluice` command line. Runs on Node 20+ (built, as `dist/cli/main.js`,
 * or unbuilt with `node --import tsx src/cli/main.ts`), Bun and Deno
 * (`deno run -A src/cli/main.ts`).
 *
 *   sluice migrate [--verify] [options]
 *   sluice generate --out DIR [options]
 *   sluice status [--json] [--watch] [options]
 *   sluice rewind <consumer> --to POSITION | --to-start [options]
 *   sluice pause <consumer> / sluice resume <consumer> [options]
 *   sluice gaps [--consumer NAME] [--limit N] [--json] [options]
 *   sluice <command> --help
 *
 * Exit codes: 0 success, 1 failure, 2 usage error.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { commandHelp, EXIT, EXIT_CODES_HELP, HELP_OPTION, type Io, parseCommandLine, UsageError } from "./args.ts";
import { COMMANDS, findCommand } from "./commands/mod.ts";

/** `sluice --help`. */
export function topLevelHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    "Usage: sluice <command> [options]",
    "",
    "Commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    "",
    "Options:",
    "  -h, --help     Show this help (or `sluice <command> --help`)",
    "  -v, --version  Print the version",
    "",
    "Connection: --database-url, else the --config file's databaseUrl, else DATABASE_URL,",
    "else the PG* variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE).",
    "",
    EXIT_CODES_HELP,
    "",
  ].join("\n");
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string };
    return pkg.version ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** Runs the CLI on `argv` (without the runtime and script). Resolves to the exit code; never throws. */
export async function main(argv: readonly string[], io: Io): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    io.err(topLevelHelp());
    return EXIT.usage;
  }
  if (first === "--help" || first === "-h" || first === "help") {
    const cmd = first === "help" && rest[0] !== undefined ? findCommand(rest[0]) : undefined;
    if (first === "help" && rest[0] !== undefined && cmd === undefined) return unknownCommand(rest[0], io);
    io.out(cmd ? commandHelp(cmd) : topLevelHelp());
    return EXIT.ok;
  }
  if (first === "--version" || first === "-v") {
    io.out(`sluice ${version()}\n`);
    return EXIT.ok;
  }
  const cmd = findCommand(first);
  if (cmd === undefined) return unknownCommand(first, io);
  // Help wins over any other mistake on the line (flags after "--" are not flags).
  const flags = rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
  if (flags.includes("--help") || flags.includes("-h")) {
    io.out(commandHelp(cmd));
    return EXIT.ok;
  }
  try {
    const { values, positionals } = parseCommandLine(rest, { ...cmd.options, ...HELP_OPTION }, cmd.arguments ?? []);
    return await cmd.run(values, io, positionals);
  } catch (e) {
    return report(cmd.name, e, io);
  }
}

function unknownCommand(name: string, io: Io): number {
  const hint = name.startsWith("-") ? `Unknown option '${name}'` : `Unknown command "${name}"`;
  io.err(`sluice: USAGE: ${hint}\nRun "sluice --help" for the list of commands.\n`);
  return EXIT.usage;
}

function report(command: string, e: unknown, io: Io): number {
  const err = e as { code?: unknown; message?: unknown; exitCode?: unknown };
  const code = typeof err.code === "string" ? err.code : "ERROR";
  const message = typeof err.message === "string" ? err.message : String(e);
  if (e instanceof UsageError) {
    if (code !== "USAGE") {
      io.err(`sluice ${command}: ${code}: ${message}\n`);
      return EXIT.usage;
    }
    io.err(`sluice ${command}: ${code}: ${message}\nRun "sluice ${command} --help" for usage.\n`);
    return EXIT.usage;
  }
  // An error without a code is a bug: keep its stack.
  const stack = code === "ERROR" && e instanceof Error && e.stack ? `\n${e.stack}` : "";
  io.err(`sluice ${command}: ${code}: ${message}${stack}\n`);
  return typeof err.exitCode === "number" ? err.exitCode : EXIT.failure;
}

const io: Io = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
  env: process.env,
  cwd: process.cwd(),
};
process.exitCode = await main(process.argv.slice(2), io);
