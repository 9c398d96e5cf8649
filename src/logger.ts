/**
 * The logger sluice writes to. Shaped so that a LogTape logger, a `@std/log`
 * logger and `console` all fit: four methods taking a message and optional
 * structured properties.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";

/**
 * What sluice needs from a logger. Messages are plain sentences; the second
 * argument carries structured fields (consumer, position, workerId, error).
 *
 * - LogTape: pass `getLogger(["my-app", "sluice"])` (or nothing: sluice logs
 *   under the category `["sluice", ...]`, silent until you call `configure`).
 * - `@std/log`: pass `getLogger()`; its `debug/info/warn/error(msg, ...args)`
 *   receives the properties object as its first extra argument.
 * - `console` works too.
 *
 * @example
 * ```ts
 * import { configure, getConsoleSink, getLogger } from "@logtape/logtape";
 * await configure({ sinks: { console: getConsoleSink() },
 *   loggers: [{ category: ["sluice"], lowestLevel: "info", sinks: ["console"] }] });
 * createWorker({ sql, consumers, logger: getLogger(["sluice"]) });
 * ```
 */
export interface Logger {
  debug(message: string, properties?: Record<string, unknown>): unknown;
  info(message: string, properties?: Record<string, unknown>): unknown;
  warn(message: string, properties?: Record<string, unknown>): unknown;
  error(message: string, properties?: Record<string, unknown>): unknown;
}

/** The default logger: LogTape category `["sluice", ...sub]`. */
export function defaultLogger(...sub: string[]): Logger {
  return getLogger(["sluice", ...sub]);
}

/** A logger that drops everything. */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

/** `{ error: message, sqlState }` for log properties. */
export function errorFields(e: unknown): Record<string, unknown> {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return { error: e.message, ...(typeof code === "string" ? { code } : {}) };
  }
  return { error: String(e) };
}
