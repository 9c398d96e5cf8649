/**
 * A read model through Drizzle: account balances, written with `batch.db`
 * (a Drizzle transaction on the batch's own transaction), so each balance
 * change commits exactly once, together with the checkpoint.
 *
 *   node --import tsx examples/drizzle-projection.ts
 *   bun examples/drizzle-projection.ts
 *   deno run -A examples/drizzle-projection.ts
 */
import postgres from "postgres";
import { eq, sql as dsql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/postgres-js";
import { integer, pgTable, text } from "drizzle-orm/pg-core";
import { createWorker, migrate } from "../src/mod.ts"; // "@sluice/worker"
import { createStore } from "../src/store/mod.ts"; // "@sluice/worker/store"

const balances = pgTable("example_balances", {
  account: text("account").primaryKey(),
  balance: integer("balance").notNull(),
  events: integer("events").notNull(),
});

const sql = postgres(process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres", { onnotice: () => {} });
const db = drizzle(sql); // the same client serves Drizzle, the store and the worker
await migrate(sql);
await sql`create table if not exists example_balances (account text primary key, balance integer not null, events integer not null)`;

const store = createStore(sql);
const accounts = [crypto.randomUUID(), crypto.randomUUID()];
for (const [i, account] of accounts.entries()) {
  await store.append(sql, [
    { aggregateType: "Account", aggregateId: account, eventType: "Deposited", payload: { amount: 100 * (i + 1) } },
    { aggregateType: "Account", aggregateId: account, eventType: "Withdrawn", payload: { amount: 25 } },
    { aggregateType: "Account", aggregateId: account, eventType: "Deposited", payload: { amount: 5 } },
  ], { expectedVersion: "any" });
}

const worker = createWorker({ sql, consumers: [{ name: "example_balances", aggregateTypes: ["Account"] }] });

// run(): a handler per batch. If it throws, only that batch rolls back; it is
// retried with backoff, and after maxConsecutiveFailures the consumer is parked.
const done = worker.run(async (batch) => {
  for (const e of batch.events) {
    if (e.eventType !== "Deposited" && e.eventType !== "Withdrawn") continue; // other Account events
    const amount = (e.payload as { amount: number }).amount;
    const delta = e.eventType === "Withdrawn" ? -amount : amount;
    await batch.db.insert(balances).values({ account: e.aggregateId, balance: delta, events: 1 }).onConflictDoUpdate({
      target: balances.account,
      set: { balance: dsql`${balances.balance} + ${delta}`, events: dsql`${balances.events} + 1` },
    });
  }
});

await worker.caughtUp();
await worker.stop();
await done;

for (const account of accounts) {
  const [row] = await db.select().from(balances).where(eq(balances.account, account));
  console.log(`balance of ${account.slice(0, 8)}: ${row!.balance} after ${row!.events} events`);
}
await sql.end();
