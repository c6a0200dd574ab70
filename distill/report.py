"""Comparison report: tables, statistics and plots rebuilt from the files a run leaves on disk.

The report reads ONLY the stored contract (`trials/*/metrics.json`, `trials/*/predictions.jsonl`,
`selected/*.jsonl`, `pool_stats.json`, `run.json`; the records of distill/store/records.py), so `python -m distill report <output-dir>` can
redo it at any time without re-running a trial. Everything written under `<out>/comparison/`
(results.json, results.csv, report.md) is deterministic: closed-form statistics (no resampling), fixed row
order, floats rounded to a fixed number of digits, no timestamps — regenerating gives identical bytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from distill import stats
from distill.config.schema import ReportConfig
from distill.errors import DistillError
from distill.store import artifacts
from distill.store.records import (
    COLUMNS,
    FULL,
    RANDOM,
    SCORE_KEYS,
    SCORE_METRICS,
    Metric,
    ReportRow,
    RunInfo,
    TrialMetrics,
    TrialRecord,
    VsRandom,
    results_document,
)

DIGITS = 6  # rounding of every float written to results.json / results.csv
METRICS = {m.name: m for m in SCORE_METRICS}
CI_METRICS = tuple(m for m in SCORE_METRICS if f"{m.name}_ci95" in COLUMNS)  # a 95% CI per method, from its examples
COST_KEYS = ("time_s", "select_seconds", "train_seconds", "eval_seconds", "gpu_seconds")
_SEED_SUFFIX = re.compile(r"^(?P<method>.+)-seed(?P<seed>\d+)$")


# ----------------------------------------------------------------------------------------- reading


def _trusted(path: Path) -> Path:
    """A stored file the report may read: intact per its checksum, else an error naming it."""
    problem = artifacts.verify(path)
    if problem:
        raise DistillError(
            f"{path} is damaged: {problem}",
            f"rerun the experiment into {path.parent.parent} with the same job: "
            "it recomputes damaged files and reuses intact ones",
        )
    return path


def _read_json(path: Path) -> Any:
    _trusted(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DistillError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})",
            "delete the damaged file and re-run that trial",
        ) from exc


def _read_jsonl(path: Path) -> list[dict]:
    _trusted(path)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DistillError(
                f"{path} line {lineno} is not valid JSON ({exc.msg})", "delete the damaged file and re-run that trial"
            ) from exc
    return rows


def load_trials(output_dir: Path) -> list[TrialRecord]:
    """Every trial's metrics (plus its predictions, when stored), sorted by (method, seed, trial)."""
    trials_dir = output_dir / "trials"
    paths = sorted(trials_dir.glob("*/metrics.json")) if trials_dir.is_dir() else []
    if not paths:
        raise DistillError(
            f"no trial results under {trials_dir}", f"run `python -m distill quick --output-dir {output_dir}` first"
        )
    trials = []
    for path in paths:
        metrics = TrialMetrics.from_dict(_read_json(path), path, trial=path.parent.name)
        pred_path = path.parent / "predictions.jsonl"
        trials.append(TrialRecord(metrics, _read_jsonl(pred_path) if pred_path.is_file() else None))
    trials.sort(key=lambda t: (str(t.metrics.method), int(t.metrics.seed), str(t.metrics.trial)))
    return trials


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


def load_selected_lengths(output_dir: Path) -> dict[str, list[int]]:
    """n_words of every selected example, per method (all seeds pooled), from `selected/*.jsonl`."""
    lengths: dict[str, list[int]] = defaultdict(list)
    sel_dir = output_dir / "selected"
    if not sel_dir.is_dir():
        return {}
    for path in sorted(sel_dir.glob("*.jsonl")):
        match = _SEED_SUFFIX.match(path.stem)
        method = match.group("method") if match else path.stem
        for row in _read_jsonl(path):
            if "n_words" in row:
                lengths[method].append(int(row["n_words"]))
            elif "text" in row:
                lengths[method].append(len(str(row["text"]).split()))
    return dict(lengths)


# --------------------------------------------------------------------------------------- exporting

TEXT_FIELDS = ("prediction", "reference")  # what an exported prediction leaves out: the texts, not the scores


