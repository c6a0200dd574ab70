"""The cheapest design that can decide: which (seeds, held-out examples) reaches a target MDE at the least compute,
from a pilot run's variance components and its measured costs (docs/statistics.md, Planning a run).

The variance model (stats.py) says what a design detects; the pilot's trials say what it costs. A run of A arms
(the methods, random, and the full baseline when it has one) with S seeds and n held-out examples costs

    A · S · (t_trial + n · t_example)

trial-seconds: t_trial is what a trial spends apart from scoring (selecting, loading, training: time_s −
eval_seconds) and t_example what scoring one held-out example takes (eval_seconds / n_eval: the teacher-forced
loss pass, and generation with its ROUGE and BERTScore when the run generates). Seeds buy both kinds of noise down
and cost whole trials; examples buy only the example terms and cost scoring. For each S the fewest examples that
reach the MDE (planning.power is monotone in n) give one candidate; the cheapest candidate wins, and the search stops
once the training of S seeds alone costs more than it (S on SEED_LADDER).

Planned conservatively: the variance components are the largest over the pilot's comparisons (a design that
reaches the MDE for the noisiest method reaches it for every one), at the report's level α/m.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from distill.errors import DistillError
from distill.report import planning, stats
from distill.report.rows import _pairs, _score_matrices
from distill.report.sequential import Design
from distill.store.records import FULL, RANDOM, Metric, TrialRecord

# the seed counts the planner tries: every one to 10, then steps of 15–25% up to 200 (a design that needs more is out
# of reach): near the optimum the cost is flat in the seeds, so the steps cost little and save most power calls
SEED_LADDER = (*range(2, 11), 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 200)
MAX_PLANNED_SEEDS = SEED_LADDER[-1]
DEFAULT_PARALLEL = 2  # trials at once for wall times: 2 CPU cores, one trial each, as the published runs were timed


@dataclass(frozen=True)
class Costs:
    """Measured costs of the pilot, in seconds, as means over its trials (full-baseline trials excluded)."""

    arms: int  # trials per seed: the methods, random, and full when the pilot had it
    per_trial: float  # t_trial: selecting, loading and training one trial (time_s − eval_seconds)
    per_example: float  # t_example: scoring one held-out example (eval_seconds / n_eval), all of it
    scoring: float | None  # of which the held-out-loss pass (heldout_loss_seconds / n_eval)
    generation: float | None  # of which generation (generate_seconds / n_eval); None: the pilot did not generate

    def of(self, seeds: int, examples: int) -> float:
        """Trial-seconds of a seeds × examples run of every arm."""
        return self.arms * seeds * (self.per_trial + examples * self.per_example)


@dataclass(frozen=True)
class Candidate:
    seeds: int
    examples: int
    seconds: float  # trial-seconds (divide by the trials running at once for wall time)
    mde: float  # what it detects at 80% power (≤ the target)


@dataclass(frozen=True)
class Plan:
    target: float
    alpha: float
    best: Candidate | None  # None: no design up to MAX_PLANNED_SEEDS × max_examples reaches the target
    candidates: list[Candidate]  # the cheapest design for each number of seeds tried, fewest seeds first


def costs(trials: list[TrialRecord]) -> Costs | None:
    """The pilot's measured costs; None when its trials did not record the times (older distills)."""
    ts = [t.metrics for t in trials if t.metrics.method != FULL]
    if not ts or any(t.time_s is None or t.eval_seconds is None or not t.n_eval for t in ts):
        return None

    def mean(values: list[float | None]) -> float | None:
        return sum(values) / len(values) if values and all(v is not None for v in values) else None

    arms = len({t.metrics.method for t in trials})
    return Costs(
        arms,
        mean([t.time_s - t.eval_seconds for t in ts]),
        mean([t.eval_seconds / t.n_eval for t in ts]),
        mean([t.heldout_loss_seconds and t.heldout_loss_seconds / t.n_eval for t in ts]),
        mean([t.generate_seconds and t.generate_seconds / t.n_eval for t in ts]),
    )


