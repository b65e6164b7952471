#!/usr/bin/env bash
# Builds the local base image picoclaw-base:bookworm (Debian 12 minbase from debootstrap, trimmed)
# when it is missing, so images can be built with no registry at all. Prints the image's size.
#
#   bash scripts/base-image.sh            # PICOCLAW_BASE_IMAGE to name it otherwise
#   PICOCLAW_DEBIAN_MIRROR=http://mirror.example/debian bash scripts/base-image.sh
#
# Trimmed like debian:bookworm-slim and a little further: no apt lists or .deb cache, no docs (the
# copyright files stay), man/info pages or message translations; dpkg is told to skip those paths
# in later installs too. glibc's C.UTF-8 and gconv modules, tzdata, apt and dpkg stay.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${PICOCLAW_BASE_IMAGE:-picoclaw-base:bookworm}"
mirror="${PICOCLAW_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

bash scripts/docker-engine.sh

size() { docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%.1f MB", $1 / 1000000 }'; }

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "==> $image present ($(size))"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "base-image: $image is missing and debootstrap needs root" >&2; exit 5; }
command -v debootstrap >/dev/null 2>&1 || { echo "base-image: $image is missing and debootstrap is not installed (apt-get install debootstrap)" >&2; exit 6; }

root=$(mktemp -d /var/tmp/picoclaw-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
chmod 755 "$root"  # mktemp makes it 0700, and it becomes the image's /
echo "==> debootstrap --variant=minbase bookworm ($mirror); about 30 s"
started=$SECONDS
if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1; then
  echo "base-image: debootstrap failed: $(grep -E '^E:|^W:' "$root.log" | tail -1) (log: $root.log)" >&2
  exit 1
fi
rm -f "$root.log"

# Keep later `apt-get install`s in derived images trimmed the same way.
cat >"$root/etc/dpkg/dpkg.cfg.d/01-picoclaw-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
cat >"$root/etc/apt/apt.conf.d/01-picoclaw-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
EOF
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/usr/share/lintian/* \
  "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
  "$root"/var/log/* "$root"/tmp/* "$root"/root/.bash_history
# apt drops privileges to _apt for downloads into these: keep them, owned as Debian ships them.
mkdir -p "$root/var/lib/apt/lists/partial" "$root/var/cache/apt/archives/partial"
chroot "$root" chown _apt:root /var/lib/apt/lists/partial /var/cache/apt/archives/partial
chmod 700 "$root/var/lib/apt/lists/partial" "$root/var/cache/apt/archives/partial"
: >"$root/etc/machine-id"  # generated per container when needed, never baked in

tar --numeric-owner -C "$root" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  -c 'CMD ["bash"]' \
  -c "LABEL org.opencontainers.image.title=$image org.opencontainers.image.description=\"Debian bookworm minbase (debootstrap), trimmed\"" \
  - "$image" >/dev/null
echo "==> Built $image in $((SECONDS - started)) s ($(size))"
