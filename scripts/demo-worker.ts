/**
 * One demo worker process (started by scripts/demo.ts). Six consumers: two
 * projections, a scoped audit, a bounded-context consumer, an outbox and a
 * stats counter. Every consumer also records what it handled in
 * `processed` (no unique key, so the demo can count duplicates).
 */
import postgres from "postgres";
import { sql as dsql } from "drizzle-orm";
import { createWorker } from "../src/mod.ts";

const cfg = JSON.parse(process.argv[2]!) as { url: string; schema: string; label: string; channel: string };
const S = `"${cfg.schema}"`;
const sql = postgres(cfg.url, { onnotice: () => {}, max: 4 });
const worker = createWorker({
  sql,
  tables: { schema: cfg.schema },
  dispatcher: "notify",
  notifyChannel: cfg.channel,
  batchSize: 200,
  consumers: [
    { name: "balances", aggregateTypes: ["Account"] },
    { name: "account_audit", aggregateTypes: ["Account"] },
    { name: "orders", aggregateTypes: ["Order"] },
    { name: "billing", boundedContexts: ["billing"] },
    { name: "outbox" },
    { name: "stats" },
  ],
});

const stop = () => void worker.stop();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

await worker.start();
console.log(JSON.stringify({ ready: true, workerId: worker.id, label: cfg.label }));

await worker.run(async (batch) => {
  const rows = batch.events.map((e) => ({
    consumer: batch.consumer,
    event_id: e.eventId,
    position: e.globalPosition.toString(),
    worker: cfg.label,
  }));
  await batch.tx`insert into ${batch.tx(cfg.schema)}.processed ${batch.tx(rows)}`;
  switch (batch.consumer) {
    case "balances":
      // A read model through Drizzle on the batch's own transaction.
      for (const e of batch.events) {
        const amount = Number((e.payload as { amount?: number }).amount ?? 0);
        await batch.db.execute(dsql`insert into ${dsql.raw(S)}.account_balances (account_id, balance, events)
          values (${e.aggregateId}, ${amount}, 1)
          on conflict (account_id) do update set balance = account_balances.balance + excluded.balance,
            events = account_balances.events + 1`);
      }
      break;
    case "outbox":
      await batch.tx`insert into ${batch.tx(cfg.schema)}.outbox ${batch.tx(batch.events.map((e) => ({
        event_id: e.eventId,
        topic: `${e.aggregateType}.${e.eventType}`,
      })))}`;
      break;
    case "stats":
      for (const e of batch.events) {
        await batch.tx`insert into ${batch.tx(cfg.schema)}.event_stats (event_type, n) values (${e.eventType}, 1)
          on conflict (event_type) do update set n = event_stats.n + 1`;
      }
      break;
  }
});
await sql.end({ timeout: 5 });