def export(output_dir: Path, dest: Path) -> None:
    """Copy exactly what the report reads from a run into `dest`, small enough to publish: run.json,
    pool_stats.json, every trial's metrics.json and per-example scores (predictions.jsonl without the
    generated and reference texts), and each selected subset's ids and lengths. `distill report <dest>`
    then rebuilds the same results.json, and any later correction of the statistics re-tests it.
    """
    output_dir, dest = Path(output_dir), Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise DistillError(f"{dest} already has files", "export into a new folder (or delete that one first)")
    load_trials(output_dir)  # one line for a run without trials, or with a damaged trial file
    for name in ("run.json", "pool_stats.json"):
        if (output_dir / name).is_file():
            artifacts.write_bytes(dest / name, _trusted(output_dir / name).read_bytes())
    for path in sorted((output_dir / "trials").glob("*/metrics.json")):
        folder = dest / "trials" / path.parent.name
        artifacts.write_bytes(folder / "metrics.json", path.read_bytes())
        predictions = path.parent / "predictions.jsonl"
        if predictions.is_file():
            artifacts.write_jsonl(
                folder / "predictions.jsonl",
                ({k: v for k, v in p.items() if k not in TEXT_FIELDS} for p in _read_jsonl(predictions)),
            )
    for path in sorted((output_dir / "selected").glob("*.jsonl")):
        artifacts.write_jsonl(
            dest / "selected" / path.name,
            (
                {
                    "index": row.get("index"),
                    "id": row.get("id"),
                    "n_words": row["n_words"] if "n_words" in row else len(str(row.get("text", "")).split()),
                }
                for row in _read_jsonl(path)
            ),
        )


# ------------------------------------------------------------------------------------- statistics


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


def _method_order(rows: dict[str, dict]) -> list[str]:
    """random first, then methods by ROUGE-L (best first, name as tie-break), the full baseline last."""
    middle = sorted((m for m in rows if m not in (RANDOM, FULL)), key=lambda m: (-(rows[m]["rougeL"] or 0.0), m))
    return ([RANDOM] if RANDOM in rows else []) + middle + ([FULL] if FULL in rows else [])


def compute_rows(trials: list[TrialRecord], tested: tuple[Metric, ...]) -> list[ReportRow]:
    """One summary row per method: means over seeds, 95% CIs, tests against random on the `tested` metrics, costs."""
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
        for m in CI_METRICS:
            ci = stats.mean_ci(matrices[method].scores[m.name]) if m in metrics and matrices[method] else None
            point = row[m.name]
            # the interval must contain the reported point estimate (the mean of metrics.json's means)
            row[f"{m.name}_ci95"] = [min(ci[1], point), max(ci[2], point)] if ci and point is not None else None
        for key in COST_KEYS:
            row[key] = _mean([t.get(key) for t in ts])
        if row["time_s"] is None:
            parts = [row[k] for k in ("select_seconds", "train_seconds", "eval_seconds")]
            row["time_s"] = sum(parts) if all(p is not None for p in parts) else None
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
    _tests_against_random(rows, matrices, tuple(m for m in tested if m in metrics))
    return [ReportRow.from_dict({col: _round(rows[m].get(col)) for col in COLUMNS}) for m in _method_order(rows)]


def _tests_against_random(
    rows: dict[str, dict], matrices: dict[str, ScoreMatrices | None], metrics: tuple[Metric, ...]
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
        common = sorted(set(mats.seeds) & set(base.seeds)) if mats and method not in (RANDOM, FULL) else []
        rows_m, rows_r = [mats.seeds.index(s) for s in common], [base.seeds.index(s) for s in common]
        for m in metrics if common else ():
            tests[method, m.name] = stats.compare(mats.scores[m.name][rows_m], base.scores[m.name][rows_r])
    keys = list(tests)
    adjusted = stats.holm_adjust([tests[k].p_value for k in keys])
    alpha = stats.ALPHA / max(1, sum(p is not None for p in adjusted))
    for (method, metric), p_holm in zip(keys, adjusted):
        comp = tests[method, metric]
        ev = stats.evidence(comp.variance, comp.diff, alpha=alpha)
        random_mean = rows[RANDOM][metric]
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


def _cheaper(ev: stats.Evidence, comp: stats.Comparison, row: dict, rand: dict) -> str | None:
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


def _tested(rows: list[dict]) -> list[Metric]:
    """The metrics tested against random, in the order of report.metrics (the first is the primary one)."""
    return [METRICS[name] for name in dict.fromkeys(name for r in rows for name in (r["vs_random"] or {}))]


def primary(row: dict) -> tuple[Metric, dict] | None:
    """A row's test against random on the primary metric, the first tested (None: the row was not tested)."""
    name = next(iter(row.get("vs_random") or {}), None)
    return None if name is None else (METRICS[name], row["vs_random"][name])


# ---------------------------------------------------------------------------------------- writing


def _fmt(value: Any, spec: str = ".4f", none: str = "—") -> str:
    if value is None:
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}%"


