"""report.md: conclusions at a glance, the claims the run supports, every method against random, and the
recommendation, with every number taken from the rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from distill.report import stats
from distill.report.advice import family, interval, recommendation, to_decide
from distill.report.rows import generated, headline
from distill.report.text import (
    _fmt,
    _n_tests,
    _p_text,
    _pct,
    _primary_label,
    _tested,
    _tests,
    _verdict,
    _verdicts,
    primary,
)
from distill.store.records import FULL, HELDOUT_LOSS, RANDOM, ROUGE_L, RunInfo, TrialMetrics


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
    elif scored := [r for r in rows if r["method"] != FULL and r[HELDOUT_LOSS.name] is not None]:
        best = min(scored, key=lambda r: (r[HELDOUT_LOSS.name], r["method"] != RANDOM))
        parts.append(
            f"This run scored held-out loss alone (no generation). The lowest among the subset methods is "
            f"**{best['method']}**'s: {_with_ci(best, HELDOUT_LOSS.name)} (lower is better)."
        )
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


def _with_ci(row: dict, name: str) -> str:
    """A row's mean of metric `name` with its 95% CI."""
    ci = row[f"{name}_ci95"]
    return _fmt(row[name]) + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def _primary_verdict(row: dict) -> str:
    found = primary(row)
    return _verdict(found[1], found[0]) if found else "—"


def _results_table(rows: list[dict]) -> list[str]:
    """Every method's scores, their evidence against random and their cost: ROUGE-L and what goes with it, or
    held-out loss in a run that did not generate."""
    score = headline(rows)
    columns: list[tuple[str, str, Callable[[dict], str]]] = [
        ("Method", "---", lambda r: r["method"]),
        (f"{score.label[0].upper()}{score.label[1:]} ±95% CI", "---", lambda r: _with_ci(r, score.name)),
    ]
    if score is ROUGE_L:
        columns += [
            ("BERTScore-F1", "---", lambda r: _fmt(r["bertscore_f1"])),
            ("vs Random %", "---:", lambda r: _pct(r["vs_random_pct"])),
            ("% of full", "---:", lambda r: "—" if r["pct_of_full"] is None else f"{r['pct_of_full']:.1f}%"),
        ]
    columns += [
        ("p (Holm)", "---", lambda r: _p_text((primary(r) or (None, None))[1])),
        ("Verdict", "---", _primary_verdict),
        ("Samples", "---:", lambda r: str(r["samples"])),
        ("Seeds", "---:", lambda r: str(r["seeds"])),
        ("Time(s)", "---:", lambda r: _fmt(r["time_s"], ".1f")),
    ]
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "|".join(c[1] for c in columns) + "|"]
    return lines + ["| " + " | ".join(c[2](r) for c in columns) + " |" for r in rows]


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
        for name, word in (("better", "better than"), ("worse", "worse than"), ("equivalent", "equivalent to")):
            names = [r["method"] for r, _ in _verdicts(rows, metric, name)]
            if names:
                found.append(f"{', '.join(f'**{n}**' for n in names)} {word} random on {metric.label}")
        if undecided := _verdicts(rows, metric, "undecided"):
            found.append(f"{len(undecided)} undecided on {metric.label}")
    return (
        f"Verdicts from intervals that hold together over {family(rows)}: " + "; ".join(found) + "."
        if found
        else "No method could be judged against random."
    )


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
        f"**Verdict** (docs/statistics.md, Verdicts): read from the *simultaneous CI*, which holds together with "
        f"every other one here over {family(rows)}: *better* or *worse* when it excludes 0, *equivalent* when it "
        "lies inside ±δ (δ: `report.margin_<metric>` × random's mean, stated per metric), else *undecided*, with "
        "the seeds (on these examples) that would decide it with 80% power.",
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
        margin = next((t["margin"] for _, t in tests if t.get("margin") is not None), None)
        if margin is not None:
            lines += [f"δ = {margin:.4g} {metric.label}.", ""]
        lines += [
            "| Method | Δ vs random | 95% CI | p (Holm) | Verdict | Simultaneous CI | To decide | MDE "
            "| MDE % of random | Seeds × examples | Would detect Δ |",
            "|---|---:|---|---|---|---|---|---:|---:|---:|---|",
        ]
        for r, t in tests:
            lines.append(
                f"| {r['method']} | {t['diff']:+.4f} | {interval(t['ci95'])} | {_p_text(t)} | {_verdict(t, metric)} | "
                f"{interval(t.get('ci_simultaneous'))} | {to_decide(t)} | "
                f"{_fmt(t['mde'])} | {_pct(t['mde_pct']).lstrip('+')} | {t['seeds']} × {t['examples']} | "
                f"{_would_detect(t)} |"
            )
        lines.append("")
    return lines


