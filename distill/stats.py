"""Uncertainty, significance and statistical power for comparing selection methods — deterministic.

Why bootstrap: a run has few seeds (often 1–3) and a few dozen held-out examples; per-example
ROUGE/BERTScore are bounded and skewed, so normal-theory intervals are unreliable. Resampling the
examples (and the seeds, when there are several) shows how much a mean would move with a different
held-out draw and a different training seed, which is exactly the noise a method comparison must beat.

Why fixed RNG seeds: the report must regenerate byte-identically from the stored files, so every
resampling here uses `numpy.random.default_rng(seed)` with a constant default seed.

What is hand-written and what is the library's (checked against scipy/statsmodels in tests/test_stats.py):
- the two-level (seeds × examples) bootstrap CI and the paired shift-to-null bootstrap test are written here:
  scipy.stats.bootstrap resamples one level only, and neither library offers the shift-to-null test. With
  one seed and many examples they agree with scipy.stats.bootstrap and scipy.stats.ttest_rel.
- Holm's correction is statsmodels' `multipletests(method="holm")`;
- power and minimum detectable effects are the paired t-test's, from scipy's noncentral t distribution
  (equal to statsmodels' TTestPower, which returns NaN for very small n with large effects); the
  bootstrap test has about that power, as a simulation in the tests checks.
statsmodels and scipy take seconds to import, so they are imported where used, not when distill starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_SEED = 0
ALPHA = 0.05
POWER = 0.8  # the conventional power at which minimum detectable effects and sample sizes are stated


def _as_matrix(scores: Sequence | np.ndarray) -> np.ndarray:
    """Coerce to a float (seeds × examples) matrix; a 1-D vector is one seed.

    Rejecting empty input here keeps every caller from silently averaging nothing into NaN.
    """
    x = np.asarray(scores, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"expected a non-empty (seeds x examples) matrix, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("scores contain NaN or infinity")
    return x


def _resample_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot × n) weights, each row the counts of a with-replacement draw of n items, divided by n.

    Drawing counts with a multinomial is equivalent to drawing indices with replacement, but lets a
    weighted mean be a single matrix product instead of a Python loop over resamples.
    """
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n


def bootstrap_mean_ci(scores: Sequence | np.ndarray, n_boot: int = 2000, seed: int = DEFAULT_SEED,
                      alpha: float = ALPHA) -> tuple[float, float, float]:
    """Mean of a (seeds × examples) score matrix with a percentile bootstrap (1 − alpha) interval.

    Each resample draws the held-out examples with replacement and, when there is more than one
    seed, the seeds with replacement too (a two-level bootstrap), so the interval reflects both
    held-out-set noise and training-seed noise. With one seed only example noise can be measured.
    Returns (mean, lo, hi); the point estimate is the plain mean of the matrix.
    """
    x = _as_matrix(scores)
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    k, n = x.shape
    rng = np.random.default_rng(seed)
    w_ex = _resample_weights(rng, n, n_boot)  # (B, n)
    if k > 1:
        w_seed = _resample_weights(rng, k, n_boot)  # (B, k)
    else:
        w_seed = np.ones((n_boot, 1))
    boot = np.einsum("bk,kn,bn->b", w_seed, x, w_ex)
    lo, hi = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    mean = float(x.mean())
    # Guard against float round-off putting the mean a hair outside a degenerate interval.
    return mean, float(min(lo, mean)), float(max(hi, mean))


@dataclass(frozen=True)
class PairedTest:
    """Result of comparing a method with a baseline on the same held-out examples."""

    mean_diff: float  # mean over examples of (method − baseline), seed-averaged
    diff_ci95: tuple[float, float]  # percentile bootstrap interval of mean_diff
    p_value: float  # two-sided, shift-to-null bootstrap
    effect_size: float | None  # paired Cohen's d_z = mean_diff / sd(diffs); None if undefined
    n_examples: int


