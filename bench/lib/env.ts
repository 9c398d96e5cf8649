/** Machine, runtime and server facts for the report, and the load average (noise). */
import { execFileSync } from "node:child_process";
import os from "node:os";
import type postgres from "postgres";

export function loadavg(): number {
  try {
    return os.loadavg()[0] ?? NaN;
  } catch {
    return NaN;
  }
}

export function runtimeName(): "node" | "bun" | "deno" {
  return "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";
}

export function runtimeVersion(): string {
  const g = globalThis as { Deno?: { version: { deno: string } }; Bun?: { version: string } };
  if (g.Deno) return `deno ${g.Deno.version.deno}`;
  if (g.Bun) return `bun ${g.Bun.version}`;
  return `node ${process.version}`;
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "unavailable";
  }
}

/** The commit measured, and whether src/ had uncommitted changes (what ran is the working tree). */
function sourceState(): string {
  const head = run("git", ["rev-parse", "--short", "HEAD"]);
  const changed = run("git", ["status", "--porcelain", "--", "src"]).split("\n").filter(Boolean).length;
  return `git ${head}${changed ? `, with ${changed} uncommitted change(s) in src/ (the working tree was measured)` : ", src/ clean"}`;
}

/** Everything the report's header lists. */
export async function environment(sql: postgres.Sql): Promise<Record<string, string>> {
  const cpus = os.cpus();
  const [v] = await sql`select version() as v`;
  const settings = await sql`select name, setting, unit from pg_settings
    where name in ('shared_buffers', 'synchronous_commit', 'fsync', 'max_connections', 'work_mem', 'jit', 'wal_level', 'shared_preload_libraries')
    order by name`;
  const pkg = (name: string): string => {
    try {
      return run("node", ["-p", `require("./node_modules/${name}/package.json").version`]);
    } catch {
      return "?";
    }
  };
  return {
    cpu: `${cpus[0]?.model ?? "?"} x ${cpus.length} (${os.availableParallelism?.() ?? cpus.length} usable)`,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: run("node", ["--version"]),
    bun: run("node_modules/.bin/bun", ["--version"]),
    deno: (run("node_modules/.bin/deno", ["--version"]).split("\n")[0] ?? "?").replace(/^deno ([^ ]+).*/, "$1"),
    postgres: String(v!.v).split(" on ")[0]!,
    "postgres settings": settings.map((s) => `${s.name}=${s.setting}${s.unit ? s.unit : ""}`).join(", "),
    "postgres.js": pkg("postgres"),
    "drizzle-orm": pkg("drizzle-orm"),
    tsx: pkg("tsx"),
    "sluice source": sourceState(),
  };
}
