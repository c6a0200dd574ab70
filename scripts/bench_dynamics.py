#!/usr/bin/env python
"""Cost of the probe stage and of gradient features, side by side with the embedding pass and a quick trial.

    .venv/bin/python scripts/bench_dynamics.py --n 80 --json docs/bench/dynamics.json
    .venv/bin/python scripts/bench_dynamics.py --job quick-gpu --json docs/bench/dynamics-cuda.json  # on a GPU

The real SmolLM2-135M-Instruct, the first `--n` rows of the embedded BillSum pool, the job's lengths
(quick.yaml: 256 prompt / 96 response tokens) and the default `probe:` section. Every stage runs in
a fresh 'spawn' subprocess with the same torch thread count, so `peak_mb` (/proc VmHWM) is its own:
  embed       the existing feature pass (EmbedActor: hidden states + step-0 loss), the baseline
  probe       LoRA fine-tune on probe.fraction of the rows + the loss of every row at each checkpoint, in
              the job's model.dtype (step 0 comes from the embedding pass, as in the pipeline, when the
              embed stage ran first)
  probe_fp32  (opt-in: --stages ...,probe_fp32,...) the same probe with the model in float32, step 0
              included: on a GPU, where the job loads the model in bf16, the reference for how faithfully
              the bf16 probe ranks the pool (rank correlation of each dynamics score, top-10% overlap)
  grads       one backward pass per row at the probe's LoRA weights, sparse-projected to probe.grad_dim
  trial       one quick trial as the job runs it (on the quick job: fine-tune on 10% of the 80-bill pool
              = 8 bills for 2 epochs, generate + score the 10 held-out bills), whatever --n is
`compute_s` excludes loading the model; `s_per_1k` scales compute_s linearly to 1,000 pool rows
(every stage is linear in n at a fixed fraction, except the trial, which depends on the budget and the
held-out set, so it gets no per-1k figure). Ratios are to the embedding pass of the same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_mb() -> float:
    """Peak resident set of this process (VmHWM is reset by exec, so a spawned child's is its own)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _setup(threads: int, job: str, overrides: dict):
    import torch

    from distill.config.load import make_config
    from distill.data.load import load_splits
    from distill.model.load import resolve_model

    torch.set_num_threads(threads)
    cfg = make_config(job, overrides)
    splits = load_splits(cfg.data)
    return cfg, splits.train, splits.test, splits.format, resolve_model(cfg.model.name)


def _stage(name: str, n: int, threads: int, job: str, model: str, cache_dir: str, queue) -> None:
    """Run one stage; put {load_s, compute_s, peak_mb, ...} on the queue."""
    from distill.config.sections import FeatureSettings, TrialSettings
    from distill.features import probe
    from distill.model.load import device_name, load_model, load_tokenizer
    from distill.model.prompt import PromptFormat
    from distill.model.train import add_lora, seed_everything

    overrides = {"model.name": model, **({"model.dtype": "float32"} if name == "probe_fp32" else {})}
    cfg, full_pool, test, data_format, model_path = _setup(threads, job, overrides)
    pool = full_pool.iloc[:n]
    turns, responses = pool["turns"].tolist(), pool["response"].tolist()
    paths = probe.cache_paths(Path(cache_dir), model_path, "bench", FeatureSettings.of(cfg))
    start = time.perf_counter()
    extra = {}
    if name == "embed":
        from distill.features.embed import EmbedActor

        actor = EmbedActor(model_path, cfg.model, cfg.prompt, data_format, cfg.embed.pooling)
        load = time.perf_counter()
        order = np.argsort([-len(t) for t in turns], kind="stable")  # length-sorted batches, as the pipeline does
        losses = np.empty(n, dtype=np.float32)
        for a in range(0, n, cfg.embed.batch_size):
            rows = order[a : a + cfg.embed.batch_size]
            losses[rows] = actor(
                {
                    "row": rows,
                    "turns": np.array([turns[i] for i in rows]),
                    "response": np.array([responses[i] for i in rows]),
                }
            )["loss"]
        np.save(Path(cache_dir) / "step0.npy", losses)
    elif name == "trial":
        from distill.model.load import is_test_model
        from distill.store.records import Resolved
        from distill.trial.evaluate import resolve_scorer
        from distill.trial.run import TrialSpec, run_trial

        resolved = Resolved(
            model_path, "hf", resolve_scorer(cfg.eval, hub_reachable=False)[0], is_test_model(model_path)
        )
        k = max(1, round(cfg.select.fraction * len(full_pool)))  # the quick job's budget, whatever --n is
        load = time.perf_counter()  # the trial loads its own model: counted in compute_s
        record = run_trial(
            TrialSpec("bench", "random", 0, tuple(range(k)), 0.0),
            TrialSettings.of(cfg),
            full_pool,
            test,
            resolved,
            "bench",
            data_format,
        )
        extra = {
            "train_s": record.metrics.train_seconds,
            "eval_s": record.metrics.eval_seconds,
            "examples": k,
            "held_out": len(test),
        }
    else:
        device = device_name()
        tokenizer = load_tokenizer(model_path)
        fmt = PromptFormat(tokenizer, cfg.prompt, data_format, cfg.model.max_source_tokens, cfg.model.max_target_tokens)
        seed_everything(cfg.probe.seed)
        model = add_lora(load_model(model_path, cfg.model, device), cfg.train)
        load = time.perf_counter()
        if name.startswith("probe"):
            step0 = Path(cache_dir) / "step0.npy"  # as in the pipeline: step 0 comes from the embedding pass
            reuse = step0.exists() and name == "probe"  # ... in the same precision (probe_fp32 computes its own)
            result = probe.run_probe(
                model, tokenizer, fmt, turns, responses, cfg.train, cfg.probe, device, np.load(step0) if reuse else None
            )
            probe.store(paths, result)
            np.save(Path(cache_dir) / f"{name}.npy", result[probe.PROBE_LOSS])
            extra = {
                "dtype": str(model.dtype).removeprefix("torch."),
                "probe_examples": len(result["trained"]),
                "checkpoint_steps": result["checkpoint_steps"].tolist(),
                "loss_passes": len(result["checkpoint_steps"]) - reuse,
                "mean_loss_per_checkpoint": [round(float(x), 4) for x in result[probe.PROBE_LOSS].mean(axis=0)],
            }
        else:
            import torch
            from peft import set_peft_model_state_dict

            adapter = probe.load_cached(paths)["adapter"]
            set_peft_model_state_dict(model, {k: torch.from_numpy(v) for k, v in adapter.items()})
            load = time.perf_counter()
            grads = probe.gradient_features(model, tokenizer, fmt, turns, responses, cfg.probe, device)
            extra = {
                "grad_dim": grads.shape[1],
                "lora_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            }
    end = time.perf_counter()
    queue.put(
        {"load_s": round(load - start, 2), "compute_s": round(end - load, 2), "peak_mb": round(_peak_mb()), **extra}
    )


def run_stage(name: str, n: int, threads: int, job: str, model: str, cache_dir: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_stage, args=(name, n, threads, job, model, cache_dir, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode:
        raise RuntimeError(f"stage {name} exited with {proc.exitcode}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=80, help="pool rows to measure on (default: the embedded pool's 80)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per stage")
    parser.add_argument("--stages", default="embed,probe,grads,trial")
    parser.add_argument("--job", default="quick", help="the job whose lengths, probe and trial are measured")
    parser.add_argument("--model", default="embedded:smollm2-135m", help="a local folder to smoke-test the script")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    stages, load = {}, []
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in args.stages.split(","):
            stages[name] = run_stage(name, args.n, args.threads, args.job, args.model, cache_dir)
            load.append(round(os.getloadavg()[0], 2))
            print(f"{name}: {stages[name]}", flush=True)
            result = summarise(args, stages, load, Path(cache_dir))
            if args.json:  # after every stage: a long run cut short still leaves what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nn = {args.n} pool rows, {args.threads} torch threads, 1-minute load average after each stage {load}")
    print(f"{'stage':10s} {'load s':>7s} {'compute s':>10s} {'s / 1k rows':>12s} {'× embed':>8s} {'peak MB':>8s}")
    for name, row in stages.items():
        print(
            f"{name:10s} {row['load_s']:7.1f} {row['compute_s']:10.1f} {row.get('s_per_1k', '—'):>12} "
            f"{row.get('x_embed', '—'):>8} {row['peak_mb']:8d}"
        )
    for key in (
        "probe_over_trial",
        "probe_fp32_over_trial",
    ):  # issue 10's goal for the default probe: ≤ one quick trial
        if key in result:
            print(
                f"{key.replace('_over_trial', '')} (load + compute) / one quick trial (load + compute) = {result[key]} (goal ≤ 1)"
            )
    for score, row in result.get("fidelity_vs_fp32", {}).items():
        print(f"probe vs float32 probe, {score}: Spearman {row['spearman']}, top-10% overlap {row['top10_overlap']}")
    return 0


def summarise(args: argparse.Namespace, stages: dict, load: list[float], cache_dir: Path) -> dict:
    """Per-1k-row seconds and ratios to the embedding pass, with the run's settings."""
    from dataclasses import asdict

    from distill.config.load import make_config

    cfg = make_config(args.job, {"model.name": args.model})
    base = stages.get("embed", {}).get("compute_s")
    for name, row in stages.items():
        if name != "trial":
            row["s_per_1k"] = round(row["compute_s"] / args.n * 1000, 1)
        if base:
            row["x_embed"] = round(row["compute_s"] / base, 2)
    whole = {name: row["load_s"] + row["compute_s"] for name, row in stages.items()}
    versus = {
        f"{name}_over_trial": round(whole[name] / whole["trial"], 2)
        for name in ("probe", "probe_fp32")
        if name in whole and "trial" in whole
    }
    if {"probe", "probe_fp32"} <= set(stages):
        versus["fidelity_vs_fp32"] = fidelity(np.load(cache_dir / "probe.npy"), np.load(cache_dir / "probe_fp32.npy"))
    return {
        "job": args.job,
        "n": args.n,
        "threads": args.threads,
        "model": args.model,
        "device": _device(),
        "max_source_tokens": cfg.model.max_source_tokens,
        "max_target_tokens": cfg.model.max_target_tokens,
        "probe": asdict(cfg.probe),
        "cpus": os.cpu_count(),
        "load_avg_1m": load,
        "python": platform.python_version(),
        "stages": stages,
        **versus,
    }


def fidelity(default, reference) -> dict:
    """How the job's probe's dynamics scores rank the pool against the float32 probe's: Spearman
    correlation and the share of the float32 top 10% that the default's top 10% keeps."""
    from scipy.stats import spearmanr

    from distill.select.dynamics import cartography_map

    def scores(loss):
        return {
            "final_loss": loss[:, -1],
            "learnability": loss[:, 0] - loss[:, -1],
            "variability": cartography_map(loss)[1],
        }

    mine, ref, top = scores(default), scores(reference), max(1, round(0.1 * len(default)))
    out = {}
    for name in mine:
        overlap = len(set(np.argsort(-mine[name])[:top]) & set(np.argsort(-ref[name])[:top])) / top
        out[name] = {
            "spearman": round(float(spearmanr(mine[name], ref[name]).statistic), 4),
            "top10_overlap": round(overlap, 2),
        }
    return out


def _device() -> str:
    import torch

    return (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"cpu ({platform.processor() or platform.machine()})"
    )


if __name__ == "__main__":
    sys.exit(main())
