import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  assignmentChanges,
  compareCodePoints,
  computeAssignments,
  type WorkerCapability,
} from "../../src/coordination/assignment.ts";

// Seeded PRNG (mulberry32): reproducible "random" cases on every runtime.
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

const uuid = (n: number): string => `00000000-0000-0000-0000-${String(n).padStart(12, "0")}`;
const names = (n: number, prefix = "c"): string[] => Array.from({ length: n }, (_, i) => `${prefix}${String(i).padStart(3, "0")}`);
const fleet = (ids: readonly string[], consumers: readonly string[]): WorkerCapability[] => ids.map((workerId) => ({ workerId, consumers }));
const none = new Map<string, string | null>();

function counts(result: ReadonlyMap<string, string | null>): Map<string | null, number> {
  const out = new Map<string | null, number>();
  for (const w of result.values()) out.set(w, (out.get(w) ?? 0) + 1);
  return out;
}

function sortedCounts(result: ReadonlyMap<string, string | null>, workerIds: readonly string[]): number[] {
  const c = counts(result);
  return workerIds.map((w) => c.get(w) ?? 0).sort((a, b) => b - a);
}

/** Checks the invariants every result must satisfy; returns the loads. */
function checkValid(
  consumers: readonly string[],
  workers: readonly WorkerCapability[],
  result: ReadonlyMap<string, string | null>,
): Map<string, number> {
  const caps = new Map<string, Set<string>>();
  for (const w of workers) {
    const s = caps.get(w.workerId) ?? new Set<string>();
    for (const c of w.consumers) s.add(c);
    caps.set(w.workerId, s);
  }
  const unique = [...new Set(consumers)];
  assert.deepEqual([...result.keys()].sort(), unique.sort(), "exactly the given consumers");
  const load = new Map<string, number>([...caps.keys()].map((id) => [id, 0]));
  for (const [c, w] of result) {
    const capable = [...caps].filter(([, s]) => s.has(c)).map(([id]) => id);
    if (w === null) {
      assert.equal(capable.length, 0, `${c} is unassigned although ${capable.join(",")} can run it`);
    } else {
      assert.ok(caps.get(w)?.has(c), `${c} went to ${w}, which cannot run it`);
      load.set(w, load.get(w)! + 1);
    }
  }
  // Local balance: no consumer could move to a capable worker with load <= L-2.
  for (const [c, w] of result) {
    if (w === null) continue;
    for (const [v, s] of caps) {
      if (v !== w && s.has(c)) {
        assert.ok(load.get(v)! > load.get(w)! - 2, `${c} could move from ${w} (${load.get(w)}) to ${v} (${load.get(v)})`);
      }
    }
  }
  return load;
}

describe("computeAssignments: the peer's scenarios", () => {
  it("#14 spreads 10 shuffled consumers evenly over 2 workers", () => {
    const consumers = shuffled(names(10), prng(14));
    const r = computeAssignments(consumers, fleet([uuid(1), uuid(2)], consumers), none);
    assert.deepEqual(sortedCounts(r, [uuid(1), uuid(2)]), [5, 5]);
    checkValid(consumers, fleet([uuid(1), uuid(2)], consumers), r);
  });

  it("#15 gives 7 consumers on 3 workers counts 3, 2, 2", () => {
    const ids = [uuid(1), uuid(2), uuid(3)];
    const r = computeAssignments(names(7), fleet(ids, names(7)), none);
    assert.deepEqual(sortedCounts(r, ids), [3, 2, 2]);
  });

  it("#16 puts every consumer on a single worker", () => {
    const r = computeAssignments(["alpha", "beta", "gamma"], fleet(["w"], ["alpha", "beta", "gamma"]), none);
    assert.deepEqual([...r], [["alpha", "w"], ["beta", "w"], ["gamma", "w"]]);
  });

  it("#17 maps every consumer to null without workers, even with (dead) current owners", () => {
    const r = computeAssignments(["a", "b"], [], new Map([["a", "gone"], ["b", null]]));
    assert.deepEqual([...r], [["a", null], ["b", null]]);
  });

  it("#18 returns an empty map without consumers", () => {
    assert.equal(computeAssignments([], fleet(["w1", "w2"], ["a"]), new Map([["a", "w1"]])).size, 0);
  });

  it("#19 is deterministic whatever the input order", () => {
    const random = prng(19);
    const consumers = names(23);
    const ids = [uuid(10), uuid(1), uuid(7)];
    const current = new Map<string, string | null>([["c001", uuid(7)], ["c005", uuid(99)], ["c010", null], ["c011", uuid(10)]]);
    const expected = [...computeAssignments(consumers, fleet(ids, consumers), current)];
    for (let i = 0; i < 25; i++) {
      const workers = shuffled(ids, random).map((workerId) => ({ workerId, consumers: shuffled(consumers, random) }));
      const cur = new Map(shuffled([...current], random));
      assert.deepEqual([...computeAssignments(shuffled(consumers, random), workers, cur)], expected);
    }
  });

  it("#24 deduplicates repeated worker ids (unlike the peer, they count once)", () => {
    const six = ["f", "a", "e", "b", "d", "c"];
    const r1 = computeAssignments(six, fleet(["B", "A", "A"], six), none);
    const r2 = computeAssignments([...six].reverse(), fleet(["A", "B", "A"], six), none);
    assert.deepEqual([...r1], [...r2]);
    assert.deepEqual([counts(r1).get("A"), counts(r1).get("B")], [3, 3]);
  });

  it("#24 merges the capabilities of a repeated worker id", () => {
    const r = computeAssignments(["x", "y"], [{ workerId: "A", consumers: ["x"] }, { workerId: "A", consumers: ["y"] }], none);
    assert.deepEqual([...r], [["x", "A"], ["y", "A"]]);
  });

  it("#25 balances 101 consumers in reverse order on 4 workers", () => {
    const consumers = names(101).reverse();
    const ids = [uuid(4), uuid(3), uuid(2), uuid(1)];
    const r = computeAssignments(consumers, fleet(ids, consumers), none);
    const c = sortedCounts(r, ids);
    assert.deepEqual(c, [26, 25, 25, 25]);
    assert.ok(c[0]! - c[c.length - 1]! <= 1);
  });
});

