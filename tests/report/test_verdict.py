"""Verdicts (distill/report/verdict.py) and the sequential design's schedule (distill/report/sequential.py).

The error rates of both under the crossed seeds × examples model are in tests/report/test_sequential_calibration.py.
"""

import numpy as np
import pytest

from distill.report import planning, sequential, stats, verdict


def _matrix(mean: float, seeds: int, n: int, noise: float, seed_sd: float = 0.0, rng_seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(rng_seed)
    return mean + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, noise, (seeds, n))


@pytest.mark.parametrize(
    "mean, noise, higher, expected",
    [
        (0.05, 0.01, True, "better"),
        (-0.05, 0.01, True, "worse"),
        (-0.05, 0.01, False, "better"),  # held-out loss: lower is better
        (0.0005, 0.01, True, "equivalent"),
        (0.02, 0.2, True, "undecided"),
    ],
)
def test_each_verdict_is_read_from_the_interval(mean, noise, higher, expected):
    found = verdict.judge(_matrix(mean, 3, 100, noise), 0.01, verdict.level(4), higher)
    assert found.verdict == expected and found.level == pytest.approx(1 - 0.05 / 4)
    lo, hi = found.interval
    assert {"better": lo > 0 if higher else hi < 0, "worse": hi < 0 if higher else lo > 0}.get(expected, True)
    if expected == "equivalent":
        assert -0.01 < lo and hi < 0.01
    if expected == "undecided":
        assert lo < 0 < hi and (lo < -0.01 or hi > 0.01) and found.seeds_to_decide > 3
    else:
        assert found.seeds_to_decide is None


def test_the_vectorised_decision_is_the_intervals_on_every_matrix():
    """`decide` (no quantile search, used by the simulations) agrees with `Test.interval` (used by the report)."""
    rng = np.random.default_rng(3)
    each, margin = verdict.level(6, 3), 0.05
    x = rng.normal(0, 0.03, (400, 5, 20)) + rng.normal(0, 0.005, (400, 5, 1)) + rng.uniform(-0.08, 0.08, (400, 1, 1))
    codes = verdict.decide(stats.t_test(x), margin, each)
    for code, matrix in zip(codes, x):
        lo, hi = stats.t_test(matrix).interval(each)
        expected = 1 if lo > 0 else 2 if hi < 0 else 3 if -margin < lo and hi < margin else 0
        assert code == expected
    assert set(codes) == {0, 1, 2, 3}  # every verdict occurred


def test_one_seed_or_one_example_makes_no_claim():
    assert verdict.judge(_matrix(0.5, 1, 50, 0.01), 0.01, 0.05, True, claimable=False).verdict == verdict.NO_CLAIM
    assert verdict.judge(_matrix(0.5, 3, 1, 0.01), 0.01, 0.05, True).verdict == verdict.NO_CLAIM


def test_the_level_splits_alpha_over_tests_and_looks():
    assert verdict.level(16) == pytest.approx(0.05 / 16) and verdict.level(16, 3) == pytest.approx(0.05 / 48)


def test_seeds_to_decide_is_the_smallest_with_the_power():
    model = stats.variance(_matrix(0.0, 3, 150, 0.1, seed_sd=0.01, rng_seed=5))
    each, margin, diff = verdict.level(16), 0.02, 0.004
    needed = verdict.seeds_to_decide(model, diff, margin, each)
    assert needed > 3
    assert verdict.decide_power(diff, model, margin, each, seeds=needed) >= planning.POWER
    assert verdict.decide_power(diff, model, margin, each, seeds=needed - 1) < planning.POWER
    # halfway to the margin decides slowest: the interval must be narrower than δ/2 to exclude 0 or fit in ±δ
    assert verdict.seeds_to_decide(model, margin / 2, margin, each) > needed


def test_the_schedule_reads_only_scheduled_seed_counts():
    design = sequential.Design(first=3, step=2, looks=3)
    assert [design.seeds_at(k) for k in (1, 2, 3)] == [3, 5, 7]
    assert [design.usable(s) for s in (2, 3, 4, 5, 6, 7, 9)] == [2, 3, 3, 5, 5, 7, 7]
    assert [design.look_of(s) for s in (3, 5, 7)] == [1, 2, 3]
    assert sequential.Design(3).usable(8) == 8  # a fixed design: every seed counts
    assert sequential.of_run({"seeds": 2, "adaptive": {"enabled": True, "looks": 4, "seeds_per_look": 1}}) == (
        sequential.Design(2, 1, 4)
    )
    assert sequential.of_run({"seeds": 3}) == sequential.Design(3) and sequential.of_run(None) == sequential.Design(1)
