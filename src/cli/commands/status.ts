/**
 * `sluice status`: the cluster as an operator sees it: workers (heartbeat
 * age, leader, consumers), consumers (owner, checkpoint, lag in events,
 * state, last error) and gap passes. `--json` for machines, `--watch` to
 * refresh.
 *
 * @module
 */
import { listGapSkips } from "../../admin.ts";
import type { Sql } from "../../db/executor.ts";
import { resolveTableNames, type TableNamesInput } from "../../db/names.ts";
import { readStatus } from "../../coordination/status.ts";
import { countEventsAfter } from "../../coordination/admin-statements.ts";
import { wrapDbError } from "../../errors.ts";
import { sleep } from "../../internal/deferred.ts";
import { type Command, EXIT, type Io, type ParsedValues } from "../args.ts";
import { CONNECTION_OPTIONS, CONNECTION_USAGE, intFlag, textTable, toJson, withDatabase } from "./common.ts";

/** Lag counts stop at this many events (a count this high means "at least"). */
export const LAG_COUNT_CAP = 1_000_000;

/** What `sluice status --json` prints (positions as strings). */
export interface StatusReport {
  readonly at: string;
  readonly head: string;
  readonly workers: readonly {
    workerId: string;
    heartbeatAgeMs: number;
    alive: boolean;
    leader: boolean;
    consumers: readonly string[];
    info: Readonly<Record<string, unknown>>;
  }[];
  readonly consumers: readonly {
    name: string;
    owner: string | null;
    paused: boolean;
    state: string | null;
    lastError: string | null;
    checkpoint: string;
    /** head - checkpoint. */
    lagPositions: string;
    /** Events after the checkpoint, up to the head (holes not counted), counted up to LAG_COUNT_CAP. */
    lagEvents: number;
    lagEventsCapped: boolean;
  }[];
  readonly gapPasses: readonly { reason: string; count: number; last: string | null }[];
  readonly recentGaps: readonly {
    id: string;
    consumer: string;
    reason: string;
    gapPosition: string;
    skipToPosition: string;
    skipped: number;
    latePositions: readonly string[];
    createdAt: string;
  }[];
}

/** Reads everything `sluice status` shows. */
export async function collectStatus(
  sql: Sql,
  tables: TableNamesInput,
  o: { heartbeatTimeoutMs: number; recentGaps: number },
): Promise<StatusReport> {
  const s = await readStatus(sql, { tables, heartbeatTimeoutMs: o.heartbeatTimeoutMs });
  const counts = await countEventsAfter(sql, resolveTableNames(tables), {
    after: s.consumers.map((c) => ({ consumer: c.name, position: c.checkpoint })),
    upTo: s.head,
    cap: LAG_COUNT_CAP,
  }).catch((e: unknown) => {
    throw wrapDbError("count the lag of the consumers", e);
  });
  const recent = o.recentGaps > 0 ? await listGapSkips(sql, { tables, limit: o.recentGaps }) : [];
  return {
    at: new Date().toISOString(),
    head: s.head.toString(),
    workers: s.workers.map((w) => ({
      workerId: w.workerId,
      heartbeatAgeMs: Math.round(w.heartbeatAgeMs),
      alive: w.alive,
      leader: w.leader,
      consumers: w.consumers,
      info: w.info,
    })),
    consumers: s.consumers.map((c) => {
      const n = counts.get(c.name) ?? 0;
      return {
        name: c.name,
        owner: c.owner,
        paused: c.paused,
        state: c.state,
        lastError: c.lastError,
        checkpoint: c.checkpoint.toString(),
        lagPositions: c.lag.toString(),
        lagEvents: n,
        lagEventsCapped: n >= LAG_COUNT_CAP,
      };
    }),
    gapPasses: s.gapPasses,
    recentGaps: recent.map((g) => ({
      id: g.id,
      consumer: g.consumer,
      reason: g.reason,
      gapPosition: g.gapPosition.toString(),
      skipToPosition: g.skipToPosition.toString(),
      skipped: g.skippedPositions.length,
      latePositions: g.latePositions.map(String),
      createdAt: g.createdAt.toISOString(),
    })),
  };
}

const short = (id: string | null): string => (id === null ? "-" : id.slice(0, 8));
const yesNo = (b: boolean): string => (b ? "yes" : "no");

function age(ms: number): string {
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s ago`;
  if (ms < 120_000) return `${Math.round(ms / 1000)}s ago`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)}m ago`;
  return `${Math.round(ms / 3_600_000)}h ago`;
}