def paired_bootstrap_test(method_scores: Sequence | np.ndarray, baseline_scores: Sequence | np.ndarray,
                          n_boot: int = 2000, seed: int = DEFAULT_SEED) -> PairedTest:
    """Two-sided paired bootstrap test of a method against a baseline (here: `random`).

    Construction (shift-to-null, Efron & Tibshirani §16.4):
    1. Average each side over its seeds, giving one score per held-out example, and take the
       per-example differences d_i = method_i − baseline_i. Pairing on the example removes the large
       between-example variance (some documents are simply easier to summarise).
    2. Centre the differences, d0_i = d_i − mean(d), so they obey the null "no mean difference"
       while keeping their spread.
    3. Resample d0 with replacement B times; p = (1 + #{|mean(d0*)| ≥ |mean(d)|}) / (B + 1).
       The +1 keeps p > 0 (the smallest reportable p is 1/(B+1)). Identical scores give d = 0,
       every resample ties, and p = 1.
    The effect size is paired Cohen's d_z (mean difference over the sd of the differences): it is
    scale-free, so ROUGE-L and BERTScore effects can be compared. It is 0 for identical scores and
    None when every difference is the same non-zero value (sd 0, d_z unbounded).
    Seed-to-seed variance is averaged out in step 1, not tested; with few seeds that is the honest
    choice, since resampling 2 seeds says little.
    """
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    d = paired_differences(method_scores, baseline_scores)
    n = d.size
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    w = _resample_weights(rng, n, n_boot)
    boot = w @ d  # resampled mean differences (not centred): for the interval
    null = boot - observed  # == w @ (d - mean(d)), since each row of w sums to 1
    # Tolerance: treat differences within float round-off as ties, so identical scores give p = 1.
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    extreme = np.count_nonzero(np.abs(null) >= abs(observed) - tol)
    p = (1 + extreme) / (n_boot + 1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if sd > tol:
        effect: float | None = observed / sd
    elif abs(observed) <= tol:
        effect = 0.0
    else:
        effect = None
    return PairedTest(mean_diff=observed, diff_ci95=(float(lo), float(hi)), p_value=float(min(1.0, p)),
                      effect_size=effect, n_examples=n)


def paired_differences(method_scores: Sequence | np.ndarray, baseline_scores: Sequence | np.ndarray) -> np.ndarray:
    """Per-example differences d_i = mean over seeds of method − mean over seeds of baseline.

    The one definition of "the paired differences" that the test, the effect size and the power
    analysis all read, so they can never describe different data.
    """
    m, b = _paired(method_scores, baseline_scores)
    return m.mean(axis=0) - b.mean(axis=0)


def _paired(method_scores: Sequence | np.ndarray,
            baseline_scores: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = _as_matrix(method_scores)
    b = _as_matrix(baseline_scores)
    if m.shape[1] != b.shape[1]:
        raise ValueError(f"method has {m.shape[1]} examples but the baseline has {b.shape[1]}: "
                         "a paired test needs the same held-out examples")
    return m, b


@dataclass(frozen=True)
class Evidence:
    """How much evidence a comparison with the baseline has, and how much it would need."""

    mde: float | None  # smallest true mean difference detectable at `power` with this run's examples
    n_needed: int | None  # held-out examples needed to detect the observed difference (None: none observed)
    seeds_needed: int | None  # seeds (same n) needed to detect it; None: unknowable (1 seed) or unreachable


def evidence(method_scores: Sequence | np.ndarray, baseline_scores: Sequence | np.ndarray, alpha: float = ALPHA,
             power: float = POWER) -> Evidence:
    """Minimum detectable effect and required sample sizes for a paired comparison, two-sided at `alpha`.

    Computed from the observed paired differences d (see `paired_differences`) with the paired t-test's
    power function (`t_power`): MDE = d_z* · sd(d), where d_z* is the standardised effect detected with
    probability `power` by n examples; n_needed solves the same equation for the observed effect
    mean(d) / sd(d). Seeds: averaging S seeds shrinks the seed-noise part of var(d) by 1/S, so with
    within-example seed variances w (estimated when both sides have ≥ 2 seeds) the variance with S' seeds
    is var(d) − w_m/S_m − w_b/S_b + (w_m + w_b)/S'; seeds_needed is the smallest S' whose MDE at the same
    n reaches the observed difference (None when even infinitely many seeds would not).
    """
    m, b = _paired(method_scores, baseline_scores)
    d = m.mean(axis=0) - b.mean(axis=0)
    n, observed = d.size, abs(float(d.mean()))
    if n < 2:
        return Evidence(None, None, None)
    sd = float(d.std(ddof=1))
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if sd <= tol:  # every example moved by the same amount: any non-zero shift is already certain
        return Evidence(0.0, None if observed <= tol else n, None)
    detectable_dz = detectable_effect(n, alpha, power)
    n_needed = n_needed_for(observed / sd, alpha, power) if observed > tol else None
    return Evidence(detectable_dz * sd, n_needed, _seeds_needed(m, b, sd, observed / detectable_dz))


def t_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs at standardised effect d_z = mean/sd, from scipy's
    noncentral t (statsmodels' TTestPower computes the same, but returns NaN for n = 3 and large effects)."""
    from scipy import stats as st

    crit = st.t.ppf(1 - alpha / 2, n - 1)
    nc = abs(effect) * math.sqrt(n)
    wrong_side = float(st.nct.cdf(-crit, n - 1, nc))  # far below the centre this underflows to NaN; it is ~0 there
    return float(st.nct.sf(crit, n - 1, nc)) + (0.0 if math.isnan(wrong_side) else wrong_side)


def detectable_effect(n: int, alpha: float, power: float) -> float:
    """The d_z that n pairs detect with `power`: a root of the monotone power curve."""
    from scipy.optimize import brentq

    hi = 1.0
    while t_power(hi, n, alpha) < power:
        hi *= 2
    return float(brentq(lambda e: t_power(e, n, alpha) - power, 0.0, hi, xtol=1e-12))


def n_needed_for(effect: float, alpha: float, power: float) -> int:
    """Smallest whole n ≥ 2 whose power reaches `power`: doubling, then bisection (power rises with n)."""
    lo, hi = 1, 2  # invariant: lo is not enough (n = 1 never is)
    while t_power(effect, hi, alpha) < power:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if t_power(effect, mid, alpha) >= power else (mid, hi)
    return hi


def _seeds_needed(m: np.ndarray, b: np.ndarray, sd: float, target_sd: float) -> int | None:
    """Smallest number of seeds per side whose projected sd(d) is ≤ target_sd (see `evidence`)."""
    if m.shape[0] < 2 or b.shape[0] < 2 or target_sd <= 0:
        return None
    w_m = float(m.var(axis=0, ddof=1).mean())
    w_b = float(b.var(axis=0, ddof=1).mean())
    between = max(sd**2 - w_m / m.shape[0] - w_b / b.shape[0], 0.0)  # what no number of seeds removes
    room = target_sd**2 - between
    if room <= 0:
        return None
    return max(1, math.ceil((w_m + w_b) / room))


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in the input order; None entries pass through as None.

    Comparing several methods with random multiplies the chance of a lucky "win"; Holm controls the
    family-wise error rate like Bonferroni but is uniformly more powerful. With the m valid p-values
    sorted ascending, p_(1) ≤ … ≤ p_(m): adj_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)), computed by
    statsmodels' multipletests(method="holm"); this wrapper only adds the None pass-through.
    """
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if not idx:
        return out
    raw = np.array([float(p_values[i]) for i in idx])
    if np.any((raw < 0) | (raw > 1)) or not np.all(np.isfinite(raw)):
        raise ValueError("p-values must lie in [0, 1]")
    adjusted = multipletests(raw, alpha=ALPHA, method="holm")[1]
    for pos, i in enumerate(idx):
        out[i] = float(adjusted[pos])
    return out


def significant(p_adjusted: float | None, alpha: float = ALPHA) -> bool | None:
    """True when a (Holm-adjusted) p-value is below alpha; None when there was no test."""
    return None if p_adjusted is None else bool(p_adjusted < alpha)
