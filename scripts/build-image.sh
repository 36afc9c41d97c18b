#!/bin/sh
# Build the hasup container image without any image registry.
#
# Usage: scripts/build-image.sh [TAG]          (default TAG: hasup:local; root, Debian host)
#
# 1. hasup-base:local: a minimal Debian 12 root file system with python3 and
#    python3-venv, made from Debian packages with mmdebstrap (scripts/debian-rootfs.sh)
#    and loaded with `docker import`. Skipped when the image already exists;
#    the tarball is cached in $HASUP_IMAGE_CACHE (default ~/.cache/hasup-image), so a
#    rebuild after `docker rmi` or on a fresh dockerd does not download Debian again.
# 2. wheels: `pip wheel` of hasup[docker] and all its dependencies on the host, into a
#    staged build context. The image build installs them with `pip --no-index`: RUN
#    steps need no network (a dockerd started with --iptables=false/--ip-masq=false, as
#    in the test fixture, gives build containers no route to PyPI).
# 3. `docker build -f Dockerfile` on the staged context (the repository's Dockerfile,
#    whose default path, `docker build .` FROM python:3.11-slim, needs a registry).
#
# Talks to the dockerd in DOCKER_HOST (or the default socket). Environment:
#   HASUP_IMAGE_CACHE   where the rootfs tarball is cached
#   HASUP_BASE_IMAGE    base image tag (default hasup-base:local)
#   PYTHON              the Python that runs `pip wheel` (default: .venv/bin/python, python3)
#   DEBIAN_MIRROR       default http://deb.debian.org/debian
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${1:-hasup:local}
BASE=${HASUP_BASE_IMAGE:-hasup-base:local}
DOCKER=/usr/bin/docker; [ -x "$DOCKER" ] || DOCKER=docker
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3; [ -x "$ROOT/.venv/bin/python" ] && PYTHON="$ROOT/.venv/bin/python"
fi
log() { echo "build-image: $*" >&2; }

# --- 1. the base image --------------------------------------------------------------
if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  TARBALL=$("$ROOT/scripts/debian-rootfs.sh")
  log "docker import -> $BASE"
  "$DOCKER" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    "$TARBALL" "$BASE" >/dev/null
fi

# --- 2. staged context with wheels --------------------------------------------------
CTX=$(mktemp -d "${TMPDIR:-/tmp}/hasup-image.XXXXXX")
trap 'rm -rf "$CTX"' EXIT INT TERM
mkdir "$CTX/wheels"
log "pip wheel hasup[docker] -> staged context"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$CTX/wheels" "$ROOT[docker]"

# --- 3. the image -------------------------------------------------------------------
log "docker build -> $TAG"
"$DOCKER" build --quiet --build-arg "BASE=$BASE" --build-arg "SPEC=hasup[docker]" \
  --build-arg "PIP_ARGS=--no-index --find-links /tmp/src/wheels" -t "$TAG" -f "$ROOT/Dockerfile" "$CTX" >/dev/null
"$DOCKER" run --rm "$TAG" --version
