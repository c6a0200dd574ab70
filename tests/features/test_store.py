"""Streamed, memory-mapped features: same values as the old in-memory path, every row exactly once,
nothing half-written left behind, and memory maps that travel by path."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from distill.config.load import make_config
from distill.config.schema import DataConfig, ModelConfig, PromptConfig
from distill.config.sections import FeatureSettings
from distill.data.load import load_splits
from distill.errors import DistillError
from distill.features import store as featstore
from distill.features.columns import Features, text_features
from distill.features.embed import EmbedActor


def batches_of(rows: np.ndarray, emb: np.ndarray, loss: np.ndarray, sizes: list[int]):
    """Yield (row, embedding, loss) batches over `rows` in the given order and batch sizes."""
    start = 0
    for size in sizes:
        r = rows[start : start + size]
        yield {"row": r, "embedding": emb[r], "loss": loss[r]}
        start += size
    assert start == len(rows)


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    return rng.normal(size=(50, 6)).astype(np.float32), rng.gamma(2.0, 1.0, 50).astype(np.float32)


def test_stream_puts_every_row_at_its_index(tmp_path, table):
    emb, loss = table
    order = np.random.default_rng(1).permutation(50)
    got = featstore.stream(batches_of(order, emb, loss, [7, 0, 20, 1, 22]), tmp_path / "f", 50)
    got_emb, got_loss = got["embedding"], got["loss"]
    assert isinstance(got_emb, np.memmap) and isinstance(got_loss, np.memmap)
    assert got_emb.dtype == np.float32 and got_emb.shape == (50, 6) and got_emb.flags.c_contiguous
    np.testing.assert_array_equal(got_emb, emb)
    np.testing.assert_array_equal(got_loss, loss)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # the partial folder was renamed, not copied
    reloaded = featstore.load(tmp_path / "f", ["embedding", "loss"])
    np.testing.assert_array_equal(reloaded["embedding"], emb)
    assert featstore.intact(tmp_path / "f", ["embedding", "loss"])
    assert not featstore.intact(tmp_path / "f", ["embedding", "loss_alone"])  # a column it does not hold


def test_a_batch_with_other_columns_is_refused(tmp_path, table):
    emb, loss = table
    batches = [
        {"row": np.arange(25), "embedding": emb[:25], "loss": loss[:25]},
        {"row": np.arange(25, 50), "embedding": emb[25:]},
    ]
    with pytest.raises(DistillError, match="columns"):
        featstore.stream(iter(batches), tmp_path / "f", 50)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "rows,problem",
    [
        (np.r_[np.arange(50), 3], "repeats row"),  # a row embedded twice
        (np.arange(49), "never embedded"),  # a row missing
        (np.r_[np.arange(50), 50], "outside the pool"),
    ],
)
def test_every_row_exactly_once_or_nothing_is_cached(tmp_path, table, rows, problem):
    emb, loss = table
    emb, loss = np.vstack([emb, emb[:1]]), np.r_[loss, loss[:1]]  # row 50 exists in the source only
    with pytest.raises(DistillError, match=problem):
        featstore.stream(batches_of(rows, emb, loss, [len(rows)]), tmp_path / "f", 50)
    assert list(tmp_path.iterdir()) == []  # neither a cache nor a partial folder is left


def test_an_existing_cache_wins_a_race(tmp_path, table):
    emb, loss = table
    featstore.stream(batches_of(np.arange(50), emb, loss, [50]), tmp_path / "f", 50)
    again = featstore.stream(batches_of(np.arange(50)[::-1], emb, loss, [25, 25]), tmp_path / "f", 50)
    np.testing.assert_array_equal(again["embedding"], emb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_features_keep_memory_maps_and_pickle_them_by_path(tmp_path, table):
    emb, loss = featstore.stream(batches_of(np.arange(50), *table, [50]), tmp_path / "f", 50).values()
    features = text_features(["a short text."] * 50, emb, loss)
    assert features.embeddings is emb and features.loss is loss  # no copy
    blob = pickle.dumps(features)
    by_value = pickle.dumps(replace(features, embeddings=np.array(emb), loss=np.array(loss)))
    assert len(blob) + emb.nbytes < len(by_value)  # the embedding matrix did not travel
    assert emb.tobytes() not in blob
    back = pickle.loads(blob)
    assert isinstance(back.embeddings, np.memmap) and not back.embeddings.flags.writeable
    np.testing.assert_array_equal(back.embeddings, emb)
    np.testing.assert_array_equal(back.loss, loss)
    np.testing.assert_array_equal(back.n_words, features.n_words)


def test_views_and_plain_arrays_pickle_by_value(tmp_path, table):
    emb, loss = featstore.stream(batches_of(np.arange(50), *table, [50]), tmp_path / "f", 50).values()
    features = text_features(["x y."] * 50, emb, loss)
    for part in (
        replace(
            features,
            embeddings=emb[10:20],
            loss=loss[10:20],
            n_words=features.n_words[10:20],
            n_sentences=features.n_sentences[10:20],
            type_token_ratio=features.type_token_ratio[10:20],
            info_density=features.info_density[10:20],
        ),
        text_features(["x y."] * 50, np.array(emb), np.array(loss)),
    ):
        back = pickle.loads(pickle.dumps(part))
        assert getattr(back.embeddings, "filename", None) is None  # a copy of the values, not a map of the file
        np.testing.assert_array_equal(back.embeddings, part.embeddings)


def test_streamed_model_features_equal_the_old_in_memory_path(tmp_path, tiny_model, billsum_path):
    """The pipeline's length-sorted batches, streamed, give exactly what concatenate + argsort gave."""
    pool = load_splits(DataConfig(source=str(billsum_path), test_size=2)).train.head(12)
    actor = EmbedActor(
        tiny_model,
        ModelConfig(name=tiny_model, dtype="float32", max_source_tokens=40, max_target_tokens=8),
        PromptConfig(),
        "summarization",
    )
    order = np.argsort(-pool["turns"].str.len().to_numpy(), kind="stable")
    outputs = [
        actor({"row": rows, "turns": pool["turns"].to_numpy()[rows], "response": pool["response"].to_numpy()[rows]})
        for rows in np.array_split(order, 4)
    ]
    rows = np.concatenate([b["row"] for b in outputs])
    old_emb = np.concatenate([b["embedding"] for b in outputs])[np.argsort(rows)]
    old_loss = np.concatenate([b["loss"] for b in outputs])[np.argsort(rows)]
    stored = featstore.stream(iter(outputs), tmp_path / "f", len(pool))
    emb, loss = stored["embedding"], stored["loss"]
    np.testing.assert_array_equal(emb, old_emb)
    np.testing.assert_array_equal(loss, old_loss)
    alone = actor(
        {"row": np.array([5]), "turns": pool["turns"].to_numpy()[[5]], "response": pool["response"].to_numpy()[[5]]}
    )
    np.testing.assert_allclose(emb[5], alone["embedding"][0], atol=1e-4)  # row 5 sits at index 5


