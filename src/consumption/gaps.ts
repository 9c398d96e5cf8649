/**
 * The safe frontier: how far a consumer may advance its checkpoint over the
 * positions visible after it, and which holes it may pass. Pure.
 *
 * A hole is a missing position below a visible one. Positions come from a
 * CACHE 1 sequence and our store gives each appending transaction its id
 * before it draws a position, so the transaction that drew a missing position
 * had an id before any higher position was visible. Once every transaction
 * that had an id by then has ended and the position is still missing, it
 * never appears: the hole is *proven* (reason `rolled_back`). A writer that
 * bypasses the store may draw a position before it has an id; `minAgeMs`
 * covers that: the reference snapshot is taken that long after the hole was
 * known, so such a writer has its id by then.
 *
 * A hole that cannot be proven (its possible writers still run) is held until
 * it has been seen for `staleAfterMs`; then it is passed as `stale`, and the
 * checkpoint stays `harborLag` rows behind the window's end (the seed's safe
 * harbor). Every hole has its own age: a fresh hole is never passed because an
 * older one went stale.
 *
 * @module
 */
import { anyRunningBelow, type Horizon, type Snapshot } from "./snapshot.ts";

/** How holes are judged. */
export interface GapPolicy {
  /** A hole is proven only when known at least this long. */
  readonly minAgeMs: number;
  /** Pass unprovable holes after this long; `false` never does. */
  readonly staleAfterMs: number | false;
  /** Rows to stay behind the window's end after a stale pass. */
  readonly harborLag: number;
}

/** Why a hole was passed. */
export type PassReason = "rolled_back" | "stale";

/** A run of missing positions that a decision passes. */
export interface PassedRange {
  readonly from: bigint;
  readonly to: bigint;
  readonly reason: PassReason;
  /** Local time the consumer first saw the hole. */
  readonly firstSeenAt: number;
}

/** What the consumer may do now. */
export interface FrontierDecision {
  /** The checkpoint to advance to; equal to the checkpoint when it cannot move. */
  readonly target: bigint;
  /** Holes at or below `target` that advancing passes. */
  readonly passed: readonly PassedRange[];
  /** End of the visible run right after the checkpoint (no hole below it). */
  readonly contiguousEnd: bigint;
  /** First hole the consumer waits on, if any. */
  readonly blockedAt: bigint | undefined;
  /** When that hole was first seen. */
  readonly blockedSince: number | undefined;
  /** Highest visible position in the window. */
  readonly highestVisible: bigint | undefined;
}

interface Hole {
  readonly from: bigint;
  readonly to: bigint;
  readonly firstSeenAt: number;
  readonly drawnBy: number;
}

/** Holes between `checkpoint` and the visible `positions` (ascending), as ranges. */
export function holesIn(checkpoint: bigint, positions: readonly bigint[]): { from: bigint; to: bigint }[] {
  const out: { from: bigint; to: bigint }[] = [];
  let expected = checkpoint + 1n;
  for (const p of positions) {
    if (p > expected) out.push({ from: expected, to: p - 1n });
    if (p >= expected) expected = p + 1n;
  }
  return out;
}

/** End of the run of visible positions right after `checkpoint` (the checkpoint itself when none). */
export function contiguousEnd(checkpoint: bigint, positions: readonly bigint[]): bigint {
  let end = checkpoint;
  for (const p of positions) {
    if (p !== end + 1n) break;
    end = p;
  }
  return end;
}

/**
 * Tracks the holes one consumer has seen, each with its own age, and decides
 * how far it may advance.
 *
 * @example
 * ```ts
 * const gaps = new GapTracker({ minAgeMs: 250, staleAfterMs: 30_000, harborLag: 8 });
 * const d = gaps.decide(Date.now(), 10n, [11n, 13n], snapshot, horizon);
 * d.target; // 11n until position 12 is proven dead or stale
 * ```
 */
export class GapTracker {
  readonly #policy: GapPolicy;
  #holes: Hole[] = [];

  constructor(policy: GapPolicy) {
    this.#policy = policy;
  }

  /** Forgets every hole (after a rewind or a reassignment). */
  reset(): void {
    this.#holes = [];
  }

  /** The holes currently tracked (for status and tests). */
  tracked(): readonly { from: bigint; to: bigint; firstSeenAt: number }[] {
    return this.#holes;
  }

