"""Everything a user can get wrong about a run, checked before any work and before the heavy imports.

The output folder, the storage, the data, the budget, the model and the evaluation engine are resolved here, with
no torch, Ray or model weights loaded: the CLI runs these checks first, so a typo in a path or a
budget that rounds to nothing fails in about a second, with one line naming the problem and the fix,
and the output folder is left exactly as it was. pipeline.run then does the work with what they resolved.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from distill.config.env import secret
from distill.config.schema import ExperimentConfig, SelectConfig
from distill.console import run as console
from distill.data.load import Splits, load_splits
from distill.data.remote import readable
from distill.errors import DistillError
from distill.model.fit import check_fits
from distill.model.load import is_test_model, native_bf16_cpu, resolve_model, resolve_precision
from distill.runtime.session import check_cluster_answers
from distill.store import outdir
from distill.store.records import Resolved
from distill.store.storage import Storage, check_reachable, open_storage
from distill.trial.evaluate import HUB_BERTSCORE, resolve_scorer
from distill.trial.vllm import choose_engine

# A suggested --fraction is rounded to 4 decimals (up for the smallest budget, down for the largest), so that
# the suggestion itself passes the check it comes from.
FRACTION_GRID = 10_000
HUB_CHECK_SECONDS = 5  # for the Hub to answer one metadata call; a slower answer counts as unreachable


@dataclass(frozen=True)
class Checked:
    """What a run resolved before starting: where it writes, what it reads, which models it uses."""

    out: Path
    splits: Splits
    resolved: Resolved
    storage: Storage  # where the workers write (the output folder unless storage.uri says otherwise)


def check(cfg: ExperimentConfig) -> Checked:
    """Resolve the run's inputs, failing with a DistillError on the first one that is wrong. `cfg` is
    left as it is: what was resolved (the engine, the encoder, the test-model flag) travels in `Checked`."""
    log = logging.getLogger(__name__).info  # on the console through distill.console.run.ConsoleHandler
    out = Path(cfg.output_dir).expanduser().resolve()
    outdir.check(out)  # a foreign or unwritable folder fails before any work, and is left as it was
    storage = open_storage(out, cfg.storage.uri, cfg.storage.endpoint, cfg.storage.region, cfg.storage.anonymous)
    check_reachable(storage)  # a missing bucket, a wrong endpoint, no credentials: in a second
    check_cluster_answers(cfg.resources)  # a stale RAY_ADDRESS: in seconds, not after Ray's silent 240 s
    with console.current().stage("data"):
        splits = load_splits(readable(cfg.data, cfg.storage), cfg.select.query)
        log(
            f"{splits.source}, {splits.format} format"
            + (" (detected from its columns)" if cfg.data.format == "auto" else "")
            + f": {len(splits.train)} training pool, {len(splits.test)} held out"
            + (
                f", {len(splits.query)} query examples in {splits.query['task'].nunique()} task(s)"
                if len(splits.query)
                else ""
            )
        )
    budget(cfg.select, len(splits.train))  # a budget of 0 or of the whole pool fails before any work
    with console.current().stage("model"):
        model_path = resolve_model(cfg.model.name)
        log(f"target model: {model_path}")
        test_model = is_test_model(model_path)
        if test_model:
            log("it is a test model: its scores check that the pipeline works, they are never results")
        check_fits(cfg, model_path)  # LoRA targets the model has, lengths its positions hold: before any work
        engine, why = choose_engine(cfg.eval, cfg.model, model_path)
        log(f"evaluation engine: {engine} ({why})")
        precision = resolve_precision(cfg.model, "cpu")
        if precision != cfg.model.dtype:
            why = ", not bf16 autocast: it moves held-out losses more than methods differ" if native_bf16_cpu() else ""
            log(f"trials on CPUs run in {precision} (model.dtype {cfg.model.dtype}{why})")
    scorer, why = resolve_scorer(cfg.eval, hub_reachable())
    log(f"BERTScore encoder: {scorer.label} ({why})")
    return Checked(out, splits, Resolved(model_path, engine, scorer, test_model, precision), storage)


def budget(select: SelectConfig, pool_size: int) -> int:
    """Examples each method selects; a budget that rounds to nothing or to the whole pool is an error."""
    k = round(select.fraction * pool_size)
    if select.methods and k < 1:
        raise DistillError(
            f"budget fraction {select.fraction:g} of the {pool_size}-example pool rounds to 0 examples",
            f"pass --fraction {math.ceil(FRACTION_GRID / pool_size) / FRACTION_GRID:g} or more, or use more data",
        )
    if select.methods and k >= pool_size:
        raise DistillError(
            f"budget fraction {select.fraction:g} of the {pool_size}-example pool selects all of it, "
            "so every method would train on the same data",
            f"pass --fraction {math.floor(FRACTION_GRID * (pool_size - 1) / pool_size) / FRACTION_GRID:g} or less, or run `python -m distill baseline` "
            "to fine-tune on the whole pool",
        )
    return k


def hub_reachable() -> bool:
    """Can the Hugging Face Hub be asked for files right now? (a quick metadata call)"""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        import huggingface_hub

        huggingface_hub.model_info(HUB_BERTSCORE, timeout=HUB_CHECK_SECONDS, token=secret("HF_TOKEN"))
        return True
    except Exception:  # any failure (DNS, TLS, HTTP) means: not reachable from here
        return False
