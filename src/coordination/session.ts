/**
 * The worker's own session connection: it holds the advisory locks
 * (liveness, leadership) and runs the coordination tick; its `listen` runs on
 * one more dedicated connection. Neither is shared with a pool, and neither
 * is recycled by idle or lifetime timeouts.
 *
 * @module
 */
import postgres from "postgres";
import type { Sql } from "../db/executor.ts";

/**
 * Opens a one-connection client for session state: from `directUrl` when
 * given (bypassing a transaction-pooling PgBouncer), else from the options of
 * the user's client.
 */
export function openSession(sql: Sql, directUrl: string | undefined, onclose: () => void): Sql {
  const base = {
    max: 1,
    idle_timeout: 0,
    max_lifetime: 0,
    fetch_types: false,
    onnotice: () => {},
    onclose,
  } as const;
  if (directUrl) {
    return postgres(directUrl, { ...base, connection: { application_name: "sluice-session" } });
  }
  const o = sql.options as unknown as Record<string, unknown> & { connection?: Record<string, unknown> };
  return postgres({
    host: o.host as string[] as unknown as string,
    port: o.port as number[] as unknown as number,
    path: o.path as string | undefined,
    database: o.database as string,
    user: o.user as string,
    pass: o.pass as string,
    ssl: o.ssl as boolean,
    connect_timeout: o.connect_timeout as number,
    keep_alive: o.keep_alive as number,
    target_session_attrs: o.target_session_attrs as undefined,
    ...base,
    connection: { ...(o.connection ?? {}), application_name: "sluice-session" },
  });
}
