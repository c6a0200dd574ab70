"""Your own metric (distill/trial/metrics.py): registered like a selector, refused early when it cannot work, one
line naming the metric, the example and the value when it misbehaves, and tested by the report like ROUGE-L."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config.load import make_config
from distill.errors import DistillError
from distill.store.records import metric_named
from distill.trial import metrics

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "exact_answer.py"
EXAMPLES = [{"id": "e1"}, {"id": "e2"}]


def test_a_registered_metric_scores_each_example_in_its_direction():
    @metrics.metric("shorter_than_ref", higher_is_better=True, label="shorter")
    def shorter(prediction, reference, example):
        return float(len(prediction) < len(reference))

    assert metrics.score(["shorter_than_ref"], ["a", "abcdef"], ["abc", "abc"], EXAMPLES) == [
        {"shorter_than_ref": 1.0},
        {"shorter_than_ref": 0.0},
    ]
    assert metric_named("shorter_than_ref").label == "shorter"  # the report knows it


def test_the_gsm8k_example_checks_the_final_number():
    from distill.select import plugins

    plugins.load([str(EXAMPLE)])  # as a run loads it: a plugin of metrics only
    fn = metrics.get("exact_answer").fn
    reference = "Natalia sold 48/2 = 24 clips in May.\n#### 72"
    assert fn("So 48 + 24 = 72 clips.\n#### 72", reference, {}) == 1.0
    assert fn("She sold 1,000 clips.", "#### 1000", {}) == 1.0
    assert fn("48 + 24 = 71", reference, {}) == 0.0 and fn("", reference, {}) == 0.0


@pytest.mark.parametrize(
    ("name", "fn", "problem"),
    [
        ("rougeL", lambda p, r, e: 0.0, "clashes with distill's own metric 'rougeL'"),
        ("two_args", lambda p, r: 0.0, "does not take (prediction, reference, example)"),
        ("bad/name", lambda p, r, e: 0.0, "metric name"),
    ],
)
def test_a_metric_that_cannot_work_is_refused_when_it_registers(name, fn, problem):
    with pytest.raises(DistillError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        metrics.metric(name, higher_is_better=True)(fn)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (lambda p, r, e: 1 / 0, "raised on example e2: ZeroDivisionError"),
        (lambda p, r, e: "yes", "returned 'yes' for example e2, not a finite number"),
        (lambda p, r, e: float("nan"), "returned nan for example e2"),
        (lambda p, r, e: None, "returned None for example e2"),
    ],
)
def test_a_metric_that_misbehaves_names_itself_the_example_and_the_value(answer, problem):
    def flaky(prediction, reference, example):
        return 0.5 if example["id"] == "e1" else answer(prediction, reference, example)

    metrics.metric(f"flaky_{abs(hash(problem))}", higher_is_better=False)(flaky)
    with pytest.raises(DistillError) as err:
        metrics.score([f"flaky_{abs(hash(problem))}"], ["a", "b"], ["a", "b"], EXAMPLES)
    assert problem in err.value.problem and f"flaky_{abs(hash(problem))}" in err.value.problem


def test_unknown_metrics_and_metrics_without_generation_are_refused_before_any_work(tiny_job):
    with pytest.raises(DistillError, match="unknown metric 'nope' in eval.metrics"):
        make_config(tiny_job, {"eval.metrics": "nope"})
    with pytest.raises(DistillError, match="report.metrics names 'nope'"):
        make_config(tiny_job, {"report.metrics": "rougeL,nope"})
    with_plugin = {"select.plugins": str(EXAMPLE), "eval.metrics": "exact_answer", "eval.generate": False}
    with pytest.raises(DistillError, match="eval.generate is false"):
        make_config(tiny_job, with_plugin)


@pytest.mark.slow
def test_a_plugin_metric_goes_through_the_same_statistics(tiny_job):
    """Two seeds of random and one method on GSM8K rows, scored by the plugin's metric: results.json has its
    mean per method and its test against random (CI, p, Holm's p, MDE, verdict); run.json records it, so the
    report rebuilds without the plugin."""
    from distill.report.build import build_report
    from distill.runtime import pipeline

    tiny_job["data"] = {"source": str(REPO / "data/gsm8k/gsm8k_instruct.jsonl"), "test_size": 4, "max_train": 16}
    tiny_job["seeds"] = 2
    tiny_job["select"]["plugins"] = [str(EXAMPLE)]
    tiny_job["eval"]["metrics"] = ["exact_answer"]
    tiny_job["report"] = {"metrics": ["exact_answer", "rougeL"]}
    cfg = make_config(tiny_job)
    pipeline.run(cfg)
    out = Path(cfg.output_dir)
    rows = json.loads((out / "comparison" / "results.json").read_text())["rows"]
    tested = next(r for r in rows if r["method"] == "balanced_lengths")
    assert set(tested["user_scores"]) == {"exact_answer"} and 0 <= tested["user_scores"]["exact_answer"] <= 1
    test = tested["vs_random"]["exact_answer"]
    assert {"ci95", "p", "p_holm", "mde", "verdict"} <= set(test) and test["seeds"] == 2
    assert json.loads((out / "run.json").read_text())["user_metrics"][0]["name"] == "exact_answer"
    predictions = (out / "trials" / "random-s0" / "predictions.jsonl").read_text().splitlines()
    assert all("exact_answer" in json.loads(line) for line in predictions)
    assert "exact answer" in (out / "comparison" / "report.md").read_text()
    assert build_report(out, cfg.report)  # rebuilds from run.json's record of the metric
