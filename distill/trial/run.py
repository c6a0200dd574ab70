"""One trial: fine-tune the target model on one subset, score it on the held-out set, store it.

Plain Python (distill/runtime/tune.py wraps it as a Ray Tune trainable, which writes what it returns to the run's
storage from its node). A trial receives the sections it reads (config.sections.TrialSettings) and returns typed
records (records.TrialRecord, or a TrainedTrial for the shared vLLM stage) until they are written. Everything a
trial produces lands in `trials/<name>/` there (and in the output folder): metrics.json and predictions.jsonl
(every held-out example with its generated response, scores and held-out loss), keyed by a content hash so a
rerun reuses finished trials.
"""

from __future__ import annotations

import json
import posixpath
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from distill.config.sections import TrialSettings
from distill.features.embed import response_losses
from distill.model.checkpoint import TrainState
from distill.model.load import autocast, device_name, load_model, load_tokenizer, resolve_precision
from distill.model.prompt import Encoded, PromptFormat
from distill.model.train import StepHook, add_lora, finetune, seed_everything
from distill.store import artifacts
from distill.store.artifacts import content_hash
from distill.store.records import GENERATED_KEYS, HELDOUT_LOSS, Resolved, Scorer, TrialMetrics, TrialRecord
from distill.store.storage import Storage
from distill.trial import metrics as user_metric
from distill.trial.evaluate import generate, score
from distill.trial.vllm import read_adapter

TRIALS = "trials"  # the folder of trial folders, in storage and in the output folder
ADAPTER = "adapter"  # a trained trial's LoRA adapter folder (vLLM engine), in its trial folder
TRAINED_FILE = "trained.json"  # ... and beside it, its TrainedTrial (less the adapter)


@dataclass(frozen=True)
class TrialSpec:
    name: str  # e.g. "clustering-s1"
    method: str  # selector name, or records.FULL
    seed: int
    indices: tuple[int, ...]  # rows of the training pool to fine-tune on
    select_seconds: float


@dataclass
class TrainedTrial:
    """A trial trained for the shared vLLM stage (runtime/generation.py): its metrics so far (no scores yet), its
    held-out losses and its LoRA adapter's files. The trial's node writes the adapter to `ADAPTER` and the rest to
    `TRAINED_FILE` in its trial folder; the scoring task reads it back (`from_dict`) and completes it (`evaluated`)."""

    metrics: TrialMetrics
    heldout_loss: list[float]
    adapter: dict[str, bytes]  # file name → content (not in TRAINED_FILE: written beside it)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics.to_dict(), HELDOUT_LOSS.name: self.heldout_loss}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainedTrial:
        """TRAINED_FILE's content (the adapter stays in its folder)."""
        names = {f.name for f in fields(TrialMetrics)} - {"scores"}
        metrics = TrialMetrics(**{k: v for k, v in data["metrics"].items() if k in names}, scores={})
        return cls(metrics, data[HELDOUT_LOSS.name], {})


def trial_key(
    spec: TrialSpec,
    settings: TrialSettings,
    resolved: Resolved,
    data_fingerprint: str,
    plugin_sources: Sequence[str] = (),
) -> str:
    """Hash of everything the trial's numbers depend on: its subset and seed, the data, the settings named in
    config.sections.TRIAL_SETTINGS (`settings.hashed()`), the resolved model, precision, engine and BERTScore
    encoder, and (when your metrics score it) the source of the plugins that define them: an edited metric
    rescores."""
    parts = {
        "indices": list(spec.indices),
        "seed": spec.seed,
        "model": resolved.model_path,
        "precision": resolved.precision,
        "data": data_fingerprint,
        "settings": settings.hashed(),
        "engine": resolved.engine,
        "scorer": asdict(resolved.scorer),
        **({"metric_plugins": list(plugin_sources)} if settings.eval.metrics else {}),
    }
    return content_hash(parts)


def cached_metrics(trial_dir: Path, key: str) -> TrialMetrics | None:
    """The stored metrics of a finished trial with this key; None (rerun it) when absent, stale or damaged."""
    path = trial_dir / "metrics.json"
    if artifacts.intact(path) and artifacts.intact(trial_dir / "predictions.jsonl"):
        data = json.loads(path.read_text())
        if data.get("key") == key:
            return TrialMetrics.from_dict(data, path)
    return None


