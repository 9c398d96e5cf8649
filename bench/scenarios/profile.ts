/**
 * Profile of scenario 1a (batch 1000 by default): where the time goes, for
 * sluice and for the raw loop, each in its own child process.
 *
 * - `node --cpu-prof` on the child (samples restricted to the catch-up
 *   windows): CPU per 1,000 events by area and by function;
 * - the children connect through a timing TCP proxy (bench/lib/proxy.ts, a
 *   process of its own): every statement's count and its time from Sync to
 *   ReadyForQuery, per batch;
 * - EXPLAIN ANALYZE of sluice's probe and of the raw read on a 1,000-row window;
 * - the read path alone, in this process: CPU per 1,000 events to read the
 *   whole log in windows of `batch` with the raw `select *`, with src's
 *   probe(), and with the probe's SQL and no row mapping.
 *
 *   node --import tsx bench/scenarios/profile.ts [--quick] [--runs 3] [--batch 1000] [--handler a] [--json out.json]
 */
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { finish, num, parseArgs, progress, str } from "../lib/args.ts";
import { runToEnd, start } from "../lib/child.ts";
import { type ProfileSummary, summarizeProfile } from "../lib/cpuprofile.ts";
import { fillEvents, scratch, settle } from "../lib/db.ts";
import { loadavg } from "../lib/env.ts";
import type { ProxyStats } from "../lib/proxy.ts";
import { createBenchTables } from "../lib/raw.ts";
import { fixed, int, table } from "../lib/stats.ts";

const args = parseArgs();
const N = num(args.argv, "events") ?? (args.quick ? 20_000 : 200_000);
const batch = num(args.argv, "batch") ?? 1000;
const handler = str(args.argv, "handler") ?? "a";
const started = new Date();
const load0 = loadavg();
const dir = mkdtempSync(join(tmpdir(), "sluice-prof-"));

interface SideResult {
  system: "raw" | "sluice";
  events: number;
  batches: number;
  eventsPerSec: number[];
  profile: ProfileSummary;
  statements: ProxyStats;
}

