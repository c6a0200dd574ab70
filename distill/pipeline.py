"""Ray orchestration — the only module that talks to Ray. It composes the plain stages:

    data → model → embed (Ray Data actor pool) → select (concurrent Ray tasks)
         → train + evaluate (one Ray Tune trial per subset) → report

Every artifact lands under the output directory at a content-hashed path (features cache, trial
folders), so a rerun reuses what is done and a failed trial loses nothing that finished.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from distill import artifacts, outdir
from distill import checkpoint as ckpt  # (`checkpoint` is a parameter name in Tune's callbacks)
from distill import console, counters, faults, featstore, plugins, preflight, probe, report
from distill.config import ExperimentConfig, ResourcesConfig, content_hash, secret
from distill.data import Splits
from distill.embed import EmbedActor, cache_key
from distill.errors import DistillError
from distill.evaluate import Scorer
from distill.features import Features, text_features
from distill.generate_vllm import VllmGenerator, write_adapter
from distill.models import load_tokenizer
from distill.prompt import PromptFormat
from distill.scheduling import trial_cpus
from distill.select import registry
from distill.trial import BASELINE, TrialSpec, cached_metrics, evaluated, run_trial, trial_key, write_trial
from distill.version import git_commit

# Ray reads these when it is imported: a local cluster binds 127.0.0.1 only (without the first, Ray
# rewrites 127.0.0.1 to the machine's external address), and no usage stats are sent.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

KEEP_CHECKPOINTS = 2  # per trial: the newest, and the one before in case a driver died before pointing at it
RECORD = "distill_record"  # Tune result key carrying a trial's full record (metrics + predictions) as JSON
TRACKED_PACKAGES = ("distill", "ray", "torch", "transformers", "peft", "datasets", "faiss-cpu", "rouge-score",
                    "bert-score", "numpy", "pandas")


def log(message: str) -> None:
    console.current().log(message)


def stage(name: str):
    """One line per stage with its wall time (distill/console.py draws it)."""
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
        return _run(cfg, out, checked.splits, checked.model_path, checked.scorer)


def _run(cfg: ExperimentConfig, out: Path, splits: Splits, model_path: str, scorer: Scorer) -> list[dict]:
    write_run_info(out, cfg, splits, model_path, scorer)
    with ray_session(cfg.resources):
        features = embed_pool(cfg, splits, model_path, out)
        features, probe_seconds = probe_pool(cfg, features, splits, model_path, out)
        specs = select_subsets(cfg, features, splits.train, out, selection_inputs_key(cfg, splits, model_path),
                               probe_seconds)
        run_trials(cfg, specs, splits, model_path, scorer, out)
    with stage("report"):
        rows = report.build_report(out, bootstrap_samples=cfg.eval.bootstrap_samples, console=console.current().console)
        log_table_to_wandb(cfg, rows)
    log(f"results in {out / 'comparison'}")
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
        local = ray.init(address="local", num_cpus=res.num_cpus, include_dashboard=True,
                         dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1", log_to_driver=True)
        dashboard = local.dashboard_url
        log(f"Ray session folder (its logs): {local.address_info['session_dir']}")
    DataContext.get_current().enable_progress_bars = console.current().verbose  # distill's console draws its own
    context = ray.get_runtime_context()
    resources = ray.cluster_resources()
    log(f"Ray cluster: {resources.get('CPU', 0):.0f} CPU, {resources.get('GPU', 0):.0f} GPU"
        + (f", dashboard http://{dashboard}" if dashboard else "") + f" (job {context.get_job_id()})")
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def embed_pool(cfg: ExperimentConfig, splits: Splits, model_path: str, out: Path) -> Features:
    """Target-model embeddings + summary loss for the pool (Ray Data actor pool), cached by content hash."""
    from ray.data import ActorPoolStrategy

    import ray

    path = out / "cache" / f"features-{features_key(cfg, splits, model_path)}"
    with stage("embed"):
        if featstore.intact(path):
            log(f"reusing cached features {path.name}")
            embeddings, loss = featstore.load(path)
        else:
            actors, cpus, gpus = embed_plan(ray.cluster_resources(), cfg.embed.num_actors)
            log(f"{actors} embedding actor(s), {'1 GPU' if gpus else f'{cpus} CPU'} each, batch {cfg.embed.batch_size}")
            frame = splits.train.assign(row=np.arange(len(splits.train)))[["row", "text", "summary"]]
            frame = frame.iloc[np.argsort(-frame["text"].str.len().to_numpy(), kind="stable")]  # length-sorted: less padding
            # many small blocks: every actor stays fed, and progress advances block by block
            blocks = max(1, min(len(frame) // cfg.embed.batch_size, 16 * actors))
            # split here: Ray's own split (override_num_blocks) runs np.array_split on a DataFrame, which pandas deprecates
            parts = [frame.iloc[rows] for rows in np.array_split(np.arange(len(frame)), blocks)]
            dataset = ray.data.from_pandas(parts).map_batches(
                EmbedActor, fn_constructor_kwargs={"model_path": model_path, "model_cfg": cfg.model,
                                                   "pooling": cfg.embed.pooling, "num_threads": cpus or None},
                batch_size=cfg.embed.batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=actors),
                num_gpus=1 if gpus else 0, num_cpus=cpus or 1,
                # a dead actor (OOM kill, lost node) is restarted and its batch retried elsewhere
                max_restarts=cfg.resources.max_failures, max_task_retries=cfg.resources.max_failures)
            with console.current().progress("embed", total=len(frame), unit="rows") as advance:
                # streamed into memory-mapped files at their rows: the driver holds one batch, never the pool
                # twice; featstore checks every pool row arrives exactly once before it caches anything
                embeddings, loss = featstore.stream(_advancing(dataset.iter_batches(batch_size=None, batch_format="numpy"),
                                                               advance), path, len(frame))
            counters.bump(out, embeddings=len(frame))
        log(f"features: {embeddings.shape[0]} × {embeddings.shape[1]} embeddings, mean summary loss {loss.mean():.3f}")
    features = text_features(splits.train["text"].tolist(), embeddings, loss)
    artifacts.write_json(out / "pool_stats.json", {"n_words": features.n_words.tolist()})
    return features


def _advancing(batches, advance):
    for batch in batches:
        advance(len(batch["row"]))
        yield batch


def features_key(cfg: ExperimentConfig, splits: Splits, model_path: str) -> str:
    return cache_key(model_path, splits.fingerprint, cfg.model, cfg.embed.pooling)


def selection_inputs_key(cfg: ExperimentConfig, splits: Splits, model_path: str) -> str:
    """What the selectors read: the features' key, plus the probe's outputs when a selected method
    reads them (new probe settings must not reuse subsets selected from the old ones)."""
    key = features_key(cfg, splits, model_path)
    wanted = probe.needed(cfg.select.methods)
    if not wanted:
        return key
    paths = probe.cache_paths(Path("cache"), model_path, splits.fingerprint, cfg)
    files = {probe.PROBE_LOSS: paths.probe.name, probe.GRAD_FEATURES: paths.grads.name}
    return content_hash({"features": key, **{name: files[name] for name in wanted}})


def embed_plan(resources: dict, num_actors: int = 0) -> tuple[int, int, int]:
    """(actors, CPUs per actor, GPUs per actor): one actor per GPU, else one actor sharing the CPUs."""
    gpus = int(resources.get("GPU", 0))
    actors = num_actors or max(1, gpus)
    cpus = 0 if gpus else max(1, int(resources.get("CPU", 1)) // actors)
    return actors, cpus, 1 if gpus else 0


def probe_pool(cfg: ExperimentConfig, features: Features, splits: Splits, model_path: str,
               out: Path) -> tuple[Features, dict]:
    """Training dynamics (distill/probe.py) as one Ray task on a GPU when there is one, else on the
    CPUs; run only when a selected method needs them, and cached by content hash. Returns the
    features with the dynamics added, and what computing them cost (probe.method_seconds reads it)."""
    wanted = probe.needed(cfg.select.methods)
    if not wanted:
        return features, {}
    import ray

    paths = probe.cache_paths(out / "cache", model_path, splits.fingerprint, cfg)
    with stage(f"probe ({', '.join(wanted)})"):
        dynamics = probe.load_cached(paths)
        if all(name in dynamics for name in wanted):
            log(f"reusing cached {', '.join(p.name for p in (paths.probe, paths.grads) if p.exists())}")
        else:
            _, cpus, gpus = embed_plan(ray.cluster_resources(), 1)
            task = ray.remote(num_cpus=cpus or 1, num_gpus=gpus)(probe.compute_dynamics)
            fresh = ray.get(task.remote(model_path, cfg, splits.train["text"].tolist(), splits.train["summary"].tolist(),
                                        wanted, dynamics.get("adapter"), features.loss, cpus or None))
            probe.store(paths, fresh)
            dynamics.update(fresh)
        log("; ".join(f"{name}: {' × '.join(map(str, dynamics[name].shape))} "
                      f"({dynamics[probe.SECONDS + name]:.1f}s)" for name in wanted))
    return replace(features, **{name: dynamics[name] for name in wanted}), dynamics


def select_subsets(cfg: ExperimentConfig, features: Features, pool: pd.DataFrame, out: Path,
                   features_key: str, probe_seconds: dict | None = None) -> list[TrialSpec]:
    """Every (method, seed) selector as a concurrent Ray task over one shared copy of the features.

    Subsets are cached under <out>/cache by (features, method, params, k, seed): a rerun selects nothing twice.
    A dynamics method's selection time includes the probe stage it needed (`probe_seconds`, from probe_pool)."""
    import ray

    k = preflight.budget(cfg, len(features))
    specs = []
    with stage(f"select {len(cfg.select.methods)} method(s) × {cfg.seeds} seed(s), k={k} of {len(features)}"):
        shipped = plugins.load(cfg.select.plugins)  # user selector files travel with each task as source text
        plugin_sources = [p.source or p.module for p in shipped]  # an edited plugin invalidates its selections
        paths = {(m, s): out / "cache" / f"selection-{selection_key(features_key, m, cfg.select.params.get(m, {}), k, s, plugin_sources)}.json"
                 for m in cfg.select.methods for s in range(cfg.seeds)}
        todo = [job for job, path in paths.items() if not artifacts.intact(path)]
        if todo:
            here = _cache_node()  # tasks there map the features cache file: ship its path, not its bytes
            features_ref = ray.put(features if here != "DEFAULT" else features.by_value())
            task = ray.remote(num_cpus=1, scheduling_strategy=here)(_remote_select)
            refs = {(m, s): task.remote(m, features_ref, k, s, cfg.select.params.get(m, {}), shipped) for m, s in todo}
            for job, ref in refs.items():
                indices, seconds = ray.get(ref)
                artifacts.write_json(paths[job], {"indices": indices.tolist(), "seconds": seconds})
            counters.bump(out, selections=len(todo))
        log(f"  {len(paths) - len(todo)} selection(s) reused from {out / 'cache'}")
        for (method, seed), path in paths.items():
            cached = json.loads(path.read_text())
            indices, seconds = np.asarray(cached["indices"], dtype=np.int64), cached["seconds"]
            probed = probe.method_seconds(registry.get(method).needs, probe_seconds or {})
            write_subset(out, method, seed, pool, indices, features)
            specs.append(TrialSpec(f"{method}-s{seed}", method, seed, tuple(int(i) for i in indices), seconds + probed))
            log(f"  {method} (seed {seed}): {len(indices)} examples in {seconds:.2f}s"
                + (f" (+ {probed:.1f}s of probe stage)" if probed else ""))
    if cfg.include_baseline:
        specs += [TrialSpec(f"{BASELINE}-s{s}", BASELINE, s, tuple(range(len(pool))), 0.0) for s in range(cfg.seeds)]
    return specs


