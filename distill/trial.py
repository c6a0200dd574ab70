"""One trial: fine-tune the target model on one subset, score it on the held-out set, store it.

Plain Python (pipeline.py wraps it as a Ray Tune trainable and persists what it returns on the
driver). Everything a trial produces lands in `<output>/trials/<name>/`: metrics.json and
predictions.jsonl (every held-out example with its generated summary and scores), keyed by a
content hash so a rerun reuses finished trials.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from distill import artifacts
from distill.checkpoint import TrainState
from distill.config import ExperimentConfig, content_hash, trial_settings
from distill.evaluate import Scorer, generate, score
from distill.generate_vllm import encode_adapter
from distill.models import device_name, load_model, load_tokenizer
from distill.prompt import PromptFormat
from distill.records import SCORE_KEYS, Resolved, TrialMetrics, TrialRecord
from distill.train import StepHook, add_lora, finetune, seed_everything


@dataclass(frozen=True)
class TrialSpec:
    name: str  # e.g. "clustering-s1"
    method: str  # selector name, or records.FULL
    seed: int
    indices: tuple[int, ...]  # rows of the training pool to fine-tune on
    select_seconds: float


def trial_key(spec: TrialSpec, cfg: ExperimentConfig, resolved: Resolved, data_fingerprint: str) -> str:
    """Hash of everything the trial's numbers depend on: its subset and seed, the data, the settings named in
    config.TRIAL_SETTINGS, and the resolved model, engine and BERTScore encoder."""
    parts = {"indices": list(spec.indices), "seed": spec.seed, "model": resolved.model_path, "data": data_fingerprint,
             "settings": trial_settings(cfg), "engine": resolved.engine, "scorer": asdict(resolved.scorer)}
    return content_hash(parts)


def cached_metrics(trial_dir: Path, key: str) -> TrialMetrics | None:
    """The stored metrics of a finished trial with this key; None (rerun it) when absent, stale or damaged."""
    path = trial_dir / "metrics.json"
    if artifacts.intact(path) and artifacts.intact(trial_dir / "predictions.jsonl"):
        data = json.loads(path.read_text())
        if data.get("key") == key:
            return TrialMetrics.from_dict(data, path)
    return None


def run_trial(spec: TrialSpec, cfg: ExperimentConfig, pool: pd.DataFrame, test: pd.DataFrame, resolved: Resolved,
              key: str, gpus: float = 0.0, state: TrainState | None = None,
              on_step: StepHook | None = None) -> dict:
    """Fine-tune on `pool.iloc[spec.indices]`, evaluate on `test`; returns the trial's record.

    The record is a TrialRecord as a dict (metrics + one prediction per held-out example). It is returned,
    not written: on a cluster the trial runs on another node, and the driver persists it. With the
    vLLM engine the trial stops after training: its record holds the trained metrics and the
    LoRA adapter ({"metrics", "adapter"}), and `evaluated` completes it after the shared vLLM stage.
    `state` resumes the fine-tune from a checkpoint; `on_step(step, steps, loss, snapshot)` hears of every
    optimizer step (the console's trial table, checkpoints).
    """
    device = device_name()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model_path = resolved.model_path
    tokenizer = load_tokenizer(model_path)
    fmt = PromptFormat(tokenizer, cfg.model.max_source_tokens, cfg.model.max_target_tokens)
    seed_everything(spec.seed)  # LoRA's initial weights are random: seed them too, or reruns differ
    model = add_lora(load_model(model_path, cfg.model, device), cfg.train, quantized=cfg.model.load_in_8bit)
    subset = pool.iloc[list(spec.indices)]
    stats = finetune(model, tokenizer, fmt, subset["text"].tolist(), subset["summary"].tolist(), cfg.train, spec.seed,
                     device, state=state, on_step=on_step)
    trained = {"trial": spec.name, "key": key, "method": spec.method, "seed": spec.seed, "samples": len(spec.indices),
               "select_seconds": spec.select_seconds, "train_seconds": stats.seconds,
               "train_tokens": stats.train_tokens, "train_steps": stats.steps, "final_train_loss": stats.final_loss,
               "resumed_from_step": state.step if state else 0, "micro_batch": stats.micro_batch, "device": device}
    if resolved.engine == "vllm":
        with tempfile.TemporaryDirectory(prefix="distill-adapter-") as tmp:
            model.save_pretrained(tmp)
            return {"metrics": {**trained, "peak_memory_mb": _peak_memory_mb(device)}, "adapter": encode_adapter(Path(tmp))}
    start = time.perf_counter()
    generated = generate(model, tokenizer, fmt, test["text"].tolist(), cfg.eval, device)
    return evaluated(trained, test, generated, time.perf_counter() - start, "hf", resolved.scorer, cfg.eval.batch_size,
                     gpus).to_dict()


def evaluated(trained: dict, test: pd.DataFrame, generated: list[str], generate_seconds: float, engine: str,
              scorer: Scorer, batch_size: int, gpus: float) -> TrialRecord:
    """Score a trained trial's generations; returns its complete record (metrics + predictions).

    `engine` ("hf" or "vllm") is recorded, so every trial says which engine wrote its predictions.
    """
    device = device_name()
    start = time.perf_counter()
    per_example = score(generated, test["summary"].tolist(), scorer, device, batch_size)
    eval_seconds = generate_seconds + time.perf_counter() - start
    metrics = TrialMetrics(
        **{**trained, "peak_memory_mb": max(trained.get("peak_memory_mb", 0.0), _peak_memory_mb(device))},
        scores={m: sum(r[m] for r in per_example) / len(per_example) for m in SCORE_KEYS},
        n_eval=len(per_example), n_empty=sum(r["empty"] for r in per_example), bertscore_model=scorer.label,
        eval_engine=engine, generate_seconds=generate_seconds, eval_seconds=eval_seconds,
        time_s=trained["select_seconds"] + trained["train_seconds"] + eval_seconds,
        gpu_seconds=(trained["train_seconds"] + eval_seconds) * gpus if trained["device"] == "cuda" else 0.0)
    predictions = [{"id": i, "prediction": p, "reference": r, **scores}
                   for i, p, r, scores in zip(test["id"], generated, test["summary"], per_example)]
    return TrialRecord(metrics, predictions)


def _peak_memory_mb(device: str) -> float:
    """Peak GPU memory on CUDA; peak resident memory of the worker process on CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_trial(trial_dir: Path, record: TrialRecord) -> None:
    """Persist a trial's record: predictions.jsonl, then metrics.json (its presence marks completion)."""
    artifacts.write_jsonl(trial_dir / "predictions.jsonl", record.predictions)
    artifacts.write_json(trial_dir / "metrics.json", record.metrics.to_dict(), indent=2, sort_keys=True)