/** The text rendering of a report. */
export function renderStatus(r: StatusReport): string {
  const alive = r.workers.filter((w) => w.alive).length;
  const out: string[] = [
    `Head position ${r.head}; ${r.workers.length} worker${r.workers.length === 1 ? "" : "s"} (${alive} alive), ` +
    `${r.consumers.length} consumer${r.consumers.length === 1 ? "" : "s"}; ${r.at}\n`,
    "\nWorkers\n",
    r.workers.length === 0 ? "  (none registered)\n" : textTable(
      ["ID", "HEARTBEAT", "ALIVE", "LEADER", "CONSUMERS"],
      r.workers.map((w) => [w.workerId, age(w.heartbeatAgeMs), yesNo(w.alive), yesNo(w.leader), w.consumers.join(", ") || "-"]),
    ),
    "\nConsumers\n",
    r.consumers.length === 0 ? "  (none)\n" : textTable(
      ["NAME", "OWNER", "CHECKPOINT", "LAG", "STATE", "PAUSED", "LAST ERROR"],
      r.consumers.map((c) => [
        c.name,
        short(c.owner),
        c.checkpoint,
        `${c.lagEvents}${c.lagEventsCapped ? "+" : ""}`,
        c.state ?? "-",
        yesNo(c.paused),
        c.lastError === null ? "-" : c.lastError.replace(/\s+/g, " ").slice(0, 80),
      ]),
    ),
    "\nGap passes: " + (r.gapPasses.length === 0 ? "none" : r.gapPasses.map((g) => `${g.reason} ${g.count}`).join(", ")) + "\n",
  ];
  if (r.recentGaps.length > 0) {
    out.push(textTable(
      ["AT", "CONSUMER", "REASON", "FIRST PASSED", "CHECKPOINT", "LATE"],
      r.recentGaps.map((g) => [g.createdAt, g.consumer, g.reason, g.gapPosition, g.skipToPosition, g.latePositions.join(",") || "-"]),
    ));
  }
  return out.join("");
}

/** The `status` command. */
export const statusCommand: Command = {
  name: "status",
  summary: "Show workers, consumers (owner, checkpoint, lag, state) and gap passes",
  usage: `[--json] [--watch [--interval MS] [--count N]] [--gaps N] [--heartbeat-timeout MS] ${CONNECTION_USAGE}`,
  description: [
    "Reads the cluster's state from the database (no worker needed): every registered",
    "worker with its heartbeat age, whether it is alive (fresh heartbeat and liveness",
    "lock held) and the leader, and the consumers it lists; every consumer with its",
    "owner, checkpoint, lag (events after the checkpoint up to the head), last reported",
    "state and error, and whether it is paused; gap passes by reason and the latest ones.",
    "With --json it prints one JSON object (positions as strings); with --watch it",
    "refreshes every --interval ms until interrupted (--json --watch: one object per line).",
  ].join("\n"),
  options: {
    json: { type: "boolean", description: "Print JSON instead of text" },
    watch: { type: "boolean", description: "Refresh until interrupted (Ctrl-C)" },
    interval: { type: "string", value: "MS", description: "With --watch: refresh period (default 2000)" },
    count: { type: "string", value: "N", description: "With --watch: stop after N refreshes" },
    gaps: { type: "string", value: "N", description: "Latest gap passes to show (default 5; 0: none)" },
    "heartbeat-timeout": { type: "string", value: "MS", description: "A worker silent this long is not alive (default 30000, as the workers')" },
    ...CONNECTION_OPTIONS,
  },
  run: runStatus,
};

async function runStatus(values: ParsedValues, io: Io): Promise<number> {
  const json = values.json === true;
  const watch = values.watch === true;
  const interval = intFlag(values, "interval", 2_000, 10);
  const count = intFlag(values, "count", watch ? Number.MAX_SAFE_INTEGER : 1, 1);
  const recentGaps = intFlag(values, "gaps", 5, 0, 1_000);
  const heartbeatTimeoutMs = intFlag(values, "heartbeat-timeout", 30_000, 1);
  const proc = (globalThis as { process?: { on?: (s: string, f: () => void) => void; off?: (s: string, f: () => void) => void; stdout?: { isTTY?: boolean } } }).process;
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  if (watch) {
    proc?.on?.("SIGINT", onSignal);
    proc?.on?.("SIGTERM", onSignal);
  }
  const clear = watch && !json && proc?.stdout?.isTTY === true;
  try {
    return await withDatabase(values, io, async (sql, tables) => {
      for (let i = 0; i < count && !stop.signal.aborted; i++) {
        if (i > 0 && !(await sleep(interval, stop.signal))) break;
        const r = await collectStatus(sql, tables, { heartbeatTimeoutMs, recentGaps });
        if (json) io.out(toJson(r, watch ? undefined : 2) + "\n");
        else io.out((clear ? "\x1b[H\x1b[2J" : i > 0 ? "\n" : "") + renderStatus(r));
      }
      return EXIT.ok;
    });
  } finally {
    proc?.off?.("SIGINT", onSignal);
    proc?.off?.("SIGTERM", onSignal);
  }
}
