"""The results contract: every file distill writes for a reader (a trial's metrics.json, run.json,
comparison/results.json) as a typed record, with the schema version it was written in.

Writers build these records and call `to_dict`; readers call `from_dict`, which checks the version:
a file from before versioning (no `schema_version`) is read as version 1 (the same fields), one from
a newer distill is refused with one line. Names the report and the trials share (the metrics, the
"random" and "full" methods) are defined here once. No heavy imports: the CLI reads these files
without loading torch or Ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import DistillError

# 2: results.json became {"schema_version", "rows"}; run.json records test_model and eval_engine, and its
#    config has the `report` section (eval.bootstrap_samples moved there) and the vLLM knobs under `resources`.
# 3: a results.json row's tests against random are per metric, in `vs_random` (docs/statistics.md): the
#    ROUGE-L-only columns rougeL_diff_vs_random, p_vs_random, p_holm, effect_size, significant, mde_rougeL,
#    mde_pct, n_needed and seeds_needed are gone.
# 4: data rows are prompt and response in any of three formats: selected/*.jsonl rows carry prompt, response and
#    messages (not text, summary); run.json records data_format and prompt (the resolved template); metrics.json
#    adds train_responses_cut and heldout_responses_cut; the config gains data.format, the instruction and chat
#    columns and the prompt section, and retires data.min_text_chars and data.min_summary_chars.
#    Each `vs_random` entry carries its verdict (better, worse, equivalent within ±δ, undecided, no claim), read from
#    an interval simultaneous over every test and look, the margin δ, that interval and its level, and the seeds
#    that would decide an undecided one; run.json's config has the `adaptive` section (--until-decided).
#    run.json records the run's own trials, `trials` (trial name → trial key): the report reads exactly those and
#    names any other trial folder it finds (an earlier run's, into the same output folder) as left out; and the
#    shared embedding stage's seconds, `embed_seconds`. A trial's metrics.json adds `train_cpu_seconds` and
#    `eval_cpu_seconds` (CPU seconds of the trial's own process): a CPU trial's time in the report is
#    select + those, so waiting for a CPU or the threads the scheduler gave it no longer count as its cost.
SCHEMA_VERSION = 4
LEGACY_VERSION = 1  # files written before versioning: the version-1 fields, no `schema_version`

RANDOM = "random"  # the method every other is compared with
FULL = "full"  # the full-pool baseline trial's method name


@dataclass(frozen=True)
class Metric:
    """A score every trial reports: its key in the files, its label for people, and which way is better."""

    name: str
    label: str
    higher_is_better: bool = True


ROUGE1 = Metric("rouge1", "ROUGE-1")
ROUGE2 = Metric("rouge2", "ROUGE-2")
ROUGE_L = Metric("rougeL", "ROUGE-L")
BERTSCORE_F1 = Metric("bertscore_f1", "BERTScore-F1")
# each held-out reference response's mean token cross-entropy under the trial's adapter (no generation needed)
HELDOUT_LOSS = Metric("heldout_loss", "held-out loss", higher_is_better=False)
# What `evaluated` averages over the held-out examples and the report averages over seeds. A new score is
# one entry here (and a column in ReportRow).
GENERATED_METRICS: tuple[Metric, ...] = (ROUGE1, ROUGE2, ROUGE_L, BERTSCORE_F1)  # absent with eval.generate false
SCORE_METRICS: tuple[Metric, ...] = (*GENERATED_METRICS, HELDOUT_LOSS)
SCORE_KEYS = tuple(m.name for m in SCORE_METRICS)
GENERATED_KEYS = tuple(m.name for m in GENERATED_METRICS)
# Every metric a report can name: distill's own, and the user's (distill/trial/metrics.py) once registered in this
# process, by the plugin that defines them or, when a report is rebuilt, from the run.json that recorded them.
_KNOWN: dict[str, Metric] = {m.name: m for m in SCORE_METRICS}


def register_metric(metric: Metric) -> None:
    """Know a user metric's label and direction; the same name defined two ways is one line."""
    known = _KNOWN.get(metric.name)
    if known is not None and known != metric:
        raise DistillError(
            f"metric '{metric.name}' is defined twice: {known} and {metric}",
            "give one of them another name (distill's own metrics' names are taken)",
        )
    _KNOWN[metric.name] = metric


