#!/usr/bin/env bash
# The whole test suite: installs what is missing, type-checks, runs every test against real
# nats-server and role processes, and ends with one summary line ("N passed, N failed").
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh   # sourced so the PATH it may extend (a user-level Bun) carries over
set +e

echo "==> Type check (tsc --noEmit, strict)"
bun run --silent typecheck || { echo "tests: 0 passed, 1 failed (typecheck)"; exit 1; }

echo "==> Format and lint (biome ci)"
bunx biome ci --error-on-warnings --colors=off . || { echo "tests: 0 passed, 1 failed (biome: run 'bunx biome check --write .' to format, then fix what it reports)"; exit 1; }

echo "==> bun test"
log=$(mktemp)
bun test --timeout 60000 "$@" 2>&1 | tee "$log"
code=${PIPESTATUS[0]}
passed=$(grep -Eo '^ *[0-9]+ pass$' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
failed=$(grep -Eo '^ *[0-9]+ fail$' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
rm -f "$log"
if [ "$code" = 0 ] && [ "${passed:-0}" = 0 ]; then code=1; fi
echo "tests: ${passed:-0} passed, ${failed:-0} failed"
exit "$code"
