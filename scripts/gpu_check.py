"""Every GPU path of distill, checked for real on a CUDA machine in under 10 minutes (scripts/gpu_check.sh).

Each check runs in its own process (its GPU memory is freed when it ends) under its own time limit;
the summary goes to docs/bench/gpu-<device>.json. The checks:
  embed_bf16          bf16 target-model embeddings through the Ray Data actor pool, one actor per GPU
  oom_backoff         a REAL CUDA out-of-memory (memory capped with set_per_process_memory_fraction):
                      the largest micro-batch search, then the halve-and-retry of one step
  load_8bit           bitsandbytes 8-bit loading + k-bit LoRA preparation + a few training steps
  bench_generate_vllm vLLM multi-LoRA generation vs HF at GPU lengths (scripts/bench_generate_vllm.py)
  bench_train         scripts/bench_train.py --device cuda (the training arms side by side)
  bench_dynamics      scripts/bench_dynamics.py on the quick-gpu job: the probe stage vs one quick-gpu
                      trial (issue 10's goal: the default probe costs no more than one trial), and the
                      bf16 probe's ranking vs a float32 probe's
  quick_gpu           the quick-gpu job with 2 methods, 1 seed, evaluation by vLLM

    python scripts/gpu_check.py                 # all checks (what gpu_check.sh runs)
    python scripts/gpu_check.py --check NAME    # one check, in this process
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMITS_S = {
    "embed_bf16": 80,
    "oom_backoff": 50,
    "load_8bit": 50,
    "bench_generate_vllm": 130,
    "bench_train": 60,
    "bench_dynamics": 90,
    "quick_gpu": 130,
}  # 590 s in all: the whole check stays under 10 minutes
OOM_MEMORY_FRACTION = 0.05  # of the card: small enough that a 64-sequence micro-batch of 2k tokens cannot fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", choices=sorted(LIMITS_S), help="run one check in this process")
    args = parser.parse_args()
    if args.check:
        print(json.dumps(CHECKS[args.check]()))
        return
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False): nothing was run")
    device = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
    results, start = [], time.perf_counter()
    for name, limit in LIMITS_S.items():
        results.append(run_check(name, limit))
        print(f"gpu_check: {name}: {results[-1]['status']} in {results[-1]['seconds']:.0f}s", flush=True)
    summary = {
        "device": torch.cuda.get_device_name(0),
        "gpus": torch.cuda.device_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "total_seconds": time.perf_counter() - start,
        "passed": all(r["status"] in ("passed", "skipped") for r in results),
        "checks": results,
    }
    path = ROOT / "docs" / "bench" / f"gpu-{device}.json"
    path.write_text(json.dumps(summary, indent=2))
    print(f"gpu_check: wrote {path}; {'all passed' if summary['passed'] else 'FAILURES, see the file'}")
    sys.exit(0 if summary["passed"] else 1)


def run_check(name: str, limit: int) -> dict:
    """One check in a child process; its last stdout line is the check's JSON result."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--check", name], capture_output=True, text=True, timeout=limit, cwd=ROOT
        )
    except subprocess.TimeoutExpired as exc:
        return {
            "name": name,
            "status": "failed",
            "seconds": time.perf_counter() - start,
            "detail": f"over its {limit}s limit",
            "log_tail": str(exc.stdout or "")[-2000:],
        }
    lines = proc.stdout.strip().splitlines()
    ok = proc.returncode == 0 and lines
    detail = json.loads(lines[-1]) if ok else {}
    return {
        "name": name,
        "status": detail.pop("status", "passed") if ok else "failed",
        "seconds": time.perf_counter() - start,
        "detail": detail,
        "log_tail": "" if ok else (proc.stdout + proc.stderr)[-3000:],
    }


def embed_bf16() -> dict:
    """The embed stage as a run does it (Ray Data actor pool), in bf16; one actor per GPU."""
    import ray

    from distill.config.load import make_config
    from distill.config.sections import FeatureSettings
    from distill.data.load import load_splits
    from distill.model.load import resolve_model
    from distill.runtime.features import embed_pool
    from distill.runtime.session import embed_plan, ray_session

    cfg = make_config("quick-gpu")
    splits = load_splits(cfg.data)
    with tempfile.TemporaryDirectory() as out, ray_session(cfg.resources):
        actors, _, gpus = embed_plan(ray.cluster_resources())
        start = time.perf_counter()
        features, _ = embed_pool(
            cfg.name,
            FeatureSettings.of(cfg),
            cfg.resources.max_failures,
            splits,
            resolve_model(cfg.model.name),
            Path(out),
        )
        seconds = time.perf_counter() - start
        cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
    assert actors == cluster_gpus and gpus == 1, (actors, cluster_gpus, gpus)
    assert features.embeddings.shape[0] == len(splits.train)
    return {"rows": len(splits.train), "actors": actors, "seconds": seconds, "rows_per_s": len(splits.train) / seconds}


