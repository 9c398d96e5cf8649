/**
 * `sluice gaps [--consumer NAME]`: the gap-skip audit, newest first.
 *
 * @module
 */
import { listGapSkips } from "../../admin.ts";
import { type Command, EXIT, type Io, type ParsedValues, stringFlag } from "../args.ts";
import { CONNECTION_OPTIONS, CONNECTION_USAGE, intFlag, textTable, toJson, withDatabase } from "./common.ts";

const NIL = "00000000-0000-0000-0000-000000000000";

/** The `gaps` command. */
export const gapsCommand: Command = {
  name: "gaps",
  summary: "List passed gaps and manual checkpoint moves (the gap audit)",
  usage: `[--consumer NAME] [--limit N] [--json] ${CONNECTION_USAGE}`,
  description: [
    "Lists the rows of the gap audit, newest first: every hole a consumer passed, with",
    "its reason (rolled_back: proven dead; stale: passed after staleGapThresholdMs because",
    "its writer could not be proven finished) and any late commits into it (events that",
    "were never delivered: rewind to reprocess them), and every manual checkpoint move",
    "(reason manual, from sluice rewind).",
  ].join("\n"),
  options: {
    consumer: { type: "string", value: "NAME", description: "Only this consumer's rows" },
    limit: { type: "string", value: "N", description: "At most N rows (default 50)" },
    json: { type: "boolean", description: "Print JSON (one array, positions as strings)" },
    ...CONNECTION_OPTIONS,
  },
  run: runGaps,
};

async function runGaps(values: ParsedValues, io: Io): Promise<number> {
  const consumer = stringFlag(values, "consumer");
  const limit = intFlag(values, "limit", 50, 1, 100_000);
  const rows = await withDatabase(values, io, (sql, tables) => listGapSkips(sql, { tables, consumer, limit }));
  if (values.json === true) {
    io.out(toJson(rows, 2) + "\n");
    return EXIT.ok;
  }
  if (rows.length === 0) {
    io.out(consumer === undefined ? "No gap passes recorded.\n" : `No gap passes recorded for "${consumer}".\n`);
    return EXIT.ok;
  }
  io.out(textTable(
    ["ID", "AT", "CONSUMER", "REASON", "FIRST PASSED", "CHECKPOINT", "HIGHEST", "SKIPPED", "LATE", "BY"],
    rows.map((g) => [
      g.id,
      g.createdAt.toISOString(),
      g.consumer,
      g.reason,
      g.gapPosition.toString(),
      g.skipToPosition.toString(),
      g.highestVisiblePosition.toString(),
      listed(g.skippedPositions),
      listed(g.latePositions),
      g.workerId === NIL ? "operator" : g.workerId.slice(0, 8),
    ]),
    "",
  ));
  return EXIT.ok;
}

function listed(ps: readonly bigint[]): string {
  if (ps.length === 0) return "-";
  const shown = ps.slice(0, 5).join(",");
  return ps.length > 5 ? `${shown},... (${ps.length})` : shown;
}
