"""Selector tests: one matrix over every registered method, then method-specific contracts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.config.schema import DataConfig
from distill.data.formats import to_examples
from distill.errors import DistillError
from distill.features.columns import Features, text_features
from distill.select import neighbors as nb
from distill.select import registry
from distill.select.d2 import d2_pruning
from distill.select.heuristic import high_info_density, length_bins, loss_band
from distill.select.semantic import semdedup_keep

WORDS = np.array(
    "the act tax credit section amend federal state law bill health care fund grant "
    "report agency secretary program shall may year public energy water land".split()
)


def make_texts(n: int, seed: int) -> list[str]:
    """Generated documents with varied length, vocabulary and sentence structure."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        n_sent = int(rng.integers(1, 8))
        vocab = WORDS[: int(rng.integers(3, len(WORDS) + 1))]
        texts.append(" ".join(" ".join(rng.choice(vocab, size=int(rng.integers(2, 30)))) + "." for _ in range(n_sent)))
    return texts


def make_features(
    n: int = 200,
    d: int = 16,
    seed: int = 0,
    clusters: int = 5,
    emb: np.ndarray | None = None,
    loss: np.ndarray | None = None,
    probe_loss: np.ndarray | None = None,
    grads: np.ndarray | None = None,
    loss_alone: np.ndarray | None = None,
    query: np.ndarray | None = None,
    query_task: np.ndarray | None = None,
    texts: list[str] | None = None,
) -> Features:
    """Synthetic features for every registered selector's needs. The query set (rds_plus) is 6 rows near
    the pool's embeddings in 2 tasks, unless given; `embedding_wmean` is a rotation of `emb`, so duplicate
    and constant pools stay duplicate and constant."""
    rng = np.random.default_rng(seed)
    if emb is None:
        centers = rng.normal(0, 5, (clusters, d))
        emb = centers[rng.integers(clusters, size=n)] + rng.normal(0, 1, (n, d))
    if loss is None:
        loss = rng.gamma(2.0, 1.0, n)
    if probe_loss is None:  # step 0 + 2 checkpoints, mostly falling
        probe_loss = np.sort(rng.gamma(2.0, 1.0, (n, 3)), axis=1)[:, ::-1]
    if grads is None:
        grads = rng.normal(0, 1, (n, 12))
    if loss_alone is None:  # mostly above the conditional loss (IFD < 1), some below
        loss_alone = np.asarray(loss) * rng.uniform(0.8, 2.0, n)
    wmean = np.asarray(emb, dtype=np.float64)[:, ::-1]
    if query is None:
        query = wmean[rng.integers(n, size=6)] + rng.normal(0, 0.1, (6, wmean.shape[1]))
        query_task = np.repeat([0, 1], 3)
    return replace(
        text_features(texts or make_texts(n, seed), emb.astype(np.float32), loss),
        probe_loss=np.asarray(probe_loss, dtype=np.float32),
        grad_features=np.asarray(grads, dtype=np.float32),
        embedding_wmean=np.ascontiguousarray(wmean, dtype=np.float32),
        loss_alone=np.asarray(loss_alone, dtype=np.float32),
        query_embedding=np.asarray(query, dtype=np.float32),
        query_task=None if query_task is None else np.asarray(query_task, dtype=np.int64),
    )


REPO = Path(__file__).resolve().parents[2]
# real rows of each data format, whose prompts give the text statistics (lengths, information density) selectors read
FORMAT_FILES = {
    "summarization": REPO / "data" / "scitldr" / "scitldr_a_train_dev.jsonl",
    "instruction": REPO / "data" / "gsm8k" / "gsm8k_instruct.jsonl",
    "chat": REPO / "data" / "gsm8k" / "gsm8k_chat.jsonl",
}


