"""Training dynamics of the pool: a brief LoRA probe and per-example gradient features.

Dynamics selectors (distill/select/dynamics.py) need more than the base model's one forward pass:
how each example's loss moves while the target model fine-tunes (`probe_loss`), or which way its
gradient pulls the LoRA weights (`grad_features`). The probe fine-tunes the target model's LoRA
briefly on a random slice of the pool — LESS's warm-up (Xia et al., 2024) — and records every pool
example's response loss at step 0 and at evenly spaced checkpoints; the gradient features are the
per-example LoRA gradients at the probe's end, randomly projected. Plain torch + peft: distill/runtime/features.py
runs `compute_dynamics` as a Ray task and caches what it returns, keyed by `cache_paths`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from distill.config.schema import ProbeConfig, TrainConfig
from distill.config.sections import FeatureSettings
from distill.errors import DistillError
from distill.features.embed import response_losses
from distill.model.load import device_name, load_model, load_tokenizer
from distill.model.prompt import Encoded, PromptFormat
from distill.model.train import add_lora, collate, encode_examples, finetune, seed_everything
from distill.model.train import response_loss as train_loss
from distill.store import artifacts
from distill.store.artifacts import content_hash

PROBE_LOSS, GRAD_FEATURES = "probe_loss", "grad_features"
DYNAMICS = (PROBE_LOSS, GRAD_FEATURES)  # Features attributes this module computes
ADAPTER = "adapter/"  # prefix of the LoRA weights inside the probe's cache file
SECONDS = "seconds/"  # result key prefix: wall seconds that computed probe_loss / grad_features


@dataclass(frozen=True)
class CachePaths:
    probe: Path  # probe-<hash>.npz: losses, checkpoint steps, probe slice, final LoRA weights
    grads: Path  # grads-<hash>.npz: projected gradients (keyed by the probe's hash + projection)


def cache_paths(cache_dir: Path, model_path: str, data_fingerprint: str, settings: FeatureSettings) -> CachePaths:
    """Content-hashed cache files: the probe depends on model, data, the model and prompt sections, LoRA/optimiser
    settings (not the trials' length: the probe has its own epochs) and the probe section; the gradients on the
    probe plus the projection (dim, blocks)."""
    probe = settings.probe
    probe_settings = {k: v for k, v in asdict(probe).items() if not k.startswith("grad_")}
    # the train keys the probe replaces with its own (probe_training) are not the probe's inputs: hashed via `probe`
    train_settings = {k: v for k, v in asdict(settings.train).items() if k not in _own_length(probe)}
    probe_key = content_hash(
        {
            "model": model_path,
            "data": data_fingerprint,
            "model_cfg": asdict(settings.model),
            "prompt": asdict(settings.prompt),
            "train": train_settings,
            "probe": probe_settings,
        }
    )
    grads_key = content_hash({"probe": probe_key, "dim": probe.grad_dim, "blocks": probe.grad_blocks})
    return CachePaths(cache_dir / f"probe-{probe_key}.npz", cache_dir / f"grads-{grads_key}.npz")


def _own_length(probe: ProbeConfig) -> dict:
    """The train keys the probe sets itself: its length (the trials' epochs and step cap are not the probe's)."""
    return {"epochs": probe.epochs, "max_steps": None}


def probe_training(train: TrainConfig, probe: ProbeConfig) -> TrainConfig:
    """The fine-tune the probe runs: the trials' LoRA and optimiser settings, for the probe's own length."""
    return replace(train, **_own_length(probe))


def load_cached(paths: CachePaths) -> dict:
    """What the cache already holds: probe_loss + adapter (LoRA weights) and/or grad_features, each with
    the seconds it took. A file written before costs were stored has no `seconds` and is recomputed, so a
    report never shows a dynamics method's time without its probe."""
    found = {}
    if artifacts.intact(paths.probe):  # a damaged file is named in a warning and recomputed
        with np.load(paths.probe) as stored:
            if "seconds" in stored.files:
                found[PROBE_LOSS] = stored[PROBE_LOSS]
                found[SECONDS + PROBE_LOSS] = float(stored["seconds"])
                found["adapter"] = {k[len(ADAPTER) :]: stored[k] for k in stored.files if k.startswith(ADAPTER)}
    if artifacts.intact(paths.grads):
        with np.load(paths.grads) as stored:
            if "seconds" in stored.files:
                found[GRAD_FEATURES] = stored[GRAD_FEATURES]
                found[SECONDS + GRAD_FEATURES] = float(stored["seconds"])
    return found


def store(paths: CachePaths, result: dict) -> None:
    """Write what `compute_dynamics` returned (atomically and sealed: a crash or damage is never read as a result)."""
    if PROBE_LOSS in result:
        arrays = {
            PROBE_LOSS: result[PROBE_LOSS],
            "checkpoint_steps": result["checkpoint_steps"],
            "trained": result["trained"],
            "seconds": result[SECONDS + PROBE_LOSS],
            **{ADAPTER + k: v for k, v in result["adapter"].items()},
        }
        artifacts.write_npz(paths.probe, **arrays)
    if GRAD_FEATURES in result:
        artifacts.write_npz(
            paths.grads, **{GRAD_FEATURES: result[GRAD_FEATURES], "seconds": result[SECONDS + GRAD_FEATURES]}
        )


def costs(dynamics: dict) -> dict[str, float]:
    """Wall seconds per dynamics feature the probe stage computed or found cached (features.charged_seconds
    charges them to the methods that read them)."""
    return {name: dynamics[SECONDS + name] for name in DYNAMICS if SECONDS + name in dynamics}


def probe_slice(n: int, probe: ProbeConfig) -> np.ndarray:
    """Sorted indices of the random `probe.fraction` of the pool the probe fine-tunes on."""
    size = max(1, min(n, round(probe.fraction * n)))
    return np.sort(np.random.default_rng(probe.seed).choice(n, size=size, replace=False))


def checkpoint_steps(total: int, checkpoints: int) -> np.ndarray:
    """Optimizer step of every loss column: 0, then `checkpoints` evenly spaced steps ending at
    `total` (when the probe has fewer steps than checkpoints, adjacent checkpoints share a step)."""
    return np.array([0] + [math.ceil(total * c / checkpoints) for c in range(1, checkpoints + 1)])


def run_probe(
    model,
    tokenizer,
    fmt: PromptFormat,
    turns: list[str],
    responses: list[str],
    train: TrainConfig,
    probe: ProbeConfig,
    device: str,
    step0: np.ndarray | None = None,
) -> dict:
    """Fine-tune `model` (LoRA-wrapped) on the probe slice (`train`'s LoRA and optimiser settings, `probe`'s
    length, slice and seed), recording every example's loss at step 0 and at each checkpoint; returns probe_loss
    (n × (checkpoints + 1)), checkpoint_steps, trained (the slice), adapter (final LoRA weights, for gradient
    features later) and its wall seconds.

    `step0`: the base model's losses when already known — the embedding pass computes exactly these
    (LoRA starts as the identity), so the pipeline passes them and saves one pass over the pool."""
    from peft import get_peft_model_state_dict

    start = time.perf_counter()
    encoded = [fmt.encode(t, s) for t, s in zip(turns, responses)]

    def record() -> np.ndarray:
        return response_losses(model, encoded, tokenizer.pad_token_id, probe.batch_size, device)

    columns, steps = [record() if step0 is None else np.asarray(step0, dtype=np.float32)], [0]

    def on_step(step: int, total: int, loss: float, snapshot) -> None:
        hits = int((checkpoint_steps(total, probe.checkpoints)[1:] == step).sum())
        if hits:
            losses = record()
            columns.extend([losses] * hits)
            steps.extend([step] * hits)

    trained = probe_slice(len(turns), probe)
    finetune(
        model,
        tokenizer,
        fmt,
        [turns[i] for i in trained],
        [responses[i] for i in trained],
        probe_training(train, probe),
        probe.seed,
        device,
        on_step=on_step,
    )
    require_visible_updates(model, encoded[int(trained[0])], tokenizer.pad_token_id, device, steps[-1])
    adapter = {k: v.detach().float().cpu().numpy() for k, v in get_peft_model_state_dict(model).items()}
    return {
        PROBE_LOSS: np.stack(columns, axis=1),
        "checkpoint_steps": np.array(steps),
        "trained": trained,
        "adapter": adapter,
        SECONDS + PROBE_LOSS: time.perf_counter() - start,
    }


@torch.no_grad()
def require_visible_updates(model, example: Encoded, pad_id: int, device: str, steps: int) -> None:
    """Fail when the probe's LoRA updates do not change the model's loss at all.

    Why: a short probe's updates are tiny, and bf16 arithmetic can round the adapter's contribution
    away entirely (measured: SmolLM2 under bf16 autocast after the default 2 steps gave every pool
    example the same loss at every checkpoint). Every dynamics score would then be a tie, and the
    selection a disguised random one. One example, adapter on vs off, in the same precision, tells
    (`response_losses` runs in eval mode and restores the model's mode)."""
    with_adapter = response_losses(model, [example], pad_id, 1, device)
    with model.disable_adapter():
        without = response_losses(model, [example], pad_id, 1, device)
    if np.array_equal(with_adapter, without):
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        raise DistillError(
            f"the probe's {steps} LoRA step(s) do not change the model's loss at all (model weights in "
            f"{dtype}): every dynamics score would be a tie",
            "give the probe more steps (--set probe.epochs=2, or a larger probe.fraction) or a larger "
            "train.learning_rate"
            + ("" if dtype == "float32" else ", or load the model in float32 (--set model.dtype=float32)"),
        )


class SparseProjection:
    """Sparse Johnson–Lindenstrauss transform R^D → R^dim (Kane & Nelson, 2014, block construction).

    Every input coordinate is added, with a random sign and scale 1/sqrt(blocks), to one random
    output coordinate in each of `blocks` blocks of dim/blocks outputs. Inner products are preserved
    in expectation with JL-type concentration, at O(blocks·D) per vector and without a D × dim
    matrix: LESS/TRAK's dense projection of SmolLM2-135M's 0.92M LoRA weights to 8,192 dims would be
    a 30 GB matrix (or 7.5 G random numbers per example), out of reach of a CPU.
    """

    def __init__(self, in_dim: int, dim: int, blocks: int, seed: int, device: str = "cpu"):
        generator = torch.Generator().manual_seed(seed)
        width = dim // blocks
        offsets = torch.arange(blocks)[:, None] * width
        self.dim = dim
        self.buckets = (torch.randint(0, width, (blocks, in_dim), generator=generator) + offsets).to(device)
        signs = torch.randint(0, 2, (blocks, in_dim), generator=generator).float() * 2 - 1
        self.signs = (signs / math.sqrt(blocks)).to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Project rows: (b, D) → (b, dim)."""
        out = x.new_zeros(x.shape[0], self.dim)
        for buckets, signs in zip(self.buckets, self.signs):
            out.index_add_(1, buckets, x * signs)
        return out


def gradient_features(
    model, tokenizer, fmt: PromptFormat, turns: list[str], responses: list[str], probe: ProbeConfig, device: str
) -> np.ndarray:
    """Per-example gradient of the response loss w.r.t. the LoRA weights, projected to probe.grad_dim.

    One backward pass per example (a batched loss would sum the gradients), in eval mode so dropout
    does not make the gradient random: the features are a deterministic function of the example,
    the model and `probe.seed` (which draws the projection). The loss is the trials' (LM head on the
    response positions only: the same gradient as the full-vocabulary loss, without the prompt positions'
    logits)."""
    params = [p for p in model.parameters() if p.requires_grad]
    projection = SparseProjection(sum(p.numel() for p in params), probe.grad_dim, probe.grad_blocks, probe.seed, device)
    was_training = model.training
    model.eval()
    out = np.empty((len(turns), probe.grad_dim), dtype=np.float32)
    for i, example in enumerate(encode_examples(fmt, turns, responses)):
        model.zero_grad(set_to_none=True)
        train_loss(model, collate([example], tokenizer.pad_token_id, device)).backward()
        flat = torch.cat([p.grad.reshape(-1) for p in params]).float()
        out[i] = projection(flat[None])[0].cpu().numpy()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return out


def compute_dynamics(
    model_path: str,
    settings: FeatureSettings,
    data_format: str,
    turns: list[str],
    responses: list[str],
    wanted: list[str],
    adapter: dict | None = None,
    step0: np.ndarray | None = None,
    num_threads: int | None = None,
) -> dict:
    """The probe stage in one model load (`settings`' model, prompt, train and probe sections): run the probe (see
    `run_probe` for `step0`) unless its final LoRA weights (`adapter`, from the cache) are given, then the gradient
    features at that point if `wanted`."""
    from peft import set_peft_model_state_dict

    if num_threads:
        torch.set_num_threads(num_threads)
    device = device_name()
    tokenizer = load_tokenizer(model_path)
    model_cfg, probe = settings.model, settings.probe
    fmt = PromptFormat(
        tokenizer, settings.prompt, data_format, model_cfg.max_source_tokens, model_cfg.max_target_tokens
    )
    seed_everything(probe.seed)  # LoRA's initial weights are random
    model = add_lora(load_model(model_path, model_cfg, device), settings.train, quantized=model_cfg.load_in_8bit)
    result = {}
    if adapter is None:
        result = run_probe(model, tokenizer, fmt, turns, responses, settings.train, probe, device, step0)
    else:
        set_peft_model_state_dict(model, {k: torch.from_numpy(v) for k, v in adapter.items()})
    if GRAD_FEATURES in wanted:
        start = time.perf_counter()
        result[GRAD_FEATURES] = gradient_features(model, tokenizer, fmt, turns, responses, probe, device)
        result[SECONDS + GRAD_FEATURES] = time.perf_counter() - start
    return result
