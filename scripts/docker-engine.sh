#!/usr/bin/env bash
# Makes sure a Docker engine answers (`docker info`). When none does and we are root, starts
# `dockerd` in the background (own session, so it outlives this script and its caller), logging to
# $PICOCLAW_DOCKERD_LOG, and waits (bounded) until it answers. Otherwise prints ONE line saying why.
#
#   bash scripts/docker-engine.sh           # exit code below
#   . scripts/docker-engine.sh || exit $?   # the same, from another bash script
#
# Exit codes: 0 an engine answers (it already ran, or we started it)
#             3 no docker CLI            4 an engine runs but this user may not use it (socket permission)
#             5 no engine, not root      6 no engine, no dockerd binary
#             7 DOCKER_HOST names an engine elsewhere that does not answer (we start only local ones)
#             8 dockerd exited while starting      9 dockerd did not answer within the wait
# Settings: PICOCLAW_DOCKERD_ARGS (default "--iptables=false --storage-driver=vfs"),
#           PICOCLAW_DOCKERD_LOG (default /var/log/picoclaw-dockerd.log),
#           PICOCLAW_DOCKERD_WAIT seconds (default 60).

picoclaw_docker_engine() {
  local log="${PICOCLAW_DOCKERD_LOG:-/var/log/picoclaw-dockerd.log}"
  local wait="${PICOCLAW_DOCKERD_WAIT:-60}"
  local args="${PICOCLAW_DOCKERD_ARGS:---iptables=false --storage-driver=vfs}"
  local err pid deadline from why

  if ! command -v docker >/dev/null 2>&1; then
    echo "docker-engine: no docker CLI on PATH (Debian/Ubuntu: apt-get install docker.io)" >&2
    return 3
  fi
  err=$(timeout 20 docker info 2>&1 >/dev/null) && return 0
  if [[ "$err" == *"permission denied"* ]]; then
    echo "docker-engine: an engine runs but $(id -un) may not use its socket (join the 'docker' group or use sudo)" >&2
    return 4
  fi
  if [ -n "${DOCKER_HOST:-}" ] && [[ "$DOCKER_HOST" != unix:///var/run/docker.sock && "$DOCKER_HOST" != unix:///run/docker.sock ]]; then
    echo "docker-engine: DOCKER_HOST=$DOCKER_HOST does not answer, and only a local engine can be started here" >&2
    return 7
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "docker-engine: no Docker engine answers and starting one needs root (run as root, or start Docker: sudo systemctl start docker)" >&2
    return 5
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    echo "docker-engine: no Docker engine answers and there is no dockerd to start (Debian/Ubuntu: apt-get install docker.io)" >&2
    return 6
  fi
  mkdir -p "$(dirname "$log")"
  touch "$log"
  from=$(($(wc -l <"$log") + 1))
  pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "==> dockerd (pid $pid) runs but does not answer yet: waiting" >&2
  else
    # A pid file left by a dockerd that died (machine or container restart) makes dockerd refuse to start.
    rm -f /var/run/docker.pid
    echo "==> Starting dockerd $args (log: $log)" >&2
    # shellcheck disable=SC2086  # args are words on purpose
    setsid dockerd $args </dev/null >>"$log" 2>&1 &
    pid=$!
  fi
  deadline=$((SECONDS + wait))
  until timeout 20 docker info >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      why=$(tail -n +"$from" "$log" | grep -Ei 'level=fatal|unknown flag|^failed|error' | grep -v level=warning | tail -1)
      echo "docker-engine: dockerd exited while starting: ${why:-$(tail -n 1 "$log")} (log: $log)" | cut -c1-400 >&2
      return 8
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "docker-engine: dockerd (pid $pid) did not answer within ${wait}s (log: $log)" >&2
      return 9
    fi
    sleep 0.2
  done
  echo "==> Docker engine up (dockerd pid $pid)" >&2
  return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  picoclaw_docker_engine
  exit $?
else
  picoclaw_docker_engine
  # shellcheck disable=SC2317  # reached when sourced
  return $? 2>/dev/null
fi