def format_prompts(fmt: str, n: int = 200) -> list[str]:
    """The prompts (every turn's content, distill/data/formats.py) of the first `n` rows of a bundled file."""
    frame = pd.read_json(FORMAT_FILES[fmt], lines=True).head(n)
    return to_examples(frame, fmt, DataConfig(), fmt)["prompt"].tolist()


@pytest.fixture(scope="module", params=["generated", *FORMAT_FILES])
def pool(request) -> Features:
    """Every test of the matrix that takes `pool` runs on generated documents and on the prompts of each format."""
    return make_features(texts=None if request.param == "generated" else format_prompts(request.param))


def _check(indices: np.ndarray, k: int, n: int) -> None:
    assert len(indices) == k
    assert len(np.unique(indices)) == k
    assert indices.min() >= 0 and indices.max() < n


METHODS = registry.names()


# ---------------------------------------------------------------- the matrix (every registered method)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("k", [1, 17, 200])
def test_valid_subset_and_deterministic(name: str, k: int, pool: Features) -> None:
    a = registry.select(name, pool, k, seed=3)
    _check(a, k, len(pool))
    assert np.array_equal(a, registry.select(name, pool, k, seed=3))


@pytest.mark.parametrize("name", METHODS)
def test_read_only_memory_mapped_features(name: str, pool: Features, tmp_path) -> None:
    """The pipeline hands selectors read-only memory maps of the features cache: same picks as in memory."""
    np.save(tmp_path / "embedding.npy", pool.embeddings)
    np.save(tmp_path / "loss.npy", pool.loss)
    mapped = replace(
        pool,
        embeddings=np.load(tmp_path / "embedding.npy", mmap_mode="r"),
        loss=np.load(tmp_path / "loss.npy", mmap_mode="r"),
    )
    assert np.array_equal(registry.select(name, mapped, 17, seed=3), registry.select(name, pool, 17, seed=3))


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("n,k", [(1, 1), (2, 1), (2, 2), (3, 3)])
def test_tiny_pools(name: str, n: int, k: int) -> None:
    _check(registry.select(name, make_features(n=n, d=4, seed=n), k, seed=0), k, n)


@pytest.mark.parametrize("name", METHODS)
def test_duplicate_rows(name: str) -> None:
    base = np.random.default_rng(1).normal(size=(20, 8))
    f = make_features(
        n=40,
        emb=np.concatenate([base, base]),
        loss=np.tile(np.linspace(0.5, 2, 20), 2),
        probe_loss=np.tile(np.linspace(0.5, 2, 60).reshape(20, 3), (2, 1)),
        grads=np.concatenate([base, base]),
    )
    for k in (10, 40):
        _check(registry.select(name, f, k, seed=1), k, 40)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("value", [0.0, 1.5])
def test_zero_variance_embeddings(name: str, value: float) -> None:
    f = make_features(
        n=30,
        emb=np.full((30, 8), value),
        loss=np.ones(30),
        probe_loss=np.full((30, 3), value),
        grads=np.full((30, 8), value),
    )
    for k in (5, 30):
        a = registry.select(name, f, k, seed=2)
        _check(a, k, 30)
        assert np.array_equal(a, registry.select(name, f, k, seed=2))


def test_seed_changes_random_choice(pool: Features) -> None:
    assert not np.array_equal(registry.select("random", pool, 20, 0), registry.select("random", pool, 20, 1))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("k", [0, -1, 201])
def test_bad_budget(name: str, k: int, pool: Features) -> None:
    with pytest.raises(DistillError):
        registry.select(name, pool, k, seed=0)


@pytest.mark.parametrize("name", [m for m in METHODS if "embeddings" in registry.get(m).needs])
def test_nan_and_missing_embeddings(name: str, pool: Features) -> None:
    emb = pool.embeddings.copy()
    emb[3, 2] = np.nan
    with pytest.raises(DistillError, match="NaN"):
        registry.select(name, make_features(emb=emb), 5, seed=0)
    with pytest.raises(DistillError, match="embeddings"):
        registry.select(name, text_features(make_texts(50, 0)), 5, seed=0)


