"""`python -m distill validate`: every check reports pass/warn/fail with a fix; only what the job needs fails."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from distill.config.load import make_config
from distill.console import checklist, machine

REPO = Path(__file__).resolve().parents[2]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")


@pytest.fixture(autouse=True)
def _no_cluster_address(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./.env


def _run(cfg, capsys):
    code = checklist.checklist(cfg)
    return code, capsys.readouterr().out


def _status(out: str, name: str) -> str:
    line = next(line for line in out.splitlines() if line[7:].startswith(name))
    return line[1:5].strip()


@no_gpu
def test_cpu_job_passes_on_a_cpu_machine_and_never_prints_the_token(tiny_job, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_print_me_123")
    code, out = _run(make_config(tiny_job), capsys)
    assert code == 0, out
    assert "READY" in out
    for name in (
        "python",
        "packages",
        "torch / CUDA",
        "ray cluster",
        "GPU for this job",
        "HF_TOKEN",
        "dataset",
        "model",
        "disk",
        "W&B",
    ):
        assert _status(out, name) in ("ok", "info", "warn"), name
    assert _status(out, "torch / CUDA") == "info" and "no GPU" in out  # absent GPU: reported, not a failure
    assert "24 training pool, 4 held out" in out  # dataset counts from load_splits
    assert "llama, 2 layers × 32 hidden" in out  # config + tokenizer of the target model, no weights
    assert "hf_do_not_print_me_123" not in out and _status(out, "HF_TOKEN") == "ok"


@no_gpu
@pytest.mark.parametrize(
    "setting",
    [{"model": {"dtype": "bfloat16"}}, {"model": {"load_in_8bit": True}}, {"resources": {"gpus_per_trial": 1}}],
)
def test_a_job_that_needs_a_gpu_fails_without_one(tiny_job, capsys, setting):
    job = {**tiny_job, **{k: {**tiny_job.get(k, {}), **v} for k, v in setting.items()}}
    code, out = _run(make_config(job), capsys)
    assert code == 1
    assert _status(out, "GPU for this job") == "FAIL"
    assert "fix: run on a GPU machine/cluster" in out and "NOT READY" in out


def test_needs_gpu_reasons():
    assert machine.needs_gpu(make_config("quick")) == []
    assert len(machine.needs_gpu(make_config("all-llama2-7b"))) == 3
    assert machine.needs_gpu(make_config("quick-gpu")) == ["model.dtype bfloat16", "resources.gpus_per_trial 1"]


def test_missing_data_and_model_fail_with_their_fix(tiny_job, capsys, tmp_path):
    job = {
        **tiny_job,
        "data": {"source": str(tmp_path / "missing.jsonl")},
        "model": {**tiny_job["model"], "name": str(tmp_path / "no-model")},
    }
    code, out = _run(make_config(job), capsys)
    assert code == 1
    assert _status(out, "dataset") == "FAIL" and "does not exist" in out
    assert _status(out, "model") == "FAIL"
    assert out.count("fix:") >= 2


def test_offline_hub_model_fails_and_wrong_lora_targets_fail(tiny_job, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out = _run(
        make_config({**tiny_job, "model": {**tiny_job["model"], "name": "some-org/not-cached-model"}}), capsys
    )
    assert code == 1 and _status(out, "model") == "FAIL" and "embedded default" in out
    code, out = _run(make_config({**tiny_job, "train": {**tiny_job["train"], "target_modules": ["c_attn"]}}), capsys)
    assert code == 1 and _status(out, "LoRA targets") == "FAIL" and "q_proj" in out


def test_wandb_online_without_key_fails_offline_passes(tiny_job, capsys):
    code, out = _run(make_config({**tiny_job, "wandb": {"enabled": True, "online": True}}), capsys)
    assert code == 1 and _status(out, "W&B") == "FAIL" and "WANDB_API_KEY is not set" in out
    pytest.importorskip("wandb")
    code, out = _run(make_config({**tiny_job, "wandb": {"enabled": True}}), capsys)
    assert _status(out, "W&B") == "ok" and "offline" in out


@pytest.mark.slow  # a whole `python -m distill.validate` process
def test_module_entry_point_takes_a_job_in_seconds(tiny_job, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_job))
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "distill.validate", "--job", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    took = time.perf_counter() - start
    assert result.returncode == 0, result.stdout + result.stderr
    assert "READY: job 'test'" in result.stdout
    assert took < 60, took


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"train.target_modules": "foo"}, "llama has no module named foo"),
        ({"model.max_source_tokens": 2000, "model.max_target_tokens": 64}, "> 2048 positions"),
    ],
)
def test_a_run_refuses_in_preflight_what_validate_fails(tiny_job, capsys, override, problem):
    """One check for every mode: what `distill validate` lists as FAIL stops a run in its preflight, before any
    Ray work and with its output folder untouched (a LoRA target the model lacks used to fail every trial after
    the whole pool was embedded)."""
    from distill.errors import DistillError
    from distill.runtime import preflight

    cfg = make_config(tiny_job, override)
    with pytest.raises(DistillError, match=problem):
        preflight.check(cfg)
    assert not Path(cfg.output_dir).exists()
    code, out = _run(cfg, capsys)
    assert code == 1 and problem in out
