#!/usr/bin/env bash
# Install hasup into .venv and run the built-in two-node demo on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/python -m hasup demo "$@"