def pooled(trials: list[TrialRecord], metric: Metric) -> stats.Variance | None:
    """The largest of each variance component over the methods' differences from random on `metric` (≥ 2 shared
    seeds needed: with one, seed noise is unknown and no design can be planned)."""
    by_method: dict[str, list[TrialRecord]] = defaultdict(list)
    for t in trials:
        by_method[t.metrics.method].append(t)
    first = next((t for t in trials if t.predictions), None)
    if first is None or RANDOM not in by_method:
        return None
    ids = [str(p.get("id")) for p in first.predictions]
    base = _score_matrices(by_method[RANDOM], ids, (metric,))
    models = []
    for method, records in by_method.items():
        mats = _score_matrices(records, ids, (metric,)) if method not in (RANDOM, FULL) else None
        rows_m, rows_r = _pairs(mats, base, Design(1)) if mats and base else ([], [])
        if len(rows_m) >= 2:
            models.append(stats.variance(mats.scores[metric.name][rows_m] - base.scores[metric.name][rows_r]))
    if not models:
        return None
    s, n = models[0].seeds, models[0].examples
    return stats.Variance(s, n, *(max(getattr(m, c) or 0.0 for m in models) for c in ("seed", "example", "residual")))


def cheapest(
    model: stats.Variance, cost: Costs, target: float, alpha: float, max_examples: int = planning.MAX_EXAMPLES
) -> Plan:
    """The least-compute seeds × examples whose test detects `target` with 80% power at `alpha` (module docstring).

    Seeds are tried on SEED_LADDER, fewest first. Power rises with seeds and with examples, so once some seed count
    reaches the target every larger one does, with no more examples: each search for n starts from the last n and
    bisects down (a few power calls per count, each a Behrens–Fisher quantile)."""
    candidates: list[Candidate] = []
    best: Candidate | None = None
    for seeds in SEED_LADDER:
        if best and cost.of(seeds, 0) >= best.seconds:
            break  # the training of this many seeds alone costs more than the best design
        if not candidates and not _reaches(model, target, alpha, seeds, max_examples):
            continue  # out of reach at these seeds (one power call, not a search up to max_examples)
        start = candidates[-1].examples if candidates else min(model.examples, max_examples)
        n = planning.smallest(2, start, max_examples, lambda k, s=seeds: _reaches(model, target, alpha, s, k))
        found = Candidate(seeds, n, cost.of(seeds, n), _mde(model, alpha, seeds, n))
        candidates.append(found)
        best = found if best is None or found.seconds < best.seconds else best
    return Plan(target, alpha, best, candidates)


def _reaches(model: stats.Variance, target: float, alpha: float, seeds: int, examples: int) -> bool:
    return planning.power(target, model, seeds=seeds, examples=examples, alpha=alpha) >= planning.POWER


def _mde(model: stats.Variance, alpha: float, seeds: int, examples: int) -> float:
    """The MDE of another design: `planning.detectable` of the model moved to seeds × examples."""
    moved = stats.Variance(seeds, examples, model.seed, model.example, model.residual)
    return planning.detectable(moved, alpha)


def hours(seconds: float, parallel: int = 1) -> str:
    """Trial-seconds as wall time with `parallel` trials at once, for people: "1.3 h", "25 min"."""
    wall = seconds / max(1, parallel)
    return f"{wall / 3600:,.1f} h" if wall >= 5400 else f"{math.ceil(wall / 60)} min"


def plan_run(
    trials: list[TrialRecord],
    metric: Metric,
    target: float,
    tests: int,
    max_examples: int = planning.MAX_EXAMPLES,
) -> tuple[Plan, Costs] | None:
    """The cheapest design for a pilot's `trials`, at the level of its `tests` (α/m); None when the pilot cannot
    say (fewer than 2 shared seeds with random, or no recorded times)."""
    model, cost = pooled(trials, metric), costs(trials)
    if model is None or cost is None or not model.seed_noise_known:
        return None
    return cheapest(model, cost, target, stats.ALPHA / max(1, tests), max_examples), cost


