#!/usr/bin/env bash
# `npm run bench`: installs what is missing (Bun and nats-server as scripts/setup.sh does, and
# redis-server from the OS packages for the BullMQ baselines), then runs bench/run.ts. A baseline the
# bench cannot run is an error there, so this says exactly what to install when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
if ! command -v redis-server >/dev/null 2>&1; then
  say "Installing redis-server from the OS packages (the BullMQ baselines; its service is not started)"
  apt_install redis-server || {
    echo "redis-server is missing and could not be installed without a password. Run:" >&2
    echo "  sudo apt-get install -y redis-server" >&2
    echo "then run this again." >&2
    exit 1
  }
fi
exec bun run bench/run.ts "$@"
