"""Calibrate the report's test against random: its rejection rate under simulated nulls, and its power.

Each cell simulates `--sims` (seeds × examples) matrices of method − random differences from the crossed
model of distill/report/stats.py, d[s, i] = μ + a_s + b_i + e_si, and runs the report's own test
(`stats.t_test`) on every one, vectorised. Under the null (μ = 0) a "beats random" claim is a rejection
with ≥ 2 seeds; with one seed the report makes no claim (seed noise is unknown), so the claim rate is 0 by
design and the table shows what the per-example test alone would have rejected. The bound is the
binomial upper limit for `--sims` draws at a true 5% rate, at 99% jointly over the cells (Bonferroni).

    python scripts/calibrate_stats.py                      # the table of docs/statistics.md (seconds)
    python scripts/calibrate_stats.py --scenario all --json docs/bench/calibration.json

Scenarios split the example-level SD (0.1, ROUGE-L scale) between b (an example that favours one side
in every seed) and e (seed-specific): even, residual (all e), persistent (all b); `rouge` simulates
bounded per-example scores of both sides (a skewed score, clipped at 0 and 1) instead of differences.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.report import planning, stats  # noqa: E402

SEED_SDS = (0.0, 0.01)
EXAMPLES = (2, 5, 10, 50, 100, 500)
SEEDS = (1, 2, 3, 5)
EXAMPLE_SD = 0.1  # SD of one per-example difference, ROUGE-L scale (what the issue measured: 0.04–0.1)
SCENARIOS = {  # (persistent b, seed-specific e) SDs of the example level
    "even": (EXAMPLE_SD / math.sqrt(2), EXAMPLE_SD / math.sqrt(2)),
    "residual": (0.0, EXAMPLE_SD),
    "persistent": (EXAMPLE_SD, 0.0),
    "rouge": (EXAMPLE_SD / math.sqrt(2), EXAMPLE_SD / math.sqrt(2)),
}
POWER_CELL = (3, 50, 0.5)  # seeds, examples, effect d in SDs of one difference: "a clear effect"
CONFIDENCE = 0.99
CHUNK = 2_000_000  # simulated numbers per batch: bounds the memory of the largest cells
ROUGE_MEAN = 0.25  # a typical ROUGE-L of a small model on SciTLDR/BillSum


@dataclass
class Cell:
    scenario: str
    seed_sd: float
    seeds: int
    examples: int
    claim_rate: float  # rejections counted as "beats/loses to random" claims (0 with one seed: no claim)
    test_rate: float  # rejections of the test that was run (the per-example test with one seed)


def simulate(
    rng: np.random.Generator, sims: int, seeds: int, n: int, seed_sd: float, scenario: str, mu: float = 0.0
) -> np.ndarray:
    """(sims, seeds, n) differences method − random."""
    if scenario == "rouge":
        difficulty = rng.gamma(2.0, ROUGE_MEAN / 2.0, (sims, 1, n))  # the same examples for both sides
        return mu + _rouge_side(rng, difficulty, seeds, seed_sd) - _rouge_side(rng, difficulty, seeds, seed_sd)
    b_sd, e_sd = SCENARIOS[scenario]
    return (
        mu
        + rng.normal(0, seed_sd, (sims, seeds, 1))
        + rng.normal(0, b_sd, (sims, 1, n))
        + rng.normal(0, e_sd, (sims, seeds, n))
    )


def _rouge_side(rng: np.random.Generator, difficulty: np.ndarray, seeds: int, seed_sd: float) -> np.ndarray:
    """One side's bounded scores: the examples' skewed difficulty plus this side's example, seed and
    residual parts, clipped to [0, 1] (many summaries score 0)."""
    sims, _, n = difficulty.shape
    b_sd, e_sd = (sd / math.sqrt(2) for sd in SCENARIOS["rouge"])  # per side: the difference has the full SD
    raw = (
        difficulty
        + rng.normal(0, seed_sd / math.sqrt(2), (sims, seeds, 1))
        + rng.normal(0, b_sd, (sims, 1, n))
        + rng.normal(0, e_sd, (sims, seeds, n))
    )
    return np.clip(raw, 0.0, 1.0)


def rejections(
    rng: np.random.Generator, sims: int, seeds: int, n: int, seed_sd: float, scenario: str, mu: float = 0.0
) -> int:
    """How many of `sims` simulated comparisons the report's test rejects at 5%, in memory-bounded batches."""
    batch = max(1, CHUNK // (seeds * n))
    hits = 0
    for start in range(0, sims, batch):
        size = min(batch, sims - start)
        p = stats.t_test(simulate(rng, size, seeds, n, seed_sd, scenario, mu)).p
        hits += int(np.count_nonzero(p < stats.ALPHA))
    return hits


def null_table(sims: int, scenario: str, seed: int = 0) -> list[Cell]:
    rng = np.random.default_rng(seed)
    cells = []
    for seed_sd in SEED_SDS:
        for seeds in SEEDS:
            for n in EXAMPLES:
                rate = rejections(rng, sims, seeds, n, seed_sd, scenario) / sims
                cells.append(Cell(scenario, seed_sd, seeds, n, rate if stats.can_claim(seeds) else 0.0, rate))
    return cells


def bound(sims: int, cells: int, alpha: float = stats.ALPHA, confidence: float = CONFIDENCE) -> float:
    """The largest rejection rate that a test of true level `alpha` stays under in all `cells` (jointly at
    `confidence`): the binomial quantile at 1 − (1 − confidence)/cells, as a rate."""
    from scipy.stats import binom

    return float(binom.ppf(1 - (1 - confidence) / cells, sims, alpha)) / sims


def power_check(sims: int, seed_sd: float, scenario: str = "even", seed: int = 0) -> tuple[float, float]:
    """(simulated power, `planning.power`'s prediction) for the clear effect of POWER_CELL."""
    seeds, n, d = POWER_CELL
    b_sd, e_sd = SCENARIOS[scenario]
    mu = d * math.sqrt(seed_sd**2 + b_sd**2 + e_sd**2)
    hit = rejections(np.random.default_rng(seed), sims, seeds, n, seed_sd, scenario, mu) / sims
    theory = planning.power(mu, stats.Variance(seeds, n, seed_sd**2, b_sd**2, e_sd**2))
    return hit, theory


def markdown(cells: list[Cell], limit: float) -> str:
    """Rows: seed SD × seeds; columns: examples. Each entry: the claim rate (the per-example test's in brackets
    for one seed, where no claim is made)."""
    lines = [
        "| seed SD | seeds | " + " | ".join(f"n = {n}" for n in EXAMPLES) + " |",
        "|---:|---:|" + "---:|" * len(EXAMPLES),
    ]
    for seed_sd in SEED_SDS:
        for seeds in SEEDS:
            row = [c for c in cells if c.seed_sd == seed_sd and c.seeds == seeds]
            entries = [f"{c.claim_rate:.3f}" if stats.can_claim(seeds) else f"0 ({c.test_rate:.3f})" for c in row]
            lines.append(f"| {seed_sd:g} | {seeds} | " + " | ".join(entries) + " |")
    worst = max(c.claim_rate for c in cells)
    lines += [
        "",
        f"Worst claim rate {worst:.3f}; bound {limit:.3f}: "
        + ("every cell holds." if worst <= limit else "SOME CELL EXCEEDS IT."),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=10_000, help="simulated comparisons per cell")
    parser.add_argument("--scenario", default="even", choices=[*SCENARIOS, "all"])
    parser.add_argument("--json", type=Path, help="also write the cells and power checks here")
    args = parser.parse_args(argv)
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    out: dict = {"sims": args.sims, "example_sd": EXAMPLE_SD, "scenarios": {}}
    holds = True
    for scenario in scenarios:
        cells = null_table(args.sims, scenario)
        limit = bound(args.sims, len(cells))
        holds &= max(c.claim_rate for c in cells) <= limit
        b_sd, e_sd = SCENARIOS[scenario]
        print(f"\n## {scenario}: claims under the null (example SD b = {b_sd:.3f}, seed-specific SD e = {e_sd:.3f})\n")
        print(markdown(cells, limit))
        # the model's prediction is exact for normal differences only: no power check for bounded scores
        checks = {str(sd): power_check(args.sims, sd, scenario) for sd in SEED_SDS} if scenario != "rouge" else {}
        seeds, n, d = POWER_CELL
        for sd, (hit, theory) in checks.items():
            print(
                f"power at d = {d}, n = {n}, {seeds} seeds, seed SD {sd}: simulated {hit:.3f}, planning.power {theory:.3f}"
            )
        out["scenarios"][scenario] = {
            "bound": limit,
            "cells": [asdict(c) for c in cells],
            "power": {sd: {"simulated": h, "predicted": t} for sd, (h, t) in checks.items()},
        }
    return finish(out, args.json, holds)


def finish(out: dict, path: Path | None, holds: bool) -> int:
    """Write the figures to `path` (when given) and exit non-zero when any cell exceeded its bound."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
