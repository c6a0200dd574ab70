"""Calibrate the verdicts of an adaptive run (`--until-decided`): false claims under optional stopping.

Each cell simulates `--sims` runs of METHODS methods against one shared random, on the crossed seeds × examples
model of scripts/calibrate_stats.py (each side's scores carry half of every variance component, so a difference
has the grid's SDs and the methods' differences are correlated through random's trials, as in a real run). Every
run follows the sequential design of distill/report/sequential.py: a first round of S₁ seeds, then STEP more seeds
for each method still undecided, up to LOOKS looks, each look reading `verdict.decide` (the report's own code) at
level α/(METHODS × LOOKS). Two truths per cell:

- null: every method equals random; any *better* or *worse* at any look is a false claim;
- margin: every method is better by exactly δ; any *equivalent* (or *worse*) at any look is a false claim.

The entry is the share of runs with at least one false claim (family-wise, over the methods and the looks); the
bound is the binomial upper limit for a true 5% rate at 99% jointly over the cells, as in calibrate_stats.py.

    python scripts/calibrate_sequential.py --sims 4000 --scenario all --json docs/bench/sequential.json
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import calibrate_stats as grid  # noqa: E402

from distill.report import sequential, stats, verdict  # noqa: E402

METHODS = 3  # tested against the same random: m of the Bonferroni split
LOOKS = 3  # K, the adaptive default (config.schema.AdaptiveConfig.looks)
STEP = 2  # seeds added per look (AdaptiveConfig.seeds_per_look)
FIRST_ROUNDS = (2, 3, 5)  # S₁: an adaptive run starts with at least 2 seeds
MARGIN = 0.02  # δ on the ROUGE-L scale of the grid: a fifth of the example SD, 8% of a typical ROUGE-L (0.25)
TRUTHS = {"null": 0.0, "margin": MARGIN}
FALSE = {"null": (1, 2), "margin": (2, 3)}  # verdict codes (verdict.CODES) that are false claims under each truth


@dataclass
class Cell:
    scenario: str
    truth: str
    seed_sd: float
    first: int
    examples: int
    false_rate: float  # runs with any false claim, over the methods and the looks
    mean_looks: float  # looks the run took before every method was decided (or K)


def sides(rng: np.random.Generator, sims: int, seeds: int, n: int, seed_sd: float, scenario: str) -> np.ndarray:
    """(sims, METHODS + 1, seeds, n) scores: random first, then the methods (all equal in truth)."""
    if scenario == "rouge":
        difficulty = rng.gamma(2.0, grid.ROUGE_MEAN / 2.0, (sims, 1, n))
        return np.stack([grid._rouge_side(rng, difficulty, seeds, seed_sd) for _ in range(METHODS + 1)], axis=1)
    b_sd, e_sd = (sd / math.sqrt(2) for sd in grid.SCENARIOS[scenario])
    shape = (sims, METHODS + 1)
    return (
        rng.normal(0, seed_sd / math.sqrt(2), (*shape, seeds, 1))
        + rng.normal(0, b_sd, (*shape, 1, n))
        + rng.normal(0, e_sd, (*shape, seeds, n))
    )


def run_batch(
    differences: np.ndarray, design: sequential.Design, truth: str, each: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(any false claim, looks taken) per simulated run, following the design on (sims, METHODS, S_max, n) arrays;
    `each` overrides the design's level per interval (to show what an unsplit level would do)."""
    sims = differences.shape[0]
    each = each or verdict.level(METHODS, design.looks)
    active = np.ones((sims, METHODS), dtype=bool)
    wrong = np.zeros(sims, dtype=bool)
    looks = np.zeros(sims, dtype=int)
    for look in range(1, design.looks + 1):
        looks += active.any(axis=1)
        codes = verdict.decide(stats.t_test(differences[:, :, : design.seeds_at(look), :]), MARGIN, each)
        wrong |= (active & np.isin(codes, FALSE[truth])).any(axis=1)
        active &= codes == 0
    return wrong, looks


def cell(
    rng: np.random.Generator,
    sims: int,
    scenario: str,
    truth: str,
    seed_sd: float,
    first: int,
    n: int,
    each: float | None = None,
) -> Cell:
    design = sequential.Design(first, STEP, LOOKS)
    s_max = design.seeds_at(LOOKS)
    batch = max(1, grid.CHUNK // ((METHODS + 1) * s_max * n))
    wrong, looks = 0, 0
    for start in range(0, sims, batch):
        size = min(batch, sims - start)
        scores = sides(rng, size, s_max, n, seed_sd, scenario)
        differences = scores[:, 1:] - scores[:, :1] + TRUTHS[truth]
        w, k = run_batch(differences, design, truth, each)
        wrong, looks = wrong + int(w.sum()), looks + int(k.sum())
    return Cell(scenario, truth, seed_sd, first, n, wrong / sims, looks / sims)


def table(
    sims: int,
    scenario: str,
    truth: str,
    seed_sds=grid.SEED_SDS,
    firsts=FIRST_ROUNDS,
    examples=grid.EXAMPLES,
    seed: int = 0,
) -> list[Cell]:
    rng = np.random.default_rng(seed)
    return [cell(rng, sims, scenario, truth, sd, s, n) for sd in seed_sds for s in firsts for n in examples]


def markdown(cells: list[Cell], limit: float) -> str:
    """Rows: seed SD × first round; columns: examples; entries: false-claim rate (mean looks taken)."""
    examples = sorted({c.examples for c in cells})
    lines = [
        "| seed SD | first round | " + " | ".join(f"n = {n}" for n in examples) + " |",
        "|---:|---:|" + "---:|" * len(examples),
    ]
    for sd in sorted({c.seed_sd for c in cells}):
        for first in sorted({c.first for c in cells}):
            row = sorted((c for c in cells if c.seed_sd == sd and c.first == first), key=lambda c: c.examples)
            lines.append(
                f"| {sd:g} | {first} | " + " | ".join(f"{c.false_rate:.3f} ({c.mean_looks:.1f})" for c in row) + " |"
            )
    worst = max(c.false_rate for c in cells)
    verdict_line = "every cell holds." if worst <= limit else "SOME CELL EXCEEDS IT."
    return "\n".join([*lines, "", f"Worst false-claim rate {worst:.3f}; bound {limit:.3f}: {verdict_line}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=4000, help="simulated adaptive runs per cell")
    parser.add_argument("--scenario", default="even", choices=[*grid.SCENARIOS, "all"])
    parser.add_argument("--json", type=Path, help="also write the cells here")
    args = parser.parse_args(argv)
    scenarios = list(grid.SCENARIOS) if args.scenario == "all" else [args.scenario]
    out: dict = {"sims": args.sims, "methods": METHODS, "looks": LOOKS, "step": STEP, "margin": MARGIN, "cells": []}
    holds = True
    for scenario in scenarios:
        for truth in TRUTHS:
            cells = table(args.sims, scenario, truth)
            limit = grid.bound(args.sims, len(cells))
            holds &= max(c.false_rate for c in cells) <= limit
            print(f"\n## {scenario}, truth {truth} (Δ = {TRUTHS[truth]:g} for every method)\n")
            print(markdown(cells, limit))
            out["cells"] += [asdict(c) | {"bound": limit} for c in cells]
    return grid.finish(out, args.json, holds)


if __name__ == "__main__":
    sys.exit(main())