def run_trial(
    spec: TrialSpec,
    settings: TrialSettings,
    pool: pd.DataFrame,
    test: pd.DataFrame,
    resolved: Resolved,
    key: str,
    data_format: str,
    gpus: float = 0.0,
    state: TrainState | None = None,
    on_step: StepHook | None = None,
) -> TrialRecord | TrainedTrial:
    """Fine-tune on `pool.iloc[spec.indices]`, evaluate on `test`; returns the trial's record (metrics + one
    prediction per held-out example), which the caller writes to the run's storage (`write_trial`) from the node it
    ran on. With the vLLM engine the trial stops after training: it returns a TrainedTrial (the trained metrics,
    held-out losses and LoRA adapter), and `evaluated` completes it after the shared vLLM stage.
    `state` resumes the fine-tune from a checkpoint; `on_step(step, steps, loss, snapshot)` hears of every
    optimizer step (the console's trial table, checkpoints).
    """
    device = device_name()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model_path = resolved.model_path
    precision = resolved.precision if device == "cpu" else resolve_precision(settings.model, device)
    tokenizer = load_tokenizer(model_path)
    fmt = PromptFormat(
        tokenizer, settings.prompt, data_format, settings.model.max_source_tokens, settings.model.max_target_tokens
    )
    seed_everything(spec.seed)  # LoRA's initial weights are random: seed them too, or reruns differ
    model = load_model(model_path, settings.model, device, precision)
    model = add_lora(model, settings.train, quantized=settings.model.load_in_8bit)
    subset = pool.iloc[list(spec.indices)]
    train_cpu = time.process_time()  # the process's CPU seconds: no time spent waiting for a CPU counts
    with autocast(precision, device):  # bf16 matmuls over fp32 weights: LoRA weights and AdamW state stay fp32
        stats = finetune(
            model,
            tokenizer,
            fmt,
            subset["turns"].tolist(),
            subset["response"].tolist(),
            settings.train,
            spec.seed,
            device,
            state=state,
            on_step=on_step,
        )
    train_cpu, eval_cpu = time.process_time() - train_cpu, time.process_time()
    start = time.perf_counter()
    encoded = encode_heldout(fmt, test)
    heldout_cut = sum(e.target_cut for e in encoded)
    with autocast(precision, device):
        losses = heldout_losses(model, tokenizer, encoded, settings.eval.batch_size, device)
    trained = TrialMetrics(
        trial=spec.name,
        key=key,
        method=spec.method,
        scores={},
        seed=spec.seed,
        samples=len(spec.indices),
        select_seconds=spec.select_seconds,
        train_seconds=stats.seconds,
        train_tokens=stats.train_tokens,
        train_steps=stats.steps,
        train_responses_cut=sum(fmt.encode(t, r).target_cut for t, r in zip(subset["turns"], subset["response"])),
        heldout_responses_cut=heldout_cut,
        final_train_loss=stats.final_loss,
        resumed_from_step=state.step if state else 0,
        micro_batch=stats.micro_batch,
        device=device,
        precision=precision,
        heldout_loss_seconds=time.perf_counter() - start,
        train_cpu_seconds=train_cpu,
    )
    if not settings.eval.generate:  # a loss-only sweep: nothing to generate, nothing for a vLLM engine to do
        record = evaluated(trained, test, losses, None, 0.0, "hf", resolved.scorer, settings.eval.batch_size, gpus)
        return _with_eval_cpu(record, eval_cpu)
    if resolved.engine == "vllm":
        with tempfile.TemporaryDirectory(prefix="distill-adapter-") as tmp:
            model.save_pretrained(tmp)
            return TrainedTrial(
                replace(trained, peak_memory_mb=_peak_memory_mb(device)), losses, read_adapter(Path(tmp))
            )
    start = time.perf_counter()
    with autocast(precision, device):
        generated = generate(model, tokenizer, fmt, [e.prompt for e in encoded], settings.eval, device)
    seconds = time.perf_counter() - start
    scorer, batch = resolved.scorer, settings.eval.batch_size
    record = evaluated(trained, test, losses, generated, seconds, "hf", scorer, batch, gpus, settings.eval.metrics)
    return _with_eval_cpu(record, eval_cpu)


def _with_eval_cpu(record: TrialRecord, started: float) -> TrialRecord:
    """The record with the CPU seconds its evaluation took in this process since `started` (process_time)."""
    record.metrics.eval_cpu_seconds = time.process_time() - started
    return record


