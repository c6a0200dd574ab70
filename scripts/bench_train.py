#!/usr/bin/env python
"""distill's trial training (distill/model/train.py finetune) vs plain transformers.Trainer + peft.

    .venv/bin/python scripts/bench_train.py --steps 2 --threads 2

Same model (the real SmolLM2-135M), same subset (the quick job's first 8 pool bills), same LoRA
config, sequence lengths (256 prompt / 96 response tokens), effective batch (4) and optimizer steps.
Each arm runs in its own subprocess (`--repeats` times, interleaved with the other arms; the
fastest run is reported, all are in the JSON), so its peak memory is its own: `peak_delta_mb` is the peak
resident memory during training above the resident memory right before it (model loaded; CPU,
/proc/self/clear_refs), or torch.cuda.max_memory_allocated on a GPU. tokens/s counts the real
(unpadded) tokens fed to the model. Arms:

- trainer          Trainer, micro-batch 4: the LM head over every position (HF's loss)
- trainer-micro1   Trainer, micro-batch 1 × 4 accumulation steps (same effective batch)
- distill          finetune, micro-batch 4: LM head + cross-entropy on response positions only
- distill-micro1   finetune, length-grouped micro-batches of 1 × 4 (token-weighted: same gradient)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

ARMS = ("trainer", "trainer-micro1", "distill", "distill-micro1")


def run_arm(name: str, steps: int, threads: int, device: str, model: str | None) -> dict:
    """Train one arm in this process; returns tokens/s and the peak memory of training."""
    import torch

    from distill.model.load import load_model
    from distill.model.train import add_lora, encode_examples, seed_everything

    torch.set_num_threads(threads)
    setup = benchlib.quick_setup(model)
    cfg = setup.cfg
    micro = 1 if name.endswith("micro1") else cfg.train.batch_size
    train_cfg = cfg.train
    train_cfg.max_steps, train_cfg.grad_accum, train_cfg.batch_size = steps, cfg.train.batch_size // micro, micro
    subset = setup.subset()
    seed_everything(0)
    model = add_lora(load_model(setup.model_path, cfg.model, device), train_cfg)
    examples = encode_examples(setup.fmt, subset["turns"].tolist(), subset["response"].tolist())
    runner = _trainer if name.startswith("trainer") else _distill
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = benchlib.reset_peak_rss()
    tokens, seconds = runner(model, setup, subset, examples, train_cfg, device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else benchlib.peak_rss_mb()
    return {
        "arm": name,
        "micro_batch": micro,
        "grad_accum": train_cfg.grad_accum,
        "steps": steps,
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_delta_mb": round(peak - before, 1),
    }


def _distill(model, setup, subset, examples, train_cfg, device) -> tuple[int, float]:
    stats = benchlib.finetune_subset(model, setup, subset, train_cfg, device)
    return stats.train_tokens, stats.seconds


def _trainer(model, setup, subset, examples, train_cfg, device) -> tuple[int, float]:
    """Plain Trainer on the same encoded examples, padded by the same collate function."""
    from transformers import Trainer, TrainingArguments

    from distill.model.train import collate

    fed = [0]  # counted at the model's forward: accelerate's data loader fetches one batch ahead

    def count(module, args, kwargs):
        fed[0] += int(kwargs["attention_mask"].sum())

    model.register_forward_pre_hook(count, with_kwargs=True)

    def collator(rows):
        return collate([(r["input_ids"], r["labels"]) for r in rows], setup.tokenizer.pad_token_id, "cpu")

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=train_cfg.batch_size,
            gradient_accumulation_steps=train_cfg.grad_accum,
            max_steps=train_cfg.max_steps,
            learning_rate=train_cfg.learning_rate,
            weight_decay=train_cfg.weight_decay,
            max_grad_norm=1.0,
            warmup_steps=int(train_cfg.warmup_ratio * train_cfg.max_steps),
            lr_scheduler_type="linear",
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            seed=0,
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=[{"input_ids": ids, "labels": labels} for ids, labels in examples],
        )
        start = time.perf_counter()
        trainer.train()
        return fed[0], time.perf_counter() - start


def flop_ceiling(model: str | None, steps: int) -> dict:
    """The most any trainer could gain over `Trainer` by computing less, at the same kernel speed.

    Counting the linear layers' FLOPs of a step (forward 2·params·tokens, backward 2·params·tokens for
    the activation gradients only: the base weights are frozen; LoRA's are negligible): `Trainer` runs
    the LM head on every position, distill on the labelled (response) ones. Attention is the same on
    both sides and left out, which makes this an upper bound. Counted on steps × batch examples of
    the subset (at the default 2 steps × 4, the whole 8-bill subset once, as each arm trains on it)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from distill.model.train import IGNORE, encode_examples

    setup = benchlib.quick_setup(model)
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(setup.model_path))
    head = lm.get_output_embeddings().weight.numel()
    body = sum(p.numel() for p in lm.parameters()) - lm.get_input_embeddings().weight.numel()
    if lm.get_output_embeddings().weight is not lm.get_input_embeddings().weight:
        body -= head  # an untied head is counted as the head, not the body
    subset = setup.subset()
    examples = encode_examples(setup.fmt, subset["turns"].tolist(), subset["response"].tolist())
    used = [examples[i % len(examples)] for i in range(steps * setup.cfg.train.batch_size)]
    tokens = sum(len(ids) for ids, _ in used)
    labelled = sum(sum(label != IGNORE for label in labels[1:]) for _, labels in used)
    ceiling = (body + head) * tokens / (body * tokens + head * labelled)
    return {
        "tokens": tokens,
        "labelled": labelled,
        "body_params": body,
        "head_params": head,
        "ceiling_speedup": round(ceiling, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per arm (the quick job trains 4)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per arm")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--model", help="another model than the quick job's (e.g. a tiny one for a smoke test)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per arm, interleaved; the fastest is reported")
    ap.add_argument("--quick", action="store_true", help="1 step per arm")
    ap.add_argument("--json", type=Path, default=benchlib.ROOT / "docs" / "bench" / "train.json")
    ap.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm in this process, print its JSON
    args = ap.parse_args(argv)
    steps = 1 if args.quick else args.steps
    if args.arm:
        print(json.dumps(run_arm(args.arm, steps, args.threads, args.device, args.model)))
        return 0
    runs: dict[str, list[dict]] = {arm: [] for arm in args.arms.split(",")}
    for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every arm alike
        for arm, done in runs.items():
            cmd = [
                sys.executable,
                __file__,
                "--arm",
                arm,
                "--steps",
                str(steps),
                "--threads",
                str(args.threads),
                "--device",
                args.device,
                *(["--model", args.model] if args.model else []),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            done.append(json.loads(out.strip().splitlines()[-1]))
            print(f"  {arm}: {done[-1]['tokens_per_s']} tokens/s, peak +{done[-1]['peak_delta_mb']} MB", flush=True)
    rows = [
        {
            **max(done, key=lambda r: r["tokens_per_s"]),
            "runs": len(done),
            "tokens_per_s_all": [r["tokens_per_s"] for r in done],
            "peak_delta_mb_all": [r["peak_delta_mb"] for r in done],
        }
        for done in runs.values()
    ]
    base = next((r for r in rows if r["arm"] == "trainer"), rows[0])
    for row in rows:
        row["speedup_vs_trainer"] = round(row["tokens_per_s"] / base["tokens_per_s"], 2)
        row["memory_vs_trainer"] = round(row["peak_delta_mb"] / base["peak_delta_mb"], 2)
    benchlib.print_table(
        rows,
        [
            "arm",
            "micro_batch",
            "grad_accum",
            "steps",
            "tokens",
            "seconds",
            "tokens_per_s",
            "peak_delta_mb",
            "speedup_vs_trainer",
            "memory_vs_trainer",
        ],
    )
    ceiling = flop_ceiling(args.model, steps)
    print(
        f"FLOP ceiling: computing the LM head on {ceiling['labelled']} of {ceiling['tokens']} positions can make a "
        f"step at most {ceiling['ceiling_speedup']}× faster than Trainer's at the same kernel speed"
    )
    benchlib.write_json(
        args.json,
        {
            "benchmark": "train",
            "machine": benchlib.machine(),
            "threads": args.threads,
            "device": args.device,
            "goal": "≥1.3× tokens/s and ≤0.5× peak memory of trainer",
            "rows": rows,
            "flop_ceiling": ceiling,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
