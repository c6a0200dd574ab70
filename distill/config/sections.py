"""What each part of a run receives of the experiment's config: the sections it reads, bundled where a signature
would otherwise grow long. Stages take these (or single sections), never the whole ExperimentConfig: what a
function may touch is visible in its signature, and its cache key is derived from exactly what it receives.
Only the entry points that compose a run (runtime/pipeline.py, runtime/preflight.py `check`) hold the whole config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from distill.config.schema import (
    EmbedConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    ProbeConfig,
    PromptConfig,
    TrainConfig,
)

# The settings a trial's numbers depend on, as dotted keys (a section name: all of its keys). trial.run.trial_key
# hashes exactly these, plus the subset, the seed and the resolved facts (model path, data fingerprint, engine,
# BERTScore encoder). A new setting that changes a trial's result belongs here; one that does not goes to
# `report` (the report only) or `resources` (how the machines are used), and reruns nothing.
TRIAL_SETTINGS = (
    "model",  # which weights, in what precision, how much of each prompt and response the model sees
    "prompt",  # the template, instruction, system turn and truncation around every example
    "train",  # LoRA and optimiser settings, batch sizes, steps: they make the adapter
    "eval.max_new_tokens",  # where generation stops
    "eval.batch_size",  # padding within a generation (and BERTScore) batch can flip a near-tie
    "eval.generate",  # false: a loss-only trial, without generations or the scores of them
    "eval.metrics",  # which of your metrics score the generations (their code: the plugin sources in the key)
)
# Not listed: eval.engine and eval.bertscore_* are requests; what they resolve to is hashed instead (an `auto`
# that resolves the same reruns nothing). data, select, embed, probe and seeds reach a trial through its subset
# and the data fingerprint; name, description, mode, output_dir and wandb label a run; report, resources and
# storage say how a run is reported, computed and kept (config/schema.py).


@dataclass(frozen=True)
class TrialSettings:
    """The sections one trial reads (trial/run.py, runtime/tune.py, runtime/generation.py): the model, the prompt
    around every example, the fine-tune and the evaluation. Nothing else of the experiment reaches a trial but
    its subset, its seed and the resolved facts (records.Resolved).

    The trial key hashes exactly this object's TRIAL_SETTINGS (`hashed`): every key of model, prompt and train,
    and of eval all but the requests engine and bertscore_*, whose resolutions the key hashes instead."""

    model: ModelConfig
    prompt: PromptConfig
    train: TrainConfig
    eval: EvalConfig

    @classmethod
    def of(cls, cfg: ExperimentConfig) -> TrialSettings:
        return cls(cfg.model, cfg.prompt, cfg.train, cfg.eval)

    def hashed(self) -> dict[str, Any]:
        """TRIAL_SETTINGS' values (JSON-able), for the trial key."""
        values = {}
        for dotted in TRIAL_SETTINGS:
            node: Any = self
            for part in dotted.split("."):
                node = getattr(node, part)
            values[dotted] = dataclasses.asdict(node) if dataclasses.is_dataclass(node) else node
        return values


@dataclass(frozen=True)
class FeatureSettings:
    """The sections the features stage reads (runtime/features.py, features/probe.py): which features the selected
    methods need, and what computes them. The features cache key hashes the model and prompt sections whole and
    embed.pooling (features.embed.cache_key); the probe's, the model, prompt, probe and train sections less what
    only sizes the trials or the gradient projection (features.probe.cache_paths)."""

    methods: tuple[str, ...]  # select.methods: the features they need decide which passes run
    model: ModelConfig
    prompt: PromptConfig
    embed: EmbedConfig
    probe: ProbeConfig
    train: TrainConfig  # the probe fine-tunes with its LoRA and optimiser settings

    @classmethod
    def of(cls, cfg: ExperimentConfig) -> FeatureSettings:
        return cls(tuple(cfg.select.methods), cfg.model, cfg.prompt, cfg.embed, cfg.probe, cfg.train)
