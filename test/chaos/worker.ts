/**
 * A chaos-suite worker process. Four consumers write one row per event into
 * chaos_read (unique on consumer + event id) inside the batch transaction. A
 * duplicate delivery would hit that key: it is reported on stdout, never
 * hidden.
 */
import postgres from "postgres";
import { createWorker, sqlStateOf } from "../../src/mod.ts";

const cfg = JSON.parse(process.argv[2]!) as { url: string; label: string };
const sql = postgres(cfg.url, { onnotice: () => {}, max: 5 });
const say = (m: Record<string, unknown>) => process.stdout.write(JSON.stringify({ label: cfg.label, ...m }) + "\n");
const worker = createWorker({
  sql,
  dispatcher: "notify",
  consumers: [{ name: "c_all" }, { name: "c_a", aggregateTypes: ["A"] }, { name: "c_b", aggregateTypes: ["B"] }, {
    name: "c_ctx",
    boundedContexts: ["x"],
  }],
  logger: {
    debug() {},
    info() {},
    warn() {},
    error: (message: string, props?: Record<string, unknown>) => say({ error: message, props }),
  },
});
process.on("SIGTERM", () => void worker.stop());
await worker.start();
say({ ready: true, workerId: worker.id });
await worker.run(async (batch) => {
  const rows = batch.events.map((e) => ({ consumer: batch.consumer, event_id: e.eventId, position: e.globalPosition.toString(), worker: cfg.label }));
  try {
    await batch.tx`insert into chaos_read ${batch.tx(rows)}`;
  } catch (e) {
    if (sqlStateOf(e) === "23505") say({ duplicate: batch.consumer, from: batch.from.toString(), to: batch.to.toString() });
    throw e;
  }
}, { concurrency: 2 });
await sql.end({ timeout: 5 }).catch(() => {});
