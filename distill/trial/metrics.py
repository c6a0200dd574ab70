"""Your own metric: a function of one held-out example's generated response, registered like a selector.

    from distill.trial.metrics import metric

    @metric("exact_answer", higher_is_better=True, label="exact answer")
    def exact_answer(prediction: str, reference: str, example: dict) -> float:
        return float(prediction.split("####")[-1].strip() == reference.split("####")[-1].strip())

A plugin file or module (`--plugin`, `select.plugins`) or an installed package (entry-point group
`distill.metrics`) registers it; `eval.metrics: [exact_answer]` scores every trial with it. Each trial calls it
once per held-out example (`example`: its id, title, prompt, response and prompt turns), so the report's
statistics — the mean with its CI, the paired test against random over seeds × examples, Holm, the MDE — treat
it exactly as they treat ROUGE-L, in the declared direction. Its name, label and direction are recorded in
run.json, so a report rebuilds without the plugin.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from distill.errors import DistillError, describe
from distill.select.plugins import METRIC_MARK
from distill.store.outdir import safe_name
from distill.store.records import SCORE_KEYS, Metric, register_metric

MetricFn = Callable[[str, str, dict[str, Any]], float]
ENTRY_POINT_GROUP = "distill.metrics"
SHOWN_CHARS = 60  # of a bad value, in the error that names it


@dataclass(frozen=True)
class UserMetric:
    metric: Metric  # name, label, direction: what the report needs (recorded in run.json)
    fn: MetricFn
    description: str


_REGISTRY: dict[str, UserMetric] = {}


def metric(
    name: str, *, higher_is_better: bool, label: str | None = None, description: str = ""
) -> Callable[[MetricFn], MetricFn]:
    """Decorator: register `fn(prediction, reference, example) -> float` as the metric `name`."""

    def wrap(fn: MetricFn) -> MetricFn:
        where = _source(fn)
        safe_name("metric name", name)  # names a column of predictions.jsonl and a forest plot's file
        if name in SCORE_KEYS:
            raise DistillError(
                f"metric '{name}' in {where} clashes with distill's own metric '{name}'",
                f'rename it, e.g. @metric("my_{name}", ...)',
            )
        known = _REGISTRY.get(name)
        if known is not None and known.fn.__module__ != getattr(fn, "__module__", None):
            raise DistillError(
                f"metric '{name}' in {where} clashes with the metric '{name}' in {_source(known.fn)}",
                f'rename it, e.g. @metric("my_{name}", ...)',
            )
        _check_signature(name, fn, where)
        _REGISTRY[name] = UserMetric(Metric(name, label or name, higher_is_better), fn, description)
        register_metric(_REGISTRY[name].metric)  # the report reads its label and direction
        setattr(fn, METRIC_MARK, name)  # the plugin loader counts it as what the plugin registers
        return fn

    return wrap


def _source(fn: Any) -> str:
    code = getattr(fn, "__code__", None)
    return code.co_filename if code is not None else repr(fn)


def _check_signature(name: str, fn: Any, where: str) -> None:
    """Fail when the plugin loads, not in a trial an hour later: fn(prediction, reference, example) must bind."""
    fix = "define it as def fn(prediction: str, reference: str, example: dict) -> float"
    try:
        inspect.signature(fn).bind("", "", {})
    except (TypeError, ValueError):
        raise DistillError(f"metric '{name}' in {where} does not take (prediction, reference, example)", fix) from None


def names() -> list[str]:
    _load_installed()
    return sorted(_REGISTRY)


def get(name: str) -> UserMetric:
    _load_installed()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none (no plugin registered one)"
        raise DistillError(
            f"unknown metric '{name}' in eval.metrics (registered: {known})",
            "load the file that registers it with --plugin FILE.py (or select.plugins), or fix the name",
        )
    return _REGISTRY[name]


@functools.cache
def _load_installed() -> None:
    """Import the metrics installed packages declare (entry-point group distill.metrics), once per process."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as exc:  # a broken third-party package: name it, do not crash with its traceback
            raise DistillError(
                f"the installed metric plugin {entry.value} failed to load: {describe(exc)}",
                f"fix or uninstall the package that declares it ({ENTRY_POINT_GROUP} entry point '{entry.name}')",
            ) from None


def score(
    names: Iterable[str], predictions: list[str], references: list[str], examples: list[dict[str, Any]]
) -> list[dict[str, float]]:
    """Every held-out example's value of each metric in `names`. A metric that raises or answers with something
    other than a finite number is one line naming the metric, the example and what it returned."""
    chosen = [get(name) for name in names]
    rows = []
    for prediction, reference, example in zip(predictions, references, examples):
        row = {}
        for user in chosen:
            name = user.metric.name
            try:
                value = user.fn(prediction, reference, example)
            except Exception as exc:
                raise DistillError(
                    f"metric '{name}' ({_source(user.fn)}) raised on example {example.get('id')}: {describe(exc)}",
                    "fix the metric so it returns a number for every prediction (an empty one too)",
                ) from None
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise DistillError(
                    f"metric '{name}' ({_source(user.fn)}) returned {repr(value)[:SHOWN_CHARS]} for example "
                    f"{example.get('id')}, not a finite number",
                    "return a float (e.g. float(correct)) for every prediction",
                )
            row[name] = float(value)
        rows.append(row)
    return rows
