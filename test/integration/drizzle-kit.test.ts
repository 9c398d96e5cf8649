// A team with its own drizzle-kit setup: its schema file spreads createTables()
// into its own tables, `drizzle-kit generate` writes one migration for both,
// and drizzle's migrator applies it. See docs/drizzle-kit.md.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { drizzle } from "drizzle-orm/postgres-js";
import { migrate as drizzleMigrate } from "drizzle-orm/postgres-js/migrator";
import { verifySchema } from "../../src/db/migrate.ts";
import { TABLE_KEYS, DEFAULT_TABLE_NAMES } from "../../src/db/names.ts";
import { createTestDatabase, type TestDatabase } from "../support/db.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const tablesModule = join(root, "src/db/tables.ts");

const config = `import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./src/db/schema.ts",
  out: "./drizzle",
});
`;

// What docs/drizzle-kit.md tells teams to write (with "@sluice/worker/schema"
// instead of the repository path).
const schema = `import { integer, pgSchema, pgTable, text } from "drizzle-orm/pg-core";
import { createTables } from ${JSON.stringify(tablesModule)};

// Export the schema object too: drizzle-kit writes CREATE SCHEMA only for exported schemas.
export const infra = pgSchema("infra");
export const { workerNodes, consumerAssignments, consumerCheckpoints, consumerGapSkips, events, aggregateHeads } =
  createTables({ schema: "infra" });

// The team's own table.
export const accountBalances = pgTable("account_balances", {
  accountId: text("account_id").primaryKey(),
  balance: integer("balance").notNull().default(0),
});
`;

/** Runs drizzle-kit (a Node CLI) with the `node` on PATH, whatever runtime runs the tests. */
function drizzleKit(cwd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("node", [join(root, "node_modules/.bin/drizzle-kit"), ...args], {
      cwd,
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out }));
  });
}

describe("drizzle-kit with createTables()", () => {
  let db: TestDatabase;
  let project: string;
  before(async () => {
    db = await createTestDatabase("drizzle_kit", { migrated: false });
    project = mkdtempSync(join(tmpdir(), "sluice-drizzle-kit-"));
    // The team's project: its own package.json, config and schema; its
    // node_modules (drizzle-orm, drizzle-kit) borrowed from this repository.
    symlinkSync(join(root, "node_modules"), join(project, "node_modules"), "dir");
    writeFileSync(join(project, "package.json"), JSON.stringify({ name: "team-app", private: true, type: "module" }));
    writeFileSync(join(project, "drizzle.config.ts"), config);
    mkdirSync(join(project, "src/db"), { recursive: true });
    writeFileSync(join(project, "src/db/schema.ts"), schema);
  });
  after(async () => {
    await db?.drop();
    if (project) rmSync(project, { recursive: true, force: true });
  });

  it("generates one migration with our tables in schema infra and the team's table", async () => {
    const r = await drizzleKit(project, ["generate", "--name", "init"]);
    assert.equal(r.code, 0, r.out);
    assert.deepEqual(readdirSync(join(project, "drizzle")).sort(), ["0000_init.sql", "meta"]);
    const text = readFileSync(join(project, "drizzle/0000_init.sql"), "utf8");
    assert.match(text, /^CREATE SCHEMA "infra";/m);
    for (const k of TABLE_KEYS) {
      assert.match(text, new RegExp(`CREATE TABLE "infra"\\."${DEFAULT_TABLE_NAMES[k]}" \\(`), `${k} in schema infra`);
    }
    assert.match(text, /CREATE TABLE "account_balances" \(/);
    assert.doesNotMatch(text, /"sluice"\./, "nothing lands in the default schema");

    const again = await drizzleKit(project, ["generate", "--name", "again"]);
    assert.equal(again.code, 0, again.out);
    assert.match(again.out, /No schema changes/);
  });

  it("applies to a fresh database with drizzle's migrator, and sluice accepts the result", async () => {
    const client = db.client({ max: 1 });
    await drizzleMigrate(drizzle(client), { migrationsFolder: join(project, "drizzle") });
    assert.deepEqual(await verifySchema(db.sql, { tables: { schema: "infra" } }), { ok: true, missing: [] });
    const tables = await db.sql`select table_schema || '.' || table_name as t from information_schema.tables
      where table_schema in ('infra', 'public') order by 1`;
    assert.deepEqual(tables.map((r) => r.t), [
      "infra.aggregate_heads", "infra.consumer_assignments", "infra.consumer_checkpoints", "infra.consumer_gap_skips",
      "infra.events", "infra.worker_nodes", "public.account_balances",
    ]);
    await db.sql`insert into public.account_balances (account_id) values ('a-1')`;
    await db.sql`insert into infra.events (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload)
      values ('Account', 'a-1', 1, gen_random_uuid(), 'Opened', '{}')`;
    const [row] = await db.sql`select count(*)::int as n from infra.events`;
    assert.equal(row!.n, 1);
  });
});
