"""report.md: conclusions at a glance, the claims the run supports, every method against random, and the
recommendation, with every number taken from the rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from distill.report import stats
from distill.report.rows import generated, headline
from distill.report.text import (
    _better,
    _fmt,
    _n_tests,
    _p_text,
    _p_value,
    _pct,
    _primary_label,
    _tested,
    _tests,
    _verdict,
    primary,
)
from distill.store.records import FULL, HELDOUT_LOSS, RANDOM, ROUGE_L, RunInfo


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
    lines += ["## Results", "", *_results_table(rows)]
    models = sorted({r["bertscore_model"] for r in rows if r["bertscore_model"]})
    bs_model = ", ".join(models) or (run and run.bertscore_model) or "unknown"
    scores = (
        "ROUGE-L and BERTScore-F1 are means over seeds and held-out examples; empty generations are scored 0, never "
        "dropped."
        if generated(rows)
        else "Held-out loss is each held-out reference summary's mean token cross-entropy under the trial's "
        "adapter (summary tokens only), averaged over held-out examples and seeds; lower is better. This run "
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
