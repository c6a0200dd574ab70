"""Selectors on training dynamics: the probe's per-checkpoint losses and projected LoRA gradients.

`probe_loss` (n × (checkpoints + 1), step 0 first) and `grad_features` (n × grad_dim) come from the
probe stage (distill/features/probe.py), which the pipeline runs only when a method here is selected (their
`needs`). Every function is pure: the same features, k and seed give the same subset.
"""

from __future__ import annotations

import numpy as np

from distill.errors import DistillError
from distill.features.columns import Features
from distill.select.neighbors import row_norms, seeded_top_k
from distill.select.registry import register

PROBE_COST = "O(n log n) + probe"


def checkpoint_column(probe_loss: np.ndarray, checkpoint: int) -> np.ndarray:
    """One checkpoint's losses (Python indexing: 0 = step 0, -1 = the probe's end)."""
    columns = probe_loss.shape[1]
    if not -columns <= checkpoint < columns:
        raise DistillError(
            f"checkpoint {checkpoint} does not exist: the probe recorded {columns} (step 0 included)",
            f"use a checkpoint in [{-columns}, {columns - 1}] or raise probe.checkpoints",
        )
    return np.asarray(probe_loss[:, checkpoint], dtype=np.float64)


@register(
    "el2n_loss",
    description="Hardest examples after the probe: top-k response loss at the probe's last checkpoint.",
    needs=("probe_loss",),
    cost=PROBE_COST,
    reference="EL2N (late-loss variant), Paul et al. (2021), arXiv 2107.07075, adapted to generation",
)
def el2n_loss(features: Features, k: int, seed: int, checkpoint: int = -1) -> np.ndarray:
    """Top-k of the per-example mean response-token loss at `checkpoint` (default: the last)."""
    return seeded_top_k(checkpoint_column(features.probe_loss, checkpoint), k, seed)


@register(
    "learnability",
    description="Examples whose loss drops most during the probe (step 0 minus last checkpoint).",
    needs=("probe_loss",),
    cost=PROBE_COST,
    reference="reducible loss, cf. RHO-LOSS, Mindermann et al. (2022), arXiv 2206.07137",
)
def learnability(features: Features, k: int, seed: int) -> np.ndarray:
    """Top-k of loss(step 0) − loss(last checkpoint): learnable, not yet learned by the base model."""
    loss = np.asarray(features.probe_loss, dtype=np.float64)
    return seeded_top_k(loss[:, 0] - loss[:, -1], k, seed)


def cartography_map(probe_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, variability) per example: mean and standard deviation over the checkpoints of
    p = exp(−loss), the geometric-mean probability of the reference response's tokens (the
    generative stand-in for the gold label's probability)."""
    p = np.exp(-np.asarray(probe_loss, dtype=np.float64))
    return p.mean(axis=1), p.std(axis=1)


CARTOGRAPHY_REGIONS = {  # region → score to maximise (Swayamdipta et al.'s three regions)
    "ambiguous": lambda confidence, variability: variability,
    "easy": lambda confidence, variability: confidence,
    "hard": lambda confidence, variability: -confidence,
}


@register(
    "cartography",
    description="Dataset cartography region over the probe checkpoints (default: ambiguous = most variable).",
    needs=("probe_loss",),
    cost=PROBE_COST,
    reference="Dataset Cartography, Swayamdipta et al. (2020), arXiv 2009.10795",
)
def cartography(features: Features, k: int, seed: int, region: str = "ambiguous") -> np.ndarray:
    """Top-k by the region's score: ambiguous = highest variability, easy = highest confidence,
    hard = lowest confidence."""
    if region not in CARTOGRAPHY_REGIONS:
        raise DistillError(f"unknown cartography region '{region}'", f"use one of: {', '.join(CARTOGRAPHY_REGIONS)}")
    return seeded_top_k(CARTOGRAPHY_REGIONS[region](*cartography_map(features.probe_loss)), k, seed)


def validation_slice(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """The held-aside random slice of the training pool whose mean gradient is the target."""
    if not 0 < val_fraction < 1:
        raise DistillError(f"gradient_match val_fraction={val_fraction} is outside (0, 1)", "use e.g. 0.1")
    size = max(1, min(n, round(val_fraction * n)))
    return np.random.default_rng(seed).choice(n, size=size, replace=False)


def gradient_alignment(grads: np.ndarray, val: np.ndarray) -> np.ndarray:
    """LESS's score: each row's mean cosine similarity to the validation rows' gradients,
    = <g_i/|g_i|, mean_j v_j/|v_j|>. Zero gradients score 0; no normalised copy of the matrix."""
    norms = row_norms(grads).astype(np.float64)
    safe = np.where(norms > 0, norms, 1.0)
    target = (np.asarray(grads[val], dtype=np.float64) / safe[val, None]).mean(axis=0)
    return np.asarray(grads @ target.astype(grads.dtype), dtype=np.float64) / safe


@register(
    "gradient_match",
    description="LESS: examples whose projected LoRA gradient aligns best with a held-aside training slice's.",
    needs=("grad_features",),
    cost="O(n·d) + probe + one backward pass per example",
    reference="LESS, Xia et al. (2024), arXiv 2402.04333",
)
def gradient_match(features: Features, k: int, seed: int, val_fraction: float = 0.1) -> np.ndarray:
    """Top-k by `gradient_alignment` with a validation slice of round(val_fraction·n) pool rows
    (seeded), never the held-out test set. The slice is excluded from the candidates, since its own
    gradients would align trivially; only when k exceeds the other rows are slice rows added, best first."""
    val = validation_slice(len(features), val_fraction, seed)
    order = seeded_top_k(gradient_alignment(features.grad_features, val), len(features), seed)
    held = np.zeros(len(features), dtype=bool)
    held[val] = True
    return np.concatenate([order[~held[order]], order[held[order]]])[:k]
