"""Hand-checkable cases for the bootstrap, the paired test and Holm's correction."""

import numpy as np
import pytest

from distill import stats


def test_ci_contains_mean_and_narrows_with_more_examples():
    rng = np.random.default_rng(1)
    small = rng.uniform(0, 1, size=(2, 20))
    large = rng.uniform(0, 1, size=(2, 2000))
    m_s, lo_s, hi_s = stats.bootstrap_mean_ci(small, n_boot=1000)
    m_l, lo_l, hi_l = stats.bootstrap_mean_ci(large, n_boot=1000)
    assert lo_s <= m_s <= hi_s and lo_l <= m_l <= hi_l
    assert m_s == pytest.approx(small.mean())
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3  # ~sqrt(100) = 10x narrower in theory


def test_ci_constant_scores_is_a_point_and_one_dim_input_is_one_seed():
    assert stats.bootstrap_mean_ci(np.full((3, 10), 0.4), n_boot=200) == pytest.approx((0.4, 0.4, 0.4))
    assert stats.bootstrap_mean_ci([0.2, 0.4], n_boot=50)[0] == pytest.approx(0.3)


def test_seed_resampling_widens_interval_when_seeds_disagree():
    base = np.random.default_rng(2).uniform(0.3, 0.5, size=50)
    agree = np.vstack([base, base])
    disagree = np.vstack([base - 0.1, base + 0.1])
    _, lo_a, hi_a = stats.bootstrap_mean_ci(agree, n_boot=2000)
    _, lo_d, hi_d = stats.bootstrap_mean_ci(disagree, n_boot=2000)
    assert hi_d - lo_d > hi_a - lo_a


def test_bootstrap_is_deterministic():
    x = np.random.default_rng(3).uniform(size=(2, 30))
    assert stats.bootstrap_mean_ci(x, n_boot=500) == stats.bootstrap_mean_ci(x, n_boot=500)
    y = x + 0.01
    assert stats.paired_bootstrap_test(y, x, n_boot=500) == stats.paired_bootstrap_test(y, x, n_boot=500)


def test_identical_method_has_p_one_and_is_not_significant():
    x = np.random.default_rng(4).uniform(size=(2, 30))
    t = stats.paired_bootstrap_test(x.copy(), x, n_boot=1000)
    assert t.p_value == pytest.approx(1.0)
    assert t.mean_diff == 0.0 and t.effect_size == 0.0
    assert stats.significant(stats.holm_adjust([t.p_value])[0]) is False


def test_clearly_better_method_is_significant():
    rng = np.random.default_rng(5)
    rand = rng.uniform(0.1, 0.4, size=(2, 30))
    better = rand + 0.05 + rng.normal(0, 0.01, size=rand.shape)
    t = stats.paired_bootstrap_test(better, rand, n_boot=2000)
    assert t.p_value < 0.05
    assert t.p_value == pytest.approx(1 / 2001)  # no null resample comes close
    assert t.mean_diff == pytest.approx(0.05, abs=0.01)
    assert t.effect_size > 2
    assert t.diff_ci95[0] > 0


def test_noise_only_difference_is_not_significant():
    rng = np.random.default_rng(6)
    rand = rng.uniform(0.1, 0.4, size=(1, 30))
    noisy = rand + rng.normal(0, 0.05, size=rand.shape)
    noisy = noisy - (noisy - rand).mean()  # zero mean difference, pure noise
    assert stats.paired_bootstrap_test(noisy, rand, n_boot=1000).p_value > 0.5


def test_constant_nonzero_difference_has_undefined_effect_size():
    x = np.linspace(0, 0.5, 10)
    t = stats.paired_bootstrap_test(x + 0.1, x, n_boot=200)
    assert t.effect_size is None and t.p_value < 0.05


def test_paired_test_rejects_mismatched_examples():
    with pytest.raises(ValueError):
        stats.paired_bootstrap_test(np.zeros((1, 5)), np.zeros((1, 6)))


def test_holm_matches_hand_computation():
    # sorted: 0.01*4=0.04, 0.02*3=0.06, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.04, 0.06, 0.06, 0.06
    adjusted = stats.holm_adjust([0.03, 0.01, 0.04, 0.02])
    assert adjusted == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert stats.holm_adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm_adjust([0.2, None, 0.01]) == pytest.approx([0.2, None, 0.02])
    assert stats.holm_adjust([]) == []
    assert stats.significant(None) is None


def test_holm_rejects_invalid_p():
    with pytest.raises(ValueError):
        stats.holm_adjust([1.5])


# ------------------------------------------------------------------ against scipy / statsmodels

