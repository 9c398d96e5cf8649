/**
 * The iterator: one consumer keeps an activity log of accounts.
 *
 *   node --import tsx examples/basic.ts
 *   bun examples/basic.ts
 *   deno run -A examples/basic.ts
 *
 * DATABASE_URL selects the database (default postgres://postgres@127.0.0.1:5432/postgres).
 */
import postgres from "postgres";
import { createWorker, migrate } from "../src/mod.ts"; // "@sluice/worker" in your code
import { createStore } from "../src/store/mod.ts"; // "@sluice/worker/store"

const sql = postgres(process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres", { onnotice: () => {} });
await migrate(sql); // the sluice tables, in schema "sluice"; idempotent
await sql`create table if not exists example_account_log (
  event_id uuid primary key, account text not null, type text not null)`;

// Your application appends events (usually inside its own transactions).
const store = createStore(sql);
const account = crypto.randomUUID();
await store.append(sql, [
  { aggregateType: "Account", aggregateId: account, eventType: "Opened", payload: { owner: "Ada" } },
  { aggregateType: "Account", aggregateId: account, eventType: "Deposited", payload: { amount: 100 } },
  { aggregateType: "Account", aggregateId: account, eventType: "Withdrawn", payload: { amount: 30 } },
], { expectedVersion: "no-stream" });

// A consumer is a named checkpoint; this one only receives Account events.
const worker = createWorker({ sql, consumers: [{ name: "example_account_log", aggregateTypes: ["Account"] }] });

// Each batch has its own transaction. Your writes through batch.tx commit
// together with the checkpoint when the loop asks for the next batch; if the
// body throws (or breaks), the batch rolls back and the worker stops.
const loop = (async () => {
  for await (const batch of worker.assigned()) {
    for (const e of batch.events) {
      // "on conflict do nothing" only matters after an operator rewinds the consumer.
      await batch.tx`insert into example_account_log ${batch.tx({ event_id: e.eventId, account: e.aggregateId, type: e.eventType })}
                     on conflict do nothing`;
    }
    console.log(`batch of ${batch.consumer}: positions ${batch.from + 1n}..${batch.to}, ${batch.events.length} events`);
  }
})();

await worker.caughtUp(); // every event appended so far is handled (a test's or script's wait; never a sleep)
await worker.stop(); // graceful: the loop above ends
await loop;

const rows = await sql`select type from example_account_log where account = ${account} order by type`;
console.log(`account ${account.slice(0, 8)}: logged ${rows.map((r) => r.type).join(", ")}`);
await sql.end();