def _cache_node():
    """Pin selector tasks to the driver's node, where the memory-mapped features cache is, when it
    offers CPUs; else ("DEFAULT": e.g. a head with --num-cpus 0) they run anywhere on a by-value copy."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import ray

    node = ray.get_runtime_context().get_node_id()
    cpus = next((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["NodeID"] == node), 0)
    return NodeAffinitySchedulingStrategy(node, soft=False) if cpus >= 1 else "DEFAULT"


def selection_key(features_key: str, method: str, params: dict, k: int, seed: int, plugin_sources: list[str]) -> str:
    return content_hash({"features": features_key, "method": method, "params": params, "k": k, "seed": seed,
                         **({"plugins": plugin_sources} if plugin_sources else {})})


def _remote_select(name: str, features: Features, k: int, seed: int, params: dict,
                   shipped: list[plugins.Plugin]) -> tuple[np.ndarray, float]:
    plugins.install(shipped)  # this worker may be on a node without the user's plugin files
    start = time.perf_counter()
    indices = registry.select(name, features, k, seed, **params)
    return indices, time.perf_counter() - start


def write_subset(out: Path, method: str, seed: int, pool: pd.DataFrame, indices: np.ndarray, features: Features) -> None:
    """selected/<method>.jsonl (first seed) or <method>-seed<S>.jsonl: the chosen rows, reusable outside distill."""
    path = out / "selected" / (f"{method}.jsonl" if seed == 0 else f"{method}-seed{seed}.jsonl")
    rows = []
    for i in indices:
        row = pool.iloc[int(i)]
        rows.append({"index": int(i), "id": row["id"], "title": row["title"], "text": row["text"],
                     "summary": row["summary"], "n_words": int(features.n_words[i])})
    artifacts.write_jsonl(path, rows)


def run_trials(cfg: ExperimentConfig, specs: list[TrialSpec], splits: Splits, model_path: str, scorer: Scorer,
               out: Path) -> None:
    """One Ray Tune trial per subset, persisted under <out>/trials; finished trials (same content hash) are reused."""
    from ray import tune

    gpus = cfg.resources.gpus_per_trial if cfg.resources.gpus_per_trial is not None else (1.0 if cluster_gpus() else 0.0)
    keys = {s.name: trial_key(s, cfg, model_path, splits.fingerprint, scorer) for s in specs}
    todo = [s for s in specs if cached_metrics(out / "trials" / s.name, keys[s.name]) is None]
    cpus = plan_cpus(cfg.resources, len(todo), gpus)
    log(f"{len(specs) - len(todo)} trial(s) reused from {out / 'trials'}, {len(todo)} to run "
        f"({gpus:g} GPU, {'/'.join(f'{c:g}' for c in sorted(set(cpus)))} CPU each)")
    # trials an earlier driver left unfinished continue from their newest checkpoint
    resume = {s.name: path for s in todo if (path := ckpt.read_pointer(out / "trials" / s.name, keys[s.name]))}
    if resume:
        log(f"{len(resume)} unfinished trial(s) continue from their last checkpoint: {', '.join(sorted(resume))}")
    if todo:
        with stage(f"train + evaluate {len(todo)} trial(s) with Ray Tune"):
            cpus_by_trial = {s.name: c for s, c in zip(todo, cpus)}
            trainable = tune.with_parameters(_trainable, cfg=cfg, pool=splits.train, test=splits.test,
                                             specs={s.name: s for s in todo}, keys=keys, model_path=model_path,
                                             scorer=scorer, gpus=gpus, cpus=cpus_by_trial, resume=resume)
            trained: dict[str, dict] = {}  # vLLM engine: records of trained trials awaiting generation
            with console.current().trial_board([s.name for s in todo]) as board:
                callbacks = [_persist_trials(out, keys, trained), _trial_progress(board), *_callbacks(cfg)]
                grid = make_tuner(trainable, cpus_by_trial, cfg, gpus, out, callbacks).fit()
            failed = [str(r.error).splitlines()[0] for r in grid if r.error]
        if trained:
            evaluate_with_vllm(cfg, trained, splits.test, model_path, scorer, out, gpus)
        if failed:
            raise DistillError(f"{len(failed)} of {len(todo)} trial(s) failed, first: {failed[0][:300]}",
                               f"see the Tune logs under {out / 'tune'}; then `python -m distill resume {out}` "
                               "reuses finished trials and continues the others from their last checkpoint")


def plan_cpus(res: ResourcesConfig, n_trials: int, gpus: float) -> list[float]:
    """CPUs per queued trial (distill.scheduling): CPU-only trials of the last round share the idle CPUs."""
    import ray

    if gpus or not res.share_idle_cpus:
        return [res.cpus_per_trial] * n_trials
    node_cpus = max(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"])
    return trial_cpus(n_trials, ray.cluster_resources().get("CPU", 1), res.cpus_per_trial,
                      res.max_concurrent_trials, node_cpus)


def make_tuner(trainable, cpus: dict[str, float], cfg: ExperimentConfig, gpus: float, out: Path, callbacks: list):
    """One Tune trial per name (config {"trial": name}), in queue order, each holding cpus[name] CPUs and `gpus` GPUs."""
    from ray import tune

    return tune.Tuner(
        tune.with_resources(trainable, lambda config: {"cpu": cpus[config["trial"]], "gpu": gpus}),
        param_space={"trial": tune.grid_search(list(cpus))},
        tune_config=tune.TuneConfig(max_concurrent_trials=cfg.resources.max_concurrent_trials),
        # storage_path holds the checkpoints: a retried trial, on whichever node, must reach them (one machine:
        # this absolute path; a real cluster: NFS or cloud storage shared by every node)
        run_config=tune.RunConfig(name=f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=str(Path(out).resolve() / "tune"), callbacks=callbacks, verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS)))


def _trainable(config: dict, *, cfg, pool, test, specs, keys, model_path, scorer, gpus, cpus, resume) -> None:
    """Runs on whichever node Tune picks; reports the numbers plus the whole record for the driver.

    It checkpoints through Tune as it trains, and starts from the newest checkpoint there is: this trial's own
    (a retry after a failure, `tune.get_checkpoint()`) or one an earlier driver's run left (`resume`)."""
    import torch
    from ray import tune

    torch.set_num_threads(max(1, int(cpus[config["trial"]])))
    spec = specs[config["trial"]]
    key = keys[spec.name]
    origin = tune.get_checkpoint() or (tune.Checkpoint(resume[spec.name]) if spec.name in resume else None)
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

    record = run_trial(spec, cfg, pool, test, model_path, scorer, key, gpus, state=state, on_step=on_step)
    numbers = {k: v for k, v in record["metrics"].items() if isinstance(v, (int, float))}
    tune.report({**numbers, RECORD: json.dumps(record)})


