// Child process for the concurrent-migrate test: migrates DATABASE_URL and prints what it applied.
import postgres from "postgres";
import { migrate } from "../../src/db/migrate.ts";

const sql = postgres(process.env.TARGET_URL!, { onnotice: () => {}, max: 1 });
try {
  const tables = process.env.TABLES ? JSON.parse(process.env.TABLES) : undefined;
  const r = await migrate(sql, { tables, logger: { debug() {}, info() {}, warn() {}, error() {} } });
  console.log(JSON.stringify(r));
} finally {
  await sql.end();
}
