/**
 * The registry of `sluice` sub-commands. To add one (status, rewind, pause,
 * resume, gaps, ...): write `src/cli/commands/<name>.ts` exporting a
 * {@link Command}, import it here and append it to {@link COMMANDS}. The
 * order is the order of `sluice --help`.
 *
 * @module
 */
import type { Command } from "../args.ts";
import { gapsCommand } from "./gaps.ts";
import { generateCommand } from "./generate.ts";
import { migrateCommand } from "./migrate.ts";
import { pauseCommand, resumeCommand } from "./pause.ts";
import { rewindCommand } from "./rewind.ts";
import { statusCommand } from "./status.ts";

/** Every sub-command, in help order. */
export const COMMANDS: readonly Command[] = [
  migrateCommand,
  generateCommand,
  statusCommand,
  rewindCommand,
  pauseCommand,
  resumeCommand,
  gapsCommand,
];

/** The command called `name`, if any. */
export function findCommand(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name);
}
