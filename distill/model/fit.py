"""What a job asks of its model that the model must have, checked from its config alone (an empty meta-device
model: no weights read): LoRA target modules that exist in it, and positions for the longest prompt and target.

One check for every mode: runtime/preflight.py raises the first problem before any Ray work (before, a LoRA target
the model lacks failed every trial after the whole pool was embedded), and `distill validate`
(console/checklist.py) lists every problem in its checklist.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.config.env import secret
from distill.config.schema import EMBEDDED_SMOLLM2, ExperimentConfig
from distill.errors import DistillError

TEMPLATE_TOKENS = 64  # room the prompt template takes around the document (instruction, chat markers)
SUGGESTED_TARGETS = 8  # module names a LoRA-target error suggests


@dataclass(frozen=True)
class Misfit:
    """One way the job does not fit its model: the checklist's item name and the one-line error."""

    item: str
    error: DistillError


def model_config(path: str):
    """The resolved model's transformers config (config.json only), or a DistillError naming the model."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, token=secret("HF_TOKEN"))
    except OSError as exc:
        raise DistillError(
            f"could not load model config for '{path}': {str(exc).splitlines()[0][:160]}",
            "check the name and network/HF_TOKEN; offline, pass a local model folder with --model "
            f"or use the embedded default (--model {EMBEDDED_SMOLLM2})",
        ) from None


def misfits(cfg: ExperimentConfig, config) -> list[Misfit]:
    """Every way `cfg` does not fit the model whose transformers config is `config` (none: it fits)."""
    found = []
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    need = cfg.model.max_source_tokens + cfg.model.max_target_tokens + TEMPLATE_TOKENS
    if positions and need > positions:
        found.append(
            Misfit(
                "model lengths",
                DistillError(
                    f"max_source_tokens + max_target_tokens + template ≈ {need} > {positions} positions of "
                    f"{cfg.model.name}",
                    "lower model.max_source_tokens / model.max_target_tokens",
                ),
            )
        )
    names = module_names(config)
    missing = [m for m in cfg.train.target_modules if names and m not in names]
    if missing:
        found.append(
            Misfit(
                "LoRA targets",
                DistillError(
                    f"{config.model_type} has no module named {', '.join(missing)} (train.target_modules)",
                    f"set train.target_modules to modules of this model, e.g. {', '.join(_suggest(names))}",
                ),
            )
        )
    return found


def check_fits(cfg: ExperimentConfig, path: str) -> None:
    """Raise the first way `cfg` does not fit the model at `path` (a run's preflight)."""
    for misfit in misfits(cfg, model_config(path)):
        raise misfit.error


def _suggest(names: set[str]) -> list[str]:
    """Attention/MLP projection names first (q_proj, c_attn, …): the usual LoRA targets."""
    likely = sorted(n for n in names if "proj" in n or "attn" in n or n in ("query", "key", "value"))
    return (likely or sorted(names))[:SUGGESTED_TARGETS]


def module_names(config) -> set[str]:
    """Leaf module names of the architecture, from an empty (meta-device) model: no weights are read."""
    try:
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    except Exception:  # unknown architecture: skip this check rather than guess
        return set()
