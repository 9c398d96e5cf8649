import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type WaitResult, Wakeups } from "../../src/wakeup/wakeups.ts";

/** Settles `p` or reports "pending" after `ms` (for "not resolved yet" checks). */
function within<T>(p: Promise<T>, ms: number): Promise<T | "pending"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pending = new Promise<"pending">((r) => (timer = setTimeout(() => r("pending"), ms)));
  return Promise.race([p, pending]).finally(() => clearTimeout(timer));
}

/**
 * Replaces the global timers for the duration of `fn`, recording every timer
 * created (with its delay) and every one cleared or fired.
 */
async function trackTimers<T>(fn: (t: { created: Map<unknown, number>; live: () => number }) => Promise<T>): Promise<T> {
  const g = globalThis as unknown as { setTimeout: typeof setTimeout; clearTimeout: typeof clearTimeout };
  const realSet = g.setTimeout;
  const realClear = g.clearTimeout;
  const created = new Map<unknown, number>();
  const open = new Set<unknown>();
  g.setTimeout = ((cb: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const id: unknown = realSet(() => {
      open.delete(id);
      cb(...args);
    }, ms);
    created.set(id, ms ?? 0);
    open.add(id);
    return id;
  }) as typeof setTimeout;
  g.clearTimeout = ((id: unknown) => {
    open.delete(id);
    realClear(id as ReturnType<typeof setTimeout>);
  }) as typeof clearTimeout;
  try {
    return await fn({ created, live: () => open.size });
  } finally {
    g.setTimeout = realSet;
    g.clearTimeout = realClear;
  }
}

/** An AbortSignal that counts its listeners. */
function countedSignal(): { ctl: AbortController; listeners: () => number } {
  const ctl = new AbortController();
  const s = ctl.signal;
  const set = new Set<unknown>();
  const add = s.addEventListener.bind(s);
  const remove = s.removeEventListener.bind(s);
  type Add = (type: string, l: unknown, o?: unknown) => void;
  const patched = s as unknown as { addEventListener: Add; removeEventListener: Add };
  patched.addEventListener = (type, l, o) => {
    if (type === "abort") set.add(l);
    (add as Add)(type, l, o);
  };
  patched.removeEventListener = (type, l, o) => {
    if (type === "abort") set.delete(l);
    (remove as Add)(type, l, o);
  };
  return { ctl, listeners: () => set.size };
}

