"""Shared faiss/numpy helpers for the embedding selectors: one place for threads, norms, k-means,
kNN graphs and seeded top-k, so the selectors do not grow copy-paste twins.

Memory rule: the (n, d) float32 embedding matrix can be 2.3 GB (1M x 576), so nothing here makes a
full normalised copy of it unless n is small; norms are computed once (n floats) and applied on the
fly, and large intermediate products are computed in row blocks.
"""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

from distill.errors import DistillError

_BLOCK = 16384  # rows per block for blocked numpy work (keeps temporaries ~ tens of MB)
# Exact all-pairs work (an exact kNN graph, O(n² d); exact greedy k-center, O(n k d) with k ~ n/10)
# above this many rows takes hours on a CPU: such options fail fast instead (`check_exact`).
EXACT_MAX_ROWS = 100_000
# Rows the approximate kNN index's PCA trains on (a seeded sample): plenty for a reduce_dim-wide projection, and
# its cost stays the same however large the pool.
PCA_SAMPLE_ROWS = 50_000
# Rows per exact nearest-centre search in covering_radius: its distance block (rows × centres floats) stays bounded.
SEARCH_BLOCK = 65_536


def check_exact(method: str, what: str, n: int, fix: str) -> None:
    """Refuse an exact quadratic computation on more than EXACT_MAX_ROWS rows, before any work starts."""
    if n > EXACT_MAX_ROWS:
        raise DistillError(
            f"{method}: {what} is quadratic in the pool size, and n={n:,} exceeds its limit of "
            f"{EXACT_MAX_ROWS:,} rows (hours of CPU time)",
            f"{fix}, or cap the pool with --max-train",
        )


@functools.cache
def load_faiss():
    """faiss, loaded on first use rather than on import, with OMP_WAIT_POLICY=PASSIVE unless the user set it:
    its bundled libgomp reads that once, when it loads. Idle OpenMP workers then sleep instead of spinning,
    which otherwise starves numpy's BLAS threads between faiss calls on a 2-core box (measured: 10-100x
    slower small matvecs)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import faiss

    return faiss


def set_threads() -> int:
    """Set faiss' OpenMP threads explicitly: $DISTILL_THREADS, else the CPUs this process may use."""
    env = os.environ.get("DISTILL_THREADS")
    try:
        n = int(env) if env else len(os.sched_getaffinity(0))
    except (AttributeError, ValueError):
        n = os.cpu_count() or 1
    n = max(1, n)
    load_faiss().omp_set_num_threads(n)
    return n


def single_thread_blas() -> contextlib.AbstractContextManager:
    """Context limiting BLAS to one thread for loops of tiny matrix-vector products: multi-threaded
    small gemv is dominated by thread synchronisation and collapses when other processes share the cores."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def as_f32(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 view of `x` (no copy when it already is one, as Features guarantees)."""
    return np.ascontiguousarray(x, dtype=np.float32)


def row_norms(x: np.ndarray) -> np.ndarray:
    """L2 norm of every row (float32, no (n, d) temporary)."""
    out = np.empty(len(x), dtype=np.float32)
    for a in range(0, len(x), _BLOCK):
        blk = x[a : a + _BLOCK]
        out[a : a + _BLOCK] = np.sqrt(np.einsum("ij,ij->i", blk, blk))
    return out


def normalize_rows(x: np.ndarray, norms: np.ndarray | None = None) -> np.ndarray:
    """L2-normalised copy of `x`. All-zero rows become the constant unit vector 1/sqrt(d), so
    identical zero embeddings stay identical (cosine 1) instead of becoming undefined."""
    norms = row_norms(x) if norms is None else norms
    out = np.empty_like(x, dtype=np.float32)
    zero = norms <= 0
    safe = np.where(zero, 1.0, norms).astype(np.float32)
    np.divide(x, safe[:, None], out=out)
    if zero.any():
        out[zero] = 1.0 / np.sqrt(x.shape[1])
    return out