@pytest.mark.parametrize("name", [m for m in METHODS if {"probe_loss", "grad_features"} & set(registry.get(m).needs)])
def test_nan_and_missing_dynamics(name: str, pool: Features) -> None:
    need = registry.get(name).needs[0]
    broken = getattr(pool, need).copy()
    broken[3, 0] = np.inf
    with pytest.raises(DistillError, match="NaN or infinite"):
        registry.select(name, replace(pool, **{need: broken}), 5, seed=0)
    with pytest.raises(DistillError, match=need):
        registry.select(name, replace(pool, **{need: None}), 5, seed=0)


def test_missing_loss_and_unknown_names(pool: Features) -> None:
    no_loss = make_features(emb=pool.embeddings, loss=np.zeros(200))
    no_loss = Features(
        no_loss.n_words, no_loss.n_sentences, no_loss.type_token_ratio, no_loss.info_density, no_loss.embeddings, None
    )
    with pytest.raises(DistillError, match="loss"):
        registry.select("loss_based", no_loss, 5, seed=0)
    with pytest.raises(DistillError, match="loss"):
        registry.select("d2_pruning", no_loss, 5, seed=0, difficulty="loss")
    _check(registry.select("d2_pruning", no_loss, 5, seed=0), 5, 200)  # auto -> density
    with pytest.raises(DistillError, match="unknown selection method"):
        registry.get("no_such_method")
    with pytest.raises(DistillError, match="unknown selection method"):
        registry.select("no_such_method", pool, 5, seed=0)
    with pytest.raises(DistillError, match="variant"):
        registry.select("d2_pruning", pool, 5, seed=0, variant="nope")
    with pytest.raises(DistillError, match="band"):
        registry.select("loss_based", pool, 5, seed=0, q_low=0.6, q_high=0.5)


# ---------------------------------------------------------------- method-specific contracts