describe("computeAssignments: stickiness and minimal movement", () => {
  const twelve = names(12);

  it("scales up 2 → 3 workers moving exactly the minimum (6/6 → 4/4/4 moves 4)", () => {
    const current = new Map<string, string | null>(twelve.map((c, i) => [c, i < 6 ? "w1" : "w2"]));
    const desired = computeAssignments(twelve, fleet(["w1", "w2", "w3"], twelve), current);
    assert.deepEqual(sortedCounts(desired, ["w1", "w2", "w3"]), [4, 4, 4]);
    const changes = assignmentChanges(current, desired);
    assert.equal(changes.length, 4);
    assert.ok(changes.every((ch) => ch.to === "w3"));
    assert.deepEqual(changes.map((ch) => ch.from).sort(), ["w1", "w1", "w2", "w2"]);
  });

  it("scales down 3 → 2 workers moving only the dead worker's consumers", () => {
    const owners = ["w1", "w2", "w3"];
    const current = new Map<string, string | null>(twelve.map((c, i) => [c, owners[i % 3]!]));
    const desired = computeAssignments(twelve, fleet(["w1", "w3"], twelve), current);
    assert.deepEqual(sortedCounts(desired, ["w1", "w3"]), [6, 6]);
    const changes = assignmentChanges(current, desired);
    assert.equal(changes.length, 4);
    assert.ok(changes.every((ch) => ch.from === "w2" && ch.to !== null));
  });

  it("changes nothing when the input is already balanced", () => {
    // 7 on 3 with the extra consumer on the last worker, unlike a fresh run.
    const seven = names(7);
    const current = new Map<string, string | null>(seven.map((c, i) => [c, i < 3 ? "w3" : i < 5 ? "w1" : "w2"]));
    const desired = computeAssignments(seven, fleet(["w1", "w2", "w3"], seven), current);
    assert.deepEqual(assignmentChanges(current, desired), []);
  });

  it("keeps a consumer on its live owner and assigns only the new one", () => {
    const current = new Map<string, string | null>([["a", "w2"], ["b", "w1"]]);
    const desired = computeAssignments(["a", "b", "c"], fleet(["w1", "w2"], ["a", "b", "c"]), current);
    assert.deepEqual([desired.get("a"), desired.get("b")], ["w2", "w1"]);
    assert.deepEqual(assignmentChanges(current, desired).map((ch) => ch.consumer), ["c"]);
  });

  it("treats current owners missing from the worker list as dead", () => {
    const current = new Map<string, string | null>([["a", "ghost"], ["b", "w1"]]);
    const desired = computeAssignments(["a", "b"], fleet(["w1", "w2"], ["a", "b"]), current);
    assert.deepEqual([...desired], [["a", "w2"], ["b", "w1"]]);
  });

  it("is stable: feeding a result back in changes nothing", () => {
    const random = prng(7);
    for (let i = 0; i < 50; i++) {
      const consumers = names(1 + Math.floor(random() * 30));
      const workers = Array.from({ length: 1 + Math.floor(random() * 5) }, (_, w) => ({
        workerId: `w${w}`,
        consumers: consumers.filter(() => random() < 0.7),
      }));
      const first = computeAssignments(consumers, workers, none);
      assert.deepEqual(assignmentChanges(first, computeAssignments(consumers, workers, first)), []);
    }
  });

  it("moves the minimum number of consumers in homogeneous fleets (property)", () => {
    const random = prng(2024);
    for (let i = 0; i < 300; i++) {
      const n = Math.floor(random() * 40);
      const w = 1 + Math.floor(random() * 6);
      const consumers = names(n);
      const ids = shuffled(Array.from({ length: w }, (_, k) => `w${k}`), random);
      // Current owners: live workers (skewed towards the first), dead ones, null, or absent.
      const current = new Map<string, string | null>();
      for (const c of consumers) {
        const x = random();
        if (x < 0.6) current.set(c, ids[Math.floor(random() * random() * w)]!);
        else if (x < 0.75) current.set(c, `dead${Math.floor(random() * 3)}`);
        else if (x < 0.9) current.set(c, null);
      }
      const desired = computeAssignments(consumers, fleet(ids, consumers), current);
      const load = checkValid(consumers, fleet(ids, consumers), desired);
      const floor = Math.floor(n / w);
      const loads = [...load.values()];
      assert.ok(loads.every((l) => l === floor || l === floor + 1), `case ${i}: loads ${loads}`);

      // Minimum: every orphan moves, plus the excess above each worker's quota
      // (floor, or ceil for up to n mod w workers that already hold more than floor).
      const kept = new Map(ids.map((id) => [id, 0]));
      let orphans = 0;
      for (const c of consumers) {
        const o = current.get(c);
        if (o != null && kept.has(o)) kept.set(o, kept.get(o)! + 1);
        else orphans++;
      }
      const keptLoads = [...kept.values()];
      const excess = keptLoads.reduce((s, k) => s + Math.max(0, k - floor), 0);
      const minimum = orphans + excess - Math.min(n % w, keptLoads.filter((k) => k > floor).length);
      assert.equal(assignmentChanges(current, desired).length, minimum, `case ${i}`);

      // A live owner at or below floor(n/w) keeps every consumer it had.
      for (const [c, o] of current) {
        if (o != null && kept.has(o) && kept.get(o)! <= floor) assert.equal(desired.get(c), o, `case ${i}: ${c} left ${o}`);
      }
    }
  });

  it("handles a large scale-up quickly (2000 consumers, 1 → 40 workers)", () => {
    const consumers = names(2000);
    const current = new Map<string, string | null>(consumers.map((c) => [c, "w00"]));
    const ids = Array.from({ length: 40 }, (_, i) => `w${String(i).padStart(2, "0")}`);
    const desired = computeAssignments(consumers, fleet(ids, consumers), current);
    assert.deepEqual(new Set(sortedCounts(desired, ids)), new Set([50]));
    assert.equal(assignmentChanges(current, desired).length, 1950);
  });
});

