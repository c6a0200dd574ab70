"""One experiment end to end: the stage order, and nothing else. Each stage's Ray work is in its own module:

    data → embed (features.py: Ray Data actor pool) → probe (features.py: one Ray task, when a method needs it)
         → select (selection.py: concurrent Ray tasks) → train + evaluate (tune.py: one Ray Tune trial per subset;
           generation.py: shared vLLM engines) [→ with --until-decided, adaptive.py: verdicts, then select + train +
           evaluate more seeds for the undecided methods, look after look] → report (distill/report/)

Every artifact lands at a content-hashed path (features cache, selections, trial folders) in the run's
storage (distill/store/storage.py: the output folder unless `storage.uri` names a shared path or a bucket), so a
rerun reuses what is done, a failed trial loses nothing that finished, and a driver on another machine can
continue the run from storage alone. Workers write there, never to the driver's disk; the driver keeps a copy
of what it reads in the output folder and writes the report there and to storage.
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import asdict
from pathlib import Path

from distill.config.load import config_hash
from distill.config.schema import ExperimentConfig, ModelConfig, PromptConfig
from distill.config.sections import FeatureSettings, TrialSettings
from distill.console import run as console
from distill.console.run import stage
from distill.data.load import Splits
from distill.model.load import load_tokenizer
from distill.model.prompt import PromptFormat
from distill.report.build import build_report
from distill.runtime import adaptive, preflight
from distill.runtime.features import SHARED, embed_pool, probe_pool
from distill.runtime.selection import select_subsets, selection_inputs_key
from distill.runtime.session import check_nodes_see, ray_session
from distill.runtime.tune import log_table_to_wandb, run_trials, trial_keys
from distill.select import plugins
from distill.store import artifacts, outdir
from distill.store.records import Resolved, RunInfo
from distill.store.storage import Storage
from distill.trial import metrics as user_metric
from distill.trial.run import TrialSpec
from distill.version import _versions, git_commit, lock_hash

log = logging.getLogger(__name__).info  # on the console through distill.console.run.ConsoleHandler

PUBLISHED = ("comparison", "selected", "pool_stats.json", "counters.json")  # the driver's outputs, copied to storage


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
    features_in, trials_in = FeatureSettings.of(cfg), TrialSettings.of(cfg)  # what the stages receive of `cfg`
    shipped = plugins.load(cfg.select.plugins)  # your metrics' plugins: their sources key the trials, which get them
    keys: dict[str, str] = {}  # every trial of the run → its content key (run.json's list; grows with adaptive looks)
    with ray_session(cfg.resources, {"distill_run": cfg.name, "distill_config_hash": config_hash(cfg)}):
        check_nodes_see(store)
        features, embed_costs = embed_pool(
            cfg.name, features_in, cfg.resources.max_failures, splits, model_path, out, store
        )
        embed_seconds = embed_costs[SHARED]  # what computing it cost, also when the cache was reused
        features, probe_costs = probe_pool(features_in, features, splits, model_path, out, store)
        key, costs = selection_inputs_key(features_in, splits, model_path), {**embed_costs, **probe_costs}

        def select(pairs: list[tuple[str, int]] | None = None) -> list[TrialSpec]:
            return select_subsets(
                cfg.name,
                cfg.select,
                cfg.seeds,
                cfg.include_baseline,
                features,
                splits.train,
                out,
                key,
                costs,
                store,
                pairs,
            )

        def train(specs: list[TrialSpec]) -> None:
            """The trials of `specs`, once run.json lists them as the run's own (the report takes exactly these)."""
            keys.update(trial_keys(trials_in, shipped, specs, splits, resolved))
            write_run_info(out, cfg, splits, resolved, keys, embed_seconds)
            store.push("run.json")
            run_trials(cfg.name, trials_in, cfg.resources, cfg.wandb, shipped, specs, splits, resolved, store, keys)

        specs = select()
        train(specs)
        if cfg.adaptive.enabled:  # more seeds for the undecided methods, look after look

            def look() -> list[dict]:
                with stage("verdicts"):
                    return build_report(out, cfg.report, console=console.current().console)

            adaptive.until_decided(
                cfg.adaptive, cfg.seeds, len(specs), look(), lambda pairs: train(select(pairs)), look
            )
    with stage("report"):
        rows = build_report(out, cfg.report, console=console.current().console)
        log_table_to_wandb(cfg.wandb, cfg.name, cfg.output_dir, rows)
        for rel in PUBLISHED:
            store.push(rel)
    log(f"results in {out / 'comparison'}" + ("" if store.mirrored else f" and {store.uri}/comparison"))
    return rows


def prompt_record(prompt: PromptConfig, model: ModelConfig, splits: Splits, model_path: str) -> dict:
    """The prompt as resolved for this data and model (style, instruction, template, truncation side), and the
    first training example's prompt as the model sees it, with each turn's content left as <role content>."""
    fmt = PromptFormat(
        load_tokenizer(model_path), prompt, splits.format, model.max_source_tokens, model.max_target_tokens
    )
    turns = [
        {"role": t["role"], "content": f"<{t['role']} content>"} for t in json.loads(splits.train["turns"].iloc[0])
    ]
    return {**asdict(fmt.cfg), "rendered": fmt.render(turns)}


def write_run_info(
    out: Path,
    cfg: ExperimentConfig,
    splits: Splits,
    resolved: Resolved,
    trials: dict[str, str] | None = None,
    embed_seconds: float | None = None,
) -> None:
    """Everything needed to reproduce the run from its folder (no secrets: config holds none): the config as
    the user gave it, and beside it what was resolved from it; once selected, the run's trials (name → key) and
    what the shared embedding stage took."""
    info = RunInfo(
        name=cfg.name,
        mode=cfg.mode,
        model=cfg.model.name,
        model_path=resolved.model_path,
        test_model=resolved.test_model,
        eval_engine=resolved.engine,
        precision=resolved.precision,
        dataset=splits.source,
        data_format=splits.format,
        prompt=prompt_record(cfg.prompt, cfg.model, splits, resolved.model_path),
        data_fingerprint=splits.fingerprint,
        pool_size=len(splits.train),
        test_size=len(splits.test),
        fraction=cfg.select.fraction,
        seeds=cfg.seeds,
        user_metrics=[asdict(user_metric.get(name).metric) for name in cfg.eval.metrics],
        bertscore_model=resolved.scorer.label,
        git_commit=git_commit(),
        lock=lock_hash(),
        python=platform.python_version(),
        platform=platform.platform(),
        versions=_versions(),
        config=asdict(cfg),
        trials=trials,
        embed_seconds=embed_seconds,
    )
    artifacts.write_json(out / "run.json", info.to_dict(), indent=2, sort_keys=True)