def _p_value(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def _p_text(test: dict | None) -> str:
    """A test's Holm-adjusted p as the tables show it, with what it may be read as."""
    if test is None or test["p_holm"] is None:
        return "—"
    if test["significant"] is None:
        return f"{_p_value(test['p_holm'])} (1 seed: per-example only)"
    return _p_value(test["p_holm"]) + ("" if test["significant"] else " (not significant)")


def _better(test: dict, metric: Metric) -> bool:
    """Whether a test's difference points the way that is better for `metric`."""
    return (test["diff"] > 0) == metric.higher_is_better and test["diff"] != 0


def _verdict(test: dict, metric: Metric) -> str:
    if test["p"] is None:
        return "no test (< 2 examples)"
    if test["significant"] is None:
        return "no claim (1 seed)"
    if not test["significant"]:
        return "not significant"
    return "better than random" if _better(test, metric) else "worse than random"


def write_json(rows: list[ReportRow], path: Path) -> None:
    artifacts.write_text(path, json.dumps(results_document(rows), indent=2, ensure_ascii=False) + "\n")


VS_RANDOM_FIELDS = [f.name for f in fields(VsRandom)]


def write_csv(rows: list[dict], path: Path) -> None:
    """Same columns as results.json, flattened: each 95% CI becomes `<name>_lo/_hi`, each test against random
    `vs_random.<metric>.<field>` columns (for the metrics tested in this report)."""
    tested = [m.name for m in _tested(rows)]

    def cells(name: str, value: Any) -> tuple[list[str], list[Any]]:
        if name.endswith("ci95"):
            return [f"{name}_lo", f"{name}_hi"], list(value) if value else ["", ""]
        return [name], ["" if value is None else str(value).lower() if isinstance(value, bool) else value]

    def flat(row: dict) -> tuple[list[str], list[Any]]:
        names, values = [], []
        for col in COLUMNS:
            parts = (
                [
                    (f"vs_random.{m}.{f}", ((row[col] or {}).get(m) or {}).get(f))
                    for m in tested
                    for f in VS_RANDOM_FIELDS
                ]
                if col == "vs_random"
                else [(col, row[col])]
            )
            for name, value in parts:
                n, v = cells(name, value)
                names += n
                values += v
        return names, values

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(flat(rows[0])[0] if rows else COLUMNS)
    writer.writerows(flat(row)[1] for row in rows)
    artifacts.write_text(path, buf.getvalue())


def _tests(rows: list[dict], metric: Metric) -> list[tuple[dict, dict]]:
    """(row, its test against random on `metric`) for every tested method, in row order."""
    return [(r, r["vs_random"][metric.name]) for r in rows if metric.name in (r["vs_random"] or {})]


def _n_tests(rows: list[dict]) -> int:
    return sum(t["p"] is not None for r in rows for t in (r["vs_random"] or {}).values())


def _at_a_glance(rows: list[dict]) -> str:
    """One paragraph of conclusions, every number taken from the rows (i.e. from measurements)."""
    by = {r["method"]: r for r in rows}
    candidates = [r for r in rows if r["method"] != FULL and r["rougeL"] is not None]
    parts = []
    if candidates:
        best = max(candidates, key=lambda r: (r["rougeL"], r["method"] == RANDOM))
        ci = best["rougeL_ci95"]
        ci_txt = f" (95% CI {ci[0]:.4f}–{ci[1]:.4f})" if ci else ""
        parts.append(f"The best subset method is **{best['method']}** with ROUGE-L {best['rougeL']:.4f}{ci_txt}.")
    if RANDOM in by:
        parts.append(_claims(rows))
    else:
        parts.append("There is no `random` run, so no method is tested for significance.")
    full = by.get(FULL)
    if full and candidates:
        best = max(candidates, key=lambda r: (r["rougeL"], r["method"] == RANDOM))
        reach = (
            f"reaches {best['pct_of_full']:.1f}% of the full-data ROUGE-L ({full['rougeL']:.4f})"
            if best["pct_of_full"] is not None
            else "cannot be compared with the full-data ROUGE-L"
        )
        eff = [f"**{best['method']}** {reach} using {best['samples']} of {full['samples']} training examples"]
        if best["train_seconds"] and full["train_seconds"]:
            eff.append(
                f"training in {best['train_seconds']:.1f} s vs {full['train_seconds']:.1f} s "
                f"({full['train_seconds'] / best['train_seconds']:.1f}× less)"
            )
        if best["peak_memory_mb"] and full["peak_memory_mb"]:
            eff.append(f"peak memory {best['peak_memory_mb']:.0f} MB vs {full['peak_memory_mb']:.0f} MB")
        parts.append(", ".join(eff) + " (measured, mean per seed).")
    return " ".join(parts)


def _claims(rows: list[dict]) -> str:
    """What the tests against random allow one to say, per metric (a claim needs ≥ 2 seeds)."""
    m = _n_tests(rows)
    if not m:
        return "No method could be tested against random (per-example predictions are missing)."
    if all(t["significant"] is None for r in rows for t in (r["vs_random"] or {}).values()):
        return (
            "With one training seed, seed-to-seed noise is unknown, so no method is claimed to beat or "
            "lose to random (a per-example test is shown below, labelled as such)."
        )
    found = []
    for metric in _tested(rows):
        tests = _tests(rows, metric)
        for word, better in (("beat", True), ("lost to", False)):
            names = [r["method"] for r, t in tests if t["significant"] and _better(t, metric) == better]
            if names:
                found.append(f"{', '.join(f'**{n}**' for n in names)} {word} random on {metric.label}")
    if not found:
        return (
            f"After Holm correction over {m} test(s) (methods × metrics), no method differs from random "
            "significantly: the differences are within the seed and example noise."
        )
    return f"After Holm correction over {m} test(s) (methods × metrics): " + "; ".join(found) + " (p < 0.05)."


def _about(n: int) -> str:
    """A planning figure, rounded up to two significant digits: 4,093 → "4,100"."""
    step = 10 ** max(0, len(str(n)) - 2)
    return f"{-(-n // step) * step:,}"


def _would_detect(test: dict) -> str:
    """What would detect the observed difference: more seeds and/or more held-out examples, the cheaper marked."""
    if test["mde"] is None:
        return "—"
    if test["significant"]:
        return "detected"
    if not stats.can_claim(test["seeds"]):
        return "≥ 2 seeds first (3+)"
    if not test["diff"]:
        return "no difference observed"
    if (test["n_needed"] or math.inf) <= test["examples"] or (test["seeds_needed"] or math.inf) <= test["seeds"]:
        return "in reach: about the MDE"
    options = {
        "seeds": test["seeds_needed"] and f"{test['seeds_needed'] - test['seeds']} more seed(s)",
        "examples": test["n_needed"] and f"n ≈ {_about(test['n_needed'])} examples",
    }
    shown = [f"**{text}**" if way == test["cheaper"] else text for way, text in options.items() if text]
    return " or ".join(shown) or "out of reach"


def _against_random(rows: list[dict], plots: dict[str, str]) -> list[str]:
    """Per metric: each method minus random with its CI and test, the forest plot, and what it can detect."""
    if not any(r["vs_random"] for r in rows):
        return []
    m = _n_tests(rows)
    lines = [
        "## Against random",
        "",
        "Each method minus `random`, paired by training seed and held-out example: the mean difference, "
        "its 95% CI and a two-sided test that counts seed-to-seed noise as well as example-to-example "
        f"noise (docs/statistics.md); p is Holm-adjusted over all {m} test(s) here (methods × metrics). "
        f"MDE: the smallest true difference this run detects with 80% power at α = 0.05/{m} (Holm's "
        "strictest step). *Would detect Δ*: the seeds (on these examples) or the held-out examples (at "
        "these seeds) that would detect the observed difference with 80% power; the cheaper by this "
        "run's timings in bold.",
        "",
    ]
    if any(t["significant"] is None and t["p"] is not None for r in rows for t in (r["vs_random"] or {}).values()):
        lines += [
            "**One seed:** seed-to-seed noise is unknown, so no difference is claimed. The p-values of "
            "one-seed comparisons are the per-example paired t-test's: it holds the two trained models "
            "fixed, and a lucky training seed, which moves every example at once, looks like an effect "
            "to it. Run `--seeds 3` or more to test.",
            "",
        ]
    for metric in _tested(rows):
        tests = _tests(rows, metric)
        direction = "higher" if metric.higher_is_better else "lower"
        lines += [f"### {metric.label} ({direction} is better)", ""]
        if f"forest_{metric.name}" in plots:
            lines += [
                f"![{metric.label}: each method minus random with its 95% CI; shaded: ± the MDE]"
                f"({plots[f'forest_{metric.name}']})",
                "",
            ]
        lines += [
            "| Method | Δ vs random | 95% CI | p (Holm) | Verdict | MDE | MDE % of random | Seeds × examples "
            "| Would detect Δ |",
            "|---|---:|---|---|---|---:|---:|---:|---|",
        ]
        for r, t in tests:
            ci = f"[{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}]" if t["ci95"] else "—"
            lines.append(
                f"| {r['method']} | {t['diff']:+.4f} | {ci} | {_p_text(t)} | {_verdict(t, metric)} | "
                f"{_fmt(t['mde'])} | {_pct(t['mde_pct']).lstrip('+')} | {t['seeds']} × {t['examples']} | "
                f"{_would_detect(t)} |"
            )
        lines.append("")
    return lines


def _recommendation(rows: list[dict]) -> str:
    """The closing advice, written from the primary metric's tests: a method only when it survives Holm."""
    if not _n_tests(rows):
        return (
            "No recommendation: no method was tested against `random` (that needs a `random` run, per-example "
            "predictions for every trial and at least 2 held-out examples)."
        )
    metric = _tested(rows)[0]
    tested = _tests(rows, metric)
    m, label = _n_tests(rows), metric.label
    sign = 1 if metric.higher_is_better else -1
    by_gain = sorted(tested, key=lambda rt: -sign * rt[1]["diff"])
    best_row, best = by_gain[0]
    scale = f"{best['examples']} held-out examples, {best['seeds']} seed(s)"
    if all(t["significant"] is None for _, t in tested):
        return (
            f"**No claim: one seed.** With one training seed per method, seed-to-seed noise is unknown, so no "
            f"method is claimed to beat random. The best, {best_row['method']} ({best['diff']:+.4f} {label}; "
            f"per-example test, which holds the trained models fixed: adjusted p = {_p_value(best['p_holm'])}), "
            "may owe its lead to a lucky training seed. Rerun with `--seeds 3` or more: the report then tests "
            "seeds and examples together and sizes the run that would decide."
        )
    winners = [(r, t) for r, t in by_gain if t["significant"] and _better(t, metric)]
    if winners:
        r, t = winners[0]
        text = (
            f"**Use {r['method']}.** It beat random by {t['diff']:+.4f} {label}, significant after Holm "
            f"correction over {m} test(s) "
            f"(adjusted p = {_p_text(t)}; {t['examples']} held-out examples, {t['seeds']} seed(s))."
        )
        if len(winners) > 1:
            text += " Also significantly better than random: " + ", ".join(w["method"] for w, _ in winners[1:]) + "."
        return text
    text = (
        f"**No method is recommended.** None beat random significantly after Holm correction over {m} "
        f"test(s), so at this scale ({scale}) random is as good as any method tested."
    )
    if not _better(best, metric):
        return text + " No method even scored better than random, so none is worth a larger run on this evidence."
    text += f" The best, {best_row['method']} ({best['diff']:+.4f} {label}), "
    if best["mde"] is None:
        return text + "cannot be sized: a power analysis needs at least 2 held-out examples."
    if not stats.can_claim(best["seeds"]):
        return text + ("was compared on one seed only (seed noise unknown): rerun it with `--seeds 3` or more.")
    if _would_detect(best).startswith("in reach"):
        return text + (
            "is about as large as this run can detect yet not significant: repeat it with new seeds "
            "or more held-out examples to settle it."
        )
    return text + (
        f"is below what this run can detect ({best['mde']:.4f} {label}, "
        f"{_pct(best['mde_pct']).lstrip('+')} of random, at 80% power). " + _decider(best)
    )


def _decider(test: dict) -> str:
    """The run that would detect the observed difference with 80% power, never a negative count."""
    seeds, n = test["seeds"], test["examples"]
    by_seeds = test["seeds_needed"] and (
        f"{test['seeds_needed'] - seeds} more seed(s) ({test['seeds_needed']} in all) on these {n} examples"
    )
    by_examples = test["n_needed"] and f"n ≈ {_about(test['n_needed'])} held-out examples at {seeds} seeds"
    if by_seeds and by_examples:
        cheaper = {
            "seeds": " (more seeds cost less, by this run's timings)",
            "examples": " (more examples cost less, by this run's timings)",
        }.get(test["cheaper"], "")
        return f"A run that would decide it: {by_seeds}, or {by_examples}{cheaper}."
    if by_seeds:
        return f"A run that would decide it: {by_seeds} (more examples alone would not: the seed noise is too large)."
    if by_examples:
        return (
            f"A run that would decide it: {by_examples} (more seeds alone would not: the example noise is too large)."
        )
    return "Neither more seeds nor more held-out examples alone would detect it with 80% power."


def render_markdown(rows: list[dict], run: RunInfo | None, plots: dict[str, str]) -> str:
    """The human-readable report; deterministic text (no timestamps)."""
    title = (run and run.name) or "experiment"
    lines = [f"# Distill report: {title}", ""]
    if run and run.test_model:
        lines += [
            "> **Note:** this run used a tiny randomly initialised test model "
            f"(`{run.model}`). Its numbers check that the pipeline works; they are never results.",
            "",
        ]
    lines += ["## At a glance", "", _at_a_glance(rows), ""]
    lines += [
        "## Results",
        "",
        "| Method | ROUGE-L ±95% CI | BERTScore-F1 | vs Random % | % of full | p (Holm) | Samples | Seeds | Time(s) |",
        "|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        ci = r["rougeL_ci95"]
        rl = _fmt(r["rougeL"]) + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
        pct_full = "—" if r["pct_of_full"] is None else f"{r['pct_of_full']:.1f}%"
        lines.append(
            f"| {r['method']} | {rl} | {_fmt(r['bertscore_f1'])} | {_pct(r['vs_random_pct'])} | "
            f"{pct_full} | {_p_text((primary(r) or (None, None))[1])} | {r['samples']} | {r['seeds']} | {_fmt(r['time_s'], '.1f')} |"
        )
    models = sorted({r["bertscore_model"] for r in rows if r["bertscore_model"]})
    bs_model = ", ".join(models) or (run and run.bertscore_model) or "unknown"
    lines += [
        "",
        "ROUGE-L and BERTScore-F1 are means over seeds and held-out examples; empty generations are "
        "scored 0, never dropped. The 95% CI counts seed-to-seed and example-to-example noise (with one "
        f"seed, the examples' only). p is the test of {_primary_label(rows)} against `random` (see *Against "
        "random*), Holm–Bonferroni adjusted over every test made; "
        '"not significant" marks adjusted p ≥ 0.05. '
        "Time is the mean wall time per seed (select + train + eval; the select of a training-dynamics "
        "method includes the probe stage it read).",
        "",
        f"BERTScore model: `{bs_model}`.",
        "",
    ]
    n_empty = sum(r["n_empty"] for r in rows)
    if n_empty:
        lines += [
            "Empty generations (summed over seeds): "
            + ", ".join(f"{r['method']} {r['n_empty']}" for r in rows if r["n_empty"])
            + ".",
            "",
        ]
    lines += _against_random(rows, plots)
    if run:
        lines += ["## Setup", ""]
        for key in ("model", "dataset", "mode", "pool_size", "test_size", "fraction", "seeds", "git_commit"):
            if getattr(run, key) is not None:
                lines.append(f"- **{key}**: `{getattr(run, key)}`")
        if run.versions:
            lines.append("- **versions**: " + ", ".join(f"{k} {run.versions[k]}" for k in sorted(run.versions)))
        train = (run.config or {}).get("train") or {}
        if train:
            keys = [
                k for k in ("lora_r", "lora_alpha", "learning_rate", "epochs", "max_steps", "batch_size") if k in train
            ]
            lines.append("- **training**: " + ", ".join(f"{k}={train[k]}" for k in keys))
        lines.append("")
    else:
        lines += ["_run.json not found: data, model and config details are unavailable._", ""]
    captions = {"cost": "Score vs cost", "lengths": "Document length of each selected subset vs the pool"}
    if any(key in captions for key in plots):  # the forest plots stand in *Against random*
        lines += ["## Plots", ""]
        for key, fname in plots.items():
            if key in captions:
                lines += [f"![{captions[key]}]({fname})", ""]
    lines += ["## Recommendation", "", _recommendation(rows)]
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------ plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_PNG_META = {"Software": None}  # no matplotlib version stamp: plots stay stable across upgrades
LEGEND_ROOM = 0.35  # inches kept below a plot for a one-line figure legend


def plot_forest(rows: list[dict], metric: Metric, path: Path) -> None:
    """Each tested method's difference from random on `metric` with its 95% CI (what the test tests), over a
    shaded band of ± its MDE around zero: a difference inside the band is one this run cannot tell from noise.

    Colours: better / worse than random (significant after Holm), not significant; hollow: one seed, no claim.
    """
    plt = _plt()
    tests = _tests(rows, metric)
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.5 * len(tests) + 1.6)))
    for y, (_, t) in enumerate(reversed(tests)):
        if t["mde"] is not None:
            ax.fill_betweenx([y - 0.35, y + 0.35], -t["mde"], t["mde"], color="0.88", linewidth=0)
        colour = ("tab:green" if _better(t, metric) else "tab:red") if t["significant"] else "tab:blue"
        lo, hi = t["ci95"] if t["ci95"] else (t["diff"], t["diff"])
        ax.errorbar(
            t["diff"],
            y,
            xerr=[[t["diff"] - lo], [hi - t["diff"]]],
            fmt="o",
            capsize=4,
            color=colour,
            markerfacecolor="white" if t["significant"] is None else colour,
        )
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_yticks(range(len(tests)), [r["method"] for r, _ in reversed(tests)])
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig.legend(
        handles=[
            Line2D([], [], marker="o", linestyle="", color=c, label=label)
            for c, label in (
                ("tab:green", "better than random (Holm)"),
                ("tab:red", "worse than random (Holm)"),
                ("tab:blue", "not significant"),
            )
        ]
        + [Patch(color="0.88", label="± MDE (80% power)")],
        loc="lower center",
        ncol=4,
        fontsize=7,
        frameon=False,
    )
    direction = "higher" if metric.higher_is_better else "lower"
    ax.set_xlabel(f"method − random ({direction} is better): mean over seeds × examples, 95% CI")
    one_seed = any(t["significant"] is None for _, t in tests)
    ax.set_title(f"{metric.label}: difference from random" + (" (hollow: one seed, no claim)" if one_seed else ""))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout(rect=(0, LEGEND_ROOM / fig.get_figheight(), 1, 1))
    artifacts.write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, metadata=_PNG_META))
    plt.close(fig)


