"""The statistics against scipy/statsmodels and hand-checkable cases (the calibration is in test_calibration.py)."""

import math

import numpy as np
import pytest

from distill.report import planning, stats

# ------------------------------------------------------------------------ the Behrens–Fisher distribution


def _quad_cdf(t: float, w: float, df_seed: int, df_example: int) -> float:
    """P(√w·T1 + √(1 − w)·T2 ≤ t) by scipy's adaptive quadrature, split at the kink of the inner CDF."""
    from scipy import integrate
    from scipy.special import gammaln, stdtr

    a, b = math.sqrt(w), math.sqrt(1 - w)
    norm = math.exp(gammaln((df_seed + 1) / 2) - gammaln(df_seed / 2)) / math.sqrt(df_seed * math.pi)

    def f(x):
        return norm * (1 + x * x / df_seed) ** (-(df_seed + 1) / 2) * stdtr(df_example, (t - a * x) / b)

    return sum(
        integrate.quad(f, lo, hi, epsabs=1e-14, epsrel=1e-11, limit=200)[0]
        for lo, hi in ((-np.inf, t / a), (t / a, np.inf))
    )


@pytest.mark.parametrize("df_seed, df_example", [(1, 1), (1, 49), (2, 4), (4, 1), (2, 499)])
def test_behrens_fisher_cdf_matches_adaptive_quadrature(df_seed, df_example):
    for w in (0.02, 0.5, 0.98):
        for t in (-2.0, -4.0, -15.0):
            ref = _quad_cdf(t, w, df_seed, df_example)
            got = float(stats.behrens_fisher_cdf(t, w, df_seed, df_example))
            assert got == pytest.approx(ref, rel=0.01), (w, t)


def test_behrens_fisher_ends_are_student_t_and_it_is_symmetric():
    from scipy.stats import t as student

    t = np.linspace(-6, 6, 13)
    assert stats.behrens_fisher_cdf(t, 0.0, 2, 30) == pytest.approx(student.cdf(t, 30), abs=1e-12)
    assert stats.behrens_fisher_cdf(t, 1.0, 2, 30) == pytest.approx(student.cdf(t, 2), abs=1e-12)
    assert stats.behrens_fisher_cdf(t, 0.0, 0, 30) == pytest.approx(student.cdf(t, 30), abs=1e-12)  # one seed
    mid = stats.behrens_fisher_cdf(t, 0.4, 2, 30)
    assert mid + mid[::-1] == pytest.approx(np.ones_like(t), abs=1e-6)
    q = stats.behrens_fisher_quantile(0.975, 0.4, 2, 30)
    assert float(stats.behrens_fisher_cdf(q, 0.4, 2, 30)) == pytest.approx(0.975, abs=1e-9)
    assert student.ppf(0.975, 30) < q < student.ppf(0.975, 2)  # between its two ends


# ----------------------------------------------------------------------------------------- the test


def test_one_seed_is_scipys_paired_t_test():
    from scipy.stats import t as student
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.4, 40)
    method = base + rng.normal(0.01, 0.03, 40)
    comp = stats.compare(method, base)
    ref = ttest_rel(method, base)
    assert comp.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    half = student.ppf(0.975, 39) * (method - base).std(ddof=1) / math.sqrt(40)
    assert comp.ci95 == pytest.approx(((method - base).mean() - half, (method - base).mean() + half), rel=1e-9)
    assert comp.effect_size == pytest.approx(ref.statistic / math.sqrt(40), rel=1e-12)  # Cohen's d_z
    assert not comp.seed_noise_known and comp.variance.seed is None


