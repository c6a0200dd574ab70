"""A job's config: a YAML job spec (distill/config/jobs/, package data) + command-line overrides → a validated
ExperimentConfig.

Overrides come from CLI flags (`--model`, `--fraction`, …) or generic `--set section.key=value`; a run's
run.json (`distill resume`, `distill report`) is read back the same way. pydantic's complaints become one
line naming the key and the fix.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, get_type_hints

import yaml
from pydantic import TypeAdapter, ValidationError

from distill.config.checks import validate
from distill.config.migrate import move_keys, set_key
from distill.config.schema import ExperimentConfig, ReportConfig
from distill.errors import DistillError
from distill.store.artifacts import content_hash
from distill.store.records import LEGACY_VERSION, RunInfo

JOBS_DIR = Path(__file__).resolve().parent / "jobs"  # package data: found by name after `pip install`


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


def load_job(path_or_name: str | Path) -> dict[str, Any]:
    """Read a job spec — a path, or a name in distill/config/jobs/ ('quick' → distill/config/jobs/quick.yaml) —
    with its `base:` chain applied (`resolve_bases`)."""
    path = _job_path(path_or_name)
    return resolve_bases(_read_job(path), path.parent, [path.resolve()])


def _job_path(path_or_name: str | Path) -> Path:
    """The file of a job given by path or by packaged name; a missing one is one line listing the names."""
    path = Path(path_or_name)
    if not path.exists() and not path.suffix:
        path = JOBS_DIR / f"{path_or_name}.yaml"
    if not path.exists():
        raise DistillError(
            f"job spec '{path_or_name}' not found", f"pass a YAML path or one of: {', '.join(job_names())}"
        )
    return path


def job_names() -> list[str]:
    """The packaged jobs' names, for `distill jobs` and the errors that list them."""
    return [p.stem for p in sorted(JOBS_DIR.glob("*.yaml"))]


def _read_job(path: Path) -> dict[str, Any]:
    """One job file as written (its `base:` not yet applied)."""
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


def resolve_bases(values: dict[str, Any], folder: Path, chain: list[Path]) -> dict[str, Any]:
    """A job that starts from another (`base: scitldr`): the base's settings (its own base applied first), with
    this job's merged on top, section by section; a list or a value replaces the base's. `base` names a packaged
    job or a YAML path (relative to `folder`, the job's own); `chain` is the jobs already on the way, so a
    cycle is one line rather than a recursion error."""
    if "base" not in values:
        return values
    values = dict(values)
    base = values.pop("base")
    if not isinstance(base, str) or not base:
        raise DistillError(f"job key 'base' must name a job, got {base!r}", f"use one of: {', '.join(job_names())}")
    beside = folder / base
    path = (beside if beside.suffix and beside.exists() else _job_path(base)).resolve()
    if path in chain:
        raise DistillError(
            f"job specs base on each other in a cycle: {' → '.join(p.stem for p in [*chain, path])}",
            "remove the `base:` line of one of them",
        )
    return _merge(resolve_bases(_read_job(path), path.parent, [*chain, path]), values)


def _merge(base: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """`job` over `base`: sections merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in job.items():
        below = merged.get(key)
        merged[key] = _merge(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def job_descriptions() -> dict[str, str]:
    """name → the job's one-line `description:`, for `distill jobs`."""
    return {name: str(load_job(name).get("description", "")) for name in job_names()}


def make_config(
    job: str | Path | dict[str, Any] = "quick",
    overrides: dict[str, Any] | None = None,
    plugins: list[str] | None = None,
) -> ExperimentConfig:
    """Job spec + overrides → validated ExperimentConfig. `plugins` (--plugin) are added to the job's
    select.plugins rather than replacing them, so a job's team selectors stay loaded."""
    # never edit the caller's dict; a dict's `base:` is looked up like a packaged job's
    values = resolve_bases(copy.deepcopy(job), JOBS_DIR, []) if isinstance(job, dict) else load_job(job)
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
    move_keys(
        values, migrate=True, written_in=LEGACY_VERSION
    )  # a run made before a report key moved or retired rebuilds
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
    from distill.store.storage import check_reachable, open_storage

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
        written_in=info.schema_version,
    )
    for key, value in changes.items():
        values[key] = {**(values.get(key) or {}), **value} if isinstance(value, dict) else value
    return validate(_build(values))


def config_hash(cfg: ExperimentConfig) -> str:
    """The whole config's short hash: a Ray job's metadata and a KubeRay manifest carry it, so a run on the
    dashboard is matched to its config (run.json holds the config itself)."""
    return content_hash(dataclasses.asdict(cfg))
