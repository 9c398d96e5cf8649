/**
 * Workers as real child processes (test/support/worker-child.ts on the
 * runtime running the tests), and database reads for the cluster tests.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import type postgres from "postgres";
import type { WorkerOptions } from "../../src/mod.ts";
import { deploymentKeys } from "../../src/coordination/keys.ts";
import { resolveTableNames, type TableNamesInput } from "../../src/db/names.ts";
import { createTestDatabase, type TestDatabase, waitFor } from "./db.ts";
import { tsCommand } from "./runtime.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const script = fileURLToPath(new URL("./worker-child.ts", import.meta.url));

/** What a child last reported about itself. */
export interface ChildStatus {
  leader: boolean;
  healthy: boolean;
  consumers: string[];
}

/** One worker process. */
export interface Child {
  readonly label: string;
  readonly proc: ChildProcess;
  /** Its worker id (known once ready). */
  workerId: string;
  /** Its last reported status. */
  status: ChildStatus | undefined;
  /** Every JSON line it printed. */
  readonly lines: Record<string, unknown>[];
  stderr: string;
  /** Set once the process has exited. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface StartOptions {
  consumers: WorkerOptions["consumers"] | string[];
  /** Worker options on top of the fast test settings. */
  options?: Record<string, unknown>;
  handledPrefix?: string;
  /** The first batch with an event of this aggregate type stays open `delayMs` (see worker-child.ts). */
  slow?: { aggregateType: string; delayMs: number; lateWrite?: boolean };
  /** How long to wait for the ready line. @default 30000 */
  readyTimeoutMs?: number;
}

/** Starts, stops and kills worker processes on one database; `killAll()` in `after`. */
export class Cluster {
  readonly url: string;
  readonly children: Child[] = [];

  constructor(url: string) {
    this.url = url;
  }

  /** Starts a worker process and waits until it is registered (its ready line). */
  async start(label: string, o: StartOptions): Promise<Child> {
    const child = await this.spawn(label, o);
    return await this.go(child, o.readyTimeoutMs);
  }

  /** Starts a worker process up to the point where it waits for `go()` (modules loaded, no database touched). */
  async spawn(label: string, o: StartOptions): Promise<Child> {
    const consumers = o.consumers.map((c) => (typeof c === "string" ? { name: c } : c));
    const config = { url: this.url, label, consumers, options: o.options, handledPrefix: o.handledPrefix, slow: o.slow };
    const c = tsCommand(script);
    const proc = spawn(c.cmd, c.args, {
      cwd: root,
      env: { ...process.env, SLUICE_CHILD_CONFIG: JSON.stringify(config) },
      // stdin stays open: the child stops when it closes (this process died).
      stdio: ["pipe", "pipe", "pipe"],
    });
    let resolveExit!: (v: { code: number | null; signal: NodeJS.Signals | null }) => void;
    const child: Child = {
      label,
      proc,
      workerId: "",
      status: undefined,
      lines: [],
      stderr: "",
      exit: undefined,
      exited: new Promise((r) => (resolveExit = r)),
    };
    this.children.push(child);
    let buf = "";
    proc.stdout!.setEncoding("utf8");
    proc.stdout!.on("data", (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        let o: Record<string, unknown>;
        try {
          o = JSON.parse(line) as Record<string, unknown>;
        } catch {
          o = { text: line };
        }
        child.lines.push(o);
        if (o.ready) child.workerId = o.workerId as string;
        if (o.status) child.status = o.status as ChildStatus;
      }
    });
    proc.stderr!.setEncoding("utf8");
    proc.stderr!.on("data", (d: string) => (child.stderr += d));
    proc.stdin!.on("error", () => {});
    // "close": after the last stdout line. The child's own {"exit":code} line
    // wins over the reported code: Deno's child_process reports the signal
    // sent by kill() even when the child handled it and exited with a code.
    proc.on("close", (code, signal) => {
      const said = [...child.lines].reverse().find((l) => typeof l.exit === "number");
      child.exit = said ? { code: said.exit as number, signal: null } : { code, signal };
      resolveExit(child.exit);
    });
    proc.on("error", (e) => {
      child.stderr += `spawn error: ${e.message}\n`;
      child.exit ??= { code: null, signal: null };
      resolveExit(child.exit);
    });
    const r = await waitFor(`${label} loaded`, () => (child.exit ? "exited" : child.lines.some((l) => l.loaded) && "loaded"), {
      timeoutMs: o.readyTimeoutMs ?? 30_000,
      everyMs: 10,
    });
    if (r === "exited") throw new Error(`${label} exited (${JSON.stringify(child.exit)}) before loading:\n${child.stderr}`);
    return child;
  }

  /** Lets a spawned child start its worker; waits until it is registered (its ready line). */
  async go(child: Child, readyTimeoutMs = 30_000): Promise<Child> {
    child.proc.stdin!.write("go\n");
    const r = await waitFor(`${child.label} ready`, () => (child.exit ? "exited" : child.workerId !== "" && "ready"), {
      timeoutMs: readyTimeoutMs,
      everyMs: 5,
    });
    if (r === "exited") throw new Error(`${child.label} exited (${JSON.stringify(child.exit)}) before ready:\n${child.stderr}`);
    return child;
  }

  /** Every child's label, stderr and last lines (for diagnosing a failure). */
  dump(): string {
    return this.children.map((c) => `=== ${c.label} ${c.workerId} exit=${JSON.stringify(c.exit)}\n${c.stderr}${c.lines.slice(-5).map((l) => JSON.stringify(l)).join("\n")}`).join("\n");
  }

  /** SIGTERM, then waits for the exit; returns the exit code. */
  async stop(child: Child, timeoutMs = 15_000): Promise<number | null> {
    if (!child.exit) child.proc.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([child.exited, new Promise<"timeout">((res) => (timer = setTimeout(() => res("timeout"), timeoutMs)))]);
    clearTimeout(timer);
    if (r === "timeout") {
      child.proc.kill("SIGKILL");
      throw new Error(`${child.label} did not exit within ${timeoutMs} ms of SIGTERM:\n${child.stderr}`);
    }
    return r.code;
  }

  /** kill -9: the process dies at once (no deregistration); resolves once it is gone. */
  async kill(child: Child): Promise<void> {
    if (!child.exit) child.proc.kill("SIGKILL");
    await child.exited;
  }

  /** SIGSTOP: the process freezes; its connections (and session locks) stay open. */
  freeze(child: Child): void {
    process.kill(child.proc.pid!, "SIGSTOP");
  }

  /** SIGCONT: a frozen process goes on. */
  thaw(child: Child): void {
    if (!child.exit) process.kill(child.proc.pid!, "SIGCONT");
  }

  /** Kills every child still running (for `after`). */
  async killAll(): Promise<void> {
    await Promise.all(this.children.map((c) => this.kill(c)));
  }

  /** Waits until `child` reports an open slow batch; returns it. */
  async slowBatch(child: Child, timeoutMs = 15_000): Promise<{ consumer: string; from: bigint; to: bigint }> {
    const l = await waitFor(`${child.label} slow batch`, () => child.lines.find((l) => l.slowBatch)?.slowBatch as Record<string, string> | undefined, {
      timeoutMs,
      everyMs: 5,
    });
    return { consumer: l.consumer!, from: BigInt(l.from!), to: BigInt(l.to!) };
  }

  /** Lines with a batch error (a duplicate would show up here), with their child's label. */
  batchErrors(): string[] {
    return this.children.flatMap((c) => c.lines.filter((l) => l.batchError).map((l) => `${c.label}: ${JSON.stringify(l)}`));
  }

  /** The label of a worker id. */
  labelOf(workerId: string | null): string | null {
    if (workerId === null) return null;
    return this.children.find((c) => c.workerId === workerId)?.label ?? `?${workerId}`;
  }
}

