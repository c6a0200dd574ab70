"""Power and planning: what a run can detect (the minimum detectable effect) and the examples or seeds it would
take to detect a difference (docs/statistics.md).

They use the variance components of stats.py's model (the ANOVA method-of-moments estimates truncated at zero:
Searle, Casella & McCulloch 1992) to project the expected mean squares of another design, and the test's
own critical value at the expected weight (`power`). Closed-form or fixed quadrature, like the tests.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

from distill.report.stats import ALPHA, Variance, behrens_fisher_quantile

POWER = 0.8  # the conventional power at which minimum detectable effects and sample sizes are stated
MAX_EXAMPLES = 10**8  # planning searches stop here: a difference that needs more is reported as out of reach
MAX_SEEDS = 10**5


def t_power(nc: float, df: float, alpha: float = ALPHA, threshold: float | None = None) -> float:
    """P(|T| > threshold) for a noncentral t on `df` df with noncentrality `nc`; the threshold defaults to
    the two-sided t critical value, which makes this the power of the t-test.

    For the paired t-test with n pairs and standardised effect d_z: nc = d_z·√n, df = n − 1, i.e.
    statsmodels' TTestPower, computed from scipy's noncentral t directly (TTestPower returns NaN for
    very small n with large effects).
    """
    from scipy import stats as st

    crit = st.t.ppf(1 - alpha / 2, df) if threshold is None else threshold
    nc = abs(nc)
    wrong_side = float(st.nct.cdf(-crit, df, nc))  # far below the centre this underflows to NaN; it is ~0 there
    return float(st.nct.sf(crit, df, nc)) + (0.0 if math.isnan(wrong_side) else wrong_side)


def power(
    diff: float, model: Variance, seeds: int | None = None, examples: int | None = None, alpha: float = ALPHA
) -> float:
    """Probability that `t_test` detects a true difference `diff` with `seeds` × `examples` (default: as run).

    One seed: the paired t-test's power, exactly. Several: se² is a sum of two scaled chi-squares with
    expectation E se² = (E MS_seed + E MS_example)/(S·n) ≥ τ², approximated (Satterthwaite 1946) by one
    on ν = (E MS_seed + E MS_example)² / (E MS_seed²/(S − 1) + E MS_example²/(n − 1)) df; the test
    rejects when |mean| > q·se, q the Behrens–Fisher critical value at the expected weight. So
    power ≈ P(|T_ν(diff/τ)| > q·√(E se²)/τ). At the MDE, simulated tests had 76–81% power (78–81% from 3
    seeds on) over 63 designs (docs/statistics.md).
    """
    s, n = model.design(seeds, examples)
    tau = math.sqrt(model.of_mean(s, n))
    if tau == 0:
        return 1.0 if diff else alpha
    if s == 1:
        return t_power(diff / tau, n - 1, alpha)
    ms_seed, ms_example = model.expected_mean_squares(s, n)
    total = ms_seed + ms_example
    df = total**2 / (ms_seed**2 / (s - 1) + ms_example**2 / (n - 1))
    crit = critical_value(alpha, ms_seed / total, s - 1, n - 1)
    return t_power(diff / tau, df, alpha, threshold=crit * math.sqrt(total / (s * n)) / tau)


@functools.lru_cache(maxsize=4096)
def critical_value(alpha: float, weight: float, df_seed: int, df_example: int) -> float:
    return behrens_fisher_quantile(1 - alpha / 2, weight, df_seed, df_example)


def detectable(model: Variance, alpha: float = ALPHA, pw: float = POWER) -> float:
    """The MDE: the true |difference| that this design's test detects with power `pw` (a root of `power`)."""
    from scipy.optimize import brentq

    tau = math.sqrt(model.of_mean())
    if tau == 0:
        return 0.0
    hi = tau
    while power(hi, model, alpha=alpha) < pw:
        hi *= 2
    return float(brentq(lambda d: power(d, model, alpha=alpha) - pw, 0.0, hi, xtol=1e-9 * tau))


@dataclass(frozen=True)
class Evidence:
    """How much a comparison can detect, and what would detect the difference it observed (at `POWER`)."""

    mde: float | None  # smallest true |difference| this design detects; None: no test (< 2 examples)
    n_needed: int | None  # held-out examples (at these seeds) to detect the observed difference; None: out of reach
    seeds_needed: int | None  # seeds (on these examples); None: unknowable (one seed) or out of reach


def evidence(model: Variance | None, observed: float, alpha: float = ALPHA, pw: float = POWER) -> Evidence:
    """The MDE of this design, and the examples or the seeds that would detect |observed| with power `pw`.

    All three come from `model` and `power` (the same variance and critical values as the test). The
    searches use that power rises with examples and with seeds; none is made for a zero difference, and
    none for seeds when one seed leaves the seed variance unknown.
    """
    if model is None:
        return Evidence(None, None, None)
    target = abs(observed)
    mde = detectable(model, alpha, pw)
    if target == 0:
        return Evidence(mde, None, None)
    n_needed = smallest(2, model.examples, MAX_EXAMPLES, lambda n: power(target, model, examples=n, alpha=alpha) >= pw)
    seeds_needed = (
        smallest(2, model.seeds, MAX_SEEDS, lambda s: power(target, model, seeds=s, alpha=alpha) >= pw)
        if model.seed_noise_known
        else None
    )
    return Evidence(mde, n_needed, seeds_needed)


def smallest(lo: int, start: int, cap: int, enough: Callable[[int], bool]) -> int | None:
    """Smallest k in [lo, cap] with enough(k), for a monotone `enough`; None if even `cap` is not enough.

    Doubles up from `start` (the design as run), or bisects down when `start` is already enough.
    """
    if enough(start):
        bad, good = lo - 1, start
    else:
        bad, good = start, min(start * 2, cap)
        while not enough(good):
            if good == cap:
                return None
            bad, good = good, min(good * 2, cap)
    while good - bad > 1:
        mid = (bad + good) // 2
        bad, good = (bad, mid) if enough(mid) else (mid, good)
    return good