def plot_cost(rows: list[dict], path: Path) -> None:
    """ROUGE-L vs cost per method: GPU-seconds when any trial used a GPU, else wall seconds."""
    plt = _plt()
    use_gpu = any((r["gpu_seconds"] or 0) > 0 for r in rows)
    key, label = ("gpu_seconds", "GPU-seconds per seed") if use_gpu else ("time_s", "wall time per seed (s)")
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = [r[key] for r in rows if r[key] is not None and r[key] > 0]
    ys = [r["rougeL"] for r in rows if r["rougeL"] is not None]
    x_span = (max(xs) - min(xs)) if xs else 0.0
    y_span = (max(ys) - min(ys)) if ys else 0.0
    x_span, y_span = x_span or 1.0, y_span or 1.0
    placed: list[tuple[float, float]] = []
    for r in rows:
        if r[key] is None or r["rougeL"] is None:
            continue
        ci = r["rougeL_ci95"]
        yerr = [[r["rougeL"] - ci[0]], [ci[1] - r["rougeL"]]] if ci else None
        marker = "s" if r["method"] == FULL else "D" if r["method"] == RANDOM else "o"
        ax.errorbar(r[key], r["rougeL"], yerr=yerr, fmt=marker, capsize=3)
        # Stack the labels of points that nearly coincide (same cost and score) so each stays legible.
        near = sum(1 for x, y in placed if abs(x - r[key]) <= 0.03 * x_span and abs(y - r["rougeL"]) <= 0.03 * y_span)
        placed.append((r[key], r["rougeL"]))
        ax.annotate(
            r["method"], (r[key], r["rougeL"]), textcoords="offset points", xytext=(6, 4 - 11 * near), fontsize=8
        )
    if xs and max(xs) / min(xs) > 10:
        ax.set_xscale("log")  # subsets and the full baseline differ by orders of magnitude
    ax.set_xlabel(label)
    ax.set_ylabel("ROUGE-L")
    ax.set_title("Score vs cost")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    artifacts.write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, metadata=_PNG_META))
    plt.close(fig)


