"""D2-Pruning (Maharana, Yadav & Bansal, 2023, arXiv 2310.07931): diversity + difficulty by message
passing on a kNN graph of the embeddings.

1. graph: kNN graph over the embeddings (self excluded); every kNN edge is used in both directions.
2. forward message passing: g_i = s_i + sum_{j in N(i)} w_f(d_ij) * s_j, with s the difficulty.
3. iterative selection: pick v = argmax g (ties to the lowest index); reverse message passing
   down-weights every neighbour u of v: g_u -= w_r(d_vu) * g_v; v is never picked again.

Two variants (param `variant`):

| | "paper" (default) | "reference" (adymaharana/d2pruning, GraphDensitySampler, mode sum / weighted) |
|---|---|---|
| geometry | L2-normalised embeddings (cosine), squared distance d² in [0, 4] | raw embeddings, plain Euclidean d (not squared) |
| forward weight | exp(-gamma_forward · d²) · s_j | exp(-d) · max(s_j, 1e-7) (no gamma) |
| reverse weight | exp(-gamma · d²) | exp(-gamma · d) |
| kNN graph | exact (faiss flat) up to 20,000 rows, else PCA-64 + cell-blocked approximation | always exact, O(n² d): refused above 100,000 rows |
| seed | only seeds the approximate index's training sample | unused (deterministic) |

The iterative selection uses a lazy max-heap: O(k · deg · log n) with deg ~ 2 n_neighbors.
"""

from __future__ import annotations

import heapq

import numpy as np

import distill.select.neighbors as nb
from distill.errors import DistillError
from distill.features.columns import Features
from distill.select.registry import register

_VARIANTS = ("paper", "reference")
_DIFFICULTIES = ("auto", "loss", "density", "uniform")


def difficulty_scores(features: Features, difficulty: str, mean_dist: np.ndarray) -> np.ndarray:
    """Per-example difficulty s (float64, >= 0 for density/uniform).

    loss: features.loss (mean response-token loss under the target model; higher = harder).
    density: mean distance to the kNN neighbours divided by its maximum (atypical = harder).
    uniform: all ones (D2 then reduces to graph-density / diversity sampling).
    auto: loss when computed, else density.
    """
    if difficulty == "auto":
        difficulty = "loss" if features.loss is not None else "density"
    if difficulty == "loss":
        if features.loss is None:
            raise DistillError(
                "d2_pruning difficulty='loss' needs feature 'loss', which was not computed",
                "compute the loss (pipeline) or use difficulty='density' or 'uniform'",
            )
        s = np.asarray(features.loss, dtype=np.float64)
        if not np.all(np.isfinite(s)):
            raise DistillError(
                "feature 'loss' holds NaN or infinite values; d2_pruning cannot rank them",
                "check the model's dtype (fp16 overflow?) and recompute the loss",
            )
        return s
    if difficulty == "density":
        top = mean_dist.max() if len(mean_dist) else 0.0
        return mean_dist / top if top > 0 else np.ones(len(mean_dist))
    if difficulty == "uniform":
        return np.ones(len(mean_dist))
    raise DistillError(f"unknown d2_pruning difficulty '{difficulty}'", f"use one of: {', '.join(_DIFFICULTIES)}")


def reverse_select(g: np.ndarray, indptr: np.ndarray, nbrs: np.ndarray, w_rev: np.ndarray, k: int) -> np.ndarray:
    """Iterative selection with reverse message passing, lazy max-heap.

    Each step pops v = argmax g over unpicked rows (ties to the lowest index: heap entries are
    (-g, index)), then g_u -= w_rev(v, u) * g_v for every neighbour u. Entries whose value no longer
    matches g are stale and skipped.
    """
    g = np.array(g, dtype=np.float64)
    n = len(g)
    picked = np.zeros(n, dtype=bool)
    heap = list(zip((-g).tolist(), range(n)))
    heapq.heapify(heap)
    out = np.empty(k, dtype=np.int64)
    t = 0
    while t < k:
        neg, v = heapq.heappop(heap)
        if picked[v] or -neg != g[v]:
            continue
        out[t] = v
        t += 1
        picked[v] = True
        a, b = indptr[v], indptr[v + 1]
        if a == b:
            continue
        us = nbrs[a:b]
        g[us] -= w_rev[a:b] * g[v]
        live = us[~picked[us]]
        for u, val in zip(live.tolist(), g[live].tolist()):
            heapq.heappush(heap, (-val, u))
    return out