def seeded_top_k(score: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of the k largest scores; ties broken by a seeded random permutation (deterministic)."""
    perm = np.random.default_rng(seed).permutation(len(score))
    order = np.argsort(-np.asarray(score, dtype=np.float64)[perm], kind="stable")
    return perm[order[:k]]


def kmeans(
    x: np.ndarray, n_clusters: int, seed: int, *, niter: int = 10, max_points_per_centroid: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """faiss k-means (Euclidean) on raw rows: (centroids (c, d), assignment (n,) int64, squared
    distance to the assigned centroid (n,) float32).

    Training uses at most `max_points_per_centroid * n_clusters` seeded sampled rows (faiss' own
    subsampling); every row is then assigned exactly with a flat index. `n_clusters` is clamped to
    [1, n]. Duplicate rows / fewer distinct points than clusters are fine: faiss splits empty
    clusters, and the caller sees some clusters empty or identical.
    """
    set_threads()
    x = as_f32(x)
    n, d = x.shape
    c = int(max(1, min(n_clusters, n)))
    if c == 1:
        centroids = x.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
    else:
        km = load_faiss().Kmeans(
            d,
            c,
            niter=niter,
            seed=int(seed) % (2**31 - 1),
            verbose=False,
            max_points_per_centroid=max_points_per_centroid,
            min_points_per_centroid=1,
        )
        km.train(x)
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    index = load_faiss().IndexFlatL2(d)
    index.add(centroids)
    dist, assign = index.search(x, 1)
    return centroids, assign[:, 0].astype(np.int64), np.maximum(dist[:, 0], 0)


def _exact_sq_dist(x: np.ndarray, sq: np.ndarray, idx: np.ndarray, inv: np.ndarray | None) -> np.ndarray:
    """Squared distance between row i and rows idx[i, :] in the full space (inf where idx < 0).
    With `inv` (inverse norms) the distance is between L2-normalised rows: 2 - 2 cos.
    The inner products come from faiss' multi-threaded fvec_inner_products_by_idx (no gather copy)."""
    n, k = idx.shape
    ids = np.ascontiguousarray(idx, dtype=np.int64)
    dots = np.empty((n, k), dtype=np.float32)
    faiss = load_faiss()
    faiss.fvec_inner_products_by_idx(
        faiss.swig_ptr(dots), faiss.swig_ptr(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), x.shape[1], n, k
    )
    safe = np.where(idx < 0, 0, idx)
    if inv is None:
        out = sq[:, None] + sq[safe] - 2 * dots
    else:
        out = 2 - 2 * dots * inv[:, None] * inv[safe]
    np.maximum(out, 0, out=out)
    out[idx < 0] = np.inf
    return out.astype(np.float32, copy=False)


def knn_graph(
    x: np.ndarray,
    n_neighbors: int,
    *,
    metric: str = "l2",
    exact: bool | None = None,
    exact_max: int = 20000,
    nprobe: int = 4,
    reduce_dim: int = 64,
    rerank: int = 2,
    cell_size: int = 1000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """k-nearest-neighbour graph, self excluded: (squared distances (n, k) float32 ascending,
    neighbour ids (n, k) int64; -1 / inf where fewer than k were found).

    metric "l2" uses raw rows; "cosine" uses L2-normalised rows (squared distance = 2 - 2 cos).
    exact (default: n <= exact_max): faiss IndexFlatL2, O(n^2 d).
    approximate: rows are projected to `reduce_dim` dims by a PCA trained on a seeded sample; a
    k-means splits them into cells of ~`cell_size` rows, and the rows of each cell search (exact,
    faiss.knn: one BLAS block per cell) among the rows of the `nprobe` cells whose centroids are
    nearest to their own cell's centroid. `rerank * k` candidates per row are re-ranked by their
    exact full-space distance, so the returned distances are exact and only the neighbour
    *identity* is approximate (recall vs exact: scripts/bench_selectors.py --quality).
    """
    set_threads()
    x = as_f32(x)
    n, d = x.shape
    k = int(min(n_neighbors, n - 1))
    if k <= 0:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    if metric not in ("l2", "cosine"):
        raise ValueError(f"unknown metric {metric!r}")
    norms = row_norms(x)
    inv = None
    if metric == "cosine":
        inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1), 0).astype(np.float32)
    if exact is None:
        exact = n <= exact_max
    rng = np.random.default_rng(seed)
    k_search = k + 1
    if exact:
        xs = normalize_rows(x, norms) if metric == "cosine" else x
        index = load_faiss().IndexFlatL2(d)
        index.add(xs)
        _, idx = index.search(xs, k + 1)
    else:

        def space(blk_x: np.ndarray, blk_inv: np.ndarray | None) -> np.ndarray:
            return blk_x if blk_inv is None else blk_x * blk_inv[:, None]

        sample = np.sort(rng.choice(n, size=min(n, PCA_SAMPLE_ROWS), replace=False))
        dr = d
        pca = None
        if d > reduce_dim:
            dr = reduce_dim
            pca = load_faiss().PCAMatrix(d, dr)
            pca.train(np.ascontiguousarray(space(x[sample], None if inv is None else inv[sample])))
        r = np.empty((n, dr), dtype=np.float32)
        for a in range(0, n, _BLOCK):
            blk = np.ascontiguousarray(space(x[a : a + _BLOCK], None if inv is None else inv[a : a + _BLOCK]))
            r[a : a + _BLOCK] = pca.apply(blk) if pca is not None else blk
        k_search = int(min(n, max(1, rerank) * k + 1))
        idx = _cell_block_knn(r, k_search, nprobe, cell_size, seed)
        del r
    idx = idx.astype(np.int64)
    # drop self (or, with duplicate rows, the last column when self was not returned first)
    is_self = idx == np.arange(n)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    idx = idx[~is_self].reshape(n, k_search - 1)
    sq = norms.astype(np.float32) ** 2
    dist = _exact_sq_dist(x, sq, idx, inv)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


