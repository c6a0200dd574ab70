"""Fault tolerance with real failures: a trial process that dies, a driver killed with SIGKILL, an embedding
actor that dies. Every kill is a real process death (os._exit or a signal); nothing about Ray is mocked. The
faults come from distill.faults (DISTILL_FAULT), once each. A worker node whose raylet is killed, on a
cluster without a shared disk, is in test_no_shared_disk.py."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distill.config.load import config_from_run, make_config
from distill.config.schema import ModelConfig, PromptConfig, TrainConfig
from distill.config.sections import FeatureSettings, TrialSettings
from distill.data.formats import user_turn
from distill.data.load import load_splits
from distill.model import checkpoint
from distill.model.load import load_model, load_tokenizer
from distill.model.prompt import PromptFormat
from distill.model.train import _shuffled_stream, add_lora, finetune, seed_everything
from distill.runtime import pipeline
from distill.runtime.features import embed_pool
from distill.runtime.session import ray_session
from distill.store import counters
from distill.store.records import Resolved
from distill.trial.evaluate import resolve_scorer
from distill.trial.run import TrialSpec, run_trial, trial_key
from tests.clusters import HANG_S, stop_ray, wait_for

REPO = Path(__file__).resolve().parents[2]
COMPARED = ("rouge1", "rouge2", "rougeL", "bertscore_f1", "final_train_loss", "train_steps", "train_tokens", "n_empty")


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


# ------------------------------------------------------------------------------------ the training state


def test_the_data_stream_resumes_at_any_position():
    full = list(itertools.islice(_shuffled_stream(7, seed=3), 40))
    for start in (0, 5, 7, 13, 21):
        assert list(itertools.islice(_shuffled_stream(7, seed=3, start=start), 40 - start)) == full[start:]


@pytest.mark.slow  # two whole fine-tunes: ~9 s of CPU
def test_a_fine_tune_resumed_from_a_saved_checkpoint_is_bit_identical(tiny_model, tmp_path):
    """Save after step 3 of 6 to disk, continue in a fresh model: the same adapter, to the last bit (CPU, one
    thread: the same kernels on the same inputs in the same order; dropout draws from the restored RNG)."""
    prompts = [
        user_turn(f"Section {i}. The Secretary shall report on program {i} to Congress within {i + 1} years.")
        for i in range(5)
    ]
    summaries = [f"Requires report {i}." for i in range(5)]
    cfg = TrainConfig(lora_r=4, lora_dropout=0.1, batch_size=2, epochs=3, max_steps=6, warmup_ratio=0.2)
    tokenizer = load_tokenizer(tiny_model)
    fmt = PromptFormat(tokenizer, PromptConfig(), "summarization", 24, 8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def model():
        seed_everything(0)
        return add_lora(load_model(tiny_model, ModelConfig(name=tiny_model, dtype="float32"), "cpu"), cfg)

    def lora(m):
        return {k: v.detach().clone() for k, v in m.named_parameters() if "lora_" in k}

    def save_at_3(step, steps, loss, snapshot):
        if step == 3:
            checkpoint.save(tmp_path / "ckpt", snapshot(), "t", "key")

    try:
        whole = model()
        stats = finetune(whole, tokenizer, fmt, prompts, summaries, cfg, seed=1, device="cpu", on_step=save_at_3)
        resumed = model()
        state = checkpoint.load(tmp_path / "ckpt")
        assert state.step == checkpoint.step_of(tmp_path / "ckpt") == 3
        again = finetune(resumed, tokenizer, fmt, prompts, summaries, cfg, seed=1, device="cpu", state=state)
    finally:
        torch.set_num_threads(threads)
    assert (again.steps, again.train_tokens, again.final_loss) == (stats.steps, stats.train_tokens, stats.final_loss)
    for name, value in lora(whole).items():
        assert torch.equal(value, lora(resumed)[name]), name


def test_checkpoint_cadence():
    every = checkpoint.Cadence(every=2, minutes=5)
    assert [s for s in range(1, 8) if every.due(s, 7)] == [2, 4, 6, 7]
    by_time = checkpoint.Cadence(every=0, minutes=5)
    assert [s for s in range(1, 8) if by_time.due(s, 7)] == [7]  # only the last step within 5 minutes
    by_time.last -= 301
    assert by_time.due(1, 7)


def test_resume_rebuilds_the_runs_config_from_run_json(tiny_job, tmp_path):
    cfg = make_config(tiny_job)
    (tmp_path / "run.json").write_text(json.dumps({"config": asdict(cfg)}))
    assert config_from_run(tmp_path) == replace(cfg, output_dir=str(tmp_path.resolve()))


def test_resume_of_a_folder_without_a_run_is_one_line_and_exit_2(tmp_path, capsys):
    from distill.cli import main

    assert main(["resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run.json" in err and "fix:" in err


# ------------------------------------------------------------------- 1. a trial process dies half-way


@pytest.mark.slow
def test_a_killed_trial_is_retried_from_its_checkpoint_and_matches_an_uninterrupted_run(
    tiny_job, tmp_path, monkeypatch
):
    tiny_job["select"]["methods"] = ["random"]
    tiny_job["train"].update(max_steps=6, epochs=3)
    tiny_job["resources"].update(checkpoint_every=2, max_failures=1)
    monkeypatch.setenv("DISTILL_FAULT", "train_step:3:exit")  # os._exit after step 3; the checkpoint is at step 2
    monkeypatch.setenv("DISTILL_FAULT_DIR", str(tmp_path))
    cfg = make_config(tiny_job)
    pipeline.run(cfg)

    out = Path(cfg.output_dir)
    died = json.loads((tmp_path / "train_step.json").read_text())
    assert died["tag"] == "random-s0" and died["action"] == "exit"  # the trial's process really exited...
    metrics = json.loads((out / "trials" / "random-s0" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 2  # ...and its retry started at the checkpoint, not at step 0
    assert counters.read(out)["train_steps"] == 6 - 2

    # the same trial, uninterrupted, in this process (one thread, as the trial had)
    splits = load_splits(cfg.data)
    indices = [json.loads(line)["index"] for line in (out / "selected" / "random.jsonl").read_text().splitlines()]
    spec = TrialSpec("random-s0", "random", 0, tuple(indices), 0.0)
    resolved = Resolved(cfg.model.name, "hf", resolve_scorer(cfg.eval, False)[0], test_model=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = run_trial(
            spec,
            TrialSettings.of(cfg),
            splits.train,
            splits.test,
            resolved,
            trial_key(spec, TrialSettings.of(cfg), resolved, splits.fingerprint),
            splits.format,
        )
    finally:
        torch.set_num_threads(threads)
    assert {m: metrics[m] for m in COMPARED} == {m: record.metrics.get(m) for m in COMPARED}  # bit-for-bit
    predictions = [
        json.loads(line)["prediction"]
        for line in (out / "trials" / "random-s0" / "predictions.jsonl").read_text().splitlines()
    ]
    assert predictions == [p["prediction"] for p in record.predictions]


# --------------------------------------------------------------------------- 2. the driver is killed


def _stalling_driver(tiny_job: dict, tmp_path: Path, marker: str, log) -> tuple[subprocess.Popen, dict, Path]:
    """A `distill quick` driver of two trials, printing to `log`, whose first trial to checkpoint step 2 stalls
    there while the other one finishes: (the driver, its environment, the file the stall writes)."""
    tiny_job["train"].update(max_steps=6, epochs=3)
    tiny_job["resources"].update(checkpoint_every=2)
    job, faults_dir = tmp_path / "job.yaml", tmp_path / "faults"
    job.write_text(yaml.safe_dump(tiny_job))
    faults_dir.mkdir()
    env = _env(DISTILL_FAULT="train_step:2:hang", DISTILL_FAULT_DIR=str(faults_dir), DISTILL_TEST_RAY=marker)
    driver = subprocess.Popen(
        [sys.executable, "-m", "distill", "quick", "--job", str(job)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return driver, env, faults_dir / "train_step.json"


@pytest.mark.slow
def test_resume_after_the_driver_is_killed_recomputes_nothing_that_was_finished(tiny_job, tmp_path):
    out = Path(tiny_job["output_dir"])
    marker = f"distill-ft-{os.getpid()}"  # every process of the driver's Ray cluster inherits it
    # the first trial to checkpoint step 2 stalls there; the other one finishes; then the driver is killed
    with open(tmp_path / "driver.log", "w") as log:
        driver, env, stalled = _stalling_driver(tiny_job, tmp_path, marker, log)
        try:
            wait_for(stalled.exists, HANG_S, "a trial to stall after its step-2 checkpoint")
            hung = json.loads(stalled.read_text())["tag"]
            wait_for(
                lambda: (
                    (out / "trials" / hung / checkpoint.POINTER_FILE).exists()
                    and len(list(out.glob("trials/*/metrics.json"))) == 1
                ),
                120,
                "the other trial to finish",
            )
            driver.send_signal(signal.SIGKILL)
            assert driver.wait(timeout=30) == -signal.SIGKILL
        finally:
            driver.kill()
            stop_ray(marker)  # what the dead driver's local cluster left running
    before = counters.read(out)
    assert before == {"embeddings": 24, "selections": 2, "trials": 1, "train_steps": 6}

    resumed = subprocess.run(
        [sys.executable, "-m", "distill", "resume", str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    stop_ray(marker)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = counters.read(out)
    # 0 embeddings, 0 selections, 0 finished trials again; the stalled trial's last 4 of 6 steps
    assert {k: after[k] - before.get(k, 0) for k in after} == {
        "embeddings": 0,
        "selections": 0,
        "trials": 1,
        "train_steps": 4,
    }
    assert json.loads((out / "trials" / hung / "metrics.json").read_text())["resumed_from_step"] == 2
    assert "reusing cached features" in resumed.stdout and "2 selection(s) reused" in resumed.stdout
    assert "1 trial(s) reused" in resumed.stdout
    assert len(json.loads((out / "comparison" / "results.json").read_text())["rows"]) == 2


@pytest.mark.slow
def test_ctrl_c_during_the_trials_stops_the_run_as_interrupted_not_done(tiny_job, tmp_path):
    """Ray Tune catches a SIGINT itself, stops the experiment and returns from fit(): the driver used to carry on
    to a report of the finished trials and exit 0, as if the run were complete. It exits 130, says it was
    interrupted, keeps the finished trial and writes no report."""
    out = Path(tiny_job["output_dir"])
    marker = f"distill-int-{os.getpid()}"
    with open(tmp_path / "driver.log", "w") as log:
        driver, _, stalled = _stalling_driver(tiny_job, tmp_path, marker, log)
        try:
            wait_for(stalled.exists, HANG_S, "a trial to stall after its step-2 checkpoint")
            wait_for(lambda: len(list(out.glob("trials/*/metrics.json"))) == 1, 120, "the other trial to finish")
            driver.send_signal(signal.SIGINT)
            code = driver.wait(timeout=120)
        finally:
            driver.kill()
            stop_ray(marker)
    printed = (tmp_path / "driver.log").read_text()
    assert code == 130, printed[-3000:]
    assert "distill: interrupted; finished trials are kept" in printed
    assert not (out / "comparison" / "results.json").exists()
    assert len(list(out.glob("trials/*/metrics.json"))) == 1


# ------------------------------------------------------------------------ 3. an embedding actor dies


@pytest.mark.slow
def test_a_dead_embedding_actor_is_restarted_and_every_row_is_embedded_once(tiny_job, tmp_path, monkeypatch):
    from distill.model.load import resolve_model

    tiny_job["embed"] = {"batch_size": 4}
    cfg = make_config(tiny_job)
    splits = load_splits(cfg.data)
    model_path = resolve_model(cfg.model.name)
    monkeypatch.setenv("DISTILL_FAULT", "embed_batch:2:exit")  # the actor process exits on its second batch
    monkeypatch.setenv("DISTILL_FAULT_DIR", str(tmp_path))
    with ray_session(cfg.resources):
        hit, _ = embed_pool(
            cfg.name, FeatureSettings.of(cfg), cfg.resources.max_failures, splits, model_path, tmp_path / "hit"
        )
        calm, _ = embed_pool(
            cfg.name, FeatureSettings.of(cfg), cfg.resources.max_failures, splits, model_path, tmp_path / "calm"
        )  # the fault fires once: not here
    assert json.loads((tmp_path / "embed_batch.json").read_text())["action"] == "exit"
    # embed_pool checks the row ids (each pool row exactly once) before it caches anything
    assert counters.read(tmp_path / "hit") == {"embeddings": len(splits.train)}
    np.testing.assert_array_equal(hit.embeddings, calm.embeddings)
    np.testing.assert_array_equal(hit.loss, calm.loss)
