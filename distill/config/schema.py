"""The experiment's settings: typed dataclasses, one section per concern.

Sections are grouped by what a change to them affects: data, model, embed, select, probe, train and eval change
a trial's result; report rebuilds only the report; resources and storage say where and how a run computes, never
what. Every number declares its valid range here, so a typo fails in a second rather than after an hour of
embedding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, with_config

EMBEDDED_BILLSUM = "embedded:billsum"
EMBEDDED_SMOLLM2 = "embedded:smollm2-135m"
AUTOCAST_BF16 = "bfloat16-autocast"  # model.dtype: fp32 weights, bf16 matmuls in the trials (torch.autocast)


def section(cls: type) -> type:
    """A config section: a dataclass whose unknown keys are errors when a job is validated, and whose
    numbers are finite (an `inf` epoch count or a `nan` budget is refused like any other bad value)."""
    return with_config(ConfigDict(extra="forbid", allow_inf_nan=False))(dataclass(cls))


def _split_names(value: Any) -> Any:
    """'a, b' (a CLI override) → ['a', 'b']; a YAML list passes through."""
    return [name.strip() for name in value.split(",") if name.strip()] if isinstance(value, str) else value


Names = Annotated[list[str], BeforeValidator(_split_names)]  # a list that also takes 'a,b' from the command line

# Every number declares its valid range here, in the schema: pydantic refuses a value outside it when the job is
# built, before any work, and load._config_error words the refusal (key, value, range, fix). tests/config/test_config.py walks
# the schema, tries a value outside every declared range, and fails on a number declared without one.
Count = Annotated[int, Field(ge=1)]  # how many of something: at least one
NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Share = Annotated[float, Field(gt=0, le=1)]  # a share of something, in (0, 1]
Ratio = Annotated[float, Field(ge=0, le=1)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # the seeds numpy's and pandas' RandomState accept
DEFAULT_MARGIN = (
    0.02  # δ of the *equivalent* verdict, a share of random's score: a 2% change is the least worth acting on
)


DATA_FORMATS = ("summarization", "instruction", "chat")  # the layouts a row can have (distill/data/formats.py)
PROMPT_PLACEHOLDER = "{prompt}"  # where a plain prompt template puts the user content


@section
class DataConfig:
    """Where the examples come from, which layout their rows have, and how the held-out set is made.

    Every format becomes one example model: prompt turns and a target response (distill/data/formats.py)."""

    # "embedded:billsum", a Hub dataset name ("billsum"), a local .jsonl/.json/.csv/.tsv/.parquet file (the text
    # formats also gzip-compressed), or a local folder of such shards (file names such as train-*/test-* are splits).
    source: str = EMBEDDED_BILLSUM
    # auto: from the columns (messages → chat, instruction + output → instruction, text + summary → summarization)
    format: Literal["auto", *DATA_FORMATS] = "auto"  # type: ignore[valid-type]
    hub_config: str | None = None  # e.g. "billsum" for MothMalone/SLMS-KD-Benchmarks
    train_split: str = "train"  # Hub split, or value of `split_column` in a local file
    test_split: str | None = None  # None: carve the held-out set out of the train split
    split_column: str | None = None  # local files that hold several splits (e.g. SciTLDR's "split")
    text_column: str = "text"  # summarization: the document (the prompt)
    summary_column: str = "summary"  # summarization: the summary (the response)
    instruction_column: str = "instruction"  # instruction: the task (the prompt, with the input after it)
    input_column: str = "input"  # instruction: optional context for the task (a missing column: none)
    output_column: str = "output"  # instruction: the response
    messages_column: str = "messages"  # chat: a list of {role, content}; the last assistant turn is the response
    title_column: str | None = "title"
    id_column: str | None = None  # None: ids are derived from a hash of the prompt
    test_size: Count = 10  # held-out examples (taken from test_split when given, else from train)
    max_train: Annotated[int, Field(ge=2)] | None = None  # cap on the training pool, after dedup (2: one to select)
    # training examples kept out of the pool (seeded, before max_train) as the query set of query-based
    # selectors (rds_plus): never held-out examples; 0: none (rds_plus then needs select.query files)
    query_size: NonNegative = 0
    split_seed: Seed = 0


@section
class PromptConfig:
    """How an example becomes the model's input: the same in embedding, the probe, training and evaluation
    (distill/model/prompt.py). Every key changes what the model sees, so all of it is in a trial's key."""

    # auto: the model's own chat template when its tokenizer has one, else the plain template below
    style: Literal["auto", "chat", "plain"] = "auto"
    # put before the (last) user turn's content; None: the format's default (summarization: "Summarize the
    # following document in one or two sentences."; instruction and chat data carry their own)
    instruction: str | None = None
    system: str | None = None  # a system turn for every example that has none of its own
    # the plain style's template, with {prompt} where the user content goes; None: the format's default
    template: str | None = None
    # which end of an over-long prompt is cut (only user content is, never the template): auto keeps the start
    # of a document or instruction (right) and the latest turns of a chat (left)
    truncation_side: Literal["auto", "right", "left"] = "auto"
    # a response cut at model.max_target_tokens gets no EOS (most SFT libraries): training would otherwise teach
    # the model to stop mid-sentence, and the held-out loss would score that EOS
    eos_after_truncated_response: bool = False


