#!/usr/bin/env python
"""Trials in fp32 vs bf16 autocast on a CPU, side by side in one run: speed, and the same results.

    .venv/bin/python scripts/bench_bf16.py --threads 2 --run results      # results: a finished quick job

Every part runs its fp32 arm and its bf16 arm (model.dtype bfloat16-autocast: bf16 matmuls over fp32
weights, LoRA weights and AdamW state in fp32) in this process, on this machine:

- matmul   GFLOP/s of SmolLM2-135M's MLP product ([tokens × 576] @ [576 × 1536]) in fp32 and in bf16:
           the ceiling of what bf16 can win here (native AVX512-BF16/AMX, or torch's emulation without).
- scoring  what the scoring pass spends besides the model, counted without one: the share of padding in
           the held-out-loss batches (length-sorted, as embed.response_losses runs them, against the
           original order) and in the generation batches, and the seconds of encoding the prompts.
- step     one optimizer step of a quick-job trial (its effective batch of pool bills) and its held-out-loss
           pass (`--heldout` bills), on the real SmolLM2-135M with the quick job's LoRA; `--set
           model.max_source_tokens=16` cuts the bills shorter (a CPU that emulates bf16 takes hours over 256).
- trials   (`--run DIR`, a finished quick job: its selected/<method>.jsonl) run_trial on each method's subset
           in both precisions: trial seconds, per-method ROUGE-L and held-out loss, per-example held-out
           loss, and each method's verdict against random (report.stats.compare: sign of the difference and
           whether its 95% interval excludes 0). `--trials N` instead trains N disjoint blocks of k pool
           rows, block-0 standing in for random (a smoke test).

Exit 1 when the bf16 arm is out of the stated tolerances or a verdict differs; the speed is reported, not
judged. model.load.resolve_precision keeps `auto` in fp32 on every CPU because this run failed on a CPU with
native bf16 (docs/performance.md#bf16-on-cpus): a bf16 mode becomes a default only once it passes here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import benchlib

ARMS = ("float32", "bfloat16-autocast")
LOSS_TOL = 0.03  # nats: largest |bf16 − fp32| held-out loss of one example (bf16 keeps ~3 significant digits)
ROUGE_L_TOL = 0.02  # largest |bf16 − fp32| of a method's mean ROUGE-L (a greedy token flip changes the rest)
MLP_SHAPE = (512, 576, 1536)  # tokens × hidden × MLP width of SmolLM2-135M


def matmul_gflops(dtype, seconds: float) -> float:
    """GFLOP/s of repeated [t × h] @ [h × w] products in `dtype` for about `seconds`."""
    import torch

    t, h, w = MLP_SHAPE
    a, b = torch.randn(t, h).to(dtype), torch.randn(h, w).to(dtype)
    a @ b
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * t * h * w * n / (time.perf_counter() - start) / 1e9


def padding_share(lengths: list[int], batch: int) -> float:
    """Padded positions / all positions when `lengths` are batched in this order, `batch` at a time."""
    padded = sum(max(lengths[i : i + batch]) * len(lengths[i : i + batch]) for i in range(0, len(lengths), batch))
    return 1 - sum(lengths) / padded


def scoring_costs(setup, heldout_batch: int) -> dict:
    """Padding of the held-out-loss and generation batches, and the seconds of encoding the held-out prompts."""
    test = setup.test
    start = time.perf_counter()
    encoded = [setup.fmt.encode(t, r) for t, r in zip(test["turns"], test["response"])]
    encode_s = time.perf_counter() - start
    full = [len(e.prompt) + len(e.target) for e in encoded]
    prompts = [len(e.prompt) for e in encoded]
    return {
        "heldout_bills": len(full),
        "heldout_batch": heldout_batch,
        "padding_heldout_loss_sorted": round(padding_share(sorted(full, reverse=True), heldout_batch), 4),
        "padding_heldout_loss_unsorted": round(padding_share(full, heldout_batch), 4),
        "padding_generation_prompts": round(padding_share(sorted(prompts, reverse=True), heldout_batch), 4),
        "encode_prompts_s": round(encode_s, 4),
    }


def step_arm(setup, precision: str, bills: int, heldout: int) -> dict:
    """One optimizer step on `bills` pool bills and one held-out-loss pass in `precision` (same seed, same fp32
    weights: autocast only changes what the matmuls run in)."""
    import dataclasses

    from distill.model.load import autocast
    from distill.trial.run import encode_heldout, heldout_losses

    model = benchlib.lora_model(setup)
    subset = setup.pool.iloc[:bills]
    train_cfg = dataclasses.replace(setup.cfg.train, max_steps=1)
    with autocast(precision, "cpu"):
        stats = benchlib.finetune_subset(model, setup, subset, train_cfg)
        start = time.perf_counter()
        encoded = encode_heldout(setup.fmt, setup.test.iloc[:heldout])
        losses = heldout_losses(model, setup.tokenizer, encoded, heldout, "cpu")
        loss_s = time.perf_counter() - start
    return {
        "arm": precision,
        "train_step_s": round(stats.seconds, 2),
        "train_tokens": stats.train_tokens,
        "heldout_loss_s": round(loss_s, 2),
        "heldout_bills": heldout,
        "losses": losses,
    }


def specs_of(args, setup) -> list:
    """TrialSpecs: the methods' seed-0 subsets of the quick run in `args.run`, or `args.trials` blocks of k rows."""
    from distill.trial.run import TrialSpec

    if args.run:
        files = sorted((Path(args.run) / "selected").glob("*.jsonl"))
        specs = [
            TrialSpec(f"{f.stem}-s0", f.stem, 0, tuple(json.loads(x)["index"] for x in f.read_text().splitlines()), 0.0)
            for f in files
            if "-seed" not in f.stem
        ]
        return sorted(specs, key=lambda s: s.method != "random")
    k = len(setup.subset())
    return [
        TrialSpec(f"block-{i}-s0", f"block-{i}", 0, tuple(range(i * k, (i + 1) * k)), 0.0) for i in range(args.trials)
    ]


