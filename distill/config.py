"""Typed experiment configuration: dataclasses, YAML job specs, command-line overrides.

A job is a YAML file in `distill/jobs/` (package data, so an installed wheel has them) whose keys
mirror `ExperimentConfig`; overrides come from CLI flags (`--model`, `--fraction`, …) or generic
`--set section.key=value`. Everything is validated here, before any work starts, so a typo fails in
a second rather than after an hour of embedding.
This is the only module that reads the environment (secrets are read, never stored).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

import yaml
from dotenv import dotenv_values
from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, with_config

from distill.errors import DistillError
from distill.outdir import safe_name
from distill.records import LEGACY_VERSION, SCORE_KEYS, RunInfo

JOBS_DIR = Path(__file__).resolve().parent / "jobs"  # package data: found by name after `pip install`
EMBEDDED_BILLSUM = "embedded:billsum"
EMBEDDED_SMOLLM2 = "embedded:smollm2-135m"


def section(cls: type) -> type:
    """A config section: a dataclass whose unknown keys are errors when a job is validated, and whose
    numbers are finite (an `inf` epoch count or a `nan` budget is refused like any other bad value)."""
    return with_config(ConfigDict(extra="forbid", allow_inf_nan=False))(dataclass(cls))


def _split_names(value: Any) -> Any:
    """'a, b' (a CLI override) → ['a', 'b']; a YAML list passes through."""
    return [name.strip() for name in value.split(",") if name.strip()] if isinstance(value, str) else value


Names = Annotated[list[str], BeforeValidator(_split_names)]  # a list that also takes 'a,b' from the command line

# Every number declares its valid range here, in the schema: pydantic refuses a value outside it when the job is
# built, before any work, and _config_error words the refusal (key, value, range, fix). tests/test_config.py walks
# the schema, tries a value outside every declared range, and fails on a number declared without one.
Count = Annotated[int, Field(ge=1)]  # how many of something: at least one
NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Share = Annotated[float, Field(gt=0, le=1)]  # a share of something, in (0, 1]
Ratio = Annotated[float, Field(ge=0, le=1)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # the seeds numpy's and pandas' RandomState accept


@section
class DataConfig:
    """Where the documents come from and how the held-out set is made."""

    # "embedded:billsum", a Hub dataset name ("billsum"), a local .jsonl/.json/.csv/.tsv/.parquet file (the text
    # formats also gzip-compressed), or a local folder of such shards (file names such as train-*/test-* are splits).
    source: str = EMBEDDED_BILLSUM
    hub_config: str | None = None  # e.g. "billsum" for MothMalone/SLMS-KD-Benchmarks
    train_split: str = "train"  # Hub split, or value of `split_column` in a local file
    test_split: str | None = None  # None: carve the held-out set out of the train split
    split_column: str | None = None  # local files that hold several splits (e.g. SciTLDR's "split")
    text_column: str = "text"
    summary_column: str = "summary"
    title_column: str | None = "title"
    id_column: str | None = None  # None: ids are derived from a hash of the text
    test_size: Count = 10  # held-out examples (taken from test_split when given, else from train)
    max_train: Annotated[int, Field(ge=2)] | None = None  # cap on the training pool, after dedup (2: one to select)
    # training examples kept out of the pool (seeded, before max_train) as the query set of query-based
    # selectors (rds_plus): never held-out examples; 0: none (rds_plus then needs select.query files)
    query_size: NonNegative = 0
    min_text_chars: Count = 20  # an empty text or summary cannot be trained on
    min_summary_chars: Count = 5
    split_seed: Seed = 0


@section
class ModelConfig:
    """The ONE target model: it embeds, it is fine-tuned, it is evaluated."""

    name: str = EMBEDDED_SMOLLM2  # embedded default, a Hub name, or a local folder
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    load_in_8bit: bool = False  # GPU only (bitsandbytes); prepares the model for k-bit training
    max_source_tokens: Count = 256  # document tokens kept in the prompt
    max_target_tokens: Count = 96  # summary tokens trained on


@section
class EmbedConfig:
    """Target-model features computed once per (model, data, settings)."""

    batch_size: Count = 8
    num_actors: NonNegative = 0  # 0: one per GPU when there are GPUs, else one CPU actor
    pooling: Literal["mean", "last"] = "mean"


@section
class SelectConfig:
    methods: Names = field(
        default_factory=lambda: ["random", "length_diversity", "balanced_lengths", "embedding_centroid", "clustering"]
    )
    fraction: Share = 0.1  # budget as a share of the training pool
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method keyword arguments
    plugins: Names = field(default_factory=list)  # user selector files (.py) or modules: see distill/plugins.py
    # target-task example files for rds_plus (.jsonl/.csv/.parquet, the data's columns), one task each
    query: Names = field(default_factory=list)


@section
class ProbeConfig:
    """The training-dynamics probe (distill/probe.py): run only when a selected method needs it.

    A brief LoRA fine-tune (the `train` section's LoRA settings and learning rate) on a random
    `fraction` of the pool for `epochs`; every pool example's summary loss is recorded at step 0 and
    at `checkpoints` evenly spaced steps (the last one is the end). The defaults train on 10% of the
    pool for one epoch (half a quick trial's training); the two loss passes over the whole pool
    dominate the cost, about 2.4 quick trials on CPU (scripts/bench_dynamics.py). `grad_dim` and
    `grad_blocks` size the sparse random projection of the per-example LoRA gradients (gradient_match).
    """

    fraction: Share = 0.1  # share of the training pool the probe fine-tunes on
    epochs: Positive = 1.0
    checkpoints: Count = 2  # loss columns after step 0; probe_loss is n × (checkpoints + 1)
    seed: Seed = 0  # probe slice, LoRA init, projection
    batch_size: Count = 8  # examples per forward pass when recording losses
    grad_dim: Count = 8192  # projected gradient dimension
    grad_blocks: Count = 4  # non-zeros per parameter in the sparse projection; must divide grad_dim


@section
class TrainConfig:
    """LoRA fine-tuning of the target model on one subset (one Tune trial)."""

    lora_r: Count = 8
    lora_alpha: Count = 16
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05  # 1 would drop every input of the adapter
    target_modules: Names = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    learning_rate: Positive = 3e-4
    epochs: Positive = 1.0
    max_steps: Count | None = None  # cap on optimizer steps (CPU budgets)
    batch_size: Count = 4
    grad_accum: Count = 1
    warmup_ratio: Ratio = 0.1
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    gradient_checkpointing: bool = False
    auto_batch_size: bool = False  # GPU: find the largest batch that fits, back off on OOM


@section
class EvalConfig:
    generate: bool = True  # false: held-out loss only (no generation, ROUGE or BERTScore): fast sweeps
    max_new_tokens: Count = 96  # sized to real summary lengths of the dataset at hand
    batch_size: Count = 8
    bertscore_model: str = "auto"  # auto: deberta-xlarge-mnli with the Hub, offline MiniLM without
    bertscore_num_layers: Count | None = None
    # auto: vLLM when it is installed and supports the model with LoRA (the log says which and why), else hf
    engine: Literal["auto", "hf", "vllm"] = "auto"


MetricNames = Annotated[list[Literal[SCORE_KEYS]], BeforeValidator(_split_names)]  # type: ignore[valid-type]


@section
class ReportConfig:
    """Settings of the comparison report only: changing one rebuilds the report (`distill report`), never a trial."""

    # tested against random, per method (docs/statistics.md): every test joins one Holm family, so each metric
    # costs the others power; the first one present orders the methods and decides the recommendation
    metrics: MetricNames = field(default_factory=lambda: ["rougeL", "bertscore_f1", "heldout_loss"])


@section
class ResourcesConfig:
    """How a run uses the machines: never what it computes, so no setting here reruns a trial."""

    address: str | None = None  # None: RAY_ADDRESS if set (ray job submit), else a local cluster
    num_cpus: Count | None = None  # local cluster only
    gpus_per_trial: Annotated[float, Field(ge=0)] | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_trial: Positive = 1.0
    share_idle_cpus: bool = True  # CPU trials: the last, partial round of trials splits the CPUs a full round uses
    max_concurrent_trials: Count | None = None
    # Fault tolerance. These change how a run survives failures, never its numbers, so (being under `resources`)
    # they stay out of the trial and feature content hashes.
    max_failures: NonNegative = (
        2  # retries of a failed trial (from its last checkpoint) and restarts of an embedding actor
    )
    checkpoint_every: NonNegative = 0  # optimizer steps between trial checkpoints; 0: by time (checkpoint_minutes)
    checkpoint_minutes: Positive = 5.0  # at most this much training is lost to a failure when checkpoint_every is 0
    # The vLLM engine's memory and batching (greedy decoding does not depend on them).
    vllm_max_loras: Count = 8  # adapters one vLLM engine batches together (the rest wait for a free slot)
    vllm_max_num_seqs: Count = 64  # sequences a vLLM engine decodes at once
    vllm_gpu_memory_utilization: Share = 0.8  # share of a GPU's memory one vLLM engine may take
    vllm_cpu_kvcache_gib: Count = 1  # VLLM_CPU_KVCACHE_SPACE of a CPU engine


@section
class StorageConfig:
    """Where everything a worker writes goes, and what `distill resume` continues from (distill/storage.py).

    Like `resources`, it says where a run is kept, never what it computes: no content hash includes it.
    Credentials come from the environment or the node's IAM role, never from here."""

    uri: str | None = None  # None: the output folder; else a local/NFS path, s3://bucket/prefix or gs://bucket/prefix
    endpoint: str | None = None  # an S3-compatible store's URL (MinIO, Ceph, ...), e.g. http://10.0.0.5:9000
    region: str | None = None  # the S3 region; None: the bucket's own (or the endpoint's default)
    anonymous: bool = False  # connect without credentials: a GCS emulator or an open S3-compatible store


@section
class WandbConfig:
    enabled: bool = False  # also needs WANDB_API_KEY; offline mode unless `online`
    online: bool = False
    project: str = "distill"

    @property
    def mode(self) -> str:
        """wandb.init's mode."""
        return "online" if self.online else "offline"


@section
class ExperimentConfig:
    name: str = "quick"
    description: str = ""  # one line shown by `distill jobs`
    mode: Literal["validate", "quick", "baseline", "all"] = "quick"
    output_dir: str = "results"
    seeds: Count = 1
    include_baseline: bool = False  # also train on the full pool (always on in baseline/all)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The settings a trial's numbers depend on, as dotted keys (a section name: all of its keys). trial.trial_key
# hashes exactly these, plus the subset, the seed and the resolved facts (model path, data fingerprint, engine,
# BERTScore encoder). A new setting that changes a trial's result belongs here; one that does not goes to
# `report` (the report only) or `resources` (how the machines are used), and reruns nothing.
TRIAL_SETTINGS = (
    "model",  # which weights, in what precision, how much of each document and summary the prompt keeps
    "train",  # LoRA and optimiser settings, batch sizes, steps: they make the adapter
    "eval.max_new_tokens",  # where generation stops
    "eval.batch_size",  # padding within a generation (and BERTScore) batch can flip a near-tie
    "eval.generate",  # false: a loss-only trial, without generations or the scores of them
)
# Not listed: eval.engine and eval.bertscore_* are requests; what they resolve to is hashed instead (an `auto`
# that resolves the same reruns nothing). data, select, embed, probe and seeds reach a trial through its subset
# and the data fingerprint; name, description, mode, output_dir and wandb label a run; report, resources and
# storage above.

# Keys moved when the config was split by what they affect (results schema version 2): old → new.
MOVED_KEYS = {
    "eval.vllm_max_loras": "resources.vllm_max_loras",
    "eval.vllm_max_num_seqs": "resources.vllm_max_num_seqs",
    "eval.vllm_gpu_memory_utilization": "resources.vllm_gpu_memory_utilization",
    "eval.vllm_cpu_kvcache_gib": "resources.vllm_cpu_kvcache_gib",
}


def trial_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """TRIAL_SETTINGS' values in `cfg` (JSON-able), for the trial key."""
    values = {}
    for dotted in TRIAL_SETTINGS:
        node: Any = cfg
        for part in dotted.split("."):
            node = getattr(node, part)
        values[dotted] = dataclasses.asdict(node) if dataclasses.is_dataclass(node) else node
    return values


# Keys that no longer exist, and why (results schema version 3: the report's statistics are closed-form).
RETIRED_KEYS = {
    "report.bootstrap_samples": "the report no longer resamples (docs/statistics.md)",
    "eval.bootstrap_samples": "the report no longer resamples (docs/statistics.md)",
}
RETIRED_IN = 3  # the results schema version that retired them: a run.json written before it may hold them


def move_keys(values: dict[str, Any], migrate: bool, retire: bool = False) -> None:
    """Old keys (MOVED_KEYS) in a mapping of settings: moved to their new place (`migrate`: an old run.json),
    else refused with one line naming the new key (a job or an override still using one). Retired keys
    (RETIRED_KEYS) are dropped (`retire`: a run.json from before they retired), else refused likewise."""
    for old, new in MOVED_KEYS.items():
        if (found := _holding(values, old)) is None:
            continue
        if not migrate:
            raise DistillError(
                f"config key '{old}' has moved to '{new}'",
                f"rename it to '{new}' in the job YAML (or pass --set {new}=VALUE)",
            )
        set_key(values, new, found[0].pop(found[1]))
    for old, why in RETIRED_KEYS.items():
        if (found := _holding(values, old)) is None:
            continue
        if not retire:
            raise DistillError(
                f"config key '{old}' is no longer used: {why}", "delete it from the job YAML (or drop that --set)"
            )
        del found[0][found[1]]


def _holding(values: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str] | None:
    """(the section mapping, the key) when `values` sets the 'section.key' `dotted`, else None."""
    section_name, key = dotted.split(".")
    node = values.get(section_name)
    return (node, key) if isinstance(node, dict) and key in node else None


def _build(values: dict[str, Any]) -> ExperimentConfig:
    """Mapping → ExperimentConfig, type-checked and gently converted ('0.1' → 0.1) by pydantic."""
    try:
        return _adapter().validate_python(values)
    except ValidationError as exc:
        raise _config_error(exc.errors()[0]) from None


RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number", "literal_error"}


def _config_error(error: dict[str, Any]) -> DistillError:
    """pydantic's first complaint → one line naming the dotted key, and the fix."""
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]  # a list item: its list's key
    key = ".".join(loc)
    if error["type"] == "unexpected_keyword_argument":
        known = sorted(f.name for f in dataclasses.fields(_section(loc[:-1])))
        return DistillError(f"unknown config key '{key}'", f"use one of: {', '.join(known)}")
    if error["type"] == "dataclass_type":
        return DistillError(
            f"config section '{key}' must be a mapping, got {type(error['input']).__name__}",
            f"write '{key}:' followed by indented key: value lines",
        )
    if error.get("input") is None:
        return DistillError(f"config key '{key}' may not be empty", f"give '{key}' a value")
    if error["type"] in RANGE_ERRORS:
        allowed = describe_range(settings()[key])
        default = functools.reduce(getattr, loc, ExperimentConfig())
        example = ",".join(default) if isinstance(default, list) else yaml.safe_dump(default).splitlines()[0]
        return DistillError(
            f"config key '{key}' must be {allowed}, got {error['input']!r}",
            f"use {allowed}, e.g. --set {key}={example} (the default)",
        )
    reason = error["msg"][0].lower() + error["msg"][1:]
    return DistillError(
        f"config key '{key}': {reason}, got {error['input']!r}",
        f"set '{key}' in the job YAML or with --set {key}=VALUE",
    )


@functools.cache
def _adapter() -> TypeAdapter:
    """pydantic's validator (and schema) of a whole job, built once per process."""
    return TypeAdapter(ExperimentConfig)


@functools.cache
def settings() -> dict[str, dict[str, Any]]:
    """Every config key, dotted ('train.lora_r'), → its JSON schema: type, default and declared range."""
    schema = _adapter().json_schema()
    found: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for name, prop in node["properties"].items():
            if "$ref" in prop:  # a section
                walk(schema["$defs"][prop["$ref"].rsplit("/", 1)[-1]], f"{prefix}{name}.")
            else:
                found[prefix + name] = prop

    walk(schema, "")
    return found


def describe_range(prop: dict[str, Any]) -> str:
    """A setting's declared range in words: 'an integer >= 1', 'a number in (0, 1]', 'one of mean, last'."""
    options = prop.get("anyOf", [prop])
    value = next(option for option in options if option.get("type") != "null")
    if value.get("type") == "array":  # a list of choices
        return "a comma-separated list of " + ", ".join(map(str, value["items"]["enum"]))
    if "enum" in value:
        text = "one of " + ", ".join(map(str, value["enum"]))
    else:
        kind = "an integer" if value.get("type") == "integer" else "a number"
        low = (
            ("(", ">", value["exclusiveMinimum"]) if "exclusiveMinimum" in value else ("[", ">=", value.get("minimum"))
        )
        high = (
            (")", "<", value["exclusiveMaximum"]) if "exclusiveMaximum" in value else ("]", "<=", value.get("maximum"))
        )
        if low[2] is not None and high[2] is not None:
            text = f"{kind} in {low[0]}{low[2]}, {high[2]}{high[0]}"
        else:
            bound = low if low[2] is not None else high
            text = f"{kind} {bound[1]} {bound[2]}" if bound[2] is not None else kind
    return text + (" (or null)" if len(options) > 1 else "")


def _section(path: list[str]) -> type:
    """The config dataclass at a dotted path ([] → ExperimentConfig, ['train'] → TrainConfig)."""
    cls = ExperimentConfig
    for name in path:
        cls = get_type_hints(cls)[name]
    return cls


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Reject settings that cannot work, before anything runs; returns a normalised copy (the baseline
    and all modes include the full-pool baseline; baseline selects nothing), never editing `cfg`."""
    from distill import plugins  # late: the registry imports every selector module
    from distill.select import registry

    safe_name("job name", cfg.name)  # names Tune's experiment folder and the W&B group
    plugins.load(cfg.select.plugins)  # before the method names are checked: plugins add methods
    for method in cfg.select.methods:
        check_selector(registry.get(method), cfg.select.params.get(method, {}))  # unknown: names the registered ones
    for method in cfg.select.params:
        registry.get(method)
    _check_contradictions(cfg)
    validate_probe(cfg.probe)
    return normalised(cfg)


def normalised(cfg: ExperimentConfig) -> ExperimentConfig:
    """A copy of `cfg` with what its mode implies made explicit."""
    cfg = copy.deepcopy(cfg)
    if cfg.mode in ("baseline", "all"):
        cfg.include_baseline = True
    if cfg.mode == "baseline":
        cfg.select.methods = []
    return cfg


def check_selector(selector, params: dict[str, Any]) -> None:
    """A method can run here: a safe name, features the pipeline computes, parameters it accepts."""
    from distill.features import Features

    safe_name("method name", selector.name)  # names selected/<method>.jsonl and trials/<method>-s<seed>/
    computed = {f.name for f in dataclasses.fields(Features)}
    missing = [need for need in selector.needs if need not in computed]
    if missing:
        raise DistillError(
            f"method '{selector.name}' needs feature '{missing[0]}', which the pipeline does not compute",
            f"drop '{selector.name}' from select.methods; the computed features are {', '.join(sorted(computed))}",
        )
    signature = inspect.signature(selector.fn)
    try:
        signature.bind(None, 1, 0, **params)
    except TypeError as exc:
        accepted = [
            p.name
            for p in list(signature.parameters.values())[3:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        raise DistillError(
            f"select.params.{selector.name}: {exc}",
            f"{selector.name} takes " + (", ".join(accepted) if accepted else "no parameters"),
        ) from None


def _check_contradictions(cfg: ExperimentConfig) -> None:
    """Settings that are each valid but cannot all hold: one would be silently ignored."""
    from distill.data import has_splits
    from distill.features import QUERY_EMBEDDING
    from distill.select import registry

    if cfg.data.test_split and not cfg.data.split_column and not has_splits(cfg.data.source):
        raise DistillError(
            f"data.test_split '{cfg.data.test_split}' is set but {cfg.data.source} has no splits "
            "(data.split_column is null), so it would be ignored",
            "set data.split_column to the column holding the split names, or data.test_split: null",
        )
    needs_query = [m for m in cfg.select.methods if QUERY_EMBEDDING in registry.get(m).needs]
    if needs_query and not cfg.data.query_size and not cfg.select.query:
        raise DistillError(
            f"method '{needs_query[0]}' ranks the pool by similarity to target-task examples, and no "
            "query set is given",
            "hold some training examples out of the pool as the query set (--set data.query_size=20) "
            "or pass your own: --set select.query=target_examples.jsonl",
        )
    if cfg.wandb.online and not cfg.wandb.enabled:
        raise DistillError(
            "wandb.online is set but wandb.enabled is false, so nothing would be logged",
            "set wandb.enabled: true, or drop wandb.online",
        )


def validate_probe(probe: ProbeConfig) -> None:
    """The probe's settings that must agree (each one's own range is declared in ProbeConfig): checked before
    any work, not after the embedding pass."""
    if probe.grad_dim % probe.grad_blocks:
        raise DistillError(
            f"probe.grad_dim={probe.grad_dim} must be a multiple of probe.grad_blocks={probe.grad_blocks}",
            "use e.g. probe.grad_dim=8192 with probe.grad_blocks=4",
        )


def load_job(path_or_name: str | Path) -> dict[str, Any]:
    """Read a job spec: a path, or a name in distill/jobs/ ('quick' → distill/jobs/quick.yaml)."""
    path = Path(path_or_name)
    if not path.exists() and not path.suffix:
        path = JOBS_DIR / f"{path_or_name}.yaml"
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in JOBS_DIR.glob("*.yaml")))
        raise DistillError(f"job spec '{path_or_name}' not found", f"pass a YAML path or one of: {available}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DistillError(
            f"job spec {path} is not valid YAML ({str(exc).splitlines()[0]})", "fix the YAML syntax"
        ) from None
    if not isinstance(values, dict):
        raise DistillError(
            f"job spec {path} holds a {type(values).__name__}, not a mapping of settings",
            "write it as key: value lines, like jobs/quick.yaml",
        )
    return values


def job_descriptions() -> dict[str, str]:
    """name → the job's one-line `description:`, for `distill jobs`."""
    return {path.stem: str(load_job(path).get("description", "")) for path in sorted(JOBS_DIR.glob("*.yaml"))}


