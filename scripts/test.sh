#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Two workers (DISTILL_TEST_WORKERS; 0 = serial), one test file each at a time, longest files first
# (tests/conftest.py orders them): every Ray cluster a test starts is its own, on 127.0.0.1.
exec .venv/bin/python -m pytest -n "${DISTILL_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
