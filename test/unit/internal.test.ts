import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { deferred, MAX_TIMER_MS, sleep } from "../../src/internal/deferred.ts";
import { lockKey, lockKeyParts } from "../../src/internal/lock-key.ts";
import { isSluiceError } from "../../src/errors.ts";

/** A signal that counts its abort listeners, to prove sleep() removes them. */
function countingSignal(): { ac: AbortController; active: () => number } {
  const ac = new AbortController();
  const signal = ac.signal;
  let active = 0;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  Object.assign(signal, {
    addEventListener(...args: Parameters<typeof add>): void {
      if (args[0] === "abort") active++;
      add(...args);
    },
    removeEventListener(...args: Parameters<typeof remove>): void {
      if (args[0] === "abort") active--;
      remove(...args);
    },
  });
  return { ac, active: () => active };
}

describe("deferred", () => {
  it("resolves from outside", async () => {
    const d = deferred<number>();
    d.resolve(42);
    d.resolve(7);
    d.reject(new Error("ignored"));
    assert.equal(await d.promise, 42);
  });

  it("rejects from outside", async () => {
    const d = deferred<string>();
    const boom = new Error("boom");
    d.reject(boom);
    await assert.rejects(d.promise, (e: unknown) => e === boom);
  });

  it("stays pending until settled", async () => {
    const d = deferred<void>();
    let settled = false;
    void d.promise.then(() => { settled = true; });
    await sleep(5);
    assert.equal(settled, false);
    d.resolve();
    await d.promise;
    assert.equal(settled, true);
  });
});

describe("sleep", () => {
  it("resolves true after the delay", async () => {
    const start = performance.now();
    assert.equal(await sleep(30), true);
    assert.ok(performance.now() - start >= 25, "waited about 30 ms");
  });

  it("resolves true at once for zero, negative and NaN delays", async () => {
    assert.deepEqual(await Promise.all([sleep(0), sleep(-5), sleep(Number.NaN)]), [true, true, true]);
  });

  it("resolves false at once when the signal already aborted", async () => {
    const ac = new AbortController();
    ac.abort(new Error("stop"));
    const start = performance.now();
    assert.equal(await sleep(10_000, ac.signal), false);
    assert.ok(performance.now() - start < 5_000, "did not wait the full delay");
  });

  it("resolves false early when the signal aborts, and never rejects", async () => {
    const { ac, active } = countingSignal();
    const start = performance.now();
    const p = sleep(10_000, ac.signal);
    assert.equal(active(), 1);
    setTimeout(() => ac.abort(new Error("stop")), 10);
    assert.equal(await p, false);
    assert.ok(performance.now() - start < 5_000, "did not wait the full delay");
  });

  it("clears its timer when the signal aborts", async () => {
    const realSet = globalThis.setTimeout;
    const realClear = globalThis.clearTimeout;
    const ac = new AbortController();
    let created: unknown;
    const cleared: unknown[] = [];
    let p: Promise<boolean>;
    // Spy only around the synchronous calls, so the runner's own timers are untouched.
    globalThis.setTimeout = ((fn: () => void, ms?: number) => (created = realSet(fn, ms))) as unknown as typeof setTimeout;
    try {
      p = sleep(60_000, ac.signal);
    } finally {
      globalThis.setTimeout = realSet;
    }
    globalThis.clearTimeout = ((h: unknown) => {
      cleared.push(h);
      realClear(h as Parameters<typeof clearTimeout>[0]);
    }) as typeof clearTimeout;
    try {
      ac.abort();
    } finally {
      globalThis.clearTimeout = realClear;
      realClear(created as Parameters<typeof clearTimeout>[0]); // no 60 s leak if the assertion fails
    }
    assert.equal(await p, false);
    assert.ok(created !== undefined);
    assert.deepEqual(cleared, [created]);
  });

  it("removes its abort listener when the delay elapses", async () => {
    const { ac, active } = countingSignal();
    assert.equal(await sleep(1, ac.signal), true);
    assert.equal(active(), 0);
    ac.abort();
  });

  it("clamps delays above the timer limit instead of firing at once", async () => {
    const ac = new AbortController();
    const p = sleep(Number.POSITIVE_INFINITY, ac.signal);
    const q = sleep(MAX_TIMER_MS * 2, ac.signal);
    // An unclamped timer would overflow and fire after ~1 ms, resolving true.
    await sleep(30);
    ac.abort();
    assert.deepEqual(await Promise.all([p, q]), [false, false]);
    assert.equal(MAX_TIMER_MS, 2 ** 31 - 1);
  });
});

