/**
 * Several workers in one process, sharing one postgres.js client. The
 * leader spreads the consumers over them, as it would over processes.
 *
 *   node --import tsx examples/worker-pool.ts [--seconds N]
 *   bun examples/worker-pool.ts
 *   deno run -A examples/worker-pool.ts
 *
 * Thread-safety notes:
 * - JavaScript runs your handlers on one thread. Workers in one process share
 *   its event loop: handlers of different consumers interleave at every
 *   `await`, never in the middle of synchronous code. In-memory state shared
 *   between handlers must tolerate that interleaving.
 * - A consumer's batches never overlap: the next one starts after the
 *   previous one committed, whichever worker runs it.
 * - Sharing the postgres.js client is safe. Each batch holds one of its
 *   connections while open, and each worker opens two more of its own (its
 *   session and its LISTEN connection); size `max` accordingly.
 * - A client cannot cross threads: with worker_threads (Node), Bun workers or
 *   Deno web workers, create the client and the sluice worker inside each
 *   thread. CPU-heavy handlers block every worker of the process: use
 *   processes instead (examples/multi-process.ts).
 * - Several workers in one process only help when handlers wait on I/O. One
 *   worker with `worker.run(handler, { concurrency: n })` does the same with
 *   fewer connections.
 */
import postgres from "postgres";
import { createWorker, migrate, readStatus, type Worker } from "../src/mod.ts"; // "@sluice/worker"
import { createStore } from "../src/store/mod.ts"; // "@sluice/worker/store"

const secondsArg = process.argv.indexOf("--seconds");
const seconds = secondsArg >= 0 ? Number(process.argv[secondsArg + 1]) : 2;
const sql = postgres(process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres", { onnotice: () => {}, max: 12 });
await migrate(sql);
await sql`create table if not exists example_pool_handled (run uuid not null, consumer text not null, event_id uuid not null, worker int not null)`;
const run = crypto.randomUUID();

const consumers = ["a", "b", "c", "d", "e", "f"].map((x) => ({ name: `example_pool_${x}`, aggregateTypes: ["Tick"] }));
const names = consumers.map((c) => c.name);
const workers: Worker[] = [1, 2, 3].map(() => createWorker({ sql, consumers }));
await Promise.all(workers.map((w) => w.start()));

// Wait (at most 15 s) until the leader has spread the six consumers two by two.
const deadline = Date.now() + 15_000;
for (;;) {
  const s = await readStatus(sql);
  const owners = s.consumers.filter((c) => names.includes(c.name)).map((c) => c.owner);
  const per = workers.map((w) => owners.filter((o) => o === w.id).length);
  if (per.every((n) => n === 2) || Date.now() > deadline) {
    console.log(`consumers per worker: ${per.join(", ")}`);
    break;
  }
  await new Promise((r) => setTimeout(r, 100));
}

const runs = workers.map((w, i) =>
  w.run(async (batch) => {
    await batch.tx`insert into example_pool_handled ${batch.tx(batch.events.map((e) => ({ run, consumer: batch.consumer, event_id: e.eventId, worker: i + 1 })))}`;
  })
);

// Append for a while, one small transaction at a time.
const store = createStore(sql);
let appended = 0;
const until = Date.now() + seconds * 1000;
while (Date.now() < until) {
  await store.append(sql, [{ aggregateType: "Tick", aggregateId: crypto.randomUUID(), eventType: "Ticked", payload: { n: appended } }], {
    expectedVersion: "no-stream",
  });
  appended++;
  await new Promise((r) => setTimeout(r, 20));
}
await workers[0]!.caughtUp();
await Promise.all(workers.map((w) => w.stop()));
await Promise.all(runs);

const rows = await sql`select worker, count(*)::int as n, count(distinct consumer)::int as consumers from example_pool_handled
                       where run = ${run} group by worker order by worker`;
console.log(`appended ${appended} events; handled per worker: ` + rows.map((r) => `worker ${r.worker}: ${r.n} (${r.consumers} consumers)`).join(", "));
await sql.end();
