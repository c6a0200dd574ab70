"""Selectors that read target-model embeddings."""

from __future__ import annotations

import heapq
import math
from dataclasses import replace

import numpy as np

import distill.select.neighbors as nb
from distill.errors import DistillError
from distill.features.columns import Features
from distill.select.registry import get, register

# semantic_dedup's default cluster size: near-duplicates are looked for within k-means clusters of about this many
# rows, so the pairwise comparisons cost n × 1,000 rather than n².
DEDUP_CLUSTER_ROWS = 1000
# Rows per block of one cluster's pairwise similarities: a block (rows × cluster size floats) stays a few MB.
PAIR_BLOCK = 1024


def subset(features: Features, idx: np.ndarray) -> Features:
    """Features of rows `idx` (copies the rows: a candidate subset, not the pool)."""
    take = lambda a: None if a is None else a[idx]  # noqa: E731
    return replace(
        features,
        n_words=features.n_words[idx],
        n_sentences=features.n_sentences[idx],
        type_token_ratio=features.type_token_ratio[idx],
        info_density=features.info_density[idx],
        embeddings=take(features.embeddings),
        loss=take(features.loss),
    )


def centroid_similarity(x: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row to the mean of the L2-normalised rows (no (n, d) copy)."""
    x = nb.as_f32(x)
    norms = nb.row_norms(x).astype(np.float64)
    inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    centroid = (inv.astype(np.float32) @ x).astype(np.float64) / len(x)
    c_norm = np.linalg.norm(centroid)
    if c_norm == 0:
        return np.zeros(len(x))
    return (x @ (centroid / c_norm).astype(np.float32)).astype(np.float64) * inv


@register(
    "embedding_centroid",
    description="Most typical examples: highest cosine similarity to the centroid of the L2-normalised embeddings.",
    needs=("embeddings",),
    cost="O(n·d)",
    reference="prototypicality, Sorscher et al. (2022), arXiv 2206.14486",
)
def embedding_centroid(features: Features, k: int, seed: int) -> np.ndarray:
    """Top-k cosine similarity to the centroid (mean of L2-normalised embeddings); ties (e.g.
    identical rows) broken by a seeded permutation. All-zero embeddings score 0."""
    return nb.seeded_top_k(centroid_similarity(features.embeddings), k, seed)


def proportional_with_floor(sizes: np.ndarray, k: int) -> np.ndarray:
    """One per non-empty cluster, the remaining k - c split in proportion to (size - 1) by
    largest remainder (ties to the lower cluster id); never exceeds a cluster's size."""
    sizes = np.asarray(sizes, dtype=np.int64)
    alloc = (sizes > 0).astype(np.int64)
    if alloc.sum() > k:  # only when k < number of non-empty clusters: largest clusters first
        alloc[:] = 0
        alloc[np.argsort(-sizes, kind="stable")[:k]] = 1
        return alloc
    rest = k - int(alloc.sum())
    room = np.maximum(sizes - 1, 0)
    if rest > 0 and room.sum() > 0:
        quota = rest * room / room.sum()
        base = np.floor(quota).astype(np.int64)
        left = rest - int(base.sum())
        frac = np.where(base < room, quota - base, -1.0)
        base[np.argsort(-frac, kind="stable")[:left]] += 1
        alloc += base
    return alloc


@register(
    "clustering",
    description="faiss k-means; every cluster represented in proportion to its size by the examples nearest its centroid.",
    needs=("embeddings",),
    cost="O(n·c·d), c = clusters",
    reference="cluster-stratified sampling, cf. Sorscher et al. (2022) arXiv 2206.14486 (k-means prototypes)",
)
def clustering(features: Features, k: int, seed: int, n_clusters: int = 100) -> np.ndarray:
    """Euclidean k-means with c = min(n_clusters, k, n) clusters (nb.kmeans). Each non-empty
    cluster gets one pick, the other k - c picks are split in proportion to cluster size by
    largest remainder; within a cluster the picks are the examples nearest its centroid (ties by
    index)."""
    x = features.embeddings
    _, assign, dist = nb.kmeans(x, min(n_clusters, k), seed)
    sizes = np.bincount(assign)
    alloc = proportional_with_floor(sizes, k)
    order = np.lexsort((np.arange(len(assign)), dist, assign))  # by cluster, then distance, then index
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return np.concatenate([order[starts[c] : starts[c] + alloc[c]] for c in range(len(sizes)) if alloc[c] > 0])


def k_center_greedy(x: np.ndarray, k: int, seed: int, cell_size: int | None = 1000) -> np.ndarray:
    """Greedy k-center (farthest-point sampling), exact or cell-partitioned.

    Exact (cell_size=None or a single cell): start from a seeded random row, then repeatedly add
    the row farthest from the chosen set: O(n k d), a 2-approximation of the optimal covering radius.

    Partitioned (default): a faiss k-means splits the rows into c = clamp(round(n / cell_size), 1,
    k) cells, and the greedy runs with distances measured only to centres in the *same* cell. A max-
    heap over cells always extends the cell whose current covering radius is largest, so the
    picks follow the global farthest-point order except that a point near a cell border may get a
    centre that the neighbouring cell already covers. Cost O(k * n/c * d) + k-means; the true
    covering radius is never larger than the reported per-cell one (benchmarked vs exact).
    """
    x = nb.as_f32(x)
    n = len(x)
    rng = np.random.default_rng(seed)
    cells = 1 if cell_size is None else int(max(1, min(round(n / cell_size), k)))
    if cells > 1:
        _, assign, _ = nb.kmeans(x, cells, seed)
        order = np.argsort(assign, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=cells))])
        xs = x[order]  # one contiguous copy: per-cell slices stay cache-friendly
    else:
        order = np.arange(n)
        bounds = np.array([0, n])
        xs = x
    sq = np.einsum("ij,ij->i", xs, xs)
    mind = np.full(n, np.inf, dtype=np.float32)
    heap = [(-np.inf, c) for c in range(len(bounds) - 1) if bounds[c + 1] > bounds[c]]
    heapq.heapify(heap)
    picks = np.empty(k, dtype=np.int64)
    with nb.single_thread_blas():
        _greedy_loop(heap, bounds, order, xs, sq, mind, picks, rng)
    return picks