def test_balanced_lengths_covers_every_bin() -> None:
    f = make_features(n=300, seed=4)
    for k in (10, 13, 50):
        picks = registry.select("balanced_lengths", f, k, seed=k, n_bins=10)
        # independent quantile bins: rank by length, ten equal-count groups
        rank = np.argsort(np.argsort(f.n_words, kind="stable"), kind="stable")
        assert set(rank[picks] * 10 // 300) == set(range(10))
        counts = np.bincount(length_bins(f.n_words, 10)[picks], minlength=10)
        assert counts.max() - counts.min() <= 1


def _min_pairwise(x: np.ndarray) -> float:
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    return float(d[np.triu_indices(len(x), 1)].min())


@pytest.mark.parametrize("exact", [False, True])
def test_diversity_beats_random_on_min_distance(exact: bool) -> None:
    f = make_features(n=600, d=8, clusters=6, seed=5)
    x = f.embeddings.astype(np.float64)
    picked = registry.select("diversity_sampling", f, 30, seed=0, exact=exact, cell_size=100)
    rand = [_min_pairwise(x[registry.select("random", f, 30, seed=s)]) for s in range(10)]
    assert _min_pairwise(x[picked]) > max(rand)


def test_exact_k_center_radius_not_worse_than_half_of_approx() -> None:
    f = make_features(n=2000, d=8, clusters=10, seed=6)
    x = f.embeddings
    approx = registry.select("diversity_sampling", f, 100, seed=0, cell_size=200)
    exact = registry.select("diversity_sampling", f, 100, seed=0, exact=True)
    r_a, r_e = nb.covering_radius(x, approx), nb.covering_radius(x, exact)
    assert r_a <= 2 * r_e  # greedy is a 2-approximation; the partitioned one should stay close


def _near_duplicate_pairs(x: np.ndarray, eps: float = 0.05) -> int:
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    return int((d[np.triu_indices(len(x), 1)] < eps).sum())


def test_d2_pruning_picks_fewer_near_duplicates_than_top_difficulty() -> None:
    rng = np.random.default_rng(7)
    hard = rng.normal(0, 1, (30, 16))
    emb = np.concatenate([np.repeat(hard, 4, axis=0) + rng.normal(0, 1e-3, (120, 16)), rng.normal(0, 1, (200, 16))])
    loss = np.concatenate([rng.uniform(4, 5, 120), rng.uniform(0, 3, 200)])
    f = make_features(n=320, emb=emb, loss=loss)
    top = np.argsort(-loss, kind="stable")[:60]  # top-k difficulty
    d2 = registry.select("d2_pruning", f, 60, seed=0)
    ref = registry.select("d2_pruning", f, 60, seed=0, variant="reference")
    x = f.embeddings.astype(np.float64)
    assert _near_duplicate_pairs(x[d2]) < _near_duplicate_pairs(x[top]) / 4
    assert _near_duplicate_pairs(x[ref]) < _near_duplicate_pairs(x[top])


def brute_force_reference_d2(x: np.ndarray, s: np.ndarray, k: int, n_neighbors: int, gamma: float) -> list[int]:
    """Independent O(n^2) numpy re-implementation of the released GraphDensitySampler (sum / weighted)."""
    x = x.astype(np.float64)
    n = len(x)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    masked = dist + np.diag(np.full(n, np.inf))
    adj = np.zeros((n, n), dtype=bool)
    for i in range(n):
        adj[i, np.argsort(masked[i])[:n_neighbors]] = True
    adj = adj | adj.T  # every kNN edge used in both directions
    g = s + (adj * np.exp(-dist) * np.maximum(s, 1e-7)[None, :]).sum(1)
    picked: list[int] = []
    for _ in range(k):
        v = int(np.argmax(g))
        nbrs = np.flatnonzero(adj[v])
        g[nbrs] = g[nbrs] - np.exp(-gamma * dist[v, nbrs]) * g[v]
        picked.append(v)
        g[picked] = g.min() - 1
    return picked


@pytest.mark.parametrize("seed,gamma,n_neighbors", [(0, 1.0, 5), (1, 0.3, 10), (2, 3.0, 3)])
def test_d2_reference_matches_brute_force(seed: int, gamma: float, n_neighbors: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (80, 6))
    s = rng.gamma(2.0, 1.0, 80)
    f = make_features(n=80, emb=x, loss=s)
    got = d2_pruning(f, 25, seed=123, n_neighbors=n_neighbors, gamma=gamma, difficulty="loss", variant="reference")
    want = brute_force_reference_d2(x, s.astype(np.float32).astype(np.float64), 25, n_neighbors, gamma)
    assert got.tolist() == want


def test_d2_approximate_graph_runs_and_has_good_recall() -> None:
    f = make_features(n=3000, d=96, clusters=20, seed=8)
    _, approx = nb.knn_graph(f.embeddings, 10, metric="cosine", exact=False, nprobe=8, reduce_dim=64)
    _, exact = nb.knn_graph(f.embeddings, 10, metric="cosine", exact=True)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.tolist(), exact.tolist())])
    assert recall > 0.6
    _check(registry.select("d2_pruning", f, 300, seed=0, exact=False), 300, 3000)


def test_clustering_covers_every_cluster() -> None:
    f = make_features(n=400, d=8, clusters=8, seed=9)
    picks = registry.select("clustering", f, 40, seed=0, n_clusters=16)
    _, assign, _ = nb.kmeans(f.embeddings, 16, 0)
    assert set(assign[picks]) == set(assign)  # every (non-empty) k-means cluster represented
    rng = np.random.default_rng(9)  # the 8 generating clusters (same draw as make_features)
    centers = rng.normal(0, 5, (8, 8))
    truth = rng.integers(8, size=400)
    assert len(centers) == 8 and set(truth[picks]) == set(range(8))


