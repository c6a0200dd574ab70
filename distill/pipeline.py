"""Ray orchestration — the only module that talks to Ray. It composes the plain stages:

    data → model → embed (Ray Data actor pool) → select (concurrent Ray tasks)
         → train + evaluate (one Ray Tune trial per subset) → report

Every artifact lands at a content-hashed path (features cache, selections, trial folders) in the run's
storage (distill/store/storage.py: the output folder unless `storage.uri` names a shared path or a bucket), so a
rerun reuses what is done, a failed trial loses nothing that finished, and a driver on another machine can
continue the run from storage alone. Workers write there, never to the driver's disk; the driver keeps a copy
of what it reads in the output folder and writes the report there and to storage.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from distill import faults, preflight
from distill.config.env import secret
from distill.config.schema import ExperimentConfig, ResourcesConfig
from distill.console import run as console
from distill.data.load import TASK, Splits
from distill.errors import DistillError, describe
from distill.features import probe
from distill.features import store as featstore
from distill.features.columns import QUERY_EMBEDDING, Features, charged_seconds, text_features
from distill.features.embed import (
    EMBEDDING,
    EMBEDDING_WMEAN,
    LOSS,
    LOSS_ALONE,
    SECONDS,
    EmbedActor,
    cache_key,
    output_columns,
)
from distill.model import checkpoint as ckpt  # (`checkpoint` is a parameter name in Tune's callbacks)
from distill.model.load import load_tokenizer
from distill.model.prompt import PromptFormat
from distill.report.build import build_report
from distill.scheduling import trial_cpus
from distill.select import plugins, registry
from distill.store import artifacts, counters, outdir
from distill.store.artifacts import content_hash
from distill.store.records import FULL, HELDOUT_LOSS, Resolved, RunInfo, Scorer, TrialRecord
from distill.store.storage import SHARED_FIX, Storage, open_storage
from distill.trial.run import TrialSpec, cached_metrics, evaluated, run_trial, trial_key, trial_path, write_trial
from distill.trial.vllm import VllmGenerator
from distill.version import git_commit

# Ray reads these when it is imported: a local cluster binds 127.0.0.1 only (without the first, Ray
# rewrites 127.0.0.1 to the machine's external address), and no usage stats are sent.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

KEEP_CHECKPOINTS = 2  # per trial: the newest, and the one before in case a driver died before pointing at it
# Tune result keys of a trial's last report (numbers only: the record itself is in storage, where the trial wrote it)
FINISHED = "distill_finished"  # trials/<name>/ holds the complete record
TRAINED = "distill_trained"  # vLLM engine: trials/<name>/ holds the trained metrics and adapter, awaiting generation
TRAINED_FILE = "trained.json"  # those metrics
ADAPTER = "adapter"  # the trial's LoRA adapter folder
PUBLISHED = ("comparison", "selected", "pool_stats.json", "counters.json")  # the driver's outputs, copied to storage
NODE_CHECK_SECONDS = 120  # for every node of the cluster to answer whether it sees the run's storage
TRACKED_PACKAGES = (
    "distill",
    "ray",
    "torch",
    "transformers",
    "peft",
    "datasets",
    "faiss-cpu",
    "rouge-score",
    "bert-score",
    "numpy",
    "pandas",
)
logger = logging.getLogger(__name__)


log = logging.getLogger(__name__).info  # on the console through distill.console.run.ConsoleHandler


def stage(name: str):
    """One line per stage with its wall time (distill/console/run.py draws it)."""
    return console.current().stage(name)


def run(cfg: ExperimentConfig, verbose: bool = False, checked: preflight.Checked | None = None) -> list[dict]:
    """Run one experiment end to end; returns the report rows. Ray's and Tune's own output goes to
    <out>/logs/run.log unless `verbose`.

    Everything a user can get wrong (folder, data, budget, model) fails in preflight.check, before the
    output folder is touched (the CLI runs it before importing this module: `checked`); then the folder
    is locked for this run (outdir.claim) and the logs start."""
    checked = checked or preflight.check(cfg)
    out = checked.out
    with outdir.claim(out), console.session(out / "logs", verbose):  # one run at a time per output folder
        return _run(cfg, checked.storage, checked.splits, checked.resolved)


def _run(cfg: ExperimentConfig, store: Storage, splits: Splits, resolved: Resolved) -> list[dict]:
    out = store.local
    write_run_info(out, cfg, splits, resolved)
    store.push("run.json")  # first: all `distill resume <storage>` needs, wherever this driver stops
    model_path = resolved.model_path
    with ray_session(cfg.resources):
        check_nodes_see(store)
        features, embed_costs = embed_pool(cfg, splits, model_path, out, store)
        features, probe_costs = probe_pool(cfg, features, splits, model_path, out, store)
        specs = select_subsets(
            cfg,
            features,
            splits.train,
            out,
            selection_inputs_key(cfg, splits, model_path),
            {**embed_costs, **probe_costs},
            store,
        )
        run_trials(cfg, specs, splits, resolved, store)
    with stage("report"):
        rows = build_report(out, cfg.report, console=console.current().console)
        log_table_to_wandb(cfg, rows)
        for rel in PUBLISHED:
            store.push(rel)
    log(f"results in {out / 'comparison'}" + ("" if store.mirrored else f" and {store.uri}/comparison"))
    return rows


@contextlib.contextmanager
def ray_session(res: ResourcesConfig):
    """Join the cluster we run on (ray job submit / an address) or start a local one on 127.0.0.1."""
    import ray
    from ray.data import DataContext

    address = res.address or os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    dashboard = None
    if started and address:
        dashboard = ray.init(address=address, log_to_driver=True).dashboard_url
    elif started:  # address="local": never attach to a stray `ray start` cluster by accident
        # DISTILL_RAY_DASHBOARD=0 starts a local cluster without the dashboard, about 8 s sooner on 2 cores:
        # the test suite, which starts dozens, sets it (tests/conftest.py)
        dashboard_on = os.environ.get("DISTILL_RAY_DASHBOARD", "1") != "0"
        local = ray.init(
            address="local",
            num_cpus=res.num_cpus,
            include_dashboard=dashboard_on,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
        )
        dashboard = local.dashboard_url if dashboard_on else None
        log(f"Ray session folder (its logs): {local.address_info['session_dir']}")
    DataContext.get_current().enable_progress_bars = console.current().verbose  # distill's console draws its own
    context = ray.get_runtime_context()
    resources = ray.cluster_resources()
    log(
        f"Ray cluster: {resources.get('CPU', 0):.0f} CPU, {resources.get('GPU', 0):.0f} GPU"
        + (f", dashboard http://{dashboard}" if dashboard else "")
        + f" (job {context.get_job_id()})"
    )
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def check_nodes_see(store: Storage) -> None:
    """Every node of a multi-node cluster must reach the run's storage, where its trials write: one that cannot
    (a local path on the driver's disk, a node without credentials) fails here, in seconds and with the fix,
    rather than trial by trial. One tiny task per alive node looks for a marker the driver wrote (Tune checks
    the same from each trial, later). A one-node cluster is the driver's own machine: nothing to check."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    marker = store.marker()
    try:
        look = ray.remote(num_cpus=0, max_retries=0)(Storage.sees)
        refs = [
            look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                store, marker
            )
            for n in nodes
        ]
        try:
            answers = ray.get(refs, timeout=NODE_CHECK_SECONDS)
        except ray.exceptions.GetTimeoutError:
            raise DistillError(
                f"not every node of the cluster answered within {NODE_CHECK_SECONDS} s whether it sees "
                f"storage {store.uri}",
                "check the cluster's nodes (`ray status`) and run again",
            ) from None
    finally:
        store.delete(marker)
    blind = [(n, why) for n, why in zip(nodes, answers) if why]
    if blind:
        node, why = blind[0]
        where = f"node {node['NodeID'][:8]} at {node['NodeManagerAddress']}: {why}"
        if store.remote:
            raise DistillError(
                f"{len(blind)} of {len(nodes)} nodes cannot reach storage {store.uri} ({where})",
                "give every node credentials (its IAM role, or AWS_*/GOOGLE_* variables in the job's "
                "runtime_env env_vars) and check storage.endpoint",
            )
        raise DistillError(
            f"storage {store.uri} is a local path that {len(blind)} of {len(nodes)} nodes of the cluster "
            f"cannot see ({where}), so their trials could not write checkpoints or results",
            SHARED_FIX,
        )


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def embed_pool(
    cfg: ExperimentConfig, splits: Splits, model_path: str, out: Path, store: Storage | None = None
) -> tuple[Features, dict[str, float]]:
    """Target-model features of the pool, and of the query set when a selected method reads it (Ray Data
    actor pools), cached by content hash; returns them with the seconds of any pass beyond the shared one
    (IFD's `loss_alone`: features.charged_seconds charges them to the methods that read them)."""
    store = store or open_storage(out)
    needs = registry.needs_of(cfg.select.methods)
    with stage("embed"):
        pool = _embedded(
            cfg,
            splits.train,
            model_path,
            store,
            f"cache/features-{features_key(cfg, splits, model_path)}",
            LOSS_ALONE in needs,
        )
        log(
            f"features: {' × '.join(map(str, pool[EMBEDDING].shape))} embeddings, mean summary loss {pool[LOSS].mean():.3f}"
        )
    features = replace(
        text_features(splits.train["text"].tolist(), pool[EMBEDDING], pool[LOSS]),
        embedding_wmean=pool[EMBEDDING_WMEAN],
        loss_alone=pool.get(LOSS_ALONE),
    )
    costs = {LOSS_ALONE: float(np.sum(pool[SECONDS + LOSS_ALONE], dtype=np.float64))} if LOSS_ALONE in pool else {}
    if QUERY_EMBEDDING in needs:
        with stage(f"embed the query set ({len(splits.query)} examples)"):
            query = _embedded(
                cfg,
                splits.query,
                model_path,
                store,
                f"cache/query-{query_key(cfg, splits, model_path)}",
                loss_alone=False,
            )
        features = replace(
            features, query_embedding=query[EMBEDDING_WMEAN], query_task=splits.query[TASK].to_numpy(dtype=np.int64)
        )
    artifacts.write_json(out / "pool_stats.json", {"n_words": features.n_words.tolist()})
    return features, costs


