/** Worker test helpers: fast settings, a silent logger, a memory logger. */
import type postgres from "postgres";
import { createWorker, type Worker, type WorkerOptions } from "../../src/mod.ts";

/** Settings that make a worker react in tens of milliseconds. */
export const fast = {
  batchSize: 50,
  pollIntervalMs: 50,
  maxPollIntervalMs: 200,
  dispatcherIntervalMs: 25,
  heartbeatIntervalMs: 100,
  heartbeatTimeoutMs: 1_000,
  rebalanceIntervalMs: 200,
  batchPauseMs: 10,
  provenGapMinAgeMs: 50,
  retryBaseMs: 20,
  retryMaxMs: 100,
  shutdownTimeoutMs: 2_000,
} as const;

export const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** A logger that keeps every record (for assertions on logs). */
export function memoryLogger(): { records: { level: string; message: string; props: Record<string, unknown> }[]; debug: (m: string, p?: Record<string, unknown>) => void; info: (m: string, p?: Record<string, unknown>) => void; warn: (m: string, p?: Record<string, unknown>) => void; error: (m: string, p?: Record<string, unknown>) => void } {
  const records: { level: string; message: string; props: Record<string, unknown> }[] = [];
  const at = (level: string) => (message: string, props: Record<string, unknown> = {}) => void records.push({ level, message, props });
  return { records, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** A worker with fast settings. */
export function testWorker(sql: postgres.Sql, options: Partial<WorkerOptions> & Pick<WorkerOptions, "consumers">): Worker {
  return createWorker({ sql, logger: silent, ...fast, ...options } as WorkerOptions);
}

/** Checkpoint of a consumer. */
export async function checkpoint(sql: postgres.Sql, consumer: string, schema = "sluice"): Promise<bigint> {
  const [r] = await sql.unsafe(`select last_position::text as p from "${schema}".consumer_checkpoints where consumer_name = $1`, [consumer]);
  return r ? BigInt(r.p as string) : 0n;
}
