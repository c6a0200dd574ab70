"""The trials: one Ray Tune trial per subset (its trainable, resources, checkpoints, retries) and the W&B
callback; the callbacks that persist each finished trial and feed the console's trial table: runtime/callbacks.py.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
from pathlib import Path

from distill import faults
from distill.config.env import secret
from distill.config.schema import ResourcesConfig, WandbConfig
from distill.config.sections import TrialSettings
from distill.console import run as console
from distill.console.run import stage
from distill.data.load import Splits
from distill.errors import DistillError, describe
from distill.model import checkpoint as ckpt  # (`checkpoint` is a parameter name in Tune's callbacks)
from distill.runtime import metrics
from distill.runtime.generation import evaluate_with_vllm
from distill.runtime.scheduling import trial_cpus
from distill.runtime.session import cluster_gpus, first_failure
from distill.select import plugins
from distill.store.records import Resolved
from distill.store.storage import Storage
from distill.trial.run import (
    ADAPTER,
    TRAINED_FILE,
    TrainedTrial,
    TrialSpec,
    cached_metrics,
    run_trial,
    trial_key,
    trial_path,
    write_trial,
)

log = logging.getLogger(__name__).info  # on the console through distill.console.run.ConsoleHandler

KEEP_CHECKPOINTS = 2  # per trial: the newest, and the one before in case a driver died before pointing at it


def run_trials(
    run: str,
    settings: TrialSettings,
    resources: ResourcesConfig,
    wandb: WandbConfig,
    shipped: list[plugins.Plugin],
    specs: list[TrialSpec],
    splits: Splits,
    resolved: Resolved,
    store: Storage,
    keys: dict[str, str],
) -> None:
    """One Ray Tune trial per subset of the run named `run`, written to trials/<name> in storage by its node and
    copied into the output folder; finished trials (same content key, `keys` from trial_keys) are reused.
    `shipped`: the plugins that register your metrics (select.plugins, loaded once by the pipeline), sent to the
    trials as source."""
    from ray import tune

    from distill.runtime.callbacks import FINISHED, TRAINED, PersistTrials, TrialProgress

    out = store.local
    gpus = resources.gpus_per_trial if resources.gpus_per_trial is not None else (1.0 if cluster_gpus() else 0.0)
    todo = [
        s
        for s in specs
        if not store.fetched(trial_path(s.name), lambda d, k=keys[s.name]: cached_metrics(d, k) is not None)
    ]
    cpus = plan_cpus(resources, len(todo), gpus)
    each = f" ({gpus:g} GPU, {'/'.join(f'{c:g}' for c in sorted(set(cpus)))} CPU each)" if todo else ""
    log(f"{len(specs) - len(todo)} trial(s) reused from {store.uri}/trials, {len(todo)} to run{each}")
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
                settings=settings,
                resources=resources,
                pool=splits.train,
                test=splits.test,
                data_format=splits.format,
                shipped=shipped,
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
                progress = TrialProgress(board, metrics.TrialStates(run, len(todo)), run, len(splits.test))
                callbacks = [PersistTrials(store, keys, trained), progress, *_callbacks(wandb, run)]
                grid = make_tuner(trainable, cpus_by_trial, run, resources, gpus, store, callbacks).fit()
            failed = {f"trial {r.config['trial']}": r.error for r in grid if r.error}
            # Tune takes a Ctrl-C itself: it stops the experiment and returns, its unfinished trials neither failed
            # nor with a last result that says done. The run is not done: it must not go on to a report as if it were.
            if not failed and any(not {FINISHED, TRAINED} & set(r.metrics or {}) for r in grid):
                raise KeyboardInterrupt
        if trained:
            evaluate_with_vllm(
                run, settings, resources, shipped, trained, splits.test, splits.format, resolved, store, gpus
            )
        if failed:
            raise trials_failed(failed, len(todo), out)


def trial_keys(
    settings: TrialSettings, shipped: list[plugins.Plugin], specs: list[TrialSpec], splits: Splits, resolved: Resolved
) -> dict[str, str]:
    """Each trial's content key (trial.run.trial_key), with the source of the plugins of your metrics (`shipped`):
    the keys the trials are stored under and run.json lists as the run's own."""
    sources = [p.source or p.module for p in shipped]
    return {s.name: trial_key(s, settings, resolved, splits.fingerprint, sources) for s in specs}


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