const db = await scratch("profile", args.url);
const sides: SideResult[] = [];
let explain: Record<string, string[]> = {};
const readPath: Record<string, number[]> = {};
try {
  await createBenchTables(db.sql);
  progress(`filling ${N} events`);
  const { head } = await fillEvents(db.sql, N);
  await settle(db.sql);

  // The statement-timing proxy, in its own process.
  const proxy = start("node", "bench/lib/proxy.ts", [db.url]);
  const { url: proxied } = (await proxy.waitLine((l) => typeof l.url === "string")) as { url: string };
  const stats = async (): Promise<ProxyStats> => {
    const n = proxy.lines.length;
    proxy.proc.stdin!.write("stats\n");
    return (await proxy.waitLine((l) => proxy.lines.indexOf(l) >= n && "byStatement" in l)) as unknown as ProxyStats;
  };
  try {
    for (const system of ["raw", "sluice"] as const) {
      proxy.proc.stdin!.write("reset\n");
      const profDir = join(dir, system);
      const json = join(dir, `${system}.json`);
      progress(`profiling ${system} (1${handler}, batch ${batch}, ${args.runs} runs)`);
      await runToEnd("node", "bench/scenarios/catchup.ts", [
        "--url", proxied, "--systems", system, "--handlers", handler, "--batches", String(batch), "--runs", String(args.runs), "--json", json,
      ], { nodeFlags: ["--cpu-prof", `--cpu-prof-dir=${profDir}`], echo: false });
      const st = await stats();
      const r = JSON.parse(await import("node:fs").then((fs) => fs.readFileSync(json, "utf8"))) as {
        data: { series: { runs: { events: number; batches: number; eventsPerSec: number; monoStart: number; monoEnd: number }[] }[] };
      };
      const runs = r.data.series[0]!.runs;
      const file = join(profDir, readdirSync(profDir).find((f) => f.endsWith(".cpuprofile"))!);
      sides.push({
        system,
        events: runs.reduce((a, x) => a + x.events, 0),
        batches: runs.reduce((a, x) => a + x.batches, 0),
        eventsPerSec: runs.map((x) => x.eventsPerSec),
        profile: summarizeProfile(file, 20, runs.map((x) => ({ from: x.monoStart, to: x.monoEnd }))),
        statements: st,
      });
    }
  } finally {
    proxy.proc.stdin!.end();
    await proxy.exited;
  }

  // Server-side plans of the two reads (1,000 rows in the middle of the log).
  const mid = String(head / 2n);
  const { text: PROBE_SQL, params: PROBE_PARAMS } = await probeText(batch);
  /** The probe's parameters for a window after `cp` (whatever else the current src passes stays as captured). */
  const probeParams = (cp: bigint | string): unknown[] => [String(cp), batch, ...PROBE_PARAMS.slice(2)];
  const plans = {
    "raw read": [`select * from sluice.events where global_position > $1 order by global_position limit $2`, [mid, batch]],
    "sluice probe": [PROBE_SQL, probeParams(mid)],
  } as const;
  for (const [k, [q, p]] of Object.entries(plans)) {
    for (let i = 0; i < 6; i++) await db.sql.unsafe(q, p as never, { prepare: true });
    const rows = await db.sql.unsafe(`explain (analyze, buffers) ${q}`, p as never);
    explain[k] = rows.map((x) => String(x["QUERY PLAN"]));
  }

  // The read path alone (no transactions), CPU of this process per 1,000 events.
  const { probe } = await import("../../src/consumption/statements.ts");
  const { resolveTableNames } = await import("../../src/db/names.ts");
  const { connect } = await import("../lib/db.ts");
  const { rawRead, rawRows } = await import("../lib/raw.ts");
  const rsql = connect(db.url, { max: 1 });
  const tables = resolveTableNames();
  const cpuMs = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const variants: [string, (cp: bigint) => Promise<bigint>][] = [
    ["raw `select *` (postgres.js parses jsonb and timestamptz)", async (cp) => {
      const rows = await rawRead(rsql, cp, batch);
      rawRows(rows);
      return BigInt(rows.at(-1)!.global_position);
    }],
    ["src `probe()` (probe SQL, then `toEvent` per row)", async (cp) => (await callProbe(probe, rsql, tables, cp, batch)).positions.at(-1)!],
    ["probe SQL only (rows as postgres.js returns them, no mapping)", async (cp) => {
      const rows = await rsql.unsafe(PROBE_SQL, probeParams(cp) as never, { prepare: true }).values();
      return BigInt(rows.at(-1)![2] as string);
    }],
  ];
  try {
    for (let round = 0; round < (args.quick ? 1 : 2); round++) {
      for (const [k, f] of variants) {
        let cp = 0n;
        const c0 = cpuMs();
        while (cp < head) cp = await f(cp);
        (readPath[k] ??= []).push(((cpuMs() - c0) / Number(head)) * 1000);
      }
    }
  } finally {
    await rsql.end({ timeout: 5 });
  }
} finally {
  await db.drop();
  rmSync(dir, { recursive: true, force: true });
}

/**
 * The text and parameters of sluice's probe for the default tables and an
 * unscoped consumer, captured from src/consumption/statements.ts with a
 * recording executor (so this follows src as it changes).
 */
async function probeText(limit: number): Promise<{ text: string; params: unknown[] }> {
  const { probe } = await import("../../src/consumption/statements.ts");
  const { resolveTableNames } = await import("../../src/db/names.ts");
  let text = "";
  let params: unknown[] = [];
  const rows = Object.assign(Promise.resolve([]), { values: () => Promise.resolve([]) });
  const ex = { options: {}, unsafe: (q: string, p: unknown[]) => ((text = q), (params = p), rows) };
  await callProbe(probe, ex, resolveTableNames(), 0n, limit);
  return { text, params };
}

/** Calls src's probe() whatever its trailing parameters (the consumer name was added to it). */
function callProbe(probe: unknown, ex: unknown, tables: unknown, checkpoint: bigint, limit: number): Promise<{ positions: bigint[] }> {
  return (probe as (...a: unknown[]) => Promise<{ positions: bigint[] }>)(ex, tables, checkpoint, limit, { aggregateTypes: [], boundedContexts: [] }, "bench_profile");
}