def plot_lengths(lengths: dict[str, list[int]], pool: list[int] | None, order: list[str], path: Path) -> None:
    """Horizontal box plots of document length (words): the pool on top, then each selected subset.

    Horizontal boxes stay readable with a dozen methods; a subset skewed to short or long documents
    shows up immediately against the pool's box.
    """
    plt = _plt()
    names = [m for m in order if m in lengths] + sorted(m for m in lengths if m not in order)
    data = [lengths[m] for m in names]
    if pool:
        names, data = ["pool"] + names, [pool] + data
    names, data = names[::-1], data[::-1]  # first entry at the top
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.45 * len(names) + 1.5)))
    if data:
        box = ax.boxplot(data, orientation="horizontal", showfliers=False, patch_artist=True, widths=0.6)
        ax.set_yticks(np.arange(1, len(names) + 1), names)
        for name, patch in zip(names, box["boxes"]):
            patch.set_facecolor("lightgray" if name == "pool" else "lightsteelblue")
        for i, values in enumerate(data, 1):
            ax.annotate(
                f"n={len(values)}",
                (1.0, i),
                xycoords=("axes fraction", "data"),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
    else:
        ax.text(0.5, 0.5, "no selected subsets stored", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("document length (words)")
    ax.set_title("Length of selected documents vs the training pool")
    fig.tight_layout()
    artifacts.write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, metadata=_PNG_META))
    plt.close(fig)


