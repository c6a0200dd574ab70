"""One row per method: means over seeds, 95% CIs from the per-example scores, tests against random (distill/report/
stats.py), costs. Rows are rounded to a fixed number of digits so the files they make are byte-stable.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from distill.errors import DistillError
from distill.report import planning, sequential, stats, verdict
from distill.store.records import (
    COLUMNS,
    FULL,
    HELDOUT_LOSS,
    RANDOM,
    ROUGE_L,
    SCORE_KEYS,
    SCORE_METRICS,
    Metric,
    ReportRow,
    TrialMetrics,
    TrialRecord,
    VsRandom,
    metric_named,
)

DIGITS = 6  # rounding of every float written to results.json / results.csv
METRICS = {m.name: m for m in SCORE_METRICS}  # distill's own; a user's metric: records.metric_named
CI_METRICS = tuple(m for m in SCORE_METRICS if f"{m.name}_ci95" in COLUMNS)  # a 95% CI per method, from its examples
COST_KEYS = ("time_s", "select_seconds", "train_seconds", "eval_seconds", "gpu_seconds")


@dataclass(frozen=True)
class ScoreMatrices:
    """One method's per-example scores: a (seeds × examples) matrix per metric, row s from trial seeds[s]."""

    seeds: list[int]
    scores: dict[str, np.ndarray]


def _score_matrices(
    trials: list[TrialRecord], ids: list[str] | None, metrics: tuple[Metric, ...]
) -> ScoreMatrices | None:
    """Every metric's (seeds × examples) matrix for one method's trials, columns in the order of `ids`.

    Returns None when any trial lacks predictions (then there are no per-example statistics).
    Predictions are matched by id, so a trial that wrote them in another order still pairs correctly.
    """
    if ids is None or any(t.predictions is None for t in trials):
        return None
    seeds = [int(t.metrics.seed) for t in trials]
    repeated = next((s for s in seeds if seeds.count(s) > 1), None)
    if repeated is not None:
        raise DistillError(
            f"two trials of {trials[0].metrics.method} have seed {repeated}",
            "keep one trial per method and seed under trials/ (pairing with random is by seed)",
        )
    by_trial = [_scores_by_id(t, metrics) for t in trials]
    for t, by_id in zip(trials, by_trial):
        if set(by_id) != set(ids):
            raise DistillError(
                f"trial {t.metrics.trial} was scored on different held-out examples",
                "re-run all trials with the same data settings (same test split and seed)",
            )
    return ScoreMatrices(
        seeds, {m.name: np.array([[by_id[i][m.name] for i in ids] for by_id in by_trial]) for m in metrics}
    )


