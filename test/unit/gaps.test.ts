import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { contiguousEnd, GapTracker, holesIn } from "../../src/consumption/gaps.ts";
import { anyRunningBelow, Horizon, parseSnapshot } from "../../src/consumption/snapshot.ts";

const P = (...xs: number[]) => xs.map((x) => BigInt(x));
const idle = parseSnapshot("100:100:");
const stalePolicy = (harborLag: number) => ({ minAgeMs: 250, staleAfterMs: 10_000, harborLag });

/** Sees the window at t=0 (everything fresh), then again after the stale threshold. */
function staleDecision(checkpoint: number, window: number[], lag: number, running = parseSnapshot("5:200:7")) {
  const g = new GapTracker(stalePolicy(lag));
  const h = new Horizon();
  // A transaction (7) that began before the holes is still running, so nothing is provable.
  h.record({ sentAt: 0, receivedAt: 0, position: 0n, xmax: 200n });
  const first = g.decide(0, BigInt(checkpoint), P(...window), running, h);
  assert.equal(first.target, BigInt(checkpoint), "blocked before the threshold");
  return g.decide(11_000, BigInt(checkpoint), P(...window), running, h);
}

describe("holesIn / contiguousEnd", () => {
  it("finds ranges of missing positions", () => {
    assert.deepEqual(holesIn(0n, P(2, 3, 7, 8, 10)), [{ from: 1n, to: 1n }, { from: 4n, to: 6n }, { from: 9n, to: 9n }]);
    assert.deepEqual(holesIn(5n, []), []);
    assert.equal(contiguousEnd(3n, P(4, 5, 7)), 5n);
    assert.equal(contiguousEnd(3n, P(5)), 3n);
  });
});

describe("GapTracker stale passes keep the seed's safe-harbor math", () => {
  it("stays `lag` rows behind the window end (seed #8: 5)", () => {
    const s = staleDecision(0, [2, 3, 4, 5, 6], 1);
    assert.equal(s.target, 5n);
    assert.deepEqual(s.passed.map((p) => [p.from, p.to, p.reason]), [[1n, 1n, "stale"]]);
  });
  it("caps the lag to the window (seed #9: 2)", () => {
    assert.equal(staleDecision(0, [2, 3], 8).target, 2n);
  });
  it("passes consecutive leading holes together (seed #12: 103, #13: 103)", () => {
    assert.equal(staleDecision(99, [102, 103, 104], 1).target, 103n);
    assert.equal(staleDecision(99, [103, 104], 8).target, 103n);
  });
  it("seed's 1,[2..21],8 gives 13", () => {
    assert.equal(staleDecision(0, Array.from({ length: 20 }, (_, i) => i + 2), 8).target, 13n);
  });
  it("never passes a fresh hole because an older one went stale (seed weak point 2)", () => {
    const g = new GapTracker(stalePolicy(1));
    const h = new Horizon();
    const running = parseSnapshot("5:200:7");
    g.decide(0, 0n, P(2), running, h); // hole 1 seen at t=0
    const d = g.decide(11_000, 0n, P(2, 4, 5, 6), running, h); // hole 3 first seen now
    assert.equal(d.target, 2n);
    assert.equal(d.blockedAt, 3n);
    assert.equal(d.blockedSince, 11_000);
    assert.deepEqual(d.passed.map((p) => p.reason), ["stale"]);
  });
  it("never passes anything when stale passing is disabled", () => {
    const g = new GapTracker({ minAgeMs: 0, staleAfterMs: false, harborLag: 0 });
    const running = parseSnapshot("5:200:7");
    assert.equal(g.decide(1e9, 0n, P(2, 3), running, new Horizon()).target, 0n);
  });
});

