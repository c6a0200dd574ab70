"""The verdicts in words: what the simultaneous intervals hold over, what would decide an undecided method, and the
recommendation, which follows the primary metric's verdicts (distill/report/verdict.py) and never recommends on
"not significant" alone.
"""

from __future__ import annotations

from distill.report.text import _n_tests, _p_value, _tested, _tests
from distill.store.records import Metric


def family(rows: list[dict]) -> str:
    """What the simultaneous intervals hold over, in words: tests (and looks), and each interval's level."""
    tests = [t for r in rows for t in (r["vs_random"] or {}).values() if t.get("ci_level") is not None]
    if not tests:
        return "no test"
    each = 1 - tests[0]["ci_level"]
    looks = round(0.05 / (each * len(tests)))
    return (
        f"{len(tests)} test(s)" + (f" × {looks} looks" if looks > 1 else "") + f", each at {1 - each:.2%}, 95% together"
    )


def interval(ci: list[float] | None) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "—"


def to_decide(test: dict) -> str:
    """What would decide an undecided verdict: the seeds in all (on these examples), or that seeds alone would not."""
    if test.get("verdict") != "undecided":
        return "—" if test.get("verdict") in (None, "no claim") else "decided"
    needed = test.get("seeds_to_decide")
    return f"{needed} seeds ({needed - test['seeds']} more)" if needed else "out of reach by seeds"


def recommendation(rows: list[dict]) -> str:
    """The closing advice, from the primary metric's verdicts (one seed: no claim)."""
    if not _n_tests(rows):
        return (
            "No recommendation: no method was tested against `random` (that needs a `random` run, per-example "
            "predictions for every trial and at least 2 held-out examples)."
        )
    metric = _tested(rows)[0]
    tested = _tests(rows, metric)
    label = metric.label
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
    return decided(rows, metric, by_gain, scale)


def next_step(test: dict) -> str:
    """What would decide an undecided method: more seeds (`--until-decided` reuses every trial) when seeds can,
    else more held-out examples as well, which `--until-decided` cannot add (every trial reruns on a new test set)."""
    needed = test.get("seeds_to_decide")
    if needed:
        return (
            f"about {needed} seeds ({needed - test['seeds']} more, on these {test['examples']} examples) would "
            "decide it. Rerun the job with `--until-decided` into the same output folder: it reuses these trials and "
            "adds seeds only to the undecided methods, at a level that stays valid however many looks it takes "
            "(docs/statistics.md)."
        )
    return (
        f"more seeds alone would not decide it: the example-to-example noise of these {test['examples']} held-out "
        "examples keeps its interval too wide however many seeds run, so `--until-decided`, which only adds seeds, "
        f"would not either. `distill plan <this run> --mde {test['margin']:.4g}` gives the cheapest seeds × "
        "held-out examples that would; rerun with those `--seeds` and `--test-size` (every trial reruns on the new "
        "held-out set; docs/statistics.md, Planning)."
    )


def decided(rows: list[dict], metric: Metric, by_gain: list[tuple[dict, dict]], scale: str) -> str:
    """The advice from the primary metric's verdicts: a method only when it is *better*; random only when every
    method is *equivalent* or *worse*; otherwise what would decide — never a recommendation on "not significant"."""
    label, held = metric.label, family(rows)
    winners = [(r, t) for r, t in by_gain if t.get("verdict") == "better"]
    if winners:
        r, t = winners[0]
        text = (
            f"**Use {r['method']}.** It is better than random by {t['diff']:+.4f} {label}: its simultaneous "
            f"interval {interval(t['ci_simultaneous'])} excludes 0 ({held}; {scale})."
        )
        if len(winners) > 1:
            text += " Also better than random: " + ", ".join(w["method"] for w, _ in winners[1:]) + "."
        return text
    undecided = [(r, t) for r, t in by_gain if t.get("verdict") == "undecided"]
    if undecided:
        r, t = undecided[0]
        return (
            f"**No decision yet.** {len(undecided)} method(s) are undecided on {label} "
            f"({', '.join(u['method'] for u, _ in undecided)}): neither better than, worse than nor within "
            f"±{t['margin']:.4g} of random at this scale ({scale}). For the best of them, {r['method']} "
            f"({t['diff']:+.4f} {label}), {next_step(t)}"
        )
    same = [r["method"] for r, t in by_gain if t.get("verdict") == "equivalent"]
    worse = [r["method"] for r, t in by_gain if t.get("verdict") == "worse"]
    parts = [f"equivalent within ±{by_gain[0][1]['margin']:.4g}: {', '.join(same)}"] if same else []
    parts += [f"worse: {', '.join(worse)}"] if worse else []
    return (
        f"**Use random.** No method is better than random on {label}, and each is decided ({'; '.join(parts)}; "
        f"{held}): a random subset of the same size does as well, at no selection cost."
    )
