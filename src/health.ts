/**
 * A health endpoint for a worker: a fetch-style handler (`(request) =>
 * Response`) for `Bun.serve`, `Deno.serve` or, through
 * {@link toNodeListener}, `node:http`. It reads only `worker.status()`: no
 * query, so probing it often costs nothing.
 *
 * @module
 */
import { SluiceError } from "./errors.ts";
import type { WorkerStatus } from "./worker.ts";

/**
 * Options of {@link healthHandler}.
 *
 * @example
 * ```ts
 * const options: HealthOptions = { stuckAfterMs: 120_000 };
 * const health = healthHandler(worker, options);
 * ```
 */
export interface HealthOptions {
  /**
   * A consumer whose lag stays above zero without falling for this long is
   * reported stuck. @default 60000
   */
  stuckAfterMs?: number;
  /** Milliseconds since the epoch, for tests. @default Date.now */
  now?: () => number;
}

/**
 * Why a worker is unhealthy.
 *
 * @example
 * ```ts
 * const body = (await healthHandler(worker)().json()) as HealthBody;
 * for (const r of body.reasons) console.warn(r.code, r.consumer ?? "", r.message);
 * ```
 */
export interface HealthReason {
  /**
   * - `not_running`: not started yet, stopped, or stopped itself (registration lost).
   * - `session_lost`: its coordination session is gone, so it cannot prove it is alive (it starts no batch until it is back).
   * - `consumer_parked`: a consumer failed `maxConsecutiveFailures` batches in a row and stopped.
   * - `consumer_stuck`: a consumer's lag has been above zero without falling for `stuckAfterMs`.
   */
  readonly code: "not_running" | "session_lost" | "consumer_parked" | "consumer_stuck";
  readonly message: string;
  readonly consumer?: string;
}

/**
 * A consumer in the health body (positions as strings).
 *
 * @example
 * ```ts
 * const body = (await healthHandler(worker)().json()) as HealthBody;
 * const lagging: HealthConsumer[] = body.consumers.filter((c) => BigInt(c.lag) > 1000n);
 * ```
 */
export interface HealthConsumer {
  readonly name: string;
  readonly state: string;
  readonly checkpoint: string;
  readonly lag: string;
  readonly failures: number;
  readonly lastError: string | null;
  /** Milliseconds its lag has been above zero without falling (absent when the lag is 0). */
  readonly lagNotFallingMs?: number;
}

/**
 * The JSON body of a health response.
 *
 * @example
 * ```ts
 * const res = healthHandler(worker)();
 * const body: HealthBody = await res.json();
 * console.log(res.status, body.status, body.reasons);
 * ```
 */
export interface HealthBody {
  readonly status: "ok" | "unhealthy";
  readonly workerId: string;
  readonly running: boolean;
  readonly leader: boolean;
  /** False while the worker cannot prove it is alive. */
  readonly healthy: boolean;
  readonly head: string;
  readonly consumers: readonly HealthConsumer[];
  /** Empty when healthy. */
  readonly reasons: readonly HealthReason[];
}

/**
 * A fetch-style handler; it ignores the request's path and method (route in
 * your server).
 *
 * @example
 * ```ts
 * const health: HealthHandler = healthHandler(worker);
 * Bun.serve({ port: 8080, fetch: (req) => new URL(req.url).pathname === "/healthz" ? health(req) : new Response(null, { status: 404 }) });
 * ```
 */
export type HealthHandler = (request?: Request) => Response;

/**
 * Creates a health handler for `worker`. It answers `200` with
 * `{ "status": "ok", ... }` or `503` with `{ "status": "unhealthy",
 * "reasons": [...] }`: unhealthy when the worker is not running, when its
 * coordination session is lost, when a consumer is parked, or when a
 * consumer's lag has stayed above zero without falling (between two calls)
 * for `stuckAfterMs`. Lag is tracked in memory across calls, so probe it
 * regularly (every few seconds).
 *
 * @throws SluiceError `INVALID_ARGUMENT` for a negative `stuckAfterMs`
 * @example
 * ```ts
 * import { createWorker, healthHandler } from "@sluice/worker";
 * const worker = createWorker({ sql, consumers: [{ name: "outbox" }] });
 * const health = healthHandler(worker, { stuckAfterMs: 120_000 });
 * Deno.serve({ port: 8080 }, health);            // Deno
 * Bun.serve({ port: 8080, fetch: health });      // Bun
 * // Node: http.createServer(toNodeListener(health)).listen(8080);
 * ```
 */
