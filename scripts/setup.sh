#!/usr/bin/env bash
# Installs what PicoClaw Swarm needs when it is missing: Bun (from npm), nats-server (OS packages),
# and the project's dependencies. Says exactly what to do when it cannot install something itself.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

apt_install() { # packages... ; quiet, non-interactive, without starting services (policy-rc.d)
  command -v apt-get >/dev/null 2>&1 || return 1
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ] && as_root true 2>/dev/null; then
    # Packages such as prometheus (for promtool) or redis-server would start a system service: not wanted.
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod +x "$policy" && made_policy=1
  fi
  local ok=0
  { as_root apt-get update -qq >/dev/null 2>&1 || true; } &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || ok=1
  [ -n "$made_policy" ] && as_root rm -f "$policy"
  return $ok
}

# Bun: from the npm registry (the 'bun' package ships the native binary for this platform).
if ! command -v bun >/dev/null 2>&1; then
  for dir in "$HOME/.picoclaw/tools/node_modules/.bin" "$HOME/.bun/bin"; do
    [ -x "$dir/bun" ] && export PATH="$dir:$PATH" && break
  done
fi
if ! command -v bun >/dev/null 2>&1; then
  command -v npm >/dev/null 2>&1 || { echo "Bun is missing and so is npm: install Node.js and npm (e.g. 'sudo apt-get install nodejs npm'), then run this again." >&2; exit 1; }
  say "Installing Bun from npm"
  if ! npm install -g bun >/dev/null 2>&1 || ! command -v bun >/dev/null 2>&1; then
    # No permission for a global install: keep it in the user's home instead.
    npm install --prefix "$HOME/.picoclaw/tools" bun >/dev/null
    export PATH="$HOME/.picoclaw/tools/node_modules/.bin:$PATH"
  fi
  command -v bun >/dev/null 2>&1 || { echo "Could not install Bun. Run 'npm install -g bun' yourself, then run this again." >&2; exit 1; }
fi
say "Bun $(bun --version)"

# nats-server: Debian/Ubuntu package (JetStream included since 2.2).
if [ -z "${PICOCLAW_NATS_SERVER_BIN:-}" ] && ! command -v nats-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    say "Installing nats-server from the OS packages"
    if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null; }; then
      echo "nats-server is missing and could not be installed without a password. Run:" >&2
      echo "  sudo apt-get update && sudo apt-get install -y nats-server" >&2
      echo "then run this again." >&2
      exit 1
    fi
  else
    echo "nats-server is missing. Install it (macOS: 'brew install nats-server'; other systems: a release" >&2
    echo "binary from the NATS project on your PATH, or set PICOCLAW_NATS_SERVER_BIN), then run this again." >&2
    exit 1
  fi
fi
say "$(${PICOCLAW_NATS_SERVER_BIN:-nats-server} --version)"

if [ ! -d node_modules ] || [ package.json -nt node_modules ] || [ bun.lock -nt node_modules ]; then
  say "Installing dependencies (bun install)"
  bun install --frozen-lockfile >/dev/null
  touch node_modules
fi
