"""Comparison report: tables, statistics and plots rebuilt from the files a run leaves on disk.

The report reads ONLY the stored contract (`trials/*/metrics.json`, `trials/*/predictions.jsonl`,
`selected/*.jsonl`, `pool_stats.json`, `run.json`; the records of distill/records.py), so `python -m distill report <output-dir>` can
redo it at any time without re-running a trial. Everything written under `<out>/comparison/`
(results.json, results.csv, report.md) is deterministic: fixed bootstrap seeds, fixed row order,
floats rounded to a fixed number of digits, no timestamps — regenerating gives identical bytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distill import artifacts, stats
from distill.config import ReportConfig
from distill.errors import DistillError
from distill.records import (BERTSCORE_F1, COLUMNS, FULL, RANDOM, ROUGE_L, SCORE_KEYS, ReportRow, RunInfo, TrialMetrics,
                             TrialRecord, results_document)

DIGITS = 6  # rounding of every float written to results.json / results.csv
CI_KEYS = (ROUGE_L.name, BERTSCORE_F1.name)  # metrics with per-example bootstrap intervals
COST_KEYS = ("time_s", "select_seconds", "train_seconds", "eval_seconds", "gpu_seconds")
_SEED_SUFFIX = re.compile(r"^(?P<method>.+)-seed(?P<seed>\d+)$")


# ----------------------------------------------------------------------------------------- reading

def _trusted(path: Path) -> Path:
    """A stored file the report may read: intact per its checksum, else an error naming it."""
    problem = artifacts.verify(path)
    if problem:
        raise DistillError(f"{path} is damaged: {problem}",
                           f"rerun the experiment into {path.parent.parent} with the same job: "
                           "it recomputes damaged files and reuses intact ones")
    return path


def _read_json(path: Path) -> Any:
    _trusted(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DistillError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})",
                           "delete the damaged file and re-run that trial") from exc


def _read_jsonl(path: Path) -> list[dict]:
    _trusted(path)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DistillError(f"{path} line {lineno} is not valid JSON ({exc.msg})",
                               "delete the damaged file and re-run that trial") from exc
    return rows


def load_trials(output_dir: Path) -> list[TrialRecord]:
    """Every trial's metrics (plus its predictions, when stored), sorted by (method, seed, trial)."""
    trials_dir = output_dir / "trials"
    paths = sorted(trials_dir.glob("*/metrics.json")) if trials_dir.is_dir() else []
    if not paths:
        raise DistillError(f"no trial results under {trials_dir}",
                           f"run `python -m distill quick --output-dir {output_dir}` first")
    trials = []
    for path in paths:
        metrics = TrialMetrics.from_dict(_read_json(path), path, trial=path.parent.name)
        pred_path = path.parent / "predictions.jsonl"
        trials.append(TrialRecord(metrics, _read_jsonl(pred_path) if pred_path.is_file() else None))
    trials.sort(key=lambda t: (str(t.metrics.method), int(t.metrics.seed), str(t.metrics.trial)))
    return trials


def _score_matrices(trials: list[TrialRecord], ids: list[str] | None) -> dict[str, np.ndarray] | None:
    """(seeds × examples) matrices of rougeL and bertscore_f1, columns in the order of `ids`.

    Returns None when any trial lacks predictions (then there are no per-example statistics).
    Predictions are matched by id, so a trial that wrote them in another order still pairs correctly.
    """
    if ids is None or any(t.predictions is None for t in trials):
        return None
    out = {}
    for key in CI_KEYS:
        rows = []
        for t in trials:
            by_id = {str(p["id"]): float(p.get(key) or 0.0) for p in t.predictions}
            if set(by_id) != set(ids):
                raise DistillError(f"trial {t.metrics.trial} was scored on different held-out examples",
                                   "re-run all trials with the same data settings (same test split and seed)")
            rows.append([by_id[i] for i in ids])
        out[key] = np.array(rows, dtype=float)
    return out


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
    return value