export function healthHandler(worker: { status(): WorkerStatus }, options: HealthOptions = {}): HealthHandler {
  const stuckAfterMs = options.stuckAfterMs ?? 60_000;
  if (!Number.isFinite(stuckAfterMs) || stuckAfterMs < 0) {
    throw new SluiceError("INVALID_ARGUMENT", `Invalid stuckAfterMs: ${stuckAfterMs} must be a number >= 0`);
  }
  const now = options.now ?? Date.now;
  // Per consumer: the lag at the last call and since when it has not fallen.
  const track = new Map<string, { lag: bigint; since: number }>();
  return (request?: Request): Response => {
    const s = worker.status();
    const t = now();
    const reasons: HealthReason[] = [];
    if (!s.running) reasons.push({ code: "not_running", message: "The worker is not running (not started, or stopped)" });
    else if (!s.healthy) {
      reasons.push({ code: "session_lost", message: "The worker lost its coordination session and cannot prove it is alive" });
    }
    const seen = new Set<string>();
    const consumers = s.consumers.map((c): HealthConsumer => {
      seen.add(c.name);
      let notFalling: number | undefined;
      if (c.lag === 0n) track.delete(c.name);
      else {
        const prev = track.get(c.name);
        if (!prev || c.lag < prev.lag) track.set(c.name, { lag: c.lag, since: t });
        else prev.lag = c.lag;
        notFalling = t - track.get(c.name)!.since;
      }
      if (c.state === "parked") {
        reasons.push({
          code: "consumer_parked",
          consumer: c.name,
          message: `Consumer ${c.name} is parked after ${c.failures} failed batches: ${c.lastError ?? "unknown error"}`,
        });
      } else if (notFalling !== undefined && notFalling >= stuckAfterMs && c.state !== "stopped") {
        reasons.push({
          code: "consumer_stuck",
          consumer: c.name,
          message: `Consumer ${c.name} has a lag of ${c.lag} that has not fallen for ${notFalling} ms (state ${c.state})`,
        });
      }
      return {
        name: c.name,
        state: c.state,
        checkpoint: c.checkpoint.toString(),
        lag: c.lag.toString(),
        failures: c.failures,
        lastError: c.lastError ?? null,
        ...(notFalling === undefined ? {} : { lagNotFallingMs: notFalling }),
      };
    });
    for (const name of [...track.keys()]) if (!seen.has(name)) track.delete(name);
    const body: HealthBody = {
      status: reasons.length === 0 ? "ok" : "unhealthy",
      workerId: s.workerId,
      running: s.running,
      leader: s.leader,
      healthy: s.healthy,
      head: s.head.toString(),
      consumers,
      reasons,
    };
    return new Response(request?.method === "HEAD" ? null : JSON.stringify(body), {
      status: reasons.length === 0 ? 200 : 503,
      headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
    });
  };
}

/**
 * The parts of a `node:http` request that {@link toNodeListener} reads
 * (an `IncomingMessage` fits).
 *
 * @example
 * ```ts
 * const listener: (req: NodeRequestLike, res: NodeResponseLike) => void = toNodeListener(healthHandler(worker));
 * http.createServer(listener).listen(8080);
 * ```
 */
export interface NodeRequestLike {
  readonly method?: string;
  readonly url?: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

/**
 * The parts of a `node:http` response that {@link toNodeListener} writes
 * (a `ServerResponse` fits).
 *
 * @example
 * ```ts
 * http.createServer((req, res: NodeResponseLike) => toNodeListener(healthHandler(worker))(req, res)).listen(8080);
 * ```
 */
export interface NodeResponseLike {
  statusCode: number;
  setHeader(name: string, value: string): unknown;
  end(body?: string): unknown;
}

/**
 * Adapts a fetch-style handler (such as a {@link healthHandler}) to a
 * `node:http` request listener. Request bodies are not read.
 *
 * @example
 * ```ts
 * import { createServer } from "node:http";
 * import { healthHandler, toNodeListener } from "@sluice/worker";
 * createServer(toNodeListener(healthHandler(worker))).listen(8080);
 * ```
 */
export function toNodeListener(
  handler: (request: Request) => Response | Promise<Response>,
): (req: NodeRequestLike, res: NodeResponseLike) => void {
  return (req, res) => {
    void (async () => {
      try {
        const headers = new Headers();
        for (const [k, v] of Object.entries(req.headers)) {
          if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(", ") : v);
        }
        const host = headers.get("host") ?? "localhost";
        const response = await handler(new Request(new URL(req.url ?? "/", `http://${host}`), { method: req.method ?? "GET", headers }));
        res.statusCode = response.status;
        response.headers.forEach((value, key) => void res.setHeader(key, value));
        res.end(await response.text());
      } catch (e) {
        res.statusCode = 500;
        res.setHeader("content-type", "text/plain; charset=utf-8");
        res.end(`Health handler failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    })();
  };
}
