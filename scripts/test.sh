#!/usr/bin/env bash
# The whole test suite: installs what is missing, type-checks, checks formatting and lint, then runs
# every test twice against real servers and role processes: with the newest nats-server and with the OS
# package's (Debian 12: 2.9.10). Ends with one summary line ("tests: N passed, N failed").
# Arguments go to `bun test` (e.g. one file: npm test -- test/membership.test.ts).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh   # sourced so the PATH it may extend (a user-level Bun) carries over
. scripts/setup-test-tools.sh
set +e

echo "==> Type check (tsc --noEmit, strict)"
bun run --silent typecheck || { echo "tests: 0 passed, 1 failed (typecheck)"; exit 1; }

echo "==> Format and lint (biome ci)"
bunx biome ci --error-on-warnings --colors=off . || { echo "tests: 0 passed, 1 failed (biome: run 'bunx biome check --write .' to format, then fix what it reports)"; exit 1; }

passed=0
failed=0
failures=$(mktemp)
code=0
run_suite() { # label, then PATH prefix for nats-server
  local label=$1 prefix=$2 log
  log=$(mktemp)
  echo "==> bun test against $label ($(PATH="$prefix$PATH" nats-server --version))"
  PATH="$prefix$PATH" bun test --timeout 60000 "${@:3}" 2>&1 | tee "$log"
  local c=${PIPESTATUS[0]} p f
  p=$(grep -Eo '^ *[0-9]+ pass$' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
  f=$(grep -Eo '^ *[0-9]+ fail$' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
  # Each failure's own output again (the lines since the test before it, at most 40), so the end of
  # a long run says what failed and why without scrolling back through both passes.
  awk -v label="$label" '
    /^\((pass|skip|todo)\) / { n = 0; next }
    /^\(fail\) / { if (!seen[$0]++ && shown++ < 5) { print "---- " label ": " $0; s = (n > 40 ? n - 40 : 0); for (i = s; i < n; i++) print buf[i % 40] } n = 0; next }
    { buf[n % 40] = $0; n++ }
  ' "$log" >> "$failures"
  rm -f "$log"
  if [ "$c" = 0 ] && [ "${p:-0}" = 0 ]; then c=1; fi
  echo "tests against $label: ${p:-0} passed, ${f:-0} failed"
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  [ "$c" = 0 ] || code=$c
}

newest_dir="$PICOCLAW_TOOLS_DIR/nats-newest"
if [ -x "$newest_dir/nats-server" ]; then
  run_suite "the newest nats-server" "$newest_dir:" "$@"
elif [ "${CI:-}" = true ]; then
  echo "the newest nats-server is missing (see above): under CI=true the suite must run against it"
  failed=$((failed + 1))
  code=1
else
  echo "==> The newest nats-server is missing (see above): running against the OS package's only"
fi
# The OS package's server: take its directory first, whatever else is on PATH.
os_server=$(PATH="${PATH//$newest_dir:/}" command -v nats-server)
run_suite "the OS package's nats-server" "$(dirname "$os_server"):" "$@"

if [ -s "$failures" ]; then
  echo "==> What failed, with each failure's output"
  cat "$failures"
fi
rm -f "$failures"
echo "tests: $passed passed, $failed failed"
exit "$code"
