"""Property-based tests (hypothesis) over every registered selector: any pool, any budget."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.features.columns import text_features
from distill.select import registry

WORDS = ["a", "law", "tax", "fund", "the", "state", "act", "health", "credit", "report"]


@st.composite
def pools(draw):
    """A small pool: generated texts, embeddings, gradients and query rows from a coarse integer grid (so
    duplicate rows and constant columns are common), losses and probe losses with ties."""
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    levels = draw(st.integers(1, 4))  # 1 level -> zero-variance embeddings
    emb = rng.integers(0, levels, (n, d)).astype(np.float32) * draw(st.sampled_from([0.0, 0.5, 10.0]) | st.just(1.0))
    texts = [
        " ".join(rng.choice(WORDS, size=int(rng.integers(1, 25)))) + "." * int(rng.integers(0, 2)) for _ in range(n)
    ]
    loss = rng.integers(0, 3, n).astype(np.float32)
    probe_loss = rng.integers(0, 3, (n, draw(st.integers(1, 4)))).astype(np.float32)  # 1 column: step 0 only
    grads = rng.integers(-1, levels, (n, d)).astype(np.float32)  # zero rows and duplicates are common
    loss_alone = rng.integers(0, 3, n).astype(np.float32)  # zero: an infinite IFD; ties with loss: IFD exactly 1
    m = draw(st.integers(1, 5))
    query = rng.integers(0, levels, (m, d)).astype(np.float32)  # zero rows too
    query_task = rng.integers(0, draw(st.integers(1, 3)), m)
    k = draw(st.integers(1, n))
    features = replace(
        text_features(texts, emb, loss),
        probe_loss=probe_loss,
        grad_features=grads,
        embedding_wmean=emb[:, ::-1].copy(),
        loss_alone=loss_alone,
        query_embedding=query,
        query_task=query_task,
    )
    return features, k, draw(st.integers(0, 2**31 - 1))


@pytest.mark.parametrize("name", registry.names())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pools())
def test_any_pool_gives_valid_deterministic_subset(name: str, case) -> None:
    features, k, seed = case
    a = registry.select(name, features, k, seed)
    assert len(a) == k and len(np.unique(a)) == k
    assert a.min() >= 0 and a.max() < len(features)
    assert np.array_equal(a, registry.select(name, features, k, seed))