def _greedy_loop(heap, bounds, order, xs, sq, mind, picks, rng) -> None:
    for t in range(len(picks)):
        _, c = heapq.heappop(heap)
        a, b = bounds[c], bounds[c + 1]
        seg = mind[a:b]
        j = a + (int(rng.integers(b - a)) if np.isinf(seg[0]) and np.isinf(seg).all() else int(np.argmax(seg)))
        picks[t] = order[j]
        d2 = sq[a:b] - 2 * (xs[a:b] @ xs[j]) + sq[j]
        np.minimum(seg, np.maximum(d2, 0), out=seg)
        seg[j - a] = -1.0  # chosen: never the farthest again
        top = float(seg.max())
        if top >= 0:
            heapq.heappush(heap, (-top, c))


@register(
    "diversity_sampling",
    description="Greedy k-center / farthest-point sampling (cell-partitioned approximation of the exact greedy).",
    needs=("embeddings",),
    cost="O(k·(n/c)·d) + k-means (exact: O(n·k·d))",
    reference="Sener & Savarese (2018), arXiv 1708.00489",
)
def diversity_sampling(
    features: Features, k: int, seed: int, cell_size: int | None = 1000, exact: bool = False
) -> np.ndarray:
    """k-center greedy on raw Euclidean embeddings (`k_center_greedy`). exact=True (or
    cell_size=None) runs the exact O(n k d) greedy; the default partitions into cells of about
    `cell_size` rows. The exact greedy is refused above nb.EXACT_MAX_ROWS rows."""
    if exact or cell_size is None:
        nb.check_exact(
            "diversity_sampling",
            "exact=True (exact greedy k-center)",
            len(features),
            "leave exact unset (cell-partitioned greedy)",
        )
    return k_center_greedy(features.embeddings, k, seed, None if exact else cell_size)


def semdedup_keep(x: np.ndarray, threshold: float, n_clusters: int, seed: int) -> np.ndarray:
    """Boolean mask of rows SemDeDup keeps.

    Rows are clustered by Euclidean k-means; within a cluster they are ordered by decreasing
    distance to the centroid, and row j is dropped when its cosine similarity to any row earlier
    in that order exceeds `threshold` (so of a near-duplicate group the member farthest from the
    centroid survives, as in SemDeDup). Similarities are computed on L2-normalised rows in blocks.
    """
    x = nb.as_f32(x)
    _, assign, dist = nb.kmeans(x, n_clusters, seed)
    keep = np.ones(len(x), dtype=bool)
    order = np.lexsort((np.arange(len(x)), -dist, assign))
    sizes = np.bincount(assign)
    with nb.single_thread_blas():  # ~1000 x 1000 products: threading costs more than it gains
        _drop_near_duplicates(x, order, sizes, threshold, keep)
    return keep


