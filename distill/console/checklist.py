"""`python -m distill validate`: a pre-flight checklist for one job, in seconds.

Every item is ok / info / warn / FAIL with what was found and, when it is not ok, the fix. Only what
the chosen job needs can fail (a GPU for a bf16/8-bit/GPU-per-trial job, the Hub for a Hub model, a
W&B key for online logging): a CPU job on a machine without a GPU passes. Exit code 0 only when
nothing failed. Secrets are reported as "set" / "not set", never printed.
"""

from __future__ import annotations

import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from distill.config.env import secret
from distill.config.schema import ExperimentConfig
from distill.console.machine import (
    FAIL,
    INFO,
    OK,
    WARN,
    Item,
    check_disk,
    check_gpu_need,
    check_packages,
    check_python,
    check_ray,
    check_torch,
)
from distill.errors import DistillError


def check_hf_token(cfg: ExperimentConfig) -> list[Item]:
    from distill.data.sources import is_hub_dataset
    from distill.model.load import is_hub_model

    hub = is_hub_model(cfg.model.name) or is_hub_dataset(cfg.data.source)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    token = "set" if secret("HF_TOKEN") else "not set"
    extra = ", HF_HUB_OFFLINE=1" if offline else ""
    if secret("HF_TOKEN"):
        return [Item("HF_TOKEN", OK, f"set{extra}")]
    if not hub:
        return [Item("HF_TOKEN", INFO, f"{token}{extra}; not needed: model and data are local/embedded")]
    gated = cfg.model.name.startswith(("meta-llama/", "mistralai/", "google/gemma"))
    return [
        Item(
            "HF_TOKEN",
            FAIL if gated else WARN,
            f"{token}; {cfg.model.name} is a gated Hub model" if gated else f"{token}; public Hub files only",
            "accept the model's licence on huggingface.co and export HF_TOKEN=... (or put it in .env)",
        )
    ]


def check_data(cfg: ExperimentConfig) -> list[Item]:
    from distill.data.load import load_splits
    from distill.data.remote import readable

    start = time.perf_counter()
    try:
        splits = load_splits(readable(cfg.data, cfg.storage), cfg.select.query)
    except DistillError as exc:
        return [Item("dataset", FAIL, exc.problem, exc.fix)]
    return [
        Item(
            "dataset",
            OK,
            f"{splits.source}: {len(splits.train)} training pool, {len(splits.test)} held out "
            f"({time.perf_counter() - start:.1f}s)",
        )
    ]


def check_model(cfg: ExperimentConfig) -> list[Item]:
    """Resolve the target model and load its config + tokenizer (not the weights); then the same fit checks a
    run makes before any work (model/fit.py), each one an item."""
    from distill.model.fit import misfits, model_config
    from distill.model.load import load_tokenizer, resolve_model

    start = time.perf_counter()
    try:
        path = resolve_model(cfg.model.name)
        config = model_config(path)
        tokenizer = load_tokenizer(path)
    except DistillError as exc:
        return [Item("model", FAIL, exc.problem, exc.fix)]
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", "?")
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", "?")
    items = [
        Item(
            "model",
            OK,
            f"{cfg.model.name} → {config.model_type}, {layers} layers × {hidden} hidden, "
            f"vocab {len(tokenizer)} ({time.perf_counter() - start:.1f}s)",
        )
    ]
    return items + [Item(m.item, FAIL, m.error.problem, m.error.fix) for m in misfits(cfg, config)]


def check_storage(cfg: ExperimentConfig) -> list[Item]:
    """The run's storage can be written from here (a bucket, its endpoint, this machine's credentials)."""
    from distill.store.storage import check_reachable, open_storage

    try:
        store = open_storage(
            Path(cfg.output_dir), cfg.storage.uri, cfg.storage.endpoint, cfg.storage.region, cfg.storage.anonymous
        )
        check_reachable(store)
    except DistillError as exc:
        return [Item("storage", FAIL, exc.problem, exc.fix)]
    if store.mirrored:
        return [
            Item(
                "storage",
                INFO,
                "the output folder (a cluster whose nodes share no disk needs --storage "
                "s3://bucket/prefix, gs://... or a shared path)",
            )
        ]
    return [Item("storage", OK, f"{store.uri}: writable from here (every node is checked when the run starts)")]


