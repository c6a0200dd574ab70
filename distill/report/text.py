"""How the rows read: which metrics were tested, each test's verdict and p-value, numbers as the report and the
console table print them.
"""

from __future__ import annotations

from typing import Any

from distill.store.records import Metric, metric_named


def _tested(rows: list[dict]) -> list[Metric]:
    """The metrics tested against random, in the order of report.metrics (the first is the primary one)."""
    return [metric_named(name) for name in dict.fromkeys(name for r in rows for name in (r["vs_random"] or {}))]


def primary(row: dict) -> tuple[Metric, dict] | None:
    """A row's test against random on the primary metric, the first tested (None: the row was not tested)."""
    name = next(iter(row.get("vs_random") or {}), None)
    return None if name is None else (metric_named(name), row["vs_random"][name])


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


VERDICT_TEXT = {"better": "better than random", "worse": "worse than random", "undecided": "undecided"}


def _verdict(test: dict, metric: Metric) -> str:
    """A test's verdict as the tables print it (a results.json from before verdicts: its Holm test's reading)."""
    if test.get("verdict") == "equivalent":
        return f"equivalent (±{test['margin']:.4g})"
    if test.get("verdict") in VERDICT_TEXT:
        return VERDICT_TEXT[test["verdict"]]
    if test["p"] is None:
        return "no test (< 2 examples)"
    if test["significant"] is None:
        return "no claim (1 seed)"
    if not test["significant"]:
        return "not significant"
    return "better than random" if _better(test, metric) else "worse than random"


def _tests(rows: list[dict], metric: Metric) -> list[tuple[dict, dict]]:
    """(row, its test against random on `metric`) for every tested method, in row order."""
    return [(r, r["vs_random"][metric.name]) for r in rows if metric.name in (r["vs_random"] or {})]


def _n_tests(rows: list[dict]) -> int:
    return sum(t["p"] is not None for r in rows for t in (r["vs_random"] or {}).values())


def _primary_label(rows: list[dict]) -> str:
    tested = _tested(rows)
    return tested[0].label if tested else "the first of report.metrics"


def _verdicts(rows: list[dict], metric: Metric, name: str) -> list[tuple[dict, dict]]:
    """(row, test) of every method whose verdict on `metric` is `name`, in row order."""
    return [(r, t) for r, t in _tests(rows, metric) if t.get("verdict") == name]
