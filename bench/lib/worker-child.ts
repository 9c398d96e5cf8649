/**
 * A sluice worker in its own process, for the multi-process scenarios.
 *
 * Config: JSON in argv[2]:
 *   { url, label, consumers: string[], options?: worker options, handler?: "a" | "b" | "c",
 *     rss?: boolean, stopAtHead?: string, waitGo?: boolean, concurrency?: number }
 * stdout, one JSON object per line:
 *   {"loaded":true}                               modules loaded (then waits for "go" on stdin when waitGo)
 *   {"ready":true,"workerId":...,"at":ms}         worker started (registered, first tick done)
 *   {"c":consumer,"to":"123","n":events,"y":ms,"at":ms}   a batch: yielded at y, committed at `at`
 *                                                 (ms = performance.timeOrigin + performance.now())
 *   {"done":true,"rss":{"peak":bytes,"base":bytes}}  with stopAtHead: every consumer committed up to it
 * Stops gracefully on SIGTERM or when stdin closes.
 */
import postgres from "postgres";
import type { WorkerOptions } from "../../src/config.ts";
import { createWorker } from "../../src/worker.ts";
import { silent } from "./db.ts";
import { handle, type HandlerKind, now } from "./raw.ts";
import { sluiceRows } from "./sluice.ts";

const cfg = JSON.parse(process.argv[2]!) as {
  url: string;
  label: string;
  consumers: string[];
  options?: Partial<WorkerOptions>;
  handler?: HandlerKind;
  rss?: boolean;
  stopAtHead?: string;
  waitGo?: boolean;
  /** Loops over worker.assigned() in parallel (default 1). */
  concurrency?: number;
};
const emit = (o: Record<string, unknown>): void => void process.stdout.write(JSON.stringify(o) + "\n");
const rssNow = (): number => (process.memoryUsage as unknown as { rss?: () => number }).rss?.() ?? process.memoryUsage().rss;

let peak = 0;
let base = 0;
let sampler: ReturnType<typeof setInterval> | undefined;
if (cfg.rss) {
  base = rssNow();
  peak = base;
  sampler = setInterval(() => void (peak = Math.max(peak, rssNow())), 10);
}

const sql = postgres(cfg.url, { onnotice: () => {}, max: 10 });
const logger = {
  ...silent,
  error: (m: string, p?: Record<string, unknown>) => process.stderr.write(`[${cfg.label}] ${m} ${JSON.stringify(p ?? {}, (_k, v) => (typeof v === "bigint" ? String(v) : v))}\n`),
};
const worker = createWorker({ sql, logger, ...cfg.options, consumers: cfg.consumers.map((name) => ({ name })) } as WorkerOptions);
let exiting = false;
async function exit(code: number): Promise<void> {
  if (exiting) return;
  exiting = true;
  await worker.stop().catch(() => {});
  await sql.end({ timeout: 2 }).catch(() => {});
  if (sampler) clearInterval(sampler);
  process.exit(code);
}
process.on("SIGTERM", () => void exit(0));
process.stdin.on("end", () => void exit(0));
process.stdin.on("error", () => void exit(0));

emit({ loaded: true });
if (cfg.waitGo) {
  await new Promise<void>((resolve) => {
    let input = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (d: string) => {
      input += d;
      if (input.split("\n").includes("go")) resolve();
    });
  });
} else {
  process.stdin.resume();
}

const stopAt = cfg.stopAtHead === undefined ? undefined : BigInt(cfg.stopAtHead);
const reached = new Set<string>();
let firstAt = 0;
let lastAt = 0;
try {
  await worker.start();
  emit({ ready: true, workerId: worker.id, at: now() });
  await Promise.all(Array.from({ length: cfg.concurrency ?? 1 }, () => loop()));
} catch (e) {
  process.stderr.write(`[${cfg.label}] ${(e as Error).stack}\n`);
  await exit(1);
}

async function loop(): Promise<void> {
  for await (const batch of worker.assigned()) {
    const y = now();
    if (firstAt === 0) firstAt = y;
    await handle(cfg.handler ?? "a", batch.tx, sluiceRows(batch.events));
    if (cfg.rss) peak = Math.max(peak, rssNow());
    const ended = (batch as unknown as { ended?: Promise<void> }).ended;
    const line = { c: batch.consumer, to: batch.to.toString(), n: batch.events.length, y };
    const last = stopAt !== undefined && batch.to >= stopAt && (reached.add(batch.consumer), reached.size === cfg.consumers.length);
    if (ended) {
      void ended.then(() => {
        const at = now();
        lastAt = Math.max(lastAt, at);
        if (!batch.signal.aborted) emit({ ...line, at });
        if (last) {
          emit({ done: true, firstAt, lastAt, rss: { peak, base } });
          void exit(0);
        }
      });
    } else {
      emit({ ...line, at: now() });
    }
  }
}