@register(
    "d2_pruning",
    description="D2-Pruning: kNN-graph message passing balancing difficulty (loss) and diversity; "
    "variant='reference' reproduces the authors' code.",
    needs=("embeddings",),
    cost="kNN graph O(n·k_nn·d) (approx.) + O(k·k_nn·log n)",
    reference="Maharana et al. (2023), arXiv 2310.07931; github.com/adymaharana/d2pruning",
)
def d2_pruning(
    features: Features,
    k: int,
    seed: int,
    n_neighbors: int = 10,
    gamma: float = 1.0,
    gamma_forward: float | None = None,
    difficulty: str = "auto",
    variant: str = "paper",
    exact: bool | None = None,
    nprobe: int = 4,
) -> np.ndarray:
    """D2-Pruning; see the module docstring for the two variants.

    n_neighbors: k of the kNN graph. gamma: reverse-pass kernel width (exp(-gamma d²) in the paper
    variant, exp(-gamma d) in the reference one). gamma_forward: forward-pass width in the paper
    variant (default: gamma). difficulty: "auto" | "loss" | "density" | "uniform". exact: force the
    exact (True) or approximate (False) kNN graph in the paper variant (default: exact iff n <=
    20000). nprobe: cells probed per cell by the approximate graph (nb.knn_graph).
    """
    if variant not in _VARIANTS:
        raise DistillError(f"unknown d2_pruning variant '{variant}'", f"use one of: {', '.join(_VARIANTS)}")
    if difficulty not in _DIFFICULTIES:
        raise DistillError(f"unknown d2_pruning difficulty '{difficulty}'", f"use one of: {', '.join(_DIFFICULTIES)}")
    x = features.embeddings
    n = len(features)
    if variant == "reference":
        nb.check_exact(
            "d2_pruning", "variant='reference' (exact kNN graph)", n, "use variant='paper' (approximate graph)"
        )
    elif exact:
        nb.check_exact(
            "d2_pruning", "exact=True (exact kNN graph)", n, "leave exact unset (approximate above 20,000 rows)"
        )
    if variant == "reference":
        dist2, idx = nb.knn_graph(x, n_neighbors, metric="l2", exact=True)
        indptr, nbrs, d2 = nb.symmetric_edges(dist2, idx)
        d = np.sqrt(d2)
        s = difficulty_scores(features, difficulty, _mean_rows(np.sqrt(dist2), idx))
        rows = np.repeat(np.arange(n), np.diff(indptr))
        g = s + np.bincount(rows, weights=np.exp(-d) * np.maximum(s[nbrs], 1e-7), minlength=n)
        w_rev = np.exp(-gamma * d)
    else:
        dist2, idx = nb.knn_graph(x, n_neighbors, metric="cosine", exact=exact, nprobe=nprobe, seed=seed)
        indptr, nbrs, d2 = nb.symmetric_edges(dist2, idx)
        s = difficulty_scores(features, difficulty, _mean_rows(np.sqrt(dist2), idx))
        gf = gamma if gamma_forward is None else gamma_forward
        rows = np.repeat(np.arange(n), np.diff(indptr))
        g = s + np.bincount(rows, weights=np.exp(-gf * d2) * s[nbrs], minlength=n)
        w_rev = np.exp(-gamma * d2)
    return reverse_select(g, indptr, nbrs, w_rev, k)


def _mean_rows(dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean over found neighbours of each row (0 for rows without neighbours)."""
    ok = idx >= 0
    cnt = ok.sum(axis=1)
    tot = np.where(ok, dist, 0).sum(axis=1, dtype=np.float64)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)
