/**
 * `sluice pause <consumer>` and `sluice resume <consumer>`.
 *
 * @module
 */
import { pauseConsumer, resumeConsumer } from "../../admin.ts";
import { type Command, EXIT, type Io, type ParsedValues } from "../args.ts";
import { CONNECTION_OPTIONS, CONNECTION_USAGE, toJson, withDatabase } from "./common.ts";

const options = { json: { type: "boolean", description: "Print the result as JSON" }, ...CONNECTION_OPTIONS } as const;

/** The `pause` command. */
export const pauseCommand: Command = {
  name: "pause",
  summary: "Pause a consumer: no new batch, unassigned until resumed",
  usage: `<consumer> [--json] ${CONNECTION_USAGE}`,
  description: [
    "Marks the consumer paused. No batch of it starts any more (the batch fence refuses",
    "a paused consumer), its owner drops it at its next coordination tick (about a",
    "second), and the leader leaves it unassigned until \"sluice resume\". A batch already",
    "open finishes normally. The checkpoint is kept. Pausing a paused consumer changes",
    "nothing (exit 0). An unknown consumer is exit 1 (NOT_FOUND).",
  ].join("\n"),
  arguments: [{ name: "consumer", description: "The consumer's name" }],
  options,
  run: (values, io, args) => runPause(values, io, args[0]!, true),
};

/** The `resume` command. */
export const resumeCommand: Command = {
  name: "resume",
  summary: "Resume a paused consumer",
  usage: `<consumer> [--json] ${CONNECTION_USAGE}`,
  description: [
    "Clears the consumer's paused flag. The leader assigns it to a live worker that lists",
    "it at its next tick, and that worker continues from the checkpoint. Pause and resume",
    "also restarts a parked consumer (wait until \"sluice status\" shows it without an owner",
    "before resuming). Resuming a consumer that is not paused changes nothing (exit 0).",
    "An unknown consumer is exit 1 (NOT_FOUND).",
  ].join("\n"),
  arguments: [{ name: "consumer", description: "The consumer's name" }],
  options,
  run: (values, io, args) => runPause(values, io, args[0]!, false),
};

async function runPause(values: ParsedValues, io: Io, consumer: string, pause: boolean): Promise<number> {
  const r = await withDatabase(values, io, (sql, tables) => (pause ? pauseConsumer : resumeConsumer)(sql, consumer, { tables }));
  if (values.json === true) io.out(toJson(r) + "\n");
  else if (!r.changed) io.out(`"${consumer}" ${pause ? "already was paused" : "was not paused"}; nothing changed.\n`);
  else if (pause) io.out(`Paused "${consumer}": no new batch starts, and the leader unassigns it.\n`);
  else io.out(`Resumed "${consumer}": the leader assigns it to a live worker that lists it.\n`);
  return EXIT.ok;
}
