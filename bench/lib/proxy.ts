/**
 * A TCP proxy in front of PostgreSQL that counts and times what clients send
 * (the same message counting as test/integration/session.test.ts):
 *
 * - statements: Execute and simple Query messages;
 * - round trips: Sync, Flush and simple Query messages;
 * - per statement text: count and the time from its Sync (or Query) being
 *   forwarded to the server's ReadyForQuery coming back (server time plus
 *   the loopback hops; postgres.js pipelines, so a queued statement's time
 *   includes the wait behind the one before it on that connection).
 *
 * Used in-process (idle counting, scenario 6) or as its own process
 * (`node --import tsx bench/lib/proxy.ts <target-url>`: prints
 * {"url": ...} and, on each stdin line "stats", one JSON line of stats), so
 * that timing a client does not share the client's event loop.
 */
import { Buffer } from "node:buffer";
import { type AddressInfo, connect as tcpConnect, createServer, type Socket } from "node:net";

export interface StatementStats {
  count: number;
  totalMs: number;
  maxMs: number;
}

export interface ProxyStats {
  statements: number;
  roundTrips: number;
  connections: number;
  byStatement: Record<string, StatementStats>;
}

export interface Proxy {
  readonly url: string;
  stats(): ProxyStats;
  reset(): void;
  close(): Promise<void>;
}

/** Normalises a statement text into a short key. */
export function statementKey(text: string): string {
  const t = text.replace(/\s+/g, " ").trim();
  const low = t.toLowerCase();
  if (low === "begin" || low.startsWith("begin ")) return "BEGIN";
  if (low === "commit") return "COMMIT";
  if (low === "rollback") return "ROLLBACK";
  return t.slice(0, 70);
}

export async function startProxy(target: string, o: { timing?: boolean } = {}): Promise<Proxy> {
  let s: ProxyStats = { statements: 0, roundTrips: 0, connections: 0, byStatement: {} };
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const t = new URL(target);
    const upstream = tcpConnect(Number(t.port || 5432), t.hostname);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    sockets.add(client).add(upstream);
    s.connections++;
    let buf: Buffer = Buffer.alloc(0);
    let started = false;
    let sslAnswer = 0;
    const named = new Map<string, string>();
    let unnamed = "";
    let pending = ""; // statement of the current extended-protocol sequence
    const fifo: { key: string; at: number }[] = [];
    client.on("data", (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      for (;;) {
        if (!started) {
          if (buf.length < 8) break;
          const len = buf.readInt32BE(0);
          if (buf.length < len) break;
          const code = buf.readInt32BE(4);
          if (code === 80877103 || code === 80877104) sslAnswer++;
          else started = true;
          buf = buf.subarray(len);
          continue;
        }
        if (buf.length < 5) break;
        const len = buf.readInt32BE(1);
        if (buf.length < 1 + len) break;
        const type = String.fromCharCode(buf[0]!);
        const body = buf.subarray(5, 1 + len);
        if (type === "E" || type === "Q") s.statements++;
        if (type === "S" || type === "H" || type === "Q") s.roundTrips++;
        if (o.timing) {
          if (type === "P") {
            const z = body.indexOf(0);
            const name = body.subarray(0, z).toString();
            const text = body.subarray(z + 1, body.indexOf(0, z + 1)).toString();
            if (name) named.set(name, text);
            else unnamed = text;
            pending = text;
          } else if (type === "B") {
            const z = body.indexOf(0);
            const stmt = body.subarray(z + 1, body.indexOf(0, z + 1)).toString();
            pending = stmt ? named.get(stmt) ?? `(prepared ${stmt})` : unnamed;
          } else if (type === "S") {
            fifo.push({ key: statementKey(pending), at: performance.now() });
          } else if (type === "Q") {
            fifo.push({ key: statementKey(body.subarray(0, body.indexOf(0)).toString()), at: performance.now() });
          }
        }
        buf = buf.subarray(1 + len);
      }
    });
    client.pipe(upstream);
    if (o.timing) {
      let ubuf: Buffer = Buffer.alloc(0);
      upstream.on("data", (d: Buffer) => {
        ubuf = ubuf.length ? Buffer.concat([ubuf, d]) : d;
        for (;;) {
          if (sslAnswer > 0) {
            if (ubuf.length < 1) break;
            sslAnswer--;
            ubuf = ubuf.subarray(1);
            continue;
          }
          if (ubuf.length < 5) break;
          const len = ubuf.readInt32BE(1);
          if (ubuf.length < 1 + len) break;
          if (ubuf[0] === 0x5a /* Z */) {
            const q = fifo.shift();
            if (q) {
              const ms = performance.now() - q.at;
              const e = (s.byStatement[q.key] ??= { count: 0, totalMs: 0, maxMs: 0 });
              e.count++;
              e.totalMs += ms;
              if (ms > e.maxMs) e.maxMs = ms;
            }
          }
          ubuf = ubuf.subarray(1 + len);
        }
      });
    }
    upstream.pipe(client);
    const kill = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const x of [client, upstream]) {
      x.on("error", kill);
      x.on("close", kill);
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const u = new URL(target);
  u.hostname = "127.0.0.1";
  u.port = String((server.address() as AddressInfo).port);
  return {
    url: u.toString(),
    stats: () => structuredClone(s),
    reset: () => {
      s = { statements: 0, roundTrips: 0, connections: s.connections, byStatement: {} };
    },
    close: () =>
      new Promise<void>((r) => {
        for (const x of sockets) x.destroy();
        server.close(() => r());
      }),
  };
}

// Run as its own process: node --import tsx bench/lib/proxy.ts <target-url>
if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop()!) && process.argv[1].includes("proxy")) {
  const p = await startProxy(process.argv[2]!, { timing: true });
  process.stdout.write(JSON.stringify({ url: p.url }) + "\n");
  let input = "";
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (d: string) => {
    input += d;
    let i: number;
    while ((i = input.indexOf("\n")) >= 0) {
      const line = input.slice(0, i).trim();
      input = input.slice(i + 1);
      if (line === "stats") process.stdout.write(JSON.stringify(p.stats()) + "\n");
      if (line === "reset") p.reset();
    }
  });
  process.stdin.on("end", () => void p.close().then(() => process.exit(0)));
}
