"""The select stage as Ray work (distill/select/): every (method, seed) is a concurrent Ray task over one shared copy
of the features; each selection is cached by content hash in the run's storage and written to selected/.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from distill.config.schema import SelectConfig
from distill.config.sections import FeatureSettings
from distill.console.run import stage
from distill.data.load import Splits
from distill.errors import DistillError, describe
from distill.features import probe
from distill.features.columns import QUERY_EMBEDDING, Features, charged_seconds
from distill.runtime import metrics, preflight
from distill.runtime.features import dynamics_needed, features_key, query_key
from distill.runtime.session import first_failure
from distill.select import plugins, registry
from distill.store import artifacts, counters
from distill.store.artifacts import content_hash
from distill.store.outdir import seeded_name
from distill.store.records import FULL
from distill.store.storage import Storage, open_storage
from distill.trial.run import TrialSpec

log = logging.getLogger(__name__).info  # on the console through distill.console.run.ConsoleHandler


def selection_inputs_key(settings: FeatureSettings, splits: Splits, model_path: str) -> str:
    """What the selectors read: the features' key, plus the probe's outputs and the query set's when a
    selected method reads them (new probe settings or query files must not reuse subsets selected from the old ones)."""
    key = features_key(settings, splits, model_path)
    extra = {}
    if wanted := dynamics_needed(settings.methods):
        paths = probe.cache_paths(Path("cache"), model_path, splits.fingerprint, settings)
        files = {probe.PROBE_LOSS: paths.probe.name, probe.GRAD_FEATURES: paths.grads.name}
        extra.update({name: files[name] for name in wanted})
    if QUERY_EMBEDDING in registry.needs_of(settings.methods):
        extra["query"] = query_key(settings, splits, model_path)
    return content_hash({"features": key, **extra}) if extra else key


def select_subsets(
    run: str,
    select: SelectConfig,
    seeds: int,
    include_baseline: bool,
    features: Features,
    pool: pd.DataFrame,
    out: Path,
    inputs_key: str,
    costs: dict[str, float] | None = None,
    store: Storage | None = None,
    pairs: list[tuple[str, int]] | None = None,
) -> list[TrialSpec]:
    """Every (method, seed) selector as a concurrent Ray task over one shared copy of the features: all of
    select.methods × range(seeds) and, with `include_baseline`, the full pool once per seed; or the given `pairs`
    (an --until-decided look: no full baseline then). `inputs_key` is what they read (selection_inputs_key); `run`
    names the run on the dashboard.

    Subsets are cached under <out>/cache by (features, method, params, k, seed): a rerun selects nothing twice.
    A method's selection time includes what computing the features only it reads took (`costs`, seconds per
    feature from embed_pool and probe_pool: the probe stage, IFD's extra pass)."""
    import ray

    k = preflight.budget(select, len(features))
    store = store or open_storage(out)
    specs = []
    jobs = pairs or [(m, s) for m in select.methods for s in range(seeds)]
    what = f"{len(jobs)} subset(s)" if pairs else f"{len(select.methods)} method(s) × {seeds} seed(s)"
    with stage(f"select {what}, k={k} of {len(features)}"):
        shipped = plugins.load(select.plugins)  # user selector files travel with each task as source text
        plugin_sources = [p.source or p.module for p in shipped]  # an edited plugin invalidates its selections
        rels = {
            (
                m,
                s,
            ): f"cache/selection-{selection_key(inputs_key, m, select.params.get(m, {}), k, s, plugin_sources)}.json"
            for m, s in jobs
        }
        paths = {job: out / rel for job, rel in rels.items()}
        todo = [job for job, rel in rels.items() if not store.fetched(rel)]
        if todo:
            here = _cache_node()  # tasks there map the features cache file: ship its path, not its bytes
            features_ref = ray.put(features if here != "DEFAULT" else features.by_value())
            task = ray.remote(num_cpus=1, scheduling_strategy=here)(_remote_select)
            refs = {
                (m, s): task.options(name=f"select {m} seed {s}").remote(
                    m, features_ref, k, s, select.params.get(m, {}), shipped
                )
                for m, s in todo
            }
            failed = {}
            for (method, seed), ref in refs.items():  # every finished selection is cached, even when another failed
                try:
                    indices, seconds = ray.get(ref)
                except Exception as exc:  # a selector that raised or answered wrongly, or its worker died
                    failed[f"selection {method} (seed {seed})"] = exc
                    metrics.selected(run, method, None)
                    continue
                metrics.selected(run, method, seconds)
                artifacts.write_json(paths[method, seed], {"indices": indices.tolist(), "seconds": seconds})
                store.push(rels[method, seed])
            counters.bump(out, selections=len(todo) - len(failed))
            if failed:
                raise failure(failed, len(todo))
        log(f"  {len(paths) - len(todo)} selection(s) reused from {store.uri}/cache")
        for (method, seed), path in paths.items():
            cached = json.loads(path.read_text())
            indices, seconds = np.asarray(cached["indices"], dtype=np.int64), cached["seconds"]
            extra = charged_seconds(registry.get(method).needs, costs or {})
            write_subset(out, method, seed, pool, indices, features)
            specs.append(
                TrialSpec(seeded_name(method, seed), method, seed, tuple(int(i) for i in indices), seconds + extra)
            )
            log(
                f"  {method} (seed {seed}): {len(indices)} examples in {seconds:.2f}s"
                + (f" (+ {extra:.1f}s computing the features it reads)" if extra else "")
            )
    if include_baseline and not pairs:
        specs += [TrialSpec(seeded_name(FULL, s), FULL, s, tuple(range(len(pool))), 0.0) for s in range(seeds)]
    return specs