def metric_named(name: str) -> Metric:
    """The Metric called `name`: distill's own or a registered user metric."""
    if name not in _KNOWN:
        raise DistillError(
            f"'{name}' is not a metric this run scored (known: {', '.join(_KNOWN)})",
            "name one of them (report.metrics, --metrics), or load the plugin that defines yours with --plugin",
        )
    return _KNOWN[name]


def check_version(data: dict[str, Any], path: Path | str) -> int:
    """The schema version `data` was written in; a version this distill cannot read is one line naming it."""
    found = data.get("schema_version", LEGACY_VERSION)
    if not isinstance(found, int) or isinstance(found, bool) or not LEGACY_VERSION <= found <= SCHEMA_VERSION:
        raise DistillError(
            f"{path} has results schema version {found!r}, but this distill reads versions "
            f"{LEGACY_VERSION} to {SCHEMA_VERSION}",
            "read it with the distill version that wrote it (see run.json's git_commit), "
            "or rerun the job into a new output directory",
        )
    return found


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of `data` that are fields of `cls` (a record ignores what it does not define)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class TrialMetrics:
    """A finished trial's metrics.json: what it trained on, what it cost, its mean scores.

    Fields other than trial, method and the scores are optional so that version-1 files (and files
    from trials of older distills that lacked some of them) still load.
    """

    trial: str
    method: str
    scores: dict[str, float]  # SCORE_METRICS name → mean over the held-out examples (flat keys on disk)
    seed: int = 0
    key: str | None = None  # the trial key (trial.run.trial_key): a rerun with the same key reuses this trial
    samples: int | None = None
    select_seconds: float | None = None
    train_seconds: float | None = None
    train_tokens: int | None = None
    train_steps: int | None = None
    train_responses_cut: int | None = None  # training responses cut at model.max_target_tokens
    heldout_responses_cut: int | None = None  # held-out references cut there (scored on their kept tokens)
    final_train_loss: float | None = None
    resumed_from_step: int | None = None
    micro_batch: int | None = None
    device: str | None = None
    precision: str | None = None  # the precision it trained, scored and generated in (model.load.resolve_precision)
    n_eval: int | None = None
    user_metrics: list[str] = field(default_factory=list)  # your metrics (eval.metrics) among the scores
    n_empty: int | None = None
    bertscore_model: str | None = None
    eval_engine: str | None = None
    generate_seconds: float | None = None
    heldout_loss_seconds: float | None = None
    eval_seconds: float | None = None
    train_cpu_seconds: float | None = None  # CPU seconds of the trial's process while it trained (version 4)
    eval_cpu_seconds: float | None = None  # ... while it evaluated here (None: a shared vLLM engine evaluated it)
    time_s: float | None = None
    gpu_seconds: float | None = None
    peak_memory_mb: float | None = None

    def get(self, name: str) -> Any:
        """A field or a score by its on-disk name (None when this trial did not record it)."""
        return self.scores.get(name) if name in SCORE_KEYS else getattr(self, name, None)

    def to_dict(self) -> dict[str, Any]:
        values = {k: v for k, v in dataclasses.asdict(self).items() if k != "scores"}
        return {"schema_version": SCHEMA_VERSION, **values, **self.scores}

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | str, trial: str | None = None) -> TrialMetrics:
        """Read a metrics.json; `trial` (its folder's name) stands in for a missing trial name."""
        check_version(data, path)
        missing = "method" if "method" not in data else None if set(SCORE_KEYS) & set(data) else ROUGE_L.name
        if missing:  # a trial scores ROUGE-L, or held-out loss alone (eval.generate false)
            raise DistillError(
                f"{path} lacks the field '{missing}'", "re-run that trial; its metrics file predates the current format"
            )
        values = _known(cls, data)
        values.setdefault("trial", trial)
        values["seed"] = values.get("seed") or 0
        scored = (*SCORE_KEYS, *values.get("user_metrics", ()))
        return cls(**values, scores={m: data[m] for m in scored if m in data})


