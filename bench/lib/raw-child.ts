/**
 * Raw postgres.js loops in their own process (the twin of worker-child.ts).
 *
 * Config: JSON in argv[2]:
 *   { url, label, consumers: string[], batchSize, handler?, wake: "notify" | "poll", pollMs,
 *     channel?, lock?: boolean, schema?, rss?: boolean, stopAtHead?: string }
 * `lock`: each consumer loop first takes a session advisory lock on a
 * dedicated connection (blocking), the hand-written way to get one owner
 * with standbys; a killed owner's lock is released by the server at once.
 * stdout: {"loaded":true}, {"ready":true,"at":ms}, {"owns":consumer,"at":ms},
 * {"c","to","n","y","at"} per batch, {"done":true,"rss":...} with stopAtHead.
 */
import postgres from "postgres";
import { type HandlerKind, now, rawFollow, Waker } from "./raw.ts";

const cfg = JSON.parse(process.argv[2]!) as {
  url: string;
  label: string;
  consumers: string[];
  batchSize: number;
  handler?: HandlerKind;
  wake: "notify" | "poll";
  pollMs: number;
  channel?: string;
  lock?: boolean;
  schema?: string;
  rss?: boolean;
  stopAtHead?: string;
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
const ctl = new AbortController();
let exiting = false;
async function exit(code: number): Promise<void> {
  if (exiting) return;
  exiting = true;
  ctl.abort();
  await sql.end({ timeout: 1 }).catch(() => {});
  if (sampler) clearInterval(sampler);
  process.exit(code);
}
process.on("SIGTERM", () => void exit(0));
process.stdin.on("end", () => void exit(0));
process.stdin.on("error", () => void exit(0));
process.stdin.resume();
emit({ loaded: true });

const waker = new Waker();
if (cfg.wake === "notify") await sql.listen(cfg.channel ?? "sluice_events", () => waker.wake());
emit({ ready: true, at: now() });

const stopAt = cfg.stopAtHead === undefined ? undefined : BigInt(cfg.stopAtHead);
const reached = new Set<string>();
let firstAt = 0;
let lastAt = 0;
await Promise.all(cfg.consumers.map(async (name) => {
  if (cfg.lock) {
    const conn = await sql.reserve();
    await conn`select pg_advisory_lock(hashtext(${"rawlock:" + name}))`;
    emit({ owns: name, at: now() });
  }
  let y = 0;
  await rawFollow(sql, {
    name,
    batchSize: cfg.batchSize,
    kind: cfg.handler ?? "a",
    schema: cfg.schema,
    waker: cfg.wake === "notify" ? waker : undefined,
    pollMs: cfg.pollMs,
    signal: ctl.signal,
    onRead: () => {
      y = now();
      if (firstAt === 0) firstAt = y;
    },
    onCommit: (to, n) => {
      const at = now();
      lastAt = Math.max(lastAt, at);
      if (cfg.rss) peak = Math.max(peak, rssNow());
      emit({ c: name, to: to.toString(), n, y, at });
      if (stopAt !== undefined && to >= stopAt && (reached.add(name), reached.size === cfg.consumers.length)) {
        emit({ done: true, firstAt, lastAt, rss: { peak, base } });
        void exit(0);
      }
    },
  }).catch((e) => {
    if (!ctl.signal.aborted) process.stderr.write(`[${cfg.label}] ${name}: ${(e as Error).message}\n`);
  });
}));