def encode_heldout(fmt: PromptFormat, test: pd.DataFrame) -> list[Encoded]:
    """Each held-out example's prompt + reference response, encoded once: the loss pass reads both, generation the
    prompt (encoding a long prompt is most of the tokenizer's work, so it is not done twice)."""
    return [fmt.encode(turns, response) for turns, response in zip(test["turns"], test["response"])]


def heldout_losses(model, tokenizer, encoded: list[Encoded], batch_size: int, device: str) -> list[float]:
    """Each held-out reference response's mean per-token cross-entropy under `model` (the fine-tuned adapter):
    response positions only, the training prompt and truncation (a reference cut at model.max_target_tokens is
    scored on its kept tokens), batched teacher-forced passes in length-sorted batches, returned in the examples'
    order (embed.response_losses, the same code as the embedding pass and the probe)."""
    return response_losses(model, encoded, tokenizer.pad_token_id, batch_size, device).tolist()


def evaluated(
    trained: TrialMetrics,
    test: pd.DataFrame,
    losses: list[float],
    generated: list[str] | None,
    generate_seconds: float,
    engine: str,
    scorer: Scorer,
    batch_size: int,
    gpus: float,
    user_metrics: Sequence[str] = (),
) -> TrialRecord:
    """Score a trained trial's held-out losses and generations (None: a loss-only trial, eval.generate false);
    returns its complete record (metrics + predictions). `user_metrics`: the names of your registered metrics
    (distill/trial/metrics.py) that score each generation too.

    `engine` ("hf" or "vllm") is recorded, so every trial says which engine wrote its predictions.
    """
    device = device_name()
    start = time.perf_counter()
    per_example = (
        [{} for _ in losses]
        if generated is None
        else score(generated, test["response"].tolist(), scorer, device, batch_size)
    )
    if generated is not None and user_metrics:
        yours = user_metric.score(user_metrics, generated, test["response"].tolist(), examples_of(test))
        per_example = [{**builtin, **own} for builtin, own in zip(per_example, yours)]
    eval_seconds = trained.heldout_loss_seconds + generate_seconds + time.perf_counter() - start
    generation = (
        {}
        if generated is None
        else {
            "n_empty": sum(r["empty"] for r in per_example),
            "bertscore_model": scorer.label,
            "eval_engine": engine,
            "generate_seconds": generate_seconds,
        }
    )
    scored = (*GENERATED_KEYS, *user_metrics)
    means = {} if generated is None else {m: sum(r[m] for r in per_example) / len(per_example) for m in scored}
    metrics = replace(
        trained,
        peak_memory_mb=max(trained.peak_memory_mb or 0.0, _peak_memory_mb(device)),
        scores={**means, HELDOUT_LOSS.name: sum(losses) / len(losses)},
        n_eval=len(losses),
        user_metrics=list(user_metrics) if generated is not None else [],
        **generation,
        eval_seconds=eval_seconds,
        time_s=trained.select_seconds + trained.train_seconds + eval_seconds,
        gpu_seconds=(trained.train_seconds + eval_seconds) * gpus if trained.device == "cuda" else 0.0,
    )
    texts = [{} for _ in losses] if generated is None else [{"prediction": p} for p in generated]
    predictions = [
        {"id": i, **text, "reference": r, **scores, HELDOUT_LOSS.name: loss}
        for i, text, r, scores, loss in zip(test["id"], texts, test["response"], per_example, losses)
    ]
    return TrialRecord(metrics, predictions)


def examples_of(test: pd.DataFrame) -> list[dict]:
    """Each held-out example as a user metric receives it: id, title, prompt, response and the prompt turns."""
    return [
        {"id": i, "title": title, "prompt": prompt, "response": response, "turns": json.loads(turns)}
        for i, title, prompt, response, turns in zip(
            test["id"], test["title"], test["prompt"], test["response"], test["turns"]
        )
    ]


def _peak_memory_mb(device: str) -> float:
    """Peak GPU memory on CUDA; peak resident memory of the worker process on CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trial_path(name: str, *parts: str) -> str:
    """Where a trial's files live in the run's storage (and the output folder): trials/<name>/..."""
    return posixpath.join(TRIALS, name, *parts)


def write_trial(store: Storage, name: str, record: TrialRecord) -> None:
    """Persist a trial's record in the run's storage, from whichever node ran it: predictions.jsonl, then
    metrics.json (its presence marks completion). The driver pulls it into the output folder."""
    store.write_jsonl(trial_path(name, "predictions.jsonl"), record.predictions)
    store.write_json(trial_path(name, "metrics.json"), record.metrics.to_dict(), indent=2, sort_keys=True)
