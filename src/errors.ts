/**
 * Errors raised by sluice. Every error is a {@link SluiceError} with a stable
 * string {@link SluiceErrorCode}; match on `code`, never on the message.
 *
 * @module
 */

/**
 * The stable codes a {@link SluiceError} can carry.
 *
 * - `CONFIG_INVALID`: options failed validation (see {@link ConfigError}).
 * - `INVALID_ARGUMENT`: a function argument is out of its domain.
 * - `INVALID_IDENTIFIER`: a table, schema or channel name is not a safe SQL identifier.
 * - `INVALID_EVENT`: an event passed to `append` is malformed.
 * - `CONCURRENCY_CONFLICT`: an append lost an optimistic-concurrency check.
 * - `MIGRATION_FAILED`: applying the embedded migrations failed.
 * - `SCHEMA_MISMATCH`: the database lacks tables, columns or indexes sluice needs.
 * - `DATABASE_ERROR`: PostgreSQL reported an error (`sqlState` keeps its SQLSTATE).
 * - `ALREADY_STARTED` / `WORKER_STOPPED`: lifecycle misuse.
 * - `REGISTRATION_LOST`: this worker's `worker_nodes` row disappeared.
 * - `OWNERSHIP_LOST`: a batch could not prove this worker still owns its consumer.
 * - `BATCH_TIMEOUT`: a batch outlived `batchTimeoutMs` and was rolled back.
 * - `BATCH_CLOSED`: a batch was used after it committed or rolled back.
 * - `CONSUMER_OWNED`: a one-off run refused a consumer that a live worker owns.
 * - `TIMEOUT`: a wait (such as `caughtUp`) ran out of time.
 * - `NOT_FOUND`: the named consumer or object does not exist.
 */
export type SluiceErrorCode =
  | "CONFIG_INVALID"
  | "INVALID_ARGUMENT"
  | "INVALID_IDENTIFIER"
  | "INVALID_EVENT"
  | "CONCURRENCY_CONFLICT"
  | "MIGRATION_FAILED"
  | "SCHEMA_MISMATCH"
  | "DATABASE_ERROR"
  | "ALREADY_STARTED"
  | "WORKER_STOPPED"
  | "REGISTRATION_LOST"
  | "OWNERSHIP_LOST"
  | "BATCH_TIMEOUT"
  | "BATCH_CLOSED"
  | "CONSUMER_OWNED"
  | "TIMEOUT"
  | "NOT_FOUND";

/** Options accepted by the {@link SluiceError} constructor. */
export interface SluiceErrorOptions {
  /** The underlying error, kept as the standard `cause`. */
  cause?: unknown;
  /** PostgreSQL SQLSTATE, when the error came from the database. */
  sqlState?: string;
  /** Structured context (consumer name, position, ...), useful for logs. */
  details?: Record<string, unknown>;
}

/**
 * The one error class sluice throws. `code` is stable across versions.
 *
 * @example
 * ```ts
 * try { await store.append(sql, events, { expectedVersion: 3 }); }
 * catch (e) { if (isSluiceError(e, "CONCURRENCY_CONFLICT")) retry(); else throw e; }
 * ```
 */
export class SluiceError extends Error {
  /** Stable machine-readable code. */
  readonly code: SluiceErrorCode;
  /** PostgreSQL SQLSTATE of the underlying error, if any. */
  readonly sqlState: string | undefined;
  /** Structured context for logs. */
  readonly details: Record<string, unknown>;

  constructor(code: SluiceErrorCode, message: string, options: SluiceErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "SluiceError";
    this.code = code;
    this.sqlState = options.sqlState ?? sqlStateOf(options.cause);
    this.details = options.details ?? {};
  }
}

/** One failed field of a configuration object. */
export interface ConfigIssue {
  /** Dotted path of the field, such as `consumers.1.name`. */
  path: string;
  /** The value that was rejected. */
  value: unknown;
  /** What the field must be. */
  rule: string;
}

/**
 * Thrown when options fail validation. The message lists every bad field with
 * its path, value and rule; `issues` holds the same list as data.
 *
 * @example
 * ```ts
 * try { createWorker({ sql, consumers: [], batchSize: 0 }); }
 * catch (e) { if (e instanceof ConfigError) console.error(e.issues); }
 * ```
 */
export class ConfigError extends SluiceError {
  /** Every rejected field. */
  readonly issues: readonly ConfigIssue[];

  constructor(subject: string, issues: readonly ConfigIssue[], cause?: unknown) {
    const lines = issues.map((i) => `  - ${i.path || "(root)"}: ${i.rule} (got ${show(i.value)})`);
    super("CONFIG_INVALID", `Invalid ${subject}:\n${lines.join("\n")}`, { cause, details: { issues } });
    this.name = "ConfigError";
    this.issues = issues;
  }
}

/**
 * Structural guard: true when `e` looks like a {@link SluiceError} (works
 * across duplicated module copies, where `instanceof` fails), optionally with
 * the given code.
 *
 * @example
 * ```ts
 * if (isSluiceError(err, "OWNERSHIP_LOST")) log.info("consumer moved");
 * ```
 */
export function isSluiceError(e: unknown, code?: SluiceErrorCode): e is SluiceError {
  if (typeof e !== "object" || e === null) return false;
  const r = e as { name?: unknown; code?: unknown };
  if ((r.name !== "SluiceError" && r.name !== "ConfigError") || typeof r.code !== "string") return false;
  return code === undefined || r.code === code;
}

/** SQLSTATE of a postgres.js (or any driver's) error, if it carries one. */
export function sqlStateOf(e: unknown): string | undefined {
  if (typeof e !== "object" || e === null) return undefined;
  const r = e as { code?: unknown; sqlState?: unknown; name?: unknown };
  if (typeof r.sqlState === "string") return r.sqlState;
  // postgres.js PostgresError keeps SQLSTATE in `code` (five characters).
  if (r.name === "PostgresError" && typeof r.code === "string") return r.code;
  return undefined;
}

/**
 * Wraps an unknown failure as a `DATABASE_ERROR` (or keeps it when it already
 * is a SluiceError), prefixing what we were doing.
 */
export function wrapDbError(what: string, e: unknown, details?: Record<string, unknown>): SluiceError {
  if (isSluiceError(e)) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new SluiceError("DATABASE_ERROR", `Cannot ${what}: ${msg}`, { cause: e, details });
}

function show(v: unknown): string {
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "function") return "a function";
  try {
    const s = JSON.stringify(v);
    if (s === undefined) return String(v);
    return s.length > 80 ? s.slice(0, 77) + "..." : s;
  } catch {
    return String(v);
  }
}

const CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
]);

/**
 * True for failures of the database or the connection rather than of the
 * work: connection exceptions (SQLSTATE class 08), operator intervention
 * (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now) and
 * the driver's connection errors. Consumers back off on these but are not
 * parked for them.
 */
export function isConnectionError(e: unknown): boolean {
  const state = sqlStateOf(e);
  if (state !== undefined && (state.startsWith("08") || state === "57P01" || state === "57P02" || state === "57P03")) return true;
  const code = typeof e === "object" && e !== null ? (e as { code?: unknown }).code : undefined;
  if (typeof code === "string" && CONNECTION_CODES.has(code)) return true;
  const cause = typeof e === "object" && e !== null ? (e as { cause?: unknown }).cause : undefined;
  return cause !== undefined && cause !== e && isConnectionError(cause);
}