def oom_backoff() -> dict:
    """Cap this process's share of the card, then let the trainer meet a genuine OutOfMemoryError."""
    import torch

    from distill.config.load import make_config
    from distill.data.formats import user_turn
    from distill.data.load import load_splits
    from distill.model.load import load_model, load_tokenizer, resolve_model
    from distill.model.prompt import PromptFormat
    from distill.model.train import _step_with_backoff, add_lora, encode_examples, largest_micro_batch

    torch.cuda.set_per_process_memory_fraction(OOM_MEMORY_FRACTION)
    cfg = make_config("quick-gpu")
    path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(path)
    splits = load_splits(cfg.data)
    fmt = PromptFormat(tokenizer, cfg.prompt, splits.format, 2048, 256)
    pool = splits.train
    long_prompts = [user_turn(" ".join([t] * 8)) for t in pool["prompt"][:64]]  # 8× each prompt: about 2k tokens
    data = encode_examples(fmt, long_prompts, pool["response"][:64].tolist())
    model = add_lora(load_model(path, cfg.model, "cuda"), cfg.train)
    fits = largest_micro_batch(model, data, len(data), tokenizer.pad_token_id, "cuda")
    loss, micro = _step_with_backoff(model, data, len(data), tokenizer.pad_token_id, "cuda")
    assert fits < len(data) and micro < len(data), "the memory cap was too loose to provoke an OOM"
    assert micro <= fits * 2 and loss == loss  # backed off to about what the search found; the loss is a number
    return {
        "memory_fraction": OOM_MEMORY_FRACTION,
        "batch": len(data),
        "largest_micro_batch": fits,
        "micro_after_backoff": micro,
        "loss": loss,
    }


def load_8bit() -> dict:
    """8-bit base weights (bitsandbytes) + LoRA: a few real optimizer steps."""
    import bitsandbytes as bnb

    from distill.config.load import make_config
    from distill.data.load import load_splits
    from distill.model.load import load_model, load_tokenizer, resolve_model
    from distill.model.prompt import PromptFormat
    from distill.model.train import add_lora, finetune

    cfg = make_config(
        "quick-gpu",
        {
            "model.load_in_8bit": True,
            "model.dtype": "float16",
            "train.max_steps": 3,
            "train.auto_batch_size": False,
            "train.batch_size": 4,
        },
    )
    path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(path)
    splits = load_splits(cfg.data)
    fmt = PromptFormat(tokenizer, cfg.prompt, splits.format, 512, 128)
    model = add_lora(load_model(path, cfg.model, "cuda"), cfg.train, quantized=True)
    n_8bit = sum(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
    pool = splits.train.iloc[:12]
    stats = finetune(model, tokenizer, fmt, pool["turns"].tolist(), pool["response"].tolist(), cfg.train, 0, "cuda")
    assert n_8bit > 0 and stats.steps == 3 and stats.final_loss == stats.final_loss
    return {"linear8bit_modules": n_8bit, "steps": stats.steps, "final_loss": stats.final_loss}


def bench_generate_vllm() -> dict:
    return _script(
        [
            "scripts/bench_generate_vllm.py",
            "--adapters",
            "4",
            "--max-source-tokens",
            "1536",
            "--max-new-tokens",
            "256",
            "--batch-size",
            "16",
            "--max-num-seqs",
            "128",
        ],
        "generate_vllm-cuda.json",
    )


def bench_train() -> dict:
    """perf-train's training benchmark on the GPU (its arms side by side), into its own GPU file."""
    return _script(
        ["scripts/bench_train.py", "--device", "cuda", "--quick", "--json", "docs/bench/train-cuda.json"],
        "train-cuda.json",
    )


def bench_dynamics() -> dict:
    """The bf16 probe, its float32 twin, the gradient features and one quick-gpu trial, each in its own process."""
    return _script(
        [
            "scripts/bench_dynamics.py",
            "--job",
            "quick-gpu",
            "--threads",
            "2",
            "--stages",
            "embed,probe,probe_fp32,grads,trial",
            "--json",
            "docs/bench/dynamics-cuda.json",
        ],
        "dynamics-cuda.json",
    )


def quick_gpu() -> dict:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "distill",
                "quick",
                "--job",
                "quick-gpu",
                "--methods",
                "random,clustering",
                "--seeds",
                "1",
                "--output-dir",
                out,
                "--set",
                "eval.engine=vllm",
            ],
            check=True,
            cwd=ROOT,
        )
        rows = json.loads((Path(out) / "comparison" / "results.json").read_text())["rows"]
        engines = {json.loads(p.read_text())["eval_engine"] for p in Path(out).glob("trials/*/metrics.json")}
    assert engines == {"vllm"}, engines
    return {"methods": {r["method"]: r["rougeL"] for r in rows}, "eval_engines": sorted(engines)}


def _script(argv: list[str], result_file: str) -> dict:
    proc = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    if proc.returncode:
        raise RuntimeError(f"{argv[0]} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads((ROOT / "docs" / "bench" / result_file).read_text())


CHECKS = {
    "embed_bf16": embed_bf16,
    "oom_backoff": oom_backoff,
    "load_8bit": load_8bit,
    "bench_generate_vllm": bench_generate_vllm,
    "bench_train": bench_train,
    "bench_dynamics": bench_dynamics,
    "quick_gpu": quick_gpu,
}

if __name__ == "__main__":
    main()
