"""Confidence intervals and tests against random: one variance model for them and for power (planning.py).

The model. A comparison of a method with `random` is a (seeds × examples) matrix of differences
d[s, i] = method[s, i] − random[s, i]: the two are paired by training seed s (same seed, same
initialisation and data order; only the subset differs) and by held-out example i. Both the seeds and the
examples are samples from what the question is about (any training seed, any example), so both are
random effects of a crossed design (Clark 1973; Baayen, Davidson & Bates 2008):

    d[s, i] = μ + a_s + b_i + e_si,   Var a = σ²_seed, Var b = σ²_example, Var e = σ²_residual,

and the mean over S seeds and n examples has variance τ² = σ²_seed/S + σ²_example/n + σ²_residual/(S·n).

The test (docs/statistics.md has the derivation, the references and the simulations behind each choice).
The two-way ANOVA mean squares of the matrix estimate MS_seed/(S·n) ≈ σ²_seed/S + σ²_residual/(S·n) on
S − 1 degrees of freedom and MS_example/(S·n) ≈ σ²_example/n + σ²_residual/(S·n) on n − 1. Their sum
se² = (MS_seed + MS_example)/(S·n) is Clark's (1973) min F′ denominator: it counts every source of noise
and overstates τ² by σ²_residual/(S·n), never understates it. t = mean / se is referred to the
Behrens–Fisher distribution √w·T_{S−1} + √(1 − w)·T_{n−1}, w = MS_seed/(MS_seed + MS_example) (Fisher
1935): like t on S − 1 df when seed noise dominates, on n − 1 when example noise does. That test is
conservative (Robinson 1976); with estimated (Satterthwaite) degrees of freedom instead it rejected up to
13% of true nulls with 2 seeds, and on fixed min(S − 1, n − 1) df it had half the power with 3 seeds.

One seed. Then w = 0 and the test is the paired t-test over the examples: it holds the two trained
models fixed and cannot see seed noise (a shift of a whole trained model moves every example at once and
looks like an effect). `Comparison.seed_noise_known` is False and the report makes no claim from it.
Its power, MDE and examples needed are then exactly statsmodels' TTestPower.

Power and planning (planning.py) use the variance components of the same model. Everything is closed-form
or fixed quadrature: no resampling, so the report is deterministic and fast. scipy and statsmodels take
seconds to import, so they are imported where used, not when distill starts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
QUADRATURE_NODES = 96  # of the Behrens–Fisher integral (two pieces of 48): probabilities to ~0.6%
QUANTILE_TOLERANCE = 1e-9
ROUND_OFF = 1e-12  # relative size below which a mean or a spread is float round-off of zero


def as_matrix(scores: Sequence | np.ndarray) -> np.ndarray:
    """Coerce to a float (seeds × examples) matrix; a 1-D vector is one seed.

    Rejecting empty or non-finite input here keeps every caller from silently averaging it into NaN
    (the report names the trial and example of a bad score before it gets here).
    """
    x = np.asarray(scores, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"expected a non-empty (seeds x examples) matrix, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("scores contain NaN or infinity")
    return x


# ------------------------------------------------------------------------ the Behrens–Fisher distribution


@functools.lru_cache(maxsize=1)
def _nodes() -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on (−1, 1), for each of the two pieces of the integral."""
    return np.polynomial.legendre.leggauss(QUADRATURE_NODES // 2)


def _t_density(y: np.ndarray, df: np.ndarray) -> np.ndarray:
    from scipy.special import gammaln

    log_norm = gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * np.log(df * np.pi)
    return np.exp(log_norm - (df + 1) / 2 * np.log1p(y * y / df))


def behrens_fisher_cdf(t: np.ndarray | float, w: np.ndarray | float, df_seed: int, df_example: int) -> np.ndarray:
    """P(√w·T1 + √(1 − w)·T2 ≤ t) for independent Student t's T1 on `df_seed` and T2 on `df_example` df.

    Vectorised over t and w; df_seed = 0 (one seed) requires w = 0 and gives Student's t on df_example.
    Computed as ∫ f_out(y) F_in((t − c_out·y)/c_in) dy over the lighter-tailed t (more df; with equal df,
    the one with the larger coefficient), in y = tan θ, split where the inner CDF turns (y = t/c_out), each
    piece by Gauss–Legendre: within 0.6% of adaptive quadrature (scipy's quad) for p > 1e-4, down to 1 df.
    """
    from scipy.special import stdtr

    t, w = np.broadcast_arrays(np.asarray(t, dtype=float), np.asarray(w, dtype=float))
    if df_seed == 0:
        return stdtr(df_example, t)
    a, b = np.sqrt(w), np.sqrt(1 - w)
    outer_seed = np.full(t.shape, df_seed > df_example) if df_seed != df_example else a >= b
    c_out, c_in = np.where(outer_seed, a, b), np.where(outer_seed, b, a)
    df_out, df_in = np.where(outer_seed, df_seed, df_example), np.where(outer_seed, df_example, df_seed)
    c_out, c_in = np.where(c_out > 0, c_out, 1.0), np.where(c_in > 0, c_in, 1.0)  # a zero one: `single` below
    single = np.where(
        a == 0,
        stdtr(df_example, t / np.where(b > 0, b, 1.0)),  # w = 0 or 1: one t alone
        stdtr(df_seed, t / np.where(a > 0, a, 1.0)),
    )
    c_out, c_in = c_out[..., None], c_in[..., None]
    df_out, df_in = df_out[..., None], df_in[..., None]
    x, weights = _nodes()
    turn = np.arctan(t[..., None] / c_out)
    total = np.zeros(t.shape)
    for lo, hi in ((-np.pi / 2, turn), (turn, np.pi / 2)):
        theta = lo + (hi - lo) * (x + 1) / 2
        y = np.tan(theta)
        integrand = _t_density(y, df_out) / np.cos(theta) ** 2 * stdtr(df_in, (t[..., None] - c_out * y) / c_in)
        total += (integrand * weights * (hi - lo) / 2).sum(axis=-1)
    return np.where((a == 0) | (b == 0), single, np.clip(total, 0.0, 1.0))


def behrens_fisher_quantile(q: float, w: float, df_seed: int, df_example: int) -> float:
    """The q-quantile (q > 1/2) of the Behrens–Fisher distribution of `behrens_fisher_cdf` (Brent's root)."""
    from scipy.optimize import brentq

    def gap(t: float) -> float:
        return float(behrens_fisher_cdf(t, w, df_seed, df_example)) - q

    lo, hi = 0.0, 2.0
    while gap(hi) < 0:
        lo, hi = hi, 2 * hi
    return float(brentq(gap, lo, hi, xtol=QUANTILE_TOLERANCE))


# ----------------------------------------------------------------------------------- the variance model


def _mean_squares(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grand mean and the two-way ANOVA mean squares (seeds, examples, residual) of (..., S, n) arrays.

    Vectorised over leading axes so that a calibration can test thousands of simulated matrices at once.
    With one seed MS_seed and MS_residual are 0 (no degrees of freedom) and MS_example is the variance
    of the examples.
    """
    s, n = x.shape[-2:]
    grand = x.mean(axis=(-2, -1))
    rows, cols = x.mean(axis=-1), x.mean(axis=-2)
    ms_example = s * ((cols - grand[..., None]) ** 2).sum(-1) / (n - 1)
    if s == 1:
        return grand, np.zeros_like(grand), ms_example, np.zeros_like(grand)
    ms_seed = n * ((rows - grand[..., None]) ** 2).sum(-1) / (s - 1)
    resid = x - rows[..., :, None] - cols[..., None, :] + grand[..., None, None]
    ms_residual = (resid**2).sum(axis=(-2, -1)) / ((s - 1) * (n - 1))
    return grand, ms_seed, ms_example, ms_residual


@dataclass(frozen=True)
class Test:
    """The test of mean = 0 for (..., S, n) arrays: arrays over the leading axes, or floats for one matrix."""

    mean: np.ndarray
    se: np.ndarray  # √((MS_seed + MS_example)/(S·n))
    weight: np.ndarray  # w = MS_seed/(MS_seed + MS_example): the seed term's share of se²
    df_seed: int  # S − 1 (0 with one seed)
    df_example: int  # n − 1
    p: np.ndarray  # two-sided

    def interval(self, alpha: float = ALPHA) -> tuple[float, float]:
        """The (1 − alpha) interval of one matrix's mean: the values the test would not reject."""
        q = behrens_fisher_quantile(1 - alpha / 2, float(self.weight), self.df_seed, self.df_example)
        half = q * float(self.se)
        return float(self.mean) - half, float(self.mean) + half


def t_test(x: np.ndarray) -> Test:
    """Test mean = 0 for (..., S, n) arrays with n ≥ 2 (see the module docstring).

    A zero standard error gives p = 1 for a zero mean (identical scores), else p = 0 (a constant shift).
    """
    s, n = x.shape[-2:]
    if n < 2:
        raise ValueError("a test needs at least 2 held-out examples")
    mean, ms_seed, ms_example, _ = _mean_squares(x)
    scale = np.maximum(1.0, np.abs(x).max(axis=(-2, -1)))
    # within float round-off of zero a mean or a spread is zero: identical scores must not look like a
    # certain effect, nor a constant shift like an uncertain one
    total = np.where(ms_seed + ms_example > (ROUND_OFF * scale) ** 2, ms_seed + ms_example, 0.0)
    se = np.sqrt(total / (s * n))
    weight = np.divide(ms_seed, total, out=np.zeros_like(total), where=total > 0)
    zero = np.abs(mean) <= ROUND_OFF * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, np.abs(mean) / np.where(se > 0, se, 1.0), 0.0)
    p = 2 * behrens_fisher_cdf(-t, weight, s - 1, n - 1)
    p = np.where(zero, 1.0, np.where(se > 0, np.minimum(p, 1.0), 0.0))
    return Test(mean, se, weight, s - 1, n - 1, p)


@dataclass(frozen=True)
class Variance:
    """Variance components of a (seeds × examples) matrix, and the test's behaviour in other designs.

    With one seed `seed` is None (not estimable) and `example` holds all the example-to-example
    variance (σ²_example + σ²_residual cannot be told apart), as the paired t-test sees it.
    """

    seeds: int
    examples: int
    seed: float | None
    example: float
    residual: float

    @property
    def seed_noise_known(self) -> bool:
        return self.seed is not None

    @property
    def per_observation(self) -> float:
        """Variance of a single difference d[s, i]: the scale of the standardised effect size."""
        return (self.seed or 0.0) + self.example + self.residual

    def design(self, seeds: int | None = None, examples: int | None = None) -> tuple[int, int]:
        s, n = seeds or self.seeds, examples or self.examples
        if s != self.seeds and not self.seed_noise_known:
            raise ValueError("one seed: how the test behaves with more seeds is unknown")
        return s, n

    def of_mean(self, seeds: int | None = None, examples: int | None = None) -> float:
        """τ²: the true variance of the mean over `seeds` × `examples` (default: this design)."""
        s, n = self.design(seeds, examples)
        return (self.seed or 0.0) / s + self.example / n + self.residual / (s * n)

    def expected_mean_squares(self, seeds: int | None = None, examples: int | None = None) -> tuple[float, float]:
        """E MS_seed and E MS_example of a `seeds` × `examples` design (E MS_seed = 0 with one seed)."""
        s, n = self.design(seeds, examples)
        if s == 1:
            return 0.0, self.example
        return self.residual + n * (self.seed or 0.0), self.residual + s * self.example


def variance(scores: Sequence | np.ndarray) -> Variance:
    """The variance components of a (seeds × examples) matrix with at least 2 examples.

    E MS_seed = σ²_res + n σ²_seed, E MS_example = σ²_res + S σ²_example, E MS_res = σ²_res: solved and
    truncated at zero.
    """
    x = as_matrix(scores)
    s, n = x.shape
    _, ms_seed, ms_example, ms_residual = (float(v) for v in _mean_squares(x))
    if s == 1:
        return Variance(1, n, None, ms_example, 0.0)
    return Variance(s, n, max(ms_seed - ms_residual, 0.0) / n, max(ms_example - ms_residual, 0.0) / s, ms_residual)


# ------------------------------------------------------------------------------- one comparison, one mean


@dataclass(frozen=True)
class Comparison:
    """A method against the baseline on the same held-out examples, paired by seed."""

    diff: float  # mean over seeds and examples of (method − baseline)
    ci95: tuple[float, float] | None  # the values the test would not reject; None with fewer than 2 examples
    p_value: float | None  # two-sided test of diff = 0; None with fewer than 2 examples (no test)
    effect_size: float | None  # diff / SD of one difference d[s, i]; None when that SD is 0 and diff is not
    seeds: int
    examples: int
    variance: Variance | None  # None with fewer than 2 examples

    @property
    def seed_noise_known(self) -> bool:
        """Whether the test counts seed noise: only then may the report claim a difference (`can_claim`)."""
        return self.variance is not None and can_claim(self.seeds)


def can_claim(seeds: int) -> bool:
    """A difference from random may be claimed only with ≥ 2 seeds: with one, seed-to-seed noise is unknown,
    and a lucky training seed (which moves every held-out example at once) would look like an effect."""
    return seeds >= 2


def compare(
    method_scores: Sequence | np.ndarray, baseline_scores: Sequence | np.ndarray, alpha: float = ALPHA
) -> Comparison:
    """Test a method against the baseline. Row s of both matrices must be the same training seed and
    column i the same held-out example (the report aligns them by seed and example id)."""
    m, b = as_matrix(method_scores), as_matrix(baseline_scores)
    if m.shape != b.shape:
        raise ValueError(
            f"method scores have shape {m.shape} but the baseline's {b.shape}: "
            "a paired comparison needs the same seeds and held-out examples"
        )
    d = m - b
    seeds, n = d.shape
    if n < 2:  # no variance to test against: refuse rather than report a p-value from nothing
        return Comparison(float(d.mean()), None, None, None, seeds, n, None)
    test = t_test(d)
    model = variance(d)
    mean = 0.0 if test.p == 1.0 else float(test.mean)  # float round-off of no difference is no difference
    return Comparison(
        mean, test.interval(alpha), float(test.p), _effect_size(mean, float(test.se), model), seeds, n, model
    )


def mean_ci(scores: Sequence | np.ndarray, alpha: float = ALPHA) -> tuple[float, float, float] | None:
    """(mean, lo, hi) of a method's scores, the same interval as the tests'; None below 2 examples.

    With one seed this is the t interval over the examples (seed noise unknown, as for the tests).
    """
    x = as_matrix(scores)
    if x.shape[1] < 2:
        return None
    test = t_test(x)
    return (float(test.mean), *test.interval(alpha))


def _effect_size(mean: float, se: float, model: Variance) -> float | None:
    """mean / SD of one difference; 0 for no difference, None for a certain one (the test's se is 0)."""
    if mean == 0:
        return 0.0
    return mean / math.sqrt(model.per_observation) if se > 0 else None


# ------------------------------------------------------------------------------------ many comparisons


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in the input order; None entries pass through as None.

    Comparing several methods (on several metrics) with random multiplies the chance of a lucky "win";
    Holm controls the family-wise error rate like Bonferroni but is uniformly more powerful. With the m
    valid p-values sorted ascending, p_(1) ≤ … ≤ p_(m): adj_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)),
    computed by statsmodels' multipletests(method="holm"); this wrapper only adds the None pass-through.
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