def _scores_by_id(trial: TrialRecord, metrics: tuple[Metric, ...]) -> dict[str, dict[str, float]]:
    """example id → metric → score of one trial; a missing id or a missing or non-finite score is one line
    naming the trial and the example (the statistics need every score)."""
    out = {}
    for line, p in enumerate(trial.predictions, 1):
        if "id" not in p:
            raise DistillError(
                f"trial {trial.metrics.trial}: prediction {line} has no example id",
                "re-run that trial; every prediction needs the id of its held-out example",
            )
        scores = {}
        for m in metrics:
            value = p.get(m.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DistillError(
                    f"trial {trial.metrics.trial}: held-out example {p['id']} has "
                    + ("no " + m.name if value is None else f"a {m.name} of {value!r}"),
                    "re-run that trial (delete its folder under trials/): every example needs a finite score",
                )
            scores[m.name] = float(value)
        out[str(p["id"])] = scores
    return out


def _per_example_metrics(trials: list[TrialRecord], wanted: tuple[Metric, ...]) -> tuple[Metric, ...]:
    """The `wanted` metrics any stored prediction carries (one a run did not score, e.g. ROUGE-L with
    eval.generate false or held-out loss before it existed, is skipped)."""
    present = {key for t in trials for p in (t.predictions or ()) for key in p}
    return tuple(m for m in wanted if m.name in present)


def method_seconds(t: TrialMetrics) -> float | None:
    """What one trial of a method cost: its own selection (with any pass only the methods that read it need: the
    probe, IFD's pass) + its training + its evaluation. A CPU trial counts its process's CPU seconds, which neither
    waiting for a free CPU nor the number of threads the scheduler gave it changes; a GPU trial (or one from before
    version 4) its wall seconds. The shared embedding pass is no method's: run.json's embed_seconds, apart."""
    cpu = (t.train_cpu_seconds, t.eval_cpu_seconds)
    if t.device != "cuda" and t.select_seconds is not None and None not in cpu:
        return t.select_seconds + sum(cpu)
    if t.time_s is not None:
        return t.time_s
    parts = (t.select_seconds, t.train_seconds, t.eval_seconds)
    return sum(parts) if None not in parts else None


def _mean(values: list[float]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _round(value: Any) -> Any:
    """Round floats to DIGITS (recursively), map non-finite floats to None: stable, valid JSON."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return None
        r = round(v, DIGITS)
        return 0.0 if r == 0 else r  # no "-0.0"
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def generated(rows: Iterable[dict]) -> bool:
    """Whether the run generated (ROUGE-L and BERTScore exist), or scored held-out loss alone (eval.generate false)."""
    return any(r[ROUGE_L.name] is not None for r in rows)


def headline(rows: Iterable[dict]) -> Metric:
    """The score the tables lead with and order by: ROUGE-L, or held-out loss in a run that did not generate."""
    return ROUGE_L if generated(rows) else HELDOUT_LOSS


def _method_order(rows: dict[str, dict]) -> list[str]:
    """random first, then methods best first by the headline score (name as tie-break; a method without it ranks
    as the worst score: ROUGE-L 0, loss infinite), the full baseline last."""
    score = headline(rows.values())
    sign, worst = (-1, 0.0) if score.higher_is_better else (1, math.inf)
    middle = sorted(
        (m for m in rows if m not in (RANDOM, FULL)), key=lambda m: (sign * (rows[m][score.name] or worst), m)
    )
    return ([RANDOM] if RANDOM in rows else []) + middle + ([FULL] if FULL in rows else [])


def compute_rows(
    trials: list[TrialRecord],
    tested: tuple[Metric, ...],
    margins: dict[str, float] | None = None,
    design: sequential.Design | None = None,
) -> list[ReportRow]:
    """One summary row per method: means over seeds, 95% CIs, tests against random on the `tested` metrics (with
    their verdicts: `margins` is δ per metric as a share of random's mean, `design` the run's looks), costs."""
    by_method: dict[str, list[TrialRecord]] = defaultdict(list)
    for t in trials:
        by_method[str(t.metrics.method)].append(t)
    first_with_preds = next((t for t in trials if t.predictions is not None), None)
    ids = [str(p.get("id")) for p in first_with_preds.predictions] if first_with_preds else None
    if ids is not None and len(set(ids)) != len(ids):
        raise DistillError(
            f"trial {first_with_preds.metrics.trial} has duplicate held-out ids",
            "re-run the trials; every held-out example needs a unique id",
        )
    metrics = _per_example_metrics(trials, tuple(dict.fromkeys(CI_METRICS + tested))) if ids else ()
    matrices = {m: _score_matrices(ts, ids, metrics) for m, ts in by_method.items()}

    rows: dict[str, dict] = {}
    for method, records in by_method.items():
        ts = [t.metrics for t in records]
        row: dict[str, Any] = {"method": method}
        row["samples"] = int(max(int(t.samples or 0) for t in ts))
        row["seeds"] = len(ts)
        for key in SCORE_KEYS:
            row[key] = _mean([t.get(key) for t in ts])
        yours = dict.fromkeys(name for t in ts for name in t.user_metrics)
        row["user_scores"] = {name: _mean([t.scores.get(name) for t in ts]) for name in yours} or None
        for m in CI_METRICS:
            ci = stats.mean_ci(matrices[method].scores[m.name]) if m in metrics and matrices[method] else None
            point = row[m.name]
            # the interval must contain the reported point estimate (the mean of metrics.json's means)
            row[f"{m.name}_ci95"] = [min(ci[1], point), max(ci[2], point)] if ci and point is not None else None
        for key in COST_KEYS:
            row[key] = _mean([t.get(key) for t in ts])
        row["time_s"] = _mean([method_seconds(t) for t in ts])
        gpu, time_s, score = row["gpu_seconds"], row["time_s"], row["rougeL"]
        row["rougeL_per_gpu_hour"] = score / (gpu / 3600) if gpu and score is not None else None
        row["rougeL_per_cpu_hour"] = score / (time_s / 3600) if time_s and score is not None else None
        mems = [t.get("peak_memory_mb") for t in ts if t.get("peak_memory_mb") is not None]
        row["peak_memory_mb"] = float(max(mems)) if mems else None
        row["train_tokens"] = _mean([t.get("train_tokens") for t in ts])
        row["n_empty"] = int(sum(int(t.n_empty or 0) for t in ts))
        row["n_eval"] = int(max(int(t.n_eval or 0) for t in ts))
        row["device"] = ",".join(sorted({str(t.device) for t in ts if t.device})) or None
        row["bertscore_model"] = ",".join(sorted({str(t.bertscore_model) for t in ts if t.bertscore_model})) or None
        row["eval_engine"] = ",".join(sorted({str(t.eval_engine) for t in ts if t.eval_engine})) or None
        rows[method] = row

    rand = rows.get(RANDOM)
    full = rows.get(FULL)
    for row in rows.values():
        r_score = rand["rougeL"] if rand else None
        row["vs_random_pct"] = (
            100 * (row["rougeL"] - r_score) / r_score if r_score and row["rougeL"] is not None else None
        )
        f_score = full["rougeL"] if full else None
        row["pct_of_full"] = 100 * row["rougeL"] / f_score if f_score and row["rougeL"] is not None else None
        row["vs_random"] = None
    tested_here = tuple(m for m in tested if m in metrics)
    _tests_against_random(rows, matrices, tested_here, design or sequential.Design(1))
    _verdicts(rows, matrices, tested_here, margins or {}, design or sequential.Design(1))
    return [ReportRow.from_dict({col: _round(rows[m].get(col)) for col in COLUMNS}) for m in _method_order(rows)]


def _mean_of(row: dict, name: str) -> float | None:
    """A method's mean of metric `name`: distill's metrics are columns of the row, a user's are under user_scores."""
    return row[name] if name in METRICS else (row["user_scores"] or {}).get(name)


def _pairs(mats: ScoreMatrices, base: ScoreMatrices, design: sequential.Design) -> tuple[list[int], list[int]]:
    """Rows of a method's and of random's matrices paired by seed: the shared seeds, in order, as many as the
    design's schedule allows (`Design.usable`: a round cut short is not a look)."""
    common = sorted(set(mats.seeds) & set(base.seeds))[: design.usable(len(set(mats.seeds) & set(base.seeds)))]
    return [mats.seeds.index(s) for s in common], [base.seeds.index(s) for s in common]


def _tests_against_random(
    rows: dict[str, dict], matrices: dict[str, ScoreMatrices | None], metrics: tuple[Metric, ...], design
) -> None:
    """Every method × metric against random (paired by seed), Holm-adjusted together, with what each can detect.

    Only seeds both sides were trained with are paired; a method that shares none with random is not tested.
    Planning is at α/m (m = tests made): Holm's strictest step, so the sizes it names suffice after Holm.
    """
    base = matrices.get(RANDOM)
    if base is None:
        return
    tests: dict[tuple[str, str], stats.Comparison] = {}
    for method, mats in matrices.items():
        rows_m, rows_r = _pairs(mats, base, design) if mats and method not in (RANDOM, FULL) else ([], [])
        for m in metrics if rows_m else ():
            tests[method, m.name] = stats.compare(mats.scores[m.name][rows_m], base.scores[m.name][rows_r])
    keys = list(tests)
    adjusted = stats.holm_adjust([tests[k].p_value for k in keys])
    alpha = stats.ALPHA / max(1, sum(p is not None for p in adjusted))
    for (method, metric), p_holm in zip(keys, adjusted):
        comp = tests[method, metric]
        ev = planning.evidence(comp.variance, comp.diff, alpha=alpha)
        random_mean = _mean_of(rows[RANDOM], metric)
        rows[method]["vs_random"] = (rows[method]["vs_random"] or {}) | {
            metric: asdict(
                VsRandom(
                    diff=comp.diff,
                    ci95=list(comp.ci95) if comp.ci95 else None,
                    p=comp.p_value,
                    p_holm=p_holm,
                    significant=stats.significant(p_holm) if comp.seed_noise_known else None,
                    seeds=comp.seeds,
                    examples=comp.examples,
                    effect_size=comp.effect_size,
                    mde=ev.mde,
                    mde_pct=100 * ev.mde / abs(random_mean) if ev.mde is not None and random_mean else None,
                    n_needed=ev.n_needed,
                    seeds_needed=ev.seeds_needed,
                    cheaper=_cheaper(ev, comp, rows[method], rows[RANDOM]),
                )
            )
        }


def _verdicts(
    rows: dict[str, dict],
    matrices: dict[str, ScoreMatrices | None],
    metrics: tuple[Metric, ...],
    margins: dict[str, float],
    design: sequential.Design,
) -> None:
    """Each test's verdict (verdict.py), from intervals simultaneous over every claimable test × the design's looks:
    the family is fixed from the first look on (every method starts with the same first round), so its size m is."""
    tests = [(method, m) for method, row in rows.items() for m in (row["vs_random"] or {})]  # none without random
    claimable = [k for k in tests if stats.can_claim(rows[k[0]]["vs_random"][k[1]]["seeds"])]
    each = verdict.level(len(claimable), design.looks)
    base = matrices.get(RANDOM)
    for method, name in tests:
        test, mats = rows[method]["vs_random"][name], matrices[method]
        rows_m, rows_r = _pairs(mats, base, design)
        share = margins.get(name, 0.0)
        random_mean = _mean_of(rows[RANDOM], name)
        delta = share * abs(random_mean) if random_mean is not None else 0.0
        found = verdict.judge(
            mats.scores[name][rows_m] - base.scores[name][rows_r],
            delta,
            each,
            metric_named(name).higher_is_better,
            claimable=(method, name) in claimable,
        )
        test.update(
            verdict=found.verdict,
            margin=found.margin,
            ci_simultaneous=list(found.interval) if found.interval else None,
            ci_level=found.level,
            look=design.look_of(test["seeds"]),
            seeds_to_decide=found.seeds_to_decide,
        )


def _cheaper(ev: planning.Evidence, comp: stats.Comparison, row: dict, rand: dict) -> str | None:
    """ "seeds" or "examples": the cheaper way to detect the observed difference, by this run's own timings.

    More seeds reuse the trials already run: (S′ − S) more trials of both sides. More held-out examples
    change the data, so every trial reruns, its evaluation scaled by n′/n. None when either way is out of
    reach or already in reach, or the timings are missing.
    """
    if not ev.n_needed or not ev.seeds_needed or ev.n_needed <= comp.examples or ev.seeds_needed <= comp.seeds:
        return None
    times = [row["time_s"], rand["time_s"], row["eval_seconds"], rand["eval_seconds"]]
    if any(t is None for t in times):
        return None
    trial_s, eval_s = times[0] + times[1], times[2] + times[3]
    seeds_cost = (ev.seeds_needed - comp.seeds) * trial_s
    examples_cost = comp.seeds * (trial_s + eval_s * (ev.n_needed / comp.examples - 1))
    return "seeds" if seeds_cost <= examples_cost else "examples"
