/** Child processes on the runtime running the tests (Node via tsx, Bun, Deno). */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

export const runtime: "node" | "bun" | "deno" =
  "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** argv that runs a TypeScript file on the current runtime. */
export function tsCommand(script: string, args: string[] = []): { cmd: string; args: string[] } {
  if (runtime === "deno") return { cmd: process.execPath, args: ["run", "-A", script, ...args] };
  if (runtime === "bun") return { cmd: process.execPath, args: [script, ...args] };
  return { cmd: process.execPath, args: ["--import", "tsx", script, ...args] };
}

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
