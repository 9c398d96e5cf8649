// The `sluice` CLI, run as a child process on the current runtime (Node via
// tsx, Bun, Deno): exit codes, help, migrate/--verify, config files, generate.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { migrate, verifySchema } from "../../src/db/migrate.ts";
import { COMMANDS } from "../../src/cli/commands/mod.ts";
import { createTestDatabase, type TestDatabase } from "../support/db.ts";
import { runTs } from "../support/runtime.ts";

const hasPsql = spawnSync("psql", ["--version"], { stdio: "ignore" }).status === 0;

/** Runs `sluice ...args`; DATABASE_URL is whatever the test runner set unless `env` overrides it. */
function sluice(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runTs("src/cli/main.ts", args, env);
}

function psql(url: string, file: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", file], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out }));
  });
}

async function schemaCount(db: TestDatabase): Promise<number> {
  const [r] = await db.sql`select count(*)::int as n from pg_namespace`;
  return r!.n as number;
}

const silentLogger = { debug() {}, info() {}, warn() {}, error() {} };

describe("sluice CLI", () => {
  let db: TestDatabase;
  let tmp: string;
  before(async () => {
    db = await createTestDatabase("cli", { migrated: false });
    tmp = mkdtempSync(join(tmpdir(), "sluice-cli-"));
  });
  after(async () => {
    await db?.drop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("prints help and exits 0 at top level and on every command", async () => {
    const runs = await Promise.all([
      sluice(["--help"]),
      sluice(["-h"]),
      ...COMMANDS.flatMap((c) => [sluice([c.name, "--help"]), sluice([c.name, "-h"])]),
      sluice(["help", "generate"]),
      sluice(["generate", "--no-such-flag", "--help"]), // help wins
    ]);
    for (const r of runs) {
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^Usage: sluice /);
      assert.match(r.stdout, /Exit codes:/);
    }
    for (const c of COMMANDS) assert.match(runs[0]!.stdout, new RegExp(`^ {2}${c.name} `, "m"));
    const migrateHelp = runs[2]!.stdout;
    for (const flag of ["--database-url", "--schema", "--events-table", "--worker-nodes-table", "--verify", "--config"]) {
      assert.ok(migrateHelp.includes(flag), `migrate --help mentions ${flag}`);
    }
    const version = await sluice(["--version"]);
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout, /^sluice \d+\.\d+\.\d+/);
  });

  it("exits 2 with a message on stderr for usage errors", async () => {
    const cases: [string[], RegExp][] = [
      [[], /Usage: sluice <command>/],
      [["frobnicate"], /Unknown command "frobnicate"/],
      [["migrate", "--nope"], /Unknown option '--nope'/],
      [["migrate", "stray"], /Unexpected argument 'stray'/],
      [["migrate", "--schema"], /--schema/],
      [["generate"], /Missing required option '--out DIR'/],
      [["generate", "--out", tmp, "--filename", "../x.sql"], /must be a file name/],
    ];
    const runs = await Promise.all(cases.map(([args]) => sluice(args)));
    runs.forEach((r, i) => {
      const [args, message] = cases[i]!;
      assert.equal(r.code, 2, `sluice ${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stdout, "");
    });
  });

  it("exits 1 with the error code when the command fails", async () => {
    const r = await sluice(["migrate", "--database-url", "postgres://postgres@127.0.0.1:1/nowhere"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^sluice migrate: MIGRATION_FAILED: .*ECONNREFUSED/);
  });

  it("migrate creates everything on an empty database (DATABASE_URL), then applies nothing", async () => {
    const first = await sluice(["migrate"], { DATABASE_URL: db.url });
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, "Applied 1 migration (0000_init): schema sluice\n");
    const tables = await db.sql`select table_name from information_schema.tables where table_schema = 'sluice' order by 1`;
    assert.deepEqual(tables.map((t) => t.table_name), [
      "aggregate_heads", "consumer_assignments", "consumer_checkpoints", "consumer_gap_skips", "events", "sluice_migrations", "worker_nodes",
    ]);
    assert.deepEqual(await verifySchema(db.sql), { ok: true, missing: [] });

    const second = await sluice(["migrate", "--database-url", db.url]);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, "Already up to date: schema sluice\n");
    const verify = await sluice(["migrate", "--verify", "--database-url", db.url]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.equal(verify.stdout, "Schema OK: schema sluice\n");
  });

  it("migrate --verify exits 1 and lists a dropped index", async () => {
    await db.sql`drop index sluice.worker_nodes_heartbeat_idx`;
    const r = await sluice(["migrate", "--verify", "--database-url", db.url]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /SCHEMA_MISMATCH: 1 missing/);
    assert.match(r.stderr, /^ {2}- index sluice\.worker_nodes_heartbeat_idx$/m);
    assert.equal(r.stdout, "");
    // --verify changed nothing
    const [idx] = await db.sql`select count(*)::int as n from pg_indexes where indexname = 'worker_nodes_heartbeat_idx'`;
    assert.equal(idx!.n, 0);
  });

  it("reads a config file, and flags override it", async () => {
    const file = join(tmp, "sluice.json");
    writeFileSync(file, JSON.stringify({ databaseUrl: db.url, tables: { schema: "cfg", events: "infra_cfg.log" } }));
    // the config file's databaseUrl wins over DATABASE_URL
    const r = await sluice(["migrate", "--config", file], { DATABASE_URL: "postgres://postgres@127.0.0.1:1/nowhere" });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Applied 1 migration \(0000_init\): cfg\.worker_nodes, .*infra_cfg\.log/);
    const tables = { schema: "cfg", events: "infra_cfg.log" };
    assert.deepEqual(await verifySchema(db.sql, { tables }), { ok: true, missing: [] });

    const ok = await sluice(["migrate", "--config", file, "--verify"]);
    assert.equal(ok.code, 0, ok.stderr);
    const overridden = await sluice(["migrate", "--config", file, "--verify", "--schema", "cfg_other"]);
    assert.equal(overridden.code, 1, overridden.stderr);
    assert.match(overridden.stderr, /table cfg_other\.worker_nodes/);
    assert.doesNotMatch(overridden.stderr, /infra_cfg\.log/);
  });

  it("rejects a bad config file with exit 2, naming the fields", async () => {
    const bad = join(tmp, "bad.json");
    writeFileSync(bad, JSON.stringify({ databaseUrl: 5, tables: { schema: "ok", evnts: "x" } }));
    const badIdent = join(tmp, "bad-ident.json");
    writeFileSync(badIdent, JSON.stringify({ tables: { events: "x; drop table y" } }));
    const notJson = join(tmp, "not.json");
    writeFileSync(notJson, "{ databaseUrl: ");
    const before = await schemaCount(db);
    const [a, b, c, d] = await Promise.all([
      sluice(["migrate", "--config", bad]),
      sluice(["migrate", "--config", badIdent]),
      sluice(["migrate", "--config", notJson]),
      sluice(["migrate", "--config", join(tmp, "missing.json")]),
    ]);
    for (const r of [a, b, c, d]) {
      assert.equal(r!.code, 2, r!.stderr);
      assert.match(r!.stderr, /^sluice migrate: CONFIG_INVALID: /);
    }
    assert.match(a!.stderr, /- databaseUrl: must be a string \(got 5\)/);
    assert.match(a!.stderr, /- tables\.evnts: is not a known option/);
    assert.match(b!.stderr, /- tables\.events: "x; drop table y" must be an SQL identifier/);
    assert.match(c!.stderr, /is not valid JSON/);
    assert.match(d!.stderr, /Cannot read config file/);
    assert.equal(await schemaCount(db), before);
  });

  it("generate writes SQL for infra.worker_nodes and never overwrites a file", async () => {
    const out = join(tmp, "gen", "nested");
    const r = await sluice(["generate", "--out", out, "--worker-nodes-table", "infra.worker_nodes"]);
    assert.equal(r.code, 0, r.stderr);
    const files = readdirSync(out);
    assert.equal(files.length, 1);
    assert.match(files[0]!, /^\d{14}_sluice\.sql$/);
    const path = join(out, files[0]!);
    assert.equal(r.stdout, `Generated PostgreSQL migration: ${path}\n`);
    const text = readFileSync(path, "utf8");
    assert.match(text, /CREATE SCHEMA IF NOT EXISTS "infra";/);
    assert.match(text, /CREATE TABLE "infra"\."worker_nodes"/);
    assert.match(text, /CREATE TABLE "sluice"\."events"/);

    const again = await sluice(["generate", "--out", out, "--filename", files[0]!]);
    assert.equal(again.code, 1, again.stderr);
    assert.match(again.stderr, /FILE_EXISTS: .* already exists \(use --force/);
    assert.equal(readFileSync(path, "utf8"), text);
  });

  it("the generated SQL applies with psql -v ON_ERROR_STOP=1", { skip: hasPsql ? false : "psql is not on PATH" }, async () => {
    const r = await sluice(["generate", "--out", tmp, "--filename", "psql.sql", "--worker-nodes-table", "infra.worker_nodes"]);
    assert.equal(r.code, 0, r.stderr);
    const fresh = await createTestDatabase("cli_psql", { migrated: false });
    try {
      const applied = await psql(fresh.url, join(tmp, "psql.sql"));
      assert.equal(applied.code, 0, applied.out);
      assert.deepEqual(await verifySchema(fresh.sql, { tables: { workerNodes: "infra.worker_nodes" } }), { ok: true, missing: [] });
    } finally {
      await fresh.drop();
    }
  });

  it("a database created from the generated SQL is up to date for sluice migrate", async () => {
    const tables = { workerNodes: "infra.worker_nodes" };
    const r = await sluice(["generate", "--out", tmp, "--filename", "then-migrate.sql", "--worker-nodes-table", "infra.worker_nodes"]);
    assert.equal(r.code, 0, r.stderr);
    const fresh = await createTestDatabase("cli_gen_migrate", { migrated: false });
    try {
      await fresh.sql.begin((tx) => tx.unsafe(readFileSync(join(tmp, "then-migrate.sql"), "utf8")));
      assert.deepEqual(await migrate(fresh.sql, { tables, logger: silentLogger }), { applied: [] });
      const m = await sluice(["migrate", "--database-url", fresh.url, "--worker-nodes-table", "infra.worker_nodes"]);
      assert.equal(m.code, 0, m.stderr);
      assert.deepEqual(await verifySchema(fresh.sql, { tables }), { ok: true, missing: [] });
    } finally {
      await fresh.drop();
    }
  });

  it("rejects an invalid identifier and writes nothing", async () => {
    const out = join(tmp, "never");
    const before = await schemaCount(db);
    const [gen, mig] = await Promise.all([
      sluice(["generate", "--out", out, "--events-table", "x; drop table y"]),
      sluice(["migrate", "--database-url", db.url, "--schema", "bad schema"]),
    ]);
    assert.equal(gen.code, 2, gen.stderr);
    assert.match(gen.stderr, /INVALID_IDENTIFIER: Invalid --events-table: "x; drop table y" must be an SQL identifier/);
    assert.equal(existsSync(out), false);
    assert.equal(mig.code, 2, mig.stderr);
    assert.match(mig.stderr, /INVALID_IDENTIFIER: Invalid --schema: "bad schema"/);
    assert.equal(await schemaCount(db), before);
  });
});