@dataclass
class TrialRecord:
    """What one trial leaves: its metrics, and every held-out example with its prediction and scores."""

    metrics: TrialMetrics
    predictions: list[dict[str, Any]] | None  # None: a stored trial without predictions.jsonl

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics.to_dict(), "predictions": self.predictions}


@dataclass(frozen=True)
class Scorer:
    """Which BERTScore encoder to use: a Hub name or a local folder, and its layer."""

    model_type: str
    num_layers: int
    label: str  # what the report prints


@dataclass(frozen=True)
class Resolved:
    """Facts a run resolved before it started, beside (never written into) the user's config.

    The engine and the scorer change a trial's numbers, so trial keys hash them; all of them go into run.json.
    """

    model_path: str  # what from_pretrained loads (the embedded model's converted folder, a Hub name, a folder)
    engine: str  # "hf" or "vllm": what eval.engine (auto | hf | vllm) resolved to
    scorer: Scorer  # the BERTScore encoder eval.bertscore_model resolved to
    test_model: bool  # a model made for tests (model.load.is_test_model): its scores are never results
    # what model.dtype resolves to for trials on CPU nodes (model.load.resolve_precision: fp32 for `auto`, bf16
    # autocast only when asked); it changes the numbers, so trial keys hash it. GPU nodes resolve `auto`
    # themselves (bf16 where the GPU has it), and every trial records the precision it ran in.
    precision: str = "float32"


@dataclass
class RunInfo:
    """run.json: everything needed to reproduce a run from its folder (no secrets: the config holds none)."""

    name: str | None = None
    mode: str | None = None
    model: str | None = None  # as configured
    model_path: str | None = None  # as resolved
    test_model: bool = False  # version 1 did not record it: such runs read as real models
    eval_engine: str | None = None
    precision: str | None = None  # Resolved.precision: what model.dtype resolved to for CPU trials
    dataset: str | None = None
    data_format: str = "summarization"  # versions before 4 took summaries only
    prompt: dict[str, Any] = field(default_factory=dict)  # the resolved prompt section and a rendered example
    data_fingerprint: str | None = None
    pool_size: int | None = None
    test_size: int | None = None
    fraction: float | None = None
    seeds: int | None = None
    user_metrics: list[dict[str, Any]] = field(default_factory=list)  # your metrics: name, label, higher_is_better
    bertscore_model: str | None = None
    git_commit: str | None = None
    lock: str | None = None
    python: str | None = None
    platform: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # ExperimentConfig as a mapping (config.load.config_from_run)
    # trial name → trial key of every trial this run is made of, once its subsets are selected; None: not yet, or a
    # run from before version 4 (its report takes every trial in the folder)
    trials: dict[str, str] | None = None
    embed_seconds: float | None = None  # the shared embedding pass (its seconds, kept in the cache: also on reuse)
    schema_version: int = SCHEMA_VERSION  # the version the file was written in (LEGACY_VERSION: a migrated config)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "schema_version": SCHEMA_VERSION}

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | str) -> RunInfo:
        version = check_version(data, path)
        return cls(**{**_known(cls, data), "schema_version": version})


