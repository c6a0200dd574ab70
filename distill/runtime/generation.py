"""The vLLM engine path: one engine actor per GPU generates for every trained adapter (fetched from storage), the
engines are released, then each trial is scored as a Ray task and written to storage.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from distill.config.schema import ResourcesConfig
from distill.config.sections import TrialSettings
from distill.console.run import stage
from distill.model.load import load_tokenizer
from distill.model.prompt import PromptFormat
from distill.runtime import metrics
from distill.runtime.session import embed_plan
from distill.select import plugins
from distill.store import counters
from distill.store.records import Resolved, Scorer
from distill.store.storage import Storage
from distill.trial.run import ADAPTER, TRAINED_FILE, TrainedTrial, evaluated, trial_path, write_trial
from distill.trial.vllm import VllmGenerator


def evaluate_with_vllm(
    run: str,
    settings: TrialSettings,
    resources: ResourcesConfig,
    shipped: list[plugins.Plugin],
    trained: list[str],
    test: pd.DataFrame,
    data_format: str,
    resolved: Resolved,
    store: Storage,
    gpus: float,
) -> None:
    """Generate for every trained adapter with vLLM, then score and persist each trial of the run named `run`;
    `shipped`: the plugins that register your metrics (eval.metrics), for the scoring tasks.

    One engine actor per GPU (one CPU engine sharing the CPUs otherwise), each serving its share of the
    adapters with per-request LoRA, each adapter fetched from storage onto the engine's node; the engines are
    killed before the scoring tasks (which hold the same resources as a trial, and write each record to
    storage) so no GPU is double-booked.
    """
    import ray

    names = sorted(trained)
    model_path, model = resolved.model_path, settings.model
    fmt = PromptFormat(
        load_tokenizer(model_path), settings.prompt, data_format, model.max_source_tokens, model.max_target_tokens
    )
    prompts = [fmt.encode(turns).prompt for turns in test["turns"]]
    engines, cpus, engine_gpus = embed_plan(ray.cluster_resources())
    groups = [g for g in (names[i::engines] for i in range(engines)) if g]
    with stage(f"generate with vLLM: {len(names)} adapter(s) × {len(prompts)} prompt(s) on {len(groups)} engine(s)"):
        engine = ray.remote(num_gpus=engine_gpus, num_cpus=cpus or 1)(StoredAdapterEngine)
        actors = [
            engine.options(name=f"vllm engine {i}").remote(settings, resources, model_path, max(map(len, prompts)))
            for i in range(len(groups))
        ]
        outputs = ray.get([a.generate_stored.remote(prompts, store, g) for a, g in zip(actors, groups)])
        for actor in actors:
            ray.kill(actor)
    generated = {name: result for output in outputs for name, result in output.items()}
    with stage(f"score {len(names)} trial(s)"):
        task = ray.remote(num_gpus=gpus, num_cpus=resources.cpus_per_trial)(_score_trial)
        score = {n: task.options(name=f"score trial {n}") for n in names}
        ray.get(
            [
                score[n].remote(
                    store,
                    n,
                    test,
                    *generated[n],
                    resolved.scorer,
                    settings.eval.batch_size,
                    gpus,
                    settings.eval.metrics,
                    shipped,
                )
                for n in names
            ]
        )
        for name in names:
            store.pull(trial_path(name))
            metrics.scored(run, name, len(test))
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
    user_metrics: list[str],
    shipped: list[plugins.Plugin],
) -> None:
    """A vLLM-generated trial's scores (a Ray task): its complete record, written to storage from this node. The
    plugins that register `user_metrics` travel as source (`shipped`): this node may not have their files."""
    plugins.install(shipped)
    trained = TrainedTrial.from_dict(store.read_json(trial_path(name, TRAINED_FILE)))
    write_trial(
        store,
        name,
        evaluated(
            trained.metrics,
            test,
            trained.heldout_loss,
            generated,
            generate_seconds,
            "vllm",
            scorer,
            batch_size,
            gpus,
            user_metrics,
        ),
    )
