/**
 * Scaling across processes: this script starts three copies of itself as
 * worker processes, appends events for a while, waits until they are all
 * handled, and stops the workers with SIGTERM (what Docker and Kubernetes
 * send). Each process is an independent worker; PostgreSQL is the only thing
 * they share. Start more processes, on more hosts, to scale out: the leader
 * moves consumers to them within a tick or so; kill one and its consumers
 * move to the others.
 *
 *   node --import tsx examples/multi-process.ts [--seconds N]
 *   bun examples/multi-process.ts
 *   deno run -A examples/multi-process.ts
 *
 * The unit of parallelism is the consumer: one consumer runs on one worker
 * at a time, in order. To spread one heavy stream, split it into several
 * consumers by scope (aggregate types, bounded contexts).
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { createWorker, migrate, readStatus } from "../src/mod.ts"; // "@sluice/worker"
import { createStore } from "../src/store/mod.ts"; // "@sluice/worker/store"

const url = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const consumers = ["queue", "audit", "billing", "emails"].map((x) => ({ name: `example_mp_${x}`, aggregateTypes: ["Job"] }));

if (process.argv.includes("--child")) {
  // A worker process: what you deploy. It stops gracefully on SIGTERM/SIGINT.
  const label = process.argv[process.argv.indexOf("--child") + 1]!;
  const sql = postgres(url, { onnotice: () => {}, max: 4 });
  const worker = createWorker({ sql, consumers, dispatcher: "notify" });
  process.on("SIGTERM", () => void worker.stop());
  process.on("SIGINT", () => void worker.stop());
  await worker.start();
  console.log(`ready ${worker.id}`);
  await worker.run(async (batch) => {
    await batch.tx`insert into example_mp_handled ${batch.tx(batch.events.map((e) => ({ consumer: batch.consumer, event_id: e.eventId, process: label })))}`;
  });
  await sql.end();
  console.log("stopped"); // run() resolved: the worker released its consumers and deregistered
} else {
  const secondsArg = process.argv.indexOf("--seconds");
  const seconds = secondsArg >= 0 ? Number(process.argv[secondsArg + 1]) : 3;
  const sql = postgres(url, { onnotice: () => {} });
  await migrate(sql);
  await sql`create table if not exists example_mp_handled (consumer text not null, event_id uuid not null, process text not null)`;

  // The same runtime runs the children (Node keeps its --import tsx).
  const self = fileURLToPath(import.meta.url);
  const argv = (label: string): [string, string[]] =>
    "Deno" in globalThis
      ? [process.execPath, ["run", "-A", self, "--child", label]]
      : "Bun" in globalThis
      ? [process.execPath, [self, "--child", label]]
      : [process.execPath, [...process.execArgv, self, "--child", label]];
  const children = await Promise.all(["p1", "p2", "p3"].map((label) =>
    new Promise<{ label: string; proc: ReturnType<typeof spawn>; workerId: string; stopped: boolean }>((resolve, reject) => {
      const [cmd, args] = argv(label);
      const proc = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"], env: process.env });
      proc.once("exit", (code) => reject(new Error(`${label} exited early with ${code}`)));
      const child = { label, proc, workerId: "", stopped: false };
      createInterface({ input: proc.stdout! }).on("line", (line) => {
        if (line.startsWith("ready ")) resolve(Object.assign(child, { workerId: line.slice(6) }));
        if (line === "stopped") child.stopped = true;
      });
    })
  ));
  console.log(`started ${children.length} worker processes`);

  // The leader assigns the consumers to the workers it sees alive; wait (at most 15 s) until each has some.
  const spread = Date.now() + 15_000;
  while (Date.now() < spread) {
    const owners = new Set((await readStatus(sql)).consumers.map((c) => c.owner));
    if (children.every((c) => owners.has(c.workerId))) break;
    await new Promise((r) => setTimeout(r, 100));
  }

  const store = createStore(sql);
  const since = new Date();
  let appended = 0;
  const until = Date.now() + seconds * 1000;
  while (Date.now() < until) {
    const id = crypto.randomUUID();
    await store.append(sql, [
      { aggregateType: "Job", aggregateId: id, eventType: "Queued", payload: {} },
      { aggregateType: "Job", aggregateId: id, eventType: "Done", payload: {} },
    ], { expectedVersion: "no-stream" });
    appended += 2;
    await new Promise((r) => setTimeout(r, 25));
  }

  // Caught up: every consumer's checkpoint at the head (readStatus works from any process).
  const deadline = Date.now() + 30_000;
  for (;;) {
    const s = await readStatus(sql);
    const mine = s.consumers.filter((c) => consumers.some((x) => x.name === c.name));
    if (mine.length === consumers.length && mine.every((c) => c.lag === 0n)) break;
    if (Date.now() > deadline) throw new Error("the workers did not catch up within 30 s");
    await new Promise((r) => setTimeout(r, 50));
  }

  // Graceful stop: each worker finishes its open batch, releases its consumers and exits.
  await Promise.all(children.map(({ proc }) => {
    const exited = new Promise<void>((r) => proc.once("close", () => r()));
    proc.kill("SIGTERM");
    return exited;
  }));
  const handled = sql`select h.* from example_mp_handled h join sluice.events e on e.event_id = h.event_id where e.created_at >= ${since}`;
  const perConsumer = await sql`select consumer, count(*)::int as n, count(distinct event_id)::int as distinct_n
                                from (${handled}) h group by consumer`;
  const exactlyOnce = perConsumer.length === consumers.length && perConsumer.every((r) => r.n === appended && r.distinct_n === appended);
  const perProcess = await sql`select process, count(*)::int as n, string_agg(distinct consumer, ',') as consumers
                               from (${handled}) h group by process order by process`;
  console.log(`appended ${appended} events; every consumer handled each exactly once: ${exactlyOnce ? "yes" : "NO"}`);
  console.log(perProcess.map((r) => `${r.process} handled ${r.n} (${String(r.consumers).replace(/example_mp_/g, "")})`).join("; "));
  const graceful = children.filter((c) => c.stopped).map((c) => c.label);
  console.log(`stopped gracefully on SIGTERM: ${graceful.join(", ")}`);
  await sql.end();
  if (graceful.length !== children.length || !exactlyOnce) process.exitCode = 1;
}