def _embedded(
    cfg: ExperimentConfig, frame: pd.DataFrame, model_path: str, store: Storage, rel: str, loss_alone: bool
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
    actors, cpus, gpus = embed_plan(ray.cluster_resources(), cfg.embed.num_actors)
    log(f"{actors} embedding actor(s), {'1 GPU' if gpus else f'{cpus} CPU'} each, batch {cfg.embed.batch_size}")
    frame = frame.assign(row=np.arange(len(frame)))[["row", "text", "summary"]]
    frame = frame.iloc[np.argsort(-frame["text"].str.len().to_numpy(), kind="stable")]  # length-sorted: less padding
    # many small blocks: every actor stays fed, and progress advances block by block
    blocks = max(1, min(len(frame) // cfg.embed.batch_size, 16 * actors))
    # split here: Ray's own split (override_num_blocks) runs np.array_split on a DataFrame, which pandas deprecates
    parts = [frame.iloc[rows] for rows in np.array_split(np.arange(len(frame)), blocks)]
    dataset = ray.data.from_pandas(parts).map_batches(
        EmbedActor,
        fn_constructor_kwargs={
            "model_path": model_path,
            "model_cfg": cfg.model,
            "pooling": cfg.embed.pooling,
            "num_threads": cpus or None,
            "loss_alone": loss_alone,
        },
        batch_size=cfg.embed.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=actors),
        num_gpus=1 if gpus else 0,
        num_cpus=cpus or 1,
        # a dead actor (OOM kill, lost node) is restarted and its batch retried elsewhere
        max_restarts=cfg.resources.max_failures,
        max_task_retries=cfg.resources.max_failures,
    )
    with console.current().progress("embed", total=len(frame), unit="rows") as advance:
        # streamed into memory-mapped files at their rows: the driver holds one batch, never the pool
        # twice; featstore checks every row arrives exactly once before it caches anything
        stored = featstore.stream(
            _advancing(dataset.iter_batches(batch_size=None, batch_format="numpy"), advance), folder, len(frame)
        )
    store.push(rel)
    counters.bump(store.local, embeddings=len(frame))
    return stored


def _advancing(batches, advance):
    for batch in batches:
        advance(len(batch["row"]))
        yield batch


def features_key(cfg: ExperimentConfig, splits: Splits, model_path: str) -> str:
    loss_alone = LOSS_ALONE in registry.needs_of(cfg.select.methods)
    return cache_key(model_path, splits.fingerprint, cfg.model, cfg.embed.pooling, output_columns(loss_alone))


def query_key(cfg: ExperimentConfig, splits: Splits, model_path: str) -> str:
    return cache_key(model_path, splits.query_fingerprint, cfg.model, cfg.embed.pooling)


def selection_inputs_key(cfg: ExperimentConfig, splits: Splits, model_path: str) -> str:
    """What the selectors read: the features' key, plus the probe's outputs and the query set's when a
    selected method reads them (new probe settings or query files must not reuse subsets selected from the old ones)."""
    key = features_key(cfg, splits, model_path)
    extra = {}
    if wanted := probe.needed(cfg.select.methods):
        paths = probe.cache_paths(Path("cache"), model_path, splits.fingerprint, cfg)
        files = {probe.PROBE_LOSS: paths.probe.name, probe.GRAD_FEATURES: paths.grads.name}
        extra.update({name: files[name] for name in wanted})
    if QUERY_EMBEDDING in registry.needs_of(cfg.select.methods):
        extra["query"] = query_key(cfg, splits, model_path)
    return content_hash({"features": key, **extra}) if extra else key


def embed_plan(resources: dict, num_actors: int = 0) -> tuple[int, int, int]:
    """(actors, CPUs per actor, GPUs per actor): one actor per GPU, else one actor sharing the CPUs."""
    gpus = int(resources.get("GPU", 0))
    actors = num_actors or max(1, gpus)
    cpus = 0 if gpus else max(1, int(resources.get("CPU", 1)) // actors)
    return actors, cpus, 1 if gpus else 0


def probe_pool(
    cfg: ExperimentConfig, features: Features, splits: Splits, model_path: str, out: Path, store: Storage | None = None
) -> tuple[Features, dict[str, float]]:
    """Training dynamics (distill/features/probe.py) as one Ray task on a GPU when there is one, else on the
    CPUs; run only when a selected method needs them, and cached by content hash. Returns the
    features with the dynamics added, and the seconds computing each took (features.charged_seconds reads them)."""
    wanted = probe.needed(cfg.select.methods)
    if not wanted:
        return features, {}
    import ray

    store = store or open_storage(out)
    paths = probe.cache_paths(out / "cache", model_path, splits.fingerprint, cfg)
    cached = [f"cache/{path.name}" for path in (paths.probe, paths.grads)]
    with stage(f"probe ({', '.join(wanted)})"):
        for rel in cached:
            store.fetched(rel)
        dynamics = probe.load_cached(paths)
        if all(name in dynamics for name in wanted):
            log(f"reusing cached {', '.join(p.name for p in (paths.probe, paths.grads) if p.exists())}")
        else:
            _, cpus, gpus = embed_plan(ray.cluster_resources(), 1)
            task = ray.remote(num_cpus=cpus or 1, num_gpus=gpus)(probe.compute_dynamics)
            fresh = ray.get(
                task.remote(
                    model_path,
                    cfg,
                    splits.train["text"].tolist(),
                    splits.train["summary"].tolist(),
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


def select_subsets(
    cfg: ExperimentConfig,
    features: Features,
    pool: pd.DataFrame,
    out: Path,
    features_key: str,
    costs: dict[str, float] | None = None,
    store: Storage | None = None,
) -> list[TrialSpec]:
    """Every (method, seed) selector as a concurrent Ray task over one shared copy of the features.

    Subsets are cached under <out>/cache by (features, method, params, k, seed): a rerun selects nothing twice.
    A method's selection time includes what computing the features only it reads took (`costs`, seconds per
    feature from embed_pool and probe_pool: the probe stage, IFD's extra pass)."""
    import ray

    k = preflight.budget(cfg, len(features))
    store = store or open_storage(out)
    specs = []
    with stage(f"select {len(cfg.select.methods)} method(s) × {cfg.seeds} seed(s), k={k} of {len(features)}"):
        shipped = plugins.load(cfg.select.plugins)  # user selector files travel with each task as source text
        plugin_sources = [p.source or p.module for p in shipped]  # an edited plugin invalidates its selections
        rels = {
            (
                m,
                s,
            ): f"cache/selection-{selection_key(features_key, m, cfg.select.params.get(m, {}), k, s, plugin_sources)}.json"
            for m in cfg.select.methods
            for s in range(cfg.seeds)
        }
        paths = {job: out / rel for job, rel in rels.items()}
        todo = [job for job, rel in rels.items() if not store.fetched(rel)]
        if todo:
            here = _cache_node()  # tasks there map the features cache file: ship its path, not its bytes
            features_ref = ray.put(features if here != "DEFAULT" else features.by_value())
            task = ray.remote(num_cpus=1, scheduling_strategy=here)(_remote_select)
            refs = {(m, s): task.remote(m, features_ref, k, s, cfg.select.params.get(m, {}), shipped) for m, s in todo}
            failed = {}
            for (method, seed), ref in refs.items():  # every finished selection is cached, even when another failed
                try:
                    indices, seconds = ray.get(ref)
                except DistillError as exc:  # a selector that raised or answered wrongly (Ray's RayTaskError of it)
                    failed[f"selection {method} (seed {seed})"] = exc
                    continue
                artifacts.write_json(paths[method, seed], {"indices": indices.tolist(), "seconds": seconds})
                store.push(rels[method, seed])
            counters.bump(out, selections=len(todo) - len(failed))
            if failed:
                _, cause, where = first_failure(failed)
                raise DistillError(cause.problem, f"{cause.fix} ({where})")
        log(f"  {len(paths) - len(todo)} selection(s) reused from {store.uri}/cache")
        for (method, seed), path in paths.items():
            cached = json.loads(path.read_text())
            indices, seconds = np.asarray(cached["indices"], dtype=np.int64), cached["seconds"]
            extra = charged_seconds(registry.get(method).needs, costs or {})
            write_subset(out, method, seed, pool, indices, features)
            specs.append(TrialSpec(f"{method}-s{seed}", method, seed, tuple(int(i) for i in indices), seconds + extra))
            log(
                f"  {method} (seed {seed}): {len(indices)} examples in {seconds:.2f}s"
                + (f" (+ {extra:.1f}s computing the features it reads)" if extra else "")
            )
    if cfg.include_baseline:
        specs += [TrialSpec(f"{FULL}-s{s}", FULL, s, tuple(range(len(pool))), 0.0) for s in range(cfg.seeds)]
    return specs


def _cache_node():
    """Pin selector tasks to the driver's node, where the memory-mapped features cache is, when it
    offers CPUs; else ("DEFAULT": e.g. a head with --num-cpus 0) they run anywhere on a by-value copy."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    cpus = next((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["NodeID"] == node), 0)
    return NodeAffinitySchedulingStrategy(node, soft=False) if cpus >= 1 else "DEFAULT"


def selection_key(features_key: str, method: str, params: dict, k: int, seed: int, plugin_sources: list[str]) -> str:
    return content_hash(
        {
            "features": features_key,
            "method": method,
            "params": params,
            "k": k,
            "seed": seed,
            **({"plugins": plugin_sources} if plugin_sources else {}),
        }
    )


def _remote_select(
    name: str, features: Features, k: int, seed: int, params: dict, shipped: list[plugins.Plugin]
) -> tuple[np.ndarray, float]:
    plugins.install(shipped)  # this worker may be on a node without the user's plugin files
    start = time.perf_counter()
    indices = registry.select(name, features, k, seed, **params)
    return indices, time.perf_counter() - start


def write_subset(
    out: Path, method: str, seed: int, pool: pd.DataFrame, indices: np.ndarray, features: Features
) -> None:
    """selected/<method>.jsonl (first seed) or <method>-seed<S>.jsonl: the chosen rows, reusable outside distill."""
    path = out / "selected" / (f"{method}.jsonl" if seed == 0 else f"{method}-seed{seed}.jsonl")
    rows = []
    for i in indices:
        row = pool.iloc[int(i)]
        rows.append(
            {
                "index": int(i),
                "id": row["id"],
                "title": row["title"],
                "text": row["text"],
                "summary": row["summary"],
                "n_words": int(features.n_words[i]),
            }
        )
    artifacts.write_jsonl(path, rows)


def run_trials(
    cfg: ExperimentConfig, specs: list[TrialSpec], splits: Splits, resolved: Resolved, store: Storage
) -> None:
    """One Ray Tune trial per subset, written to trials/<name> in storage by its node and copied into the output
    folder; finished trials (same content hash) are reused."""
    from ray import tune

    out = store.local
    gpus = (
        cfg.resources.gpus_per_trial if cfg.resources.gpus_per_trial is not None else (1.0 if cluster_gpus() else 0.0)
    )
    keys = {s.name: trial_key(s, cfg, resolved, splits.fingerprint) for s in specs}
    todo = [
        s
        for s in specs
        if not store.fetched(trial_path(s.name), lambda d, k=keys[s.name]: cached_metrics(d, k) is not None)
    ]
    cpus = plan_cpus(cfg.resources, len(todo), gpus)
    log(
        f"{len(specs) - len(todo)} trial(s) reused from {store.uri}/trials, {len(todo)} to run "
        f"({gpus:g} GPU, {'/'.join(f'{c:g}' for c in sorted(set(cpus)))} CPU each)"
    )
    # trials an earlier driver left unfinished continue from their newest checkpoint
    resume = {
        s.name: store.path(path) for s in todo if (path := ckpt.read_pointer(store, trial_path(s.name), keys[s.name]))
    }
    if resume:
        log(f"{len(resume)} unfinished trial(s) continue from their last checkpoint: {', '.join(sorted(resume))}")
    if todo:
        with stage(f"train + evaluate {len(todo)} trial(s) with Ray Tune"):
            cpus_by_trial = {s.name: c for s, c in zip(todo, cpus)}
            trainable = tune.with_parameters(
                _trainable,
                cfg=cfg,
                pool=splits.train,
                test=splits.test,
                specs={s.name: s for s in todo},
                keys=keys,
                resolved=resolved,
                gpus=gpus,
                cpus=cpus_by_trial,
                resume=resume,
                store=store,
            )
            trained: list[str] = []  # vLLM engine: trained trials awaiting generation
            with console.current().trial_board([s.name for s in todo]) as board:
                callbacks = [_persist_trials(store, keys, trained), _trial_progress(board), *_callbacks(cfg)]
                grid = make_tuner(trainable, cpus_by_trial, cfg, gpus, store, callbacks).fit()
            failed = {f"trial {r.config['trial']}": r.error for r in grid if r.error}
        if trained:
            evaluate_with_vllm(cfg, trained, splits.test, resolved, store, gpus)
        if failed:
            raise trials_failed(failed, len(todo), out)


def trials_failed(failed: dict[str, BaseException], n_trials: int, out: Path) -> DistillError:
    """The one line for failed trials: the first one's name and its own exception, in plain text."""
    name, cause, where = first_failure(failed)
    what = cause.problem if isinstance(cause, DistillError) else describe(cause)
    fix = f"{cause.fix}; " if isinstance(cause, DistillError) else ""
    return DistillError(
        f"{len(failed)} of {n_trials} trial(s) failed; the first, {name} failed: {what}",
        f"{fix}{where}; then `python -m distill resume {out}` reuses finished trials and continues "
        "the others from their last checkpoint",
    )


def first_failure(failed: dict[str, BaseException]) -> tuple[str, BaseException, str]:
    """Write every failure's whole traceback to the run log (a Ray task's error holds the task's own traceback and
    the exception it chained from); returns the first one's name, its own exception (Ray's RayTaskError carries it
    as `cause`), and where the user finds the tracebacks, for the one-line error."""
    where = console.current().log_path  # None with --verbose: the console shows everything
    for name, error in failed.items():
        text = f"{name} failed:\n" + "".join(traceback.format_exception(error)).rstrip()
        if where:
            with open(where, "a") as run_log:
                run_log.write(text + "\n")
        else:
            logger.error(text)
    name, cause = next(iter(failed.items()))
    while isinstance(getattr(cause, "cause", None), BaseException):
        cause = cause.cause
    return name, cause, f"the traceback is in {where}" if where else "the traceback is printed above"


def plan_cpus(res: ResourcesConfig, n_trials: int, gpus: float) -> list[float]:
    """CPUs per queued trial (distill.scheduling): CPU-only trials of the last round share the idle CPUs."""
    import ray

    if gpus or not res.share_idle_cpus:
        return [res.cpus_per_trial] * n_trials
    node_cpus = max(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"])
    return trial_cpus(
        n_trials, ray.cluster_resources().get("CPU", 1), res.cpus_per_trial, res.max_concurrent_trials, node_cpus
    )


def make_tuner(trainable, cpus: dict[str, float], cfg: ExperimentConfig, gpus: float, store: Storage, callbacks: list):
    """One Tune trial per name (config {"trial": name}), in queue order, each holding cpus[name] CPUs and `gpus` GPUs;
    their checkpoints go to tune/ in the run's storage."""
    from ray import tune

    return tune.Tuner(
        tune.with_resources(trainable, lambda config: {"cpu": cpus[config["trial"]], "gpu": gpus}),
        param_space={"trial": tune.grid_search(list(cpus))},
        tune_config=tune.TuneConfig(max_concurrent_trials=cfg.resources.max_concurrent_trials),
        # every node writes checkpoints straight to storage, and a retried trial, on whichever node, reads them there
        run_config=tune.RunConfig(
            name=f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=store.path("tune"),
            storage_filesystem=store.fs,
            callbacks=callbacks,
            verbose=1,
            failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
        ),
    )


def _trainable(config: dict, *, cfg, pool, test, specs, keys, resolved, gpus, cpus, resume, store) -> None:
    """Runs on whichever node Tune picks; writes its record (or, for the vLLM engine, its adapter) to storage and
    reports numbers only.

    It checkpoints through Tune as it trains, and starts from the newest checkpoint there is: this trial's own
    (a retry after a failure, `tune.get_checkpoint()`) or one an earlier driver's run left (`resume`)."""
    import torch
    from ray import tune

    torch.set_num_threads(max(1, int(cpus[config["trial"]])))
    spec = specs[config["trial"]]
    key = keys[spec.name]
    origin = tune.get_checkpoint() or (
        tune.Checkpoint(resume[spec.name], filesystem=store.fs) if spec.name in resume else None
    )
    state = None
    if origin is not None:
        with origin.as_directory() as folder:
            state = ckpt.load(Path(folder))
        log(f"{spec.name}: resuming from the checkpoint at step {state.step}")
    cadence = ckpt.Cadence(cfg.resources.checkpoint_every, cfg.resources.checkpoint_minutes)

    def on_step(step: int, steps: int, loss: float, snapshot) -> None:
        """Progress for the console's trial table every step; with a checkpoint when one is due."""
        progress = {"step": step, "steps": steps, "loss": loss}
        if cadence.due(step, steps):
            with tempfile.TemporaryDirectory() as folder:
                ckpt.save(Path(folder), snapshot(), spec.name, key)
                tune.report(progress, checkpoint=tune.Checkpoint.from_directory(folder))
            cadence.saved()
        else:
            tune.report(progress)
        faults.inject("train_step", step, spec.name)

    record = run_trial(spec, cfg, pool, test, resolved, key, gpus, state=state, on_step=on_step)
    if "adapter" in record:
        for file, data in record["adapter"].items():
            store.write_bytes(trial_path(spec.name, ADAPTER, file), base64.b64decode(data))
        store.write_json(
            trial_path(spec.name, TRAINED_FILE),
            {"metrics": record["metrics"], HELDOUT_LOSS.name: record[HELDOUT_LOSS.name]},
        )
    else:
        write_trial(store, spec.name, TrialRecord.from_dict(record))
    numbers = {k: v for k, v in record["metrics"].items() if isinstance(v, (int, float))}
    tune.report({**numbers, TRAINED if "adapter" in record else FINISHED: 1})


def _persist_trials(store: Storage, keys: dict[str, str], trained: list[str]):
    """A Tune callback that copies each finished trial's folder from storage into the output folder, whatever node
    wrote it (or, with the vLLM engine, lists the trained trial for the shared generation stage), and points the
    folder of an unfinished trial at its newest checkpoint in storage (for a later `resume`)."""
    from ray import tune

    class PersistTrials(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            name = trial.config["trial"]
            if FINISHED in result or TRAINED in result:
                counters.bump(store.local, train_steps=int(result["train_steps"] - result["resumed_from_step"]))
            if TRAINED in result:
                trained.append(name)
            elif FINISHED in result:
                store.pull(trial_path(name))
                counters.bump(store.local, trials=1)

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            name = trial.config["trial"]
            ckpt.write_pointer(store, trial_path(name), keys[name], store.relative(checkpoint.path))

    return PersistTrials()


def _trial_progress(board: console.TrialBoard):
    """A Tune callback feeding the console's trial table from Tune's own trial events."""
    from ray import tune

    class TrialProgress(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            board.started(trial.config["trial"])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "step" in result:
                board.result(trial.config["trial"], result["step"], result["steps"], result["loss"])

        def on_trial_complete(self, iteration, trials, trial, **info):
            board.finished(trial.config["trial"])

        def on_trial_error(self, iteration, trials, trial, **info):
            board.finished(trial.config["trial"], failed=True)

    return TrialProgress()


def evaluate_with_vllm(
    cfg: ExperimentConfig, trained: list[str], test: pd.DataFrame, resolved: Resolved, store: Storage, gpus: float
) -> None:
    """Generate for every trained adapter with vLLM, then score and persist each trial.

    One engine actor per GPU (one CPU engine sharing the CPUs otherwise), each serving its share of the
    adapters with per-request LoRA, each adapter fetched from storage onto the engine's node; the engines are
    killed before the scoring tasks (which hold the same resources as a trial, and write each record to
    storage) so no GPU is double-booked.
    """
    import ray

    names = sorted(trained)
    model_path = resolved.model_path
    fmt = PromptFormat(load_tokenizer(model_path), cfg.model.max_source_tokens, cfg.model.max_target_tokens)
    prompts = [fmt.encode(text).prompt for text in test["text"]]
    engines, cpus, engine_gpus = embed_plan(ray.cluster_resources())
    groups = [g for g in (names[i::engines] for i in range(engines)) if g]
    with stage(f"generate with vLLM: {len(names)} adapter(s) × {len(prompts)} prompt(s) on {len(groups)} engine(s)"):
        engine = ray.remote(num_gpus=engine_gpus, num_cpus=cpus or 1)(StoredAdapterEngine)
        actors = [engine.remote(cfg, model_path, len(fmt.prefix) + len(fmt.suffix)) for _ in groups]
        outputs = ray.get([a.generate_stored.remote(prompts, store, g) for a, g in zip(actors, groups)])
        for actor in actors:
            ray.kill(actor)
    generated = {name: result for output in outputs for name, result in output.items()}
    with stage(f"score {len(names)} trial(s)"):
        task = ray.remote(num_gpus=gpus, num_cpus=cfg.resources.cpus_per_trial)(_score_trial)
        ray.get([task.remote(store, n, test, *generated[n], resolved.scorer, cfg.eval.batch_size, gpus) for n in names])
        for name in names:
            store.pull(trial_path(name))
        counters.bump(store.local, trials=len(names))


class StoredAdapterEngine(VllmGenerator):
    """The vLLM engine, fetching each trial's adapter from storage onto its own node first."""

    def generate_stored(
        self, prompts: list[list[int]], store: Storage, names: list[str]
    ) -> dict[str, tuple[list[str], float]]:
        with tempfile.TemporaryDirectory(prefix="distill-adapters-") as tmp:
            folders = {name: Path(tmp) / name for name in names}
            for name, folder in folders.items():
                store.download(trial_path(name, ADAPTER), folder)
            return self.generate(prompts, folders)


def _score_trial(
    store: Storage,
    name: str,
    test: pd.DataFrame,
    generated: list[str],
    generate_seconds: float,
    scorer: Scorer,
    batch_size: int,
    gpus: float,
) -> None:
    """A vLLM-generated trial's scores (a Ray task): its complete record, written to storage from this node."""
    trained = store.read_json(trial_path(name, TRAINED_FILE))
    write_trial(
        store,
        name,
        evaluated(
            trained["metrics"],
            test,
            trained[HELDOUT_LOSS.name],
            generated,
            generate_seconds,
            "vllm",
            scorer,
            batch_size,
            gpus,
        ),
    )


def _callbacks(cfg: ExperimentConfig) -> list:
    """A W&B logger (offline unless configured online) when enabled and a key is present; never required."""
    if not cfg.wandb.enabled:
        return []
    key = secret("WANDB_API_KEY")
    if not key and cfg.wandb.online:
        raise DistillError(
            "wandb.online is set but WANDB_API_KEY is not", "export WANDB_API_KEY or set wandb.online: false"
        )
    if importlib.util.find_spec("wandb") is None:
        raise DistillError(
            "wandb.enabled is set but the wandb package is not installed",
            "install the extra (DISTILL_EXTRAS=dev,wandb scripts/setup.sh) or set wandb.enabled: false",
        )
    from ray.air.integrations.wandb import WandbLoggerCallback

    return [WandbLoggerCallback(project=cfg.wandb.project, group=cfg.name, api_key=key, mode=cfg.wandb.mode)]


def log_table_to_wandb(cfg: ExperimentConfig, rows: list[dict]) -> None:
    """The comparison table as a W&B Table in the experiment's group (when W&B is enabled)."""
    if not cfg.wandb.enabled:
        return
    import wandb

    columns = sorted({key for row in rows for key, value in row.items() if not isinstance(value, (list, dict))})
    run = wandb.init(
        project=cfg.wandb.project,
        group=cfg.name,
        name=f"{cfg.name}-report",
        job_type="report",
        mode=cfg.wandb.mode,
        dir=cfg.output_dir,
    )
    run.log({"comparison": wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])})
    run.finish()


def write_run_info(out: Path, cfg: ExperimentConfig, splits: Splits, resolved: Resolved) -> None:
    """Everything needed to reproduce the run from its folder (no secrets: config holds none): the config as
    the user gave it, and beside it what was resolved from it."""
    info = RunInfo(
        name=cfg.name,
        mode=cfg.mode,
        model=cfg.model.name,
        model_path=resolved.model_path,
        test_model=resolved.test_model,
        eval_engine=resolved.engine,
        dataset=splits.source,
        data_fingerprint=splits.fingerprint,
        pool_size=len(splits.train),
        test_size=len(splits.test),
        fraction=cfg.select.fraction,
        seeds=cfg.seeds,
        bertscore_model=resolved.scorer.label,
        git_commit=git_commit(),
        lock=lock_hash(),
        python=platform.python_version(),
        platform=platform.platform(),
        versions=_versions(),
        config=asdict(cfg),
    )
    artifacts.write_json(out / "run.json", info.to_dict(), indent=2, sort_keys=True)


def lock_hash() -> str | None:
    """sha256 of the lock file scripts/setup.sh built this environment from (None for any other install)."""
    record = Path(sys.prefix) / ".distill-lock"  # `sha256sum <lock>`, written by setup.sh
    return record.read_text().split()[0] if record.exists() else None


def _versions() -> dict[str, str]:
    found = {}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found
