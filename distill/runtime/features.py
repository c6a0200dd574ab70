"""The features stage as Ray work (distill/features/): the target model embeds the pool in a Ray Data actor pool,
then the probe runs as one Ray task when a selected method needs it. Both are cached by content hash in the run's
storage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from distill.config.sections import FeatureSettings
from distill.console import run as console
from distill.console.run import stage
from distill.data.load import TASK, Splits
from distill.features import probe
from distill.features import store as featstore
from distill.features.columns import QUERY_EMBEDDING, Features, text_features
from distill.features.embed import (
    EMBEDDING,
    EMBEDDING_WMEAN,
    LOSS,
    LOSS_ALONE,
    RESPONSE_CUT,
    SECONDS,
    EmbedActor,
    cache_key,
    output_columns,
)
from distill.runtime import metrics
from distill.runtime.session import embed_plan
from distill.select import registry
from distill.store import artifacts, counters
from distill.store.storage import Storage, open_storage

log = logging.getLogger(__name__).info  # on the console through distill.console.run.ConsoleHandler

# Embedding blocks queued per actor (at most): many small blocks keep every actor fed while the others work, and
# the progress bar advances block by block; each block costs Ray a task, so not one per batch.
BLOCKS_PER_ACTOR = 16
# embed_pool's costs key for the pool's embedding pass: every method reads it, so it is reported once and charged to
# none (the other keys are the features only some methods read, charged to those: features.columns.charged_seconds)
SHARED = "shared embedding pass"


def embed_pool(
    run: str,
    settings: FeatureSettings,
    max_failures: int,
    splits: Splits,
    model_path: str,
    out: Path,
    store: Storage | None = None,
) -> tuple[Features, dict[str, float]]:
    """Target-model features of the pool, and of the query set when a selected method reads it (Ray Data
    actor pools), cached by content hash; returns them with the seconds of each pass (computed now or when
    cached): the shared one under SHARED, and any beyond it (IFD's `loss_alone`, the query set's) under the
    feature it computed (features.charged_seconds charges them to the methods that read them). `max_failures`
    (resources.max_failures): restarts of a dead embedding actor; `run`: the run's name on the dashboard."""
    store = store or open_storage(out)
    needs = registry.needs_of(settings.methods)
    with stage("embed"):
        pool = _embedded(
            run,
            settings,
            max_failures,
            splits.train,
            splits.format,
            model_path,
            store,
            f"cache/features-{features_key(settings, splits, model_path)}",
            LOSS_ALONE in needs,
        )
        cut = int(np.sum(pool[RESPONSE_CUT]))
        log(
            f"features: {' × '.join(map(str, pool[EMBEDDING].shape))} embeddings, mean response loss "
            f"{pool[LOSS].mean():.3f}, {cut} of {len(splits.train)} responses cut at "
            f"model.max_target_tokens={settings.model.max_target_tokens}"
        )
    features = replace(
        text_features(splits.train["prompt"].tolist(), pool[EMBEDDING], pool[LOSS]),
        embedding_wmean=pool[EMBEDDING_WMEAN],
        loss_alone=pool.get(LOSS_ALONE),
    )
    costs = {SHARED: _seconds(pool, EMBEDDING)}
    if LOSS_ALONE in pool:
        costs[LOSS_ALONE] = _seconds(pool, LOSS_ALONE)
    if QUERY_EMBEDDING in needs:
        with stage(f"embed the query set ({len(splits.query)} examples)"):
            query = _embedded(
                run,
                settings,
                max_failures,
                splits.query,
                splits.format,
                model_path,
                store,
                f"cache/query-{query_key(settings, splits, model_path)}",
                loss_alone=False,
            )
        features = replace(
            features, query_embedding=query[EMBEDDING_WMEAN], query_task=splits.query[TASK].to_numpy(dtype=np.int64)
        )
        costs[QUERY_EMBEDDING] = _seconds(query, EMBEDDING)  # charged to the methods that read the query set
    artifacts.write_json(out / "pool_stats.json", {"n_words": features.n_words.tolist(), "responses_cut": cut})
    return features, costs


def _seconds(columns: dict[str, np.ndarray], name: str) -> float:
    """The seconds of the pass that computed column `name`, from its rows' shares (kept in the cache with it)."""
    return float(np.sum(columns[SECONDS + name], dtype=np.float64))


