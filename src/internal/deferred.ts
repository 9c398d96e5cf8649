/**
 * Promise plumbing shared by the worker loops: an externally settled promise
 * and an abortable sleep. Portable across Node, Bun and Deno (web-standard
 * timers and `AbortSignal` only).
 *
 * @module
 */

/**
 * The largest delay a timer accepts. Node, Bun and browsers store the delay
 * as a signed 32-bit integer and fire *immediately* (Node: after 1 ms, with a
 * `TimeoutOverflowWarning`) when given more, so every delay is clamped to it.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * A promise together with the functions that settle it.
 *
 * @example
 * ```ts
 * const ready: Deferred<void> = deferred<void>();
 * setTimeout(() => ready.resolve(), 10);
 * await ready.promise;
 * ```
 */
export interface Deferred<T> {
  /** Settles once, through {@link Deferred.resolve} or {@link Deferred.reject}. */
  promise: Promise<T>;
  /** Fulfils the promise; later calls are ignored. */
  resolve(v: T): void;
  /** Rejects the promise; later calls are ignored. */
  reject(e: unknown): void;
}

/**
 * Creates a {@link Deferred}: `Promise.withResolvers()`, which Node 20 lacks.
 *
 * @example
 * ```ts
 * const d = deferred<number>();
 * d.resolve(42);
 * await d.promise; // 42
 * ```
 */
export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * Waits `ms` milliseconds, or less if `signal` aborts first.
 *
 * Resolves `true` when the full delay elapsed and `false` when the signal
 * aborted (immediately if it already had). Never rejects, and removes both its
 * timer and its abort listener when it settles, so it keeps neither the event
 * loop nor the signal busy. A negative or NaN `ms` counts as 0; a delay above
 * {@link MAX_TIMER_MS} (about 24.8 days) is clamped to it.
 *
 * @example
 * ```ts
 * const ac = new AbortController();
 * const slept = await sleep(1_000, ac.signal); // false if ac.abort() ran meanwhile
 * ```
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  const delay = ms > 0 ? Math.min(ms, MAX_TIMER_MS) : 0;
  return new Promise<boolean>((resolve) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, delay);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