@pytest.mark.slow
def test_pipeline_streams_the_pool_and_selects_from_the_memory_map(tiny_job, tiny_model):
    """Through Ray: embed_pool streams to a memmap cache in row order (the query set to its own), a rerun
    reuses it, the selector tasks (which get the features by path) pick what an in-process run picks, and a
    method's time includes the extra features only it reads (the probe's, IFD's pass over the responses, RDS+'s
    query set); every pass's seconds come back unchanged when the cache is reused."""
    from distill.runtime import preflight
    from distill.runtime.features import SHARED, embed_pool
    from distill.runtime.selection import select_subsets, selection_inputs_key
    from distill.runtime.session import ray_session
    from distill.select import registry

    tiny_job["select"]["methods"] = ["embedding_centroid", "clustering", "loss_based", "el2n_loss", "ifd", "rds_plus"]
    tiny_job["data"]["query_size"] = 3
    cfg = make_config(tiny_job)
    splits = load_splits(cfg.data)
    out = Path(cfg.output_dir)
    with ray_session(cfg.resources):
        features, costs = embed_pool(
            cfg.name, FeatureSettings.of(cfg), cfg.resources.max_failures, splits, tiny_model, out
        )
        features = replace(features, probe_loss=np.random.default_rng(0).random((len(features), 3), dtype=np.float32))
        key = selection_inputs_key(FeatureSettings.of(cfg), splits, tiny_model)
        uncharged = select_subsets(
            cfg.name, cfg.select, cfg.seeds, cfg.include_baseline, features, splits.train, out, key, {}
        )
    assert set(costs) == {SHARED, "loss_alone", "query_embedding"} and min(costs.values()) > 0
    costs["probe_loss"] = 12.5  # what a probe stage reported
    specs = select_subsets(
        cfg.name, cfg.select, cfg.seeds, cfg.include_baseline, features, splits.train, out, key, costs
    )  # cached: no Ray needed
    for spec, alone in zip(specs, uncharged):
        charged = {"el2n_loss": 12.5, "ifd": costs["loss_alone"], "rds_plus": costs["query_embedding"]}
        charged = charged.get(spec.method, 0.0)  # the shared pass is charged to none
        assert spec.select_seconds == pytest.approx(alone.select_seconds + charged), spec.method
    for name in ("embeddings", "loss", "embedding_wmean", "loss_alone", "query_embedding"):
        assert isinstance(getattr(features, name), np.memmap), name
    assert sorted(p.name.split("-")[0] for p in (out / "cache").iterdir() if p.is_dir()) == ["features", "query"]
    actor = EmbedActor(tiny_model, cfg.model, cfg.prompt, splits.format, cfg.embed.pooling, loss_alone=True)
    for rows, got in ((splits.train, features), (splits.query, None)):
        expected = actor(
            {"row": np.arange(len(rows)), "turns": rows["turns"].to_numpy(), "response": rows["response"].to_numpy()}
        )
        if got is None:  # the query set: its position-weighted embeddings, grouped by source
            np.testing.assert_allclose(features.query_embedding, expected["embedding_wmean"], atol=1e-4)
            assert features.query_task.tolist() == [0, 0, 0]
            continue
        for name, column in (
            ("embeddings", "embedding"),
            ("loss", "loss"),
            ("embedding_wmean", "embedding_wmean"),
            ("loss_alone", "loss_alone"),
        ):
            np.testing.assert_allclose(getattr(got, name), expected[column], atol=1e-4)
    k = preflight.budget(cfg.select, len(splits.train))
    for spec in specs:
        assert list(spec.indices) == registry.select(spec.method, features, k, spec.seed).tolist()
    reused, reused_costs = embed_pool(
        cfg.name, FeatureSettings.of(cfg), cfg.resources.max_failures, splits, tiny_model, out
    )  # cached: no Ray needed
    np.testing.assert_array_equal(reused.embeddings, features.embeddings)
    assert reused_costs == {k: v for k, v in costs.items() if k != "probe_loss"}  # stored with their caches
    assert isinstance(reused, Features)


def test_by_value_features_carry_their_bytes(tmp_path, table):
    """For tasks that cannot map the driver's cache file (a driver node without CPUs), the features
    travel by value."""
    emb, loss = featstore.stream(batches_of(np.arange(50), *table, [50]), tmp_path / "f", 50).values()
    features = text_features(["x y."] * 50, emb, loss).by_value()
    blob = pickle.dumps(features)
    assert emb.tobytes() in blob
    back = pickle.loads(blob)
    assert getattr(back.embeddings, "filename", None) is None
    np.testing.assert_array_equal(back.embeddings, emb)
    np.testing.assert_array_equal(back.loss, loss)