# ---------------------------------------------------------------------------------------- console


@dataclass(frozen=True)
class ConsoleColumn:
    """One column of the terminal table. `under` names the column it is stacked beneath when the
    terminal is too narrow for one column each; a new column (e.g. an MDE) is one more entry here."""

    header: str
    cell: Callable[[dict], str]
    under: str | None = None


def _console_p(row: dict) -> str:
    test = (primary(row) or (None, None))[1]
    if test is None or test["p_holm"] is None:
        return "—"
    return _p_value(test["p_holm"]) + ("†" if test["significant"] is None else "" if test["significant"] else " ns")


def _primary_label(rows: list[dict]) -> str:
    tested = _tested(rows)
    return tested[0].label if tested else "the first of report.metrics"


def _beats_random(row: dict) -> bool:
    """Significantly better than random on the primary metric."""
    found = primary(row)
    return bool(found and found[1]["significant"] and _better(found[1], found[0]))


CONSOLE_COLUMNS = (
    ConsoleColumn("Method", lambda r: r["method"]),
    ConsoleColumn("ROUGE-L", lambda r: _fmt(r["rougeL"])),
    ConsoleColumn(
        "95% CI",
        lambda r: f"{r['rougeL_ci95'][0]:.3f}–{r['rougeL_ci95'][1]:.3f}" if r["rougeL_ci95"] else "—",
        under="ROUGE-L",
    ),
    ConsoleColumn("BERTScore", lambda r: _fmt(r["bertscore_f1"])),
    ConsoleColumn(
        "% of full", lambda r: "—" if r["pct_of_full"] is None else f"{r['pct_of_full']:.1f}%", under="BERTScore"
    ),
    ConsoleColumn("vs random", lambda r: _pct(r["vs_random_pct"])),
    ConsoleColumn("p (Holm)", _console_p, under="vs random"),
    ConsoleColumn("Samples", lambda r: str(r["samples"])),
    ConsoleColumn("Seeds", lambda r: str(r["seeds"]), under="Samples"),
    ConsoleColumn("Time (s)", lambda r: _fmt(r["time_s"], ".1f")),
)


