/**
 * The poll dispatcher: reads the head position every `dispatcherIntervalMs`
 * and reports it (the worker wakes consumers when it advances). In notify
 * mode the coordination tick's head read is the reconciliation poll instead.
 *
 * @module
 */
import type { Clock } from "../config.ts";
import type { Sql } from "../db/executor.ts";
import type { ResolvedTableNames } from "../db/names.ts";
import { readHead } from "../consumption/statements.ts";
import { errorFields, type Logger } from "../logger.ts";
import { sleep } from "../internal/deferred.ts";

/** Polls the head position until `signal` aborts. */
export async function pollHead(
  p: { sql: Sql; tables: ResolvedTableNames; intervalMs: number; clock: Clock; log: Logger; signal: AbortSignal },
  onHead: (s: { head: bigint; xmax: bigint; sentAt: number; receivedAt: number }) => void,
): Promise<void> {
  let failures = 0;
  while (!p.signal.aborted) {
    const sentAt = p.clock.now();
    try {
      const r = await readHead(p.sql, p.tables);
      onHead({ ...r, sentAt, receivedAt: p.clock.now() });
      failures = 0;
    } catch (e) {
      // Logged once per outage; consumers still poll on their own.
      if (failures++ === 0) p.log.warn("Poll dispatcher cannot read the head position", errorFields(e));
    }
    if (!(await sleep(p.intervalMs, p.signal))) break;
  }
}
