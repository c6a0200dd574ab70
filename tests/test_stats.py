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
