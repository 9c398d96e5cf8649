import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { assertIdentifier, namespaceOf, quoteIdent, resolveTableNames } from "../../src/db/names.ts";
import { isSluiceError } from "../../src/errors.ts";
import { MIGRATIONS_TABLE, rewriteStatement, renderMigrationScript } from "../../src/db/migrate.ts";
import { MIGRATIONS } from "../../src/db/migrations.gen.ts";

describe("resolveTableNames", () => {
  it("defaults every table to schema sluice", () => {
    const n = resolveTableNames();
    assert.equal(n.workerNodes.sql, '"sluice"."worker_nodes"');
    assert.equal(n.events.sql, '"sluice"."events"');
  });

  it("takes a schema for all tables and a prefix per table", () => {
    const n = resolveTableNames({ schema: "app", workerNodes: "infra.nodes" });
    assert.deepEqual([n.workerNodes.schema, n.workerNodes.name], ["infra", "nodes"]);
    assert.equal(n.consumerCheckpoints.sql, '"app"."consumer_checkpoints"');
  });

  it("rejects injection attempts naming the field", () => {
    for (const bad of ["x; drop table y", 'a"b', "1abc", "", "a.b.c", "a b"]) {
      assert.throws(() => resolveTableNames({ events: bad }), (e: unknown) => {
        assert.ok(isSluiceError(e, "INVALID_IDENTIFIER"), String(e));
        assert.match((e as Error).message, /Invalid events/);
        return true;
      });
    }
    assert.throws(() => resolveTableNames({ schema: "s-1" }), /Invalid schema/);
  });

  it("rejects two tables with one name", () => {
    assert.throws(() => resolveTableNames({ events: "worker_nodes" }), (e: unknown) => isSluiceError(e, "INVALID_ARGUMENT"));
  });

  it("rejects table names too long for derived index names", () => {
    assert.throws(() => resolveTableNames({ events: "e".repeat(41) }), /at most 40/);
    assert.doesNotThrow(() => resolveTableNames({ events: "e".repeat(40) }));
  });

  it("derives distinct namespaces for distinct deployments", () => {
    assert.notEqual(namespaceOf(resolveTableNames()), namespaceOf(resolveTableNames({ schema: "b" })));
  });
});

describe("assertIdentifier and quoteIdent", () => {
  it("accepts plain identifiers and doubles quotes when quoting", () => {
    assert.equal(assertIdentifier("f", "Abc_1"), "Abc_1");
    assert.equal(quoteIdent('we"ird'), '"we""ird"');
  });
});

describe("rewriteStatement", () => {
  it("renames tables, their indexes and constraints, not columns", () => {
    const n = resolveTableNames({ schema: "s2", workerNodes: "infra.nodes", consumerAssignments: "assign" });
    const out = rewriteStatement(
      'ALTER TABLE "sluice"."consumer_assignments" ADD CONSTRAINT "consumer_assignments_worker_fk" FOREIGN KEY ("worker_id") REFERENCES "sluice"."worker_nodes"("worker_id");',
      n,
    );
    assert.equal(
      out,
      'ALTER TABLE "s2"."assign" ADD CONSTRAINT "assign_worker_fk" FOREIGN KEY ("worker_id") REFERENCES "infra"."nodes"("worker_id");',
    );
  });

  it("renders a script that creates each schema once", () => {
    const s = renderMigrationScript({ workerNodes: "infra.worker_nodes" });
    assert.match(s, /CREATE SCHEMA IF NOT EXISTS "infra";/);
    assert.match(s, /CREATE SCHEMA IF NOT EXISTS "sluice";/);
    assert.match(s, /CREATE TABLE "infra"\."worker_nodes"/);
    assert.doesNotMatch(s, /"sluice"\."worker_nodes"/);
  });

  it("records each migration after its statements, in the worker-nodes schema, as migrate does", () => {
    const names = { workerNodes: "infra.worker_nodes" };
    const s = renderMigrationScript(names);
    const record = `"infra"."${MIGRATIONS_TABLE}"`;
    assert.match(s, new RegExp(`CREATE TABLE IF NOT EXISTS ${record.replaceAll(".", "\\.")}`));
    const ns = namespaceOf(resolveTableNames(names));
    for (const m of MIGRATIONS) {
      const insert = `INSERT INTO ${record} (namespace, tag, hash) VALUES ('${ns}', '${m.tag}', '${m.hash}');`;
      assert.ok(s.includes(insert), `missing: ${insert}`);
      assert.ok(s.indexOf(insert) > s.indexOf(`-- migration ${m.tag}`), "after its migration");
    }
    assert.ok(s.indexOf(`-- migration ${MIGRATIONS[0]!.tag}`) > s.indexOf(`CREATE TABLE IF NOT EXISTS ${record}`));
  });
});