describe("GapTracker proven holes", () => {
  it("holds a hole while a transaction that existed when it was known still runs", () => {
    const g = new GapTracker({ minAgeMs: 250, staleAfterMs: false, harborLag: 8 });
    const h = new Horizon();
    const t0 = 1_000;
    const running = parseSnapshot("50:60:50");
    h.record({ sentAt: t0, receivedAt: t0, position: 3n, xmax: 60n });
    assert.equal(g.decide(t0, 0n, P(2, 3), running, h).target, 0n, "too young");
    h.record({ sentAt: t0 + 300, receivedAt: t0 + 300, position: 3n, xmax: 61n });
    const held = g.decide(t0 + 300, 0n, P(2, 3), running, h);
    assert.equal(held.target, 0n, "writer 50 may still commit position 1");
    assert.equal(held.blockedAt, 1n);
    const done = parseSnapshot("61:62:");
    h.record({ sentAt: t0 + 500, receivedAt: t0 + 500, position: 3n, xmax: 62n });
    const d = g.decide(t0 + 500, 0n, P(2, 3), done, h);
    assert.equal(d.target, 3n);
    assert.deepEqual(d.passed, [{ from: 1n, to: 1n, reason: "rolled_back", firstSeenAt: t0 }]);
  });
  it("ignores transactions that began after the reference snapshot", () => {
    const g = new GapTracker({ minAgeMs: 250, staleAfterMs: false, harborLag: 8 });
    const h = new Horizon();
    h.record({ sentAt: 0, receivedAt: 0, position: 3n, xmax: 60n });
    g.decide(0, 0n, P(2, 3), parseSnapshot("60:60:"), h);
    h.record({ sentAt: 250, receivedAt: 260, position: 3n, xmax: 61n });
    // 70 and 80 started later: they cannot have drawn position 1
    assert.equal(g.decide(300, 0n, P(2, 3), parseSnapshot("70:90:70,80"), h).target, 3n);
  });
  it("dates holes by the horizon, so replays over old holes do not wait", () => {
    const g = new GapTracker({ minAgeMs: 250, staleAfterMs: 30_000, harborLag: 8 });
    const h = new Horizon();
    h.record({ sentAt: 0, receivedAt: 5, position: 1_000n, xmax: 500n }); // seen long ago
    h.record({ sentAt: 10_000, receivedAt: 10_001, position: 1_000n, xmax: 900n });
    const d = g.decide(10_001, 0n, P(1, 2, 4, 5, 9, 10), idle, h);
    assert.equal(d.target, 10n);
    assert.deepEqual(d.passed.map((p) => [p.from, p.to, p.reason]), [[3n, 3n, "rolled_back"], [6n, 8n, "rolled_back"]]);
  });
  it("splits a tracked hole when part of it fills and keeps each part's age", () => {
    const g = new GapTracker({ minAgeMs: 0, staleAfterMs: 1_000, harborLag: 0 });
    const h = new Horizon();
    const running = parseSnapshot("5:200:7");
    g.decide(0, 0n, P(5), running, h); // hole 1..4 at t=0
    g.decide(500, 0n, P(3, 5, 9), running, h); // 1..2 and 4 old, 6..8 new at 500
    assert.deepEqual(g.tracked().map((x) => [x.from, x.to, x.firstSeenAt]), [[1n, 2n, 0], [4n, 4n, 0], [6n, 8n, 500]]);
    const d = g.decide(1_200, 0n, P(3, 5, 9), running, h);
    assert.equal(d.target, 5n, "old holes stale, 6..8 still young");
  });
});

describe("snapshots", () => {
  it("parses and finds running transactions below a bound", () => {
    const s = parseSnapshot("10:20:12,15");
    assert.deepEqual(s, { xmin: 10n, xmax: 20n, xip: [12n, 15n] });
    assert.ok(anyRunningBelow(s, 13n));
    assert.ok(!anyRunningBelow(s, 12n));
    assert.ok(!anyRunningBelow(parseSnapshot("10:10:"), 1000n));
  });
  it("horizon answers conservatively after pruning", () => {
    const h = new Horizon(1_000);
    for (let t = 0; t <= 5_000; t += 100) h.record({ sentAt: t, receivedAt: t + 1, position: BigInt(t), xmax: BigInt(t) });
    assert.equal(h.drawnBy(0n), 1, "the anchor is kept");
    assert.ok(h.drawnBy(2_000n)! >= 2_001);
    assert.ok(h.xmaxAt(4_500)! >= 4_500n);
    assert.equal(h.drawnBy(99_999n), undefined);
  });
});

describe("GapTracker on a contiguous window (the O(1) path)", () => {
  it("takes the whole window and forgets holes that have filled", () => {
    const g = new GapTracker({ minAgeMs: 250, staleAfterMs: false, harborLag: 8 });
    const h = new Horizon();
    h.record({ sentAt: 0, receivedAt: 0, position: 13n, xmax: 100n });
    const running = parseSnapshot("50:100:50");
    const blocked = g.decide(0, 10n, P(11, 13), running, h);
    assert.equal(blocked.target, 11n);
    assert.equal(g.tracked().length, 1, "hole 12 tracked");
    const d = g.decide(10, 10n, P(11, 12, 13, 14), running, h);
    assert.deepEqual(d, { target: 14n, passed: [], contiguousEnd: 14n, blockedAt: undefined, blockedSince: undefined, highestVisible: 14n });
    assert.equal(g.tracked().length, 0);
  });
  it("agrees with holesIn and contiguousEnd on windows with and without holes", () => {
    const g = new GapTracker({ minAgeMs: 250, staleAfterMs: false, harborLag: 8 });
    const running = parseSnapshot("50:100:50");
    const cases: [number, number[]][] = [[10, [11]], [10, [11, 12, 13]], [10, [12, 13, 14]], [10, [11, 13, 14]], [10, [11, 12, 14]], [0, [1, 2, 3, 5]]];
    for (const [cp, window] of cases) {
      const d = g.decide(0, BigInt(cp), P(...window), running, new Horizon());
      const holes = holesIn(BigInt(cp), P(...window));
      assert.equal(d.contiguousEnd, contiguousEnd(BigInt(cp), P(...window)), `contiguousEnd of ${cp} ${window}`);
      assert.equal(d.target, holes.length === 0 ? BigInt(window.at(-1)!) : d.contiguousEnd, `target of ${cp} ${window}`);
      assert.equal(d.blockedAt, holes[0]?.from, `blockedAt of ${cp} ${window}`);
      g.reset();
    }
  });
});