/** Schema-qualified table name (schema defaults to "sluice"). */
const tbl = (schema: string, name: string) => `"${schema}"."${name}"`;

/** consumer name → owner worker id (or null), for the given consumers (all when omitted). */
export async function assignments(sql: postgres.Sql, consumers?: readonly string[], schema = "sluice"): Promise<Map<string, string | null>> {
  const rows = await sql.unsafe(
    `select consumer_name as c, worker_id::text as w from ${tbl(schema, "consumer_assignments")} order by consumer_name`,
  );
  const out = new Map<string, string | null>();
  for (const r of rows) {
    if (!consumers || consumers.includes(r.c as string)) out.set(r.c as string, (r.w as string | null) ?? null);
  }
  return out;
}

/** How many of `consumers` each worker id owns (unassigned ones under "null"). */
export function countPerWorker(a: ReadonlyMap<string, string | null>): Map<string, number> {
  const out = new Map<string, number>();
  for (const w of a.values()) out.set(w ?? "null", (out.get(w ?? "null") ?? 0) + 1);
  return out;
}

/** True when `consumers` are all owned, each by one of `workers`, every worker having floor(n/w) or ceil(n/w). */
export function isBalanced(a: ReadonlyMap<string, string | null>, workers: readonly string[]): boolean {
  const n = a.size;
  const lo = Math.floor(n / workers.length);
  const hi = Math.ceil(n / workers.length);
  for (const w of a.values()) if (w === null || !workers.includes(w)) return false;
  const counts = countPerWorker(a);
  return workers.every((w) => {
    const k = counts.get(w) ?? 0;
    return k >= lo && k <= hi;
  });
}

/** Positions of every event, ascending. */
export async function allPositions(sql: postgres.Sql, schema = "sluice"): Promise<bigint[]> {
  const rows = await sql.unsafe(`select global_position::text as p from ${tbl(schema, "events")} order by global_position`);
  return rows.map((r) => BigInt(r.p as string));
}

/** Handled rows of one consumer (name as stored in `handled`), ascending. */
export async function handledRows(sql: postgres.Sql, consumer: string): Promise<{ position: bigint; by: string }[]> {
  const rows = await sql`select position::text as p, handled_by as by from handled where consumer = ${consumer} order by position`;
  return rows.map((r) => ({ position: BigInt(r.p as string), by: r.by as string }));
}