def test_mean_squares_are_the_two_way_anovas():
    """statsmodels' ANOVA of d ~ C(seed) + C(example) has the same mean squares as the test."""
    import pandas as pd
    import statsmodels.api as sm
    from statsmodels.formula.api import ols

    rng = np.random.default_rng(2)
    d = rng.normal(0, 0.1, (3, 12)) + rng.normal(0, 0.05, (3, 1)) + rng.normal(0, 0.05, (1, 12))
    frame = pd.DataFrame({"d": d.ravel(), "seed": np.repeat(range(3), 12), "example": np.tile(range(12), 3)})
    table = sm.stats.anova_lm(ols("d ~ C(seed) + C(example)", frame).fit())
    ms = table["sum_sq"] / table["df"]
    test = stats.t_test(d)
    assert float(test.se) ** 2 == pytest.approx((ms["C(seed)"] + ms["C(example)"]) / d.size, rel=1e-10)
    assert float(test.weight) == pytest.approx(ms["C(seed)"] / (ms["C(seed)"] + ms["C(example)"]), rel=1e-10)
    model = stats.variance(d)
    assert model.residual == pytest.approx(ms["Residual"], rel=1e-10)
    assert model.seed == pytest.approx(max(ms["C(seed)"] - ms["Residual"], 0) / 12, rel=1e-10)
    assert model.example == pytest.approx(max(ms["C(example)"] - ms["Residual"], 0) / 3, rel=1e-10)


def test_the_test_is_vectorised_over_leading_axes():
    x = np.random.default_rng(3).normal(0.01, 0.1, (4, 3, 20))
    batch = stats.t_test(x)
    for i in range(4):
        single = stats.t_test(x[i])
        assert float(batch.p[i]) == pytest.approx(float(single.p), rel=1e-12)
        assert float(batch.se[i]) == pytest.approx(float(single.se), rel=1e-12)


def test_a_seed_shift_is_noise_to_the_test_but_an_effect_to_the_per_example_test():
    """Three seeds whose trained models differ by a shift that moves every example: the per-example test on the
    seed-averaged scores calls a mean of +0.01 certain; the seeds × examples test does not."""
    rng = np.random.default_rng(4)
    d = np.array([[0.03], [0.0], [0.0]]) + rng.normal(0, 0.02, (3, 500))  # one seed's model is shifted by 0.03
    per_example = stats.compare(d.mean(axis=0), np.zeros(500))
    assert per_example.p_value < 1e-6
    comp = stats.compare(d, np.zeros_like(d))
    assert comp.p_value > 0.05 and comp.ci95[0] < 0 < comp.ci95[1]
    assert comp.variance.seed > 1e-4 and comp.seed_noise_known


def test_identical_constant_and_too_small_inputs():
    x = np.random.default_rng(5).uniform(size=(2, 30))
    same = stats.compare(x, x.copy())
    assert same.diff == 0 and same.p_value == 1.0 and same.effect_size == 0.0
    assert stats.significant(stats.holm_adjust([same.p_value])[0]) is False
    shift = stats.compare(x + 0.1, x)
    assert shift.p_value == 0.0 and shift.effect_size is None and shift.ci95 == pytest.approx((0.1, 0.1))
    one = stats.compare([[0.3]], [[0.2]])  # one example: refuse to test rather than give a p-value from nothing
    assert one.p_value is None and one.ci95 is None and one.variance is None
    assert planning.evidence(one.variance, one.diff) == planning.Evidence(None, None, None)
    assert stats.mean_ci([[0.3]]) is None
    with pytest.raises(ValueError):
        stats.compare(np.zeros((1, 5)), np.zeros((1, 6)))
    with pytest.raises(ValueError):
        stats.compare([0.1, float("nan")], [0.1, 0.2])


def test_mean_ci_contains_the_mean_and_narrows_with_examples():
    rng = np.random.default_rng(6)
    small, large = rng.uniform(0, 1, (3, 20)), rng.uniform(0, 1, (3, 2000))
    m_s, lo_s, hi_s = stats.mean_ci(small)
    m_l, lo_l, hi_l = stats.mean_ci(large)
    assert lo_s < m_s < hi_s and lo_l < m_l < hi_l and m_s == pytest.approx(small.mean())
    assert hi_l - lo_l < (hi_s - lo_s) / 3


# --------------------------------------------------------------------------------------- Holm, power