def trials_arm(setup, specs, precision: str) -> dict[str, dict]:
    """run_trial on every subset in `precision` (what a run's Resolved carries to its CPU trials); method → its
    record (metrics + per-example predictions)."""
    from distill.config.sections import TrialSettings
    from distill.store.records import Resolved
    from distill.trial.evaluate import resolve_scorer
    from distill.trial.run import run_trial

    cfg = setup.cfg
    resolved = Resolved(setup.model_path, "hf", resolve_scorer(cfg.eval, hub_reachable=False)[0], False, precision)
    return {
        s.method: run_trial(
            s, TrialSettings.of(cfg), setup.pool, setup.test, resolved, key="bench", data_format=setup.data_format
        ).to_dict()  # the record as written: this script reads and prints its fields by their on-disk names
        for s in specs
    }


def verdicts(records: dict[str, dict], metric: str) -> dict[str, dict]:
    """Each method against the first (random): the mean difference, its sign and whether its 95% CI excludes 0."""
    from distill.report.stats import compare

    baseline, *others = records
    base = [[p[metric] for p in records[baseline]["predictions"]]]
    out = {}
    for method in others:
        c = compare([[p[metric] for p in records[method]["predictions"]]], base)
        lo, hi = c.ci95 if c.ci95 else (None, None)
        out[method] = {
            "diff": c.diff,
            "sign": (c.diff > 0) - (c.diff < 0),
            "ci_excludes_0": lo is not None and (lo > 0 or hi < 0),
        }
    return out


def compare_trials(fp32: dict[str, dict], bf16: dict[str, dict]) -> tuple[list[dict], list[str]]:
    """Rows per method (fp32 beside bf16) and the failed checks (tolerances, verdicts)."""
    rows, failed = [], []
    scored = "rougeL" in next(iter(fp32.values()))["metrics"]
    for metric in ["heldout_loss"] + (["rougeL"] if scored else []):
        v32, v16 = verdicts(fp32, metric), verdicts(bf16, metric)
        for method in v32:
            same = (v32[method]["sign"], v32[method]["ci_excludes_0"]) == (
                v16[method]["sign"],
                v16[method]["ci_excludes_0"],
            )
            if not same:
                failed.append(f"{method}: verdict vs random on {metric} differs ({v32[method]} vs {v16[method]})")
    for method in fp32:
        a, b = fp32[method], bf16[method]
        gap = max(abs(p["heldout_loss"] - q["heldout_loss"]) for p, q in zip(a["predictions"], b["predictions"]))
        row = {
            "method": method,
            "trial_s_fp32": round(a["metrics"]["time_s"], 1),
            "trial_s_bf16": round(b["metrics"]["time_s"], 1),
            "speedup": round(a["metrics"]["time_s"] / b["metrics"]["time_s"], 2),
            "heldout_loss_fp32": round(a["metrics"]["heldout_loss"], 4),
            "heldout_loss_bf16": round(b["metrics"]["heldout_loss"], 4),
            "max_example_loss_gap": round(gap, 4),
        }
        if gap > LOSS_TOL:
            failed.append(f"{method}: an example's held-out loss moved {gap:.4f} > {LOSS_TOL}")
        if scored:
            row["rougeL_fp32"], row["rougeL_bf16"] = round(a["metrics"]["rougeL"], 6), round(b["metrics"]["rougeL"], 6)
            if abs(row["rougeL_fp32"] - row["rougeL_bf16"]) > ROUGE_L_TOL:
                failed.append(f"{method}: ROUGE-L moved {row['rougeL_bf16'] - row['rougeL_fp32']:+.4f} > {ROUGE_L_TOL}")
        rows.append(row)
    return rows, failed