def _embedded(
    run: str,
    settings: FeatureSettings,
    max_failures: int,
    frame: pd.DataFrame,
    data_format: str,
    model_path: str,
    store: Storage,
    rel: str,
    loss_alone: bool,
) -> dict[str, np.memmap]:
    """EmbedActor's columns for every row of `frame` (by position), memory-mapped from the cache folder `rel` of the
    output folder; computed first (and kept in storage too) when neither holds it. A driver resuming the run on
    another machine downloads the cache from storage (seconds to minutes) instead of running the model again."""
    import ray
    from ray.data import ActorPoolStrategy

    columns = output_columns(loss_alone)
    folder = store.local / rel
    if store.fetched(rel, lambda path: featstore.intact(path, columns)):
        log(f"reusing cached features {folder.name}")
        return featstore.load(folder, columns)
    embed = settings.embed
    actors, cpus, gpus = embed_plan(ray.cluster_resources(), embed.num_actors)
    log(f"{actors} embedding actor(s), {'1 GPU' if gpus else f'{cpus} CPU'} each, batch {embed.batch_size}")
    frame = frame.assign(row=np.arange(len(frame)))[["row", "turns", "response"]]
    frame = frame.iloc[np.argsort(-frame["turns"].str.len().to_numpy(), kind="stable")]  # length-sorted: less padding
    # many small blocks: every actor stays fed, and progress advances block by block
    blocks = max(1, min(len(frame) // embed.batch_size, BLOCKS_PER_ACTOR * actors))
    # split here: Ray's own split (override_num_blocks) runs np.array_split on a DataFrame, which pandas deprecates
    parts = [frame.iloc[rows] for rows in np.array_split(np.arange(len(frame)), blocks)]
    dataset = ray.data.from_pandas(parts).map_batches(
        EmbedActor,
        fn_constructor_kwargs={
            "model_path": model_path,
            "model_cfg": settings.model,
            "prompt_cfg": settings.prompt,
            "data_format": data_format,
            "pooling": embed.pooling,
            "num_threads": cpus or None,
            "loss_alone": loss_alone,
        },
        batch_size=embed.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=actors),
        num_gpus=1 if gpus else 0,
        num_cpus=cpus or 1,
        # a dead actor (OOM kill, lost node) is restarted and its batch retried elsewhere
        max_restarts=max_failures,
        max_task_retries=max_failures,
    )
    with console.current().progress("embed", total=len(frame), unit="rows") as advance:
        # streamed into memory-mapped files at their rows: the driver holds one batch, never the pool
        # twice; featstore checks every row arrives exactly once before it caches anything
        stored = featstore.stream(
            _advancing(dataset.iter_batches(batch_size=None, batch_format="numpy"), advance, metrics.EmbedMeter(run)),
            folder,
            len(frame),
        )
    store.push(rel)
    counters.bump(store.local, embeddings=len(frame))
    return stored


def _advancing(batches, *counters):
    """The batches, each counted by every one of `counters` (the console's bar, the dashboard's metrics) as it passes."""
    for batch in batches:
        for count in counters:
            count(len(batch["row"]))
        yield batch


def features_key(settings: FeatureSettings, splits: Splits, model_path: str) -> str:
    """The pool's features cache key (features.embed.cache_key), with the columns the selected methods need."""
    loss_alone = LOSS_ALONE in registry.needs_of(settings.methods)
    return cache_key(
        model_path,
        splits.fingerprint,
        settings.model,
        settings.prompt,
        settings.embed.pooling,
        output_columns(loss_alone),
    )


def query_key(settings: FeatureSettings, splits: Splits, model_path: str) -> str:
    """The query set's features cache key."""
    fingerprint = splits.query_fingerprint + splits.format
    return cache_key(model_path, fingerprint, settings.model, settings.prompt, settings.embed.pooling)


def dynamics_needed(methods: Sequence[str]) -> list[str]:
    """The probe's dynamics features the given methods need (their registry `needs`), in a fixed order: the
    probe stage runs only when this is not empty."""
    wanted = registry.needs_of(methods)
    return [name for name in probe.DYNAMICS if name in wanted]


def probe_pool(
    settings: FeatureSettings,
    features: Features,
    splits: Splits,
    model_path: str,
    out: Path,
    store: Storage | None = None,
) -> tuple[Features, dict[str, float]]:
    """Training dynamics (distill/features/probe.py) as one Ray task on a GPU when there is one, else on the
    CPUs; run only when a selected method needs them, and cached by content hash. Returns the
    features with the dynamics added, and the seconds computing each took (features.charged_seconds reads them)."""
    wanted = dynamics_needed(settings.methods)
    if not wanted:
        return features, {}
    import ray

    store = store or open_storage(out)
    paths = probe.cache_paths(out / "cache", model_path, splits.fingerprint, settings)
    cached = [f"cache/{path.name}" for path in (paths.probe, paths.grads)]
    with stage(f"probe ({', '.join(wanted)})"):
        for rel in cached:
            store.fetched(rel)
        dynamics = probe.load_cached(paths)
        if all(name in dynamics for name in wanted):
            log(f"reusing cached {', '.join(p.name for p in (paths.probe, paths.grads) if p.exists())}")
        else:
            _, cpus, gpus = embed_plan(ray.cluster_resources(), 1)
            task = ray.remote(num_cpus=cpus or 1, num_gpus=gpus)(probe.compute_dynamics).options(name="probe")
            fresh = ray.get(
                task.remote(
                    model_path,
                    settings,
                    splits.format,
                    splits.train["turns"].tolist(),
                    splits.train["response"].tolist(),
                    wanted,
                    dynamics.get("adapter"),
                    features.loss,
                    cpus or None,
                )
            )
            probe.store(paths, fresh)
            for rel in cached:
                store.push(rel)
            dynamics.update(fresh)
        log(
            "; ".join(
                f"{name}: {' × '.join(map(str, dynamics[name].shape))} ({dynamics[probe.SECONDS + name]:.1f}s)"
                for name in wanted
            )
        )
    return replace(features, **{name: dynamics[name] for name in wanted}), probe.costs(dynamics)