def _persist_trials(out: Path, keys: dict[str, str], trained: dict[str, dict]):
    """A Tune callback that writes each finished trial's folder on the driver, whatever node ran it (or, with the
    vLLM engine, keeps the trained trial's record for the shared generation stage), and points the folder of an
    unfinished trial at its newest checkpoint (for a later `resume`)."""
    from ray import tune

    class PersistTrials(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if RECORD in result:
                record = json.loads(result[RECORD])
                metrics = record["metrics"]
                counters.bump(out, train_steps=metrics["train_steps"] - metrics["resumed_from_step"])
                if "adapter" in record:
                    trained[metrics["trial"]] = record
                else:
                    write_trial(out / "trials" / metrics["trial"], record)
                    counters.bump(out, trials=1)

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            name = trial.config["trial"]
            ckpt.write_pointer(out / "trials" / name, keys[name], checkpoint.path)

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


def evaluate_with_vllm(cfg: ExperimentConfig, trained: dict[str, dict], test: pd.DataFrame, model_path: str,
                       scorer: Scorer, out: Path, gpus: float) -> None:
    """Generate for every trained adapter with vLLM, then score and persist each trial.

    One engine actor per GPU (one CPU engine sharing the CPUs otherwise), each serving its share of the
    adapters with per-request LoRA; the engines are killed before the scoring tasks (which hold the same
    resources as a trial) so no GPU is double-booked.
    """
    import ray

    names = sorted(trained)
    for name in names:
        write_adapter(trained[name]["adapter"], out / "trials" / name / "adapter")
    fmt = PromptFormat(load_tokenizer(model_path), cfg.model.max_source_tokens, cfg.model.max_target_tokens)
    prompts = [fmt.encode(text).prompt for text in test["text"]]
    engines, cpus, engine_gpus = embed_plan(ray.cluster_resources())
    groups = [g for g in (names[i::engines] for i in range(engines)) if g]
    with stage(f"generate with vLLM: {len(names)} adapter(s) × {len(prompts)} prompt(s) on {len(groups)} engine(s)"):
        engine = ray.remote(num_gpus=engine_gpus, num_cpus=cpus or 1)(VllmGenerator)
        actors = [engine.remote(cfg, model_path, len(fmt.prefix) + len(fmt.suffix)) for _ in groups]
        outputs = ray.get([a.generate.remote(prompts, {n: trained[n]["adapter"] for n in g}) for a, g in zip(actors, groups)])
        for actor in actors:
            ray.kill(actor)
    generated = {name: result for output in outputs for name, result in output.items()}
    with stage(f"score {len(names)} trial(s)"):
        task = ray.remote(num_gpus=gpus, num_cpus=cfg.resources.cpus_per_trial)(evaluated)
        refs = {n: task.remote(trained[n]["metrics"], test, *generated[n], "vllm", scorer, cfg.eval.batch_size, gpus)
                for n in names}
        for name, ref in refs.items():
            write_trial(out / "trials" / name, ray.get(ref))
        counters.bump(out, trials=len(refs))


def _callbacks(cfg: ExperimentConfig) -> list:
    """A W&B logger (offline unless configured online) when enabled and a key is present; never required."""
    if not cfg.wandb.enabled:
        return []
    key = secret("WANDB_API_KEY")
    if not key and cfg.wandb.online:
        raise DistillError("wandb.online is set but WANDB_API_KEY is not", "export WANDB_API_KEY or set wandb.online: false")
    if importlib.util.find_spec("wandb") is None:
        raise DistillError("wandb.enabled is set but the wandb package is not installed",
                           "install the extra (DISTILL_EXTRAS=dev,wandb scripts/setup.sh) or set wandb.enabled: false")
    from ray.air.integrations.wandb import WandbLoggerCallback

    return [WandbLoggerCallback(project=cfg.wandb.project, group=cfg.name, api_key=key,
                                mode=cfg.wandb.mode)]


def log_table_to_wandb(cfg: ExperimentConfig, rows: list[dict]) -> None:
    """The comparison table as a W&B Table in the experiment's group (when W&B is enabled)."""
    if not cfg.wandb.enabled:
        return
    import wandb

    columns = sorted({key for row in rows for key, value in row.items() if not isinstance(value, (list, dict))})
    run = wandb.init(project=cfg.wandb.project, group=cfg.name, name=f"{cfg.name}-report", job_type="report",
                     mode=cfg.wandb.mode, dir=cfg.output_dir)
    run.log({"comparison": wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])})
    run.finish()


def write_run_info(out: Path, cfg: ExperimentConfig, splits: Splits, model_path: str, scorer: Scorer) -> None:
    """Everything needed to reproduce the run from its folder (no secrets: config holds none)."""
    info = {"name": cfg.name, "mode": cfg.mode, "model": cfg.model.name, "model_path": model_path,
            "dataset": splits.source, "data_fingerprint": splits.fingerprint, "pool_size": len(splits.train),
            "test_size": len(splits.test), "fraction": cfg.select.fraction, "seeds": cfg.seeds,
            "bertscore_model": scorer.label, "git_commit": git_commit(), "lock": lock_hash(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": _versions(), "config": asdict(cfg)}
    artifacts.write_json(out / "run.json", info, indent=2, sort_keys=True)


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