def _method_order(rows: dict[str, dict]) -> list[str]:
    """random first, then methods by ROUGE-L (best first, name as tie-break), the full baseline last."""
    middle = sorted((m for m in rows if m not in (RANDOM, FULL)),
                    key=lambda m: (-(rows[m]["rougeL"] or 0.0), m))
    return ([RANDOM] if RANDOM in rows else []) + middle + ([FULL] if FULL in rows else [])


def compute_rows(trials: list[TrialRecord], bootstrap_samples: int = 2000) -> list[ReportRow]:
    """One summary row per method: means over seeds, bootstrap CIs, tests against random, costs."""
    by_method: dict[str, list[TrialRecord]] = defaultdict(list)
    for t in trials:
        by_method[str(t.metrics.method)].append(t)
    first_with_preds = next((t for t in trials if t.predictions is not None), None)
    ids = [str(p["id"]) for p in first_with_preds.predictions] if first_with_preds else None
    if ids is not None and len(set(ids)) != len(ids):
        raise DistillError(f"trial {first_with_preds.metrics.trial} has duplicate held-out ids",
                           "re-run the trials; every held-out example needs a unique id")
    matrices = {m: _score_matrices(ts, ids) for m, ts in by_method.items()}
    if ids is not None and not ids:
        matrices = {m: None for m in by_method}

    rows: dict[str, dict] = {}
    for method, records in by_method.items():
        ts = [t.metrics for t in records]
        row: dict[str, Any] = {"method": method}
        row["samples"] = int(max(int(t.samples or 0) for t in ts))
        row["seeds"] = len(ts)
        for key in SCORE_KEYS:
            row[key] = _mean([t.get(key) for t in ts])
        mats = matrices[method]
        for key in CI_KEYS:
            if mats is not None:
                _, lo, hi = stats.bootstrap_mean_ci(mats[key], n_boot=bootstrap_samples)
                point = row[key]
                if point is not None:  # the interval must contain the reported point estimate
                    lo, hi = min(lo, point), max(hi, point)
                row[f"{key}_ci95"] = [lo, hi]
            else:
                row[f"{key}_ci95"] = None
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
    tested: list[str] = []
    for method, row in rows.items():
        r_score = rand["rougeL"] if rand else None
        row["vs_random_pct"] = (100 * (row["rougeL"] - r_score) / r_score
                                if r_score and row["rougeL"] is not None else None)
        f_score = full["rougeL"] if full else None
        row["pct_of_full"] = (100 * row["rougeL"] / f_score
                              if f_score and row["rougeL"] is not None else None)
        row["rougeL_diff_vs_random"] = None
        row["p_vs_random"] = None
        row["effect_size"] = None
        if method in (RANDOM, FULL) or rand is None:
            continue
        if matrices[method] is not None and matrices[RANDOM] is not None:
            test = stats.paired_bootstrap_test(matrices[method]["rougeL"], matrices[RANDOM]["rougeL"],
                                               n_boot=bootstrap_samples)
            row["rougeL_diff_vs_random"] = test.mean_diff
            row["p_vs_random"] = test.p_value
            row["effect_size"] = test.effect_size
            tested.append(method)
    adjusted = stats.holm_adjust([rows[m]["p_vs_random"] for m in tested])
    for method, row in rows.items():
        row["p_holm"] = None
        row["significant"] = None
    for method, p_adj in zip(tested, adjusted):
        rows[method]["p_holm"] = p_adj
        rows[method]["significant"] = stats.significant(p_adj)
    _add_evidence(rows, tested, matrices)

    return [ReportRow(**{col: _round(rows[m].get(col)) for col in COLUMNS}) for m in _method_order(rows)]


def _add_evidence(rows: dict[str, dict], tested: list[str], matrices: dict) -> None:
    """MDE at 80% power and the held-out examples / seeds needed, for each method tested against random.

    Planned at α/m (m = methods tested): Holm's strictest step, so these sizes suffice after Holm.
    """
    alpha = stats.ALPHA / max(1, len(tested))
    for method, row in rows.items():
        row.update(mde_rougeL=None, mde_pct=None, n_needed=None, seeds_needed=None)
        if method not in tested:
            continue
        ev = stats.evidence(matrices[method]["rougeL"], matrices[RANDOM]["rougeL"], alpha=alpha)
        r_score = rows[RANDOM]["rougeL"]
        row.update(mde_rougeL=ev.mde, n_needed=ev.n_needed, seeds_needed=ev.seeds_needed,
                   mde_pct=100 * ev.mde / r_score if ev.mde is not None and r_score else None)


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


