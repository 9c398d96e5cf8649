import { defineConfig } from "drizzle-kit";

// drizzle-kit needs no database to generate: `npm run db:generate`.
export default defineConfig({
  dialect: "postgresql",
  schema: "./src/db/schema.ts",
  out: "./drizzle",
});