@section
class ModelConfig:
    """The ONE target model: it embeds, it is fine-tuned, it is evaluated."""

    name: str = EMBEDDED_SMOLLM2  # embedded default, a Hub name, or a local folder
    # auto: bf16 on a GPU with bf16, else fp32 (model/load.py resolve_precision); bfloat16-autocast: bf16 matmuls
    # over fp32 weights in the trials, asked for by name (on a CPU it is faster but not faithful: performance.md)
    dtype: Literal["auto", "float32", "bfloat16", "float16", "bfloat16-autocast"] = "auto"
    load_in_8bit: bool = False  # GPU only (bitsandbytes); prepares the model for k-bit training
    max_source_tokens: Count = 256  # user-content tokens kept in the prompt (the template comes on top)
    max_target_tokens: Count = 96  # response tokens trained on and scored


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
    plugins: Names = field(default_factory=list)  # user selector files (.py) or modules: see distill/select/plugins.py
    # target-task example files for rds_plus (.jsonl/.csv/.parquet, the data's columns), one task each
    query: Names = field(default_factory=list)


@section
class ProbeConfig:
    """The training-dynamics probe (distill/features/probe.py): run only when a selected method needs it.

    A brief LoRA fine-tune (the `train` section's LoRA settings and learning rate) on a random
    `fraction` of the pool for `epochs`; every pool example's response loss is recorded at step 0 and
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
    max_new_tokens: Count = 96  # sized to real response lengths of the dataset at hand
    batch_size: Count = 8
    bertscore_model: str = "auto"  # auto: deberta-xlarge-mnli with the Hub, offline MiniLM without
    bertscore_num_layers: Count | None = None
    # auto: vLLM when it is installed and supports the model with LoRA (the log says which and why), else hf
    engine: Literal["auto", "hf", "vllm"] = "auto"
    # your own per-example metrics of each generated response (registered by a plugin: distill/trial/metrics.py)
    metrics: Names = field(default_factory=list)


@section
class ReportConfig:
    """Settings of the comparison report only: changing one rebuilds the report (`distill report`), never a trial."""

    # tested against random, per method (docs/statistics.md): every test joins one Holm family, so each metric
    # costs the others power; the first one present orders the methods and decides the recommendation
    # (distill's own: rougeL, rouge1, rouge2, bertscore_f1, heldout_loss; or yours, named in eval.metrics)
    metrics: Names = field(default_factory=lambda: ["rougeL", "bertscore_f1", "heldout_loss"])
    # δ of each metric's *equivalent* verdict, as a share of random's mean score (docs/statistics.md, Verdicts): a
    # method whose simultaneous interval lies within ±δ of random is as good as random for this purpose
    margin_rouge1: Share = DEFAULT_MARGIN
    margin_rouge2: Share = DEFAULT_MARGIN
    margin_rougeL: Share = DEFAULT_MARGIN
    margin_bertscore_f1: Share = DEFAULT_MARGIN
    margin_heldout_loss: Share = DEFAULT_MARGIN
    margins: dict[str, Share] = field(
        default_factory=dict
    )  # δ of your metrics (eval.metrics), by name; default as above


MIN_FIRST_ROUND = 2  # seeds of --until-decided's first look: with one, seed noise is unknown and nothing is decided


@section
class AdaptiveConfig:
    """`--until-decided`: more seeds only for the methods still undecided, look after look (report/sequential.py).

    The looks are fixed before the first one: the report's intervals are at α/(tests × looks) from the first look on,
    so changing `looks` or `seeds_per_look` after a run started would spend a level it did not have."""

    enabled: bool = False
    looks: Annotated[int, Field(ge=2, le=10)] = (
        3  # K, the fixed maximum: each look spends α/K (more looks, wider intervals)
    )
    seeds_per_look: Count = 2  # seeds added to each undecided method (and to random) per look
    max_trials: Count | None = None  # budget: no round starts that would take the run past this many trials


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
    """Where everything a worker writes goes, and what `distill resume` continues from (distill/store/storage.py).

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
    prompt: PromptConfig = field(default_factory=PromptConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# What each stage of a run receives of this config (the sections it reads, the ones its cache keys hash):
# distill/config/sections.py.
