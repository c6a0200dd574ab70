#!/usr/bin/env bash
# One command that exercises every GPU path of distill on a CUDA machine, in under 10 minutes:
# bf16 embedding (one Ray Data actor per GPU), auto micro-batch + back-off on a REAL out-of-memory,
# 8-bit loading, the train and generate (vLLM multi-LoRA vs HF) benchmarks, and a 2-method quick-gpu
# job evaluated by vLLM. It writes docs/bench/gpu-<device>.json (commit it).
#   scripts/gpu_check.sh
# It refuses to run without a GPU: its figures only exist once it has really run on one.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi fails): nothing was run" >&2
  exit 2
fi
nvidia-smi -L
DISTILL_EXTRAS="${DISTILL_EXTRAS:-dev,gpu}" scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD"
exec timeout 600 .venv/bin/python scripts/gpu_check.py
