#!/bin/sh
# Build the hasup Debian package: scripts/build-deb.sh [OUTDIR]   (default: dist/)
#
# Debian 12's own python3 (3.11), with python3-venv: hasup and its extras go into a
# private virtual environment under /opt/hasup (Debian's python3-anyio, -httpx... are
# older than hasup needs), /usr/bin/hasup links to it. The package also carries the
# hardened, disabled hasup.service, a commented /etc/hasup/hasup.toml (a conffile) and
# the docs. Built with dpkg-deb from a staged tree (no debhelper needed); dependencies
# come from PyPI (pip), or from $PIP_FIND_LINKS with PIP_NO_INDEX=1 offline.
# Prints the path of the .deb on stdout.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)
PY=/usr/bin/python3
# whoever distributes the package: set DEB_MAINTAINER="Name <address>"
MAINTAINER=${DEB_MAINTAINER:-hasup maintainers <hasup@localhost>}
log() { echo "build-deb: $*" >&2; }

"$PY" -c 'import sys, venv, ensurepip; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || {
  log "needs Debian 12's /usr/bin/python3 (3.11) with python3-venv: apt-get install python3-venv"; exit 2; }
command -v dpkg-deb >/dev/null || { log "needs dpkg-deb"; exit 2; }

VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/hasup/_version.py")
ARCH=$(dpkg --print-architecture)
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/hasup-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT INT TERM
PKG="$STAGE/pkg"
VENV="$PKG/opt/hasup"

log "venv + pip install hasup[systemd,docker] $VERSION"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-compile --no-warn-script-location \
  "$ROOT[systemd,docker]"
"$VENV/bin/pip" uninstall --quiet --yes pip setuptools >/dev/null 2>&1   # not needed at run time
# only the hasup command: the dependencies' own scripts (httpx, idna...) are not shipped
find "$VENV/bin" -type f ! -name hasup -delete
# as dh_strip would: no debug symbols in the wheels' extension modules
find "$VENV" -name '*.so' -exec strip --strip-unneeded {} +
# relocate the staged environment to /opt/hasup: script shebangs, pyvenv.cfg
for f in "$VENV"/bin/*; do
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  sed -i "1s|^#!$VENV/bin/|#!/opt/hasup/bin/|" "$f"
done
rm -f "$VENV"/bin/activate* "$VENV"/bin/Activate.ps1  # they hold the staging path; the package needs none
sed -i "s|$VENV|/opt/hasup|g" "$VENV/pyvenv.cfg"
find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$VENV" -name '*.dist-info' -type d -exec sh -c 'rm -f "$1/RECORD" "$1/direct_url.json"' _ {} \;
if grep -rqs "$STAGE" "$VENV"; then
  log "staging path left in: $(grep -rls "$STAGE" "$VENV" | head -3)"; exit 1
fi

install -d "$PKG/usr/bin" "$PKG/lib/systemd/system" "$PKG/etc/hasup" "$PKG/usr/share/doc/hasup" \
  "$PKG/usr/share/doc/hasup/examples" "$PKG/DEBIAN"
ln -s /opt/hasup/bin/hasup "$PKG/usr/bin/hasup"
install -m 0644 "$ROOT/packaging/deb/hasup.service" "$PKG/lib/systemd/system/hasup.service"
install -m 0644 "$ROOT/packaging/deb/hasup-witness.service" "$PKG/lib/systemd/system/hasup-witness.service"
install -m 0644 "$ROOT/packaging/deb/hasup.toml" "$PKG/etc/hasup/hasup.toml"
install -m 0644 "$ROOT/README.md" "$ROOT/CHANGELOG.md" "$PKG/usr/share/doc/hasup/"
cp -r "$ROOT/docs/." "$PKG/usr/share/doc/hasup/docs"
find "$PKG/usr/share/doc/hasup/docs" -name '*.py' -delete
cp -r "$ROOT/examples/neuronex-systemd" "$ROOT/examples/neuronex-docker" "$PKG/usr/share/doc/hasup/examples/"
mv "$PKG/usr/share/doc/hasup/CHANGELOG.md" "$PKG/usr/share/doc/hasup/changelog"
gzip -9n "$PKG/usr/share/doc/hasup/changelog"
{
  echo "hasup ($VERSION-1) unstable; urgency=medium"
  echo
  echo "  * Built by scripts/build-deb.sh (upstream changes: changelog.gz)."
  echo
  echo " -- $MAINTAINER  $(date -R ${SOURCE_DATE_EPOCH:+-d @$SOURCE_DATE_EPOCH})"
} | gzip -9n > "$PKG/usr/share/doc/hasup/changelog.Debian.gz"
install -d "$PKG/usr/share/lintian/overrides"
install -m 0644 "$ROOT/packaging/deb/lintian-overrides" "$PKG/usr/share/lintian/overrides/hasup"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: hasup"
  echo
  echo "Files: *"
  echo "License: MIT"
  sed 's/^$/./; s/^/ /' "$ROOT/LICENSE"
  echo
  echo "Files: opt/hasup/lib/*"
  echo "Comment: Python packages installed from PyPI; each carries its licence in its"
  echo " *.dist-info directory under /opt/hasup/lib/python3.11/site-packages."
  echo "License: various"
} > "$PKG/usr/share/doc/hasup/copyright"
install -m 0755 "$ROOT/packaging/deb/postinst" "$ROOT/packaging/deb/prerm" "$ROOT/packaging/deb/postrm" "$PKG/DEBIAN/"
echo /etc/hasup/hasup.toml > "$PKG/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
cat > "$PKG/DEBIAN/control" <<CONTROL
Package: hasup
Version: $VERSION-1
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $SIZE
Depends: python3.11, libc6 (>= 2.36)
Suggests: systemd
Section: admin
Priority: optional
Description: high-availability supervisor for a pair of machines
 hasup keeps exactly one copy of a service (a systemd unit, a container or a
 command) running on a pair or small group of machines: authenticated
 heartbeats elect one holder, the service moves in well under a second when
 that node or its service dies, and moves back without ever running two
 copies. Virtual IPs with gratuitous ARP, link tracking, probes, data sync and
 an importer for keepalived configurations are included.
CONTROL
(cd "$PKG" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z | xargs -0 md5sum | sed 's|  \./|  |') \
  > "$PKG/DEBIAN/md5sums"
DEB="$OUT/hasup_${VERSION}-1_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$PKG" "$DEB" >/dev/null
log "$(du -h "$DEB" | cut -f1) $DEB (installed $((SIZE / 1024)) MB)"
echo "$DEB"
