/**
 * The ready queue between consumer runners and the loops over
 * `worker.assigned()`: first prepared, first taken, so consumers interleave
 * fairly; each runner has at most one batch in it.
 *
 * @module
 */
import type { ReadyBatch } from "./batch.ts";

/** Hands prepared batches to whichever loop asks first. */
export class Scheduler {
  #ready: ReadyBatch[] = [];
  #takers: ((b: ReadyBatch | undefined) => void)[] = [];
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
    const taker = this.#takers.shift();
    if (taker) taker(b);
    else this.#ready.push(b);
  }

  /** The next prepared batch, or undefined once closed or when `signal` aborts. */
  take(signal?: AbortSignal): Promise<ReadyBatch | undefined> {
    const b = this.#ready.shift();
    if (b) return Promise.resolve(b);
    if (this.#closed || signal?.aborted) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const onAbort = (): void => {
        this.#takers = this.#takers.filter((t) => t !== give);
        resolve(undefined);
      };
      const give = (x: ReadyBatch | undefined): void => {
        signal?.removeEventListener("abort", onAbort);
        resolve(x);
      };
      this.#takers.push(give);
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

  /** Discards every waiting batch and releases every waiting loop. */
  close(): void {
    this.#closed = true;
    for (const b of this.#ready) b.outcome.resolve({ kind: "discarded" });
    this.#ready = [];
    for (const t of this.#takers.splice(0)) t(undefined);
  }
}
