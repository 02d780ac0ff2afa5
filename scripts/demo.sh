#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), then runs the local demo release:
# `dropship demo` with its files in ./demo (or the folder given as $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/dropship demo --workdir "${1:-demo}"
