import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { migrate, MIGRATIONS_TABLE, verifySchema } from "../../src/db/migrate.ts";
import { isSluiceError } from "../../src/errors.ts";
import { createTestDatabase, type TestDatabase } from "../support/db.ts";
import { runTs } from "../support/runtime.ts";

const silent = { debug() {}, info() {}, warn() {}, error() {} };

describe("migrate", () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase("migrate", { migrated: false });
  });
  after(async () => {
    await db?.drop();
  });

  it("creates every table on an empty database, then does nothing the second time", async () => {
    const first = await migrate(db.sql, { logger: silent });
    assert.deepEqual(first.applied, ["0000_init"]);
    assert.deepEqual((await migrate(db.sql, { logger: silent })).applied, []);
    const tables = await db.sql`select table_name from information_schema.tables where table_schema = 'sluice' order by 1`;
    assert.deepEqual(tables.map((t) => t.table_name), [
      "aggregate_heads", "consumer_assignments", "consumer_checkpoints", "consumer_gap_skips", "events", "sluice_migrations", "worker_nodes",
    ]);
    assert.deepEqual(await verifySchema(db.sql), { ok: true, missing: [] });
    const [rec] = await db.sql.unsafe(`select count(*)::int as n from sluice.${MIGRATIONS_TABLE}`);
    assert.equal(rec!.n, 1);
  });

  it("verify reports a dropped index and a dropped column", async () => {
    await db.sql`drop index sluice.worker_nodes_heartbeat_idx`;
    await db.sql`alter table sluice.consumer_gap_skips drop column reason`;
    const r = await verifySchema(db.sql);
    assert.equal(r.ok, false);
    assert.deepEqual([...r.missing].sort(), ["column sluice.consumer_gap_skips.reason", "index sluice.worker_nodes_heartbeat_idx"]);
  });

  it("honours a custom schema and table names, beside the default deployment", async () => {
    const tables = { schema: "tenant_b", workerNodes: "infra.nodes", events: "log" };
    assert.deepEqual((await migrate(db.sql, { tables, logger: silent })).applied, ["0000_init"]);
    assert.deepEqual(await verifySchema(db.sql, { tables }), { ok: true, missing: [] });
    const idx = await db.sql`select indexname from pg_indexes where schemaname = 'tenant_b' and tablename = 'log' order by 1`;
    assert.deepEqual(idx.map((r) => r.indexname), ["log_aggregate_version_key", "log_context_position_idx", "log_event_id_key", "log_pkey", "log_type_position_idx"]);
    const [fk] = await db.sql`select confrelid::regclass::text as ref from pg_constraint where conname = 'consumer_assignments_worker_fk' and connamespace = 'tenant_b'::regnamespace`;
    assert.equal(fk!.ref, "infra.nodes");
    // inserting through the renamed tables works
    await db.sql`insert into tenant_b.log (aggregate_type, aggregate_id, aggregate_version, event_id, event_type, payload) values ('A', '1', 1, gen_random_uuid(), 'E', '{}')`;
    const [row] = await db.sql`select transaction_id::text as x from tenant_b.log`;
    assert.match(row!.x, /^\d+$/);
  });

  it("rejects a bad identifier before sending anything", async () => {
    const before = await db.sql`select count(*)::int as n from pg_namespace`;
    await assert.rejects(migrate(db.sql, { tables: { schema: "x; drop table y" } }), (e: unknown) => isSluiceError(e, "INVALID_IDENTIFIER"));
    const afterCount = await db.sql`select count(*)::int as n from pg_namespace`;
    assert.equal(afterCount[0]!.n, before[0]!.n);
  });

  it("is safe when four processes migrate at once", async () => {
    const fresh = await createTestDatabase("migrate_race", { migrated: false });
    try {
      const tables = JSON.stringify({ schema: "race" });
      const runs = await Promise.all(
        [1, 2, 3, 4].map(() => runTs("test/support/migrate-child.ts", [], { TARGET_URL: fresh.url, TABLES: tables })),
      );
      for (const r of runs) assert.equal(r.code, 0, r.stderr);
      const applied = runs.map((r) => JSON.parse(r.stdout.trim().split("\n").pop()!).applied as string[]);
      assert.equal(applied.filter((a) => a.length === 1).length, 1, `exactly one applies: ${JSON.stringify(applied)}`);
      assert.equal(applied.filter((a) => a.length === 0).length, 3);
      assert.deepEqual(await verifySchema(fresh.sql, { tables: { schema: "race" } }), { ok: true, missing: [] });
    } finally {
      await fresh.drop();
    }
  });
});
