/**
 * Delay arithmetic for retries and idle polling. Pure: randomness comes in
 * as a `random` function so tests (and simulations) are reproducible.
 *
 * @module
 */
import { MAX_TIMER_MS } from "./deferred.ts";

/**
 * The delay before retry `attempt` (1-based): the exponential delay
 * `min(maxMs, baseMs * 2^(attempt-1))`, then scaled by a factor in
 * `[0.5, 1)` drawn from `random()` ("equal jitter": half fixed, half random,
 * so a fleet retrying together spreads out but never retries too early).
 *
 * The result is a finite number of milliseconds (not rounded) in
 * `[e/2, e)` for an exponential delay `e > 0`, and 0 when `baseMs <= 0`. It
 * is never NaN or Infinity: huge, infinite or NaN attempts count as "capped",
 * an attempt below 1 counts as 1, a `random()` outside `[0, 1)` is clamped
 * into it, a negative or NaN `maxMs` means "no cap", and the delay never
 * exceeds `MAX_TIMER_MS` (2^31-1), above which timers fire immediately.
 *
 * @param attempt 1 for the first retry, 2 for the second, ...
 * @param opts `baseMs`: delay of the first retry; `maxMs`: cap before jitter.
 * @param random a source of numbers in `[0, 1)`, such as `Math.random`.
 * @example
 * ```ts
 * backoffDelay(1, { baseMs: 1_000, maxMs: 60_000 }, () => 0);   // 500
 * backoffDelay(3, { baseMs: 1_000, maxMs: 60_000 }, () => 0.5); // 3000
 * backoffDelay(99, { baseMs: 1_000, maxMs: 60_000 }, () => 0);  // 30000
 * ```
 */
export function backoffDelay(attempt: number, opts: { baseMs: number; maxMs: number }, random: () => number): number {
  const base = opts.baseMs;
  if (!(base > 0)) return 0;
  const max = Math.min(opts.maxMs >= 0 ? opts.maxMs : MAX_TIMER_MS, MAX_TIMER_MS);
  // 2^1023 is the largest finite power of two; beyond that the cap rules anyway.
  const exponent = attempt >= 1 ? Math.min(Math.floor(attempt) - 1, 1023) : attempt < 1 ? 0 : 1023;
  const e = Math.min(max, base * 2 ** exponent);
  if (!(e > 0)) return 0;
  let r = random();
  if (!(r >= 0)) r = 0;
  const d = e * (0.5 + Math.min(r, 1) / 2);
  // Rounding can land on e itself when r is within an ulp of 1.
  return d < e ? d : e * (1 - Number.EPSILON);
}

/**
 * The next idle poll interval: doubles the current one up to `maxMs`.
 *
 * - `currentMs <= 0` (or NaN) → `baseMs` (start over);
 * - `maxMs <= 0` → `currentMs` (backoff disabled);
 * - otherwise `min(currentMs * 2, maxMs)`, which stays `maxMs` for any
 *   huge or infinite `currentMs`.
 *
 * @example
 * ```ts
 * nextPollInterval(0, 30_000, 1_000);      // 1000
 * nextPollInterval(2_000, 30_000, 1_000);  // 4000
 * nextPollInterval(20_000, 30_000, 1_000); // 30000
 * ```
 */
export function nextPollInterval(currentMs: number, maxMs: number, baseMs: number): number {
  if (!(currentMs > 0)) return baseMs;
  if (!(maxMs > 0)) return currentMs;
  // currentMs > maxMs / 2 avoids the multiplication, so no overflow to Infinity.
  return currentMs > maxMs / 2 ? maxMs : currentMs * 2;
}
