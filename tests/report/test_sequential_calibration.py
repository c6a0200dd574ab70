"""The verdicts of an adaptive run make a false claim in at most 5% of runs, whenever it stops (item 2 of issue 26).

Runs scripts/calibrate_sequential.py's simulation (docs/statistics.md has the full grid at 4,000 runs per cell) on
a reduced grid: the exact corner of the test (persistent: all example noise favours one side in every seed) and
the even split, first rounds of 2 and 3 seeds, 5 and 50 held-out examples, seed SD 0 and 0.01; under the null (any
*better*/*worse* is false) and at a true difference of +δ (any *equivalent* is false). Every cell must stay under
the binomial bound for a true 5% rate, jointly at 99% over the cells.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import calibrate_sequential  # noqa: E402
import calibrate_stats  # noqa: E402

from distill.report import stats  # noqa: E402

SIMS = 800  # per cell: the bound is then about 8.6% over the 16 cells of one table


@pytest.mark.parametrize("scenario", ["persistent", "even"])
@pytest.mark.parametrize("truth", ["null", "margin"])
def test_no_cell_makes_a_false_claim_in_more_than_five_percent_of_runs(scenario, truth):
    cells = calibrate_sequential.table(SIMS, scenario, truth, firsts=(2, 3), examples=(5, 50))
    limit = calibrate_stats.bound(SIMS, len(cells))
    assert len(cells) == 8 and limit < 0.09
    worst = max(cells, key=lambda c: c.false_rate)
    assert worst.false_rate <= limit, worst
    assert all(1 <= c.mean_looks <= calibrate_sequential.LOOKS for c in cells)


def test_the_check_fails_a_level_that_is_not_split():
    """Intervals at 95% each (no split over methods or looks) make false claims far beyond the bound here."""
    naive = calibrate_sequential.cell(np.random.default_rng(0), SIMS, "even", "null", 0.01, 2, 50, each=stats.ALPHA)
    assert naive.false_rate > calibrate_stats.bound(SIMS, 16)