def check_wandb(cfg: ExperimentConfig) -> list[Item]:
    key = "set" if secret("WANDB_API_KEY") else "not set"
    if not cfg.wandb.enabled:
        return [Item("W&B", INFO, f"disabled (wandb.enabled: false); WANDB_API_KEY {key}")]
    try:
        have = version("wandb")
    except PackageNotFoundError:
        return [
            Item(
                "W&B",
                FAIL,
                "wandb.enabled but the wandb package is not installed",
                "DISTILL_EXTRAS=dev,wandb scripts/setup.sh (or set wandb.enabled: false)",
            )
        ]
    if cfg.wandb.online and key == "not set":
        return [
            Item(
                "W&B",
                FAIL,
                "wandb.online but WANDB_API_KEY is not set",
                "export WANDB_API_KEY=... (or put it in .env), or set wandb.online: false for offline runs",
            )
        ]
    mode = "online" if cfg.wandb.online else "offline (sync later with `wandb sync`)"
    return [Item("W&B", OK, f"wandb {have}, project {cfg.wandb.project}, {mode}; WANDB_API_KEY {key}")]


def check_job(cfg: ExperimentConfig) -> list[Item]:
    trials = (len(cfg.select.methods) + (1 if cfg.include_baseline else 0)) * cfg.seeds
    methods = ", ".join(cfg.select.methods) or "none (full pool only)"
    return [
        Item(
            "job",
            OK,
            f"{cfg.name} (mode {cfg.mode}): {trials} trial(s) = methods [{methods}]"
            f"{' + baseline' if cfg.include_baseline else ''} × {cfg.seeds} seed(s), budget {cfg.select.fraction:g}",
        )
    ]


# ---------------------------------------------------------------------------------------------- report


def run_checks(cfg: ExperimentConfig) -> list[Item]:
    items = check_job(cfg) + check_python() + check_packages(cfg)
    torch_items, local_gpus = check_torch()
    items += torch_items
    ray_items, cluster = check_ray(cfg)
    items += ray_items
    items += check_gpu_need(cfg, local_gpus, cluster)
    items += check_hf_token(cfg) + check_data(cfg) + check_model(cfg) + check_disk(cfg) + check_storage(cfg)
    items += check_wandb(cfg)
    return items


def render(items: list[Item]) -> str:
    width = max(len(i.name) for i in items)
    lines = []
    for item in items:
        lines.append(f"[{item.status:^4}] {item.name:<{width}}  {item.detail}")
        if item.fix and item.status in (WARN, FAIL):
            lines.append(f"       {'':<{width}}  fix: {item.fix}")
    return "\n".join(lines)


def checklist(cfg: ExperimentConfig) -> int:
    """Print the checklist for `cfg`; 0 when the job has everything it needs, else 1."""
    start = time.perf_counter()
    print(
        f"distill validate: job '{cfg.name}' (mode {cfg.mode}, model {cfg.model.name}, data {cfg.data.source})",
        flush=True,
    )
    items = run_checks(cfg)
    print(render(items))
    failed = [i.name for i in items if i.status == FAIL]
    warned = [i.name for i in items if i.status == WARN]
    took = time.perf_counter() - start
    if failed:
        print(f"NOT READY: {len(failed)} check(s) failed ({', '.join(failed)}); {len(warned)} warning(s); {took:.1f}s")
        return 1
    print(f"READY: job '{cfg.name}' has everything it needs ({len(warned)} warning(s)); {took:.1f}s")
    return 0