def test_embedding_centroid_picks_points_closest_to_centroid(pool: Features) -> None:
    x = pool.embeddings.astype(np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = xn.mean(0)
    sim = xn @ (c / np.linalg.norm(c))
    picks = registry.select("embedding_centroid", pool, 20, seed=0)
    assert set(picks) == set(np.argsort(-sim)[:20])


@pytest.mark.parametrize("q_low,q_high", [(0.1, 0.1), (0.3, 0.0), (0.0, 0.5)])
def test_loss_based_stays_in_band(q_low: float, q_high: float, pool: Features) -> None:
    n = len(pool)
    picks = registry.select("loss_based", pool, 50, seed=0, q_low=q_low, q_high=q_high)
    order, (lo, hi) = loss_band(pool.loss, q_low, q_high)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    assert lo == int(q_low * n) and hi == n - int(q_high * n)
    assert rank[picks].min() >= lo and rank[picks].max() < hi
    loss = pool.loss[picks]
    assert loss.min() >= np.sort(pool.loss)[lo] and loss.max() <= np.sort(pool.loss)[hi - 1]


def test_loss_based_widens_band_when_too_small(pool: Features) -> None:
    picks = registry.select("loss_based", pool, 190, seed=0)  # band holds 160
    _check(picks, 190, 200)


def test_semantic_dedup_drops_duplicates() -> None:
    rng = np.random.default_rng(10)
    base = rng.normal(0, 1, (100, 32))
    emb = np.concatenate([base, base[:50] + rng.normal(0, 1e-3, (50, 32))])
    keep = semdedup_keep(emb.astype(np.float32), 0.95, 3, seed=0)
    assert keep.sum() == 100
    assert keep[:50].sum() + keep[100:].sum() == 50  # exactly one survivor per duplicate pair
    f = make_features(n=150, emb=emb)
    xn = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    picks = registry.select("semantic_dedup", f, 100, seed=0, n_clusters=3)
    sim = xn[picks] @ xn[picks].T
    assert sim[np.triu_indices(100, 1)].max() <= 0.95
    _check(registry.select("semantic_dedup", f, 130, seed=0, n_clusters=3), 130, 150)  # fill from dropped


def test_hybrid_picks_satisfy_filter(pool: Features) -> None:
    k = 20
    picks = registry.select("hybrid", pool, k, seed=4)
    candidates = high_info_density(pool, 3 * k, seed=4)
    assert set(picks) <= set(candidates)
    threshold = np.sort(pool.info_density)[::-1][3 * k - 1]
    assert pool.info_density[picks].min() >= threshold
    picks = registry.select("hybrid", pool, k, seed=4, filter="length_diversity", candidate_factor=2)
    assert set(picks) <= set(registry.get("length_diversity").fn(pool, 2 * k, 4))


@pytest.mark.parametrize(
    "name,params",
    [
        ("d2_pruning", {"variant": "reference"}),
        ("d2_pruning", {"exact": True}),
        ("diversity_sampling", {"exact": True}),
    ],
)
def test_exact_quadratic_options_fail_fast_above_the_limit(name: str, params: dict) -> None:
    """Exact all-pairs options would run for hours on a million rows: refused before any work."""
    n = nb.EXACT_MAX_ROWS + 1
    f = Features(
        n_words=np.full(n, 10),
        n_sentences=np.ones(n, dtype=np.int64),
        type_token_ratio=np.full(n, 0.5),
        info_density=np.ones(n),
        embeddings=np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32),
        loss=np.ones(n, dtype=np.float32),
    )
    with pytest.raises(DistillError, match="exceeds its limit of 100,000 rows"):
        registry.select(name, f, 10, seed=0, **params)


# ---------------------------------------------------------------- training-dynamics selectors