def _p_text(row: dict) -> str:
    if row["p_holm"] is None:
        return "—"
    text = f"{row['p_holm']:.3f}" if row["p_holm"] >= 0.001 else "<0.001"
    return text if row["significant"] else f"{text} (not significant)"


def write_json(rows: list[ReportRow], path: Path) -> None:
    artifacts.write_text(path, json.dumps(results_document(rows), indent=2, ensure_ascii=False) + "\n")


def write_csv(rows: list[dict], path: Path) -> None:
    """Same columns as results.json, flattened: each 95% CI becomes `<metric>_ci95_lo/_hi`."""
    header: list[str] = []
    for col in COLUMNS:
        header += [f"{col}_lo", f"{col}_hi"] if col.endswith("_ci95") else [col]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        flat = []
        for col in COLUMNS:
            value = row[col]
            if col.endswith("_ci95"):
                flat += list(value) if value else ["", ""]
            else:
                flat.append("" if value is None else str(value).lower() if isinstance(value, bool) else value)
        writer.writerow(flat)
    artifacts.write_text(path, buf.getvalue())


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
        winners = [r["method"] for r in rows if r["significant"] and (r["rougeL_diff_vs_random"] or 0) > 0]
        losers = [r["method"] for r in rows if r["significant"] and (r["rougeL_diff_vs_random"] or 0) < 0]
        n_tested = sum(r["p_holm"] is not None for r in rows)
        if not n_tested:
            parts.append("No method could be tested against random (per-example predictions are missing).")
        elif winners:
            parts.append(f"After Holm correction over {n_tested} comparison(s), "
                         f"{', '.join(f'**{w}**' for w in winners)} beat random significantly (p < 0.05).")
        else:
            parts.append(f"After Holm correction over {n_tested} comparison(s), no method beat random "
                         "significantly: differences from random are within the noise.")
        if losers:
            parts.append(f"Significantly worse than random: {', '.join(losers)}.")
    else:
        parts.append("There is no `random` run, so no method is tested for significance.")
    full = by.get(FULL)
    if full and candidates:
        best = max(candidates, key=lambda r: (r["rougeL"], r["method"] == RANDOM))
        reach = (f"reaches {best['pct_of_full']:.1f}% of the full-data ROUGE-L ({full['rougeL']:.4f})"
                 if best["pct_of_full"] is not None else "cannot be compared with the full-data ROUGE-L")
        eff = [f"**{best['method']}** {reach} using {best['samples']} of {full['samples']} training examples"]
        if best["train_seconds"] and full["train_seconds"]:
            eff.append(f"training in {best['train_seconds']:.1f} s vs {full['train_seconds']:.1f} s "
                       f"({full['train_seconds'] / best['train_seconds']:.1f}× less)")
        if best["peak_memory_mb"] and full["peak_memory_mb"]:
            eff.append(f"peak memory {best['peak_memory_mb']:.0f} MB vs {full['peak_memory_mb']:.0f} MB")
        parts.append(", ".join(eff) + " (measured, mean per seed).")
    return " ".join(parts)


def _about(n: int) -> str:
    """A planning figure, rounded up to two significant digits: 4,093 → "4,100"."""
    step = 10 ** max(0, len(str(n)) - 2)
    return f"{-(-n // step) * step:,}"


