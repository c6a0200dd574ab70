"""Verdicts against random: *better*, *worse*, *equivalent within ±δ* or *undecided*, each read from a confidence
interval that holds simultaneously over every method × metric tested and every look of the run (docs/statistics.md).

Why intervals, not p-values: "not significant" says neither "as good as random" nor "more runs would settle it".
If the intervals cover their true differences together with probability ≥ 1 − α, every claim read from them is
right together with that probability: a false *better* (or *worse*) needs an interval beyond 0 on the wrong side of
a true difference ≤ 0 (≥ 0); a false *equivalent* needs an interval inside (−δ, δ) around a true |difference| ≥ δ;
either way the interval missed its truth. Bonferroni gives the simultaneous coverage: each interval at level
1 − α/(m·K) for m tests and K looks (sequential.py), so the chance that any one misses is ≤ m·K·α/(m·K) = α,
whatever the correlation between them and whichever look a run stops at.

Each interval is the report's own test inverted (stats.py: Behrens–Fisher over seeds × examples), so a verdict is
two tests of the same kind: 0 outside the interval ⇔ p < α/(mK); the interval inside ±δ ⇔ both one-sided tests of
|difference| ≥ δ reject at α/(2mK) (two one-sided tests, Schuirmann 1987, at the interval's level). Vectorised over
leading axes, like `stats.t_test`, so the simulations of scripts/calibrate_sequential.py run this very code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from distill.report import planning, stats
from distill.report.stats import ALPHA, Variance

BETTER, WORSE, EQUIVALENT, UNDECIDED = "better", "worse", "equivalent", "undecided"
NO_CLAIM = "no claim"  # one seed (seed noise unknown) or fewer than 2 held-out examples: no interval to read
CODES = (UNDECIDED, BETTER, WORSE, EQUIVALENT)  # `decide`'s integer codes index this tuple


def level(tests: int, looks: int = 1, alpha: float = ALPHA) -> float:
    """Each interval's error rate: α/(m·K), Bonferroni over m tests and K looks (module docstring)."""
    return alpha / (max(1, tests) * max(1, looks))


def decide(test: stats.Test, margin: float, each: float, higher_is_better: bool = True) -> np.ndarray:
    """Codes into CODES for `stats.t_test` results: better or worse when the (1 − each) interval excludes 0, else
    equivalent when it lies inside (−margin, margin), else undecided.

    Interval beyond 0 ⇔ p < each. Inside ±δ ⇔ |mean| + q·se < δ with q the Behrens–Fisher (1 − each/2)
    quantile ⇔ P(BF ≤ −(δ − |mean|)/se) < each/2: no quantile search, so it vectorises. A zero se (identical or
    constant-shifted scores) is inside exactly when |mean| < δ.
    """
    mean, se = np.asarray(test.mean, dtype=float), np.asarray(test.se, dtype=float)
    beyond = np.asarray(test.p) < each
    room = margin - np.abs(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, -room / np.where(se > 0, se, 1.0), 0.0)
    tail = stats.behrens_fisher_cdf(z, test.weight, test.df_seed, test.df_example)
    inside = (room > 0) & np.where(se > 0, tail < each / 2, True)
    better = (mean > 0) == higher_is_better
    return np.where(beyond, np.where(better, 1, 2), np.where(inside, 3, 0))


@dataclass(frozen=True)
class Verdict:
    """One method × metric: the claim, the simultaneous interval it was read from, and what would decide it."""

    verdict: str  # one of BETTER, WORSE, EQUIVALENT, UNDECIDED, NO_CLAIM
    margin: float | None  # δ, in the metric's units
    interval: tuple[float, float] | None  # at level 1 − each (simultaneous over the family and the looks)
    level: float | None  # 1 − each: each interval's own confidence
    seeds_to_decide: (
        int | None
    )  # undecided: seeds (on these examples) that decide it with 80% power; None: out of reach


def judge(
    differences: np.ndarray, margin: float, each: float, higher_is_better: bool, claimable: bool = True
) -> Verdict:
    """The verdict on one (seeds × examples) matrix of method − random differences (`claimable` False: one seed)."""
    d = stats.as_matrix(differences)
    seeds, n = d.shape
    if n < 2 or not claimable:
        return Verdict(NO_CLAIM, margin, None, None, None)
    test = stats.t_test(d)
    name = CODES[int(decide(test, margin, each, higher_is_better))]
    interval = test.interval(each)
    mean = float(test.mean)
    needed = seeds_to_decide(stats.variance(d), mean, margin, each) if name == UNDECIDED else None
    return Verdict(name, margin, interval, 1 - each, needed)


def decide_power(diff: float, model: Variance, margin: float, each: float, seeds: int | None = None) -> float:
    """A lower bound on the chance that a `seeds` × these-examples run decides a true difference `diff`.

    max(P(interval beyond 0), P(interval inside ±δ)): the first is the test's power (planning.power); the second
    takes se at its expectation, so the interval's half-width is h = q·√(E se²) and the mean, normal with
    variance τ², must land within ±(δ − h).
    """
    beyond = planning.power(diff, model, seeds=seeds, alpha=each)
    s, n = model.design(seeds)
    tau = math.sqrt(model.of_mean(s, n))
    ms_seed, ms_example = model.expected_mean_squares(s, n)
    total = ms_seed + ms_example
    if total == 0 or tau == 0:
        return max(beyond, float(abs(diff) < margin))
    half = planning.critical_value(each, ms_seed / total, s - 1, n - 1) * math.sqrt(total / (s * n))
    room = margin - half
    if room <= 0:
        return beyond
    from scipy.stats import norm

    inside = float(norm.cdf((room - diff) / tau) - norm.cdf((-room - diff) / tau))
    return max(beyond, inside)


def seeds_to_decide(model: Variance, diff: float, margin: float, each: float, pw: float = planning.POWER) -> int | None:
    """The fewest seeds (on these examples) that decide a true difference equal to the observed one with power
    `pw`; None when no number of seeds up to planning.MAX_SEEDS would (a difference near ±δ decides slowest)."""
    if not model.seed_noise_known:
        return None
    return planning.smallest(
        2, model.seeds, planning.MAX_SEEDS, lambda s: decide_power(diff, model, margin, each, seeds=s) >= pw
    )