describe("Wakeups: generation-based broadcast", () => {
  it("starts at generation 0 and every signal increases it, with or without waiters", () => {
    const w = new Wakeups();
    assert.equal(w.generation, 0);
    w.signal();
    w.signal();
    assert.equal(w.generation, 2);
  });

  it("one signal wakes every waiter (broadcast, not one-shot)", async () => {
    const w = new Wakeups();
    const g = w.generation;
    const waits = [w.wait(g, 60_000), w.wait(g, 60_000), w.wait(g, 60_000)];
    assert.equal(await within(Promise.race(waits), 30), "pending", "nobody wakes before the signal");
    w.signal();
    assert.deepEqual(await Promise.all(waits), ["woken", "woken", "woken"]);
  });

  it("a signal sent before the wait is not lost when the captured generation is older (#18)", async () => {
    const w = new Wakeups();
    const captured = w.generation; // captured before "probing"
    w.signal(); // arrives while the consumer is busy
    const t0 = Date.now();
    assert.equal(await w.wait(captured, 60_000), "woken");
    assert.ok(Date.now() - t0 < 10_000, "returns at once, not after the 60 s wait");
  });

  it("a wait with the current generation does not see earlier signals", async () => {
    const w = new Wakeups();
    w.signal();
    const p = w.wait(w.generation, 60_000);
    assert.equal(await within(p, 50), "pending");
    w.signal();
    assert.equal(await p, "woken");
  });

  it("a woken waiter is not woken twice; later signals reach only later waiters", async () => {
    const w = new Wakeups();
    const first = w.wait(w.generation, 60_000);
    w.signal();
    assert.equal(await first, "woken");
    const second = w.wait(w.generation, 60_000);
    assert.equal(await within(second, 30), "pending");
    w.signal();
    assert.equal(await second, "woken");
  });

  it("notifiedSince tells an events NOTIFY apart from other signals", () => {
    const w = new Wakeups();
    const g = w.generation;
    w.signal();
    assert.equal(w.notifiedSince(g), false, "a head read or health signal");
    w.signal(true);
    assert.equal(w.notifiedSince(g), true);
    const g2 = w.generation;
    assert.equal(w.notifiedSince(g2), false, "nothing since the last signal");
    w.signal();
    assert.equal(w.notifiedSince(g2), false);
  });

  it("times out after ms without a signal", async () => {
    const w = new Wakeups();
    const t0 = Date.now();
    assert.equal(await w.wait(w.generation, 40), "timeout");
    assert.ok(Date.now() - t0 >= 30, `waited ${Date.now() - t0} ms`);
  });

  it("returns timeout at once for ms <= 0 (no timer)", async () => {
    await trackTimers(async (t) => {
      const w = new Wakeups();
      assert.equal(await w.wait(w.generation, 0), "timeout");
      assert.equal(await w.wait(w.generation, -5), "timeout");
      assert.equal(t.created.size, 0);
    });
  });

  it("prefers woken over timeout and aborted when the generation already moved", async () => {
    const w = new Wakeups();
    const g = w.generation;
    w.signal();
    assert.equal(await w.wait(g, 0), "woken");
    const { ctl } = countedSignal();
    assert.equal(await w.wait(g, 1_000, ctl.signal), "woken");
  });

  it("returns aborted at once for an already aborted signal, even after a wakeup", async () => {
    const w = new Wakeups();
    const g = w.generation;
    w.signal();
    assert.equal(await w.wait(g, 60_000, AbortSignal.abort()), "aborted");
  });

  it("aborting ends a pending wait with aborted", async () => {
    const w = new Wakeups();
    const { ctl } = countedSignal();
    const p = w.wait(w.generation, 60_000, ctl.signal);
    assert.equal(await within(p, 20), "pending");
    ctl.abort();
    assert.equal(await p, "aborted");
  });

  it("aborting one waiter leaves the others waiting for the signal", async () => {
    const w = new Wakeups();
    const a = new AbortController();
    const g = w.generation;
    const aborted = w.wait(g, 60_000, a.signal);
    const other = w.wait(g, 60_000);
    a.abort();
    assert.equal(await aborted, "aborted");
    assert.equal(await within(other, 30), "pending");
    w.signal();
    assert.equal(await other, "woken");
  });

  it("clears its timer and abort listener when woken, aborted or timed out", async () => {
    await trackTimers(async (t) => {
      const w = new Wakeups();
      const results: WaitResult[] = [];

      const woken = countedSignal();
      const p1 = w.wait(w.generation, 60_000, woken.ctl.signal);
      assert.equal(t.live(), 1);
      assert.equal(woken.listeners(), 1);
      w.signal();
      results.push(await p1);
      assert.equal(t.live(), 0, "timer cleared on wakeup");
      assert.equal(woken.listeners(), 0, "abort listener removed on wakeup");

      const aborted = countedSignal();
      const p2 = w.wait(w.generation, 60_000, aborted.ctl.signal);
      assert.equal(t.live(), 1);
      aborted.ctl.abort();
      results.push(await p2);
      assert.equal(t.live(), 0, "timer cleared on abort");

      const timed = countedSignal();
      results.push(await w.wait(w.generation, 5, timed.ctl.signal));
      assert.equal(t.live(), 0);
      assert.equal(timed.listeners(), 0, "abort listener removed on timeout");

      assert.deepEqual(results, ["woken", "aborted", "timeout"]);
    });
  });

  it("forgets a waiter that timed out (a later signal does not touch it)", async () => {
    const w = new Wakeups();
    assert.equal(await w.wait(w.generation, 5), "timeout");
    w.signal(); // must not throw or resolve anything twice
    const p = w.wait(w.generation, 60_000);
    assert.equal(await within(p, 20), "pending");
    w.signal();
    assert.equal(await p, "woken");
  });

  it("clamps huge delays to the 32-bit timer limit instead of firing at once", async () => {
    await trackTimers(async (t) => {
      const w = new Wakeups();
      const p = w.wait(w.generation, 2 ** 40);
      assert.ok([...t.created.values()].every((ms) => ms <= 2_147_483_647), `delays ${[...t.created.values()]}`);
      assert.equal(await within(p, 30), "pending");
      w.signal();
      assert.equal(await p, "woken");
      assert.equal(t.live(), 0);
    });
  });
});
