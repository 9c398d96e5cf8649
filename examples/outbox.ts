/**
 * Publishing to an external sink (a message broker, a webhook, an e-mail
 * API): at-least-once delivery, made effectively-once by an idempotency key.
 *
 *   node --import tsx examples/outbox.ts
 *   bun examples/outbox.ts
 *   deno run -A examples/outbox.ts
 *
 * Why at-least-once: the sink is not part of the batch's transaction. The
 * handler publishes, then the batch commits its checkpoint. If the process
 * dies, the commit fails or the handler throws after a publish, the batch
 * is delivered again and the message is published again. Nothing is lost,
 * but the sink can see a message twice. So:
 *
 * - publish with a stable key (the event id) and let the sink drop repeats
 *   (most brokers and APIs offer an idempotency or deduplication key); or
 *   record what was sent in a table of your own inside `batch.tx`, if the
 *   sink can be asked afterwards;
 * - keep batches small when publishing is slow (`batchSize`), since a
 *   failure repeats the whole batch;
 * - a message that can never be published parks the consumer after
 *   `maxConsecutiveFailures` (see `sluice status`), instead of blocking the
 *   others; fix the cause, then `sluice pause` and `sluice resume` it.
 */
import postgres from "postgres";
import { createWorker, migrate } from "../src/mod.ts"; // "@sluice/worker"
import { createStore } from "../src/store/mod.ts"; // "@sluice/worker/store"

/** A stand-in for a broker that deduplicates on a message id. */
class Sink {
  readonly received: { id: string; key: string; topic: string }[] = [];
  readonly #ids = new Set<string>();
  duplicates = 0;

  async publish(message: { id: string; key: string; topic: string; body: unknown }): Promise<void> {
    await new Promise((r) => setTimeout(r, 1)); // the network
    if (this.#ids.has(message.id)) {
      this.duplicates++;
      return;
    }
    this.#ids.add(message.id);
    this.received.push({ id: message.id, key: message.key, topic: message.topic });
  }
}

const sql = postgres(process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres", { onnotice: () => {} });
await migrate(sql);
const store = createStore(sql);
const order = crypto.randomUUID();
await store.append(sql, [
  { aggregateType: "Order", aggregateId: order, eventType: "Placed", payload: { total: 42 } },
  { aggregateType: "Order", aggregateId: order, eventType: "Paid", payload: {} },
  { aggregateType: "Order", aggregateId: order, eventType: "Shipped", payload: {} },
], { expectedVersion: "no-stream" });

const sink = new Sink();
const worker = createWorker({
  sql,
  consumers: [{ name: "example_outbox", aggregateTypes: ["Order"] }],
  batchSize: 10,
  retryBaseMs: 50, // quick retries for the example
  maxConsecutiveFailures: 10,
});

let attempts = 0;
const done = worker.run(async (batch) => {
  attempts++;
  for (const [i, e] of batch.events.entries()) {
    await sink.publish({ id: e.eventId, key: e.aggregateId, topic: `order.${e.eventType.toLowerCase()}`, body: e.payload });
    // Simulate a crash after the first publish of the first attempt: the
    // batch rolls back and comes again, so that message is published twice.
    if (attempts === 1 && i === 0) throw new Error("crashed after publishing");
  }
});

await worker.caughtUp();
await worker.stop();
await done;

const mine = sink.received.filter((m) => m.key === order); // (older orders too on a reused database)
console.log(`published ${mine.length} messages for order ${order.slice(0, 8)} (${mine.map((m) => m.topic).join(", ")}); ` +
  `the sink dropped ${sink.duplicates} duplicate after the simulated crash`);
await sql.end();
