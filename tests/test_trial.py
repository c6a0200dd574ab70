"""One trial end to end on the tiny model: metrics contract, predictions file, caching, keys."""

from __future__ import annotations

import dataclasses
import json

import pytest

from distill.config import DataConfig, make_config
from distill.data import load_splits
from distill.evaluate import resolve_scorer
from distill.storage import open_storage
from distill.trial import TrialSpec, cached_metrics, run_trial, trial_key, write_trial

CONTRACT = {"trial", "key", "method", "seed", "samples", "rouge1", "rouge2", "rougeL", "bertscore_f1", "n_eval",
            "n_empty", "bertscore_model", "select_seconds", "train_seconds", "eval_seconds", "time_s", "gpu_seconds",
            "peak_memory_mb", "train_tokens", "device"}


@pytest.fixture(scope="module")
def setup(tiny_model):
    cfg = make_config({
        "model": {"name": tiny_model, "dtype": "float32", "max_source_tokens": 48, "max_target_tokens": 8},
        "select": {"methods": ["random"], "fraction": 0.5},
        "train": {"epochs": 1, "batch_size": 2, "max_steps": 2, "lora_r": 2},
        "eval": {"max_new_tokens": 4, "batch_size": 2, "bertscore_model": "offline"},
    })
    splits = load_splits(DataConfig(test_size=2, max_train=6))
    pool, test = splits.train.iloc[:4].reset_index(drop=True), splits.test
    scorer, _ = resolve_scorer(cfg.eval, hub_reachable=False)
    return cfg, pool, test, scorer, splits.fingerprint


@pytest.fixture(scope="module")
def finished(setup, tiny_model, tmp_path_factory):
    cfg, pool, test, scorer, fingerprint = setup
    spec = TrialSpec("random-s0", "random", 0, (0, 2, 3), select_seconds=0.25)
    key = trial_key(spec, cfg, tiny_model, fingerprint, scorer)
    out = tmp_path_factory.mktemp("out")
    record = run_trial(spec, cfg, pool, test, tiny_model, scorer, key)
    write_trial(open_storage(out), spec.name, record)
    return spec, key, out / "trials" / spec.name, record["metrics"]


def test_metrics_file_holds_the_contract(finished, setup):
    spec, key, trial_dir, metrics = finished
    _, _, test, scorer, _ = setup
    stored = json.loads((trial_dir / "metrics.json").read_text())
    assert stored == json.loads(json.dumps(metrics))
    assert CONTRACT <= set(stored), CONTRACT - set(stored)
    assert stored["trial"] == "random-s0" and stored["method"] == "random" and stored["seed"] == 0
    assert stored["key"] == key
    assert stored["samples"] == 3
    assert stored["n_eval"] == len(test) == 2
    assert 0 <= stored["n_empty"] <= 2
    assert stored["bertscore_model"] == scorer.label
    assert stored["device"] == "cpu" and stored["gpu_seconds"] == 0.0
    assert stored["select_seconds"] == 0.25
    assert stored["time_s"] == pytest.approx(stored["select_seconds"] + stored["train_seconds"] + stored["eval_seconds"])
    assert stored["train_tokens"] > 0 and stored["peak_memory_mb"] > 0
    for metric in ("rouge1", "rouge2", "rougeL", "bertscore_f1"):
        assert 0.0 <= stored[metric] <= 1.0
    assert not (trial_dir / "metrics.json.tmp").exists()


def test_predictions_file_one_line_per_test_row_in_order(finished, setup):
    _, _, trial_dir, metrics = finished
    _, _, test, _, _ = setup
    lines = [json.loads(line) for line in (trial_dir / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == test["id"].tolist()
    assert [r["reference"] for r in lines] == test["summary"].tolist()
    for row in lines:
        assert {"prediction", "rouge1", "rouge2", "rougeL", "bertscore_f1", "empty"} <= set(row)
        assert row["empty"] == (not row["prediction"].strip())
    assert sum(r["empty"] for r in lines) == metrics["n_empty"]
    assert sum(r["rougeL"] for r in lines) / len(lines) == pytest.approx(metrics["rougeL"])


def test_cached_metrics(finished, tmp_path):
    _, key, trial_dir, metrics = finished
    assert cached_metrics(trial_dir, key)["key"] == key
    assert cached_metrics(trial_dir, key)["rougeL"] == metrics["rougeL"]
    assert cached_metrics(trial_dir, "0" * 16) is None
    assert cached_metrics(tmp_path / "never-ran", key) is None


def test_trial_key_depends_on_everything(setup, tiny_model):
    cfg, _, _, scorer, fingerprint = setup
    spec = TrialSpec("random-s0", "random", 0, (0, 2, 3), 0.25)
    base = trial_key(spec, cfg, tiny_model, fingerprint, scorer)
    # timing and the display name do not change the numbers, so they do not change the key
    assert trial_key(dataclasses.replace(spec, select_seconds=9.0), cfg, tiny_model, fingerprint, scorer) == base
    train = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, learning_rate=1e-3))
    evaluation = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, max_new_tokens=5))
    model_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, max_source_tokens=49))
    variants = [
        trial_key(dataclasses.replace(spec, indices=(0, 2)), cfg, tiny_model, fingerprint, scorer),
        trial_key(dataclasses.replace(spec, indices=(0, 1, 3)), cfg, tiny_model, fingerprint, scorer),
        trial_key(dataclasses.replace(spec, seed=1), cfg, tiny_model, fingerprint, scorer),
        trial_key(spec, train, tiny_model, fingerprint, scorer),
        trial_key(spec, evaluation, tiny_model, fingerprint, scorer),
        trial_key(spec, model_cfg, tiny_model, fingerprint, scorer),
        trial_key(spec, cfg, tiny_model + "-other", fingerprint, scorer),
        trial_key(spec, cfg, tiny_model, "f" * 16, scorer),
        trial_key(spec, cfg, tiny_model, fingerprint, dataclasses.replace(scorer, num_layers=5)),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_rerun_with_same_seed_is_identical(finished, setup, tiny_model, tmp_path):
    import torch

    spec, key, trial_dir, metrics = finished
    cfg, pool, test, scorer, _ = setup
    torch.rand(100)  # consume global RNG state: the trial must seed everything it uses itself
    again = run_trial(spec, cfg, pool, test, tiny_model, scorer, key)
    write_trial(open_storage(tmp_path), spec.name, again)
    assert again["metrics"]["final_train_loss"] == metrics["final_train_loss"]
    assert again["metrics"]["train_tokens"] == metrics["train_tokens"]
    assert (tmp_path / "trials" / spec.name / "predictions.jsonl").read_text() == (trial_dir / "predictions.jsonl").read_text()
