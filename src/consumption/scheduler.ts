/**
 * The ready queue between consumer runners and the loops over
 * `worker.assigned()`: first prepared, first taken, so consumers interleave
 * fairly; each runner has at most one batch in it.
 *
 * @module
 */
import type { ReadyBatch } from "./batch.ts";

/**
 * A loop waiting for a batch, claimed by a runner that is opening one for it
 * (see `Scheduler.claim`).
 */
export interface Claim {
  /** Hands the batch to the claimed loop and ends the claim; false when that loop has gone (the batch was not taken). */
  give(b: ReadyBatch): boolean;
  /** Ends the claim without a batch: the loop waits again, first in line. */
  release(): void;
}

interface Taker {
  /** Ends the wait with `b`; false when it had already ended. */
  give(b: ReadyBatch): boolean;
  /** Ends the wait with nothing (close or abort). */
  cancel(): void;
}

/** Hands prepared batches to whichever loop asks first. */
export class Scheduler {
  #ready: ReadyBatch[] = [];
  #takers: Taker[] = [];
  #claimed = new Set<Taker>();
  #closed = false;

  /** Number of prepared batches waiting for a loop. */
  get waiting(): number {
    return this.#ready.length;
  }

  /** Offers a prepared batch; its `outcome` tells the runner how it ended. */
  submit(b: ReadyBatch): void {
    if (this.#closed) {
      b.outcome.resolve({ kind: "discarded" });
      return;
    }
    for (let taker = this.#takers.shift(); taker; taker = this.#takers.shift()) {
      if (taker.give(b)) return;
    }
    this.#ready.push(b);
  }

  /**
   * Reserves a loop that waits for a batch, if one does and no prepared
   * batch waits: the caller opens a batch's transaction for it, then gives
   * it the batch or releases it.
   */
  claim(): Claim | undefined {
    if (this.#closed || this.#ready.length > 0) return undefined;
    const taker = this.#takers.shift();
    if (!taker) return undefined;
    this.#claimed.add(taker);
    return {
      give: (b) => this.#claimed.delete(taker) && taker.give(b),
      release: () => {
        if (!this.#claimed.delete(taker)) return;
        if (this.#closed) return taker.cancel();
        const b = this.#ready.shift();
        if (!b) this.#takers.unshift(taker);
        else if (!taker.give(b)) this.#ready.unshift(b);
      },
    };
  }

  /** The next prepared batch, or undefined once closed or when `signal` aborts. */
  take(signal?: AbortSignal): Promise<ReadyBatch | undefined> {
    const b = this.#ready.shift();
    if (b) return Promise.resolve(b);
    if (this.#closed || signal?.aborted) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      let waiting = true;
      const end = (x: ReadyBatch | undefined): boolean => {
        if (!waiting) return false;
        waiting = false;
        signal?.removeEventListener("abort", onAbort);
        this.#takers = this.#takers.filter((t) => t !== taker);
        resolve(x);
        return true;
      };
      const taker: Taker = { give: (x) => end(x), cancel: () => void end(undefined) };
      const onAbort = (): void => taker.cancel();
      this.#takers.push(taker);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Withdraws a consumer's waiting batch (its runner is stopping). */
  withdraw(consumer: string): void {
    const keep: ReadyBatch[] = [];
    for (const b of this.#ready) {
      if (b.consumer === consumer) b.outcome.resolve({ kind: "discarded" });
      else keep.push(b);
    }
    this.#ready = keep;
  }

  /** Discards every waiting batch and releases every waiting loop (claimed ones too). */
  close(): void {
    this.#closed = true;
    for (const b of this.#ready) b.outcome.resolve({ kind: "discarded" });
    this.#ready = [];
    for (const t of this.#takers.splice(0)) t.cancel();
    for (const t of this.#claimed) t.cancel();
  }
}