/** Checkpoints of the given consumers. */
export async function checkpoints(sql: postgres.Sql, consumers: readonly string[], schema = "sluice"): Promise<Map<string, bigint>> {
  const rows = await sql.unsafe(
    `select consumer_name as c, last_position::text as p from ${tbl(schema, "consumer_checkpoints")}`,
  );
  const out = new Map<string, bigint>();
  for (const r of rows) if (consumers.includes(r.c as string)) out.set(r.c as string, BigInt(r.p as string));
  return out;
}

/**
 * Waits until every consumer's checkpoint is the head and it handled every
 * event. Unscoped consumers only. `prefix` is the child's handledPrefix.
 */
export async function waitCaughtUp(
  sql: postgres.Sql,
  consumers: readonly string[],
  o: { schema?: string; prefix?: string; timeoutMs?: number } = {},
): Promise<bigint> {
  const schema = o.schema ?? "sluice";
  const r = await waitFor(`${consumers.join(",")} caught up`, async () => {
    const all = await allPositions(sql, schema);
    const top = all.at(-1) ?? 0n;
    const cps = await checkpoints(sql, consumers, schema);
    if (!consumers.every((c) => cps.get(c) === top)) return false;
    const rows = await sql`select consumer, count(*)::int as n from handled where consumer in ${sql(consumers.map((c) => (o.prefix ?? "") + c))} group by 1`;
    const counts = new Map(rows.map((r) => [r.consumer as string, r.n as number]));
    return consumers.every((c) => (counts.get((o.prefix ?? "") + c) ?? 0) === all.length) && { top };
  }, { timeoutMs: o.timeoutMs ?? 15_000 });
  return r.top;
}

/** The coordinator's lock keys (src/coordination/keys.ts). */
export function leaderKey(tables?: TableNamesInput): bigint {
  return deploymentKeys(resolveTableNames(tables)).leaderKey;
}
export function livenessKey(workerId: string, tables?: TableNamesInput): bigint {
  return deploymentKeys(resolveTableNames(tables)).livenessKey(workerId);
}

/**
 * A fresh database with the `handled` table the child workers write to, and
 * a cluster on it. Close both with {@link closeCluster}.
 */
export async function openCluster(label: string): Promise<{ db: TestDatabase; cluster: Cluster }> {
  const db = await createTestDatabase(label);
  await db.sql`create table handled (consumer text, position bigint, handled_by text, primary key (consumer, position))`;
  return { db, cluster: new Cluster(db.url) };
}

/** Kills every child of the cluster and drops its database. */
export async function closeCluster(db: TestDatabase | undefined, cluster: Cluster | undefined): Promise<void> {
  if (process.env.SLUICE_CHILD_DEBUG) console.log(cluster?.dump());
  await cluster?.killAll();
  await db?.drop();
}

/** Backend pid holding advisory lock `key` (undefined when free). */
export async function lockHolder(sql: postgres.Sql, key: bigint): Promise<number | undefined> {
  const [r] = await sql.unsafe(
    `select pid from pg_locks where locktype = 'advisory' and granted and objsubid = 1
       and database = (select oid from pg_database where datname = current_database())
       and classid::bigint = ($1::bigint >> 32) & 4294967295 and objid::bigint = $1::bigint & 4294967295`,
    [key.toString()],
  );
  return r ? (r.pid as number) : undefined;
}

/**
 * A registered worker that is not a process: a `worker_nodes` row whose
 * liveness lock the test holds on its own connection and whose heartbeat it
 * beats, so the leader sees it alive. `die()` releases the lock and stops
 * beating: from then on it is a dead worker.
 */
export async function impostor(
  sql: postgres.Sql,
  consumers: readonly string[],
  o: { workerId?: string; tables?: TableNamesInput; beatEveryMs?: number } = {},
): Promise<{ workerId: string; die(): Promise<void> }> {
  const workerId = o.workerId ?? randomUUID();
  const key = livenessKey(workerId, o.tables);
  const schema = o.tables?.schema ?? "sluice";
  const conn = await sql.reserve();
  await conn`select pg_advisory_lock(${key.toString()}::bigint)`;
  await conn.unsafe(
    `insert into ${tbl(schema, "worker_nodes")} (worker_id, consumers, liveness_key, backend_pid)
     values ($1, array(select jsonb_array_elements_text($2::text::jsonb)), $3::bigint, pg_backend_pid())`,
    [workerId, JSON.stringify(consumers), key.toString()],
  );
  let alive = true;
  const beat = setInterval(() => {
    if (alive) void conn.unsafe(`update ${tbl(schema, "worker_nodes")} set heartbeat_at = now() where worker_id = $1`, [workerId]).catch(() => {});
  }, o.beatEveryMs ?? 100);
  return {
    workerId,
    async die() {
      if (!alive) return;
      alive = false;
      clearInterval(beat);
      await conn`select pg_advisory_unlock(${key.toString()}::bigint)`;
      conn.release();
    },
  };
}
