"""Config: defaults, YAML jobs, CLI-string coercion, validation errors, secrets."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, replace

import pytest
import yaml

from distill.config.checks import validate
from distill.config.env import secret
from distill.config.load import config_from_run, make_config, settings
from distill.config.migrate import MOVED_KEYS
from distill.config.schema import ExperimentConfig
from distill.errors import DistillError
from distill.store.records import SCHEMA_VERSION


def test_defaults_validate():
    cfg = validate(ExperimentConfig())
    assert cfg.mode == "quick"
    assert 0 < cfg.select.fraction <= 1
    assert cfg.select.methods  # the default method list is non-empty and registered


def test_yaml_job_and_overrides(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("name: mine\nmode: quick\nselect:\n  fraction: 0.2\n  methods: [random]\ntrain:\n  epochs: 2\n")
    cfg = make_config(job, {"train.learning_rate": "1e-4", "data.test_size": "7"})
    assert cfg.name == "mine"
    assert cfg.select.fraction == 0.2
    assert cfg.select.methods == ["random"]
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.train.learning_rate == pytest.approx(1e-4)
    assert cfg.data.test_size == 7 and isinstance(cfg.data.test_size, int)


def test_an_override_yaml_reads_as_a_comment_stays_text_and_null_stays_null():
    """'--set prompt.system="# Be brief"' is the user's text (YAML alone drops it as a comment: null)."""
    cfg = make_config({}, {"prompt.system": "# Be brief", "data.max_train": "null"})
    assert cfg.prompt.system == "# Be brief" and cfg.data.max_train is None


def test_named_job_from_jobs_dir():
    cfg = make_config("quick")
    assert cfg.name == "quick"


def test_missing_job_names_the_available_ones():
    with pytest.raises(DistillError) as err:
        make_config("no-such-job")
    assert "no-such-job" in err.value.problem
    assert "quick" in err.value.fix


def test_cli_string_coercion():
    cfg = make_config(
        {},
        {
            "select.fraction": "0.1",
            "select.methods": "random,balanced_lengths",
            "train.gradient_checkpointing": "true",
            "seeds": "3",
            "data.max_train": "50",
        },
    )
    assert cfg.select.fraction == 0.1 and isinstance(cfg.select.fraction, float)
    assert cfg.select.methods == ["random", "balanced_lengths"]
    assert cfg.train.gradient_checkpointing is True
    assert cfg.seeds == 3
    assert cfg.data.max_train == 50


def test_coercion_of_quoted_cli_strings():
    # a value that reaches the config as a string (e.g. quoted in YAML) is still converted
    cfg = make_config(
        {
            "select": {"fraction": "0.25", "methods": "random, clustering"},
            "train": {"gradient_checkpointing": "false"},
            "wandb": {"enabled": "yes"},
        }
    )
    assert cfg.select.fraction == 0.25
    assert cfg.select.methods == ["random", "clustering"]
    assert cfg.train.gradient_checkpointing is False
    assert cfg.wandb.enabled is True


@pytest.mark.parametrize(
    "key,value", [("seeds", "many"), ("train.gradient_checkpointing", "maybe"), ("data.test_size", "2.5")]
)
def test_bad_types_name_the_key(key, value):
    with pytest.raises(DistillError) as err:
        make_config({}, {key: value})
    assert key in err.value.problem


def test_unknown_top_level_key():
    with pytest.raises(DistillError) as err:
        make_config({}, {"bogus": "1"})
    assert "'bogus'" in err.value.problem


def test_unknown_nested_key_is_named_with_its_section():
    with pytest.raises(DistillError) as err:
        make_config({}, {"train.bogus": "1"})
    assert "train.bogus" in err.value.problem
    assert "learning_rate" in err.value.fix  # lists the real keys of the section