def test_el2n_loss_picks_the_hardest_at_the_chosen_checkpoint(pool: Features) -> None:
    last, first = pool.probe_loss[:, -1], pool.probe_loss[:, 0]
    assert set(registry.select("el2n_loss", pool, 20, seed=0)) == set(np.argsort(-last)[:20])
    assert set(registry.select("el2n_loss", pool, 20, seed=0, checkpoint=0)) == set(np.argsort(-first)[:20])
    with pytest.raises(DistillError, match="checkpoint 3 does not exist"):
        registry.select("el2n_loss", pool, 20, seed=0, checkpoint=3)


def test_learnability_picks_the_largest_loss_drop(pool: Features) -> None:
    drop = pool.probe_loss[:, 0].astype(np.float64) - pool.probe_loss[:, -1]
    picks = registry.select("learnability", pool, 20, seed=0)
    assert set(picks) == set(np.argsort(-drop)[:20])
    assert drop[picks].min() >= np.sort(drop)[-20]


@pytest.mark.parametrize("region", ["ambiguous", "easy", "hard"])
def test_cartography_regions(region: str, pool: Features) -> None:
    p = np.exp(-pool.probe_loss.astype(np.float64))  # independent: per-checkpoint gold-summary probability
    confidence = np.array([row.mean() for row in p])
    variability = np.array([np.sqrt(((row - row.mean()) ** 2).mean()) for row in p])
    want = {"ambiguous": np.argsort(-variability), "easy": np.argsort(-confidence), "hard": np.argsort(confidence)}
    assert set(registry.select("cartography", pool, 25, seed=0, region=region)) == set(want[region][:25])


def test_cartography_rejects_unknown_region(pool: Features) -> None:
    with pytest.raises(DistillError, match="region"):
        registry.select("cartography", pool, 5, seed=0, region="middle")


def test_gradient_match_prefers_aligned_gradients_and_holds_the_validation_slice_out() -> None:
    rng = np.random.default_rng(11)
    u = rng.normal(size=32)
    sign = np.where(rng.random(300) < 0.7, 1.0, -1.0)  # most of the pool pulls along +u, the rest against
    grads = sign[:, None] * u[None] * rng.uniform(0.5, 3, (300, 1)) + rng.normal(0, 2, (300, 32))
    f = make_features(n=300, grads=grads)
    picks = registry.select("gradient_match", f, 30, seed=5, val_fraction=0.1)
    val = np.random.default_rng(5).choice(300, size=30, replace=False)  # the documented slice
    assert not set(picks) & set(val)
    unit = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    score = np.array([np.mean([unit[i] @ unit[j] for j in val]) for i in range(300)])  # mean cosine, LESS
    ranked = [i for i in np.argsort(-score) if i not in set(val)]
    assert set(picks) == set(ranked[:30])
    assert (sign[picks] > 0).all()
    full = registry.select("gradient_match", f, 290, seed=5, val_fraction=0.1)  # k > n - |val|: 20 slice rows join
    assert set(full) >= set(np.setdiff1d(np.arange(300), val)) and len(set(full) & set(val)) == 20
    with pytest.raises(DistillError, match="val_fraction"):
        registry.select("gradient_match", f, 5, seed=0, val_fraction=1.0)


# ---------------------------------------------------------------- RDS+ and IFD


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_rds_plus_one_task_takes_each_querys_nearest_in_turn() -> None:
    """One task: query j in turn takes its most similar pool row not taken yet (Ivison et al.'s round-robin)."""
    rng = np.random.default_rng(12)
    pool = rng.normal(size=(60, 8))
    queries = rng.normal(size=(3, 8))
    f = make_features(n=60, emb=pool[:, ::-1], query=queries, query_task=np.zeros(3))  # wmean = pool
    cos = _unit(pool) @ _unit(queries).T  # brute force, independent of the selector's code
    taken: list[int] = []
    while len(taken) < 7:
        for j in range(3):
            taken.append(next(int(i) for i in np.argsort(-cos[:, j]) if i not in taken))
            if len(taken) == 7:
                break
    assert registry.select("rds_plus", f, 7, seed=0).tolist() == sorted(taken)
    alone = make_features(n=60, emb=pool[:, ::-1], query=queries[:1], query_task=None)  # one query: plain top-k
    assert set(registry.select("rds_plus", alone, 5, seed=0)) == set(np.argsort(-cos[:, 0])[:5])


