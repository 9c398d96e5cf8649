/**
 * The names one deployment (one set of tables) uses for its session state:
 * advisory-lock keys and the assignment channel. Derived from the table
 * names, so deployments sharing a database never contend.
 *
 * @module
 */
import { namespaceOf, type ResolvedTableNames } from "../db/names.ts";
import { lockKey } from "../internal/lock-key.ts";

/** Session-state names of one deployment. */
export interface DeploymentKeys {
  /** The leader's advisory-lock key. */
  readonly leaderKey: bigint;
  /** The channel on which the leader announces assignment changes. */
  readonly assignChannel: string;
  /** A worker's liveness advisory-lock key. */
  livenessKey(workerId: string): bigint;
}

/** The keys of the deployment whose tables are `tables`. */
export function deploymentKeys(tables: ResolvedTableNames): DeploymentKeys {
  const ns = namespaceOf(tables);
  return {
    leaderKey: lockKey(`${ns}:leader`),
    assignChannel: `sluice_assign_${(lockKey(ns) & 0xffffffffn).toString(16)}`,
    livenessKey: (workerId) => lockKey(`${ns}:worker:${workerId}`),
  };
}