def test_unknown_nested_key_in_yaml(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("eval:\n  max_new_token: 10\n")
    with pytest.raises(DistillError, match="eval.max_new_token"):
        make_config(job)


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.1", "nan"])
def test_fraction_outside_unit_interval(fraction):
    with pytest.raises(DistillError, match=r"select.fraction' must be a number in \(0, 1\]"):
        make_config({}, {"select.fraction": fraction})


def test_fraction_one_is_allowed():
    assert make_config({}, {"select.fraction": "1"}).select.fraction == 1.0


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(DistillError) as err:
        make_config({}, {"select.methods": "random,not_a_method"})
    assert "not_a_method" in err.value.problem
    assert "random" in err.value.fix


def test_unknown_mode_and_dtype_and_pooling():
    for override in ({"mode": "fast"}, {"model.dtype": "int4"}, {"embed.pooling": "max"}):
        with pytest.raises(DistillError):
            make_config({}, override)


def test_baseline_mode_clears_methods_and_includes_baseline():
    cfg = make_config({"mode": "baseline", "select": {"methods": ["random", "clustering"]}})
    assert cfg.select.methods == []
    assert cfg.include_baseline is True


def test_all_mode_includes_baseline_and_keeps_methods():
    cfg = make_config({"mode": "all", "select": {"methods": ["random"]}})
    assert cfg.include_baseline is True
    assert cfg.select.methods == ["random"]


def test_quick_mode_has_no_baseline_by_default():
    assert make_config({}).include_baseline is False


def test_section_must_be_a_mapping():
    with pytest.raises(DistillError, match="train"):
        make_config({"train": 3})


def test_secret_reads_environment_first(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DISTILL_TEST_TOKEN=from-file\n")
    monkeypatch.setenv("DISTILL_TEST_TOKEN", "from-env")
    assert secret("DISTILL_TEST_TOKEN") == "from-env"


def test_secret_falls_back_to_dotenv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISTILL_TEST_TOKEN", raising=False)
    assert secret("DISTILL_TEST_TOKEN") is None
    (tmp_path / ".env").write_text("# comment\nOTHER=x\nDISTILL_TEST_TOKEN = 'hf_abc123'\n")
    assert secret("DISTILL_TEST_TOKEN") == "hf_abc123"
    assert secret("MISSING_ONE") is None


def test_secret_never_in_config_dict(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    token = "hf_supersecretvalue42"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("WANDB_API_KEY", token)
    cfg = make_config({}, {"wandb.enabled": "true"})
    assert token not in repr(cfg.to_dict())
    assert token not in repr(cfg)


def test_secret_reads_dotenv_with_quotes_and_comments(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISTILL_TEST_TOKEN", raising=False)
    (tmp_path / ".env").write_text("# a comment\nexport DISTILL_TEST_TOKEN='from file'  # trailing\n")
    assert secret("DISTILL_TEST_TOKEN") == "from file"
    assert secret("DISTILL_MISSING_TOKEN") is None


def test_every_config_section_rejects_unknown_keys():
    """A section added without @section would silently drop typos: every nested dataclass must forbid extras."""
    import dataclasses

    from distill.config.load import _section

    for name in (f.name for f in dataclasses.fields(ExperimentConfig)):
        cls = _section([name])
        if dataclasses.is_dataclass(cls):
            with pytest.raises(DistillError, match=f"{name}.not_a_key"):
                make_config({}, {f"{name}.not_a_key": "1"})


def test_empty_value_and_wrong_type_messages():
    with pytest.raises(DistillError, match="may not be empty"):
        make_config({"train": {"batch_size": None}})
    with pytest.raises(DistillError, match=r"train.lora_r': input should be a valid integer.*'eight'"):
        make_config({}, {"train.lora_r": "eight"})


def test_validation_returns_a_normalised_copy_and_never_edits_its_input():
    given = ExperimentConfig(mode="baseline")
    before = copy.deepcopy(given)
    cfg = validate(given)
    assert given == before and given.select.methods and not given.include_baseline
    assert cfg is not given and cfg.select.methods == [] and cfg.include_baseline


@pytest.mark.parametrize("old", sorted(MOVED_KEYS))
def test_a_moved_key_is_one_line_naming_its_new_place(old, tmp_path):
    with pytest.raises(DistillError) as err:
        make_config("quick", {old: "3"})
    assert old in err.value.problem and MOVED_KEYS[old] in err.value.problem and MOVED_KEYS[old] in err.value.fix
    section, key = old.split(".")
    job = tmp_path / "job.yaml"
    job.write_text(f"{section}:\n  {key}: 3\n")
    with pytest.raises(DistillError, match=f"'{old}' has moved to '{MOVED_KEYS[old]}'"):
        make_config(job)


def test_resume_migrates_a_run_json_from_before_the_config_split(tmp_path):
    """A version-1 run.json (no schema_version) kept bootstrap_samples (since retired) and the vLLM knobs under eval."""
    cfg = make_config("quick", {"resources.vllm_max_loras": "3"})
    values = asdict(cfg)
    values["eval"].update(
        bootstrap_samples=300,
        **{k: values["resources"].pop(k) for k in list(values["resources"]) if k.startswith("vllm_")},
    )
    (tmp_path / "run.json").write_text(json.dumps({"name": "quick", "config": values}))
    assert config_from_run(tmp_path) == replace(cfg, output_dir=str(tmp_path.resolve()))


def test_a_retired_key_is_refused_in_a_job_and_dropped_from_an_older_run_json(tmp_path):
    with pytest.raises(DistillError) as err:
        make_config("quick", {"report.bootstrap_samples": "2000"})
    assert "'report.bootstrap_samples' is no longer used" in err.value.problem and "delete it" in err.value.fix
    cfg = make_config("quick")
    values = asdict(cfg)
    values["report"]["bootstrap_samples"] = 2000  # what a version-2 run.json recorded
    (tmp_path / "run.json").write_text(json.dumps({"schema_version": 2, "name": "quick", "config": values}))
    assert config_from_run(tmp_path) == replace(cfg, output_dir=str(tmp_path.resolve()))


def test_resume_refuses_a_run_json_from_a_newer_distill_in_one_line(tmp_path):
    newer = SCHEMA_VERSION + 1
    (tmp_path / "run.json").write_text(json.dumps({"schema_version": newer, "config": asdict(make_config("quick"))}))
    with pytest.raises(DistillError) as err:
        config_from_run(tmp_path)
    assert f"schema version {newer}" in err.value.problem and str(SCHEMA_VERSION) in err.value.problem
    assert "\n" not in str(err.value)


def _numeric(prop: dict) -> dict | None:
    """The number schema of a setting (the non-null member of an optional one), or None for other types."""
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    return options[0] if len(options) == 1 and options[0].get("type") in ("integer", "number") else None


def _outside(prop: dict) -> list:
    """Values just outside a setting's declared range: below its lower bound, above its upper one, not a choice."""
    if "enum" in prop or "enum" in prop.get("items", {}):  # a choice, or a list of choices
        return ["not-a-choice"]
    number = _numeric(prop)
    if number is None:
        return []
    step = 1 if number["type"] == "integer" else 0.5
    values = [number[b] for b in ("exclusiveMinimum", "exclusiveMaximum") if b in number]
    values += [number["minimum"] - step] if "minimum" in number else []
    values += [number["maximum"] + step] if "maximum" in number else []
    return values + (["nan", "inf"] if number["type"] == "number" else [])


RANGED = [(key, value) for key, prop in settings().items() for value in _outside(prop)]


def test_the_schema_walk_reaches_every_section():
    assert {key.split(".")[0] for key, _ in RANGED} >= {
        "data",
        "model",
        "embed",
        "probe",
        "select",
        "train",
        "eval",
        "report",
        "resources",
        "seeds",
        "mode",
    }


@pytest.mark.parametrize("key,value", RANGED, ids=[f"{k}={v}" for k, v in RANGED])
def test_every_value_outside_a_declared_range_is_one_line_naming_the_key(key, value):
    """Walks the whole schema: every declared range is enforced when the job is built, before any work, and the
    line names the key, the value, the range and a value that works (the default)."""
    with pytest.raises(DistillError) as err:
        make_config({}, {key: str(value)})
    assert f"config key '{key}' must be " in err.value.problem
    assert err.value.problem.endswith(f", got {yaml.safe_load(str(value))!r}")  # as the override reached the config
    assert f"--set {key}=" in err.value.fix and "(the default)" in err.value.fix
    assert "\n" not in str(err.value)


def test_every_numeric_setting_declares_its_range():
    """A new number without a declared range (Field(ge=...), a Count, Share, ... alias) fails here."""
    unranged = [
        key
        for key, prop in settings().items()
        if (number := _numeric(prop)) and not {"minimum", "exclusiveMinimum"} & set(number)
    ]
    assert not unranged, f"declare a range for {unranged} in distill/config/schema.py"


def test_range_edges_are_accepted():
    cfg = make_config(
        {},
        {
            "train.lora_dropout": "0",
            "select.fraction": "1",
            "train.warmup_ratio": "1",
            "embed.num_actors": "0",
            "data.max_train": "2",
            "data.split_seed": str(2**32 - 1),
        },
    )
    assert cfg.select.fraction == 1.0 and cfg.data.max_train == 2


def test_cross_field_check_stays_in_validate():
    with pytest.raises(DistillError, match="probe.grad_dim=10 must be a multiple of probe.grad_blocks=4"):
        make_config({}, {"probe.grad_dim": "10"})


def test_a_query_method_needs_a_query_set():
    with pytest.raises(DistillError, match="rds_plus.*no query set"):
        make_config("quick", {"select.methods": "random,rds_plus"})
    assert make_config("quick", {"select.methods": "random,rds_plus", "data.query_size": 8}).data.query_size == 8
    assert make_config("quick", {"select.methods": "rds_plus", "select.query": "a.jsonl,b.jsonl"}).select.query == [
        "a.jsonl",
        "b.jsonl",
    ]
    with pytest.raises(DistillError, match="query_size"):
        make_config("quick", {"data.query_size": -1})


def test_until_decided_needs_a_first_look_that_measures_seed_noise():
    """One seed leaves the seed term's variance unknown, so no look could decide: refused before any work."""
    with pytest.raises(DistillError, match="first round of at least 2 seeds") as err:
        make_config("quick", {"adaptive.enabled": "true", "seeds": "1"})
    assert "--seeds 2" in err.value.fix
    with pytest.raises(DistillError, match="random among the methods"):
        make_config("quick", {"adaptive.enabled": "true", "seeds": "2", "select.methods": "clustering"})
    assert make_config("quick", {"adaptive.enabled": "true", "seeds": "2"}).adaptive.enabled
