/**
 * sluice: a horizontally scalable, PostgreSQL-native consumer worker for
 * event-sourced systems.
 *
 * @example
 * ```ts
 * import postgres from "postgres";
 * import { migrate } from "@sluice/worker";
 * const sql = postgres(process.env.DATABASE_URL!);
 * await migrate(sql);
 * ```
 *
 * @module
 */
export {
  ConfigError,
  type ConfigIssue,
  isConnectionError,
  isSluiceError,
  SluiceError,
  sqlStateOf,
  type SluiceErrorCode,
  type SluiceErrorOptions,
} from "./errors.ts";
export { type Logger, silentLogger } from "./logger.ts";
export {
  type Clock,
  type ConsumerDefinition,
  parseWorkerConfig,
  type ResolvedConfig,
  type WorkerOptions,
} from "./config.ts";
export {
  migrate,
  type MigrateOptions,
  type MigrateResult,
  renderMigrationScript,
  verifySchema,
  type VerifyResult,
} from "./db/migrate.ts";
export type { Executor } from "./db/executor.ts";
export type { QualifiedName, ResolvedTableNames, TableNamesInput } from "./db/names.ts";
export { createWorker, type ConsumerReport, type LoopOptions, Worker, type WorkerStatus } from "./worker.ts";
export type { Batch, BatchDb } from "./consumption/batch.ts";
export type { ConsumerState, ConsumerStatus } from "./consumption/runner.ts";
export type { PersistedEvent } from "./store/events.ts";
export { type ClusterStatus, type ConsumerInfo, readStatus, type WorkerInfo } from "./coordination/status.ts";
export {
  type AdminOptions,
  type GapSkip,
  listGapSkips,
  type ListGapSkipsOptions,
  pauseConsumer,
  type PauseResult,
  resumeConsumer,
  rewindConsumer,
  type RewindOptions,
  type RewindResult,
} from "./admin.ts";
export { catchUp, type CatchUpOptions, type CatchUpReport, type CatchUpResult } from "./catch-up.ts";
export {
  type HealthBody,
  type HealthConsumer,
  type HealthHandler,
  healthHandler,
  type HealthOptions,
  type HealthReason,
  type NodeRequestLike,
  type NodeResponseLike,
  toNodeListener,
} from "./health.ts";