def test_rds_plus_with_fewer_picks_than_queries_lets_every_query_count() -> None:
    """k < m: a round-robin would stop after the first k queries in file order. Here only the last query
    matches pool rows well, so the answer must be its rows, whatever the order of the query file."""
    rng = np.random.default_rng(14)
    far, near_last = rng.normal(size=(50, 8)), rng.normal(0, 0.05, (3, 8)) + 5 * np.eye(8)[7]
    pool = np.vstack([far, near_last])
    queries = np.vstack([rng.normal(size=(5, 8)), 5 * np.eye(8)[[7]]])  # 6 queries, the last one near rows 50-52
    f = make_features(n=53, emb=pool[:, ::-1], query=queries, query_task=np.zeros(6))
    cos = _unit(pool) @ _unit(queries).T
    picks = registry.select("rds_plus", f, 3, seed=0)
    assert set(picks) == set(np.argsort(-cos.max(axis=1))[:3]) == {50, 51, 52}
    reversed_file = make_features(n=53, emb=pool[:, ::-1], query=queries[::-1], query_task=np.zeros(6))
    assert set(registry.select("rds_plus", reversed_file, 3, seed=0)) == set(picks)


def test_rds_plus_several_tasks_round_robin_by_their_best_query() -> None:
    """Several query files: each task's score is its best query's similarity; tasks take turns, so a task
    whose queries match few pool rows still gets its share."""
    rng = np.random.default_rng(13)
    near_a, near_b = rng.normal(0, 0.05, (40, 8)) + 5 * np.eye(8)[0], rng.normal(0, 0.05, (4, 8)) + 5 * np.eye(8)[1]
    pool = np.vstack([near_a, near_b, rng.normal(size=(16, 8))])
    queries = np.vstack([5 * np.eye(8)[[0, 0]], 5 * np.eye(8)[[1]]])
    f = make_features(n=60, emb=pool[:, ::-1], query=queries, query_task=[0, 0, 1])
    picks = registry.select("rds_plus", f, 8, seed=0)
    assert set(picks) >= set(range(40, 44))  # task 1 got its 4 rows although task 0's are as many as 40
    with pytest.raises(DistillError, match="query_embedding"):
        registry.select("rds_plus", replace(f, query_embedding=None), 5, seed=0)
    with pytest.raises(DistillError, match="empty query set"):
        registry.select(
            "rds_plus", replace(f, query_embedding=np.zeros((0, 8), np.float32), query_task=None), 5, seed=0
        )


def test_ifd_ranks_by_the_ratio_and_drops_unhelpful_documents() -> None:
    loss = np.array([1.0, 2.0, 1.5, 3.0, 0.5, 2.0])
    alone = np.array([2.0, 2.5, 1.0, 3.0, 0.6, 4.0])  # IFD: 0.5, 0.8, 1.5, 1.0, 0.83, 0.5
    f = make_features(n=6, d=4, loss=loss, loss_alone=alone)
    assert set(registry.select("ifd", f, 2, seed=0)) == {1, 4}  # the highest IFD below 1
    assert set(registry.select("ifd", f, 4, seed=0)) == {0, 1, 4, 5}  # IFD >= 1 (rows 2, 3) are dropped
    assert set(registry.select("ifd", f, 5, seed=0)) == {0, 1, 3, 4, 5}  # too few below 1: lowest IFD >= 1 first
    with pytest.raises(DistillError, match="loss_alone"):
        registry.select("ifd", replace(f, loss_alone=None), 2, seed=0)