@dataclass
class VsRandom:
    """One method against random on one metric (distill/report/stats.py): the test, and what it can detect."""

    diff: float  # mean over paired seeds × held-out examples of (method − random)
    ci95: list[float] | None  # the differences the test would not reject; None: fewer than 2 examples
    p: float | None  # two-sided; None: no test (fewer than 2 examples)
    p_holm: float | None  # Holm-adjusted over every test in the report (methods × metrics)
    significant: bool | None  # p_holm < 0.05; None: no test, or one seed (seed noise unknown: no claim)
    seeds: int  # seeds both the method and random were trained with (the pairs)
    examples: int
    effect_size: float | None  # diff / SD of one per-seed, per-example difference
    mde: float | None  # smallest true |difference| this run detects with 80% power at Holm's strictest level
    mde_pct: float | None  # the MDE as a percentage of random's mean
    n_needed: int | None  # held-out examples (these seeds) that would detect diff; None: out of reach
    seeds_needed: int | None  # seeds (these examples) that would detect diff; None: one seed, or out of reach
    cheaper: str | None  # "examples" or "seeds": the cheaper of the two by the run's own timings; None: unknown
    # the decision (distill/report/verdict.py); None in files written before version 4
    verdict: str | None = None  # better | worse | equivalent | undecided | no claim
    margin: float | None = None  # δ in the metric's units (report.margin_<metric> × random's mean)
    ci_simultaneous: list[float] | None = None  # the interval the verdict was read from
    ci_level: float | None = None  # its confidence, 1 − α/(tests × looks): together they hold at 95%
    look: int | None = None  # the look (of an --until-decided run) the verdict was read at; 1 for a fixed design
    seeds_to_decide: int | None = (
        None  # undecided: seeds (these examples) that decide it with 80% power; None: out of reach
    )


@dataclass
class ReportRow:
    """One method's row of comparison/results.json (and results.csv, flattened: each CI as _lo/_hi and each
    `vs_random` entry as vs_random.<metric>.<field> columns)."""

    method: str
    samples: int
    seeds: int
    rouge1: float | None
    rouge2: float | None
    rougeL: float | None
    rougeL_ci95: list[float] | None
    bertscore_f1: float | None
    bertscore_f1_ci95: list[float] | None
    heldout_loss: float | None
    heldout_loss_ci95: list[float] | None
    user_scores: dict[str, float] | None  # your metrics (eval.metrics): name → mean over seeds; None: none scored
    vs_random_pct: float | None
    pct_of_full: float | None
    vs_random: dict[str, VsRandom] | None  # metric name → its test against random; None for random, full
    time_s: float | None
    select_seconds: float | None
    train_seconds: float | None
    eval_seconds: float | None
    gpu_seconds: float | None
    rougeL_per_gpu_hour: float | None
    rougeL_per_cpu_hour: float | None
    peak_memory_mb: float | None
    train_tokens: float | None
    n_empty: int
    n_eval: int
    device: str | None
    bertscore_model: str | None
    eval_engine: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportRow:
        """A row of any version: a column it predates reads as None (versions 1 and 2 had no `vs_random` and
        no held-out loss; their ROUGE-L-only test columns are dropped)."""
        tests = data.get("vs_random")
        vs_random = {m: VsRandom(**_known(VsRandom, v)) for m, v in tests.items()} if tests else None
        return cls(**{**{f.name: data.get(f.name) for f in dataclasses.fields(cls)}, "vs_random": vs_random})


COLUMNS = [f.name for f in dataclasses.fields(ReportRow)]  # results.json's keys, in order


def results_document(rows: list[ReportRow]) -> dict[str, Any]:
    """comparison/results.json's content."""
    return {"schema_version": SCHEMA_VERSION, "rows": [row.to_dict() for row in rows]}


def read_results(data: dict[str, Any] | list, path: Path | str) -> list[ReportRow]:
    """comparison/results.json's rows; a version-1 file is the bare list of rows."""
    if isinstance(data, list):
        return [ReportRow.from_dict(row) for row in data]
    check_version(data, path)
    return [ReportRow.from_dict(row) for row in data["rows"]]
