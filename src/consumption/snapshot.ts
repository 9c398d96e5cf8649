/**
 * PostgreSQL snapshots (`pg_current_snapshot()`), and the horizon: what we
 * learned over time about which positions were already drawn and which
 * transactions existed. Pure; times come from the injected clock.
 *
 * @module
 */

/** A parsed `pg_snapshot`: transactions < xmin are finished, >= xmax had not started, `xip` were in progress. */
export interface Snapshot {
  readonly xmin: bigint;
  readonly xmax: bigint;
  readonly xip: readonly bigint[];
}

/** Parses the text form `xmin:xmax:xip1,xip2,...`. */
export function parseSnapshot(text: string): Snapshot {
  const [a, b, c] = text.split(":");
  if (a === undefined || b === undefined || c === undefined) throw new TypeError(`Cannot parse snapshot ${JSON.stringify(text)}`);
  return { xmin: BigInt(a), xmax: BigInt(b), xip: c === "" ? [] : c.split(",").map((x) => BigInt(x)) };
}

/** True when some transaction in progress in `snap` has an id below `bound`. */
export function anyRunningBelow(snap: Snapshot, bound: bigint): boolean {
  if (snap.xmin >= bound) return false;
  return snap.xip.some((x) => x < bound);
}

/**
 * One observation: at local time `sentAt` or later the server took a
 * snapshot whose xmax was `xmax`; by local time `receivedAt` every position up
 * to `position` had been drawn (it was visible).
 */
export interface HorizonSample {
  readonly sentAt: number;
  readonly receivedAt: number;
  readonly position: bigint;
  readonly xmax: bigint;
}

/**
 * Remembers recent samples so the gap proof can date a hole by the first time
 * any query saw a higher position, instead of by when this consumer first
 * reached it (which makes replays over old holes free).
 */
export class Horizon {
  #samples: HorizonSample[] = [];
  readonly #keepMs: number;

  /** @param keepMs how long samples are kept (older ones are merged away) */
  constructor(keepMs = 60_000) {
    this.#keepMs = keepMs;
  }

  /**
   * Records a sample. The oldest sample is kept as an anchor (it dates all
   * older history); samples older than `keepMs` after it are dropped, which
   * only ever makes answers later and so more conservative.
   */
  record(sample: HorizonSample): void {
    const last = this.#samples.at(-1);
    const s = last && sample.position < last.position ? { ...sample, position: last.position } : sample;
    this.#samples.push(s);
    const cutoff = s.receivedAt - this.#keepMs;
    let i = 1;
    while (i < this.#samples.length - 1 && this.#samples[i]!.receivedAt < cutoff) i++;
    if (i > 1) this.#samples.splice(1, i - 1);
  }

  /** Earliest local time by which `position` was known to be drawn, if any sample covers it. */
  drawnBy(position: bigint): number | undefined {
    for (const s of this.#samples) if (s.position >= position) return s.receivedAt;
    return undefined;
  }

  /**
   * xmax of the first snapshot taken at or after local time `t`: every
   * transaction that had an id by `t` has an id below it.
   */
  xmaxAt(t: number): bigint | undefined {
    for (const s of this.#samples) if (s.sentAt >= t) return s.xmax;
    return undefined;
  }
}
