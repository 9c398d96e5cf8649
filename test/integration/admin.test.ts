// Operator actions: rewind (safe while the owner runs, audited), pause and
// resume, the gap audit, and the `sluice status/rewind/pause/resume/gaps`
// commands run as child processes.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  isSluiceError,
  listGapSkips,
  pauseConsumer,
  resumeConsumer,
  rewindConsumer,
  type Worker,
} from "../../src/mod.ts";
import { createTestDatabase, holds, type TestDatabase, waitFor } from "../support/db.ts";
import { append, holdAppend } from "../support/events.ts";
import { runTs } from "../support/runtime.ts";
import { checkpoint, testWorker } from "../support/worker.ts";

const NIL = "00000000-0000-0000-0000-000000000000";

function sluice(url: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runTs("src/cli/main.ts", args, { DATABASE_URL: url });
}

describe("admin: rewind, pause, resume, gaps and their commands", () => {
  let db: TestDatabase;
  const running: { w: Worker; done: Promise<void> }[] = [];
  before(async () => {
    db = await createTestDatabase("admin");
    await db.sql`create table seen (consumer text not null, position bigint not null, n serial primary key)`;
  });
  after(async () => {
    for (const r of running) await r.w.stop().then(() => r.done);
    await db?.drop();
  });

  /** A worker (own pool) that records every event it handles in `seen`; `gate` can hold a batch open. */
  function start(name: string, gate?: (position: bigint) => Promise<void> | undefined): Worker {
    const w = testWorker(db.client({ max: 6 }), { consumers: [{ name }] });
    const done = w.run(async (batch) => {
      for (const e of batch.events) {
        await gate?.(e.globalPosition);
        await batch.tx`insert into seen (consumer, position) values (${name}, ${e.globalPosition.toString()})`;
      }
    });
    running.push({ w, done });
    return w;
  }
  const seen = async (name: string): Promise<bigint[]> =>
    (await db.sql`select position::text as p from seen where consumer = ${name} order by n`).map((r) => BigInt(r.p as string));
  const owner = async (name: string): Promise<string | null> => {
    const [r] = await db.sql`select worker_id::text as w from sluice.consumer_assignments where consumer_name = ${name}`;
    return (r?.w as string | null) ?? null;
  };

  it("rewinds a running consumer: waits for its open batch, is never overwritten, re-delivers from the new position, is audited", async () => {
    const first = await append(db.sql, 4);
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let blockAt: bigint | undefined;
    let blocked = false;
    const w = start("rw", (p) => {
      if (p !== blockAt) return undefined;
      blocked = true;
      return released;
    });
    await waitFor("rw at the first head", async () => (await checkpoint(db.sql, "rw")) === first.at(-1));
    // Hold a batch open, then rewind while it is open.
    const second = await append(db.sql, 2);
    blockAt = second[0];
    await waitFor("a batch is open", () => blocked);
    let rewound = false;
    const rewinding = rewindConsumer(db.sql, "rw", first[1]!).then((r) => {
      rewound = true;
      return r;
    });
    await holds("the rewind waits for the open batch", () => !rewound, 300);
    release();
    const r = await rewinding;
    assert.equal(r.from, second.at(-1), "the open batch committed first");
    assert.equal(r.to, first[1]);
    assert.equal(r.direction, "back");
    assert.equal(r.owner, w.id);
    // The owner sees the rewound checkpoint at its next probe and re-delivers from it.
    await waitFor("rw re-processed up to the head", async () => (await checkpoint(db.sql, "rw")) === second.at(-1));
    const third = await append(db.sql, 1);
    await waitFor("rw at the new head", async () => (await checkpoint(db.sql, "rw")) === third.at(-1));
    assert.deepEqual(await seen("rw"), [...first, ...second, ...first.slice(2), ...second, ...third]);
    const audit = await listGapSkips(db.sql, { consumer: "rw" });
    assert.equal(audit.length, 1);
    assert.equal(audit[0]!.reason, "manual");
    assert.equal(audit[0]!.workerId, NIL);
    assert.equal(audit[0]!.id, r.auditId);
    assert.equal(audit[0]!.skipToPosition, first[1]);
    assert.equal(audit[0]!.gapPosition, first[1]! + 1n);
    assert.equal(audit[0]!.highestVisiblePosition, second.at(-1));
  });

  it("moves a consumer forward (skipping), to the start, and refuses bad input", async () => {
    const ps = await append(db.sql, 3);
    await db.sql`insert into sluice.consumer_assignments (consumer_name) values ('idle') on conflict do nothing`;
    await db.sql`insert into sluice.consumer_checkpoints (consumer_name) values ('idle') on conflict do nothing`;
    const fwd = await rewindConsumer(db.sql, "idle", ps[1]!);
    assert.deepEqual([fwd.from, fwd.to, fwd.direction, fwd.owner], [0n, ps[1], "forward", null]);
    const start = await rewindConsumer(db.sql, "idle", "start");
    assert.deepEqual([start.from, start.to, start.direction], [ps[1], 0n, "back"]);
    assert.equal(await checkpoint(db.sql, "idle"), 0n);
    await assert.rejects(rewindConsumer(db.sql, "no_such_consumer", 1n), (e) => isSluiceError(e, "NOT_FOUND"));
    await assert.rejects(rewindConsumer(db.sql, "idle", -1n), (e) => isSluiceError(e, "INVALID_ARGUMENT"));
    await assert.rejects(pauseConsumer(db.sql, "no_such_consumer"), (e) => isSluiceError(e, "NOT_FOUND"));
    // Inside the caller's transaction: rolled back with it.
    await assert.rejects(db.sql.begin(async (tx) => {
      await rewindConsumer(tx, "idle", 2n);
      assert.equal(await checkpoint(tx as never, "idle"), 2n);
      throw new Error("roll back");
    }), /roll back/);
    assert.equal(await checkpoint(db.sql, "idle"), 0n);
  });

  it("pause: unassigned and not processed; resume: processed", async () => {
    const w = start("pz");
    await waitFor("pz assigned", async () => (await owner("pz")) === w.id);
    const p = await pauseConsumer(db.sql, "pz");
    assert.deepEqual(p, { consumer: "pz", paused: true, changed: true });
    assert.equal((await pauseConsumer(db.sql, "pz")).changed, false);
    await waitFor("pz unassigned", async () => (await owner("pz")) === null);
    await waitFor("its runner is gone", () => !w.status().consumers.some((c) => c.name === "pz"));
    const before = await checkpoint(db.sql, "pz");
    const ps = await append(db.sql, 2);
    await holds("a paused consumer is not processed", async () => (await checkpoint(db.sql, "pz")) === before && (await owner("pz")) === null, 500);
    assert.equal((await resumeConsumer(db.sql, "pz")).changed, true);
    await waitFor("pz processed after resume", async () => (await checkpoint(db.sql, "pz")) === ps.at(-1));
    assert.equal(await owner("pz"), w.id);
    assert.deepEqual((await seen("pz")).slice(-2), ps);
    assert.equal((await resumeConsumer(db.sql, "pz")).changed, false);
  });

  it("records a rolled-back hole in the gap audit", async () => {
    start("holes");
    const held = await holdAppend(db.sql, 1);
    const later = await append(db.sql, 1);
    await held.rollback();
    // Every running consumer (rw, pz, holes) passes it.
    await waitFor("all past the hole", async () => {
      for (const c of ["rw", "pz", "holes"]) if ((await checkpoint(db.sql, c)) !== later.at(-1)) return false;
      return true;
    });
    const rows = await listGapSkips(db.sql, { consumer: "holes" });
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.reason, "rolled_back");
    assert.deepEqual(rows[0]!.skippedPositions, held.positions);
    // The newest rows come first.
    const all = await listGapSkips(db.sql, { limit: 2 });
    assert.equal(all.length, 2);
    assert.deepEqual(all.map((g) => g.reason), ["rolled_back", "rolled_back"]);
    assert.ok(all[0]!.createdAt >= all[1]!.createdAt);
  });

  it("sluice status --json shows workers, consumers with lag, gap passes; --watch --count refreshes", async () => {
    const w = running[0]!.w;
    await waitFor("w is the leader", () => w.status().leader);
    const r = await sluice(db.url, ["status", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as {
      head: string;
      workers: { workerId: string; alive: boolean; leader: boolean; consumers: string[]; heartbeatAgeMs: number }[];
      consumers: { name: string; owner: string | null; checkpoint: string; lagEvents: number; lagPositions: string; paused: boolean; state: string | null }[];
      gapPasses: { reason: string; count: number }[];
      recentGaps: { consumer: string; reason: string }[];
    };
    const me = s.workers.find((x) => x.workerId === w.id)!;
    assert.ok(me, r.stdout);
    assert.equal(me.alive, true);
    assert.equal(me.leader, true);
    assert.deepEqual(me.consumers, ["rw"]);
    assert.ok(me.heartbeatAgeMs >= 0);
    const rw = s.consumers.find((c) => c.name === "rw")!;
    assert.equal(rw.owner, w.id);
    assert.equal(rw.checkpoint, String(await checkpoint(db.sql, "rw")));
    const idle = s.consumers.find((c) => c.name === "idle")!;
    assert.equal(idle.owner, null);
    assert.equal(idle.checkpoint, "0");
    const n = (await db.sql`select count(*)::int as n from sluice.events`)[0]!.n as number;
    assert.equal(idle.lagEvents, n, "lag in events");
    assert.equal(idle.lagPositions, s.head);
    assert.deepEqual(s.gapPasses.map((g) => g.reason).sort(), ["manual", "rolled_back"]);
    assert.equal(s.recentGaps[0]!.reason, "rolled_back");

    const text = await sluice(db.url, ["status"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^Head position \d+; \d+ workers? \(\d+ alive\)/);
    assert.match(text.stdout, /\nWorkers\n {2}ID +HEARTBEAT +ALIVE +LEADER +CONSUMERS\n/);
    assert.match(text.stdout, new RegExp(`\\n {2}idle +- +0 +${n} +- +no +-\\n`));

    const watch = await sluice(db.url, ["status", "--json", "--watch", "--count", "2", "--interval", "50"]);
    assert.equal(watch.code, 0, watch.stderr);
    const lines = watch.stdout.trim().split("\n");
    assert.equal(lines.length, 2);
    for (const l of lines) assert.ok(Array.isArray((JSON.parse(l) as { workers: unknown[] }).workers));
  });

  it("sluice rewind, pause, resume and gaps: output and exit codes", async () => {
    const rw = await sluice(db.url, ["rewind", "idle", "--to", "1"]);
    assert.equal(rw.code, 0, rw.stderr);
    assert.match(rw.stdout, /^Moved "idle" forward from 0 to 1: positions 1\.\.1 are skipped \(audit row \d+\)\./);
    const back = await sluice(db.url, ["rewind", "--to-start", "idle", "--json"]);
    assert.equal(back.code, 0, back.stderr);
    assert.deepEqual(
      (({ from, to, direction }) => ({ from, to, direction }))(JSON.parse(back.stdout) as Record<string, unknown>),
      { from: "1", to: "0", direction: "back" },
    );
    const pause = await sluice(db.url, ["pause", "idle"]);
    assert.equal(pause.code, 0, pause.stderr);
    assert.match(pause.stdout, /^Paused "idle"/);
    assert.equal((await db.sql`select paused from sluice.consumer_assignments where consumer_name = 'idle'`)[0]!.paused, true);
    const again = await sluice(db.url, ["pause", "idle"]);
    assert.match(again.stdout, /already was paused/);
    const resume = await sluice(db.url, ["resume", "idle", "--json"]);
    assert.equal(resume.code, 0, resume.stderr);
    assert.deepEqual(JSON.parse(resume.stdout), { consumer: "idle", paused: false, changed: true });

    const gaps = await sluice(db.url, ["gaps", "--consumer", "idle", "--json"]);
    assert.equal(gaps.code, 0, gaps.stderr);
    const rows = JSON.parse(gaps.stdout) as { reason: string; skipToPosition: string; workerId: string }[];
    assert.deepEqual(rows.slice(0, 2).map((g) => [g.reason, g.skipToPosition, g.workerId]), [["manual", "0", NIL], ["manual", "1", NIL]]);
    const text = await sluice(db.url, ["gaps", "--limit", "2"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^ID +AT +CONSUMER +REASON/);
    assert.equal(text.stdout.trim().split("\n").length, 3);
    const none = await sluice(db.url, ["gaps", "--consumer", "nobody"]);
    assert.equal(none.stdout, 'No gap passes recorded for "nobody".\n');

    const failures: [string[], number, RegExp][] = [
      [["rewind", "ghost", "--to", "3"], 1, /^sluice rewind: NOT_FOUND: Consumer "ghost" does not exist/],
      [["pause", "ghost"], 1, /^sluice pause: NOT_FOUND: /],
      [["resume", "ghost"], 1, /^sluice resume: NOT_FOUND: /],
      [["rewind", "idle"], 2, /Give exactly one of '--to POSITION' and '--to-start'/],
      [["rewind", "idle", "--to", "3", "--to-start"], 2, /Give exactly one/],
      [["rewind", "idle", "--to=-1"], 2, /Invalid --to: "-1"/],
      [["rewind", "--to", "1"], 2, /Missing required argument <consumer>/],
      [["pause", "a", "b"], 2, /Unexpected argument 'b'/],
      [["status", "--interval", "x"], 2, /Invalid --interval/],
      [["gaps", "--limit", "0"], 2, /Invalid --limit/],
      [["status", "--database-url", "postgres://postgres@127.0.0.1:1/nowhere"], 1, /^sluice status: DATABASE_ERROR: .*ECONNREFUSED/],
    ];
    const runs = await Promise.all(failures.map(([args]) => sluice(db.url, args)));
    runs.forEach((res, i) => {
      const [args, code, message] = failures[i]!;
      assert.equal(res.code, code, `sluice ${args.join(" ")}: ${res.stderr}`);
      assert.match(res.stderr, message);
      assert.equal(res.stdout, "");
    });
  });
});
