/** The sluice side of the catch-up measurements. */
import type postgres from "postgres";
import type { PersistedEvent } from "../../src/store/events.ts";
import { createWorker } from "../../src/worker.ts";
import type { WorkerOptions } from "../../src/config.ts";
import { silent } from "./db.ts";
import { type CatchUp, handle, type HandlerKind, mono, now, type Row } from "./raw.ts";

export function sluiceRows(events: readonly PersistedEvent[]): Row[] {
  return events.map((e) => ({
    eventId: e.eventId,
    aggregateId: e.aggregateId,
    version: e.aggregateVersion,
    amount: (e.payload as { amount: number }).amount,
  }));
}

/**
 * One worker, one consumer, catching up to `head` with `worker.assigned()`.
 * Timed from the first yielded batch to the commit of the last one (the loop
 * ends right after that commit: `stop()` is called inside the last batch, so
 * the iterator commits it and then finds the scheduler closed). Start-up
 * (start() to the first yielded batch) is reported separately.
 */
export async function sluiceCatchUp(
  sql: postgres.Sql,
  o: {
    name: string;
    batchSize: number;
    head: bigint;
    kind: HandlerKind;
    options?: Partial<WorkerOptions>;
    onBatch?: () => void;
    /** Called right after the last commit, before the worker stops (CPU readings). */
    onEnd?: () => Promise<void>;
  },
): Promise<CatchUp> {
  const worker = createWorker({
    sql,
    consumers: [{ name: o.name }],
    batchSize: o.batchSize,
    batchPauseMs: 0,
    logger: silent,
    ...o.options,
  } as WorkerOptions);
  const start = now();
  const monoStart = mono();
  let monoEnd = 0;
  let first = 0;
  let events = 0;
  let batches = 0;
  let reached = false;
  let end = 0;
  try {
    for await (const batch of worker.assigned()) {
      if (first === 0) first = now();
      await handle(o.kind, batch.tx, sluiceRows(batch.events));
      events += batch.events.length;
      batches++;
      o.onBatch?.();
      if (batch.to >= o.head) {
        reached = true;
        void worker.stop(); // this batch commits when the loop moves on; then the loop ends
      }
    }
    end = now();
    monoEnd = mono();
    await o.onEnd?.();
  } finally {
    await worker.stop();
  }
  if (!reached) throw new Error(`sluice loop ended before reaching ${o.head}`);
  const ms = end - first;
  return { startupMs: first - start, ms, events, batches, eventsPerSec: events / (ms / 1000), firstAt: first, lastAt: end, monoStart, monoEnd };
}