def set_key(values: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply one override 'section.key=value' to a nested mapping (YAML-typed value)."""
    *parents, leaf = dotted.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise DistillError(f"override '{dotted}' goes through a non-section key '{part}'", "use section.key=value")
    node[leaf] = yaml.safe_load(value) if isinstance(value, str) else value


def make_config(
    job: str | Path | dict[str, Any] = "quick",
    overrides: dict[str, Any] | None = None,
    plugins: list[str] | None = None,
) -> ExperimentConfig:
    """Job spec + overrides → validated ExperimentConfig. `plugins` (--plugin) are added to the job's
    select.plugins rather than replacing them, so a job's team selectors stay loaded."""
    values = copy.deepcopy(job) if isinstance(job, dict) else load_job(job)  # never edit the caller's dict
    for dotted, value in (overrides or {}).items():
        set_key(values, dotted, value)
    if plugins:
        select = values.get("select")
        listed = select.get("plugins") if isinstance(select, dict) else None
        listed = [] if listed is None else listed if isinstance(listed, list) else [listed]
        set_key(values, "select.plugins", [*listed, *plugins])
    move_keys(values, migrate=False)
    return validate(_build(values))


def config_from_run(output_dir: str | Path) -> ExperimentConfig:
    """The config a run was started with, from its run.json, writing to `output_dir` (wherever it now lives)."""
    path = Path(output_dir).expanduser() / "run.json"
    if not path.exists():
        raise DistillError(
            f"{path} not found: nothing to resume there",
            "pass the output directory of a run that got as far as its data stage",
        )
    return _continued(path.read_text(), path, {"output_dir": str(Path(output_dir).expanduser().resolve())})


def report_settings(output_dir: str | Path, metrics: list[str] | str | None = None) -> ReportConfig:
    """The report settings a run was started with (its run.json's `report` section; the defaults for a folder
    without one), `metrics` (`distill report --metrics`) replacing the list tested: a rebuild tests what the
    run asked for unless told otherwise."""
    path = Path(output_dir).expanduser() / "run.json"
    stored = RunInfo.from_dict(json.loads(path.read_text()), path).config.get("report") if path.is_file() else None
    values = {"report": {**(stored or {}), **({"metrics": metrics} if metrics else {})}}
    move_keys(values, migrate=True, retire=True)  # a run made before a report key moved or retired still rebuilds
    return _build(values).report


def config_from_storage(
    uri: str,
    output_dir: str | Path | None = None,
    endpoint: str | None = None,
    region: str | None = None,
    anonymous: bool = False,
) -> ExperimentConfig:
    """The config of the run kept in storage `uri` (its run.json there), continued by this driver into
    `output_dir` (default: a new folder under results/): all a machine that never saw the run needs."""
    from distill.storage import check_reachable, open_storage

    out = Path(output_dir or Path("results") / f"resumed-{time.strftime('%Y%m%d-%H%M%S')}").expanduser().resolve()
    store = open_storage(out, uri, endpoint, region, anonymous)
    check_reachable(store)
    data = store.read_bytes("run.json")
    if data is None:
        raise DistillError(
            f"{uri} holds no run.json: nothing to resume there",
            "pass the storage of a run that got as far as its data stage (with --endpoint for an S3-compatible store)",
        )
    settings = {
        "uri": store.uri,
        **({"endpoint": endpoint} if endpoint else {}),
        **({"region": region} if region else {}),
        **({"anonymous": True} if anonymous else {}),
    }
    return _continued(data, f"{uri}/run.json", {"output_dir": str(out), "storage": settings})


def _continued(run_json: str | bytes, path: str | Path, changes: dict[str, Any]) -> ExperimentConfig:
    """The config recorded in a run.json, with `changes` (where this driver keeps the run) applied."""
    try:
        info = RunInfo.from_dict(json.loads(run_json), path)
    except (json.JSONDecodeError, AttributeError, TypeError):
        info = None
    if info is None or not isinstance(info.config, dict) or not info.config:
        raise DistillError(f"{path} is not a run record of distill", "rerun the job instead of resuming it")
    values = copy.deepcopy(info.config)
    move_keys(
        values,
        migrate=info.schema_version == LEGACY_VERSION,  # a run.json from before the config split
        retire=info.schema_version < RETIRED_IN,
    )
    for key, value in changes.items():
        values[key] = {**(values.get(key) or {}), **value} if isinstance(value, dict) else value
    return validate(_build(values))


def content_hash(parts: dict[str, Any]) -> str:
    """Short, stable hash of JSON-able settings: the key of every cached artifact."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    """Machine-wide cache (converted models): $DISTILL_CACHE_DIR or ~/.cache/distill."""
    return Path(os.environ.get("DISTILL_CACHE_DIR", Path.home() / ".cache" / "distill")).expanduser()


def secret(name: str) -> str | None:
    """Read a secret (HF_TOKEN, WANDB_API_KEY) from the environment or ./.env; never log it."""
    return os.environ.get(name) or dotenv_values(".env").get(name) or None