MEASURE_WIDTH = 10_000


def console_table(rows: list[dict], width: int, columns: tuple[ConsoleColumn, ...] = CONSOLE_COLUMNS):
    """The comparison as a rich Table no wider than `width` if possible, never dropping a column:
    one column each when it fits, else every `under` column stacked beneath its parent."""
    from rich.console import Console

    wide = [[c] for c in columns]
    stacked = [[c, *(d for d in columns if d.under == c.header)] for c in columns if c.under is None]
    unbounded = Console(width=MEASURE_WIDTH)  # measures the table's natural width (a narrower console clamps it)
    for layout in (wide, stacked):
        table = _layout_table(rows, layout)
        if unbounded.measure(table).maximum <= width:
            break
    return table


def _layout_table(rows: list[dict], layout: list[list[ConsoleColumn]]):
    """A table whose column i shows the cells of layout[i], one per line."""
    from rich import box
    from rich.table import Table

    table = Table(
        title="Method comparison",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption=f"p: {_primary_label(rows)} vs random over seeds × examples, Holm-adjusted; ns = not "
        "significant (p ≥ 0.05); † = one seed: per-example test only, no claim",
    )
    for i, group in enumerate(layout):
        table.add_column("\n".join(c.header for c in group), justify="left" if i == 0 else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            *["\n".join(c.cell(r) for c in group) for group in layout],
            style="bold green" if _beats_random(r) else None,
            end_section=len(layout[1]) > 1,
        )
    return table