def plan_cpus(res: ResourcesConfig, n_trials: int, gpus: float) -> list[float]:
    """CPUs per queued trial (distill.runtime.scheduling): CPU-only trials of the last round share the idle CPUs."""
    import ray

    if gpus or not res.share_idle_cpus:
        return [res.cpus_per_trial] * n_trials
    node_cpus = max(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"])
    return trial_cpus(
        n_trials, ray.cluster_resources().get("CPU", 1), res.cpus_per_trial, res.max_concurrent_trials, node_cpus
    )


def make_tuner(
    trainable,
    cpus: dict[str, float],
    run: str,
    resources: ResourcesConfig,
    gpus: float,
    store: Storage,
    callbacks: list,
):
    """One Tune trial per name (config {"trial": name}), in queue order, each holding cpus[name] CPUs and `gpus` GPUs;
    their checkpoints go to tune/ in the run's storage, under the run's name."""
    from ray import tune

    return tune.Tuner(
        tune.with_resources(trainable, lambda config: {"cpu": cpus[config["trial"]], "gpu": gpus}),
        param_space={"trial": tune.grid_search(list(cpus))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=resources.max_concurrent_trials,
            trial_name_creator=_trial_name,  # Tune's table and folders name each trial as distill does
            trial_dirname_creator=_trial_name,
        ),
        # every node writes checkpoints straight to storage, and a retried trial, on whichever node, reads them there
        run_config=tune.RunConfig(
            name=f"{run}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=store.path("tune"),
            storage_filesystem=store.fs,
            callbacks=callbacks,
            verbose=1,
            failure_config=tune.FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
        ),
    )


def _trial_name(trial) -> str:
    return trial.config["trial"]


class NamedTrial:
    """Mixed into the actor Tune runs a trial in (Tune's `__mixins__` of a function trainable): the actor's repr,
    which Ray shows as its name in the dashboard's Actors page, `ray list actors --detail` and the prefix of its
    log lines, becomes "trial <method>-s<seed>" instead of the trainable function's name."""

    def setup(self, config: dict) -> None:
        self._name = f"trial {config['trial']}"
        super().setup(config)


def _trainable(
    config: dict,
    *,
    settings: TrialSettings,
    resources: ResourcesConfig,
    pool,
    test,
    data_format,
    shipped,
    specs,
    keys,
    resolved,
    gpus,
    cpus,
    resume,
    store,
) -> None:
    """Runs on whichever node Tune picks; writes its record (or, for the vLLM engine, its adapter and trained
    metrics) to storage and reports numbers only. `resources`: how often it checkpoints.

    It checkpoints through Tune as it trains, and starts from the newest checkpoint there is: this trial's own
    (a retry after a failure, `tune.get_checkpoint()`) or one an earlier driver's run left (`resume`)."""
    import torch
    from ray import tune

    from distill.runtime.callbacks import FINISHED, TRAINED

    plugins.install(shipped)  # this node may not have the files of the plugins that register your metrics
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
    cadence = ckpt.Cadence(resources.checkpoint_every, resources.checkpoint_minutes)

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

    outcome = run_trial(spec, settings, pool, test, resolved, key, data_format, gpus, state=state, on_step=on_step)
    trained = isinstance(outcome, TrainedTrial)
    if trained:
        for file, data in outcome.adapter.items():
            store.write_bytes(trial_path(spec.name, ADAPTER, file), data)
        store.write_json(trial_path(spec.name, TRAINED_FILE), outcome.to_dict())
    else:
        write_trial(store, spec.name, outcome)
    numbers = {k: v for k, v in outcome.metrics.to_dict().items() if isinstance(v, (int, float))}
    tune.report({**numbers, TRAINED if trained else FINISHED: 1})


_trainable.__mixins__ = (NamedTrial,)


def _callbacks(wandb: WandbConfig, run: str) -> list:
    """A W&B logger (offline unless configured online) when enabled and a key is present, grouping the trials under
    the run's name; never required."""
    if not wandb.enabled:
        return []
    key = secret("WANDB_API_KEY")
    if not key and wandb.online:
        raise DistillError(
            "wandb.online is set but WANDB_API_KEY is not", "export WANDB_API_KEY or set wandb.online: false"
        )
    if importlib.util.find_spec("wandb") is None:
        raise DistillError(
            "wandb.enabled is set but the wandb package is not installed",
            "install the extra (DISTILL_EXTRAS=dev,wandb scripts/setup.sh) or set wandb.enabled: false",
        )
    from ray.air.integrations.wandb import WandbLoggerCallback

    return [WandbLoggerCallback(project=wandb.project, group=run, api_key=key, mode=wandb.mode)]


def log_table_to_wandb(settings: WandbConfig, run: str, output_dir: str, rows: list[dict]) -> None:
    """The comparison table as a W&B Table in the run's group (when W&B is enabled); W&B's files go to `output_dir`."""
    if not settings.enabled:
        return
    import wandb

    columns = sorted({key for row in rows for key, value in row.items() if not isinstance(value, (list, dict))})
    logged = wandb.init(
        project=settings.project,
        group=run,
        name=f"{run}-report",
        job_type="report",
        mode=settings.mode,
        dir=output_dir,
    )
    logged.log({"comparison": wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])})
    logged.finish()
