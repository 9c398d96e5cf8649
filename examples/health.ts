/**
 * A health endpoint for Kubernetes probes or a load balancer, on Node, Bun
 * and Deno. `healthHandler(worker)` is a fetch-style handler: it answers 200
 * `{"status":"ok",...}`, or 503 `{"status":"unhealthy","reasons":[...]}` when
 * the worker is not running, lost its coordination session, or a consumer is
 * parked or stuck (lag above zero and not falling for `stuckAfterMs`).
 *
 *   node --import tsx examples/health.ts [--seconds N] [--port P]
 *   bun examples/health.ts
 *   deno run -A examples/health.ts
 *
 * By default it checks itself once and exits; `--seconds 60` keeps serving
 * (try `curl -i localhost:8080/healthz`).
 */
import { createServer } from "node:http";
import postgres from "postgres";
import { createWorker, healthHandler, migrate, toNodeListener } from "../src/mod.ts"; // "@sluice/worker"

const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const seconds = arg("seconds", 0);
const port = arg("port", 8080);

const sql = postgres(process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres", { onnotice: () => {} });
await migrate(sql);
const worker = createWorker({ sql, consumers: [{ name: "example_health", aggregateTypes: ["Nothing"] }] });
const health = healthHandler(worker, { stuckAfterMs: 60_000 });

// Route: the handler itself ignores the path.
const app = (request: Request): Response =>
  new URL(request.url).pathname === "/healthz" ? health(request) : new Response("not found", { status: 404 });

/** Serves `handler` with the runtime's own server (Deno.serve, Bun.serve, node:http). */
async function serve(handler: (request: Request) => Response, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const g = globalThis as {
    Deno?: { serve(o: { port: number; onListen?: () => void }, h: (r: Request) => Response): { addr: { port: number }; shutdown(): Promise<void> } };
    Bun?: { serve(o: { port: number; fetch: (r: Request) => Response }): { port: number; stop(force?: boolean): void } };
  };
  if (g.Deno) {
    const server = g.Deno.serve({ port, onListen: () => {} }, handler); // Deno.serve({ port }, health)
    return { port: server.addr.port, close: () => server.shutdown() };
  }
  if (g.Bun) {
    const server = g.Bun.serve({ port, fetch: handler }); // Bun.serve({ port, fetch: health })
    return { port: server.port, close: async () => server.stop(true) };
  }
  const server = createServer(toNodeListener(handler)); // Node: the two-line adapter
  await new Promise<void>((r) => server.listen(port, r));
  const address = server.address();
  return { port: typeof address === "object" && address ? address.port : port, close: () => new Promise((r) => server.close(() => r())) };
}

// Start the worker loop, then the server.
const done = worker.run(async () => {});
await worker.start();
const server = await serve(app, port);
console.log(`serving http://localhost:${server.port}/healthz`);

const res = await fetch(`http://localhost:${server.port}/healthz`);
const body = (await res.json()) as { status: string; consumers: { name: string; state: string }[] };
console.log(`GET /healthz -> ${res.status} ${body.status} (consumers: ${body.consumers.map((c) => `${c.name} ${c.state}`).join(", ") || "none yet"})`);

if (seconds > 0) await new Promise((r) => setTimeout(r, seconds * 1000));
await worker.stop();
await done;
const after = health();
console.log(`after stop -> ${after.status} ${((await after.json()) as { reasons: { code: string }[] }).reasons.map((r) => r.code).join(", ")}`);
await server.close();
await sql.end();
