/** Child processes on the runtime running the tests (Node via tsx, Bun, Deno). */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

import { tsCommand } from "../../scripts/runtime.ts";

export { runtime, tsCommand } from "../../scripts/runtime.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** Starts a TypeScript file as a child process (cwd: repo root). */
export function spawnTs(script: string, args: string[] = [], env: Record<string, string> = {}): ChildProcess {
  const c = tsCommand(script, args);
  return spawn(c.cmd, c.args, { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
}

/** Runs a TypeScript file to completion and collects its output. */
export function runTs(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawnTs(script, args, env);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}
