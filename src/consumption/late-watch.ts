/**
 * What happens after a consumer passes holes: the audit rows written with
 * the checkpoint, and the watch over positions passed as stale, in case
 * their transaction commits after all (a late commit the consumer missed).
 *
 * @module
 */
import type { ResolvedConfig } from "../config.ts";
import type { Sql } from "../db/executor.ts";
import type { Logger } from "../logger.ts";
import type { PassedRange } from "./gaps.ts";
import { findLate, type GapSkipRecord, recordLate } from "./statements.ts";

const LATE_CHECK_EVERY_MS = 1_000;
const MAX_SKIPPED_LISTED = 1_000;

/** Audit rows for the passed holes: one per reason, `rolled_back` first. */
export function toSkipRecords(passed: readonly PassedRange[], highestVisible: bigint): GapSkipRecord[] {
  const out: GapSkipRecord[] = [];
  for (const reason of ["rolled_back", "stale"] as const) {
    const rs = passed.filter((p) => p.reason === reason);
    if (rs.length === 0) continue;
    const positions: bigint[] = [];
    for (const r of rs) {
      for (let p = r.from; p <= r.to && positions.length < MAX_SKIPPED_LISTED; p++) positions.push(p);
    }
    out.push({
      gapPosition: rs[0]!.from,
      highestVisible,
      positions,
      reason,
      firstSeenAt: Math.min(...rs.map((r) => r.firstSeenAt)),
    });
  }
  return out;
}

/**
 * Watches the positions one consumer passed as stale for `lateCommitWatchMs`:
 * one that appears was committed late, so the consumer never saw it. That is
 * logged as an error and recorded on the audit row, once.
 */
export class LateWatch {
  readonly #consumer: string;
  readonly #ctx: { readonly sql: Sql; readonly config: ResolvedConfig; readonly log: Logger };
  #watch: { from: bigint; to: bigint; until: number; skipId: string | undefined }[] = [];
  #lastCheck = 0;

  constructor(consumer: string, ctx: { readonly sql: Sql; readonly config: ResolvedConfig; readonly log: Logger }) {
    this.#consumer = consumer;
    this.#ctx = ctx;
  }

  /** True while some passed range is watched (`check` then reads the database). */
  get active(): boolean {
    return this.#watch.length > 0;
  }

  /** Starts watching the stale ranges of a committed advance; `skipIds` as `advance` returned them. */
  passed(passed: readonly PassedRange[], skipIds: readonly string[], now: number): void {
    const stale = passed.filter((p) => p.reason === "stale");
    const watchMs = this.#ctx.config.lateCommitWatchMs;
    if (stale.length === 0 || watchMs === 0) return;
    // Records are written rolled_back first, then stale (see toSkipRecords).
    const staleId = skipIds[passed.some((p) => p.reason === "rolled_back") ? 1 : 0];
    for (const p of stale) {
      this.#ctx.log.warn("Consumer {consumer} passed positions {from}..{to} as stale", {
        consumer: this.#consumer,
        from: p.from.toString(),
        to: p.to.toString(),
      });
      this.#watch.push({ from: p.from, to: p.to, until: now + watchMs, skipId: staleId });
    }
  }

  /** Looks for late commits, at most once a second. */
  async check(now: number): Promise<void> {
    this.#watch = this.#watch.filter((w) => w.until > now);
    if (this.#watch.length === 0 || now - this.#lastCheck < LATE_CHECK_EVERY_MS) return;
    this.#lastCheck = now;
    const { sql, config, log } = this.#ctx;
    const late = await findLate(sql, config.tables, this.#watch);
    for (const w of this.#watch) {
      const hits = late.filter((p) => p >= w.from && p <= w.to);
      if (hits.length === 0) continue;
      log.error("Late commit: consumer {consumer} passed position(s) {positions} as stale, and they have now appeared; rewind it to reprocess them", {
        consumer: this.#consumer,
        positions: hits.map(String),
      });
      if (w.skipId) await recordLate(sql, config.tables, w.skipId, hits).catch(() => {});
    }
    this.#watch = this.#watch.filter((w) => !late.some((p) => p >= w.from && p <= w.to));
  }
}
