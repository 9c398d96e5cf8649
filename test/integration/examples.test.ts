// Every example in examples/ runs as a child process on the current runtime,
// against a fresh database of its own (it migrates it itself), exits by
// itself with code 0 and prints what it did.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { createTestDatabase, type TestDatabase } from "../support/db.ts";
import { runTs } from "../support/runtime.ts";

const expected: Record<string, { args?: string[]; output: RegExp[] }> = {
  "basic.ts": { output: [/^batch of example_account_log: positions \d+\.\.\d+, 3 events$/m, /: logged Deposited, Opened, Withdrawn$/m] },
  "drizzle-projection.ts": { output: [/^balance of \w+: 80 after 3 events$/m, /^balance of \w+: 180 after 3 events$/m] },
  "outbox.ts": { output: [/^published 3 messages for order \w+ \(order\.placed, order\.paid, order\.shipped\); the sink dropped 1 duplicate/m] },
  "worker-pool.ts": {
    args: ["--seconds", "1"],
    output: [/^consumers per worker: 2, 2, 2$/m, /^appended (\d+) events; handled per worker: worker 1: \d+ \(2 consumers\), worker 2: \d+ \(2 consumers\), worker 3: \d+ \(2 consumers\)$/m],
  },
  "multi-process.ts": {
    args: ["--seconds", "1"],
    output: [/^started 3 worker processes$/m, /every consumer handled each exactly once: yes$/m, /^stopped gracefully on SIGTERM: p1, p2, p3$/m],
  },
  "health.ts": { args: ["--port", "0"], output: [/^GET \/healthz -> 200 ok /m, /^after stop -> 503 not_running$/m] },
};

describe("examples", () => {
  const dbs: TestDatabase[] = [];
  after(async () => {
    await Promise.all(dbs.map((db) => db.drop()));
  });

  it("lists every example file here", () => {
    const files = readdirSync(new URL("../../examples/", import.meta.url)).filter((f) => f.endsWith(".ts")).sort();
    assert.deepEqual(files, Object.keys(expected).sort());
  });

  for (const [file, e] of Object.entries(expected)) {
    it(`examples/${file} runs to completion and prints what it did`, async () => {
      const db = await createTestDatabase(`ex_${file.replace(/\W/g, "_")}`, { migrated: false });
      dbs.push(db);
      const r = await runTs(`examples/${file}`, e.args ?? [], { DATABASE_URL: db.url });
      assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
      for (const re of e.output) assert.match(r.stdout, re);
    });
  }
});
