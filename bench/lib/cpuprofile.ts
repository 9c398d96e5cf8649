/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): self time by function and
 * by area (sluice src/, postgres.js, other packages, Node internals, GC, idle).
 */
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Wall time covered by the profile (ms), limited to the window when given. */
  readonly wallMs: number;
  /** Non-idle time (ms): the process was on a CPU (or waiting for one). */
  readonly busyMs: number;
  readonly areas: { area: string; ms: number; pct: number }[];
  readonly functions: { fn: string; where: string; area: string; ms: number; pct: number }[];
}

function areaOf(url: string, fn: string): string {
  if (fn === "(idle)") return "idle";
  if (fn === "(garbage collector)") return "GC";
  if (fn === "(program)" || fn === "(root)") return "V8/native (program)";
  if (url.includes("/node_modules/postgres/")) return "postgres.js";
  if (url.includes("/node_modules/drizzle-orm/")) return "drizzle-orm";
  if (url.includes("/node_modules/")) return "other packages";
  if (url.includes("/src/")) return "sluice src/";
  if (url.includes("/bench/")) return "bench harness";
  if (url.startsWith("node:") || url === "") return "Node internals / native";
  return "other";
}

function short(url: string): string {
  const i = url.lastIndexOf("/node_modules/");
  if (i >= 0) return url.slice(i + 14);
  const j = url.indexOf("/src/");
  if (j >= 0) return url.slice(j + 1);
  const k = url.indexOf("/bench/");
  if (k >= 0) return url.slice(k + 1);
  return url.replace(/^file:\/\//, "");
}

/**
 * Summarises `file`. `windows` (µs of CLOCK_MONOTONIC, the profile's clock:
 * see `mono()` in raw.ts) restrict the samples to those time ranges.
 */
export function summarizeProfile(file: string, top = 25, windows?: readonly { from: number; to: number }[]): ProfileSummary {
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let t = p.startTime;
  let wall = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    t += dt;
    if (windows && !windows.some((w) => t >= w.from && t <= w.to)) continue;
    wall += dt;
    self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + dt);
  }
  const fns = new Map<string, { fn: string; where: string; area: string; us: number }>();
  const areas = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const fn = n.callFrame.functionName || "(anonymous)";
    const area = areaOf(n.callFrame.url, fn);
    areas.set(area, (areas.get(area) ?? 0) + us);
    const where = n.callFrame.url ? `${short(n.callFrame.url)}:${n.callFrame.lineNumber + 1}` : "";
    const key = `${fn}@${where}`;
    const e = fns.get(key) ?? { fn, where, area, us: 0 };
    e.us += us;
    fns.set(key, e);
  }
  const idle = areas.get("idle") ?? 0;
  const busy = wall - idle;
  return {
    wallMs: wall / 1000,
    busyMs: busy / 1000,
    areas: [...areas.entries()].filter(([a]) => a !== "idle").sort((a, b) => b[1] - a[1])
      .map(([area, us]) => ({ area, ms: us / 1000, pct: (us / busy) * 100 })),
    functions: [...fns.values()].filter((f) => f.area !== "idle").sort((a, b) => b.us - a.us).slice(0, top)
      .map((f) => ({ fn: f.fn, where: f.where, area: f.area, ms: f.us / 1000, pct: (f.us / busy) * 100 })),
  };
}
