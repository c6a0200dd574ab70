"""Selectors that read text statistics (and the target model's losses) only: no embeddings."""

from __future__ import annotations

import numpy as np

from distill.errors import DistillError
from distill.features.columns import Features
from distill.select.neighbors import seeded_top_k
from distill.select.registry import register


@register(
    "random",
    description="Uniform sample without replacement: the baseline every method must beat.",
    cost="O(n)",
    reference="—",
)
def random_subset(features: Features, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(len(features), size=k, replace=False)


def herdan_c(n_words: np.ndarray, type_token_ratio: np.ndarray) -> np.ndarray:
    """Herdan's C = log(V) / log(N) (V distinct words, N words): lexical diversity that, unlike
    the raw type-token ratio V/N, does not collapse as prompts grow (Heaps' law V ~ N^C).
    Documents with fewer than 2 words get 0."""
    n = np.asarray(n_words, dtype=np.float64)
    v = np.maximum(np.rint(np.asarray(type_token_ratio, dtype=np.float64) * n), 1.0)
    out = np.zeros_like(n)
    ok = n >= 2
    out[ok] = np.log(v[ok]) / np.log(n[ok])
    return np.clip(out, 0.0, 1.0)


def length_diversity_score(
    features: Features, target_words: float | None = None, length_weight: float = 1.0
) -> np.ndarray:
    """Score of `length_diversity`: herdan_c - length_weight * normalised log-distance to target.

    target T = `target_words`, default the pool's median n_words; distance = |log(1+N) - log(1+T)|
    divided by its maximum over the pool (so it lies in [0, 1], like Herdan's C)."""
    n = np.asarray(features.n_words, dtype=np.float64)
    target = float(np.median(n)) if target_words is None else float(target_words)
    dist = np.abs(np.log1p(n) - np.log1p(max(target, 0.0)))
    top = dist.max() if len(dist) else 0.0
    if top > 0:
        dist = dist / top
    return herdan_c(n, features.type_token_ratio) - length_weight * dist


@register(
    "length_diversity",
    description="Documents near a target length (default: pool median) with high length-robust "
    "lexical diversity (Herdan's C).",
    cost="O(n log n)",
    reference="Herdan (1960) type-token law; length filters as in LIMA (Zhou et al., 2023)",
)
def length_diversity(
    features: Features, k: int, seed: int, target_words: float | None = None, length_weight: float = 1.0
) -> np.ndarray:
    """Top-k of `length_diversity_score` (ties broken by a seeded permutation).

    target_words: target length in words (default: median n_words of the pool).
    length_weight: weight of the normalised length distance against Herdan's C (both in [0, 1]).
    """
    return seeded_top_k(length_diversity_score(features, target_words, length_weight), k, seed)


def length_bins(n_words: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile bin (0..n_bins-1) of every example by n_words: examples are ranked by length
    (ties by index) and cut into n_bins equal-count bins, so repeated lengths cannot empty a bin."""
    n = len(n_words)
    b = int(max(1, min(n_bins, n)))
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(np.asarray(n_words), kind="stable")] = np.arange(n)
    return rank * b // max(n, 1)


def even_allocation(capacity: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Split k across groups as evenly as capacities allow (water-filling); leftover units that
    cannot be split evenly go to seeded-random groups with room."""
    cap = np.asarray(capacity, dtype=np.int64)
    alloc = np.zeros_like(cap)
    remaining = int(min(k, cap.sum()))
    while remaining > 0:
        open_ = np.flatnonzero(alloc < cap)
        share = remaining // len(open_)
        if share == 0:
            chosen = rng.choice(open_, size=remaining, replace=False)
            alloc[chosen] += 1
            break
        add = np.minimum(share, cap[open_] - alloc[open_])
        alloc[open_] += add
        remaining -= int(add.sum())
    return alloc


@register(
    "balanced_lengths",
    description="Stratified sample: k split evenly across quantile bins of prompt length, random within bins.",
    cost="O(n log n)",
    reference="stratified sampling (Cochran, 1977)",
)
def balanced_lengths(features: Features, k: int, seed: int, n_bins: int = 10) -> np.ndarray:
    """n_bins equal-count length bins (`length_bins`); k is split as evenly as possible across
    bins (a bin smaller than its share gives the rest to the others), then sampled uniformly at
    random within each bin. Every bin is covered whenever k >= n_bins."""
    rng = np.random.default_rng(seed)
    bins = length_bins(features.n_words, n_bins)
    counts = np.bincount(bins)
    alloc = even_allocation(counts, k, rng)
    order = np.argsort(bins, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    picks = [
        rng.choice(order[starts[b] : starts[b + 1]], size=int(alloc[b]), replace=False)
        for b in range(len(counts))
        if alloc[b] > 0
    ]
    return np.concatenate(picks)


@register(
    "high_info_density",
    description="Top-k by distinct words per sentence (features.info_density).",
    cost="O(n log n)",
    reference="text-quality heuristic (no canonical paper)",
)
def high_info_density(features: Features, k: int, seed: int) -> np.ndarray:
    """Top-k info_density; ties broken by a seeded permutation."""
    return seeded_top_k(features.info_density, k, seed)


def loss_band(loss: np.ndarray, q_low: float, q_high: float) -> tuple[np.ndarray, np.ndarray]:
    """(examples ranked by loss ascending, [lo, hi) rank range of the kept middle band).

    The band drops the floor(q_low*n) lowest-loss (easiest: already learned / trivial) and the
    floor(q_high*n) highest-loss (noisiest: likely mislabelled or off-distribution) examples."""
    n = len(loss)
    order = np.argsort(np.asarray(loss, dtype=np.float64), kind="stable")
    lo = int(np.floor(q_low * n))
    hi = n - int(np.floor(q_high * n))
    return order, (lo, max(lo, hi))


@register(
    "loss_based",
    description="Middle loss band under the target model: drop the easiest q_low and noisiest q_high, "
    "sample from the rest.",
    needs=("loss",),
    cost="O(n log n)",
    reference="loss / perplexity-band pruning, Marion et al. (2023), arXiv 2309.04564",
)
def loss_based(features: Features, k: int, seed: int, q_low: float = 0.1, q_high: float = 0.1) -> np.ndarray:
    """Uniform seeded sample of k from the band of ranks [floor(q_low n), n - floor(q_high n)) of
    the loss. If the band holds fewer than k examples it is widened symmetrically in rank (the
    examples nearest the band, alternating low/high side) until it holds k."""
    if not (0 <= q_low < 1 and 0 <= q_high < 1 and q_low + q_high < 1):
        raise DistillError(
            f"loss_based band q_low={q_low}, q_high={q_high} is empty", "use 0 <= q_low, q_high and q_low + q_high < 1"
        )
    rng = np.random.default_rng(seed)
    order, (lo, hi) = loss_band(features.loss, q_low, q_high)
    n = len(order)
    extra = k - (hi - lo)
    if extra > 0:  # widen: half below the band, the rest above, then whatever is left below
        down = min(lo, (extra + 1) // 2)
        up = min(n - hi, extra - down)
        lo, hi = lo - down - (extra - down - up), hi + up
    return rng.choice(order[lo:hi], size=k, replace=False)


def ifd_scores(loss: np.ndarray, loss_alone: np.ndarray) -> np.ndarray:
    """Instruction-following difficulty L(response | prompt) / L(response); +inf where the response's own
    loss is 0 (the prompt cannot make it easier). L(response) is the response in the same template with the user
    content left out (features.embed: `loss_alone`)."""
    loss, alone = np.asarray(loss, dtype=np.float64), np.asarray(loss_alone, dtype=np.float64)
    return np.divide(loss, alone, out=np.full_like(loss, np.inf), where=alone > 0)


@register(
    "ifd",
    description="Cherry LLM's instruction-following difficulty: top-k by L(response | prompt) / L(response), "
    "ratios >= 1 (the prompt does not help) dropped.",
    needs=("loss", "loss_alone"),
    cost="O(n log n) + one pass over the responses",
    reference="IFD, Li et al. (2023), arXiv 2308.12032",
)
def ifd(features: Features, k: int, seed: int) -> np.ndarray:
    """Top-k by `ifd_scores` among the examples with IFD < 1: the prompt helps predict the response, yet
    the least. When fewer than k remain, the dropped ones fill the rest, lowest IFD (nearest to helping)
    first. Ties: a seeded permutation."""
    score = ifd_scores(features.loss, features.loss_alone)
    order = seeded_top_k(score, len(score), seed)
    helped = score[order] < 1
    return np.concatenate([order[helped], order[~helped][::-1]])[:k]