describe("lockKey", () => {
  it("is 64-bit FNV-1a over UTF-8, as a signed bigint (published test vectors)", () => {
    assert.equal(lockKey(""), BigInt.asIntN(64, 0xcbf29ce484222325n));
    assert.equal(lockKey("a"), BigInt.asIntN(64, 0xaf63dc4c8601ec8cn));
    assert.equal(lockKey("foobar"), BigInt.asIntN(64, 0x85944171f73967e8n));
  });

  it("never changes (fixed expected values)", () => {
    assert.equal(lockKey(""), -3750763034362895579n);
    assert.equal(lockKey("sluice:leader:sluice.worker_nodes"), 66951572537350792n);
    assert.equal(lockKey("ä😀"), -3471971218618628949n);
  });

  it("stays within the signed 64-bit range and differs per namespace", () => {
    const seen = new Set<bigint>();
    let negative = 0;
    for (let i = 0; i < 2_000; i++) {
      const k = lockKey(`sluice:leader:ns${i}`);
      assert.equal(typeof k, "bigint");
      assert.ok(k >= -(2n ** 63n) && k < 2n ** 63n, String(k));
      if (k < 0n) negative++;
      seen.add(k);
    }
    assert.equal(seen.size, 2_000);
    // Both signs occur. (FNV-1a mixes its top bits weakly, so for names that
    // differ only at the end the split is uneven; only distinctness matters.)
    assert.ok(negative > 0 && negative < 2_000, "both signs occur");
    assert.ok(lockKey("") < 0n && lockKey("sluice:leader:sluice.worker_nodes") > 0n);
    assert.equal(lockKey("sluice:leader:ns1"), lockKey("sluice:leader:ns1"));
  });
});

describe("lockKeyParts", () => {
  it("splits a key the way pg_locks shows it", () => {
    assert.deepEqual(lockKeyParts(7237492748123847n), { classid: 1685110, objid: 407961287 });
    assert.deepEqual(lockKeyParts(0n), { classid: 0, objid: 0 });
    assert.deepEqual(lockKeyParts(-1n), { classid: 4294967295, objid: 4294967295 });
    assert.deepEqual(lockKeyParts(-(2n ** 63n)), { classid: 2147483648, objid: 0 });
    assert.deepEqual(lockKeyParts(2n ** 63n - 1n), { classid: 2147483647, objid: 4294967295 });
  });

  it("round-trips every lockKey", () => {
    for (const text of ["", "a", "foobar", "sluice:leader:app", "ä😀"]) {
      const key = lockKey(text);
      const { classid, objid } = lockKeyParts(key);
      assert.ok(Number.isInteger(classid) && classid >= 0 && classid < 2 ** 32);
      assert.ok(Number.isInteger(objid) && objid >= 0 && objid < 2 ** 32);
      assert.equal(BigInt.asIntN(64, (BigInt(classid) << 32n) | BigInt(objid)), key);
    }
  });

  it("rejects keys outside the bigint range", () => {
    for (const bad of [2n ** 63n, -(2n ** 63n) - 1n, 2n ** 64n]) {
      assert.throws(() => lockKeyParts(bad), (e: unknown) => isSluiceError(e, "INVALID_ARGUMENT"));
    }
  });
});
