/** How to run a TypeScript file on the runtime running us (Node via tsx, Bun, Deno). */
export const runtime: "node" | "bun" | "deno" =
  "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";

/** argv that runs a TypeScript file on the current runtime. */
export function tsCommand(script: string, args: string[] = []): { cmd: string; args: string[] } {
  if (runtime === "deno") return { cmd: process.execPath, args: ["run", "-A", script, ...args] };
  if (runtime === "bun") return { cmd: process.execPath, args: [script, ...args] };
  return { cmd: process.execPath, args: ["--import", "tsx", script, ...args] };
}