def failure(failed: dict[str, BaseException], tried: int) -> DistillError:
    """One line for the selections that failed (a selector's own DistillError, any other error of its task,
    a worker that died), naming each, the first one's error and fix, and that the finished ones are kept."""
    name, cause, where = first_failure(failed)
    problem = cause.problem if isinstance(cause, DistillError) else describe(cause)
    fix = cause.fix if isinstance(cause, DistillError) else "fix the selector or drop it from select.methods"
    others = [other for other in failed if other != name]
    return DistillError(
        f"{name} failed: {problem}" + (f"; also failed: {', '.join(others)}" if others else ""),
        f"{fix}; the {tried - len(failed)} finished selection(s) are kept and a rerun reuses them ({where})",
    )


def _cache_node():
    """Pin selector tasks to the driver's node, where the memory-mapped features cache is, when it
    offers CPUs; else ("DEFAULT": e.g. a head with --num-cpus 0) they run anywhere on a by-value copy."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    cpus = next((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["NodeID"] == node), 0)
    return NodeAffinitySchedulingStrategy(node, soft=False) if cpus >= 1 else "DEFAULT"


def selection_key(inputs_key: str, method: str, params: dict, k: int, seed: int, plugin_sources: list[str]) -> str:
    """A subset's cache key: what the selectors read (`inputs_key`), the method and its params, k and the seed."""
    return content_hash(
        {
            "features": inputs_key,  # the hashed name stays "features": renaming it would re-key every cached subset
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
    """selected/<method>.jsonl (first seed) or <method>-s<S>.jsonl: the chosen rows, reusable outside distill:
    each as prompt and response and as `messages` (the prompt turns and the response as the assistant's turn,
    the chat format TRL, Axolotl and the OpenAI fine-tuning API read)."""
    path = out / "selected" / f"{method if seed == 0 else seeded_name(method, seed)}.jsonl"
    rows = []
    for i in indices:
        row = pool.iloc[int(i)]
        rows.append(
            {
                "index": int(i),
                "id": row["id"],
                "title": row["title"],
                "prompt": row["prompt"],
                "response": row["response"],
                "messages": [*json.loads(row["turns"]), {"role": "assistant", "content": row["response"]}],
                "n_words": int(features.n_words[i]),
            }
        )
    artifacts.write_jsonl(path, rows)
