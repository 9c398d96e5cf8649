/**
 * `sluice rewind <consumer> --to POSITION | --to-start`: moves a consumer's
 * checkpoint, safely while a worker runs it, and records the move.
 *
 * @module
 */
import { rewindConsumer } from "../../admin.ts";
import { type Command, EXIT, type Io, type ParsedValues, stringFlag, UsageError } from "../args.ts";
import { CONNECTION_OPTIONS, CONNECTION_USAGE, intFlag, toJson, withDatabase } from "./common.ts";

/** The `rewind` command. */
export const rewindCommand: Command = {
  name: "rewind",
  summary: "Move a consumer's checkpoint back (re-deliver) or forward (skip)",
  usage: `<consumer> (--to POSITION | --to-start) [--lock-timeout MS] [--json] ${CONNECTION_USAGE}`,
  description: [
    "Sets the consumer's checkpoint to POSITION (0 with --to-start) in one transaction",
    "that locks its assignment and checkpoint rows, as every batch does: it waits for an",
    "open batch to end, and its owner can never commit an older checkpoint over the new",
    "one. The owner reloads the checkpoint at its next batch attempt (when an event past",
    "its old position appears) and continues from it. The move is recorded in the gap",
    "audit with reason \"manual\" (see sluice gaps).",
    "",
    "Moving back re-delivers every event after POSITION: handlers see them again.",
    "Moving forward SKIPS the events up to POSITION: they are never delivered to this",
    "consumer. An unknown consumer is exit 1 (NOT_FOUND).",
  ].join("\n"),
  arguments: [{ name: "consumer", description: "The consumer's name" }],
  options: {
    to: { type: "string", value: "POSITION", description: "The new checkpoint (a global position >= 0)" },
    "to-start": { type: "boolean", description: "The new checkpoint is 0: re-deliver everything" },
    "lock-timeout": { type: "string", value: "MS", description: "Longest wait for an open batch (default 60000), then exit 1 (TIMEOUT)" },
    json: { type: "boolean", description: "Print the result as JSON" },
    ...CONNECTION_OPTIONS,
  },
  run: runRewind,
};

async function runRewind(values: ParsedValues, io: Io, args: readonly string[]): Promise<number> {
  const consumer = args[0]!;
  const to = stringFlag(values, "to");
  const toStart = values["to-start"] === true;
  if ((to === undefined) === !toStart) throw new UsageError("Give exactly one of '--to POSITION' and '--to-start'");
  if (to !== undefined && !/^\d{1,19}$/.test(to)) {
    throw new UsageError(`Invalid --to: ${JSON.stringify(to)} must be a non-negative integer position`);
  }
  const target = toStart ? 0n : BigInt(to!);
  if (target > 9223372036854775807n) throw new UsageError(`Invalid --to: ${to} is larger than a bigint`);
  const lockTimeoutMs = intFlag(values, "lock-timeout", 60_000, 1);
  const r = await withDatabase(values, io, (sql, tables) => rewindConsumer(sql, consumer, target, { tables, lockTimeoutMs }));
  if (values.json === true) {
    io.out(toJson(r) + "\n");
    return EXIT.ok;
  }
  const range = `${r.direction === "back" ? r.to + 1n : r.from + 1n}..${r.direction === "back" ? r.from : r.to}`;
  const what = r.direction === "back"
    ? `Rewound "${r.consumer}" from ${r.from} to ${r.to}: positions ${range} will be delivered again`
    : r.direction === "forward"
    ? `Moved "${r.consumer}" forward from ${r.from} to ${r.to}: positions ${range} are skipped`
    : `Checkpoint of "${r.consumer}" already was ${r.to}`;
  const owner = r.owner === null
    ? " It has no owner now; the worker that gets it starts from the new checkpoint."
    : ` Its owner (worker ${r.owner}) continues from ${r.to} at its next batch.`;
  io.out(`${what} (audit row ${r.auditId}).${r.direction === "none" ? "" : owner}\n`);
  return EXIT.ok;
}
