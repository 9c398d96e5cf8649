import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, nextPollInterval } from "../../src/internal/backoff.ts";
import { MAX_TIMER_MS } from "../../src/internal/deferred.ts";

// Largest value Math.random() can return.
const almostOne = 1 - 2 ** -53;

describe("nextPollInterval (the peer's #51, in milliseconds)", () => {
  it("starts from the base interval when the current one is not positive", () => {
    assert.equal(nextPollInterval(0, 10_000, 1_000), 1_000);
    assert.equal(nextPollInterval(-1_000, 10_000, 2_000), 2_000);
    assert.equal(nextPollInterval(Number.NaN, 10_000, 2_000), 2_000);
  });

  it("keeps the current interval when the maximum is not positive", () => {
    assert.equal(nextPollInterval(2_000, 0, 1_000), 2_000);
    assert.equal(nextPollInterval(2_000, -5, 1_000), 2_000);
  });

  it("doubles up to the maximum", () => {
    assert.equal(nextPollInterval(2_000, 10_000, 1_000), 4_000);
    assert.equal(nextPollInterval(5_000, 10_000, 1_000), 10_000);
    assert.equal(nextPollInterval(8_000, 10_000, 1_000), 10_000);
    assert.equal(nextPollInterval(10_000, 10_000, 1_000), 10_000);
  });

  it("returns the maximum for huge current intervals instead of overflowing", () => {
    assert.equal(nextPollInterval(2 ** 62 + 1, 30_000, 1_000), 30_000);
    assert.equal(nextPollInterval(Number.MAX_VALUE, 30_000, 1_000), 30_000);
    assert.equal(nextPollInterval(Number.POSITIVE_INFINITY, 30_000, 1_000), 30_000);
  });

  it("walks the seed's idle schedule 1s → 2, 4, 8, 16, 30, 30", () => {
    const seen: number[] = [];
    let cur = 1_000;
    for (let i = 0; i < 6; i++) seen.push((cur = nextPollInterval(cur, 30_000, 1_000)));
    assert.deepEqual(seen, [2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
  });
});

describe("backoffDelay", () => {
  const opts = { baseMs: 1_000, maxMs: 60_000 };

  it("is half the exponential delay when random() is 0", () => {
    assert.deepEqual([1, 2, 3, 4].map((a) => backoffDelay(a, opts, () => 0)), [500, 1_000, 2_000, 4_000]);
  });

  it("stays strictly below the exponential delay as random() approaches 1", () => {
    for (const attempt of [1, 2, 5, 6, 7, 40]) {
      const e = Math.min(60_000, 1_000 * 2 ** (attempt - 1));
      const d = backoffDelay(attempt, opts, () => almostOne);
      assert.ok(d < e && d > e * 0.99, `attempt ${attempt}: ${d} vs ${e}`);
    }
    // Also for delays where 0.5 + r/2 would round up to exactly 1.
    for (const e of [1, 3, 7, 1_000, 12_345.678, 2 ** 30]) {
      const d = backoffDelay(1, { baseMs: e, maxMs: 2 ** 31 }, () => almostOne);
      assert.ok(d < e && d >= e / 2, `${d} vs ${e}`);
    }
  });

  it("scales linearly with random() in [0.5, 1)", () => {
    assert.equal(backoffDelay(3, opts, () => 0.5), 3_000);
    assert.equal(backoffDelay(3, opts, () => 0.25), 2_500);
  });

  it("caps the exponential delay at maxMs before jitter", () => {
    assert.equal(backoffDelay(7, opts, () => 0), 30_000); // 64s capped to 60s
    assert.equal(backoffDelay(20, opts, () => 0.5), 45_000);
  });

  it("stays finite and capped for huge attempts", () => {
    for (const attempt of [1_024, 1_025, 5_000, 1e300, Number.MAX_SAFE_INTEGER, Number.POSITIVE_INFINITY, Number.NaN]) {
      const d = backoffDelay(attempt, opts, () => 0);
      assert.equal(d, 30_000, `attempt ${attempt}`);
    }
    const tiny = backoffDelay(Number.POSITIVE_INFINITY, { baseMs: 1e-300, maxMs: 10 }, () => 0);
    assert.equal(tiny, 5);
  });

  it("treats attempts below 1 as the first attempt", () => {
    assert.equal(backoffDelay(0, opts, () => 0), 500);
    assert.equal(backoffDelay(-3, opts, () => 0), 500);
    assert.equal(backoffDelay(2.9, opts, () => 0), 1_000);
  });

  it("never returns NaN, Infinity or more than a timer accepts", () => {
    const odd = [
      { baseMs: 0, maxMs: 1_000 },
      { baseMs: -1, maxMs: 1_000 },
      { baseMs: Number.NaN, maxMs: 1_000 },
      { baseMs: 1_000, maxMs: Number.NaN },
      { baseMs: 1_000, maxMs: -1 },
      { baseMs: 1_000, maxMs: Number.POSITIVE_INFINITY },
      { baseMs: Number.POSITIVE_INFINITY, maxMs: Number.POSITIVE_INFINITY },
      { baseMs: 1_000, maxMs: 0 },
    ];
    for (const o of odd) {
      for (const r of [0, 0.5, almostOne, 1, 7, -1, Number.NaN]) {
        for (const attempt of [1, 30, 2_000, Number.POSITIVE_INFINITY]) {
          const d = backoffDelay(attempt, o, () => r);
          assert.ok(Number.isFinite(d) && d >= 0 && d <= MAX_TIMER_MS, `${JSON.stringify(o)} r=${r} attempt=${attempt}: ${d}`);
        }
      }
    }
    assert.equal(backoffDelay(3, { baseMs: 0, maxMs: 1_000 }, () => 0.5), 0);
    assert.equal(backoffDelay(60, { baseMs: 1_000, maxMs: Number.POSITIVE_INFINITY }, () => 0), MAX_TIMER_MS / 2);
  });

  it("clamps random() values outside [0, 1)", () => {
    assert.equal(backoffDelay(1, opts, () => -5), 500);
    assert.equal(backoffDelay(1, opts, () => Number.NaN), 500);
    const d = backoffDelay(1, opts, () => 1);
    assert.ok(d < 1_000 && d > 999);
  });

  it("spreads a fleet's retries over [e/2, e)", () => {
    let seed = 1;
    const random = (): number => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
    const delays = Array.from({ length: 1_000 }, () => backoffDelay(4, opts, random));
    assert.ok(delays.every((d) => d >= 4_000 && d < 8_000));
    assert.ok(Math.min(...delays) < 4_100 && Math.max(...delays) > 7_900);
  });
});
