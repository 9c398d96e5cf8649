/**
 * The test command (`npm test`): runs the whole suite on Node, Bun and Deno
 * against one PostgreSQL, and fails if any runtime fails.
 *
 *   npm test                                  # all three runtimes
 *   npm test -- --runtime node test/unit      # one runtime, some files
 *
 * PostgreSQL: DATABASE_URL if set, else 127.0.0.1:5432 if it answers, else an
 * embedded PostgreSQL started for the run and removed afterwards.
 */
import { spawn } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { startDatabase } from "./database.ts";

const root = new URL("..", import.meta.url).pathname;
const argv = process.argv.slice(2);
let runtimes = ["node", "bun", "deno"];
const paths: string[] = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--runtime") runtimes = argv[++i]!.split(",");
  else paths.push(argv[i]!);
}

function collect(p: string): string[] {
  const abs = join(root, p);
  if (statSync(abs).isFile()) return [relative(root, abs)];
  return readdirSync(abs, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".test.ts"))
    .map((f) => relative(root, join(abs, f)));
}
const files = (paths.length ? paths : ["test"]).flatMap(collect).sort();
if (files.length === 0) {
  console.error("no test files found");
  process.exit(1);
}

const bin = (name: string) => join(root, "node_modules/.bin", name);
const commands: Record<string, string[]> = {
  node: [process.execPath, "--import", "tsx", "--test", "--test-concurrency=4", ...files],
  bun: [bin("bun"), "test", "--timeout", "120000", ...files.map((f) => `./${f}`)],
  deno: [bin("deno"), "test", "-A", "--no-check", ...files],
};

function run(cmd: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => { out += d; process.stdout.write(d); });
    child.stderr.on("data", (d) => { out += d; process.stderr.write(d); });
    child.on("close", (code) => resolve({ code: code ?? 1, out }));
  });
}

// deno-lint-ignore no-control-regex
const strip = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "");
function counts(name: string, out: string): { passed: number; failed: number } {
  const o = strip(out);
  const num = (re: RegExp) => Number(re.exec(o)?.[1] ?? 0);
  if (name === "node") return { passed: num(/^# pass (\d+)/m), failed: num(/^# fail (\d+)/m) };
  if (name === "bun") return { passed: num(/^\s*(\d+) pass\b/m), failed: num(/^\s*(\d+) fail\b/m) };
  const m = /(\d+) passed(?: \((\d+) steps?\))?\s*\|\s*(\d+) failed/.exec(o);
  return { passed: Number(m?.[1] ?? 0), failed: Number(m?.[3] ?? 0) };
}

/**
 * The names of the failed tests, repeated at the end of the run so that a CI
 * log cut to its tail still says which test failed.
 */
function failures(name: string, out: string): string[] {
  const lines = strip(out).split("\n");
  if (name === "node") return lines.filter((l) => /^\s*not ok \d+ - /.test(l)).map((l) => l.trim());
  if (name === "bun") return lines.filter((l) => l.startsWith("(fail) "));
  const start = lines.findIndex((l) => l.trim() === "FAILURES");
  if (start < 0) return [];
  return lines.slice(start + 1).filter((l) => l.includes(" => ")).map((l) => l.trim());
}

const db = await startDatabase();
let failed = false;
const summary: string[] = [];
let totalPassed = 0;
let totalFailed = 0;
try {
  for (const name of runtimes) {
    const cmd = commands[name];
    if (!cmd) throw new Error(`unknown runtime ${name}`);
    console.log(`\n=== ${name}: ${files.length} test files ===`);
    const env = { ...process.env, DATABASE_URL: db.url, SLUICE_TEST_RUNTIME: name };
    const r = await run(cmd, env);
    const c = counts(name, r.out);
    totalPassed += c.passed;
    totalFailed += c.failed;
    if (r.code !== 0 || c.passed === 0) failed = true;
    summary.push(`${name}: ${c.passed} passed, ${c.failed} failed (exit ${r.code})`);
    for (const f of failures(name, r.out)) summary.push(`  ${f}`);
  }
} finally {
  await db.stop();
}
console.log("\n" + summary.join("\n"));
if (failed && totalFailed === 0) totalFailed = 1; // a runtime crashed or ran nothing
console.log(`total: ${totalPassed} passed, ${totalFailed} failed`);
process.exit(failed ? 1 : 0);
