/**
 * A worker in its own process, for the cluster tests (test/support/cluster.ts
 * starts it on the runtime running the tests).
 *
 * Config: JSON in the env var SLUICE_CHILD_CONFIG, or in argv[2]:
 *   { url, consumers, label, options?, handledPrefix?, slow?, maxLifetimeMs? }
 *
 * Every batch inserts one row per event into
 *   handled(consumer text, position bigint, handled_by text, primary key (consumer, position))
 * through batch.tx, so a batch delivering an event twice fails (and is
 * reported on stdout) instead of passing silently.
 *
 * stdin: the line "go" starts the worker (so a test can prepare rows just
 * before the worker starts, whatever the module loading time).
 * stdout: one JSON object per line:
 *   {"loaded":true}                        modules loaded, waiting for "go"
 *   {"ready":true,"workerId":...}          once started (registered, first tick done)
 *   {"status":{leader,healthy,consumers}}  whenever one of these changes
 *   {"slowBatch":{consumer,from,to}}       a slow batch (see `slow`) is open
 *   {"batchError":...,"consumer":...}      a handler failed (a duplicate, for instance)
 *   {"exit":code,"error"?:...}             right before exiting
 * stderr: warnings and errors of the worker's logger.
 *
 * Stops gracefully (worker.stop(), exit 0) on SIGTERM, and when stdin closes
 * (the test process died), so no child outlives its test run.
 */
import process from "node:process";
import postgres from "postgres";
import { createWorker, type WorkerOptions } from "../../src/mod.ts";
import { fast } from "./worker.ts";

interface ChildConfig {
  url: string;
  consumers: WorkerOptions["consumers"];
  label: string;
  options?: Record<string, unknown>;
  /** Prepended to the consumer name in `handled` (two deployments may share consumer names). */
  handledPrefix?: string;
  /**
   * A batch holding an event of `aggregateType` stays open `delayMs` after its
   * inserts (or until its signal aborts), after printing {"slowBatch":...};
   * then, unless aborted, it runs one more query through batch.tx. Only the
   * first batch reaching a given position is slow (its retry is not).
   * `lateWrite`: query through batch.tx every 50 ms until the batch is
   * aborted, wait out the delay anyway, then insert the row
   * (`<consumer>:late`, position, label) through batch.tx and print
   * {"lateWrite":"ok"|error}: a handler that does not watch batch.signal.
   */
  slow?: { aggregateType: string; delayMs: number; lateWrite?: boolean };
  /** Exit after this long whatever happens (a safety net). @default 180000 */
  maxLifetimeMs?: number;
}

const raw = process.env.SLUICE_CHILD_CONFIG ?? process.argv[2];
if (!raw) {
  process.stderr.write("worker-child: no config (SLUICE_CHILD_CONFIG or argv[2])\n");
  process.exit(2);
}
const config = JSON.parse(raw) as ChildConfig;

function emit(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(o) + "\n");
}
function fmt(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
const toStderr = (level: string) => (message: string, props: Record<string, unknown> = {}) => {
  let props_ = "";
  try {
    props_ = JSON.stringify(props, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
  } catch {
    props_ = "{}";
  }
  process.stderr.write(`[${config.label} ${level}] ${message} ${props_}\n`);
};
const verbose = process.env.SLUICE_CHILD_DEBUG === "1";
const logger = { debug: verbose ? toStderr("debug") : () => {}, info: verbose ? toStderr("info") : () => {}, warn: toStderr("warn"), error: toStderr("error") };

const sql = postgres(config.url, { max: 6, onnotice: () => {} });
const worker = createWorker({
  sql,
  logger,
  ...fast,
  ...(config.options ?? {}),
  consumers: config.consumers,
} as WorkerOptions);

const prefix = config.handledPrefix ?? "";
const slowed = new Set<string>();
let exiting = false;

async function exit(code: number, error?: unknown): Promise<void> {
  if (exiting) return;
  exiting = true;
  clearInterval(statusTimer);
  clearTimeout(lifetime);
  try {
    await worker.stop();
    await loop.catch(() => {});
  } catch (e) {
    error ??= e;
    code = code || 1;
  }
  await sql.end({ timeout: 5 }).catch(() => {});
  emit(error === undefined ? { exit: code } : { exit: code, error: fmt(error) });
  process.exit(code);
}

let lastStatus = "";
function reportStatus(): void {
  const s = worker.status();
  const text = JSON.stringify({ leader: s.leader, healthy: s.healthy, consumers: s.consumers.map((c) => c.name).sort() });
  if (text !== lastStatus) {
    lastStatus = text;
    emit({ status: JSON.parse(text) });
  }
}

let loop: Promise<void> = Promise.resolve();
let statusTimer: ReturnType<typeof setInterval> | undefined;
const lifetime = setTimeout(() => void exit(3, new Error("maxLifetimeMs reached")), config.maxLifetimeMs ?? 180_000);

process.on("SIGTERM", () => void exit(0));
process.stdin.on("end", () => void exit(0));
process.stdin.on("error", () => void exit(0));
// Modules are loaded: wait for "go" (the test may prepare rows whose age matters).
let go!: () => void;
const gone = new Promise<void>((r) => (go = r));
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (d: string) => {
  input += d;
  if (input.split("\n").includes("go")) go();
});
emit({ loaded: true });
await gone;

try {
  await worker.start();
} catch (e) {
  await exit(1, e);
}
if (!exiting) {
  emit({ ready: true, workerId: worker.id, label: config.label, pid: process.pid });
  reportStatus();
  statusTimer = setInterval(reportStatus, 20);
  loop = worker.run(async (batch) => {
    try {
      for (const e of batch.events) {
        await batch.tx`insert into public.handled (consumer, position, handled_by)
                       values (${prefix + batch.consumer}, ${e.globalPosition.toString()}, ${config.label})`;
      }
      const slow = config.slow;
      const key = `${batch.consumer}@${batch.to}`;
      if (slow && !slowed.has(key) && batch.events.some((e) => e.aggregateType === slow.aggregateType)) {
        slowed.add(key);
        emit({ slowBatch: { consumer: batch.consumer, from: batch.from.toString(), to: batch.to.toString() } });
        if (!slow.lateWrite) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, slow.delayMs);
            batch.signal.addEventListener("abort", () => {
              clearTimeout(timer);
              resolve();
            }, { once: true });
          });
        } else {
          // Busy (a query every 50 ms, so the server never sees the transaction
          // idle) until the worker rolls the batch back, then unaware of it.
          const until = Date.now() + slow.delayMs;
          while (Date.now() < until) {
            if (!batch.signal.aborted) await batch.tx`select 1`;
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        if (slow.lateWrite) {
          try {
            await batch.tx`insert into public.handled (consumer, position, handled_by)
                           values (${batch.consumer + ":late"}, ${batch.to.toString()}, ${config.label})`;
            emit({ lateWrite: "ok" });
          } catch (e) {
            emit({ lateWrite: fmt(e) });
          }
        } else if (!batch.signal.aborted) {
          // More work after the wait, as a handler calling out and then writing would do.
          await batch.tx`select 1`;
        }
      }
    } catch (e) {
      emit({ batchError: fmt(e), consumer: batch.consumer, from: batch.from.toString(), to: batch.to.toString() });
      throw e;
    }
  });
  loop.then(
    () => void exit(exiting ? 0 : 1, exiting ? undefined : new Error("worker stopped by itself")),
    (e) => void exit(1, e),
  );
}