def _sm_power(effect: float, n: int, alpha: float = 0.05) -> float:
    from statsmodels.stats.power import TTestPower

    return float(TTestPower().power(effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided"))


@pytest.mark.parametrize("n", [4, 10, 50, 400, 5000])
@pytest.mark.parametrize("effect", [0.05, 0.3, 1.0])
def test_t_power_is_statsmodels_ttestpower(n, effect):
    assert stats.t_power(effect, n, alpha=0.05 / 3) == pytest.approx(_sm_power(effect, n, 0.05 / 3), abs=1e-9)


def test_t_power_is_finite_where_statsmodels_gives_nan():
    assert np.isnan(_sm_power(10.4, 3))  # statsmodels 0.15.0: the reason t_power uses scipy's nct directly
    assert stats.t_power(10.4, 2) < 0.8 < stats.t_power(10.4, 3) <= 1.0


def test_effect_size_is_scipys_paired_t_statistic_over_sqrt_n():
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(7)
    base = rng.uniform(0.1, 0.4, size=(3, 40))
    method = base + rng.normal(0.01, 0.03, size=base.shape)
    t = stats.paired_bootstrap_test(method, base, n_boot=200)
    ref = ttest_rel(method.mean(axis=0), base.mean(axis=0))
    assert t.effect_size == pytest.approx(ref.statistic / np.sqrt(40), rel=1e-12)


def test_paired_bootstrap_p_and_interval_agree_with_scipy_at_large_n():
    from scipy.stats import bootstrap, ttest_rel

    rng = np.random.default_rng(8)
    base = rng.uniform(0.1, 0.4, size=400)
    method = base + rng.normal(0.006, 0.05, size=400)  # t-test p around 0.02
    t = stats.paired_bootstrap_test(method, base, n_boot=20000)
    assert t.p_value == pytest.approx(ttest_rel(method, base).pvalue, abs=0.01)
    ref = bootstrap((method - base,), np.mean, n_resamples=20000, method="percentile", random_state=0)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert t.diff_ci95 == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=0.03 * width)


def test_one_seed_ci_agrees_with_scipy_bootstrap():
    from scipy.stats import bootstrap

    x = np.random.default_rng(9).beta(2, 5, size=300)
    _, lo, hi = stats.bootstrap_mean_ci(x, n_boot=20000)
    ref = bootstrap((x,), np.mean, n_resamples=20000, method="percentile", random_state=0).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=0.03 * (ref.high - ref.low))


def test_holm_is_statsmodels_multipletests():
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(10).uniform(0, 0.2, size=9)
    assert stats.holm_adjust(list(p)) == pytest.approx(list(multipletests(p, method="holm")[1]), abs=1e-15)


def test_mde_and_n_needed_match_the_noncentral_t_power():
    rng = np.random.default_rng(11)
    base = rng.uniform(0.1, 0.4, size=50)
    method = base + rng.normal(0.004, 0.04, size=50)
    ev = stats.evidence(method, base, alpha=0.05, power=0.8)
    d = method - base
    sd = d.std(ddof=1)
    assert _sm_power(ev.mde / sd, 50) == pytest.approx(0.8, abs=1e-6)
    observed = abs(d.mean()) / sd
    assert ev.n_needed > 50  # the observed difference is below the MDE ...
    assert _sm_power(observed, ev.n_needed) >= 0.8 > _sm_power(observed, ev.n_needed - 1)  # ... and this n fixes it
    stricter = stats.evidence(method, base, alpha=0.05 / 4)
    assert stricter.mde > ev.mde and stricter.n_needed > ev.n_needed
    assert ev.seeds_needed is None  # one seed: seed noise cannot be estimated


def test_paired_bootstrap_test_has_about_80_percent_power_at_the_mde():
    """The MDE comes from the t-test's power function; the report's test is the bootstrap one. Simulate."""
    rng = np.random.default_rng(12)
    from statsmodels.stats.power import TTestPower

    n, sd = 60, 0.05
    mde = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8) * sd  # at the true sd
    hits = sum(stats.paired_bootstrap_test(rng.normal(mde, sd, size=n), np.zeros(n), n_boot=1000, seed=i).p_value < 0.05
               for i in range(300))
    assert 0.72 <= hits / 300 <= 0.92


def test_seeds_needed_projects_the_seed_noise():
    rng = np.random.default_rng(13)
    n, seeds = 200, 2
    example = rng.uniform(0.1, 0.4, size=n)
    gain = 0.01

    def run(s: int):
        base = example + rng.normal(0, 0.004, size=n) + rng.normal(0, 0.08, size=(s, n))  # seed noise dominates
        method = example + gain + rng.normal(0, 0.004, size=n) + rng.normal(0, 0.08, size=(s, n))
        return method, base

    first = run(seeds)
    observed = abs(stats.paired_differences(*first).mean())
    ev = stats.evidence(*first)
    assert ev.mde > observed and ev.seeds_needed is not None and ev.seeds_needed > seeds
    # a fresh run with that many seeds has its MDE down to (about) the difference the first run observed
    assert stats.evidence(*run(ev.seeds_needed)).mde == pytest.approx(observed, rel=0.25)
    # when the example-level noise alone exceeds the target, no number of seeds is enough
    noisy = example + rng.normal(0, 0.3, size=n)
    assert stats.evidence(np.vstack([noisy + 0.001, noisy + 0.002]), np.vstack([example, example + 0.001])).seeds_needed is None


def test_evidence_edge_cases():
    x = np.linspace(0, 0.5, 10)
    assert stats.evidence(x, x) == stats.Evidence(0.0, None, None)  # identical: nothing to detect
    assert stats.evidence(x + 0.1, x).n_needed == 10  # a constant shift is already certain
    assert stats.evidence([0.3], [0.2]) == stats.Evidence(None, None, None)  # one example: no variance