def describe(found: Plan, cost: Costs, metric: Metric, parallel: int) -> list[str]:
    """The plan in markdown: the cheapest design, what it costs, the costs it was priced with, the alternatives."""
    unit = f"{metric.label}"
    if found.best is None:
        return [f"No design up to {MAX_PLANNED_SEEDS} seeds reaches an MDE of {found.target:.4g} {unit}."]
    best = found.best
    parts = [
        f"selecting and training {cost.per_trial:.1f} s per trial",
        f"scoring {cost.per_example:.3f} s per held-out example",
    ]
    parts += [f"(held-out loss {cost.scoring:.3f} s)"] if cost.scoring is not None and cost.generation else []
    parts += [f"(generation {cost.generation:.3f} s)"] if cost.generation is not None else []
    lines = [
        f"The cheapest design that detects {found.target:.4g} {unit} with 80% power at α = {found.alpha:.4g}: "
        f"**{best.seeds} seeds × {best.examples:,} held-out examples**, {best.seconds / 3600:,.1f} trial-hours for "
        f"{cost.arms} arms (about {hours(best.seconds, parallel)} with {parallel} trials at once). Priced with this "
        f"run's measured costs: {', '.join(parts)}; variance components: the largest over its comparisons.",
        "",
        "| Seeds | Held-out examples | MDE | Trial-hours | Wall time |",
        "|---:|---:|---:|---:|---:|",
    ]
    for c in found.candidates:
        mark = "**" if c is best else ""
        lines.append(
            f"| {mark}{c.seeds}{mark} | {mark}{c.examples:,}{mark} | {c.mde:.4f} | {c.seconds / 3600:,.2f} "
            f"| {hours(c.seconds, parallel)} |"
        )
    return lines


def run_plan(out: Path, mde: str, metric: str | None, max_examples: int | None, parallel: int) -> str:
    """`distill plan`: the cheapest design for the pilot in `out`, as markdown (bad input: one line, exit 2)."""
    from distill.report.load import _read_json, load_trials
    from distill.report.rows import METRICS, _per_example_metrics

    trials = load_trials(out)
    config = _read_json(out / "run.json").get("config", {}) if (out / "run.json").is_file() else {}
    tested = _per_example_metrics(
        trials, tuple(METRICS[m] for m in (config.get("report") or {}).get("metrics", METRICS) if m in METRICS)
    )
    if metric is not None and metric not in METRICS:
        raise DistillError(f"--metric {metric} is not a score", f"use one of {', '.join(METRICS)}")
    chosen = METRICS[metric] if metric else (tested[0] if tested else None)
    if chosen is None or chosen not in _per_example_metrics(trials, (chosen,)):
        raise DistillError(
            f"{out} has no per-example {chosen.name if chosen else 'scores'}", "plan from a run that scored it"
        )
    target = _target(mde, trials, chosen)
    methods = {t.metrics.method for t in trials} - {RANDOM, FULL}
    found = plan_run(trials, chosen, target, len(methods) * max(1, len(tested)), max_examples or planning.MAX_EXAMPLES)
    if found is None:
        raise DistillError(
            f"{out} cannot be planned from: it needs ≥ 2 seeds shared with random and recorded trial times",
            "run a pilot with --seeds 2 or more (a small one will do), then plan from it",
        )
    return "\n".join(describe(*found, chosen, parallel))


def _target(mde: str, trials: list[TrialRecord], metric: Metric) -> float:
    """--mde in the metric's units ("0.01") or as a share of random's mean ("2%")."""
    text = mde.strip()
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise DistillError(f"--mde {mde} is not a positive number", "write e.g. --mde 0.01 or --mde 2%")
    if not text.endswith("%"):
        return value
    scores = [t.metrics.scores.get(metric.name) for t in trials if t.metrics.method == RANDOM]
    if not scores or any(s is None for s in scores):
        raise DistillError(
            f"--mde {mde} is a share of random's {metric.name}, which this run lacks", "give --mde in units"
        )
    return value / 100 * abs(sum(scores) / len(scores))
