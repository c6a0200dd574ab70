"""Selectors aimed at a target task: rank the pool by its similarity to a query set of target-task examples.

The query set (`query_embedding`, one row per query example, and `query_task`, which source each came
from) is embedded by the same pass as the pool (distill/features/embed.py); by default it is a seeded slice of the
training split kept out of the pool (`data.query_size`), or the user's own files (`select.query`), one task
per file. Pure functions: no I/O, the same features, k and seed give the same subset.
"""

from __future__ import annotations

import numpy as np

from distill.errors import DistillError
from distill.features.columns import Features
from distill.select.neighbors import as_f32, normalize_rows, row_norms, seeded_top_k
from distill.select.registry import register


def cosine_to_queries(x: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(n, m) cosine similarity of every pool row to every query row, without a normalised copy of the
    pool (all-zero pool rows score 0)."""
    norms = row_norms(x)
    similarity = as_f32(x) @ normalize_rows(as_f32(queries)).T
    similarity /= np.where(norms > 0, norms, 1.0).astype(np.float32)[:, None]
    return similarity


def round_robin(rankings: list[np.ndarray], k: int, n: int) -> np.ndarray:
    """Each ranking in turn takes its best index not taken yet, until k are taken. A ranking needs only
    its first min(k, n) entries: fewer than k are taken whenever it looks for its next one."""
    taken = np.zeros(n, dtype=bool)
    picks: list[int] = []
    position = [0] * len(rankings)
    while len(picks) < k:
        for j, ranking in enumerate(rankings):
            while taken[ranking[position[j]]]:
                position[j] += 1
            picks.append(int(ranking[position[j]]))
            taken[picks[-1]] = True
            if len(picks) == k:
                break
    return np.asarray(picks, dtype=np.int64)


def rds_rankings(similarity: np.ndarray, task: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """The lists RDS+ takes from in turn: with one task, one per query example (its most similar pool rows
    first); with several, one per task, by each pool row's highest similarity to that task's queries.

    When k is smaller than the number of lists, a round-robin would stop before every list had its turn, so
    only the first k queries (or tasks) in file order would count: then there is one list instead, every pool
    row scored by its best similarity over all queries (the max RDS+ already uses within a task), which every
    query shapes and which does not depend on the order of the query file."""
    tasks = np.unique(task)
    if len(tasks) == 1:
        scores = [similarity[:, j] for j in range(similarity.shape[1])]
    else:
        scores = [similarity[:, task == t].max(axis=1) for t in tasks]
    if k < len(scores):
        scores = [similarity.max(axis=1)]
    return [seeded_top_k(score, k, seed) for score in scores]


@register(
    "rds_plus",
    description="RDS+: pool examples most similar to a query set of target-task examples (position-weighted "
    "mean-pooled hidden states, cosine), taken round-robin over the queries (with k below their number: by each "
    "example's best similarity to any query).",
    needs=("embedding_wmean", "query_embedding"),
    cost="O(n·m·d) + O(m·n log n), m = query examples",
    reference="RDS+, Ivison et al. (2025), arXiv 2503.01807",
)
def rds_plus(features: Features, k: int, seed: int) -> np.ndarray:
    """Cosine similarity of each pool example's `embedding_wmean` to each query example's; with one
    query task, each query example in turn takes its most similar pool example not taken yet; with
    several tasks (query files), each task in turn takes the pool example of highest similarity to any
    of its queries (Ivison et al.'s round-robin over tasks). With k below the number of queries (tasks),
    the top k by best similarity over all queries (rds_rankings says why). Ties: a seeded permutation."""
    if not len(features.query_embedding):
        raise DistillError(
            "rds_plus got an empty query set",
            "set data.query_size above 0 or pass select.query files holding target-task examples",
        )
    n = len(features)
    task = (
        np.zeros(len(features.query_embedding), dtype=np.int64) if features.query_task is None else features.query_task
    )
    similarity = cosine_to_queries(features.embedding_wmean, features.query_embedding)
    return round_robin(rds_rankings(similarity, np.asarray(task), min(k, n), seed), k, n)