def _span(counts: list[int]) -> str:
    return f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


def responses_cut(trials: list[TrialMetrics], pool_cut: int | None, run: RunInfo | None) -> str | None:
    """How many responses were cut at model.max_target_tokens: in the pool, in each trial's training set and among
    the held-out references. A cut response is trained on and scored without its end, so a reader weighs a
    held-out loss or a learned stopping point by these counts. None when the run recorded none of them."""
    config = run.config if run else {}
    pool_size = run.pool_size if run else None
    subsets = [t.train_responses_cut for t in trials if t.method != FULL and t.train_responses_cut is not None]
    full = [t.train_responses_cut for t in trials if t.method == FULL and t.train_responses_cut is not None]
    heldout = [t.heldout_responses_cut for t in trials if t.heldout_responses_cut is not None]
    parts = []
    if pool_cut is not None:
        parts.append(f"{pool_cut} of the pool's {pool_size}" if pool_size else f"{pool_cut} in the pool")
    if subsets:
        parts.append(f"{_span(subsets)} per selected training subset")
    if full:
        parts.append(f"{_span(full)} in the full pool's training set")
    if heldout:
        n_eval = max((t.n_eval or 0) for t in trials) or None
        parts.append(
            f"{_span(heldout)} of the {n_eval} held-out references" if n_eval else f"{_span(heldout)} held out"
        )
    if not parts:
        return None
    limit = (config.get("model") or {}).get("max_target_tokens")
    eos = (config.get("prompt") or {}).get("eos_after_truncated_response")
    how = {False: " (no EOS after a cut: prompt.eos_after_truncated_response false)", True: " (an EOS after the cut)"}
    at = f"model.max_target_tokens={limit}" if limit else "model.max_target_tokens"
    return f"- **responses cut** at {at}{how.get(eos, '')}: " + "; ".join(parts)


def render_markdown(
    rows: list[dict],
    run: RunInfo | None,
    plots: dict[str, str],
    next_run: list[str] | None = None,
    cut: str | None = None,
) -> str:
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
    lines += ["## Results", "", *_results_table(rows)]
    models = sorted({r["bertscore_model"] for r in rows if r["bertscore_model"]})
    bs_model = ", ".join(models) or (run and run.bertscore_model) or "unknown"
    scores = (
        "ROUGE-L and BERTScore-F1 are means over seeds and held-out examples; empty generations are scored 0, never "
        "dropped."
        if generated(rows)
        else "Held-out loss is each held-out reference response's mean token cross-entropy under the trial's "
        "adapter (response tokens only), averaged over held-out examples and seeds; lower is better. This run "
        "did not generate (eval.generate: false), so it has no ROUGE-L or BERTScore."
    )
    lines += [
        "",
        scores + " The 95% CI counts seed-to-seed and example-to-example noise (with one "
        f"seed, the examples' only). p is the test of {_primary_label(rows)} against `random` (see *Against "
        "random*), Holm–Bonferroni adjusted over every test made; "
        '"not significant" marks adjusted p ≥ 0.05. '
        "Time is what a method costs per seed: its own selection (with any pass only it reads: the probe, IFD's "
        "pass) + training + evaluation, in CPU seconds of the trial's own process on CPU (waiting for a CPU is "
        "not counted; trials recorded before results schema 4: wall seconds), wall seconds on GPU."
        + (
            f" The embedding pass every method shares took {run.embed_seconds:.1f} s, once."
            if run and run.embed_seconds
            else ""
        ),
        "",
        *([f"BERTScore model: `{bs_model}`.", ""] if generated(rows) else []),
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
        lines += [cut] if cut else []
        lines.append("")
    else:
        lines += ["_run.json not found: data, model and config details are unavailable._", ""]
    captions = {"cost": "Score vs cost", "lengths": "Document length of each selected subset vs the pool"}
    if any(key in captions for key in plots):  # the forest plots stand in *Against random*
        lines += ["## Plots", ""]
        for key, fname in plots.items():
            if key in captions:
                lines += [f"![{captions[key]}]({fname})", ""]
    if next_run:
        lines += ["## Planning the next run", "", *next_run, ""]
        lines += ["`distill plan <this run> --mde X` plans for another target (docs/statistics.md, Planning).", ""]
    lines += ["## Recommendation", "", recommendation(rows)]
    return "\n".join(lines).rstrip("\n") + "\n"
