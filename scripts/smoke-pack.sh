#!/usr/bin/env bash
# Packaging smoke test: `npm pack` this repository, install the tarball (plus
# postgres, its peer dependency) into a scratch project outside the repo, and
# check that the published entry points load on Node (plain node, no tsx),
# Bun and Deno, that their types resolve, and that `npx sluice` runs.
# Exits non-zero on the first failure; always removes its temporary directory.
#
#   bash scripts/smoke-pack.sh        (CI calls it from .ci/run)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bun="$root/node_modules/.bin/bun"
deno="$root/node_modules/.bin/deno"
tsc="$root/node_modules/.bin/tsc"
work="$(mktemp -d "${TMPDIR:-/tmp}/sluice-smoke-XXXXXX")"
trap 'rm -rf "$work"' EXIT
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

say() { printf -- '--- %s\n' "$*"; }
fail() { printf 'smoke-pack: FAIL: %s\n' "$*" >&2; exit 1; }

for bin in "$bun" "$deno" "$tsc"; do [ -x "$bin" ] || fail "$bin is missing: run npm ci first"; done

say "npm pack (runs the build)"
(cd "$root" && npm pack --pack-destination "$work" >"$work/pack.log" 2>&1) || { cat "$work/pack.log" >&2; fail "npm pack"; }
tarball="$(ls "$work"/*.tgz)"
[ "$(echo "$tarball" | wc -l)" -eq 1 ] || fail "expected one tarball, got: $tarball"
echo "$(basename "$tarball") ($(du -k "$tarball" | cut -f1) kB)"

say "tarball contents"
tar -tzf "$tarball" >"$work/contents.txt"
for f in package/package.json package/dist/mod.js package/dist/mod.d.ts package/dist/store/mod.js \
  package/dist/db/schema.js package/dist/cli/main.js package/README.md package/LICENSE; do
  grep -qx "$f" "$work/contents.txt" || fail "$f is not in the tarball"
done
if grep -E '^package/(src|test|scripts|node_modules)/' "$work/contents.txt"; then fail "the tarball ships sources or tests"; fi

say "scratch project: npm install the tarball + postgres"
app="$work/app"
mkdir "$app"
cd "$app"
cat >package.json <<'EOF'
{ "name": "sluice-smoke", "private": true, "type": "module" }
EOF
pg_version="$(node -p 'require(process.argv[1]).version' "$root/node_modules/postgres/package.json")"
npm install --prefer-offline --no-package-lock "$tarball" "postgres@$pg_version" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "npm install"; }
[ -x node_modules/.bin/sluice ] || fail "node_modules/.bin/sluice is missing or not executable"

cat >check.mjs <<'EOF'
const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";
const main = await import("@sluice/worker");
const schema = await import("@sluice/worker/schema");
const store = await import("@sluice/worker/store");
const problems = [];
if (typeof main.migrate !== "function") problems.push("@sluice/worker has no migrate()");
if (typeof main.renderMigrationScript !== "function") problems.push("@sluice/worker has no renderMigrationScript()");
if (typeof schema.createTables !== "function") problems.push("@sluice/worker/schema has no createTables()");
if (Object.keys(store).length === 0) problems.push("@sluice/worker/store exports nothing");
const tables = schema.createTables({ schema: "infra" });
if (Object.keys(tables).length !== 6) problems.push(`createTables() returned ${Object.keys(tables).length} tables`);
if (!main.renderMigrationScript({ schema: "infra" }).includes('CREATE TABLE "infra"."events"')) problems.push("renderMigrationScript() output");
if (problems.length > 0) {
  console.error(`${runtime}: ${problems.join("; ")}`);
  process.exit(1);
}
console.log(`${runtime}: @sluice/worker, /schema and /store load (store exports: ${Object.keys(store).sort().join(", ")})`);
EOF

say "Node (plain node, no tsx)"
node check.mjs || fail "node import"
say "Bun"
"$bun" check.mjs || fail "bun import"
say "Deno (node_modules dir: manual)"
"$deno" run -A --node-modules-dir=manual check.mjs || fail "deno import"

say "types resolve (tsc, NodeNext)"
cat >check-types.ts <<'EOF'
import { migrate, type MigrateResult } from "@sluice/worker";
import { createTables, type SluiceTables } from "@sluice/worker/schema";
import * as store from "@sluice/worker/store";
const tables: SluiceTables = createTables({ schema: "infra" });
const run: (sql: Parameters<typeof migrate>[0]) => Promise<MigrateResult> = (sql) => migrate(sql, { tables: { schema: "infra" } });
export { run, store, tables };
EOF
cat >tsconfig.json <<'EOF'
{ "compilerOptions": { "noEmit": true, "strict": true, "skipLibCheck": true, "module": "nodenext",
    "moduleResolution": "nodenext", "target": "es2022", "types": [] }, "files": ["check-types.ts"] }
EOF
"$tsc" -p tsconfig.json || fail "the published types do not resolve"

say "npx sluice"
npx --no-install sluice --help >"$work/help.txt" || fail "npx sluice --help exited $?"
grep -q "^Usage: sluice <command>" "$work/help.txt" || fail "npx sluice --help printed no usage"
npx --no-install sluice generate --out generated --filename smoke.sql --schema infra >/dev/null || fail "npx sluice generate"
grep -q 'CREATE TABLE "infra"."events"' generated/smoke.sql || fail "sluice generate wrote no SQL"
set +e
npx --no-install sluice nope >/dev/null 2>&1
code=$?
set -e
[ "$code" -eq 2 ] || fail "npx sluice nope exited $code, expected 2"
"$bun" node_modules/.bin/sluice --help >/dev/null || fail "bun sluice --help"
"$deno" run -A --node-modules-dir=manual node_modules/@sluice/worker/dist/cli/main.js --help >/dev/null || fail "deno sluice --help"

say "smoke-pack: OK"
