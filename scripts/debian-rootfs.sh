#!/bin/sh
# Print the path of a cached Debian 12 minbase root filesystem tarball with python3 and
# python3-venv, made from Debian packages with mmdebstrap (installed from apt when
# missing) the first time: scripts/debian-rootfs.sh
#
# Used by scripts/build-image.sh (docker import) and the package test
# (tests/packaging: a fresh root file system to install the .deb into).
# Environment:
#   HASUP_IMAGE_CACHE   where the tarball is cached (default ~/.cache/hasup-image)
#   DEBIAN_MIRROR       default http://deb.debian.org/debian
set -eu
CACHE=${HASUP_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hasup-image}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TARBALL="$CACHE/debian12-python3.tar"
log() { echo "debian-rootfs: $*" >&2; }

if [ ! -s "$TARBALL" ]; then
  if ! command -v mmdebstrap >/dev/null 2>&1; then
    log "installing mmdebstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends mmdebstrap >/dev/null 2>&1 || {
      apt-get -o DPkg::Lock::Timeout=300 update -qq
      apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends mmdebstrap >/dev/null
    }
  fi
  mkdir -p "$CACHE"
  log "mmdebstrap: Debian 12 minbase + python3 -> $TARBALL"
  # minbase: essential packages + apt; no docs, man pages or locales.
  mmdebstrap --quiet --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$TARBALL.part" \
    "deb $MIRROR bookworm main" \
    "deb $MIRROR bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  mv "$TARBALL.part" "$TARBALL"
fi
echo "$TARBALL"