describe("computeAssignments: capabilities and heterogeneous fleets", () => {
  it("never gives a consumer to a worker that lacks it", () => {
    const workers = [
      { workerId: "w1", consumers: ["a", "b", "c", "x"] },
      { workerId: "w2", consumers: ["a", "b", "c"] },
    ];
    // x sits on w2, which cannot run it: it must move to w1 even though w1 is busier.
    const current = new Map<string, string | null>([["x", "w2"], ["a", "w1"], ["b", "w1"]]);
    const desired = computeAssignments(["a", "b", "c", "x"], workers, current);
    assert.equal(desired.get("x"), "w1");
    checkValid(["a", "b", "c", "x"], workers, desired);
  });

  it("leaves consumers that no live worker can run unassigned", () => {
    const desired = computeAssignments(["a", "orphan"], fleet(["w1"], ["a"]), new Map([["orphan", "w1"]]));
    assert.deepEqual([...desired], [["a", "w1"], ["orphan", null]]);
  });

  it("keeps a rolling deploy running: old workers keep old consumers, the new one goes to the new worker", () => {
    const old = ["a", "b", "c", "d"];
    const workers = [
      { workerId: "old1", consumers: old },
      { workerId: "old2", consumers: old },
      { workerId: "new1", consumers: [...old, "e"] },
    ];
    const current = new Map<string, string | null>([["a", "old1"], ["b", "old1"], ["c", "old2"], ["d", "old2"]]);
    const desired = computeAssignments([...old, "e"], workers, current);
    assert.equal(desired.get("e"), "new1");
    assert.deepEqual(assignmentChanges(current, desired), [{ consumer: "e", from: null, to: "new1" }]);
  });

  it("balances around specialised workers", () => {
    // w1 alone can run the five "s" consumers; the six "g" consumers go mostly elsewhere.
    const s = names(5, "s");
    const g = names(6, "g");
    const workers = [
      { workerId: "w1", consumers: [...s, ...g] },
      { workerId: "w2", consumers: g },
      { workerId: "w3", consumers: g },
    ];
    const desired = computeAssignments([...s, ...g], workers, none);
    const load = checkValid([...s, ...g], workers, desired);
    assert.deepEqual([load.get("w1"), load.get("w2"), load.get("w3")], [5, 3, 3]);
    for (const c of s) assert.equal(desired.get(c), "w1");
  });

  it("stays locally balanced and complete on random heterogeneous fleets (property)", () => {
    const random = prng(0x5eed);
    for (let i = 0; i < 500; i++) {
      const consumers = names(Math.floor(random() * 30));
      const p = 0.1 + random() * 0.9;
      const ids = Array.from({ length: Math.floor(random() * 7) }, (_, k) => `w${k}`);
      const workers: WorkerCapability[] = ids.map((workerId) => ({ workerId, consumers: consumers.filter(() => random() < p) }));
      if (ids.length > 0 && random() < 0.3) workers.push({ workerId: ids[0]!, consumers: consumers.filter(() => random() < p) });
      const current = new Map<string, string | null>();
      for (const c of consumers) {
        const x = random();
        if (x < 0.5 && ids.length > 0) current.set(c, ids[Math.floor(random() * ids.length)]!);
        else if (x < 0.65) current.set(c, "dead");
        else if (x < 0.8) current.set(c, null);
      }
      const desired = computeAssignments(consumers, workers, current);
      checkValid(consumers, workers, desired);
      // Same answer for shuffled inputs.
      const again = computeAssignments(
        shuffled(consumers, random),
        shuffled(workers, random).map((w) => ({ workerId: w.workerId, consumers: shuffled(w.consumers, random) })),
        new Map(shuffled([...current], random)),
      );
      assert.deepEqual([...again], [...desired], `case ${i}`);
      // And stable once reached.
      assert.deepEqual(assignmentChanges(desired, computeAssignments(consumers, workers, desired)), [], `case ${i}`);
    }
  });

  it("ignores duplicate consumer names and names only present in current", () => {
    const desired = computeAssignments(["b", "a", "b"], fleet(["w1"], ["a", "b"]), new Map([["zombie", "w1"]]));
    assert.deepEqual([...desired.keys()], ["a", "b"]);
  });
});

