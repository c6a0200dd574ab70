"""The whole pipeline through a real local Ray cluster, on a tiny random Llama and real bills."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config.load import make_config
from distill.runtime import pipeline
from distill.store.records import SCHEMA_VERSION

pytestmark = pytest.mark.slow


def test_quick_pipeline_end_to_end_then_reuses_everything(tiny_job, capsys):
    cfg = make_config(tiny_job)
    rows = pipeline.run(cfg)
    out = Path(cfg.output_dir)

    results = json.loads((out / "comparison" / "results.json").read_text())["rows"]
    assert [r["method"] for r in results] == [r["method"] for r in rows]
    assert {r["method"] for r in results} == {"random", "balanced_lengths"}
    for row in results:
        assert row["samples"] == 6  # 25% of a 24-example pool
        for metric in ("rouge1", "rouge2", "rougeL", "bertscore_f1"):
            assert 0.0 <= row[metric] <= 1.0
        assert row["time_s"] > 0
    assert results[0]["method"] == "random" and "vs_random_pct" in results[0]
    for name in ("results.csv", "report.md", "forest_rougeL.png", "forest_heldout_loss.png", "cost.png"):
        assert (out / "comparison" / name).stat().st_size > 0

    selected = [json.loads(line) for line in (out / "selected" / "random.jsonl").read_text().splitlines()]
    assert len(selected) == 6 and {"index", "id", "text", "summary"} <= set(selected[0])
    predictions = (out / "trials" / "random-s0" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 4
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["pool_size"] == 24 and run_info["config"]["select"]["fraction"] == 0.25
    assert run_info["schema_version"] == SCHEMA_VERSION and run_info["test_model"] is True  # conftest marks it
    assert run_info["eval_engine"] == "hf" and run_info["config"]["eval"]["engine"] == "auto"  # resolved beside
    assert "HF_TOKEN" not in json.dumps(run_info)
    assert set(run_info["trials"]) == {"random-s0", "balanced_lengths-s0"} and run_info["embed_seconds"] > 0
    trial = json.loads((out / "trials" / "random-s0" / "metrics.json").read_text())
    assert run_info["trials"]["random-s0"] == trial["key"] and trial["train_cpu_seconds"] > 0

    # A rerun reuses the cached features and both finished trials, whatever the report and resource settings.
    capsys.readouterr()
    pipeline.run(
        make_config(
            tiny_job,
            {
                "report.metrics": "rougeL",
                "resources.vllm_max_num_seqs": 4,
                "resources.max_failures": 0,
                "resources.checkpoint_minutes": 1,
            },
        )
    )
    log = capsys.readouterr().out
    assert "reusing cached features" in log
    assert "2 trial(s) reused" in log