def test_holm_matches_hand_computation_and_statsmodels():
    from statsmodels.stats.multitest import multipletests

    # sorted: 0.01*4=0.04, 0.02*3=0.06, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.04, 0.06, 0.06, 0.06
    assert stats.holm_adjust([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert stats.holm_adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm_adjust([0.2, None, 0.01]) == pytest.approx([0.2, None, 0.02])
    assert stats.holm_adjust([]) == [] and stats.significant(None) is None
    p = np.random.default_rng(7).uniform(0, 0.2, size=9)
    assert stats.holm_adjust(list(p)) == pytest.approx(list(multipletests(p, method="holm")[1]), abs=1e-15)
    with pytest.raises(ValueError):
        stats.holm_adjust([1.5])


def _sm_power(effect: float, n: int, alpha: float = 0.05) -> float:
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().power(effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided"))


@pytest.mark.parametrize("n", [4, 10, 50, 400, 5000])
@pytest.mark.parametrize("effect", [0.05, 0.3, 1.0])
def test_t_power_is_statsmodels_ttestpower(n, effect):
    assert planning.t_power(effect * math.sqrt(n), n - 1, alpha=0.05 / 3) == pytest.approx(
        _sm_power(effect, n, 0.05 / 3), abs=1e-9
    )


def test_t_power_is_finite_where_statsmodels_gives_nan():
    assert np.isnan(_sm_power(10.4, 3))  # statsmodels 0.15.0: the reason t_power uses scipy's nct directly
    assert planning.t_power(10.4 * math.sqrt(2), 1) < 0.8 < planning.t_power(10.4 * math.sqrt(3), 2) <= 1.0


def test_one_seed_mde_and_examples_needed_are_ttestpowers():
    rng = np.random.default_rng(8)
    base = rng.uniform(0.1, 0.4, size=50)
    method = base + rng.normal(0.004, 0.04, size=50)
    comp = stats.compare(method, base)
    ev = planning.evidence(comp.variance, comp.diff, alpha=0.05)
    d = method - base
    sd = d.std(ddof=1)
    assert _sm_power(ev.mde / sd, 50) == pytest.approx(0.8, abs=1e-6)
    observed = abs(d.mean()) / sd
    assert ev.n_needed > 50  # the observed difference is below the MDE ...
    assert _sm_power(observed, ev.n_needed) >= 0.8 > _sm_power(observed, ev.n_needed - 1)  # ... and this n fixes it
    stricter = planning.evidence(comp.variance, comp.diff, alpha=0.05 / 4)
    assert stricter.mde > ev.mde and stricter.n_needed > ev.n_needed
    assert ev.seeds_needed is None  # one seed: seed noise cannot be estimated


def test_seeds_and_examples_needed_are_the_smallest_that_reach_the_power():
    model = stats.Variance(3, 100, seed=2e-6, example=1e-3, residual=1e-2)
    observed = 0.012
    ev = planning.evidence(model, observed)
    assert ev.mde > observed
    assert (
        planning.power(observed, model, seeds=ev.seeds_needed)
        >= 0.8
        > planning.power(observed, model, seeds=ev.seeds_needed - 1)
    )
    assert (
        planning.power(observed, model, examples=ev.n_needed)
        >= 0.8
        > planning.power(observed, model, examples=ev.n_needed - 1)
    )
    # seed noise caps what examples can do, example noise what seeds can do: out of reach is None, never a count
    assert planning.evidence(stats.Variance(3, 100, 1e-3, 1e-3, 1e-2), observed).n_needed is None
    assert planning.evidence(stats.Variance(3, 100, 0.0, 1e-1, 1e-2), observed).seeds_needed is None
    # already detectable: the search counts down, never below 2
    easy = planning.evidence(model, 10 * observed)
    assert 2 <= easy.seeds_needed <= 3 and 2 <= easy.n_needed <= 100


def test_power_predicts_the_simulated_power_of_the_test():
    """At the MDE of a 3-seed design the test itself (on simulated normal matrices) has 80% power."""
    seeds, n, sd = 3, 40, (0.01, 0.05, 0.08)
    model = stats.Variance(seeds, n, sd[0] ** 2, sd[1] ** 2, sd[2] ** 2)
    mde = planning.detectable(model)
    rng = np.random.default_rng(9)
    x = (
        mde
        + rng.normal(0, sd[0], (4000, seeds, 1))
        + rng.normal(0, sd[1], (4000, 1, n))
        + rng.normal(0, sd[2], (4000, seeds, n))
    )
    assert np.mean(stats.t_test(x).p < 0.05) == pytest.approx(0.8, abs=0.04)
