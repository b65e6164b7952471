#!/usr/bin/env bash
# The demo: installs what is missing, brings up a local swarm on an embedded NATS server (a
# coordinator and the guide's four code-review specialists plus a worker), waits until every node
# has joined, runs the guide's code-review request and prints the synthesized review, then shows
# the dashboard: live on a terminal (Ctrl-C stops everything), one frame otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set +e

port="${PICOCLAW_DEMO_PORT:-4222}"
# apt's nats-server package starts a system service on 127.0.0.1:4222 without JetStream; don't join it.
check=$(bun roles/picoclaw.ts --swarm.check-nats --swarm.nats.urls "nats://127.0.0.1:$port" 2>/dev/null)
if [ -z "${PICOCLAW_DEMO_PORT:-}" ] && [[ "$check" == *"JetStream ✗"* ]]; then
  echo "==> Port $port has a NATS server without JetStream (the nats-server system service?); the demo uses port 4333"
  port=4333
fi
export PICOCLAW_SWARM_NATS_EMBEDDED=true
export PICOCLAW_SWARM_NATS_EMBEDDED_PORT="$port"
export PICOCLAW_SWARM_NATS_HEARTBEAT_INTERVAL=1s PICOCLAW_SWARM_NATS_NODE_TIMEOUT=5s
logs=.tmp/demo
mkdir -p "$logs"
pids=()

start() { # name script args...
  local name=$1 script=$2; shift 2
  bun "roles/$script" "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}
stop_all() {
  trap - EXIT INT TERM
  echo "==> Stopping the demo swarm (logs in $logs/)"
  kill -TERM "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
}
trap stop_all EXIT INT TERM

wait_for() { # file pattern count seconds
  local deadline=$((SECONDS + $4))
  until [ "$(grep -c "$2" "$1" 2>/dev/null)" -ge "$3" ]; do
    if [ $SECONDS -ge "$deadline" ]; then
      echo "demo: timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; exit 1
    fi
    sleep 0.2
  done
}

echo "==> Starting the coordinator (it starts the embedded NATS server on port $PICOCLAW_SWARM_NATS_EMBEDDED_PORT)"
start coordinator coordinator.ts --swarm.capabilities coordination
wait_for "$logs/coordinator.log" "Node joined swarm" 1 30
echo "==> Starting specialists (rust,go,python / security,audit / docs,writing / testing,qa) and a worker"
start code specialist.ts --swarm.capabilities rust,go,python
start security specialist.ts --swarm.capabilities security,audit
start docs specialist.ts --swarm.capabilities docs,writing
start testing specialist.ts --swarm.capabilities testing,qa
start worker worker.ts --swarm.capabilities research
wait_for "$logs/coordinator.log" "Node joined swarm" 6 30
grep "Node joined swarm" "$logs/coordinator.log"

echo
echo "==> Submitting the guide's code-review request: picoclaw submit \"Review this change: ...\""
bun roles/picoclaw.ts submit "Review this change: the HTTP client now retries failed requests up to 5 times with exponential backoff, and logs the request URL and headers on every retry."
echo
bun roles/dashboard.ts --once
if [ -t 1 ] && [ -z "${CI:-}" ]; then
  echo "==> Live dashboard (Ctrl-C stops the demo swarm; in another terminal try:"
  echo "    bun roles/picoclaw.ts submit --swarm.nats.embedded \"Review this change: ...\")"
  bun roles/dashboard.ts
fi