def _cell_block_knn(r: np.ndarray, k: int, nprobe: int, cell_size: int, seed: int) -> np.ndarray:
    """Approximate kNN ids (self included when found) by cell-blocked exact search; -1 = none."""
    n = len(r)
    cells = int(max(1, round(n / max(1, cell_size))))
    cents, assign, _ = kmeans(r, cells, seed)
    cells = len(cents)
    probe = int(min(max(1, nprobe), cells))
    _, near = load_faiss().knn(cents, cents, probe)
    order = np.argsort(assign, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=cells))])
    out = np.full((n, k), -1, dtype=np.int64)
    for c in range(cells):
        q = order[bounds[c] : bounds[c + 1]]
        if len(q) == 0:
            continue
        cand = np.concatenate([order[bounds[j] : bounds[j + 1]] for j in near[c] if j >= 0])
        m = int(min(k, len(cand)))
        _, loc = load_faiss().knn(np.ascontiguousarray(r[q]), np.ascontiguousarray(r[cand]), m)
        out[q, :m] = np.where(loc >= 0, cand[np.maximum(loc, 0)], -1)
    return out


def symmetric_edges(dist: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edge set of a kNN graph in CSR form: (indptr (n+1,), neighbours, squared dist).

    Every kNN edge i->j is used in both directions; an edge found from both ends appears once.
    """
    n, k = idx.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = idx.ravel()
    ds = dist.ravel()
    ok = cols >= 0
    rows, cols, ds = rows[ok], cols[ok], ds[ok]
    r = np.concatenate([rows, cols])
    c = np.concatenate([cols, rows])
    dd = np.concatenate([ds, ds])
    key = r * n + c
    key, first = np.unique(key, return_index=True)  # sorted by (row, col): CSR order
    r, c, dd = key // n, key % n, dd[first]
    keep = r != c
    r, c, dd = r[keep], c[keep], dd[keep]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
    return indptr, c, dd.astype(np.float64)


def covering_radius(x: np.ndarray, centers: np.ndarray) -> float:
    """max over rows of the Euclidean distance to the nearest selected row (exact, faiss flat)."""
    set_threads()
    x = as_f32(x)
    index = load_faiss().IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(x[np.asarray(centers)]))
    worst = 0.0
    for a in range(0, len(x), SEARCH_BLOCK):
        dist, _ = index.search(x[a : a + SEARCH_BLOCK], 1)
        worst = max(worst, float(dist.max()))
    return float(np.sqrt(max(worst, 0.0)))
