"""Cross-field checks of a whole job (methods exist, their features and parameters fit, settings that cannot
all hold): they read the selector registry and the data source, so they run after the schema's own checks.
They return a normalised copy and never edit their input.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import Any

from distill.config.schema import MIN_FIRST_ROUND, PROMPT_PLACEHOLDER, ExperimentConfig, ProbeConfig, PromptConfig
from distill.errors import DistillError
from distill.store.outdir import safe_name


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Reject settings that cannot work, before anything runs; returns a normalised copy (the baseline
    and all modes include the full-pool baseline; baseline selects nothing), never editing `cfg`."""
    from distill.select import (
        plugins,  # late: importing distill.select imports every selector module
        registry,
    )

    safe_name("job name", cfg.name)  # names Tune's experiment folder and the W&B group
    plugins.load(cfg.select.plugins)  # before the method names are checked: plugins add methods
    for method in cfg.select.methods:
        check_selector(registry.get(method), cfg.select.params.get(method, {}))  # unknown: names the registered ones
    for method in cfg.select.params:
        registry.get(method)
    _check_user_metrics(cfg)
    _check_contradictions(cfg)
    validate_probe(cfg.probe)
    validate_prompt(cfg.prompt)
    return normalised(cfg)


def normalised(cfg: ExperimentConfig) -> ExperimentConfig:
    """A copy of `cfg` with what its mode implies made explicit."""
    cfg = copy.deepcopy(cfg)
    if cfg.mode in ("baseline", "all"):
        cfg.include_baseline = True
    if cfg.mode == "baseline":
        cfg.select.methods = []
    return cfg


def check_selector(selector, params: dict[str, Any]) -> None:
    """A method can run here: a safe name, features the pipeline computes, parameters it accepts."""
    from distill.features.columns import Features

    safe_name("method name", selector.name)  # names selected/<method>.jsonl and trials/<method>-s<seed>/
    computed = {f.name for f in dataclasses.fields(Features)}
    missing = [need for need in selector.needs if need not in computed]
    if missing:
        raise DistillError(
            f"method '{selector.name}' needs feature '{missing[0]}', which the pipeline does not compute",
            f"drop '{selector.name}' from select.methods; the computed features are {', '.join(sorted(computed))}",
        )
    signature = inspect.signature(selector.fn)
    try:
        signature.bind(None, 1, 0, **params)
    except TypeError as exc:
        accepted = [
            p.name
            for p in list(signature.parameters.values())[3:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        raise DistillError(
            f"select.params.{selector.name}: {exc}",
            f"{selector.name} takes " + (", ".join(accepted) if accepted else "no parameters"),
        ) from None


def _check_contradictions(cfg: ExperimentConfig) -> None:
    """Settings that are each valid but cannot all hold: one would be silently ignored."""
    from distill.data.sources import has_splits
    from distill.features.columns import QUERY_EMBEDDING
    from distill.select import registry

    if cfg.data.test_split and not cfg.data.split_column and not has_splits(cfg.data.source):
        raise DistillError(
            f"data.test_split '{cfg.data.test_split}' is set but {cfg.data.source} has no splits "
            "(data.split_column is null), so it would be ignored",
            "set data.split_column to the column holding the split names, or data.test_split: null",
        )
    needs_query = [m for m in cfg.select.methods if QUERY_EMBEDDING in registry.get(m).needs]
    if needs_query and not cfg.data.query_size and not cfg.select.query:
        raise DistillError(
            f"method '{needs_query[0]}' ranks the pool by similarity to target-task examples, and no "
            "query set is given",
            "hold some training examples out of the pool as the query set (--set data.query_size=20) "
            "or pass your own: --set select.query=target_examples.jsonl",
        )
    if cfg.adaptive.enabled and (cfg.seeds < MIN_FIRST_ROUND or "random" not in cfg.select.methods):
        raise DistillError(
            f"--until-decided needs a first round of at least {MIN_FIRST_ROUND} seeds with random among the methods (seeds: "
            f"{cfg.seeds}, methods: {', '.join(cfg.select.methods)}): verdicts compare with random across seeds",
            f"add --seeds {MIN_FIRST_ROUND} (or more) and keep random in select.methods",
        )
    if cfg.wandb.online and not cfg.wandb.enabled:
        raise DistillError(
            "wandb.online is set but wandb.enabled is false, so nothing would be logged",
            "set wandb.enabled: true, or drop wandb.online",
        )


def _check_user_metrics(cfg: ExperimentConfig) -> None:
    """eval.metrics name registered metrics (plugins are loaded by now), which score generations."""
    from distill.trial import metrics

    for name in cfg.eval.metrics:
        metrics.get(name)
    from distill.store.records import SCORE_KEYS

    for name in cfg.report.metrics:
        if name not in SCORE_KEYS and name not in cfg.eval.metrics:
            raise DistillError(
                f"report.metrics names '{name}', which is neither distill's metric ({', '.join(SCORE_KEYS)}) "
                f"nor one of eval.metrics ({', '.join(cfg.eval.metrics) or 'none'})",
                "test metrics the trials score, e.g. --set report.metrics=rougeL,bertscore_f1,heldout_loss (the "
                "default), or yours listed in eval.metrics",
            )
    for name in cfg.report.margins:
        if name not in cfg.eval.metrics:
            raise DistillError(
                f"report.margins sets δ of '{name}', which is not one of eval.metrics",
                "set margins of your metrics only (distill's have report.margin_<metric>)",
            )
    if cfg.eval.metrics and not cfg.eval.generate:
        raise DistillError(
            f"eval.metrics ({', '.join(cfg.eval.metrics)}) score generated responses, but eval.generate is false",
            "set eval.generate: true, or drop eval.metrics",
        )


def validate_prompt(prompt: PromptConfig) -> None:
    """A plain template needs exactly one {prompt}: without it the examples would never reach the model."""
    found = None if prompt.template is None else prompt.template.count(PROMPT_PLACEHOLDER)
    if found is not None and found != 1:
        raise DistillError(
            f"prompt.template {prompt.template[:60]!r} has {found} {PROMPT_PLACEHOLDER} placeholders",
            f"put {PROMPT_PLACEHOLDER} once where the user content goes, "
            f"e.g. --set 'prompt.template=### Question:\\n{PROMPT_PLACEHOLDER}\\n\\n### Answer:\\n'",
        )


def validate_probe(probe: ProbeConfig) -> None:
    """The probe's settings that must agree (each one's own range is declared in ProbeConfig): checked before
    any work, not after the embedding pass."""
    if probe.grad_dim % probe.grad_blocks:
        raise DistillError(
            f"probe.grad_dim={probe.grad_dim} must be a multiple of probe.grad_blocks={probe.grad_blocks}",
            "use e.g. probe.grad_dim=8192 with probe.grad_blocks=4",
        )