def print_table(rows: list[dict], console=None) -> None:
    """The comparison table on the terminal, fitted to its width (80 columns keep every column)."""
    from rich.console import Console

    console = console or Console()
    console.print(console_table(rows, console.width))


# ------------------------------------------------------------------------------------------- main


def build_report(output_dir: Path, settings: ReportConfig | None = None, console=None) -> list[dict]:
    """Read a run's stored files, compute statistics, write `<out>/comparison/`, print the table.

    Returns the rows written to results.json (random first, then by ROUGE-L, "full" last), as mappings.
    """
    output_dir = Path(output_dir)
    settings = settings or ReportConfig()
    trials = load_trials(output_dir)
    records = compute_rows(trials, tuple(METRICS[name] for name in settings.metrics))
    rows = [row.to_dict() for row in records]
    run_path = output_dir / "run.json"
    run = RunInfo.from_dict(_read_json(run_path), run_path) if run_path.is_file() else None
    pool_path = output_dir / "pool_stats.json"
    pool = [int(v) for v in _read_json(pool_path).get("n_words", [])] if pool_path.is_file() else None

    comp = output_dir / "comparison"
    comp.mkdir(parents=True, exist_ok=True)
    write_json(records, comp / "results.json")
    write_csv(rows, comp / "results.csv")
    order = [r["method"] for r in rows]
    plots = {}
    for metric in _tested(rows):
        plots[f"forest_{metric.name}"] = f"forest_{metric.name}.png"
        plot_forest(rows, metric, comp / plots[f"forest_{metric.name}"])
    plot_cost(rows, comp / "cost.png")
    plots["cost"] = "cost.png"
    lengths = load_selected_lengths(output_dir)
    if lengths or pool:
        plot_lengths(lengths, pool, order, comp / "lengths.png")
        plots["lengths"] = "lengths.png"
    artifacts.write_text(comp / "report.md", render_markdown(rows, run, plots))
    print_table(rows, console)
    return rows
