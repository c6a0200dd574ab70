"""Trial CPU planning: the last round of trials shares the CPUs a full round uses."""

from __future__ import annotations

import pytest

from distill.runtime.scheduling import trial_cpus


@pytest.mark.parametrize(
    "n, cpus, per, cap, node, expected",
    [
        (5, 2, 1, None, None, [1, 1, 1, 1, 2]),  # the quick job on 2 cores: the lone fifth trial gets both
        (4, 2, 1, None, None, [1, 1, 1, 1]),  # full rounds only: nothing to share
        (1, 2, 1, None, None, [2]),  # a lone baseline trial gets the machine
        (6, 8, 2, None, None, [2, 2, 2, 2, 4, 4]),  # 4 at a time; the last round's 2 trials split 8 CPUs
        (7, 8, 2, None, None, [2] * 7),  # 3 in the last round: 8 // 3 = 2 whole CPUs each, as asked
        (5, 16, 1, 4, None, [1, 1, 1, 1, 4]),  # max_concurrent_trials bounds a round
        (1, 32, 1, None, 8, [8]),  # never more than one node holds
        (3, 2, 1.5, None, None, [1.5, 1.5, 1.5]),  # one at a time: every round is full
    ],
)
def test_trial_cpus(n, cpus, per, cap, node, expected):
    assert trial_cpus(n, cpus, per, cap, node) == expected


def test_never_asks_for_more_than_a_full_round():
    for n in range(1, 20):
        for cpus in (1, 2, 3, 8):
            plan = trial_cpus(n, cpus, 1)
            assert len(plan) == n and min(plan) >= 1
            assert all(c <= cpus for c in plan)