const per1k = (ms: number, events: number) => (ms / events) * 1000;
const raw = sides.find((s) => s.system === "raw")!;
const sl = sides.find((s) => s.system === "sluice")!;
const areas = [...new Set([...raw.profile.areas, ...sl.profile.areas].map((a) => a.area))];
const areaRows = areas.map((a) => {
  const r = raw.profile.areas.find((x) => x.area === a)?.ms ?? 0;
  const s = sl.profile.areas.find((x) => x.area === a)?.ms ?? 0;
  return [a, fixed(per1k(r, raw.events), 2), fixed(per1k(s, sl.events), 2), fixed(per1k(s, sl.events) - per1k(r, raw.events), 2)];
});
areaRows.push([
  "**total busy (non-idle)**",
  `**${fixed(per1k(raw.profile.busyMs, raw.events), 2)}**`,
  `**${fixed(per1k(sl.profile.busyMs, sl.events), 2)}**`,
  `**${fixed(per1k(sl.profile.busyMs, sl.events) - per1k(raw.profile.busyMs, raw.events), 2)}**`,
]);
const fnTable = (s: SideResult) =>
  table(["self ms / 1k events", "% of busy", "function", "where", "area"], s.profile.functions.slice(0, 15).map((f) => [
    fixed(per1k(f.ms, s.events), 2),
    fixed(f.pct, 1),
    `\`${f.fn}\``,
    f.where,
    f.area,
  ]));
const stmtTable = (s: SideResult) => {
  const entries = Object.entries(s.statements.byStatement).sort((a, b) => b[1].totalMs - a[1].totalMs).slice(0, 8);
  return table(["statement", "count", "avg ms", "ms per batch"], entries.map(([k, v]) => [
    `\`${k.replace(/\|/g, "\\|")}\``,
    int(v.count),
    fixed(v.totalMs / v.count, 2),
    fixed(v.totalMs / s.batches, 2),
  ]));
};
const md = [
  `1${handler} at batch ${batch}, ${int(N)} events, ${args.runs} runs per side, each side in its own Node child under \`--cpu-prof\` ` +
  `(samples restricted to the catch-up windows, start-up included), connected through a timing proxy process ` +
  `(which itself costs CPU on this 2-core machine, so the events/s here are lower than in scenario 1). ` +
  `Events/s of the profiled runs: raw ${raw.eventsPerSec.map(int).join(", ")}; sluice ${sl.eventsPerSec.map(int).join(", ")}.`,
  `### CPU of the Node process per 1,000 events, by area (ms)\n\n` + table(["area", "raw", "sluice", "sluice - raw"], areaRows),
  `### sluice: top functions by self time\n\n` + fnTable(sl),
  `### raw: top functions by self time\n\n` + fnTable(raw),
  `### Statements (time from Sync to ReadyForQuery at the proxy: server time plus loopback hops), sluice\n\n` + stmtTable(sl) +
  `\n\nPer batch, wall time: ${fixed(sl.eventsPerSec.length ? (batch / (sl.eventsPerSec.reduce((a, b) => a + b, 0) / sl.eventsPerSec.length)) * 1000 : NaN, 2)} ms.`,
  `### Statements, raw\n\n` + stmtTable(raw) +
  `\n\nPer batch, wall time: ${fixed(raw.eventsPerSec.length ? (batch / (raw.eventsPerSec.reduce((a, b) => a + b, 0) / raw.eventsPerSec.length)) * 1000 : NaN, 2)} ms.`,
  `### The read path alone: CPU of one Node process per 1,000 events read (windows of ${batch}, no transactions)\n\n` +
  table(["variant", "CPU ms / 1k events (per round)"], Object.entries(readPath).map(([k, xs]) => [k, xs.map((x) => fixed(x, 2)).join(" / ")])),
  `### EXPLAIN ANALYZE of the two reads (${batch} rows)\n\n` +
  Object.entries(explain).map(([k, lines]) => `${k}:\n\n\`\`\`\n${lines.join("\n")}\n\`\`\``).join("\n\n"),
].join("\n\n");

finish(args, {
  id: "P",
  title: `Profile of 1${handler} (batch ${batch})`,
  startedAt: started.toISOString(),
  seconds: (Date.now() - started.getTime()) / 1000,
  quick: args.quick,
  load: [load0, loadavg()],
  markdown: md,
  targets: [],
  data: { events: N, batch, handler, sides, explain, readPath },
});
process.exit(0);
