#!/usr/bin/env bash
# `npm run image`: compiles dist/ (bun run build), makes sure a Docker engine answers
# (scripts/docker-engine.sh) and the base image exists (scripts/base-image.sh; only its glibc goes
# into the image), then builds picoclaw:latest from ./Dockerfile. Prints the image's size next to the
# executable's.
#
#   npm run image                                   # picoclaw:latest on picoclaw-base:bookworm
#   PICOCLAW_IMAGE=picoclaw:dev npm run image       # another tag
#   PICOCLAW_IMAGE_BASE=debian:bookworm-slim npm run image   # with a registry: no debootstrap
#   PICOCLAW_IMAGE_SKIP_BUILD=1 npm run image       # use dist/picoclaw as it is
set -euo pipefail
cd "$(dirname "$0")/.."
image="${PICOCLAW_IMAGE:-picoclaw:latest}"
base="${PICOCLAW_IMAGE_BASE:-${PICOCLAW_BASE_IMAGE:-picoclaw-base:bookworm}}"

if [ -z "${PICOCLAW_IMAGE_SKIP_BUILD:-}" ]; then
  echo "==> bun run build"
  bun run --silent build
fi
[ -x dist/picoclaw ] || { echo "image: dist/picoclaw is missing (bun run build)" >&2; exit 1; }
bash scripts/docker-engine.sh
if [ "$base" = "${PICOCLAW_BASE_IMAGE:-picoclaw-base:bookworm}" ]; then
  PICOCLAW_BASE_IMAGE="$base" bash scripts/base-image.sh
fi

echo "==> docker build -t $image (FROM $base)"
started=$SECONDS
version=$(sed -nE 's/^ *"version": *"([^"]+)".*/\1/p' package.json | head -1)
# The legacy builder (no buildx installed) prints a deprecation notice on every build; only errors matter.
if ! out=$(docker build -q --build-arg BASE="$base" \
    --label org.opencontainers.image.title=picoclaw \
    --label org.opencontainers.image.version="$version" \
    --label org.opencontainers.image.revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    -t "$image" . 2>&1); then
  echo "$out" | grep -v -e DEPRECATED -e 'legacy builder' -e 'buildx' -e '^ *$' >&2
  exit 1
fi
# The image this tag named before is now untagged: drop it (and any other untagged picoclaw image), or
# every rebuild would keep another 160 MB.
docker image prune -f --filter label=org.opencontainers.image.title=picoclaw >/dev/null 2>&1 || true
mb() { awk '{ printf "%.1f MB", $1 / 1e6 }'; }
echo "==> Built $image in $((SECONDS - started)) s: image $(docker image inspect -f '{{.Size}}' "$image" | mb)," \
  "of which dist/picoclaw $(stat -c %s dist/picoclaw | mb)"
