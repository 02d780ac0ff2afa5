#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), then runs the linter, the format check,
# the type check and the
# whole test suite, end-to-end tests included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PREFECT_SERVER_ANALYTICS_ENABLED=false
unset PREFECT_API_URL
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
.venv/bin/python -m mypy
.venv/bin/python -m pytest "$@"
