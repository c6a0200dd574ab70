"""Job specs, config validation and CLI overrides; GPU training paths that can be proven on a CPU
(out-of-memory backoff, 8-bit refusal); the W&B callback switch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.cli import overrides, parser
from distill.config.load import JOBS_DIR, make_config
from distill.config.schema import ModelConfig, TrainConfig
from distill.data.formats import user_turn
from distill.errors import DistillError
from distill.model import train
from distill.runtime.tune import _callbacks
from distill.select import registry

JOBS = sorted(JOBS_DIR.glob("*.yaml"))
REPO = Path(__file__).resolve().parents[2]


def test_the_issue_lists_every_job():
    assert {p.stem for p in JOBS} >= {
        "quick",
        "baseline",
        "all",
        "quick-gpu",
        "all-gpu",
        "quick-gpt2-xl",
        "all-llama2-7b",
        "scitldr",
    }


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_every_job_loads_and_validates(path):
    cfg = make_config(path)  # unknown keys, bad types and unregistered methods would raise here
    assert cfg.name == path.stem
    if cfg.mode == "all":
        assert cfg.select.methods == registry.names() or set(cfg.select.methods) == set(registry.names())
        assert cfg.include_baseline
    if cfg.mode == "baseline":
        assert cfg.select.methods == [] and cfg.include_baseline
    if "gpu" in path.stem or "llama" in path.stem or "gpt2" in path.stem:
        assert cfg.resources.gpus_per_trial == 1 and cfg.train.auto_batch_size


def test_scitldr_job_reads_the_shipped_file(monkeypatch):
    from distill.data.load import load_splits

    monkeypatch.chdir(REPO)
    cfg = make_config("scitldr")
    splits = load_splits(cfg.data)
    assert len(splits.test) == cfg.data.test_size and len(splits.train) > 1900
    assert splits.train["id"].str.startswith("scitldr_train").all() and (splits.train["title"] == "").all()


def test_unknown_key_errors_naming_it():
    with pytest.raises(DistillError, match=r"unknown config key 'train\.batchsize'"):
        make_config({"train": {"batchsize": 4}})
    with pytest.raises(DistillError, match=r"unknown config key 'colour'"):
        make_config({"colour": "blue"})


def test_cli_overrides_apply():
    args = parser().parse_args(
        [
            "quick",
            "--fraction",
            "0.2",
            "--methods",
            "random,clustering",
            "--seeds",
            "3",
            "--set",
            "train.learning_rate=1e-4",
            "--set",
            "model.max_source_tokens=128",
        ]
    )
    cfg = make_config("quick", overrides(args))
    assert cfg.select.fraction == 0.2
    assert cfg.select.methods == ["random", "clustering"]
    assert cfg.seeds == 3
    assert cfg.train.learning_rate == 1e-4 and cfg.model.max_source_tokens == 128


@pytest.mark.parametrize(
    "argv, words",
    [
        (["quick", "--fraction", "0"], "select.fraction' must be a number in (0, 1], got 0"),
        (["quick", "--methods", "nope"], "nope"),
        (["quick", "--set", "train.batchsize=2"], "train.batchsize"),
    ],
)
def test_bad_settings_exit_2_with_one_line_and_no_traceback(argv, words):
    result = subprocess.run(
        [sys.executable, "-m", "distill", *argv], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distill: error:") and words in lines[0] and "fix:" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


# ------------------------------------------------------------------------------------ GPU paths on CPU


@pytest.fixture(scope="module")
def tiny_lora(tiny_model):
    from distill.config.schema import PromptConfig
    from distill.model.load import load_model, load_tokenizer
    from distill.model.prompt import PromptFormat

    tokenizer = load_tokenizer(tiny_model)
    model = train.add_lora(load_model(tiny_model, ModelConfig(), "cpu"), TrainConfig())
    return model, tokenizer, PromptFormat(tokenizer, PromptConfig(), "summarization", 32, 8)


def test_out_of_memory_step_is_retried_with_half_the_micro_batch(tiny_lora, monkeypatch, capsys):
    model, tokenizer, fmt = tiny_lora
    real_collate = train.collate
    seen = []

    def collate_that_ooms(examples, pad_id, device):
        seen.append(len(examples))
        if len(examples) > 1:  # any micro-batch above 1 "does not fit on the GPU"
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_collate(examples, pad_id, device)

    monkeypatch.setattr(train, "collate", collate_that_ooms)
    texts = [user_turn(f"document number {i} about the budget of the state." * 3) for i in range(8)]
    summaries = [f"summary {i}" for i in range(8)]
    cfg = TrainConfig(batch_size=4, grad_accum=1, epochs=1.0, max_steps=2)
    stats = train.finetune(model, tokenizer, fmt, texts, summaries, cfg, seed=0, device="cpu")

    assert stats.steps == 2 and stats.micro_batch == 1 and stats.final_loss == stats.final_loss  # not NaN
    assert seen[:3] == [4, 2, 1]  # 4 → OOM, 2 → OOM, then 1 fits: the same step, retried
    assert seen.count(4) == 1 and seen.count(2) == 1  # later steps keep the smaller micro-batch
    out = capsys.readouterr().out
    assert "retrying the step with micro-batch 2" in out and "retrying the step with micro-batch 1" in out
    assert stats.examples == 8 and stats.train_tokens > 0


def test_out_of_memory_at_micro_batch_1_is_raised(tiny_lora, monkeypatch):
    model, tokenizer, _ = tiny_lora

    def always_oom(*_args, **_kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(train, "collate", always_oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        train._step_with_backoff(model, [([1, 2, 3], [-100, 2, 3])] * 2, 2, tokenizer.pad_token_id, "cpu")


def test_load_in_8bit_on_cpu_is_a_clear_error(tiny_model):
    from distill.model.load import load_model

    with pytest.raises(DistillError) as err:
        load_model(tiny_model, ModelConfig(load_in_8bit=True), "cpu")
    assert "CUDA GPU" in err.value.problem and "load_in_8bit: false" in err.value.fix


# ------------------------------------------------------------------------------------------------ W&B


def test_wandb_callbacks(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./.env with a key
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert _callbacks(make_config({"wandb": {"enabled": False}}).wandb, "test") == []
    with pytest.raises(DistillError, match="WANDB_API_KEY"):
        _callbacks(make_config({"wandb": {"enabled": True, "online": True}}).wandb, "test")
    pytest.importorskip("wandb")
    offline = _callbacks(make_config({"wandb": {"enabled": True, "online": False}}).wandb, "test")
    assert [type(c).__name__ for c in offline] == ["WandbLoggerCallback"]


# ------------------------------------------------------------------------------ installed package


@pytest.mark.slow
@pytest.mark.extended
def test_a_non_editable_install_ships_the_jobs_and_the_console_command(tmp_path):
    """`pip install` (not -e) of a copy of the source: the jobs are package data, found by name."""
    source = tmp_path / "src"
    shutil.copytree(REPO / "distill", source / "distill", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    assert sorted(p.name for p in (target / "distill" / "config" / "jobs").glob("*.yaml")) == sorted(
        p.name for p in JOBS
    )

    elsewhere = tmp_path / "elsewhere"  # no jobs/ folder and no checkout here
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    listed = subprocess.run(
        [str(target / "bin" / "distill"), "jobs"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [p.stem for p in JOBS]
    assert all(len(line.split(maxsplit=1)) == 2 for line in listed.stdout.splitlines())  # each has a description
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import distill; from distill.config.load import make_config; "
            "print(distill.__file__); print(make_config('quick-gpu').name)",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines() == [str(target / "distill" / "__init__.py"), "quick-gpu"]
    version = subprocess.run(
        [str(target / "bin" / "distill"), "--version"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.stdout.strip() == "distill 0.1.0 (git unknown: not a git checkout)", version.stdout + version.stderr
