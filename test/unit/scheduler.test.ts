/**
 * The ready queue between runners and loops: first prepared, first taken,
 * and claims (a runner reserving a waiting loop while it opens a batch's
 * transaction for it) that never lose a batch or a loop.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Outcome, ReadyBatch } from "../../src/consumption/batch.ts";
import { Scheduler } from "../../src/consumption/scheduler.ts";
import { deferred } from "../../src/internal/deferred.ts";

function batch(consumer: string): ReadyBatch {
  return { consumer, from: 0n, to: 1n, events: [], skips: [], outcome: deferred<Outcome>() };
}

/** Settles to the value, or "pending" when it has not settled after a macrotask. */
async function settled<T>(p: Promise<T>): Promise<T | "pending"> {
  return await Promise.race([p, new Promise<"pending">((r) => setTimeout(() => r("pending"), 0))]);
}

describe("Scheduler", () => {
  it("hands batches first prepared, first taken, to whichever loop asks first", async () => {
    const s = new Scheduler();
    const a = batch("a");
    const b = batch("b");
    s.submit(a);
    s.submit(b);
    assert.equal(s.waiting, 2);
    assert.equal(await s.take(), a);
    const waiting = [s.take(), s.take()];
    assert.equal(await waiting[0], b);
    const c = batch("c");
    s.submit(c);
    assert.equal(await waiting[1], c);
  });

  it("claims only a waiting loop, and none while a prepared batch waits", async () => {
    const s = new Scheduler();
    assert.equal(s.claim(), undefined, "no loop waits");
    s.submit(batch("a"));
    const t = s.take();
    assert.equal((await t)!.consumer, "a");
    s.submit(batch("b"));
    const t2 = s.take(); // takes b at once
    assert.equal((await t2)!.consumer, "b");
    const t3 = s.take();
    const claim = s.claim();
    assert.ok(claim, "a loop waits");
    assert.equal(s.claim(), undefined, "the only loop is claimed");
    const d = batch("d");
    s.submit(d); // not to the claimed loop
    assert.equal(s.waiting, 1);
    assert.equal(await settled(t3), "pending");
    assert.equal(claim.give(batch("e")), true);
    assert.equal((await t3)!.consumer, "e");
    assert.equal(await s.take(), d);
  });

  it("a released claim puts its loop back first in line, or gives it a batch prepared meanwhile", async () => {
    const s = new Scheduler();
    const first = s.take();
    const second = s.take();
    const claim = s.claim()!;
    claim.release();
    const a = batch("a");
    s.submit(a);
    assert.equal(await first, a, "the released loop is first in line again");
    const claim2 = s.claim()!;
    const b = batch("b");
    s.submit(b); // no free loop: waits
    assert.equal(s.waiting, 1);
    claim2.release();
    assert.equal(await second, b);
    assert.equal(s.waiting, 0);
    assert.equal(claim2.give(batch("late")), false, "a released claim gives nothing");
  });

  it("a claimed loop that aborted refuses the batch, which is not lost", async () => {
    const s = new Scheduler();
    const ctl = new AbortController();
    const t = s.take(ctl.signal);
    const claim = s.claim()!;
    ctl.abort();
    assert.equal(await t, undefined);
    assert.equal(claim.give(batch("a")), false);
    assert.equal(await s.take(ctl.signal), undefined, "an aborted loop never waits");
    assert.equal(s.claim(), undefined);
    // Released after its loop aborted: a batch prepared meanwhile stays for the next loop.
    const x = batch("x");
    const ctl3 = new AbortController();
    const t3 = s.take(ctl3.signal);
    const c3 = s.claim()!;
    ctl3.abort();
    await t3;
    s.submit(x);
    c3.release(); // the gone loop must not swallow x
    assert.equal(s.waiting, 1);
    assert.equal(await s.take(), x);
  });

  it("close releases waiting and claimed loops and discards prepared batches", async () => {
    const s = new Scheduler();
    const waiting = s.take();
    const claimed = s.take();
    const claim = s.claim()!;
    const a = batch("a");
    s.close();
    assert.equal(await waiting, undefined);
    assert.equal(await claimed, undefined);
    assert.equal(claim.give(batch("b")), false);
    s.submit(a);
    assert.deepEqual(await a.outcome.promise, { kind: "discarded" });
    assert.equal(s.claim(), undefined);
  });

  it("withdraw discards only that consumer's waiting batches", async () => {
    const s = new Scheduler();
    const a = batch("a");
    const b = batch("b");
    s.submit(a);
    s.submit(b);
    s.withdraw("a");
    assert.deepEqual(await a.outcome.promise, { kind: "discarded" });
    assert.equal(await s.take(), b);
  });
});
