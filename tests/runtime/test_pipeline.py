"""The whole pipeline through a real local Ray cluster, on a tiny random Llama and real bills."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config.load import make_config
from distill.model.load import resolve_precision
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
    assert len(selected) == 6 and {"index", "id", "prompt", "response", "messages"} <= set(selected[0])
    predictions = (out / "trials" / "random-s0" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 4
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["pool_size"] == 24 and run_info["config"]["select"]["fraction"] == 0.25
    assert run_info["schema_version"] == SCHEMA_VERSION and run_info["test_model"] is True  # conftest marks it
    assert run_info["eval_engine"] == "hf" and run_info["config"]["eval"]["engine"] == "auto"  # resolved beside
    assert run_info["precision"] == resolve_precision(cfg.model, "cpu")  # what model.dtype auto resolved to
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
    # the shared embedding pass's cost is what computing it took, not the seconds of loading the cache
    assert json.loads((out / "run.json").read_text())["embed_seconds"] == run_info["embed_seconds"]


REPO = Path(__file__).resolve().parents[2]


def test_instruction_data_runs_end_to_end_with_the_prompt_and_response_selectors(tiny_job, tiny_model):
    """Real GSM8K instruction rows, format detected from the columns; the selectors whose features are defined on
    prompt and response (IFD's response-alone pass, RDS+'s query set, the probe's response losses) select, train
    and are reported; run.json says which format and template were used. (Every selector on each format's
    prompts: tests/select/test_selectors.py.)"""
    methods = ["random", "ifd", "rds_plus", "el2n_loss", "length_diversity"]
    tiny_job["data"] = {"source": str(REPO / "data/gsm8k/gsm8k_instruct.jsonl"), "test_size": 4, "max_train": 40}
    tiny_job["data"]["query_size"] = 4
    tiny_job["select"] = {"methods": methods, "fraction": 0.15}
    tiny_job["probe"] = {"grad_dim": 64, "grad_blocks": 4}
    tiny_job["eval"]["generate"] = False
    tiny_job["report"] = {"metrics": ["heldout_loss"]}
    cfg = make_config(tiny_job)
    rows = pipeline.run(cfg)
    out = Path(cfg.output_dir)
    assert {r["method"] for r in rows} == set(methods)
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["data_format"] == "instruction" and run_info["config"]["data"]["format"] == "auto"
    assert run_info["prompt"]["style"] == "chat" and run_info["prompt"]["instruction"] == ""
    assert "<user content>" in run_info["prompt"]["rendered"]
    selected = json.loads((out / "selected" / "random.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in selected["messages"]] == ["user", "assistant"]
    assert selected["messages"][-1]["content"] == selected["response"]


@pytest.mark.extended
def test_chat_data_runs_from_the_cli(tiny_model, tmp_path):
    """`distill quick --data <chat JSONL>`: real GSM8K chats, the model's chat template, the report."""
    from tests.cli_helpers import run_cli

    out = tmp_path / "out"
    result = run_cli(
        "quick",
        "--data",
        str(REPO / "data/gsm8k/gsm8k_chat.jsonl"),
        "--output-dir",
        str(out),
        "--test-size",
        "4",
        "--max-train",
        "24",
        "--fraction",
        "0.25",
        "--set",
        f"model.name={tiny_model}",
        "--set",
        "train.max_steps=1",
        "--set",
        "eval.max_new_tokens=4",
        "--set",
        "eval.bertscore_model=offline",
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "chat format (detected from its columns)" in result.stdout
    assert json.loads((out / "run.json").read_text())["data_format"] == "chat"
    assert (out / "comparison" / "results.json").exists()
