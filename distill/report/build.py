"""The comparison report: rebuilt from the files a run leaves on disk, into `<out>/comparison/`.

The report reads ONLY the stored contract (`trials/*/metrics.json`, `trials/*/predictions.jsonl`,
`selected/*.jsonl`, `pool_stats.json`, `run.json`; the records of distill/store/records.py), so `python -m distill
report <output-dir>` can redo it at any time without re-running a trial. Everything written under
`<out>/comparison/` (results.json, results.csv, report.md) is deterministic: closed-form statistics (no
resampling), fixed row order, floats rounded to a fixed number of digits, no timestamps — regenerating gives
identical bytes.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from distill.config.schema import DEFAULT_MARGIN, ReportConfig
from distill.errors import DistillError
from distill.report import plan, sequential
from distill.report.load import _read_json, load_selected_lengths, load_trials
from distill.report.markdown import render_markdown, responses_cut
from distill.report.plots import plot_cost, plot_forest, plot_lengths
from distill.report.rows import METRICS, compute_rows
from distill.report.table import print_table
from distill.report.text import _tested
from distill.store import artifacts
from distill.store.records import (
    COLUMNS,
    GENERATED_KEYS,
    SCORE_KEYS,
    Metric,
    ReportRow,
    RunInfo,
    TrialRecord,
    VsRandom,
    metric_named,
    register_metric,
    results_document,
)


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


def _next_run(trials: list, rows: list[dict]) -> list[str]:
    """report.md's *Planning the next run*: the cheapest design that detects the primary metric's δ (plan.py)."""
    tested = _tested(rows)
    if not tested:
        return []
    tests = [t for r in rows for t in (r["vs_random"] or {}).values() if t["p"] is not None]
    margin = next(
        (t["margin"] for r in rows if (t := (r["vs_random"] or {}).get(tested[0].name)) and t["margin"]), None
    )
    found = plan.plan_run(trials, tested[0], margin, len(tests)) if margin else None
    return plan.describe(*found, tested[0], plan.DEFAULT_PARALLEL) if found else []


def check_scored(trials: list[TrialRecord], asked: tuple[str, ...]) -> None:
    """Metrics a user asked to test (`distill report --metrics`) that no trial of the run scored: one line naming
    what the run did score, rather than a report that claims the predictions are missing."""
    names = (*SCORE_KEYS, *dict.fromkeys(name for t in trials for name in t.metrics.user_metrics))
    scored = [key for key in names if any(key in t.metrics.scores for t in trials)]
    missing = [name for name in asked if name not in scored]
    if not missing:
        return
    did_generate = any(key in GENERATED_KEYS for key in scored)
    raise DistillError(
        (f"report.metrics names {', '.join(missing)}, which this run did not score;" if did_generate else "")
        + ("" if did_generate else "this run did not generate;")
        + f" its metrics are {', '.join(scored)}",
        f"pass --metrics {','.join(scored)}"
        + ("" if did_generate else ", or rerun the job with eval.generate: true to score the generated texts"),
    )


def build_report(
    output_dir: Path, settings: ReportConfig | None = None, console=None, asked: bool = False, dest: Path | None = None
) -> list[dict]:
    """Read a run's stored files, compute statistics, write `<dest>/comparison/` (dest: the run's folder unless
    `distill report --output-dir` chose another), print the table. `asked`: the tested metrics were named by the
    user, so one the run did not score is an error (check_scored), not a gap.

    Returns the rows written to results.json (random first, then by ROUGE-L, "full" last), as mappings.
    """
    output_dir = Path(output_dir)
    settings = settings or ReportConfig()
    trials = load_trials(output_dir)
    if asked:
        check_scored(trials, tuple(settings.metrics))
    run_path = output_dir / "run.json"
    run = RunInfo.from_dict(_read_json(run_path), run_path) if run_path.is_file() else None
    for recorded in run.user_metrics if run else ():  # your metrics, as the run recorded them: no plugin needed
        register_metric(Metric(**recorded))
    yours = {m["name"]: settings.margins.get(m["name"], DEFAULT_MARGIN) for m in (run.user_metrics if run else ())}
    margins = {**{name: getattr(settings, f"margin_{name}") for name in METRICS}, **yours}
    design = sequential.of_run(run.config if run else None)
    records = compute_rows(trials, tuple(metric_named(name) for name in settings.metrics), margins, design)
    rows = [row.to_dict() for row in records]
    pool_path = output_dir / "pool_stats.json"
    pool_stats = _read_json(pool_path) if pool_path.is_file() else {}
    pool = [int(v) for v in pool_stats["n_words"]] if "n_words" in pool_stats else None
    cut = responses_cut([t.metrics for t in trials], pool_stats.get("responses_cut"), run)

    comp = Path(dest or output_dir) / "comparison"
    comp.mkdir(parents=True, exist_ok=True)
    write_json(records, comp / "results.json")
    write_csv(rows, comp / "results.csv")
    order = [r["method"] for r in rows]
    plots = {}
    for metric in _tested(rows):
        plots[f"forest_{metric.name}"] = f"forest_{metric.name}.png"
        plot_forest(rows, metric, comp / plots[f"forest_{metric.name}"])
    if plot_cost(rows, comp / "cost.png"):
        plots["cost"] = "cost.png"
    lengths = load_selected_lengths(output_dir)
    if lengths or pool:
        plot_lengths(lengths, pool, order, comp / "lengths.png")
        plots["lengths"] = "lengths.png"
    for stale in set(comp.glob("*.png")) - {comp / name for name in plots.values()}:  # an earlier report's plot
        for path in (stale, artifacts.sidecar(stale)):
            path.unlink(missing_ok=True)
    artifacts.write_text(comp / "report.md", render_markdown(rows, run, plots, _next_run(trials, rows), cut))
    print_table(rows, console)
    return rows
