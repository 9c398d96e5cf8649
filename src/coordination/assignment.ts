/**
 * Consumer-to-worker assignment: a pure function the leader runs on every
 * rebalance, and the diff it writes.
 *
 * Unlike plain round-robin over sorted worker ids (which moves most consumers
 * whenever a worker joins or leaves), the assignment here is:
 *
 * - **capability-aware**: a consumer only goes to a live worker that lists it;
 * - **sticky**: a consumer stays with its current owner while that owner is
 *   live, capable and not above its share;
 * - **minimal**: when all workers can run all consumers, the only consumers
 *   that move are the ones on dead workers plus the excess of overfull ones;
 * - **balanced**: with a homogeneous fleet every worker gets `floor(n/w)` or
 *   `ceil(n/w)`; with a heterogeneous fleet the result is *locally balanced*
 *   (no consumer could move from its owner with load `L` to another capable
 *   worker with load `<= L - 2`);
 * - **deterministic**: the same input gives the same output, whatever the
 *   order of the input lists. Ties are broken by worker id, then consumer
 *   name, both in code-point order (the byte order of PostgreSQL's `C`
 *   collation and of Go's `sort.Strings`), never `localeCompare`.
 *
 * @module
 */

/**
 * One live worker and the consumer names it can run.
 *
 * @example
 * ```ts
 * const w: WorkerCapability = { workerId: "5f0c…", consumers: ["outbox", "projections"] };
 * ```
 */
export interface WorkerCapability {
  /** The worker's id (its `worker_nodes` key). */
  readonly workerId: string;
  /** The consumer names this worker has handlers for. */
  readonly consumers: readonly string[];
}

/**
 * One row of `consumer_assignments` whose owner changes.
 *
 * @example
 * ```ts
 * const change: AssignmentChange = { consumer: "outbox", from: "w1", to: null };
 * ```
 */
export interface AssignmentChange {
  /** The consumer name. */
  readonly consumer: string;
  /** The current owner, or null when unassigned. */
  readonly from: string | null;
  /** The desired owner, or null when no live worker can run it. */
  readonly to: string | null;
}

/**
 * Compares two strings by Unicode code point (UTF-8 byte order), unlike the
 * `<` operator, which compares UTF-16 code units and so sorts astral
 * characters (`"😀"`, U+1F600) before U+E000..U+FFFF (`"ﬀ"`, U+FB00).
 *
 * @returns a negative number, zero or a positive number, for `Array.prototype.sort`.
 * @example
 * ```ts
 * ["b", "ä", "B", "a"].sort(compareCodePoints); // ["B", "a", "b", "ä"]
 * ```
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      // Surrogates (U+D800..U+DFFF) encode code points above U+FFFF, so they
      // must rank above U+E000..U+FFFF: shift the two ranges past each other.
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

/**
 * Computes the desired owner of every consumer in `consumers`.
 *
 * - `consumers`: every consumer name that should have an owner (duplicates
 *   are ignored).
 * - `workers`: the live workers and what each can run. A worker id listed
 *   twice counts once, with the union of its capabilities.
 * - `current`: consumer name → current owner id or null. An owner that is not
 *   in `workers` is treated as dead. Names not in `consumers` are ignored.
 *
 * The result maps every consumer in `consumers` (in code-point order) to a
 * live worker that lists it, or to null when none does. See the module
 * documentation for the stickiness, balance and determinism guarantees.
 *
 * @example
 * ```ts
 * const desired = computeAssignments(
 *   ["a", "b", "c", "d"],
 *   [{ workerId: "w1", consumers: ["a", "b", "c", "d"] }, { workerId: "w2", consumers: ["a", "b", "c", "d"] }],
 *   new Map([["a", "w1"], ["b", "w1"], ["c", "w1"], ["d", "dead"]]),
 * );
 * // d→w2 (its owner died); w1 was above its share, so its first consumer moves:
 * // a→w2, b→w1, c→w1, d→w2
 * ```
 */
