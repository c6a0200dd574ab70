#!/usr/bin/env python
"""What the trials' held-out loss costs beside greedy generation, side by side on the quick job's settings.

    .venv/bin/python scripts/bench_heldout_loss.py --threads 1

At the quick job's settings (as scripts/bench_generate.py): the real SmolLM2-135M with the quick job's
LoRA adapters attached (as in a trial), its 10 held-out bills cut to 256 source tokens, the eval batch
(10), the trial's thread count (1). Arms, each on the same model object: `generate` (distill's batched
greedy generation, up to 96 new tokens), `score` (ROUGE + the offline BERTScore encoder on those
generations, as a trial scores them) and `heldout_loss` (trial.heldout_losses: one batched teacher-forced
pass over prompt + reference response, cross-entropy on the response tokens). `--repeats` times each arm
that many times and keeps the fastest (the box is shared).
"""

from __future__ import annotations

import argparse
import sys
import time

import benchlib


def timed(fn, repeats: int) -> tuple[object, float]:
    """(fn's result, its fastest wall time over `repeats` calls)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def main(argv: list[str] | None = None) -> int:
    import torch

    from distill.trial.evaluate import generate, resolve_scorer, score
    from distill.trial.run import encode_heldout, heldout_losses

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--repeats", type=int, default=1)
    benchlib.quick_arguments(ap, benchlib.ROOT / "docs" / "bench" / "heldout_loss.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = benchlib.quick_setup(args.model)
    cfg = setup.cfg.eval
    model = benchlib.lora_model(setup)
    test = setup.test.iloc[: 4 if args.quick else None]
    scorer, _ = resolve_scorer(cfg, hub_reachable=False)
    generated, generate_s = timed(
        lambda: generate(model, setup.tokenizer, setup.fmt, test["turns"].tolist(), cfg, "cpu"), args.repeats
    )
    _, score_s = timed(lambda: score(generated, test["response"].tolist(), scorer, "cpu", cfg.batch_size), args.repeats)
    losses, loss_s = timed(
        lambda: heldout_losses(model, setup.tokenizer, encode_heldout(setup.fmt, test), cfg.batch_size, "cpu"),
        args.repeats,
    )
    rows = [
        {
            "arm": arm,
            "bills": len(test),
            "seconds": round(seconds, 2),
            "per_bill_s": round(seconds / len(test), 3),
            "vs_generate": round(seconds / generate_s, 3),
        }
        for arm, seconds in (("generate", generate_s), ("score (ROUGE + BERTScore)", score_s), ("heldout_loss", loss_s))
    ]
    benchlib.print_table(rows, ["arm", "bills", "seconds", "per_bill_s", "vs_generate"])
    print(
        f"held-out loss: {loss_s:.2f}s = {loss_s / generate_s:.1%} of generation; mean loss {sum(losses) / len(losses):.4f}"
    )
    benchlib.write_json(
        args.json,
        {
            "benchmark": "heldout_loss",
            "machine": benchlib.machine(),
            "threads": args.threads,
            "repeats": args.repeats,
            "device": "cpu",
            "max_new_tokens": cfg.max_new_tokens,
            "eval_batch_size": cfg.batch_size,
            "bertscore_model": scorer.label,
            "command": " ".join(["scripts/bench_heldout_loss.py", *(sys.argv[1:] if argv is None else argv)]),
            "rows": rows,
            "mean_heldout_loss": round(sum(losses) / len(losses), 4),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
