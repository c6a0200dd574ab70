"""The planner (distill/report/plan.py): the cheapest seeds × held-out examples that reach a target MDE."""

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from distill.report import plan, planning, stats

ROOT = Path(__file__).resolve().parents[2]
PILOT = ROOT / "docs/results/scitldr-loss-cpu"


def _reaches(model, target, alpha, s, n):
    return planning.power(target, model, seeds=s, examples=n, alpha=alpha) >= planning.POWER


def test_the_plan_is_the_cheapest_design_that_reaches_the_target():
    """Brute force over every design up to 7 seeds × 60 examples finds none cheaper that reaches the target."""
    model = stats.Variance(3, 50, 0.0004, 0.01, 0.01)
    cost = plan.Costs(arms=4, per_trial=30.0, per_example=1.0, scoring=1.0, generation=None)
    target, alpha = 0.07, 0.05 / 6
    found = plan.cheapest(model, cost, target, alpha, max_examples=60)
    best = found.best
    assert best is not None and _reaches(model, target, alpha, best.seeds, best.examples)
    assert best.mde <= target and best.seconds == cost.of(best.seeds, best.examples)
    reaching = [(s, n) for s, n in itertools.product(range(2, 8), range(2, 61)) if _reaches(model, target, alpha, s, n)]
    assert min(cost.of(s, n) for s, n in reaching) == pytest.approx(best.seconds)


def test_seed_noise_buys_seeds_and_costly_trials_buy_examples():
    """Seed noise can only be averaged by seeds; when trials are dear and examples cheap, examples carry the rest."""
    seedy = stats.Variance(3, 100, 0.002, 0.001, 0.01)
    cheap_trials = plan.Costs(4, per_trial=1.0, per_example=1.0, scoring=None, generation=None)
    dear_trials = plan.Costs(4, per_trial=1000.0, per_example=0.01, scoring=None, generation=None)
    by_cost = [plan.cheapest(seedy, c, 0.08, 0.05, max_examples=5000).best for c in (cheap_trials, dear_trials)]
    assert by_cost[0].seeds >= by_cost[1].seeds and by_cost[0].examples < by_cost[1].examples


def test_costs_and_variance_come_from_the_pilots_records():
    from distill.report.load import load_trials
    from distill.store.records import HELDOUT_LOSS

    trials = load_trials(PILOT)
    cost = plan.costs(trials)
    random0 = next(t.metrics for t in trials if t.metrics.trial == "random-s0")
    assert cost.arms == 18 and cost.generation is None
    assert 1.5 < cost.per_example < 4.0 and cost.scoring == pytest.approx(cost.per_example, rel=1e-3)
    assert random0.eval_seconds / random0.n_eval == pytest.approx(2.47, abs=0.01)  # the record it reads
    model = plan.pooled(trials, HELDOUT_LOSS)  # an adaptive run: 4 seeds for most methods, 6 for gradient_match
    assert model.seeds in (4, 6) and model.examples == 36 and model.seed > 0


def test_distill_plan_refuses_bad_input_in_one_line(tmp_path):
    for args, words in (
        (["--mde", "abc"], "--mde abc is not a positive number"),
        (["--mde", "1%", "--metric", "bleu"], "--metric bleu is not a score"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "distill", "plan", str(PILOT), *args], capture_output=True, text=True, cwd=ROOT
        )
        assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1


def test_the_plan_reads_large_designs_with_thousands_separators():
    """A design at the edge of reach is six or seven digits of examples: written as the report's other counts."""
    from distill.store.records import ROUGE_L

    cost = plan.Costs(6, per_trial=100.0, per_example=7.0, scoring=2.4, generation=4.3)
    found = plan.cheapest(stats.Variance(3, 50, 0.0004, 0.01, 0.01), cost, 0.004, 0.05)
    text = "\n".join(plan.describe(found, cost, ROUGE_L, 2))
    assert found.best.examples >= 1000 and f"{found.best.examples:,} held-out examples**" in text