def _drop_near_duplicates(
    x: np.ndarray, order: np.ndarray, sizes: np.ndarray, threshold: float, keep: np.ndarray
) -> None:
    starts = np.concatenate([[0], np.cumsum(sizes)])
    block = PAIR_BLOCK
    for c in range(len(sizes)):
        if sizes[c] < 2:
            continue
        rows = order[starts[c] : starts[c + 1]]
        xn = nb.normalize_rows(x[rows])
        drop = np.zeros(len(rows), dtype=bool)
        for a in range(1, len(rows), block):
            b = min(len(rows), a + block)
            sim = xn[a:b] @ xn[:b].T  # (b-a, b): similarities to every row up to the block's end
            sim[np.arange(b - a)[:, None] + a <= np.arange(b)[None, :]] = -np.inf  # only earlier rows
            drop[a:b] = sim.max(axis=1) > threshold
        keep[rows[drop]] = False


@register(
    "semantic_dedup",
    description="SemDeDup: drop near-duplicates (cosine > threshold within k-means clusters), sample from the rest.",
    needs=("embeddings",),
    cost="O(n·(n/c)·d)",
    reference="Abbas et al. (2023), SemDeDup, arXiv 2303.09540",
)
def semantic_dedup(
    features: Features, k: int, seed: int, threshold: float = 0.95, n_clusters: int | None = None
) -> np.ndarray:
    """`semdedup_keep` with c = n_clusters (default ceil(n / 1000)); then a seeded uniform sample of
    k kept rows. If fewer than k rows survive, all survivors are taken and the rest is a seeded
    uniform sample of the dropped rows."""
    if not -1.0 <= threshold <= 1.0:
        raise DistillError(
            f"semantic_dedup threshold {threshold} is not a cosine similarity", "use a threshold in [-1, 1], e.g. 0.95"
        )
    n = len(features)
    c = math.ceil(n / DEDUP_CLUSTER_ROWS) if n_clusters is None else n_clusters
    keep = semdedup_keep(features.embeddings, threshold, c, seed)
    rng = np.random.default_rng(seed)
    kept, dropped = np.flatnonzero(keep), np.flatnonzero(~keep)
    if len(kept) >= k:
        return rng.choice(kept, size=k, replace=False)
    return np.concatenate([kept, rng.choice(dropped, size=k - len(kept), replace=False)])


@register(
    "hybrid",
    description="Heuristic filter then semantic diversity: top-m by a text-statistics selector, then k-center on them.",
    needs=("embeddings",),
    cost="filter + diversity_sampling on m = 3k rows",
    reference="filter-then-diversify, cf. Bukharin & Zhao (2023) arXiv 2311.14736",
)
def hybrid(
    features: Features,
    k: int,
    seed: int,
    filter: str = "high_info_density",
    candidate_factor: float = 3.0,
    cell_size: int | None = 1000,
) -> np.ndarray:
    """Composition of registered selectors: the `filter` selector (default high_info_density) keeps
    m = min(n, ceil(candidate_factor * k)) candidates, then `diversity_sampling` picks k of them."""
    if candidate_factor < 1:
        raise DistillError(
            f"hybrid candidate_factor={candidate_factor} < 1 leaves fewer than k candidates",
            "use candidate_factor >= 1 (default 3)",
        )
    n = len(features)
    m = int(min(n, math.ceil(candidate_factor * k)))
    inner_filter = get(filter)
    for need in inner_filter.needs:
        if getattr(features, need) is None:
            raise DistillError(
                f"hybrid filter '{filter}' needs feature '{need}', which was not computed",
                "use a text-statistics filter such as high_info_density or length_diversity",
            )
    candidates = np.asarray(inner_filter.fn(features, m, seed), dtype=np.int64)
    inner = get("diversity_sampling").fn(subset(features, candidates), k, seed, cell_size=cell_size)
    return candidates[np.asarray(inner, dtype=np.int64)]