  /**
   * Decides how far to advance from `checkpoint`, given the distinct positions
   * visible after it (ascending) and the probe's snapshot. Record the probe in
   * `horizon` before calling.
   */
  decide(now: number, checkpoint: bigint, positions: readonly bigint[], snapshot: Snapshot | undefined, horizon: Horizon): FrontierDecision {
    const n = positions.length;
    const last = positions[n - 1];
    // The common case, in O(1) bigint operations: n ascending, distinct
    // positions after the checkpoint whose last is checkpoint + n are exactly
    // the next n positions. No hole, so nothing to judge.
    if (last !== undefined && positions[0]! > checkpoint && last - checkpoint === BigInt(n)) {
      this.#holes = [];
      return { target: last, passed: [], contiguousEnd: last, blockedAt: undefined, blockedSince: undefined, highestVisible: last };
    }
    this.#holes = this.#track(now, holesIn(checkpoint, positions), horizon);
    const policy = this.#policy;
    const passed: PassedRange[] = [];
    let target = checkpoint;
    let blocked: Hole | undefined;
    let firstStale: bigint | undefined;
    let h = 0;
    for (const p of positions) {
      if (p <= checkpoint) continue;
      while (h < this.#holes.length && this.#holes[h]!.to < p) {
        const hole = this.#holes[h++]!;
        const reason = this.#judge(now, hole, snapshot, horizon);
        if (reason === undefined) {
          blocked = hole;
          break;
        }
        if (reason === "stale" && firstStale === undefined) firstStale = hole.to;
        passed.push({ from: hole.from, to: hole.to, reason, firstSeenAt: hole.firstSeenAt });
      }
      if (blocked) break;
      target = p;
    }
    if (firstStale !== undefined) {
      // Safe harbor: after a stale pass stay `harborLag` rows behind the
      // window's end, but always reach the first row after the stale hole.
      const after = positions.filter((p) => p > firstStale! && p <= target);
      const all = positions.filter((p) => p > firstStale!);
      const idx = Math.max(0, all.length - 1 - policy.harborLag);
      const harbor = all[Math.min(idx, after.length - 1)]!;
      if (harbor < target) target = harbor;
    }
    return {
      target,
      passed: passed.filter((r) => r.to < target),
      contiguousEnd: contiguousEnd(checkpoint, positions),
      blockedAt: blocked?.from,
      blockedSince: blocked?.firstSeenAt,
      highestVisible: positions.at(-1),
    };
  }

  #judge(now: number, hole: Hole, snapshot: Snapshot | undefined, horizon: Horizon): PassReason | undefined {
    const { minAgeMs, staleAfterMs } = this.#policy;
    if (snapshot !== undefined && now - hole.drawnBy >= minAgeMs) {
      const ref = horizon.xmaxAt(hole.drawnBy + minAgeMs);
      if (ref !== undefined && !anyRunningBelow(snapshot, ref)) return "rolled_back";
    }
    if (staleAfterMs !== false && now - hole.firstSeenAt >= staleAfterMs) return "stale";
    return undefined;
  }

  /** New holes inherit the age of the tracked holes they overlap; the rest are new now. */
  #track(now: number, holes: { from: bigint; to: bigint }[], horizon: Horizon): Hole[] {
    const out: Hole[] = [];
    const old = this.#holes;
    let i = 0;
    for (const { from, to } of holes) {
      let cursor = from;
      while (i < old.length && old[i]!.to < cursor) i++;
      for (let j = i; j < old.length && old[j]!.from <= to && cursor <= to; j++) {
        const o = old[j]!;
        if (o.from > cursor) {
          out.push(this.#fresh(now, cursor, o.from - 1n, horizon));
          cursor = o.from;
        }
        const end = o.to < to ? o.to : to;
        out.push({ from: cursor, to: end, firstSeenAt: o.firstSeenAt, drawnBy: minTime(o.drawnBy, horizon.drawnBy(end)) });
        cursor = end + 1n;
      }
      if (cursor <= to) out.push(this.#fresh(now, cursor, to, horizon));
    }
    return out;
  }

  #fresh(now: number, from: bigint, to: bigint, horizon: Horizon): Hole {
    return { from, to, firstSeenAt: now, drawnBy: minTime(now, horizon.drawnBy(to)) };
  }
}

function minTime(a: number, b: number | undefined): number {
  return b === undefined || a <= b ? a : b;
}