def main(argv: list[str] | None = None) -> int:
    import torch

    from distill.model.load import native_bf16_cpu

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--matmul-seconds", type=float, default=3.0, help="per dtype")
    ap.add_argument("--bills", type=int, default=0, help="pool bills in the step (0: the quick job's effective batch)")
    ap.add_argument("--heldout", type=int, default=10, help="held-out bills in the step's loss pass")
    ap.add_argument(
        "--set", action="append", default=[], help="KEY=VALUE over the quick job, e.g. model.max_source_tokens=16"
    )
    ap.add_argument("--skip-step", action="store_true")
    ap.add_argument("--run", help="a finished quick job's output folder: its selections are the trials")
    ap.add_argument("--trials", type=int, default=0, help="without --run: this many blocks of k pool rows")
    benchlib.quick_arguments(ap, benchlib.ROOT / "docs" / "bench" / "bf16.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = benchlib.quick_setup(args.model, dict(pair.split("=", 1) for pair in args.set))
    if args.quick:
        setup.test = setup.test.iloc[:4]
    flags = torch.cpu.get_capabilities()
    result = {
        "benchmark": "bf16",
        "command": " ".join(["scripts/bench_bf16.py", *(sys.argv[1:] if argv is None else argv)]),
        "threads": args.threads,
        "cpu": {"native_bf16": native_bf16_cpu(), **{f: flags.get(f) for f in ("avx512_bf16", "amx_bf16", "avx2")}},
        "uptime_load_before": os.getloadavg(),
        "tolerance": {"example_heldout_loss": LOSS_TOL, "method_rougeL": ROUGE_L_TOL, "verdicts": "identical"},
    }
    fp32, bf16 = (matmul_gflops(d, args.matmul_seconds) for d in (torch.float32, torch.bfloat16))
    result["matmul_gflops"] = {"float32": round(fp32, 1), "bfloat16": round(bf16, 1), "speedup": round(bf16 / fp32, 2)}
    print(f"matmul {MLP_SHAPE}: fp32 {fp32:.1f} GFLOP/s, bf16 {bf16:.1f} GFLOP/s ({bf16 / fp32:.2f}×)", flush=True)
    result["scoring"] = scoring_costs(setup, setup.cfg.eval.batch_size)
    print(f"scoring pass besides the model: {result['scoring']}", flush=True)
    failed: list[str] = []
    if not args.skip_step:
        bills = args.bills or setup.cfg.train.batch_size * setup.cfg.train.grad_accum
        steps = [step_arm(setup, arm, bills, min(args.heldout, len(setup.test))) for arm in ARMS]
        gap = max(abs(a - b) for a, b in zip(steps[0].pop("losses"), steps[1].pop("losses")))
        for row in steps:
            row["speedup"] = round(steps[0]["train_step_s"] / row["train_step_s"], 2)
        steps[1]["max_example_loss_gap"] = round(gap, 4)
        if gap > LOSS_TOL:
            failed.append(f"step: an example's held-out loss moved {gap:.4f} > {LOSS_TOL}")
        benchlib.print_table(steps, list(steps[1]))
        result["step"] = steps
    if args.run or args.trials:
        specs = specs_of(args, setup)
        records: dict[str, dict] = {arm: {} for arm in ARMS}
        for spec in specs:  # arms alternate per method, so a change in the shared cores' load hits both alike
            for arm in ARMS:
                records[arm] |= trials_arm(setup, [spec], arm)
        rows, trial_failed = compare_trials(*records.values())
        failed += trial_failed
        for row in rows if args.run else []:  # the run's own trial, in the precision it ran in, where it has one
            stored = Path(args.run) / "trials" / f"{row['method']}-s0" / "metrics.json"
            metrics = json.loads(stored.read_text()) if stored.exists() else {}
            row["rougeL_run"] = round(metrics["rougeL"], 6) if "rougeL" in metrics else None
        benchlib.print_table(rows, list(rows[0]))
        result["trials"] = rows
    result["machine"] = benchlib.machine()
    result["failed"] = failed
    benchlib.write_json(args.json, result)
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
