/**
 * The cluster as an operator sees it: workers, consumers, gap passes. Read by
 * `sluice status` and the demo; works from any process (no worker needed).
 *
 * @module
 */
import type { Executor } from "../db/executor.ts";
import { resolveTableNames, type TableNamesInput } from "../db/names.ts";
import { wrapDbError } from "../errors.ts";
import { deploymentKeys } from "./keys.ts";
import { clusterStatus } from "./statements.ts";

/** A registered worker. */
export interface WorkerInfo {
  readonly workerId: string;
  readonly heartbeatAgeMs: number;
  readonly leader: boolean;
  /** Heartbeat fresh and liveness lock held. */
  readonly alive: boolean;
  /** The consumers it can run. */
  readonly consumers: readonly string[];
  readonly info: Readonly<Record<string, unknown>>;
}

/** A consumer, cluster-wide. */
export interface ConsumerInfo {
  readonly name: string;
  readonly owner: string | null;
  readonly paused: boolean;
  /** Last state its owner reported (running, backing_off, parked), if any. */
  readonly state: string | null;
  readonly lastError: string | null;
  readonly checkpoint: bigint;
  /** Positions between the checkpoint and the head. */
  readonly lag: bigint;
}

/** What {@link readStatus} returns. */
export interface ClusterStatus {
  readonly head: bigint;
  readonly workers: readonly WorkerInfo[];
  readonly consumers: readonly ConsumerInfo[];
  /** Gap passes so far, by reason. */
  readonly gapPasses: readonly { reason: string; count: number; last: string | null }[];
}

/**
 * Reads the cluster's state in one statement.
 *
 * @example
 * ```ts
 * const s = await readStatus(sql);
 * for (const c of s.consumers) console.log(c.name, c.owner, c.lag);
 * ```
 */
export async function readStatus(
  sql: Executor,
  options: { tables?: TableNamesInput; heartbeatTimeoutMs?: number } = {},
): Promise<ClusterStatus> {
  const tables = resolveTableNames(options.tables);
  try {
    const r = await clusterStatus(sql, tables, {
      leaderKey: deploymentKeys(tables).leaderKey,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 30_000,
    });
    return {
      head: r.head,
      workers: r.workers,
      gapPasses: r.gapPasses,
      consumers: r.consumers.map((c) => {
        const checkpoint = BigInt(c.checkpoint);
        return { ...c, checkpoint, lag: r.head > checkpoint ? r.head - checkpoint : 0n };
      }),
    };
  } catch (e) {
    throw wrapDbError("read the cluster status", e);
  }
}
