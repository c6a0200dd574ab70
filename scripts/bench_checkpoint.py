#!/usr/bin/env python
"""What checkpointing costs a trial of the quick job: real SmolLM2-135M + LoRA, quick-job settings, CPU.

    .venv/bin/python scripts/bench_checkpoint.py --json docs/bench/checkpoint.json

In ONE process, side by side on the same subset and seed: `--steps` optimizer steps without checkpoints,
then the same steps with a checkpoint after every one (capture + torch.save to disk, as the trainable writes
it before handing the folder to Tune), then one load. Reported: seconds per step, seconds per checkpoint,
its size, and the overhead a whole quick-job trial pays with the default cadence (resources.checkpoint_minutes:
a checkpoint every 5 minutes plus one after the last step) and with a checkpoint after every step. A trial's
training time is its step count (10% of the pool, 2 epochs, batch 4) times the measured step time; its
evaluation is left out, so the overhead shown is an upper bound. One torch thread: a trial holds one CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--steps", type=int, default=4)
    args.add_argument("--json", default="docs/bench/checkpoint.json")
    opts = args.parse_args()

    import torch

    from distill.config.load import make_config
    from distill.data.load import load_splits
    from distill.model import checkpoint
    from distill.model.load import load_model, load_tokenizer, resolve_model
    from distill.model.prompt import PromptFormat
    from distill.model.train import add_lora, finetune, seed_everything
    from distill.runtime.preflight import budget

    torch.set_num_threads(1)
    cfg = make_config("quick")
    splits = load_splits(cfg.data)
    k = budget(cfg.select, len(splits.train))
    subset = splits.train.sample(k, random_state=0)
    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(model_path)
    fmt = PromptFormat(tokenizer, cfg.prompt, splits.format, cfg.model.max_source_tokens, cfg.model.max_target_tokens)
    trial_steps = math.ceil(k * cfg.train.epochs / min(cfg.train.batch_size * cfg.train.grad_accum, k))
    short = type(cfg.train)(**{**cfg.train.__dict__, "max_steps": opts.steps})

    def run(hook):
        seed_everything(0)
        model = add_lora(load_model(model_path, cfg.model, "cpu"), short)
        stats = finetune(
            model, tokenizer, fmt, subset["turns"].tolist(), subset["response"].tolist(), short, 0, "cpu", on_step=hook
        )
        return stats.seconds

    with tempfile.TemporaryDirectory() as tmp:
        saves = []

        def save_every_step(step, steps, loss, snapshot):
            start = time.perf_counter()
            checkpoint.save(Path(tmp) / f"step{step}", snapshot(), "bench", "key")
            saves.append(time.perf_counter() - start)

        plain = run(None)
        with_ckpt = run(save_every_step)
        size_mb = (Path(tmp) / f"step{opts.steps}" / checkpoint.STATE_FILE).stat().st_size / 2**20
        start = time.perf_counter()
        checkpoint.load(Path(tmp) / f"step{opts.steps}")
        load_s = time.perf_counter() - start

    step_s = plain / opts.steps
    save_s = sum(saves) / len(saves)
    trial_train_s = trial_steps * step_s
    default_ckpts = 1 + int(trial_train_s // (cfg.resources.checkpoint_minutes * 60))
    result = {
        "model": cfg.model.name,
        "device": "cpu",
        "torch_threads": 1,
        "pool": len(splits.train),
        "k": k,
        "measured_steps": opts.steps,
        "step_s": step_s,
        "save_s": save_s,
        "save_s_max": max(saves),
        "load_s": load_s,
        "checkpoint_mb": size_mb,
        "train_s_without": plain,
        "train_s_with_every_step": with_ckpt,
        "ratio_every_step": with_ckpt / plain,
        "quick_trial_steps": trial_steps,
        "quick_trial_train_s": trial_train_s,
        "default_checkpoints_per_trial": default_ckpts,
        "overhead_default_pct": 100 * default_ckpts * save_s / trial_train_s,
        "overhead_every_step_pct": 100 * save_s / step_s,
    }
    print(f"{'':34s}{'value':>12s}")
    for key in (
        "step_s",
        "save_s",
        "save_s_max",
        "load_s",
        "checkpoint_mb",
        "train_s_without",
        "train_s_with_every_step",
        "ratio_every_step",
        "quick_trial_steps",
        "quick_trial_train_s",
        "default_checkpoints_per_trial",
        "overhead_default_pct",
        "overhead_every_step_pct",
    ):
        print(f"{key:34s}{result[key]:12.3f}")
    Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
