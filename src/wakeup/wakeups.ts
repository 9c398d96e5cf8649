/**
 * Broadcast wakeups with a generation counter. A consumer captures the
 * generation before it probes and waits "until the generation differs", so a
 * wakeup that arrives while it is busy is never lost (the peer's
 * close-and-replace channel loses those).
 *
 * @module
 */

/** Why a wait ended. */
export type WaitResult = "woken" | "timeout" | "aborted";

/** A broadcast signal that every waiter sees. */
export class Wakeups {
  #generation = 0;
  #notifiedAt = 0;
  #waiters = new Set<() => void>();

  /** Increases with every signal. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Wakes every waiter (and every later wait whose captured generation is
   * older). `notified`: the signal is an events NOTIFY, so the waiters will
   * likely find events (see `notifiedSince`).
   */
  signal(notified = false): void {
    this.#generation++;
    if (notified) this.#notifiedAt = this.#generation;
    const ws = [...this.#waiters];
    this.#waiters.clear();
    for (const w of ws) w();
  }

  /** True when an events NOTIFY signalled after generation `since`. */
  notifiedSince(since: number): boolean {
    return this.#notifiedAt > since;
  }

  /**
   * Waits until the generation differs from `since`, `ms` passes, or `signal`
   * aborts. Returns at once when a wakeup already happened.
   */
  wait(since: number, ms: number, signal?: AbortSignal): Promise<WaitResult> {
    if (signal?.aborted) return Promise.resolve("aborted");
    if (this.#generation !== since) return Promise.resolve("woken");
    if (ms <= 0) return Promise.resolve("timeout");
    return new Promise<WaitResult>((resolve) => {
      const done = (r: WaitResult): void => {
        clearTimeout(timer);
        this.#waiters.delete(onWake);
        signal?.removeEventListener("abort", onAbort);
        resolve(r);
      };
      const onWake = (): void => done("woken");
      const onAbort = (): void => done("aborted");
      const timer = setTimeout(() => done("timeout"), Math.min(ms, 2_147_483_647));
      this.#waiters.add(onWake);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}
