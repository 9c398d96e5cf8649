/** Child processes: TypeScript files on Node (tsx), Bun or Deno, speaking JSON lines on stdout. */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

export const root = fileURLToPath(new URL("../..", import.meta.url));

export type Runtime = "node" | "bun" | "deno";

/** argv that runs `script` (relative to the repo root) on `runtime`. */
export function command(runtime: Runtime, script: string, args: readonly string[] = [], nodeFlags: readonly string[] = []): { cmd: string; args: string[] } {
  if (runtime === "bun") return { cmd: `${root}node_modules/.bin/bun`, args: [script, ...args] };
  if (runtime === "deno") return { cmd: `${root}node_modules/.bin/deno`, args: ["run", "-A", script, ...args] };
  return { cmd: process.execPath, args: [...nodeFlags, "--import", "tsx", script, ...args] };
}

export interface Child {
  readonly proc: ChildProcess;
  /** Every JSON line printed so far. */
  readonly lines: Record<string, unknown>[];
  /** Resolves on exit with the code (or the signal name). */
  readonly exited: Promise<number | string>;
  /** Resolves with the first line matching `pred` (rejects if the child exits first or after timeoutMs). */
  waitLine(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stderr: string;
}

/**
 * Starts a child. Non-JSON stdout lines are kept as {text}; stderr is kept
 * (and echoed when `echo`). `onLine` sees every JSON line as it arrives.
 */
export function start(
  runtime: Runtime,
  script: string,
  args: readonly string[] = [],
  o: { env?: Record<string, string>; echo?: boolean; nodeFlags?: readonly string[]; onLine?: (l: Record<string, unknown>) => void } = {},
): Child {
  const c = command(runtime, script, args, o.nodeFlags);
  return startCmd(c.cmd, c.args, script, o);
}

function startCmd(
  cmd: string,
  argv: readonly string[],
  script: string,
  o: { env?: Record<string, string>; echo?: boolean; onLine?: (l: Record<string, unknown>) => void } = {},
): Child {
  const proc = spawn(cmd, argv, { cwd: root, env: { ...process.env, ...o.env }, stdio: ["pipe", "pipe", "pipe"] });
  const lines: Record<string, unknown>[] = [];
  const waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  let buf = "";
  const child: Child = {
    proc,
    lines,
    stderr: "",
    exited: new Promise((resolve) => proc.on("close", (code, signal) => resolve(code ?? signal ?? -1))),
    waitLine(pred, timeoutMs = 60_000) {
      const hit = lines.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${script}: no matching line within ${timeoutMs} ms\n${child.stderr.slice(-2000)}`)), timeoutMs);
        const w = { pred, resolve: (l: Record<string, unknown>) => (clearTimeout(timer), resolve(l)) };
        waiters.push(w);
        void child.exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`${script} exited (${code}) before the expected line\n${child.stderr.slice(-2000)}`));
        });
      });
    },
  };
  proc.stdout!.setEncoding("utf8");
  proc.stdout!.on("data", (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      const text = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!text) continue;
      let l: Record<string, unknown>;
      try {
        l = JSON.parse(text) as Record<string, unknown>;
        if (typeof l !== "object" || l === null) l = { text };
      } catch {
        l = { text };
      }
      lines.push(l);
      o.onLine?.(l);
      for (const w of [...waiters]) {
        if (w.pred(l)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(l);
        }
      }
    }
  });
  proc.stderr!.setEncoding("utf8");
  proc.stderr!.on("data", (d: string) => {
    child.stderr += d;
    if (o.echo) process.stderr.write(d);
  });
  proc.stdin!.on("error", () => {});
  return child;
}

/** Runs a child to completion; rejects on a non-zero exit. */
export async function runToEnd(runtime: Runtime, script: string, args: readonly string[], o: Parameters<typeof start>[3] = {}): Promise<Child> {
  const c = start(runtime, script, args, { echo: true, ...o });
  c.proc.stdin!.end();
  const code = await c.exited;
  if (code !== 0) throw new Error(`${runtime} ${script} ${args.join(" ")} exited with ${code}`);
  return c;
}

/**
 * Bundles `script` (and everything it imports) into one plain-JS file with
 * esbuild, so a child can run on plain Node without the tsx loader (whose
 * compiler would otherwise count in the child's memory). Returns its path.
 */
export function bundle(script: string, outDir: string): string {
  const out = `${outDir}/${script.replace(/[^a-z0-9]+/gi, "_")}.mjs`;
  const r = spawnSync(`${root}node_modules/.bin/esbuild`, [
    script,
    "--bundle",
    "--platform=node",
    "--format=esm",
    "--target=node20",
    `--outfile=${out}`,
    "--log-level=warning",
    // CommonJS dependencies bundled into ESM call require() for Node built-ins.
    "--banner:js=import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  ], { cwd: root, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`esbuild ${script} failed: ${r.stderr}`);
  return out;
}

/** Starts a bundled .mjs on plain Node. */
export function startPlain(file: string, args: readonly string[] = [], o: { echo?: boolean } = {}): Child {
  return startCmd(process.execPath, [file, ...args], file, o);
}