export function computeAssignments(
  consumers: readonly string[],
  workers: readonly WorkerCapability[],
  current: ReadonlyMap<string, string | null>,
): Map<string, string | null> {
  const names = [...new Set(consumers)].sort(compareCodePoints);

  const caps = new Map<string, Set<string>>();
  for (const w of workers) {
    let set = caps.get(w.workerId);
    if (set === undefined) caps.set(w.workerId, (set = new Set()));
    for (const c of w.consumers) set.add(c);
  }
  const workerIds = [...caps.keys()].sort(compareCodePoints);
  const workerSets = workerIds.map((id) => caps.get(id)!);
  const workerIndex = new Map(workerIds.map((id, i) => [id, i]));

  // capable[c]: indexes of the workers that can run consumer c, ascending id.
  const capable: number[][] = names.map((name) => {
    const out: number[] = [];
    for (let w = 0; w < workerSets.length; w++) if (workerSets[w]!.has(name)) out.push(w);
    return out;
  });

  const owner: number[] = new Array<number>(names.length).fill(-1);
  const load: number[] = new Array<number>(workerIds.length).fill(0);
  // owned[w]: consumer indexes owned by worker w, ascending (= by name).
  const owned: number[][] = workerIds.map(() => []);
  const assign = (c: number, w: number): void => {
    owner[c] = w;
    load[w]!++;
    insertSorted(owned[w]!, c);
  };

  // 1. Stickiness: keep every current owner that is live and capable.
  const orphans: number[] = [];
  for (let c = 0; c < names.length; c++) {
    const cur = current.get(names[c]!);
    const w = cur == null ? undefined : workerIndex.get(cur);
    if (w !== undefined && workerSets[w]!.has(names[c]!)) assign(c, w);
    else if (capable[c]!.length > 0) orphans.push(c);
  }

  // 2. Place consumers without a valid owner, most constrained first, each on
  //    its least-loaded capable worker (ties: lowest worker id).
  orphans.sort((a, b) => capable[a]!.length - capable[b]!.length || a - b);
  for (const c of orphans) {
    let best = -1;
    for (const w of capable[c]!) if (best < 0 || load[w]! < load[best]!) best = w;
    assign(c, best);
  }

  // 3. Local balancing: while some consumer can move from its owner (load L)
  //    to a capable worker with load <= L-2, move one, always from the most
  //    loaded such owner to the least loaded target (ties: worker id, then
  //    consumer name). Each move lowers the sum of squared loads by at least
  //    2, so the loop terminates; in a homogeneous fleet a worker that gives
  //    never receives, so only the unavoidable excess moves.
  if (workerIds.length > 1) {
    const order = workerIds.map((_, i) => i);
    for (;;) {
      order.sort((a, b) => load[b]! - load[a]! || a - b);
      const minLoad = load[order[order.length - 1]!]!;
      let moveC = -1;
      let moveTo = -1;
      for (const u of order) {
        const limit = load[u]! - 2;
        if (limit < minLoad) break; // loads only fall from here on
        for (const c of owned[u]!) {
          for (const v of capable[c]!) {
            if (v !== u && load[v]! <= limit && (moveTo < 0 || load[v]! < load[moveTo]!)) {
              moveC = c;
              moveTo = v;
            }
          }
          if (moveTo >= 0 && load[moveTo] === minLoad) break; // cannot do better
        }
        if (moveC >= 0) {
          load[u]!--;
          removeSorted(owned[u]!, moveC);
          assign(moveC, moveTo);
          break;
        }
      }
      if (moveC < 0) break;
    }
  }

  const out = new Map<string, string | null>();
  for (let c = 0; c < names.length; c++) out.set(names[c]!, owner[c]! < 0 ? null : workerIds[owner[c]!]!);
  return out;
}

/**
 * The rows whose owner differs between `current` and `desired`, sorted by
 * consumer name in code-point order (a stable lock order for the UPDATEs, so
 * two rebalances never deadlock and unchanged rows are never touched).
 *
 * Every name in `desired` is compared; a name missing from `current` counts
 * as unassigned (null). Names only in `current` are not listed: dropping
 * unknown consumers is a separate decision.
 *
 * @example
 * ```ts
 * assignmentChanges(new Map([["a", "w1"], ["b", "w1"]]), new Map([["a", "w1"], ["b", "w2"]]));
 * // [{ consumer: "b", from: "w1", to: "w2" }]
 * ```
 */
export function assignmentChanges(
  current: ReadonlyMap<string, string | null>,
  desired: ReadonlyMap<string, string | null>,
): AssignmentChange[] {
  const out: AssignmentChange[] = [];
  for (const [consumer, want] of desired) {
    const from = current.get(consumer) ?? null;
    const to = want ?? null;
    if (from !== to) out.push({ consumer, from, to });
  }
  return out.sort((a, b) => compareCodePoints(a.consumer, b.consumer));
}

function lowerBound(list: readonly number[], value: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function insertSorted(list: number[], value: number): void {
  list.splice(lowerBound(list, value), 0, value);
}

function removeSorted(list: number[], value: number): void {
  const i = lowerBound(list, value);
  if (list[i] === value) list.splice(i, 1);
}