def _evidence_table(rows: list[dict]) -> list[str]:
    """Per method vs random: observed difference, minimum detectable effect, what it would take."""
    tested = [r for r in rows if r["p_holm"] is not None]
    if not tested:
        return []
    seeds = next(r["seeds"] for r in rows if r["method"] == RANDOM)
    lines = ["## How much evidence", "",
             f"Minimum detectable effect (MDE): the smallest true ROUGE-L difference from random that this run "
             f"({tested[0]['n_eval']} held-out examples, {seeds} seed(s)) detects with 80% power, two-sided at "
             f"α = 0.05/{len(tested)} (Holm's strictest step), from the observed per-example differences "
             "(power of the paired t-test, which the bootstrap test matches). *n needed*: held-out examples "
             "that would detect the observed difference; *seeds needed*: seeds per method that would, on the "
             "same examples (needs ≥ 2 seeds to estimate seed noise).", "",
             "| Method | Δ ROUGE-L vs random | MDE (80% power) | MDE % of random | n needed | seeds needed |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in tested:
        n_needed = "—" if r["n_needed"] is None else _about(r["n_needed"])
        lines.append(f"| {r['method']} | {_fmt(r['rougeL_diff_vs_random'], '+.4f')} | {_fmt(r['mde_rougeL'])} | "
                     f"{_pct(r['mde_pct']).lstrip('+')} | {n_needed} | {_fmt(r['seeds_needed'])} |")
    return lines + [""]


def _recommendation(rows: list[dict]) -> str:
    """The closing advice, written from the numbers: a method only when it survives Holm."""
    tested = [r for r in rows if r["p_holm"] is not None]
    if not tested:
        return ("No recommendation: no method was tested against `random` (that needs a `random` run and "
                "per-example predictions for every trial).")
    m, n = len(tested), tested[0]["n_eval"]
    seeds = next(r["seeds"] for r in rows if r["method"] == RANDOM)
    scale = f"{n} held-out examples, {seeds} seed(s)"
    by_gain = sorted(tested, key=lambda r: -(r["rougeL_diff_vs_random"] or 0.0))
    winners = [r for r in by_gain if r["significant"] and (r["rougeL_diff_vs_random"] or 0) > 0]
    if winners:
        best = winners[0]
        text = (f"**Use {best['method']}.** It beat random by {best['rougeL_diff_vs_random']:+.4f} ROUGE-L "
                f"({_pct(best['vs_random_pct'])}), significant after Holm correction over {m} comparison(s) "
                f"(adjusted p = {_p_text(best)}; {scale}).")
        if len(winners) > 1:
            text += " Also significantly better than random: " + ", ".join(r["method"] for r in winners[1:]) + "."
        return text
    text = (f"**No method is recommended.** None beat random significantly after Holm correction over {m} "
            f"comparison(s), so at this scale ({scale}) random is as good as any method tested.")
    best = by_gain[0]
    gain = best["rougeL_diff_vs_random"] or 0.0
    if gain <= 0:
        return text + " No method even scored above random, so none is worth a larger run on this evidence."
    text += (f" The best, {best['method']} ({gain:+.4f} ROUGE-L, {_pct(best['vs_random_pct'])}), ")
    if best["mde_rougeL"] is None:
        return text + "cannot be sized: a power analysis needs at least 2 held-out examples."
    if best["n_needed"] is not None and best["n_needed"] <= n:
        return text + ("is about as large as this run can detect yet not significant: repeat it with new seeds "
                       "or more held-out examples to settle it.")
    text += (f"is below what this run can detect ({best['mde_rougeL']:.4f} ROUGE-L, "
             f"{_pct(best['mde_pct']).lstrip('+')} of random, at 80% power). "
             f"A run that would decide it: n ≈ {_about(best['n_needed'])} held-out examples")
    if best["seeds_needed"] is not None:
        return text + (f", or {best['seeds_needed'] - seeds} more seed(s) ({best['seeds_needed']} in all) "
                       f"on these {n} examples.")
    if seeds == 1:
        return text + (" (whether more seeds would do instead cannot be estimated from one seed: run --seeds 3 "
                       "to find out).")
    return text + " (more seeds alone would not: the example-to-example noise is too large)."


def render_markdown(rows: list[dict], run: RunInfo | None, plots: dict[str, str]) -> str:
    """The human-readable report; deterministic text (no timestamps)."""
    title = (run and run.name) or "experiment"
    lines = [f"# Distill report: {title}", ""]
    if run and run.test_model:
        lines += ["> **Note:** this run used a tiny randomly initialised test model "
                  f"(`{run.model}`). Its numbers check that the pipeline works; they are never results.", ""]
    lines += ["## At a glance", "", _at_a_glance(rows), ""]
    lines += ["## Results", "",
              "| Method | ROUGE-L ±95% CI | BERTScore-F1 | vs Random % | % of full | p (Holm) | Samples | Seeds | Time(s) |",
              "|---|---|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        ci = r["rougeL_ci95"]
        rl = _fmt(r["rougeL"]) + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
        pct_full = "—" if r["pct_of_full"] is None else f"{r['pct_of_full']:.1f}%"
        lines.append(f"| {r['method']} | {rl} | {_fmt(r['bertscore_f1'])} | {_pct(r['vs_random_pct'])} | "
                     f"{pct_full} | {_p_text(r)} | {r['samples']} | {r['seeds']} | {_fmt(r['time_s'], '.1f')} |")
    models = sorted({r["bertscore_model"] for r in rows if r["bertscore_model"]})
    bs_model = ", ".join(models) or (run and run.bertscore_model) or "unknown"
    lines += ["",
              "ROUGE-L and BERTScore-F1 are means over seeds and held-out examples; empty generations are "
              "scored 0, never dropped. The 95% CI is a bootstrap over held-out examples (and seeds, when "
              "there are several). p is a two-sided paired bootstrap test of ROUGE-L against `random` on the "
              "same examples, Holm–Bonferroni adjusted over the methods compared; \"not significant\" marks "
              "adjusted p ≥ 0.05. Time is the mean wall time per seed (select + train + eval; the select of a "
              "training-dynamics method includes the probe stage it read).",
              "", f"BERTScore model: `{bs_model}`.", ""]
    n_empty = sum(r["n_empty"] for r in rows)
    if n_empty:
        lines += ["Empty generations (summed over seeds): "
                  + ", ".join(f"{r['method']} {r['n_empty']}" for r in rows if r["n_empty"]) + ".", ""]
    lines += _evidence_table(rows)
    if run:
        lines += ["## Setup", ""]
        for key in ("model", "dataset", "mode", "pool_size", "test_size", "fraction", "seeds", "git_commit"):
            if getattr(run, key) is not None:
                lines.append(f"- **{key}**: `{getattr(run, key)}`")
        if run.versions:
            lines.append("- **versions**: " + ", ".join(f"{k} {run.versions[k]}" for k in sorted(run.versions)))
        train = (run.config or {}).get("train") or {}
        if train:
            keys = [k for k in ("lora_r", "lora_alpha", "learning_rate", "epochs", "max_steps", "batch_size")
                    if k in train]
            lines.append("- **training**: " + ", ".join(f"{k}={train[k]}" for k in keys))
        lines.append("")
    else:
        lines += ["_run.json not found: data, model and config details are unavailable._", ""]
    if plots:
        lines += ["## Plots", ""]
        captions = {"rougeL": "ROUGE-L per method with 95% CI (dashed: random)",
                    "cost": "Score vs cost", "lengths": "Document length of each selected subset vs the pool"}
        for key, fname in plots.items():
            lines += [f"![{captions.get(key, key)}]({fname})", ""]
    lines += ["## Recommendation", "", _recommendation(rows)]
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------------------------------ plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_PNG_META = {"Software": None}  # no matplotlib version stamp: plots stay stable across upgrades


def plot_rougeL(rows: list[dict], path: Path) -> None:
    """Bar per method with its 95% CI; random's mean as a dashed reference line."""
    plt = _plt()
    names = [r["method"] for r in rows]
    means = np.array([r["rougeL"] or 0.0 for r in rows])
    lo = np.array([means[i] - r["rougeL_ci95"][0] if r["rougeL_ci95"] else 0.0 for i, r in enumerate(rows)])
    hi = np.array([r["rougeL_ci95"][1] - means[i] if r["rougeL_ci95"] else 0.0 for i, r in enumerate(rows)])
    colors = ["tab:gray" if n == RANDOM else "tab:green" if n == FULL else
              "tab:blue" if r["significant"] else "tab:cyan" for n, r in zip(names, rows)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(rows) + 2), 4.5))
    x = np.arange(len(rows))
    ax.bar(x, means, yerr=np.vstack([np.maximum(lo, 0), np.maximum(hi, 0)]), capsize=4, color=colors)
    from matplotlib.patches import Patch

    handles = [Patch(color="tab:blue", label="significant vs random (Holm)"),
               Patch(color="tab:cyan", label="not significant")]
    if FULL in names:
        handles.append(Patch(color="tab:green", label="full-data baseline"))
    rand = next((r for r in rows if r["method"] == RANDOM), None)
    if rand and rand["rougeL"] is not None:
        handles.insert(0, ax.axhline(rand["rougeL"], linestyle="--", color="black", linewidth=1,
                                     label=f"random {rand['rougeL']:.4f}"))
    top = max([means.max()] + [r["rougeL_ci95"][1] for r in rows if r["rougeL_ci95"]])
    ax.set_ylim(0, top * 1.35 if top > 0 else 1)  # headroom so the legend never covers a bar
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncol=2)
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylabel("ROUGE-L (mean, 95% CI)")
    ax.set_title("ROUGE-L per method")
    fig.tight_layout()
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
        ax.annotate(r["method"], (r[key], r["rougeL"]), textcoords="offset points",
                    xytext=(6, 4 - 11 * near), fontsize=8)
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
        for i, (name, values) in enumerate(zip(names, data), 1):
            ax.annotate(f"n={len(values)}", (1.0, i), xycoords=("axes fraction", "data"),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=7)
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
    if row["p_holm"] is None:
        return "—"
    return (f"{row['p_holm']:.3f}" if row["p_holm"] >= 0.001 else "<0.001") + ("" if row["significant"] else " ns")


