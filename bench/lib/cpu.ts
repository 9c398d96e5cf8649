/**
 * CPU accounting for a measured run, the noise-robust companion of
 * throughput on a shared machine: this process's CPU (process.cpuUsage:
 * every thread, GC included) and the CPU of the PostgreSQL backends
 * connected to the scratch database (/proc/<pid>/stat utime + stime; Linux
 * only, 10 ms ticks, backends that end before the reading are missed).
 */
import { readFileSync } from "node:fs";
import type postgres from "postgres";

const TICK_MS = 10; // USER_HZ is 100 on Linux

function procMs(pid: number): number | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * TICK_MS; // fields 14 and 15 of the full line
  } catch {
    return undefined;
  }
}

function selfMs(): number {
  try {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  } catch {
    return NaN;
  }
}

async function backends(sql: postgres.Sql, db: string): Promise<Map<number, number>> {
  const rows = await sql`select pid from pg_stat_activity where datname = ${db} and pid <> pg_backend_pid()`;
  const out = new Map<number, number>();
  for (const r of rows) {
    const ms = procMs(r.pid as number);
    if (ms !== undefined) out.set(r.pid as number, ms);
  }
  return out;
}

export interface CpuUse {
  /** ms of CPU of this process. */
  readonly clientMs: number;
  /** ms of CPU of the database's backends (NaN when /proc is not readable). */
  readonly serverMs: number;
}

/** Starts measuring; `stop()` returns the CPU used since. */
export async function cpuMeter(sql: postgres.Sql, db: string): Promise<{ stop(): Promise<CpuUse> }> {
  const b0 = await backends(sql, db);
  const c0 = selfMs();
  return {
    async stop() {
      const c1 = selfMs();
      const b1 = await backends(sql, db);
      let server = 0;
      for (const [pid, ms] of b1) server += ms - (b0.get(pid) ?? 0);
      return { clientMs: c1 - c0, serverMs: b1.size || b0.size ? server : NaN };
    },
  };
}