describe("assignmentChanges", () => {
  it("lists only the rows that change, missing current rows counting as null", () => {
    const current = new Map<string, string | null>([["a", "w1"], ["b", "w1"], ["c", null], ["d", "w2"], ["only-current", "w1"]]);
    const desired = new Map<string, string | null>([["a", "w1"], ["b", "w2"], ["c", null], ["d", null], ["e", "w1"], ["f", null]]);
    assert.deepEqual(assignmentChanges(current, desired), [
      { consumer: "b", from: "w1", to: "w2" },
      { consumer: "d", from: "w2", to: null },
      { consumer: "e", from: null, to: "w1" },
    ]);
  });

  it("sorts by code point, not by locale and not by UTF-16 code unit", () => {
    const all = ["ä", "😀", "a", "Z", "ﬀ", "B"];
    const desired = new Map<string, string | null>(all.map((c) => [c, "w1"]));
    const order = assignmentChanges(new Map(), desired).map((ch) => ch.consumer);
    assert.deepEqual(order, ["B", "Z", "a", "ä", "ﬀ", "😀"]);
    // The alternatives disagree, so the test can tell them apart.
    assert.notDeepEqual([...all].sort((x, y) => x.localeCompare(y)), order);
    assert.notDeepEqual([...all].sort(), order);
  });

  it("returns nothing for identical maps", () => {
    const m = new Map<string, string | null>([["a", "w1"], ["b", null]]);
    assert.deepEqual(assignmentChanges(m, new Map(m)), []);
  });
});

describe("compareCodePoints", () => {
  it("orders like UTF-8 bytes", () => {
    const words = ["b", "", "ab", "a", "\u{10000}", "\uffff", "\ue000", "\ud7ff", "ä", "B"];
    const bytes = (s: string): number[] => [...new TextEncoder().encode(s)];
    const byByteOrder = [...words].sort((x, y) => {
      const a = bytes(x);
      const b = bytes(y);
      for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
      return a.length - b.length;
    });
    assert.deepEqual([...words].sort(compareCodePoints), byByteOrder);
    assert.equal(compareCodePoints("same", "same"), 0);
    assert.ok(compareCodePoints("a", "ab") < 0);
    assert.ok(compareCodePoints("\u{1F600}", "\uFB00") > 0);
  });
});
