#!/usr/bin/env bash
# Set up everything the full test suite needs and run it.
#
# On Debian 12 as root this installs the system packages the real-component tests use
# (docker.io, systemd, dbus, keepalived, iproute2, ...), creates .venv with hasup and
# its test dependencies, and runs pytest. The tests start their own private dockerd,
# systemd instance and network namespaces, and tear them down.
# Extra arguments go to pytest (e.g. scripts/test.sh -k systemd -x).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(python3-venv binutils docker.io busybox-static mmdebstrap docker-compose systemd dbus util-linux bsdutils iproute2 iptables keepalived curl psmisc procps mosquitto chromium)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        # keepalived is only a benchmark reference: never let the package's own unit run.
        systemctl disable --now keepalived >/dev/null 2>&1 || true
        pkill -x keepalived 2>/dev/null || true
        # mosquitto is started by the warm-standby tests on a namespace address only.
        systemctl disable --now mosquitto >/dev/null 2>&1 || true
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
exec .venv/bin/python -m pytest "$@"