CONSOLE_COLUMNS = (
    ConsoleColumn("Method", lambda r: r["method"]),
    ConsoleColumn("ROUGE-L", lambda r: _fmt(r["rougeL"])),
    ConsoleColumn("95% CI", lambda r: f"{r['rougeL_ci95'][0]:.3f}–{r['rougeL_ci95'][1]:.3f}" if r["rougeL_ci95"] else "—",
                  under="ROUGE-L"),
    ConsoleColumn("BERTScore", lambda r: _fmt(r["bertscore_f1"])),
    ConsoleColumn("% of full", lambda r: "—" if r["pct_of_full"] is None else f"{r['pct_of_full']:.1f}%", under="BERTScore"),
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
    from rich.table import Table

    from rich import box

    table = Table(title="Method comparison", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="p: paired bootstrap vs random, Holm-adjusted; ns = not significant (p ≥ 0.05)")
    for i, group in enumerate(layout):
        table.add_column("\n".join(c.header for c in group), justify="left" if i == 0 else "right", no_wrap=True)
    for r in rows:
        table.add_row(*["\n".join(c.cell(r) for c in group) for group in layout],
                      style="bold green" if r["significant"] else None, end_section=len(layout[1]) > 1)
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
    if settings.bootstrap_samples < 1:
        raise DistillError(f"bootstrap_samples must be at least 1, got {settings.bootstrap_samples}",
                           "set report.bootstrap_samples (or --bootstrap-samples) to e.g. 2000")
    trials = load_trials(output_dir)
    records = compute_rows(trials, bootstrap_samples=settings.bootstrap_samples)
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
    plot_rougeL(rows, comp / "rougeL.png")
    plot_cost(rows, comp / "cost.png")
    plots = {"rougeL": "rougeL.png", "cost": "cost.png"}
    lengths = load_selected_lengths(output_dir)
    if lengths or pool:
        plot_lengths(lengths, pool, order, comp / "lengths.png")
        plots["lengths"] = "lengths.png"
    artifacts.write_text(comp / "report.md", render_markdown(rows, run, plots))
    print_table(rows, console)
    return rows
